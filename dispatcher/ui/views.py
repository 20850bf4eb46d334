"""What each dashboard page shows, read from the store through the core; templates only lay it out.

Nothing here decides a rule: status comes from the models, reasons from `preview`, bars from `timeline`,
the job from `deployments.render_run`, logs from `providers.base.provider_logs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlencode

from .. import pools as pool_ops
from ..cancelling import get_run
from ..config import Settings
from ..deployments import get_deployment, render_run
from ..errors import PushpoolError
from ..models import READY_WINDOW, Deployment, FlowRun, WorkPool, WorkQueue, utcnow
from ..preview import PoolPreview, PreviewRun, preview_pool, shown_state_name
from ..providers.base import provider_logs
from ..providers.console import console_url
from ..run_browser import browse_runs, pool_counts
from ..states import StateType
from ..store.base import Count, Store, with_parameters
from ..timeline import MAX_RUNS, Bar, bar_of, bars
from .charts import Timeline, timeline_chart

TIMELINE_WINDOW = timedelta(hours=1)
"""How far back a pool's timeline looks (as `work-pool timeline`'s default --since)."""
PREVIEW_HOURS = 1.0
"""How far ahead a pool's upcoming runs are shown (as `work-pool preview`'s default --hours)."""
PAGE_SIZE = 25
"""Runs per page of the runs list."""


@dataclass(frozen=True)
class Gauge:
    """Slots in use of a limit; `limit` None is unlimited."""

    active: int
    limit: int | None

    @property
    def percent(self) -> int:
        if self.limit is None:
            return 0
        if self.limit == 0:
            return 100
        return min(100, round(100 * self.active / self.limit))

    @property
    def level(self) -> str:
        """ok, busy (70% or more) or full: the gauge's colour."""
        if self.limit is not None and self.active >= self.limit:
            return "full"
        return "busy" if self.percent >= 70 else "ok"


def status_why(pool: WorkPool | WorkQueue, now: datetime) -> str | None:
    """Why a pool or queue is not READY, in words (None when it is)."""
    if pool.status == "PAUSED":
        return "paused: no run starts until it is resumed"
    if pool.status == "READY":
        return None
    if isinstance(pool, WorkPool):
        problem = pool_ops.status_reason(pool)
        if problem:
            return problem
    if pool.last_polled is None:
        return "no dispatch pass has served it yet: is pushpool serve (or the dispatch function) running?"
    ago = int((now - pool.last_polled).total_seconds())
    return f"no dispatch pass for {ago} s (READY means one within the last {int(READY_WINDOW.total_seconds())} s)"


# pools -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolRow:
    pool: WorkPool
    why: str | None
    gauge: Gauge
    waiting: Count
    late: Count
    """Capped counts (shown "1,000+"): a backlog of any size costs the same to count."""


def pool_rows(store: Store, now: datetime | None = None) -> list[PoolRow]:
    """The pools page: one row per pool, its counts from the store's indexed counts (`run_browser.pool_counts`)."""
    now = now or utcnow()
    settings = Settings.from_env()
    rows = []
    for pool in store.list_pools():
        counts = pool_counts(store, pool.name, now=now, settings=settings).total
        gauge = Gauge(counts.active, pool.concurrency_limit)
        rows.append(PoolRow(pool, status_why(pool, now), gauge, counts.waiting, counts.late))
    return rows


# one pool --------------------------------------------------------------------------------------------------
@dataclass
class PoolPage:
    pool: WorkPool
    why: str | None
    gauge: Gauge
    preview: PoolPreview
    queue_gauges: dict[str, Gauge]
    queue_why: dict[str, str | None]
    deployments: list[Deployment]
    timeline: Timeline
    now: datetime

    @property
    def upcoming(self) -> list[PreviewRun]:
        """Runs not due yet (stored or planned by a schedule), soonest first, across the pool's queues."""
        runs = [r for q in self.preview.queues for r in q.runs if not r.due]
        return sorted(runs, key=lambda r: (r.scheduled_time, r.id))


def pool_page(store: Store, name: str, now: datetime | None = None) -> PoolPage:
    now = now or utcnow()
    pool = pool_ops.get_pool(store, name)
    preview = preview_pool(store, name, PREVIEW_HOURS, now=now, settings=Settings.from_env())
    queue_gauges = {q.queue.name: Gauge(q.active, q.queue.concurrency_limit) for q in preview.queues}
    queue_why = {q.queue.name: status_why(q.queue, now) for q in preview.queues}
    order = [q.queue.name for q in preview.queues]
    recent: list[Bar] = bars(store.list_runs(name, limit=MAX_RUNS), now - TIMELINE_WINDOW, now)
    return PoolPage(
        pool,
        status_why(pool, now),
        Gauge(preview.active, pool.concurrency_limit),
        preview,
        queue_gauges,
        queue_why,
        store.list_deployments(name),
        timeline_chart(recent, order, now),
        now,
    )


# runs ------------------------------------------------------------------------------------------------------
@dataclass
class RunFilter:
    pool: str | None = None
    queue: str | None = None
    deployment: str | None = None
    state: StateType | None = None
    cursor: str | None = None

    def query(self, cursor: str | None = None) -> str:
        """The query string of the same filter at another page (`cursor` None: the first)."""
        fields = {"pool": self.pool, "queue": self.queue, "deployment": self.deployment, "cursor": cursor}
        fields["state"] = self.state.value if self.state else None
        return urlencode({k: v for k, v in fields.items() if v is not None})


