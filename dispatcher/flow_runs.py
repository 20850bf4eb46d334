"""Retrying and deleting a flow run, and matching runs against state names: Prefect's `flow-run` verbs.

- **retry**, as Prefect's `flow-run retry`: only a run that has ended (COMPLETED, FAILED, CRASHED,
  CANCELLED) goes back to SCHEDULED, named AwaitingRetry, due now, keeping its id, deployment, parameters
  and job variables. This is the one transition out of a terminal state, made on purpose by a user; the
  callbacks and the dispatcher still never move a terminal run. The run gets a fresh submission budget and
  a new identity towards providers (`retries`, see `dispatch.idempotency_key`), so nothing of its earlier
  launch is found as its own. Its deployment and pool must still exist.
- **delete**, as Prefect's `flow-run delete`, except that an active run (PENDING, RUNNING, CANCELLING:
  its infrastructure may run) is refused: it holds slots, and deleting it would lose them. Cancel it first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from .cancelling import SAVE_ATTEMPTS, get_run
from .errors import Conflict, InvalidInput, NotFound
from .models import FlowRun, utcnow
from .states import DEFAULT_NAMES, NAMES_BY_TYPE, StateType
from .store.base import Store

RETRY_NAME = "AwaitingRetry"


def retry_run(store: Store, run_id: str, *, now: datetime | None = None) -> FlowRun:
    """Send an ended run back to SCHEDULED/AwaitingRetry, due now; Conflict unless it has ended."""
    for _ in range(SAVE_ATTEMPTS):
        run = get_run(store, run_id)
        if not run.is_terminal:
            raise Conflict(
                f"flow run {run_id} is {run.state_name} ({run.state.value}); only a run that has ended "
                "(COMPLETED, FAILED, CRASHED or CANCELLED) can be retried"
            )
        if store.get_deployment(run.deployment) is None:
            raise NotFound(f"flow run {run_id} cannot be retried: its deployment {run.deployment!r} no longer exists")
        if store.get_pool(run.pool) is None:
            raise NotFound(f"flow run {run_id} cannot be retried: its pool {run.pool!r} no longer exists")
        at = now or utcnow()
        # moved() records the proposal; a terminal run refuses it, so the applied state is set here, on purpose.
        proposed, _ = run.moved(StateType.SCHEDULED, name=RETRY_NAME, source="user", message="retry requested", now=at)
        history = [*proposed.state_history[:-1], proposed.state_history[-1].model_copy(update={"applied": True})]
        after = proposed.model_copy(
            update={
                "state": StateType.SCHEDULED,
                "state_name": RETRY_NAME,
                "state_history": history,
                "scheduled_time": at,
                "infrastructure_id": None,
                "submission_attempts": 0,
                "retries": run.retries + 1,
            }
        )
        if store.save_run(run, after):
            return after.model_copy(update={"version": run.version + 1})
    raise Conflict(f"flow run {run_id} kept changing while it was being retried; try again")


def delete_run(store: Store, run_id: str) -> FlowRun:
    """Delete a run that is not active; Conflict while it is PENDING, RUNNING or CANCELLING."""
    for _ in range(SAVE_ATTEMPTS):
        run = get_run(store, run_id)
        if run.is_active:
            raise Conflict(
                f"flow run {run_id} is {run.state_name} ({run.state.value}) and may still hold infrastructure; "
                "cancel it, and delete it once it has ended"
            )
        if store.delete_run(run):
            return run
    raise Conflict(f"flow run {run_id} kept changing while it was being deleted; try again")


def state_filter(names: Iterable[str], types: Iterable[str]) -> tuple[set[StateType], set[str]]:
    """`--state` (a name like Late, or a type like SCHEDULED) and `--state-type` values, checked.

    Names and types are matched ignoring case, except that a value in capitals that is a type means the
    type (SCHEDULED: Scheduled, Late and AwaitingRetry runs) while any other spelling of a name means the name.

    Returns the types and the names asked for; a run matches when its type or its shown name is among them.
    """
    by_type = {t.value.lower(): t for t in StateType}
    by_name = {n.lower(): n for ns in NAMES_BY_TYPE.values() for n in ns}
    wanted_types: set[StateType] = set()
    wanted_names: set[str] = set()
    for value in types:
        if value.lower() not in by_type:
            raise InvalidInput(f"--state-type {value!r} is not a state type; use one of {', '.join(by_type).upper()}.")
        wanted_types.add(by_type[value.lower()])
    for value in names:
        key = value.lower().replace(" ", "")
        if value.isupper() and key in by_type:  # SCHEDULED is the type; Scheduled (or scheduled) the name
            wanted_types.add(by_type[key])
        elif key in by_name:
            wanted_names.add(by_name[key])
        elif key in by_type:
            wanted_types.add(by_type[key])
        else:
            allowed = sorted({*by_name.values(), *DEFAULT_NAMES.values()})
            raise InvalidInput(
                f"--state {value!r} is neither a state name ({', '.join(allowed)}) nor a state type "
                f"({', '.join(by_type).upper()})."
            )
    return wanted_types, wanted_names
