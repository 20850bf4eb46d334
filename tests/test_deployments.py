"""Tests for dispatcher.deployments on a real SQLite store: job variables, runs, delete and schedule changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import STORE_BACKENDS

from dispatcher import templating
from dispatcher.admit_pass import admit_pool
from dispatcher.config import Settings
from dispatcher.deployments import (
    create_deployment,
    delete_deployment,
    get_deployment,
    run_deployment,
    update_deployment,
)
from dispatcher.errors import Conflict, InvalidInput, NotFound, PushpoolError
from dispatcher.models import MAX_RUN_PARAMETERS_BYTES, json_size, utcnow
from dispatcher.pools import create_pool, create_queue
from dispatcher.scheduler import schedule_all
from dispatcher.schedules import CronSchedule, IntervalSchedule
from dispatcher.states import StateType
from dispatcher.store.base import Store, deployment_slot, pool_slot, with_parameters
from dispatcher.store.sqlite import SQLiteStore

TEMPLATE: dict[str, Any] = {
    "job_configuration": {
        "command": "{{ command }}",
        "env": "{{ env }}",
        "labels": {"image": "{{ image }}", "cpu": "{{ cpu }} cpus"},
    },
    "variables": {
        "type": "object",
        "properties": {
            "image": {"type": "string"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "command": {"type": "string", "default": "python -m flow"},
            "cpu": {"type": "integer", "minimum": 1, "maximum": 8},
        },
        "required": ["image"],
    },
}
EVERY_10_MIN = IntervalSchedule(interval=600)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    create_pool(s, "p", base_job_template=TEMPLATE, job_variables={"env": {"A": "pool", "B": "pool"}})
    create_queue(s, "p", "fast", priority=1)
    yield s
    s.close()


def snapshot(store: SQLiteStore) -> dict[str, Any]:
    return {
        "deployments": [d.model_dump() for d in store.list_deployments()],
        "runs": [r.model_dump() for r in store.list_runs("p", limit=10_000)],
    }


def states(store: SQLiteStore, name: str) -> list[StateType]:
    return sorted(r.state for r in store.runs_of_deployment(name, limit=10_000))


# --- create -------------------------------------------------------------------------------------------


def test_create_on_the_default_pool(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "d.db"))
    with pytest.raises(InvalidInput, match="--pool"):
        create_deployment(store, "etl")
    create_pool(store, "main", set_as_default=True)
    deployment = create_deployment(store, "etl")
    assert (deployment.pool, deployment.queue) == ("main", "default")
    assert get_deployment(store, "etl") == deployment
    store.close()


def test_create_on_explicit_pool_and_queue(store: SQLiteStore) -> None:
    deployment = create_deployment(
        store,
        "etl",
        pool="p",
        queue="fast",
        job_variables={"cpu": 2},
        parameters={"x": 1},
        concurrency_limit=2,
        tags=["nightly"],
        description="loads",
    )
    stored = get_deployment(store, "etl")
    assert stored == deployment
    assert (stored.pool, stored.queue, stored.job_variables, stored.parameters) == ("p", "fast", {"cpu": 2}, {"x": 1})
    assert stored.tags == ["nightly"] and stored.description == "loads"
    assert store.slots([deployment_slot(stored.id)])[deployment_slot(stored.id)].limit == 2


def test_unknown_pool_and_queue_are_not_found_naming_them(store: SQLiteStore) -> None:
    before = snapshot(store)
    with pytest.raises(NotFound, match="'ghost'"):
        create_deployment(store, "etl", pool="ghost")
    with pytest.raises(NotFound, match="'nope'.*'p'.*default, fast|'nope'.*'p'.*fast"):
        create_deployment(store, "etl", pool="p", queue="nope")
    assert snapshot(store) == before


def test_undeclared_job_variable_rejected_listing_allowed(store: SQLiteStore) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidInput) as info:
        create_deployment(store, "etl", pool="p", job_variables={"gpu": 1})
    message = str(info.value)
    assert "'gpu'" in message
    for allowed in ("command", "cpu", "env", "image"):
        assert allowed in message
    assert snapshot(store) == before


@pytest.mark.parametrize("variables", [{"cpu": 0}, {"cpu": "two"}, {"env": {"A": 1}}, {"image": 5}])
def test_schema_violation_rejected(store: SQLiteStore, variables: dict[str, Any]) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=f"job_variables.{next(iter(variables))}"):
        create_deployment(store, "etl", pool="p", job_variables=variables)
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"concurrency_limit": -1}, "concurrency_limit"),
        ({"job_variables": ["x"]}, "job_variables"),
        ({"parameters": "x"}, "parameters"),
    ],
)
def test_bad_input_writes_nothing(store: SQLiteStore, kwargs: dict[str, Any], words: str) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=words):
        create_deployment(store, "etl", pool="p", **kwargs)
    with pytest.raises(InvalidInput, match="may not contain"):
        create_deployment(store, "a/b", pool="p")
    assert snapshot(store) == before


def test_duplicate_name_conflicts(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", parameters={"v": 1})
    before = snapshot(store)
    with pytest.raises(Conflict, match="'etl' already exists"):
        create_deployment(store, "etl", pool="p", parameters={"v": 2})
    assert snapshot(store) == before


# --- runs ---------------------------------------------------------------------------------------------


def test_required_not_enforced_at_create_but_at_run(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p")  # no image: fine for the deployment
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="image"):
        run_deployment(store, "etl")
    assert snapshot(store) == before
    run = run_deployment(store, "etl", job_variables={"image": "python:3.12"})
    assert run.job_variables == {"image": "python:3.12"}
    assert store.get_run(run.id) == run


def test_run_merges_parameters_and_job_variables(store: SQLiteStore) -> None:
    create_deployment(
        store,
        "etl",
        pool="p",
        parameters={"a": 1, "b": {"x": 1}},
        job_variables={"image": "img:1", "env": {"B": "dep", "C": "dep"}, "cpu": 2},
    )
    run = run_deployment(store, "etl", parameters={"b": {"y": 2}, "c": 3}, job_variables={"env": {"C": "run"}})
    # Parameters: the run's replace the deployment's key by key (a whole value each).
    assert run.parameters == {"a": 1, "b": {"y": 2}, "c": 3}
    assert run.job_variables == {"env": {"C": "run"}}
    assert (run.state, run.state_name, run.auto_scheduled) == (StateType.SCHEDULED, "Scheduled", False)
    assert [(h.state, h.source) for h in run.state_history] == [(StateType.SCHEDULED, "user")]
    pool = store.get_pool("p")
    deployment = get_deployment(store, "etl")
    assert pool is not None
    merged = templating.resolve_job_variables(
        pool.base_job_template, pool.job_variables, deployment.job_variables, run.job_variables
    )
    assert merged == {
        "command": "python -m flow",
        "image": "img:1",
        "cpu": 2,
        "env": {"A": "pool", "B": "dep", "C": "run"},
    }


def test_run_override_validated_against_the_template(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="cpu"):
        run_deployment(store, "etl", job_variables={"cpu": 99})
    with pytest.raises(InvalidInput, match="'gpu'"):
        run_deployment(store, "etl", job_variables={"gpu": 1})
    with pytest.raises(NotFound, match="'ghost'"):
        run_deployment(store, "ghost")
    assert snapshot(store) == before


def test_run_scheduled_at_the_given_time(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", queue="fast", job_variables={"image": "img"})
    at = utcnow() + timedelta(hours=2)
    run = run_deployment(store, "etl", scheduled_time=at)
    assert run.scheduled_time == at and run.queue == "fast" and run.pool == "p"
    stored = store.get_run(run.id)
    assert stored is not None and stored.scheduled_time == at
    assert store.due_runs("p", "fast", utcnow(), 10) == []
    assert [r.id for r in store.due_runs("p", "fast", at, 10)] == [run.id]


def test_run_now_by_default(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    before = utcnow()
    run = run_deployment(store, "etl")
    assert before <= run.scheduled_time <= utcnow()


def test_naive_scheduled_time_rejected(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="timezone"):
        run_deployment(store, "etl", scheduled_time=datetime(2030, 1, 1, 9, 0))
    assert snapshot(store) == before


# --- delete -------------------------------------------------------------------------------------------


def test_delete_refused_with_an_active_run_then_allowed(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    active = run_deployment(store, "etl")
    later = run_deployment(store, "etl", scheduled_time=utcnow() + timedelta(hours=1))
    admitted = admit_pool(store, "p", utcnow()).admitted
    assert [r.id for r in admitted] == [active.id]
    before = snapshot(store)
    with pytest.raises(Conflict, match="active runs"):
        delete_deployment(store, "etl")
    assert snapshot(store) == before
    running = admitted[0]
    assert store.save_run(running, running.moved(StateType.COMPLETED, source="test")[0])
    delete_deployment(store, "etl")
    assert store.get_deployment("etl") is None
    cancelled = store.get_run(later.id)
    assert cancelled is not None and cancelled.state is StateType.CANCELLED
    assert cancelled.state_history[-1].message == "deployment deleted"
    assert store.get_run(active.id).state is StateType.COMPLETED  # type: ignore[union-attr]
    deployment_slots = store.slots([deployment_slot(running.deployment_id)])
    assert deployment_slots == {}
    assert store.slots([pool_slot("p")])[pool_slot("p")].active == 0


def test_delete_cancels_every_scheduled_run_of_a_long_backlog(store: SQLiteStore) -> None:
    # More runs than one page of the store: the oldest, due ones must be cancelled too.
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    start = utcnow() - timedelta(days=1)
    for i in range(230):
        run_deployment(store, "etl", scheduled_time=start + timedelta(minutes=i))
    delete_deployment(store, "etl")
    assert states(store, "etl") == [StateType.CANCELLED] * 230
    assert store.list_runs("p", state=StateType.SCHEDULED, limit=1000) == []


def test_delete_refused_when_the_active_run_is_behind_many_newer_runs(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    run_deployment(store, "etl", scheduled_time=utcnow() - timedelta(hours=1))
    assert len(admit_pool(store, "p", utcnow()).admitted) == 1
    soon = utcnow() + timedelta(minutes=1)
    for i in range(210):
        run_deployment(store, "etl", scheduled_time=soon + timedelta(minutes=i))
    with pytest.raises(Conflict, match="active runs"):
        delete_deployment(store, "etl")
    assert store.get_deployment("etl") is not None
    assert StateType.CANCELLED not in states(store, "etl")


def test_delete_unknown(store: SQLiteStore) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        delete_deployment(store, "ghost")


# --- update -------------------------------------------------------------------------------------------


def _scheduled(store: SQLiteStore, name: str) -> tuple[int, int]:
    """(SCHEDULED future auto runs, SCHEDULED ad-hoc runs)."""
    runs = [r for r in store.runs_of_deployment(name, limit=10_000) if r.state is StateType.SCHEDULED]
    return sum(r.auto_scheduled for r in runs), sum(not r.auto_scheduled for r in runs)


def test_schedule_change_cancels_future_auto_scheduled_runs(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"}, schedules=[EVERY_10_MIN])
    adhoc = run_deployment(store, "etl", scheduled_time=utcnow() + timedelta(minutes=30))
    created = schedule_all(store, utcnow(), Settings(schedule_horizon_seconds=3600)).created
    assert len(created) == 6
    assert _scheduled(store, "etl") == (6, 1)
    update_deployment(store, "etl", schedules=[CronSchedule(cron="0 3 * * *")])
    assert _scheduled(store, "etl") == (0, 1)
    assert store.get_run(adhoc.id).state is StateType.SCHEDULED  # type: ignore[union-attr]
    for run in created:
        cancelled = store.get_run(run.id)
        assert cancelled is not None and cancelled.state is StateType.CANCELLED
        assert cancelled.state_history[-1].message == "the deployment's schedule changed"


def test_update_without_schedule_change_keeps_runs(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"}, schedules=[EVERY_10_MIN])
    schedule_all(store, utcnow())
    count = _scheduled(store, "etl")
    updated = update_deployment(store, "etl", parameters={"x": 1}, concurrency_limit=3, tags=["t"])
    assert _scheduled(store, "etl") == count
    assert updated.schedules == [EVERY_10_MIN]
    assert updated.parameters == {"x": 1} and updated.tags == ["t"]
    assert store.slots([deployment_slot(updated.id)])[deployment_slot(updated.id)].limit == 3
    update_deployment(store, "etl", concurrency_limit=None)
    assert store.slots([deployment_slot(updated.id)])[deployment_slot(updated.id)].limit is None


def test_pausing_and_resuming_the_schedule_creates_the_runs_again(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"}, schedules=[EVERY_10_MIN])
    now = utcnow()
    first = schedule_all(store, now).created
    assert len(first) == 6
    update_deployment(store, "etl", schedule_paused=True)
    assert _scheduled(store, "etl") == (0, 0)
    assert schedule_all(store, now).created == []
    update_deployment(store, "etl", schedule_paused=False)
    again = schedule_all(store, now).created
    assert sorted(r.scheduled_time for r in again) == sorted(r.scheduled_time for r in first)
    assert _scheduled(store, "etl") == (6, 0)
    # One SCHEDULED run per fire time: no duplicates from the first generation.
    times = [r.scheduled_time for r in store.runs_of_deployment("etl") if r.state is StateType.SCHEDULED]
    assert len(times) == len(set(times))


def test_update_validates_before_writing(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    before = snapshot(store)
    cases: list[tuple[dict[str, Any], type[PushpoolError]]] = [
        ({"job_variables": {"gpu": 1}}, InvalidInput),
        ({"queue": "nope"}, NotFound),
        ({"concurrency_limit": -2}, InvalidInput),
        ({"parameters": []}, InvalidInput),
    ]
    for kwargs, error in cases:
        with pytest.raises(error):
            update_deployment(store, "etl", **kwargs)
    with pytest.raises(NotFound):
        update_deployment(store, "ghost", description="x")
    assert snapshot(store) == before


def test_update_queue(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    assert update_deployment(store, "etl", queue="fast").queue == "fast"
    run = run_deployment(store, "etl")
    assert run.queue == "fast"


def test_errors_are_pushpool_errors(store: SQLiteStore) -> None:
    with pytest.raises(PushpoolError):
        run_deployment(store, "ghost", scheduled_time=datetime(2030, 1, 1, tzinfo=UTC))


# --- bounds: limits, sizes, tags, scheduled times ------------------------------------------------------
BIG_PARAMETERS = {"blob": "x" * 500_000}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"concurrency_limit": 10**20},
            "concurrency_limit must be a whole number of 0 or more and at most 1,000,000 (0 delivers nothing; "
            "unset means no limit), got 100000000000000000000.",
        ),
        ({"parameters": BIG_PARAMETERS}, "parameters may be at most 64 KB (65,536 bytes) as JSON, got 500,011 bytes."),
        ({"job_variables": {"env": {"A": "x" * 70_000}}}, "job_variables may be at most 64 KB (65,536 bytes) as JSON"),
        ({"parameters": {"x": float("nan")}}, "parameters.x is nan, which is not a JSON number"),
        ({"job_variables": {"cpu": float("inf")}}, "job_variables.cpu is inf, which is not a JSON number"),
        ({"tags": [""]}, "tags[0] must be 1 to 100 characters long, got 0."),
        ({"tags": ["ok", "t" * 100_000]}, "tags[1] must be 1 to 100 characters long, got 100,000."),
        ({"tags": [f"t{i}" for i in range(51)]}, "tags may hold at most 50 tags, got 51."),
        ({"description": "d" * 500_000}, "description must be at most 2,000 characters, got 500,000."),
    ],
)
def test_out_of_bounds_input_names_the_field_and_writes_nothing(
    store: SQLiteStore, kwargs: dict[str, Any], message: str
) -> None:
    create_deployment(store, "old", pool="p", job_variables={"image": "img"}, tags=["a"])
    before = snapshot(store)
    with pytest.raises(InvalidInput) as info:
        create_deployment(store, "etl", pool="p", **kwargs)
    assert str(info.value).startswith(message)
    with pytest.raises(InvalidInput) as info:
        update_deployment(store, "old", **kwargs)
    assert str(info.value).startswith(message)
    assert snapshot(store) == before


def test_names_with_control_characters_write_nothing(store: SQLiteStore) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=r"^deployment name 'e\\x1b\[31mred' may not contain control or invisible"):
        create_deployment(store, "e\x1b[31mred", pool="p")
    assert snapshot(store) == before


@pytest.mark.parametrize(
    "at",
    [
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
        "1969-12-31T23:00:00+00:00",
        "9999-06-01T00:00:00+00:00",
    ],
)
def test_scheduled_time_out_of_range_names_the_field_and_writes_nothing(store: SQLiteStore, at: str) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    before = snapshot(store)
    with pytest.raises(InvalidInput) as info:
        run_deployment(store, "etl", scheduled_time=datetime.fromisoformat(at))
    assert str(info.value) == f"scheduled_time must be from 1970-01-01T00:00:00Z to 9998-12-31T23:59:59Z, got {at}."
    assert snapshot(store) == before


@pytest.mark.parametrize("at", ["1970-01-01T00:00:00+00:00", "9998-12-31T23:59:59+00:00"])
def test_scheduled_time_at_the_ends_of_the_range_is_stored(store: SQLiteStore, at: str) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    run = run_deployment(store, "etl", scheduled_time=datetime.fromisoformat(at))
    stored = store.get_run(run.id)
    assert stored is not None and stored.scheduled_time == datetime.fromisoformat(at)


def test_run_overrides_are_bounded_and_write_nothing(store: SQLiteStore) -> None:
    create_deployment(store, "etl", pool="p", job_variables={"image": "img"})
    before = snapshot(store)
    # A run's parameters have a bound of their own (512 KB), larger than a deployment's (64 KB).
    with pytest.raises(InvalidInput, match=r"^parameters may be at most 512 KB \(524,288 bytes\) as JSON, got 600,011"):
        run_deployment(store, "etl", parameters={"blob": "x" * 600_000})
    with pytest.raises(InvalidInput, match=r"^job_variables\.env\.A is nan, which is not a JSON number"):
        run_deployment(store, "etl", job_variables={"env": {"A": float("nan")}})
    assert snapshot(store) == before


@pytest.fixture(params=sorted(STORE_BACKENDS))
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend (DynamoDB on the session's moto server), with the `p` pool of the `store` fixture."""
    if request.param == "dynamodb":
        request.getfixturevalue("dynamodb_endpoint")
    s = STORE_BACKENDS[request.param](tmp_path)
    create_pool(s, "p", base_job_template=TEMPLATE, description="é" * 2_000)
    yield s
    drop = getattr(s, "drop", None)
    if callable(drop):
        drop()
    s.close()


