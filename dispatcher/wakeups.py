"""Wake-ups: ask for a dispatch pass now, when something happened that a pass would act on.

A run waits for the next pass to be admitted and submitted. Without wake-ups that is the next tick (5 s
under `pushpool serve`, a minute on AWS); with them, whoever changes the store in a way that lets a run
start (a run created, a slot freed, a pool resumed, a limit raised) says so through a `Wakeups`, and the
adapter behind it starts a pass soon. The timed pass stays as the safety net: a lost wake-up costs latency,
never a run.

The rules for WHEN to wake live here, once, for every caller (the HTTP API, the CLI, the cloud handlers):
`left_active`, `freed_slot`, `room_opened` and `deployment_wake_reason`.
"""

from __future__ import annotations

from typing import Protocol

from .models import Deployment, FlowRun, WorkPool, WorkQueue
from .states import ACTIVE

RUN_CREATED = "run created"
SLOT_FREED = "slot freed"
RUN_CANCELLED = "run cancelled"
POOL_RESUMED = "pool resumed"
QUEUE_RESUMED = "queue resumed"
LIMIT_RAISED = "limit raised"
SCHEDULE_CHANGED = "schedule changed"
RUN_DUE = "run due"
APPLIED = "applied"


class Wakeups(Protocol):
    """Where events that let a run start are reported, so a pass follows at once instead of at the next tick."""

    def wake(self, pool: str | None, reason: str) -> None:
        """Ask for a pass over `pool` (None: every pool) soon. Never blocks the caller, never raises,
        coalesces bursts; `reason` is a short phrase for logs ("run created", "slot freed",
        "pool resumed", "limit raised", "run due")."""


class NoWakeups:
    """A `Wakeups` that does nothing: the default everywhere, so a caller that passes none changes nothing."""

    def wake(self, pool: str | None, reason: str) -> None:
        return None


# when to wake ---------------------------------------------------------------------------------------------
def freed_slot(before: FlowRun | None, after: FlowRun | None) -> bool:
    """Whether a change from `before` to `after` released the run's slots: it left an ACTIVE state."""
    return before is not None and after is not None and before.state in ACTIVE and after.state not in ACTIVE


def left_active(run: FlowRun | None) -> bool:
    """Whether the run's newest transition took it out of an ACTIVE state, read from its history alone.

    For callers that only hold the run as stored after a change (`apply_callback`, `provider_events.
    apply_status`): the newest record must be an applied one (a no-op freed nothing) and the applied one
    before it an ACTIVE state. A duplicate delivery that changed nothing answers as the original did; a
    second wake-up is harmless, as wake-ups coalesce.
    """
    if run is None or run.state in ACTIVE or not run.state_history or not run.state_history[-1].applied:
        return False
    applied = [record for record in run.state_history if record.applied]
    return len(applied) >= 2 and applied[-2].state in ACTIVE


def limit_raised(before: int | None, after: int | None) -> bool:
    """Whether a concurrency limit went up or was cleared (None is unlimited)."""
    if before is None:
        return False
    return after is None or after > before


def room_opened(before: WorkPool | WorkQueue, after: WorkPool | WorkQueue) -> str | None:
    """The wake-up reason when a pool or queue change may let waiting runs in: resumed, or limit raised."""
    if before.paused and not after.paused:
        return POOL_RESUMED if isinstance(after, WorkPool) else QUEUE_RESUMED
    if limit_raised(before.concurrency_limit, after.concurrency_limit):
        return LIMIT_RAISED
    return None


def deployment_wake_reason(before: Deployment | None, after: Deployment) -> str | None:
    """The wake-up reason when a deployment's creation or change may start runs sooner than the next tick.

    Its limit raised or cleared; or an active schedule that is new or changed (created, edited, resumed):
    the pass creates its runs at once, so a time due before the next tick is not missed.
    """
    if before is not None and limit_raised(before.concurrency_limit, after.concurrency_limit):
        return LIMIT_RAISED
    if not after.schedules or after.schedule_paused:
        return None
    if before is None or before.schedule_paused or before.schedules != after.schedules:
        return SCHEDULE_CHANGED
    return None


class RecordedWakeups:
    """A `Wakeups` that keeps every call, in order: for tests, and for a caller that wakes after it answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str]] = []

    def wake(self, pool: str | None, reason: str) -> None:
        self.calls.append((pool, reason))
