"""Admission against the store: read the candidates, let the pure waterfall decide, admit atomically.

The waterfall (`admission.decide`) works on counts read a moment ago; the store's conditional transaction
is the truth. A run the store refuses (a slot filled or the run moved under us) simply stays SCHEDULED for
the next pass, so overlapping dispatchers never exceed a limit and never admit a run twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .admission import (
    DEPLOYMENT_LIMIT_REACHED,
    Decision,
    DeploymentView,
    DueRun,
    PoolView,
    QueueView,
    decide,
)
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
    next_due: datetime | None = None
    """The earliest scheduled time after `now` and inside the pass's horizon of a run that would find room then."""


DEPLOYMENT_MISSING = "deployment '{deployment}' no longer exists"
"""Why a run waits whose deployment (and so its slot) is gone: the store would refuse to admit it."""

_DEPLOYMENT_LIMIT_PREFIX = DEPLOYMENT_LIMIT_REACHED.split("{", 1)[0]


def _read_window(slot: Slot | None, pool_free: int | None, settings: Settings) -> int:
    """How many due runs of a queue to read: no more than could be admitted, at least one to explain."""
    bounds = [settings.max_admissions_per_pass]
    for free in (slot.free if slot else None, pool_free):
        if free is not None:
            bounds.append(free)
    return max(1, min(bounds))


def _decide(
    store: Store, pool: WorkPool, queues: list[WorkQueue], slots: dict[str, Slot], due: list[FlowRun]
) -> tuple[Decision, set[str]]:
    """The waterfall over `due`, and the ids of runs skipped for their deployment (its limit, or it is gone)."""
    pool_state = slots.get(pool_slot(pool.name), Slot(pool.concurrency_limit, 0))
    deployment_slots = store.slots(sorted({deployment_slot(r.deployment_id) for r in due}))
    orphans = {r.id: r.deployment for r in due if deployment_slot(r.deployment_id) not in deployment_slots}
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
        [DueRun(r.id, r.queue, r.deployment, r.scheduled_time) for r in due if r.id not in orphans],
        deployments,
    )
    if orphans:
        waiting = {**decision.waiting, **{i: DEPLOYMENT_MISSING.format(deployment=d) for i, d in orphans.items()}}
        decision = Decision(admit=decision.admit, waiting=waiting)
    # Runs that could be passed over for later ones of the same queue (nothing else holds them back).
    paused = {q.name for q in queues if q.paused or pool.paused}
    skipped = {i for i, why in decision.waiting.items() if why.startswith(_DEPLOYMENT_LIMIT_PREFIX)}
    skipped |= {r.id for r in due if r.id in orphans and r.queue not in paused}
    return decision, skipped


def plan(
    store: Store,
    pool: WorkPool,
    queues: list[WorkQueue],
    now: datetime,
    settings: Settings,
    *,
    window: int | None = None,
) -> tuple[Decision, list[FlowRun]]:
    """Read the pool's due runs and decide; `window` overrides how many runs per queue are read (preview).

    Runs of a paused pool or queue are read too (a window's worth), so that they are explained and the
    dispatcher can name them Late. A queue whose read was full and whose runs were skipped for their
    deployment is read further, so one deployment at its limit never hides the runs queued behind it.
    """
    planned = _plan(store, pool, queues, now, settings, window=window)
    return planned.decision, planned.due


@dataclass
class _Planned:
    decision: Decision
    due: list[FlowRun]
    next_due: datetime | None = None


def _plan(
    store: Store,
    pool: WorkPool,
    queues: list[WorkQueue],
    now: datetime,
    settings: Settings,
    *,
    window: int | None = None,
    horizon: timedelta | None = None,
) -> _Planned:
    """`plan`, and with a `horizon` the earliest run due after `now` and within it that would find room.

    The horizon widens the same due-index queries (runs due up to `now + horizon`, in the same windows), so
    learning the next due time costs no request: the runs past `now` only fill what the window had left.
    """
    slots = store.slots([pool_slot(pool.name), *(queue_slot(pool.name, q.name) for q in queues)])
    pool_state = slots.get(pool_slot(pool.name), Slot(pool.concurrency_limit, 0))
    sizes = {
        q.name: window or _read_window(slots.get(queue_slot(pool.name, q.name)), pool_state.free, settings)
        for q in queues
    }
    until = now + horizon if horizon else now
    read = {name: store.due_runs(pool.name, name, until, size) for name, size in sizes.items()}
    while True:
        upcoming = {name: [r for r in runs if r.scheduled_time > now] for name, runs in read.items()}
        read = {name: [r for r in runs if r.scheduled_time <= now] for name, runs in read.items()}
        due = [r for q in queues for r in read[q.name]]
        decision, skipped = _decide(store, pool, queues, slots, due)
        grow = []
        for name, runs in read.items():
            misses = sum(1 for r in runs if r.id in skipped)
            if window is None and misses and len(runs) == sizes[name] < settings.max_admissions_per_pass:
                sizes[name] = min(settings.max_admissions_per_pass, max(2 * sizes[name], sizes[name] + misses))
                grow.append(name)
        if not grow:
            return _Planned(decision, due, _next_due(pool, queues, slots, decision, upcoming))
        for name in grow:
            read[name] = store.due_runs(pool.name, name, until, sizes[name])


