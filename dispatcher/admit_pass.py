"""Admission against the store: read the candidates, let the pure waterfall decide, admit atomically.

The waterfall (`admission.decide`) works on counts read a moment ago; the store's conditional transaction
is the truth. A run the store refuses (a slot filled or the run moved under us) simply stays SCHEDULED for
the next pass, so overlapping dispatchers never exceed a limit and never admit a run twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .admission import Decision, DeploymentView, DueRun, PoolView, QueueView, decide
from .config import Settings
from .models import FlowRun, WorkPool, WorkQueue
from .states import StateType
from .store.base import Admission, Slot, Store, deployment_slot, pool_slot, queue_slot


@dataclass
class PoolAdmission:
    """What one pass did for one pool."""

    pool: str
    admitted: list[FlowRun] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    """run id -> why it waits, for every due run read in this pass and not admitted."""
    lost: list[str] = field(default_factory=list)
    """runs the waterfall chose that the store refused (another dispatcher took the slot or the run)."""
    due: list[FlowRun] = field(default_factory=list)


def _read_window(slot: Slot | None, pool_free: int | None, settings: Settings) -> int:
    """How many due runs of a queue to read: no more than could be admitted, at least one to explain."""
    bounds = [settings.max_admissions_per_pass]
    for free in (slot.free if slot else None, pool_free):
        if free is not None:
            bounds.append(free)
    return max(1, min(bounds))


def plan(
    store: Store,
    pool: WorkPool,
    queues: list[WorkQueue],
    now: datetime,
    settings: Settings,
    *,
    window: int | None = None,
) -> tuple[Decision, list[FlowRun]]:
    """Read the pool's due runs and decide; `window` overrides how many runs per queue are read (preview)."""
    slots = store.slots([pool_slot(pool.name), *(queue_slot(pool.name, q.name) for q in queues)])
    pool_state = slots.get(pool_slot(pool.name), Slot(pool.concurrency_limit, 0))
    due: list[FlowRun] = []
    if not pool.paused:
        for queue in queues:
            if queue.paused:
                continue
            size = window or _read_window(slots.get(queue_slot(pool.name, queue.name)), pool_state.free, settings)
            due.extend(store.due_runs(pool.name, queue.name, now, size))
    deployment_slots = store.slots(sorted({deployment_slot(r.deployment_id) for r in due}))
    deployments = {
        r.deployment: DeploymentView(r.deployment, s.limit, s.active)
        for r in due
        if (s := deployment_slots.get(deployment_slot(r.deployment_id))) is not None
    }
    decision = decide(
        PoolView(pool.name, pool.paused, pool_state.limit, pool_state.active),
        [
            QueueView(
                q.name,
                q.priority,
                q.paused,
                (s := slots.get(queue_slot(pool.name, q.name), Slot(q.concurrency_limit, 0))).limit,
                s.active,
            )
            for q in queues
        ],
        [DueRun(r.id, r.queue, r.deployment, r.scheduled_time) for r in due],
        deployments,
    )
    return decision, due


def admit_pool(
    store: Store,
    pool_name: str,
    now: datetime,
    *,
    queue: str | None = None,
    settings: Settings | None = None,
    source: str = "dispatcher",
) -> PoolAdmission:
    """One admission step for a pool (or one of its queues): every pool and queue limit still holds."""
    settings = settings or Settings()
    result = PoolAdmission(pool_name)
    pool = store.get_pool(pool_name)
    if pool is None:
        return result
    queues = store.list_queues(pool_name)
    served = [q for q in queues if queue is None or q.name == queue]
    decision, due = plan(store, pool, served, now, settings)
    result.due = due
    by_id = {r.id: r for r in due}
    admissions = [
        Admission(before, before.moved(StateType.PENDING, source=source, message="admitted", now=now)[0])
        for before in (by_id[d.id] for d in decision.admit)
    ]
    result.admitted = store.admit(admissions)
    taken = {r.id for r in result.admitted}
    result.lost = [a.before.id for a in admissions if a.before.id not in taken]
    result.waiting = dict(decision.waiting)
    return result
