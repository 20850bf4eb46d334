"""Looking up and cancelling a flow run: the one cancel rule, shared by the CLI and the HTTP API (SPEC §2)."""

from __future__ import annotations

from datetime import datetime

from .errors import Conflict, NotFound
from .models import FlowRun, utcnow
from .states import StateType
from .store.base import Store

SAVE_ATTEMPTS = 5
"""Writes tried when another writer (a dispatcher, a callback) moves the run between our read and our write."""


def get_run(store: Store, run_id: str) -> FlowRun:
    """The stored run, or NotFound naming the id."""
    run = store.get_run(run_id)
    if run is None:
        raise NotFound(f"flow run {run_id!r} does not exist; see `pushpool flow-run ls`")
    return run


def cancel_run(
    store: Store,
    run_id: str,
    *,
    source: str = "user",
    message: str = "cancellation requested",
    now: datetime | None = None,
) -> FlowRun:
    """Cancel a run: SCHEDULED -> CANCELLED at once; PENDING/RUNNING -> CANCELLING.

    A CANCELLING run is returned as it is (asking twice is harmless); the dispatcher stops its infrastructure
    and the run becomes CANCELLED when the provider confirms, holding its slot until then. A terminal run is a
    Conflict: there is nothing left to cancel.
    """
    for _ in range(SAVE_ATTEMPTS):
        run = get_run(store, run_id)
        if run.is_terminal:
            raise Conflict(f"flow run {run_id} is already {run.state.value}; nothing to cancel")
        if run.state is StateType.CANCELLING:
            return run
        target = StateType.CANCELLED if run.state is StateType.SCHEDULED else StateType.CANCELLING
        after, _ = run.moved(target, source=source, message=message, now=now or utcnow())
        if store.save_run(run, after):
            return after.model_copy(update={"version": run.version + 1})
    raise Conflict(f"flow run {run_id} kept changing while it was being cancelled; try again")