def _next_due(
    pool: WorkPool,
    queues: list[WorkQueue],
    slots: dict[str, Slot],
    decision: Decision,
    upcoming: dict[str, list[FlowRun]],
) -> datetime | None:
    """The earliest upcoming run that would find its pool and queue open with a slot left after this pass.

    A run behind a full pool or queue is started by the wake-up of the slot that frees, not by its time.
    """
    if pool.paused:
        return None
    admitted = [d.queue for d in decision.admit]
    pool_free = slots.get(pool_slot(pool.name), Slot(pool.concurrency_limit, 0)).free
    if pool_free is not None and pool_free - len(admitted) <= 0:
        return None
    times = []
    for q in queues:
        queue_free = slots.get(queue_slot(pool.name, q.name), Slot(q.concurrency_limit, 0)).free
        full = queue_free is not None and queue_free - admitted.count(q.name) <= 0
        if q.paused or full or not upcoming.get(q.name):
            continue
        times.append(min(r.scheduled_time for r in upcoming[q.name]))
    return min(times, default=None)


def admit_pool(
    store: Store,
    pool_name: str,
    now: datetime,
    *,
    queue: str | None = None,
    settings: Settings | None = None,
    source: str = "dispatcher",
    horizon: timedelta | None = None,
) -> PoolAdmission:
    """One admission step for a pool (or one of its queues): every pool and queue limit still holds."""
    pool = store.get_pool(pool_name)
    if pool is None:
        return PoolAdmission(pool_name)
    queues = store.list_queues(pool_name)
    return admit(store, pool, queues, now, queue=queue, settings=settings, source=source, horizon=horizon)


def admit(
    store: Store,
    pool: WorkPool,
    queues: list[WorkQueue],
    now: datetime,
    *,
    queue: str | None = None,
    settings: Settings | None = None,
    source: str = "dispatcher",
    horizon: timedelta | None = None,
) -> PoolAdmission:
    """`admit_pool` for a caller that has read the pool and its queues already (a dispatch pass).

    With a `horizon`, `next_due` says when the next run inside it falls due (see `_plan`), at no extra request.
    """
    settings = settings or Settings()
    result = PoolAdmission(pool.name)
    # A pass scoped to one queue still runs the whole pool's waterfall and keeps that queue's share: a
    # higher-priority queue with due runs that fit takes precedence whichever queue a pass was asked about.
    planned = _plan(store, pool, queues, now, settings, horizon=horizon)
    decision, due = planned.decision, planned.due
    result.next_due = planned.next_due
    if queue is not None:
        due = [r for r in due if r.queue == queue]
        mine = {r.id for r in due}
        decision = Decision(
            admit=tuple(d for d in decision.admit if d.id in mine),
            waiting={i: why for i, why in decision.waiting.items() if i in mine},
        )
    result.due = due
    by_id = {r.id: r for r in due}
    admissions = [Admission(before, _admitted(before, now, source)) for before in (by_id[d.id] for d in decision.admit)]
    result.admitted = store.admit(admissions)
    taken = {r.id for r in result.admitted}
    result.lost = [a.before.id for a in admissions if a.before.id not in taken]
    result.waiting = dict(decision.waiting)
    return result


def _admitted(before: FlowRun, now: datetime, source: str) -> FlowRun:
    after, _ = before.moved(
        StateType.PENDING,
        source=source,
        message="admitted",
        now=now,
        # Each admission is a new submission attempt, with its own idempotency key.
        submission_attempts=before.submission_attempts + 1,
    )
    return after
