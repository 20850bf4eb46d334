"""Browsing a large run history: pages of runs behind an opaque cursor, and the counts a dashboard shows.

Both read only through the store's indexed queries, so their cost follows the page, never the history:

- `browse_runs` pages through runs newest scheduled time first (ties by id), filtered by pool, queue,
  deployment and state types. Without a pool or a deployment it merges every pool's page (a few indexed
  queries per page). The cursor is opaque text (`RunPosition.token`): pass a page's `next` to get the page
  after it; `next` is None on the last page. A page may hold fewer runs than the limit, even none, while
  `next` is set (DynamoDB bounds what one page may examine): follow `next` until it is None.
- `pool_counts` gives, per pool and per queue, the runs waiting (SCHEDULED and due), late (waiting for more
  than `PUSHPOOL_LATE_AFTER_SECONDS`) and active (holding a slot, from the slot counters), with each count
  capped at `COUNT_CAP` (shown "1,000+") so that a backlog of any size costs the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from . import pools as pool_ops
from .config import Settings
from .deployments import get_deployment
from .models import FlowRun, WorkQueue, utcnow
from .states import StateType
from .store.base import COUNT_CAP, Count, RunPage, RunPosition, Store, pool_slot, queue_slot

DEFAULT_PAGE = 50
MAX_PAGE = 200


@dataclass(frozen=True)
class BrowsePage:
    """One page of runs, newest first, and the cursor of the page after it (None: this is the last)."""

    runs: list[FlowRun]
    next_cursor: str | None


def merge_pages(pages: Sequence[RunPage], limit: int) -> RunPage:
    """Several sources' pages (pools, state types) as one newest-first page, without skipping or repeating a run.

    A source whose page ended early (its `next` is set) was read only down to its `next`: the merged page
    stops there too, so the next page starts where every source can continue.
    """
    frontier = min((p.next for p in pages if p.next is not None), key=lambda pos: pos.key, default=None)
    seen: dict[str, FlowRun] = {}
    for page in pages:
        for run in page.runs:
            if frontier is None or RunPosition.of(run).key <= frontier.key:
                seen.setdefault(run.id, run)
    runs = sorted(seen.values(), key=lambda r: RunPosition.of(r).key)
    if len(runs) > limit:
        return RunPage(runs[:limit], RunPosition.of(runs[limit - 1]))
    return RunPage(runs, frontier)


def browse_runs(
    store: Store,
    *,
    pool: str | None = None,
    queue: str | None = None,
    deployment: str | None = None,
    states: Sequence[StateType] = (),
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    gone_ok: bool = False,
) -> BrowsePage:
    """A page of runs, newest scheduled time first; NotFound for a pool, queue or deployment that does not exist.

    `gone_ok`: a queue or deployment that no longer exists is no error; the runs that still name it are listed
    (deleting a deployment or a queue keeps its runs). The pool must exist still.

    `queue` without `pool` means queues of that name in every pool (as `flow-run ls --queue`). `states` are
    state types; none means every state. `cursor` is an earlier page's `next_cursor` (InvalidInput if it is
    not one); the cursor is a position, not a snapshot: a run whose scheduled time changes between two pages
    (a retry) can show on both or on neither.
    """
    after = RunPosition.from_token(cursor) if cursor is not None else None
    if pool is not None:
        pool_ops.get_pool(store, pool)
        if queue is not None and not gone_ok:
            pool_ops.get_queue(store, pool, queue)
    kinds: list[StateType | None] = list(dict.fromkeys(states)) or [None]
    if deployment is not None:
        if not gone_ok:
            get_deployment(store, deployment)
        pages = [
            store.run_page(deployment=deployment, pool=pool, queue=queue, state=s, after=after, limit=limit)
            for s in kinds
        ]
    else:
        names = [pool] if pool is not None else [p.name for p in store.list_pools()]
        pages = [
            store.run_page(pool=name, queue=queue, state=s, after=after, limit=limit) for name in names for s in kinds
        ]
    merged = merge_pages(pages, limit)
    return BrowsePage(merged.runs, merged.next.token() if merged.next is not None else None)


# counts ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gauge:
    """What a pool's or a queue's row shows: waiting and late runs (capped counts), active of limit."""

    waiting: Count
    late: Count
    active: int
    limit: int | None


@dataclass(frozen=True)
class PoolCounts:
    """A pool's gauge and each queue's, in priority order; `cap` is where a count stops ("1,000+")."""

    pool: str
    total: Gauge
    queues: dict[str, Gauge] = field(default_factory=dict)
    cap: int = COUNT_CAP


def pool_counts(
    store: Store, pool: str, *, now: datetime | None = None, settings: Settings | None = None
) -> PoolCounts:
    """Waiting, late and active runs of a pool and of each of its queues: two capped index counts per queue
    and one read of the slot counters, whatever the size of the history."""
    pool_ops.get_pool(store, pool)
    now = now or utcnow()
    settings = settings or Settings.from_env()
    queues: list[WorkQueue] = store.list_queues(pool)
    slots = store.slots([pool_slot(pool), *(queue_slot(pool, q.name) for q in queues)])
    gauges: dict[str, Gauge] = {}
    for queue in queues:
        slot = slots.get(queue_slot(pool, queue.name))
        gauges[queue.name] = Gauge(
            waiting=store.count_scheduled(pool, queue.name, until=now),
            late=store.count_scheduled(pool, queue.name, until=now - settings.late_after),
            active=slot.active if slot else 0,
            limit=queue.concurrency_limit,
        )
    slot = slots.get(pool_slot(pool))
    total = Gauge(
        waiting=Count.total(g.waiting for g in gauges.values()),
        late=Count.total(g.late for g in gauges.values()),
        active=slot.active if slot else 0,
        limit=slot.limit if slot else None,
    )
    return PoolCounts(pool, total, gauges)
