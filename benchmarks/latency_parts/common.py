"""What every side of benchmarks/latency.py reads from a store: the times in a run's state history, the pairing of
slot frees with the submissions they allowed, and one measure's samples."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispatcher.models import FlowRun
from dispatcher.states import ACTIVE, StateType
from dispatcher.store.base import Store

SUBMITTED = "InfrastructurePending"


def submitted_at(run: FlowRun) -> datetime | None:
    """When the dispatcher recorded the provider's acceptance of the run's job (its first submission)."""
    for record in run.state_history:
        if record.applied and record.name == SUBMITTED:
            return record.time
    return None


def freed_at(run: FlowRun) -> datetime | None:
    """When the run left an active state (its slot was released), from its history; None if it never did."""
    was_active = False
    for record in run.state_history:
        if not record.applied:
            continue
        if record.state in ACTIVE:
            was_active = True
        elif was_active:
            return record.time
    return None


def pair_frees(frees: list[datetime], submissions: list[datetime], limit: int) -> list[float]:
    """Slot freed -> next waiting run submitted, in seconds: the k-th free (in time) opened the slot that the
    (limit + k)-th submission took, since no submission beyond the limit can happen before as many frees."""
    frees, submissions = sorted(frees), sorted(submissions)
    return [(s - f).total_seconds() for f, s in zip(frees, submissions[limit:], strict=False)]


@dataclass
class Measured:
    """One measure's samples (seconds) and what is needed to judge them."""

    samples: list[float] = field(default_factory=list)
    runs: int = 0
    unfinished: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "runs": self.runs, "unfinished": self.unfinished, "notes": self.notes}


def wait_runs(
    store: Store, pool: str, ids: list[str], done: Callable[[FlowRun], bool], timeout: float, *, drained: bool = False
) -> list[FlowRun]:
    """The runs once each is `done`, or as they are when `timeout` seconds have passed.

    Only to know when to stop, and cheaply, since the store is the one being measured: every 2 s one query
    for a SCHEDULED run of the pool (and, with `drained`, one for an active run), and the runs themselves only
    once none is left. Every figure comes from the runs' histories.
    """
    deadline = time.monotonic() + timeout
    while True:
        over = time.monotonic() > deadline
        waiting = store.list_runs(pool, state=StateType.SCHEDULED, limit=1)
        if drained and not waiting:
            waiting = store.active_runs(pool, limit=1)
        if not waiting or over:
            runs = [r for r in (store.get_run(i) for i in ids) if r is not None]
            if all(done(r) for r in runs) or over:
                return runs
        time.sleep(2)


def scheduled_lateness(runs: list[FlowRun], created: int) -> Measured:
    """Measure (c): each run's scheduled time to its submission, for both pushpool sides; a run created after its
    own time is noted (the harness, not the dispatcher, was late)."""
    out = Measured(runs=created)
    for run in runs:
        at = submitted_at(run)
        if at is None:
            out.unfinished += 1
        else:
            out.samples.append((at - run.scheduled_time).total_seconds())
    late = sum(1 for r in runs if r.created > r.scheduled_time)
    if late:
        out.notes.append(f"{late} runs were created after their scheduled time (creation too slow)")
    return out
