"""Tests for dispatcher.scheduler on a real SQLite store: runs ahead of time, deterministic, never twice."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher import scheduler
from dispatcher.config import Settings
from dispatcher.deployments import create_deployment, update_deployment
from dispatcher.models import Deployment
from dispatcher.pools import create_pool, update_pool
from dispatcher.preview import preview_pool
from dispatcher.scheduler import ScheduleFailed, planned_times, reset_cursor, schedule_all
from dispatcher.schedules import CronSchedule, IntervalSchedule, RRuleSchedule, Schedule, scheduled_run_id, upcoming
from dispatcher.states import StateType
from dispatcher.store.sqlite import SQLiteStore

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
EVERY_10_MIN = IntervalSchedule(interval=600, anchor_date=T0)
HOUR = Settings(schedule_horizon_seconds=3600)

REQUIRED_TEMPLATE: dict[str, Any] = {
    "job_configuration": {"command": "python -m flow", "labels": {"image": "{{ image }}"}},
    "variables": {"type": "object", "properties": {"image": {"type": "string"}}, "required": ["image"]},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    create_pool(s, "p")
    yield s
    s.close()


def all_runs(store: SQLiteStore, pool: str = "p") -> list[Any]:
    return store.list_runs(pool, limit=10_000)


def times(runs: list[Any]) -> list[datetime]:
    return sorted(r.scheduled_time for r in runs)


def expected(n: int, start: int = 1) -> list[datetime]:
    return [T0 + timedelta(minutes=10 * k) for k in range(start, start + n)]


def test_interval_runs_within_the_horizon_with_deterministic_ids(store: SQLiteStore) -> None:
    deployment = create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN], parameters={"x": 1})
    result = schedule_all(store, T0, HOUR)
    assert result.problems == {}
    assert times(result.created) == expected(6)  # (T0, T0 + 1h]
    for run in result.created:
        assert run.id == scheduled_run_id(deployment.id, run.scheduled_time)
        assert (run.deployment, run.pool, run.queue, run.parameters) == ("etl", "p", "default", {"x": 1})
        assert run.auto_scheduled and run.state is StateType.SCHEDULED
        assert run.state_history[0].source == "scheduler"
        assert store.get_run(run.id) == run
    assert len(all_runs(store)) == 6


def test_a_second_step_at_the_same_time_creates_nothing(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN])
    assert len(schedule_all(store, T0, HOUR).created) == 6
    assert schedule_all(store, T0, HOUR).created == []
    assert schedule_all(store, T0 + timedelta(seconds=30), HOUR).created == []
    assert len(all_runs(store)) == 6


def test_the_horizon_moves_on_with_time(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN])
    schedule_all(store, T0, HOUR)
    later = schedule_all(store, T0 + timedelta(minutes=25), HOUR).created
    assert times(later) == expected(2, start=7)  # 13:10 and 13:20
    assert times(all_runs(store)) == expected(8)


def test_overlapping_steps_with_a_fresh_cursor_never_duplicate(store: SQLiteStore) -> None:
    deployment = create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN])
    first = schedule_all(store, T0, HOUR).created
    reset_cursor(store, deployment)
    # A step that lost its cursor (or overlapped with the first) covers the same window again.
    assert schedule_all(store, T0, HOUR).created == []
    reset_cursor(store, deployment)
    overlap = schedule_all(store, T0 + timedelta(minutes=15), HOUR).created
    assert times(overlap) == expected(1, start=7)
    runs = all_runs(store)
    assert len(runs) == len({r.id for r in runs}) == len({r.scheduled_time for r in runs}) == 7
    assert {r.id for r in first} <= {r.id for r in runs}


def test_max_runs_caps_a_step_and_the_next_step_continues(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN])
    capped = Settings(schedule_horizon_seconds=3600, schedule_max_runs=4)
    assert times(schedule_all(store, T0, capped).created) == expected(4)
    assert times(schedule_all(store, T0, capped).created) == expected(2, start=5)
    assert schedule_all(store, T0, capped).created == []
    assert times(all_runs(store)) == expected(6)


def test_max_runs_is_per_deployment(store: SQLiteStore) -> None:
    create_deployment(store, "a", pool="p", schedules=[EVERY_10_MIN])
    create_deployment(store, "b", pool="p", schedules=[EVERY_10_MIN])
    created = schedule_all(store, T0, Settings(schedule_horizon_seconds=3600, schedule_max_runs=2)).created
    assert sorted(r.deployment for r in created) == ["a", "a", "b", "b"]


def test_paused_pool_still_gets_scheduled_runs(store: SQLiteStore) -> None:
    update_pool(store, "p", paused=True)
    create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN])
    assert len(schedule_all(store, T0, HOUR).created) == 6


def test_schedule_paused_creates_none(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN])
    update_deployment(store, "etl", schedule_paused=True)
    assert schedule_all(store, T0, HOUR).created == []
    assert all_runs(store) == []


def test_deployment_without_schedules_creates_none(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p")
    assert schedule_all(store, T0, HOUR).created == []


def test_missing_required_variable_is_a_problem_not_an_error(store: SQLiteStore) -> None:
    create_pool(store, "strict", base_job_template=REQUIRED_TEMPLATE)
    create_deployment(store, "broken", pool="strict", schedules=[EVERY_10_MIN])
    create_deployment(store, "fine", pool="strict", schedules=[EVERY_10_MIN], job_variables={"image": "img"})
    result = schedule_all(store, T0, HOUR)
    assert set(result.problems) == {"broken"}
    assert "image" in result.problems["broken"]
    assert {r.deployment for r in result.created} == {"fine"}
    assert len(all_runs(store, "strict")) == 6
    # Fixed, the next step creates its runs.
    update_deployment(store, "broken", job_variables={"image": "img"})
    again = schedule_all(store, T0, HOUR)
    assert again.problems == {}
    assert {r.deployment for r in again.created} == {"broken"} and len(again.created) == 6


def test_several_schedules_merge_without_duplicates(store: SQLiteStore) -> None:
    every_20 = IntervalSchedule(interval=1200, anchor_date=T0)
    hourly = CronSchedule(cron="0 * * * *")
    create_deployment(store, "etl", pool="p", schedules=[EVERY_10_MIN, every_20, hourly])
    assert times(schedule_all(store, T0, HOUR).created) == expected(6)


def test_planned_times_merges_and_limits() -> None:
    deployment = Deployment(
        name="d", pool="p", schedules=[EVERY_10_MIN, IntervalSchedule(interval=900, anchor_date=T0)]
    )
    got = planned_times(deployment, T0, T0 + timedelta(hours=1), 100)
    minutes = [int((t - T0).total_seconds() // 60) for t in got]
    assert minutes == [10, 15, 20, 30, 40, 45, 50, 60]
    assert planned_times(deployment, T0, T0 + timedelta(hours=1), 3) == got[:3]


# ------------------------------------------------------------- one deployment's broken schedule stays its own


def store_as_an_older_version_did(store: SQLiteStore, name: str, rrule: str) -> None:
    """Rewrite a deployment's stored schedule behind validation: data an older pushpool version wrote."""
    with closing(sqlite3.connect(store.url.removeprefix("sqlite:///"))) as db, db:
        (data,) = db.execute("SELECT data FROM deployments WHERE name = ?", (name,)).fetchone()
        document = json.loads(data)
        document["schedules"] = [{"rrule": rrule, "timezone": "UTC"}]
        db.execute("UPDATE deployments SET data = ? WHERE name = ?", (json.dumps(document), name))


