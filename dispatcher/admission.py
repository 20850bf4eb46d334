"""Admission (SPEC §3): for one pool in one dispatch pass, which due runs start now and why the rest wait.

This module is pure: it reads plain frozen views that the caller builds from the store and returns a
:class:`Decision`. It does no I/O and holds no state, so the store can call it inside the transaction that
makes the admitted runs PENDING together with their slots (SPEC §3: "a run becomes PENDING only together
with its slot"); the counts in the views must come from that same transaction for the limits to hold when
dispatchers overlap.

The caller decides which runs are *due* (SCHEDULED with ``scheduled_time <= now``); every run passed in is
treated as due. Runs of paused queues may be passed in too: they are reported as waiting, never admitted.

Algorithm (the waterfall of SPEC §3):

* Queues are served in priority order (1 first; equal priorities, which the store forbids, fall back to
  the queue name so the outcome never depends on input order).
* Inside a queue, runs go in ``(scheduled_time, id)`` order; the input order is ignored.
* A run is admitted when its queue, the pool and its deployment each still have a free slot. A run held
  back by its deployment is skipped and the next run of the queue is still considered; a queue held back
  by its own limit is left and the next queue still gets the pool's remaining slots.
* Free slots are ``max(0, limit - active)``; ``None`` means unlimited. A pool, queue or deployment that is
  already over its limit (a limit lowered under running work) thus admits nothing until it drains.

Each waiting run gets exactly one reason. When several apply, the first in this order wins:

1. ``pool 'P' is paused``
2. ``queue 'Q' does not exist`` (defensive: the store should never hand us such a run)
3. ``queue 'Q' is paused``
4. ``queue limit N reached``
5. ``pool limit N reached`` or ``waiting behind higher-priority queue 'Q'``
6. ``deployment limit N reached for 'D'``

The order goes from the broadest cause to the narrowest, so the reason names what an operator has to
change first for the run to move: resuming the pool, then the queue, then raising the queue limit, etc.

Between the two pool reasons: ``pool limit N reached`` when the pool had no free slot when the pass began
(or when only the run's own queue took its slots in this pass); ``waiting behind higher-priority queue 'Q'``
when the pool had free slots at the start of the pass and they were used up in this pass, ``Q`` being the
last higher-priority queue that took one.

Once the pool is full nothing more is admitted in the pass, but reasons still follow the precedence: a run
held back only by the pool counts against its queue's (and deployment's) free slots as if admitted, so the
runs behind it that the queue limit would hold anyway say ``queue limit N reached``, not the pool's reason.
E.g. with the pool full and a queue limit of 1 with no active run, the queue's first run waits for the pool
and its second for the queue limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "DEPLOYMENT_LIMIT_REACHED",
    "POOL_LIMIT_REACHED",
    "POOL_PAUSED",
    "QUEUE_LIMIT_REACHED",
    "QUEUE_MISSING",
    "QUEUE_PAUSED",
    "WAITING_BEHIND_QUEUE",
    "Decision",
    "DeploymentView",
    "DueRun",
    "PoolView",
    "QueueView",
    "decide",
    "free_slots",
]

# Reason templates. Tests and the CLI match these texts exactly, so they live here once, as constants.
POOL_PAUSED = "pool '{pool}' is paused"
QUEUE_MISSING = "queue '{queue}' does not exist"
QUEUE_PAUSED = "queue '{queue}' is paused"
QUEUE_LIMIT_REACHED = "queue limit {limit} reached"
POOL_LIMIT_REACHED = "pool limit {limit} reached"
WAITING_BEHIND_QUEUE = "waiting behind higher-priority queue '{queue}'"
DEPLOYMENT_LIMIT_REACHED = "deployment limit {limit} reached for '{deployment}'"


@dataclass(frozen=True)
class PoolView:
    """The pool as admission sees it: ``active`` counts its PENDING, RUNNING and CANCELLING runs."""

    name: str
    paused: bool
    limit: int | None  # None = unlimited, 0 = deliver nothing
    active: int  # runs of this pool currently PENDING/RUNNING/CANCELLING


@dataclass(frozen=True)
class QueueView:
    """One work queue of the pool; ``priority`` 1 is served first."""

    name: str
    priority: int  # 1 is highest; unique within the pool
    paused: bool
    limit: int | None
    active: int


@dataclass(frozen=True)
class DeploymentView:
    """A deployment's own concurrency limit and its active runs (wherever they run)."""

    name: str
    limit: int | None
    active: int


@dataclass(frozen=True)
class DueRun:
    """A SCHEDULED run whose time has come."""

    id: str
    queue: str
    deployment: str
    scheduled_time: datetime


@dataclass(frozen=True)
class Decision:
    """The outcome of one pass over one pool."""

    admit: tuple[DueRun, ...]  # in admission order
    waiting: dict[str, str]  # run id -> reason, for every due run not admitted


