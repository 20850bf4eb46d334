"""Tests for dispatcher.models: name rules, limits, priorities, derived status and build()'s messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from dispatcher.errors import InvalidInput
from dispatcher.models import (
    READY_WINDOW,
    Deployment,
    WorkPool,
    WorkQueue,
    build,
    check_limit,
    check_name,
    derived_status,
    utcnow,
)

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def pool(**kw: Any) -> WorkPool:
    return build(WorkPool, **{"name": "p", **kw})


def queue(**kw: Any) -> WorkQueue:
    return build(WorkQueue, **{"pool": "p", "name": "q", "priority": 1, **kw})


def deployment(**kw: Any) -> Deployment:
    return build(Deployment, **{"name": "d", "pool": "p", **kw})


MAKERS: dict[str, Any] = {"pool": pool, "queue": queue, "deployment": deployment}


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("name", ["a", "x" * 100, "my-pool_1.0", "with space", "ünïcode"])
def test_valid_names(kind: str, name: str) -> None:
    assert MAKERS[kind](name=name).name == name


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("name", ["", "x" * 101])
def test_name_length(kind: str, name: str) -> None:
    with pytest.raises(InvalidInput, match="name must be 1 to 100 characters long"):
        MAKERS[kind](name=name)


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("char", list("/%&<>"))
def test_forbidden_characters(kind: str, char: str) -> None:
    with pytest.raises(InvalidInput, match=r"may not contain any of / % & < >"):
        MAKERS[kind](name=f"a{char}b")


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("name", [" lead", "trail ", "tab\there", "new\nline"])
def test_whitespace_rules(kind: str, name: str) -> None:
    with pytest.raises(InvalidInput, match="spaces or contain tabs or newlines"):
        MAKERS[kind](name=name)


@pytest.mark.parametrize("name", ["pushpool", "pushpool-prod", "PushPool-x", "PUSHPOOL"])
def test_pool_name_may_not_start_with_pushpool_in_any_case(name: str) -> None:
    with pytest.raises(InvalidInput, match="may not start with 'pushpool'"):
        pool(name=name)


def test_pushpool_is_fine_elsewhere_in_a_pool_name_and_for_queues_and_deployments() -> None:
    assert pool(name="my-pushpool").name == "my-pushpool"
    assert queue(name="pushpool-q").name == "pushpool-q"
    assert deployment(name="pushpool-d").name == "pushpool-d"


def test_check_name_message_names_the_kind() -> None:
    with pytest.raises(ValueError, match="^work queue name"):
        check_name("work queue", "")


# --- limits and priority ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("limit", [None, 0, 1, 1000])
def test_limits_accepted(kind: str, limit: int | None) -> None:
    assert MAKERS[kind](concurrency_limit=limit).concurrency_limit == limit


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("limit", [-1, -100])
def test_negative_limit_rejected_naming_the_field(kind: str, limit: int) -> None:
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](concurrency_limit=limit)
    message = str(info.value)
    assert "concurrency_limit" in message
    assert str(limit) in message
    assert message.endswith(".") and message.count("\n") == 0


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("limit", [True, False])
def test_bool_limit_rejected(kind: str, limit: bool) -> None:
    with pytest.raises(InvalidInput, match="concurrency_limit"):
        MAKERS[kind](concurrency_limit=limit)


def test_check_limit_directly() -> None:
    assert check_limit("concurrency_limit", None) is None
    assert check_limit("concurrency_limit", 0) == 0
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="concurrency_limit must be a whole number of 0 or more"):
            check_limit("concurrency_limit", bad)  # type: ignore[arg-type]


def test_fractional_limit_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"^concurrency_limit: "):
        pool(concurrency_limit=2.5)


@pytest.mark.parametrize("priority", [1, 2, 10_000])
def test_priority_accepted(priority: int) -> None:
    assert queue(priority=priority).priority == priority


@pytest.mark.parametrize("priority", [0, -1, True])
def test_priority_below_one_or_bool_rejected(priority: int) -> None:
    with pytest.raises(InvalidInput, match="priority must be a whole number"):
        queue(priority=priority)


def test_assignment_is_validated() -> None:
    q = queue()
    with pytest.raises(ValueError, match="priority"):
        q.priority = 0


# --- derived status ---------------------------------------------------------------------------------


def test_derived_status_rules() -> None:
    assert derived_status(True, NOW, NOW) == "PAUSED"
    assert derived_status(True, None, NOW) == "PAUSED"
    assert derived_status(False, None, NOW) == "NOT_READY"
    assert derived_status(False, NOW - timedelta(seconds=5), NOW) == "READY"
    assert derived_status(False, NOW - READY_WINDOW, NOW) == "READY"
    assert derived_status(False, NOW - READY_WINDOW - timedelta(seconds=1), NOW) == "NOT_READY"


@pytest.mark.parametrize("kind", ["pool", "queue"])
def test_status_of_models(kind: str) -> None:
    make = MAKERS[kind]
    assert make().status == "NOT_READY"  # never polled
    recent = make(last_polled=utcnow() - timedelta(seconds=10))
    assert recent.status == "READY"
    old = make(last_polled=utcnow() - timedelta(seconds=61))
    assert old.status == "NOT_READY"
    # Pausing wins; unpausing gives READY or NOT_READY by the same rule.
    paused_recent = make(last_polled=recent.last_polled, paused=True)
    assert paused_recent.status == "PAUSED"
    assert paused_recent.model_copy(update={"paused": False}).status == "READY"
    paused_old = make(last_polled=old.last_polled, paused=True)
    assert paused_old.status == "PAUSED"
    assert paused_old.model_copy(update={"paused": False}).status == "NOT_READY"


def test_status_is_dumped_but_not_accepted_back() -> None:
    dumped = pool().model_dump()
    assert dumped["status"] == "NOT_READY"
    again = build(WorkPool, **{k: v for k, v in dumped.items() if k != "status"})
    assert again.name == "p"


# --- build() --------------------------------------------------------------------------------------


def test_build_turns_type_errors_into_one_sentence_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as info:
        pool(paused="maybe")
    message = str(info.value)
    assert message.startswith("paused: ")
    assert message.endswith(".") and "\n" not in message


def test_build_names_the_missing_field() -> None:
    with pytest.raises(InvalidInput, match=r"^pool: field required\.$"):
        build(WorkQueue, name="q", priority=1)


def test_build_names_an_unknown_field() -> None:
    with pytest.raises(InvalidInput, match=r"^colour: extra inputs are not permitted\.$"):
        pool(colour="red")


def test_build_names_a_nested_field() -> None:
    with pytest.raises(InvalidInput, match=r"^schedules\.0"):
        deployment(schedules=[{"interval": -5}])


def test_build_value_error_message_is_kept_as_is() -> None:
    with pytest.raises(InvalidInput) as info:
        pool(name="a/b")
    assert str(info.value) == "work pool name 'a/b' may not contain any of / % & < >."


def test_build_raises_invalid_input_not_pydantic_error() -> None:
    class Thing(BaseModel):
        n: int

    with pytest.raises(InvalidInput, match=r"^n: input should be a valid integer"):
        build(Thing, n="x")
    assert build(Thing, n=3).n == 3


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"interval": -5}, "schedules.0.interval: input should be greater than 0."),
        ({"interval": 60, "cron": "* * * * *"}, "schedules.0.interval: extra inputs are not permitted."),
        ({"cron": "bogus"}, "cron 'bogus' is not a valid cron expression"),
        ({"interval": 60, "timezone": "Mars/Base"}, "timezone 'Mars/Base'"),
    ],
)
def test_build_reports_the_schedule_the_user_meant(schedule: dict[str, Any], message: str) -> None:
    # Not "schedules.0.CronSchedule.cron: field required", pydantic's first report for any bad schedule.
    with pytest.raises(InvalidInput) as info:
        deployment(schedules=[schedule])
    assert str(info.value).startswith(message)
    assert "CronSchedule" not in str(info.value)


def test_build_keeps_the_case_of_values_in_messages() -> None:
    class Choice(BaseModel):
        mode: Literal["Fast", "Slow"]

    with pytest.raises(InvalidInput, match=r"^mode: input should be 'Fast' or 'Slow'\.$"):
        build(Choice, mode="medium")
