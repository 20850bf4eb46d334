"""What the infrastructure says of a job, applied to its run: the one mapping shared by the reconciler and
the provider-event handlers (ECS task state changes today).

A report is applied only as a forward move (SPEC §2). A duplicate — the same event id seen before, such as
the same ECS task and version — changes nothing; a stale or out-of-order one is recorded as a no-op.
"""

from __future__ import annotations

from datetime import datetime

from .models import FlowRun, utcnow
from .providers.base import JobState, JobStatus
from .states import StateType
from .store.base import Store

SAVE_ATTEMPTS = 5

_STATE_OF: dict[JobState, StateType] = {
    JobState.RUNNING: StateType.RUNNING,
    JobState.COMPLETED: StateType.COMPLETED,
    JobState.FAILED: StateType.FAILED,
    JobState.CRASHED: StateType.CRASHED,
    JobState.CANCELLED: StateType.CANCELLED,
    JobState.MISSING: StateType.CRASHED,
}


def state_for(run: FlowRun, status: JobStatus) -> tuple[StateType, str | None] | None:
    """The state a provider's report moves a run to, with its message; None when it says nothing new."""
    if run.state is StateType.CANCELLING and status.state not in (JobState.PENDING, JobState.RUNNING):
        # We asked for the stop: whatever exit it caused, the run ends as the user asked.
        return StateType.CANCELLED, status.message or "stopped at the provider"
    state = _STATE_OF.get(status.state)
    if state is None or state is run.state:
        return None
    message = status.message
    if status.state is JobState.MISSING:
        message = f"the infrastructure no longer knows {run.infrastructure_id}: {status.message or 'vanished'}"
    return state, message


def apply_status(
    store: Store, run_id: str, status: JobStatus, *, source: str, now: datetime | None = None
) -> FlowRun | None:
    """Apply a provider's report to a run; returns the run as stored, or None for a run we do not know.

    `source` names the report (e.g. `ecs:<task id>:<version>`): a source already in the history is a
    duplicate delivery and is dropped without a write.
    """
    now = now or utcnow()
    for _ in range(SAVE_ATTEMPTS):
        run = store.get_run(run_id)
        if run is None:
            return None
        if run.has_report(source):
            return run
        target = state_for(run, status)
        if target is None:
            return run
        state, message = target
        # moved() records what the state rules refuse (a RUNNING report for a run that holds no slot, say).
        after, _ = run.moved(state, source=source, message=message, now=now)
        after = after.remembering(source)
        if store.save_run(run, after):
            return after.model_copy(update={"version": run.version + 1})
    return store.get_run(run_id)