def free_slots(limit: int | None, active: int) -> int | None:
    """Slots still free under ``limit`` with ``active`` runs holding one each; ``None`` means unlimited.

    Never negative: a limit lowered below the work already running leaves zero free slots, not a debt
    that would confuse callers adding admitted counts.
    """
    if limit is None:
        return None
    return max(0, limit - active)


def _has_room(free: int | None, taken: int) -> bool:
    """Whether one more slot can be taken when ``taken`` of ``free`` are already used in this pass."""
    return free is None or taken < free


def _run_order(run: DueRun) -> tuple[datetime, str]:
    """FIFO by scheduled time; the id breaks ties so that two dispatchers pick the same runs."""
    return (run.scheduled_time, run.id)


def decide(
    pool: PoolView,
    queues: Sequence[QueueView],
    due: Sequence[DueRun],
    deployments: Mapping[str, DeploymentView] | None = None,
) -> Decision:
    """Decide which of ``due`` to admit now, in order, and why each of the others waits.

    ``deployments`` is keyed by deployment name; a run whose deployment is absent has no deployment limit.
    Raises ``ValueError`` on duplicate run ids or duplicate queue names, since either would make the
    answer ambiguous (a run id is the key of ``waiting``; a queue name is how a run finds its limits).
    """
    seen_ids: set[str] = set()
    for run in due:
        if run.id in seen_ids:
            raise ValueError(f"duplicate due run id {run.id!r}")
        seen_ids.add(run.id)
    queues_by_name: dict[str, QueueView] = {}
    for queue in queues:
        if queue.name in queues_by_name:
            raise ValueError(f"duplicate queue name {queue.name!r}")
        queues_by_name[queue.name] = queue

    waiting: dict[str, str] = {}
    ordered_runs = sorted(due, key=_run_order)

    if pool.paused:
        # A paused pool delivers nothing (SPEC §3); every run says so, whatever else would hold it.
        for run in ordered_runs:
            waiting[run.id] = POOL_PAUSED.format(pool=pool.name)
        return Decision(admit=(), waiting=waiting)

    runs_by_queue: dict[str, list[DueRun]] = {}
    for run in ordered_runs:
        if run.queue not in queues_by_name:
            waiting[run.id] = QUEUE_MISSING.format(queue=run.queue)
        else:
            runs_by_queue.setdefault(run.queue, []).append(run)

    deployment_views = deployments or {}
    pool_free = free_slots(pool.limit, pool.active)
    pool_taken = 0
    # Name of the last queue that took a pool slot in this pass, for "waiting behind ..." reasons.
    last_taker: str | None = None
    deployment_taken: dict[str, int] = {}
    admitted: list[DueRun] = []

    for queue in sorted(queues, key=lambda q: (q.priority, q.name)):
        runs = runs_by_queue.get(queue.name, [])
        if queue.paused:
            for run in runs:
                waiting[run.id] = QUEUE_PAUSED.format(queue=queue.name)
            continue
        # Only queues served before this one count as "higher-priority" in its reasons.
        higher_taker = last_taker
        queue_free = free_slots(queue.limit, queue.active)
        # Queue slots claimed in this pass: by admitted runs, and by runs held only by the full pool (see
        # below), so that a run behind them is told about the queue limit, which outranks the pool's.
        queue_claimed = 0
        for run in runs:
            if not _has_room(queue_free, queue_claimed):
                waiting[run.id] = QUEUE_LIMIT_REACHED.format(limit=queue.limit)
                continue
            view = deployment_views.get(run.deployment)
            deployment_limit = None if view is None else view.limit
            deployment_claimed = deployment_taken.get(run.deployment, 0)
            deployment_room = view is None or _has_room(free_slots(view.limit, view.active), deployment_claimed)
            if not _has_room(pool_free, pool_taken):
                waiting[run.id] = _pool_reason(pool, pool_free, higher_taker)
                # Once the pool is full nothing more is admitted in this pass, so claims from here on only
                # shape reasons: a run that would have been admitted but for the pool takes its queue and
                # deployment slot as if admitted, and the runs behind it are told about the limit that
                # would still hold them once the pool has room.
                if deployment_room:
                    queue_claimed += 1
                    deployment_taken[run.deployment] = deployment_claimed + 1
                continue
            if not deployment_room:
                # Skipped, not blocking: the next run of this queue may belong to another deployment.
                waiting[run.id] = DEPLOYMENT_LIMIT_REACHED.format(limit=deployment_limit, deployment=run.deployment)
                continue
            deployment_taken[run.deployment] = deployment_claimed + 1
            admitted.append(run)
            queue_claimed += 1
            pool_taken += 1
            last_taker = queue.name

    return Decision(admit=tuple(admitted), waiting=waiting)


def _pool_reason(pool: PoolView, pool_free: int | None, higher_taker: str | None) -> str:
    """Why a run waits when the pool has no slot left: the limit itself, or the queues served before it."""
    if pool_free == 0 or higher_taker is None:
        # Full before the pass began, or filled by the run's own queue alone: the limit is the story.
        return POOL_LIMIT_REACHED.format(limit=pool.limit)
    return WAITING_BEHIND_QUEUE.format(queue=higher_taker)