def test_a_stored_schedule_that_cannot_be_evaluated_is_that_deployments_problem_only(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    create_pool(store, "other")
    create_deployment(store, "broken", pool="p", schedules=[RRuleSchedule(rrule="FREQ=DAILY")])
    create_deployment(store, "same-pool", pool="p", schedules=[EVERY_10_MIN])
    create_deployment(store, "other-pool", pool="other", schedules=[EVERY_10_MIN])
    store_as_an_older_version_did(store, "broken", "FREQ=DAILY;INTERVAL=0")  # was a ZeroDivisionError
    broken = store.get_deployment("broken")  # still readable, so it can be listed, fixed or deleted
    assert broken is not None and broken.schedules == [RRuleSchedule.model_construct(rrule="FREQ=DAILY;INTERVAL=0")]

    with caplog.at_level(logging.WARNING, logger="pushpool.scheduler"):
        result = schedule_all(store, T0, HOUR)

    assert set(result.problems) == {"broken"}
    problem = result.problems["broken"]
    assert problem.startswith("deployment 'broken': its schedule rrule FREQ=DAILY;INTERVAL=0 (UTC) could not be")
    assert "INTERVAL must be a whole number of 1 or more, got 0" in problem
    assert problem.endswith("or pause it with `pushpool deployment pause-schedule broken`.")
    assert sorted(r.deployment for r in result.created) == ["other-pool"] * 6 + ["same-pool"] * 6
    assert times(all_runs(store, "other")) == expected(6)
    assert [r.deployment for r in all_runs(store)] == ["same-pool"] * 6
    [record] = [r for r in caplog.records if r.name == "pushpool.scheduler"]
    assert record.levelno == logging.WARNING and "broken" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ScheduleFailed)
    assert isinstance(record.exc_info[1].__cause__, ValueError)

    # It can be paused as the problem says (the stored schedule is kept, not re-checked as input) ...
    paused = update_deployment(store, "broken", schedule_paused=True)
    assert paused.schedule_paused and paused.schedules == broken.schedules
    assert schedule_all(store, T0, HOUR).problems == {}
    # ... and its cursor did not move: once the schedule is fixed, the next step creates its runs.
    update_deployment(store, "broken", schedules=[RRuleSchedule(rrule="FREQ=HOURLY")], schedule_paused=False)
    again = schedule_all(store, T0, HOUR)
    assert again.problems == {}
    assert [(r.deployment, r.scheduled_time) for r in again.created] == [("broken", T0 + timedelta(hours=1))]