@dataclass
class RunsPage:
    runs: list[FlowRun]
    filter: RunFilter
    next_cursor: str | None
    """The page after this one (None: this is the last); pages go back to the newest, never one back."""
    pools: list[WorkPool]
    queues: list[WorkQueue]
    deployments: list[Deployment]
    shown: dict[str, str] = field(default_factory=dict)
    """run id -> the state name shown: Late for a Scheduled run past its time (as `flow-run ls`)."""
    durations: dict[str, str] = field(default_factory=dict)
    """run id -> how long it has held (or held) a slot, for runs that were admitted."""
    gone: str | None = None
    """Says so when the filter's deployment or queue no longer exists while runs naming it remain."""


def duration_text(bar: Bar, now: datetime) -> str:
    """How long a run held a slot: from admission to its end, or to now while it still holds one."""
    if bar.admitted is None:
        return ""
    seconds = int(((bar.ended or now) - bar.admitted).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def runs_page(store: Store, f: RunFilter) -> RunsPage:
    """A page of runs, newest scheduled time first, through the store's cursor-paged listing (`browse_runs`).

    A deleted deployment or removed queue still lists the runs that name it, with a sentence saying it is
    gone; NotFound only when nothing of it remains (a name that never existed, as any unknown name).
    """
    gone = _gone(store, f)
    found = browse_runs(
        store,
        pool=f.pool,
        queue=f.queue,
        deployment=f.deployment,
        states=[f.state] if f.state else (),
        limit=PAGE_SIZE,
        cursor=f.cursor,
        gone_ok=True,
    )
    now, settings = utcnow(), Settings.from_env()
    return RunsPage(
        found.runs,
        f,
        found.next_cursor,
        store.list_pools(),
        store.list_queues(f.pool) if f.pool is not None else [],
        store.list_deployments(f.pool),
        {r.id: shown_state_name(r, now, settings) for r in found.runs},
        {r.id: duration_text(bar_of(r), now) for r in found.runs},
        gone,
    )


def _gone(store: Store, f: RunFilter) -> str | None:
    """The sentence for a filter naming a deleted deployment or removed queue whose runs remain; NotFound
    (the usual words) when no run names it either."""
    missing: list[tuple[Callable[[], object], str]] = []
    if f.deployment is not None and store.get_deployment(f.deployment) is None:
        sentence = f"Deployment {f.deployment!r} no longer exists; the runs it left are listed."
        missing.append((partial(get_deployment, store, f.deployment), sentence))
    if f.pool is not None and f.queue is not None and store.get_queue(f.pool, f.queue) is None:
        pool_ops.get_pool(store, f.pool)  # a pool that is gone is a 404, as ever
        sentence = f"Queue {f.queue!r} no longer exists in pool {f.pool!r}; the runs it left are listed."
        missing.append((partial(pool_ops.get_queue, store, f.pool, f.queue), sentence))
    if not missing:
        return None
    left = browse_runs(store, pool=f.pool, queue=f.queue, deployment=f.deployment, limit=1, gone_ok=True)
    if not left.runs:
        missing[0][0]()  # raises NotFound in the words of any unknown name: nothing of it remains
    return " ".join(sentence for _, sentence in missing)


@dataclass
class RunPage:
    run: FlowRun
    pool: WorkPool | None
    console: str | None
    job: dict[str, Any] | None
    job_problem: str | None
    shown_state: str
    bar: Bar
    duration: str
    logs: str | None = None
    logs_problem: str | None = None
    history: list[Any] = field(default_factory=list)
    deployment_exists: bool = True
    """False once the run's deployment was deleted: its runs list would be a 404, so it is not linked."""


def run_page(store: Store, run_id: str, *, with_logs: bool = False) -> RunPage:
    """A run's page; `with_logs` asks its provider for the job's output (a call to the cloud for most)."""
    run = with_parameters(store, get_run(store, run_id))
    pool = store.get_pool(run.pool)
    console = console_url(pool.type, run.infrastructure_id) if pool and run.infrastructure_id else None
    job: dict[str, Any] | None = None
    job_problem = None
    try:
        job = render_run(store, run)
    except PushpoolError as exc:
        job_problem = str(exc)
    now = utcnow()
    bar = bar_of(run)
    page = RunPage(
        run,
        pool,
        console,
        job,
        job_problem,
        shown_state_name(run, now, Settings.from_env()),
        bar,
        duration_text(bar, now),
        history=list(reversed(run.state_history)),
        deployment_exists=store.get_deployment(run.deployment) is not None,
    )
    if with_logs:
        if run.infrastructure_id is None:
            page.logs_problem = "The run has no infrastructure yet: nothing was submitted."
        elif pool is None:
            page.logs_problem = f"Pool {run.pool!r} no longer exists, so its provider is unknown."
        else:
            try:
                page.logs = provider_logs(pool.type, run.infrastructure_id)
                if page.logs is None:
                    page.logs_problem = f"The {pool.type} provider keeps no output; see the provider's console."
            except PushpoolError as exc:
                page.logs_problem = str(exc)
    return page
