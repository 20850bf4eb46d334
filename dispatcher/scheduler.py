"""The scheduler step: create upcoming runs of scheduled deployments ahead of time, never twice.

Run ids derive from (deployment, scheduled time), so repeated or overlapping steps write the same ids and
the store keeps the first. A per-deployment cursor (the last time covered) keeps each step's writes to the
new slots only, so a step's cost does not grow with the number of runs already created.

One deployment's trouble stays its own: a schedule that raises while its fire times are computed (data an
older version stored, or a bug) or runs that cannot be created are noted in `ScheduleResult.problems` and
logged, and the step goes on with the other deployments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from .config import Settings
from .deployments import new_run
from .errors import PushpoolError
from .models import Deployment, FlowRun
from .schedules import describe, scheduled_run_id, upcoming
from .store.base import Store

log = logging.getLogger("pushpool.scheduler")


class ScheduleFailed(PushpoolError):
    """A deployment's schedule raised while its fire times were computed; the message names it and the fix."""


def _fix_or_pause(name: str) -> str:
    return f"fix its schedule, or pause it with `pushpool deployment pause-schedule {name}`"


def _cursor_key(deployment: Deployment) -> str:
    return f"schedule_cursor:{deployment.id}"


def reset_cursor(store: Store, deployment: Deployment) -> None:
    store.put_setting(_cursor_key(deployment), "")


def _generation_key(deployment: Deployment) -> str:
    return f"schedule_generation:{deployment.id}"


def run_key(store: Store, deployment: Deployment) -> str:
    """What the deployment's scheduled run ids derive from: its id, plus the schedule generation once bumped.

    Runs a schedule created ahead of time are cancelled when the schedule changes or is paused; their ids
    stay taken. A new generation gives the next runs fresh ids, so resuming a schedule (or changing it to
    one with the same fire times) creates its runs again instead of colliding with the cancelled ones.
    """
    generation = store.get_setting(_generation_key(deployment))
    return f"{deployment.id}/{generation}" if generation else deployment.id


def new_generation(store: Store, deployment: Deployment) -> None:
    """Start a new schedule generation (after its future runs were cancelled) and reset the cursor."""
    current = store.get_setting(_generation_key(deployment))
    store.put_setting(_generation_key(deployment), str(int(current or 0) + 1))
    reset_cursor(store, deployment)


@dataclass
class ScheduleResult:
    created: list[FlowRun] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    """deployment name -> why its runs could not be created (e.g. a required job variable is missing)."""


def planned_times(deployment: Deployment, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """Every fire time of the deployment's schedules in (after, until], merged and deduplicated.

    Raises ScheduleFailed, naming the deployment, when a schedule raises anything while it is evaluated.
    """
    times: set[datetime] = set()
    for schedule in deployment.schedules:
        try:
            times.update(upcoming(schedule, after, until, limit))
        except Exception as exc:  # noqa: BLE001 - whatever a schedule raises stays its deployment's problem
            raise ScheduleFailed(
                f"deployment {deployment.name!r}: its schedule {describe(schedule)} could not be evaluated "
                f"({type(exc).__name__}: {str(exc).rstrip('.')}); {_fix_or_pause(deployment.name)}."
            ) from exc
    return sorted(times)[:limit]


def uncreated_times(store: Store, deployment: Deployment, now: datetime, until: datetime, limit: int) -> list[datetime]:
    """Fire times in (now, until] the scheduler has not created runs for yet: those after its cursor.

    A time at or before the cursor had its run created, whatever became of it since (a cancelled run keeps
    its id), so it is never planned again.
    """
    cursor = store.get_setting(_cursor_key(deployment))
    after = max(now, datetime.fromisoformat(cursor)) if cursor else now
    return planned_times(deployment, after, until, limit)


def schedule_deployment(store: Store, deployment: Deployment, now: datetime, settings: Settings) -> list[FlowRun]:
    """Create this deployment's runs due up to now + horizon that earlier steps have not covered."""
    if not deployment.schedules or deployment.schedule_paused:
        return []
    until = now + settings.schedule_horizon
    times = uncreated_times(store, deployment, now, until, settings.schedule_max_runs)
    key = run_key(store, deployment)
    runs = [
        new_run(store, deployment, scheduled_time=t, run_id=scheduled_run_id(key, t), auto_scheduled=True)
        for t in times
    ]
    created = set(store.create_runs(runs))
    covered = times[-1] if len(times) >= settings.schedule_max_runs else until
    store.put_setting(_cursor_key(deployment), covered.isoformat())
    return [r for r in runs if r.id in created]


def schedule_all(store: Store, now: datetime, settings: Settings | None = None) -> ScheduleResult:
    """The scheduler step over every deployment with an active schedule (paused pools included)."""
    settings = settings or Settings()
    result = ScheduleResult()
    for deployment in store.scheduled_deployments():
        try:
            result.created.extend(schedule_deployment(store, deployment, now, settings))
        except ScheduleFailed as exc:
            result.problems[deployment.name] = str(exc)
            log.warning("%s", exc, exc_info=True)
        except PushpoolError as exc:
            result.problems[deployment.name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one deployment's failure must not stop the others' runs
            result.problems[deployment.name] = (
                f"deployment {deployment.name!r}: its scheduled runs could not be created "
                f"({type(exc).__name__}: {str(exc).rstrip('.')}); see the dispatcher's log, and "
                f"{_fix_or_pause(deployment.name)}."
            )
            log.exception("scheduling deployment %s failed unexpectedly", deployment.name)
    return result