def test_a_schedule_raising_anything_is_named_in_problems(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    odd = IntervalSchedule(interval=700, anchor_date=T0)

    def upcoming_but_odd_raises(schedule: Schedule, after: datetime, until: datetime, limit: int) -> list[datetime]:
        if schedule == odd:
            raise ZeroDivisionError("integer division or modulo by zero")
        return upcoming(schedule, after, until, limit)

    monkeypatch.setattr(scheduler, "upcoming", upcoming_but_odd_raises)
    create_deployment(store, "a-odd", pool="p", schedules=[EVERY_10_MIN, odd])
    create_deployment(store, "b-fine", pool="p", schedules=[EVERY_10_MIN])
    with caplog.at_level(logging.WARNING, logger="pushpool.scheduler"):
        result = schedule_all(store, T0, HOUR)
    assert list(result.problems) == ["a-odd"]
    assert "(ZeroDivisionError: integer division or modulo by zero)" in result.problems["a-odd"]
    assert "pause-schedule a-odd" in result.problems["a-odd"]
    assert {r.deployment for r in result.created} == {"b-fine"} and len(result.created) == 6
    # None of a deployment's runs are created when one of its schedules fails: no half-planned deployment.
    assert all(r.deployment == "b-fine" for r in all_runs(store))
    assert [r.levelno for r in caplog.records if r.name == "pushpool.scheduler"] == [logging.WARNING]


def test_an_unexpected_failure_creating_runs_is_named_in_problems(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_new_run = scheduler.new_run

    def new_run_failing_for_a(store: SQLiteStore, deployment: Deployment, **kwargs: Any) -> Any:
        if deployment.name == "a":
            raise RuntimeError("renderer bug")
        return real_new_run(store, deployment, **kwargs)

    monkeypatch.setattr(scheduler, "new_run", new_run_failing_for_a)
    create_deployment(store, "a", pool="p", schedules=[EVERY_10_MIN])
    create_deployment(store, "b", pool="p", schedules=[EVERY_10_MIN])
    with caplog.at_level(logging.WARNING, logger="pushpool.scheduler"):
        result = schedule_all(store, T0, HOUR)
    assert list(result.problems) == ["a"]
    assert "could not be created (RuntimeError: renderer bug)" in result.problems["a"]
    assert {r.deployment for r in result.created} == {"b"} and len(result.created) == 6
    [record] = [r for r in caplog.records if r.name == "pushpool.scheduler"]
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_preview_skips_a_schedule_that_cannot_be_evaluated(store: SQLiteStore) -> None:
    create_deployment(store, "broken", pool="p", schedules=[RRuleSchedule(rrule="FREQ=DAILY")])
    create_deployment(store, "fine", pool="p", schedules=[EVERY_10_MIN])
    store_as_an_older_version_did(store, "broken", "FREQ=DAILY;INTERVAL=0")
    preview = preview_pool(store, "p", hours=1, now=T0)
    assert [(r.deployment, r.state_name) for r in preview.queues[0].runs] == [("fine", "Planned")] * 6
    assert list(preview.problems) == ["broken"]
    assert "INTERVAL must be a whole number of 1 or more" in preview.problems["broken"]
