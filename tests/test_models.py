"""Tests for dispatcher.models: name rules, limits, priorities, derived status and build()'s messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from dispatcher.errors import InvalidInput
from dispatcher.models import (
    MAX_CONCURRENCY_LIMIT,
    MAX_DESCRIPTION,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_PRIORITY,
    MAX_TAG,
    MAX_TAGS,
    READY_WINDOW,
    Deployment,
    WorkPool,
    WorkQueue,
    build,
    check_json_document,
    check_limit,
    check_name,
    check_scheduled_time,
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


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("e\x1b[31mred", "U+001B"),  # an ANSI escape: would colour the terminal in `ls`
        ("a\x01b", "U+0001"),
        ("a\x7fb", "U+007F"),
        ("a\u200bb", "U+200B"),  # zero-width space (Cf)
        ("a\u202eb", "U+202E"),  # right-to-left override (Cf)
        ("a\ufeffb", "U+FEFF"),  # byte order mark (Cf)
        ("a\ue000b", "U+E000"),  # private use (Co)
        ("a\ud800b", "U+D800"),  # a lone surrogate (Cs)
        ("a\u0378b", "U+0378"),  # unassigned (Cn)
        ("a\u2028b", "U+2028"),  # line separator
    ],
)
def test_control_and_invisible_characters_rejected(kind: str, name: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](name=name)
    message = str(info.value)
    assert "name" in message and "control or invisible characters" in message and code in message
    assert "visible letters, digits, punctuation and spaces" in message
    assert message.isprintable() and "\n" not in message  # the name is shown escaped, never raw


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("name", ["日本語のプール", "Ωμέγα", "Ärger-ß", "café au lait", "rocket 🚀", "a\u0301b"])
def test_unicode_letters_symbols_and_marks_stay_allowed(kind: str, name: str) -> None:
    assert MAKERS[kind](name=name).name == name


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


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_largest_limit_accepted(kind: str) -> None:
    assert MAX_CONCURRENCY_LIMIT == 1_000_000
    assert MAKERS[kind](concurrency_limit=MAX_CONCURRENCY_LIMIT).concurrency_limit == MAX_CONCURRENCY_LIMIT


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("limit", [MAX_CONCURRENCY_LIMIT + 1, 2**63, 10**23])
def test_limit_beyond_the_bound_rejected_naming_field_and_range(kind: str, limit: int) -> None:
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](concurrency_limit=limit)
    message = str(info.value)
    assert message.startswith("concurrency_limit must be a whole number of 0 or more and at most 1,000,000")
    assert str(limit) in message
    assert message.endswith(".") and "\n" not in message


def test_a_number_too_long_to_print_is_described_not_printed() -> None:
    with pytest.raises(ValueError, match=r"at most 1,000,000 .*got a number of about 5,001 digits$"):
        check_limit("concurrency_limit", 10**5000)


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


def test_largest_priority_accepted() -> None:
    assert MAX_PRIORITY == 1_000_000
    assert queue(priority=MAX_PRIORITY).priority == MAX_PRIORITY


@pytest.mark.parametrize("priority", [MAX_PRIORITY + 1, 9223372036854775807, 10**20])
def test_priority_beyond_the_bound_rejected_naming_field_and_range(priority: int) -> None:
    with pytest.raises(InvalidInput) as info:
        queue(priority=priority)
    message = str(info.value)
    assert message == (
        f"priority must be a whole number of 1 or more and at most 1,000,000 (1 is the highest), got {priority}."
    )


def test_assignment_is_validated() -> None:
    q = queue()
    with pytest.raises(ValueError, match="priority"):
        q.priority = 0


# --- sizes: descriptions, tags, JSON fields ---------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_description_up_to_the_limit(kind: str) -> None:
    assert MAX_DESCRIPTION == 2_000
    assert MAKERS[kind](description="é" * MAX_DESCRIPTION).description == "é" * MAX_DESCRIPTION
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](description="x" * 500_000)
    assert str(info.value) == "description must be at most 2,000 characters, got 500,000."
    with pytest.raises(InvalidInput, match="at most 2,000 characters, got 2,001"):
        MAKERS[kind](description="x" * (MAX_DESCRIPTION + 1))


def test_tags_within_the_limits_accepted() -> None:
    tags = [f"{i:03d}" + "t" * (MAX_TAG - 3) for i in range(MAX_TAGS)]
    assert deployment(tags=tags).tags == tags
    assert deployment(tags=["ünï", "x"]).tags == ["ünï", "x"]


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ([""], "tags[0] must be 1 to 100 characters long, got 0."),
        (["ok", "x" * 100_000], "tags[1] must be 1 to 100 characters long, got 100,000."),
        (["x"] * (MAX_TAGS + 1), "tags may hold at most 50 tags, got 51."),
        (["a\x1bb"], "tags[0] 'a\\x1bb' may not contain control or invisible characters (it has U+001B)."),
    ],
)
def test_bad_tags_rejected_naming_the_field(tags: list[str], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        deployment(tags=tags)
    assert str(info.value) == message


JSON_FIELDS = [("pool", "job_variables"), ("pool", "base_job_template"), ("deployment", "job_variables")]
JSON_FIELDS += [("deployment", "parameters")]


def _json_of_size(size: int) -> dict[str, Any]:
    """A dict whose compact JSON is exactly `size` bytes: {"k":"xxx…"} is 8 bytes plus the string."""
    return {"k": "x" * (size - 8)}


@pytest.mark.parametrize(("kind", "field"), JSON_FIELDS)
def test_json_field_up_to_64_kb(kind: str, field: str) -> None:
    assert MAX_JSON_BYTES == 65_536
    value = _json_of_size(MAX_JSON_BYTES)
    assert getattr(MAKERS[kind](**{field: value}), field) == value
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](**{field: _json_of_size(MAX_JSON_BYTES + 1)})
    assert str(info.value) == f"{field} may be at most 64 KB (65,536 bytes) as JSON, got 65,537 bytes."


def test_json_size_counts_utf8_bytes() -> None:
    with pytest.raises(InvalidInput, match=r"parameters may be at most 64 KB .* got 98,312 bytes"):
        deployment(parameters={"k": "é" * 49_152})  # 49,152 characters, 98,304 bytes


@pytest.mark.parametrize(("kind", "field"), JSON_FIELDS)
@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_json_field_rejects_nan_and_infinity(kind: str, field: str, number: float) -> None:
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](**{field: {"a": {"b": [1, number]}}})
    assert str(info.value) == (
        f"{field}.a.b[1] is {number!r}, which is not a JSON number; use a finite number, a string or null."
    )


@pytest.mark.parametrize(("kind", "field"), JSON_FIELDS)
def test_json_field_rejects_a_value_that_contains_itself(kind: str, field: str) -> None:
    loop: dict[str, Any] = {}
    loop["k"] = [loop]
    with pytest.raises(InvalidInput) as info:
        MAKERS[kind](**{field: loop})
    message = str(info.value)
    assert message.startswith(field) and "refers back to a value that contains it" in message
    assert "recursive YAML alias" in message and "\n" not in message


def test_shared_values_without_a_cycle_are_fine() -> None:
    shared = {"x": [1, 2]}
    assert deployment(parameters={"a": shared, "b": shared, "c": [shared, shared]}).parameters["c"][1] == shared


def test_json_nesting_is_bounded_so_the_stores_can_read_it_back() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: Any = "leaf"
        for _ in range(levels - 1):
            value = [value]
        return {"k": value}

    ok = deployment(parameters=nested(MAX_JSON_DEPTH))
    assert Deployment.model_validate_json(ok.model_dump_json()) == ok
    with pytest.raises(InvalidInput, match=r"^parameters may be nested at most 32 levels deep; parameters\.k"):
        deployment(parameters=nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(InvalidInput, match="nested at most 32 levels"):
        deployment(parameters=nested(5_000))  # no RecursionError


def test_a_shared_value_that_expands_beyond_the_limit_is_refused_quickly() -> None:
    # A "billion laughs": each level refers ten times to the one below; 10**9 values when written out.
    value: Any = "x"
    for _ in range(9):
        value = [value] * 10
    with pytest.raises(ValueError, match=r"^parameters may be at most 64 KB \(65,536 bytes\) as JSON$"):
        check_json_document("parameters", {"k": value})


# --- scheduled_time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01T00:00:00+00:00",
        "1970-01-01T00:00:00-05:00",
        "9998-12-31T23:59:59.999999+00:00",
        "2030-06-01T12:00+02:00",
    ],
)
def test_scheduled_time_in_range(text: str) -> None:
    value = datetime.fromisoformat(text)
    assert check_scheduled_time(value) == value


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-05:00",  # in UTC this would be year 10000: converting it overflows
        "0001-01-01T00:00:00+05:00",  # in UTC this would be year 0
        "1970-01-01T00:00:00+05:00",  # 1969 in UTC
        "1969-12-31T23:59:59+00:00",
        "9999-01-01T00:00:00+00:00",
        "9998-12-31T23:00:00-05:00",  # 9999 in UTC
    ],
)
def test_scheduled_time_out_of_range_rejected_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError) as info:
        check_scheduled_time(datetime.fromisoformat(text))
    assert str(info.value) == (f"scheduled_time must be from 1970-01-01T00:00:00Z to 9998-12-31T23:59:59Z, got {text}")


def test_naive_scheduled_time_rejected() -> None:
    with pytest.raises(ValueError, match="^scheduled_time 2030-01-01T00:00:00 needs a timezone"):
        check_scheduled_time(datetime(2030, 1, 1))


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
