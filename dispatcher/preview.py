"""`work-pool preview`: upcoming runs per queue and, for each due run, why it waits."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .admission import Decision
from .admit_pass import plan
from .config import Settings
from .jobs import provider_problem
from .models import FlowRun, WorkPool, WorkQueue, utcnow
from .pools import get_pool, get_queue
from .scheduler import ScheduleFailed, run_key, uncreated_times
from .schedules import scheduled_run_id
from .store.base import Store, pool_slot, queue_slot

log = logging.getLogger("pushpool.preview")

MAX_PREVIEW_HOURS = 24 * 366
"""The furthest a preview looks ahead, in hours (a leap year): the API's `hours` and the CLI's `--hours`."""

PREVIEW_WINDOW = 1000
"""Runs read per queue for a preview; a backlog beyond it is summarised by its count."""


@dataclass(frozen=True)
class PreviewRun:
    id: str
    name: str
    deployment: str
    queue: str
    scheduled_time: datetime
    state_name: str
    """Scheduled, Late or AwaitingRetry for stored runs; Planned for a schedule's run not created yet."""
    reason: str | None
    """For a due run: why it waits, or None when the next pass would admit it. None for future runs."""
    due: bool


@dataclass
class QueuePreview:
    queue: WorkQueue
    active: int
    runs: list[PreviewRun] = field(default_factory=list)


@dataclass
class PoolPreview:
    pool: WorkPool
    active: int
    hours: float
    queues: list[QueuePreview] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    """deployment name -> why its planned runs are missing: its schedule could not be evaluated."""


def shown_state_name(run: FlowRun, now: datetime, settings: Settings) -> str:
    """The state name a run shows now: a Scheduled run past its time by more than `late_after` is Late."""
    if run.state_name == "Scheduled" and now - run.scheduled_time > settings.late_after:
        return "Late"
    return run.state_name


def preview_pool(
    store: Store,
    name: str,
    hours: float = 1.0,
    *,
    queue: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> PoolPreview:
    """Stored SCHEDULED runs up to now + hours and the runs schedules will create, grouped by queue."""
    settings = settings or Settings()
    now = now or utcnow()
    pool = get_pool(store, name)
    every_queue = store.list_queues(name)
    queues = [get_queue(store, name, queue)] if queue else every_queue
    until = now + timedelta(hours=hours)
    # Decide over every queue even when one is shown: higher queues take the pool's slots first.
    decision, _ = plan(store, pool, every_queue, now, settings, window=PREVIEW_WINDOW)
    admissible = {r.id for r in decision.admit}
    # A pool whose provider cannot load admits nothing, whatever its slots say: every due run waits for that.
    unavailable = provider_problem(pool.type)
    if unavailable is not None:
        admissible = set()
        decision = Decision(admit=(), waiting={**decision.waiting, **{d.id: unavailable for d in decision.admit}})
    slots = store.slots([pool_slot(name), *(queue_slot(name, q.name) for q in queues)])
    result = PoolPreview(pool, getattr(slots.get(pool_slot(name)), "active", 0), hours)
    deployments = [d for d in store.list_deployments(name) if d.schedules and not d.schedule_paused]
    for q in queues:
        runs = store.due_runs(name, q.name, until, PREVIEW_WINDOW)
        seen = {r.id for r in runs}
        items = [
            PreviewRun(
                r.id,
                r.name,
                r.deployment,
                r.queue,
                r.scheduled_time,
                shown_state_name(r, now, settings),
                None if r.id in admissible else decision.waiting.get(r.id),
                r.scheduled_time <= now,
            )
            for r in runs
        ]
        for deployment in deployments:
            if deployment.queue != q.name:
                continue
            key = run_key(store, deployment)
            try:
                planned = uncreated_times(store, deployment, now, until, PREVIEW_WINDOW)
            except ScheduleFailed as exc:  # the other deployments' planned runs are still shown
                result.problems[deployment.name] = str(exc)
                log.warning("%s", exc, exc_info=True)
                continue
            for t in planned:
                run_id = scheduled_run_id(key, t)
                if run_id not in seen:
                    items.append(
                        PreviewRun(
                            run_id,
                            f"{deployment.name}-{run_id[:8]}",
                            deployment.name,
                            q.name,
                            t,
                            "Planned",
                            None,
                            False,
                        )
                    )
        items.sort(key=lambda p: (p.scheduled_time, p.id))
        result.queues.append(QueuePreview(q, getattr(slots.get(queue_slot(name, q.name)), "active", 0), items))
    return result