def test_the_largest_deployment_and_run_fit_every_store(any_store: Store) -> None:
    """Everything at its limit at once still fits a DynamoDB item (400 KB) and reads back unchanged."""

    def near_limit(key: str, limit: int = 65_536, beside: dict[str, Any] | None = None) -> dict[str, Any]:
        # Characters of 3 UTF-8 bytes, so the limit is in bytes, not characters.
        size = limit - len(json.dumps({**(beside or {}), key: ""}, separators=(",", ":"), ensure_ascii=False).encode())
        return {key: "€" * (size // 3) + "x" * (size % 3)}

    deployment = create_deployment(
        any_store,
        "big",
        pool="p",
        job_variables={**near_limit("image")},
        parameters=near_limit("p"),
        tags=["€" * 100 for _ in range(50)],
        description="€" * 2_000,
        concurrency_limit=1_000_000,
    )
    assert len(json.dumps(deployment.parameters, separators=(",", ":"), ensure_ascii=False).encode()) == 65_536
    assert get_deployment(any_store, "big") == deployment
    run = run_deployment(
        any_store,
        "big",
        parameters=near_limit("q", MAX_RUN_PARAMETERS_BYTES, deployment.parameters),
        job_variables={"command": "c" * 60_000},
        scheduled_time=datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    assert json_size(run.parameters) == MAX_RUN_PARAMETERS_BYTES
    stored = any_store.get_run(run.id)
    assert stored is not None and stored.job_variables == run.job_variables
    # The run's item holds their size only; they are read apart, whole.
    assert stored.parameters is None and stored.parameters_size == MAX_RUN_PARAMETERS_BYTES
    assert with_parameters(any_store, stored).parameters == run.parameters
