"""The nouns of pushpool (SPEC §1): work pools, work queues, deployments and flow runs."""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
)
from pydantic_core import PydanticSerializationError, to_json

from .errors import InvalidInput
from .schedules import Schedule
from .states import ACTIVE, DEFAULT_NAMES, TERMINAL, StateType, check_state_name, is_allowed

READY_WINDOW = timedelta(seconds=60)
"""A pool or queue serviced by a dispatcher within this window reads READY."""

DEFAULT_QUEUE = "default"
_FORBIDDEN_NAME_CHARS = re.compile(r"[/%&<>]")

# Bounds of what the models accept: every way in (CLI, HTTP API, `apply`, Lambda) builds a model, so these
# are the whole rule; they keep every value inside SQLite's 64-bit integers and a DynamoDB item's 400 KB.
MAX_CONCURRENCY_LIMIT = 1_000_000
"""A concurrency limit is unset (no limit) or 0..MAX_CONCURRENCY_LIMIT; 0 delivers nothing."""
MAX_PRIORITY = 1_000_000
"""Queue priorities are 1..MAX_PRIORITY (1 highest); an insert that would push a queue past it is refused."""
MAX_DESCRIPTION = 2_000
"""Characters of a pool, queue or deployment description (the length a run's state message may have)."""
MAX_TAG = 100
"""Characters of one deployment tag (a tag has at least one)."""
MAX_TAGS = 50
"""Tags of one deployment."""
MAX_JSON_BYTES = 64 * 1024
"""Bytes of a JSON field (job_variables, base_job_template, a deployment's parameters) as compact UTF-8 JSON."""
MAX_RUN_PARAMETERS_BYTES = 512 * 1024
"""Bytes of a flow run's parameters as compact UTF-8 JSON: more than other JSON fields, since a run's data may be
large, and stores keep them apart from the run (PARAMETERS_APART_BYTES). Half of the 1 MB HTTP body and file
bounds, so a request or a file that carries them with whitespace and other fields still fits."""
PARAMETERS_APART_BYTES = 4096
"""Run parameters larger than this (compact JSON) are kept apart from the run by the stores: the run's record is
rewritten on every state change and read by every pass, its parameters only by the job and by `flow-run inspect`.
The same size above which a job gets them by reference (templating.PARAMETERS_INLINE_BYTES)."""
MAX_JSON_DEPTH = 32
"""Nesting levels of a JSON field; far deeper documents could be written but not read back by the stores."""
MIN_SCHEDULED_YEAR, MAX_SCHEDULED_YEAR = 1970, 9998
"""Years (in UTC) a run's scheduled_time may have: far from the ends of datetime, so conversions never overflow."""

Status = Literal["READY", "NOT_READY", "PAUSED"]
M = TypeVar("M", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _invisible(value: str) -> str | None:
    """The first character of `value` that is not visible text: any Unicode category C* (control, format
    such as a zero-width space, private use, surrogate, unassigned) or a line/paragraph separator."""
    return next(
        (ch for ch in value if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")), None
    )


def _shown(value: Any) -> str:
    """`value` for a message: repr (control characters escaped), a huge number by its size only."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # repr() of an int of more than 4,300 digits raises; no one reads such a number anyway.
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    return repr(value)


def check_name(kind: str, value: str, *, reserved_prefix: bool = False) -> str:
    """Validate a pool, queue or deployment name; the message says what is allowed."""
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        raise ValueError(f"{kind} name must be 1 to 100 characters long")
    if _FORBIDDEN_NAME_CHARS.search(value):
        raise ValueError(f"{kind} name {value!r} may not contain any of / % & < >")
    if value != value.strip() or any(ch in value for ch in "\n\r\t"):
        raise ValueError(f"{kind} name {value!r} may not start or end with spaces or contain tabs or newlines")
    bad = _invisible(value)
    if bad is not None:
        raise ValueError(
            f"{kind} name {value!r} may not contain control or invisible characters (it has U+{ord(bad):04X}); "
            "use visible letters, digits, punctuation and spaces"
        )
    if reserved_prefix and value.lower().startswith("pushpool"):
        raise ValueError(f"{kind} name {value!r} may not start with 'pushpool', which is reserved")
    return value


def check_limit(field: str, value: int | None) -> int | None:
    """A concurrency limit is unset (unlimited) or a whole number 0..MAX_CONCURRENCY_LIMIT (0 delivers nothing)."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CONCURRENCY_LIMIT
    ):
        raise ValueError(
            f"{field} must be a whole number of 0 or more and at most {MAX_CONCURRENCY_LIMIT:,} "
            f"(0 delivers nothing; unset means no limit), got {_shown(value)}"
        )
    return value


def check_priority(value: int) -> int:
    """A queue priority is a whole number 1..MAX_PRIORITY, 1 the highest."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PRIORITY:
        raise ValueError(
            f"priority must be a whole number of 1 or more and at most {MAX_PRIORITY:,} (1 is the highest), "
            f"got {_shown(value)}"
        )
    return value


def check_description(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_DESCRIPTION:
        raise ValueError(f"description must be at most {MAX_DESCRIPTION:,} characters, got {len(value):,}")
    return value


def check_tags(tags: list[str]) -> list[str]:
    """At most MAX_TAGS tags, each 1..MAX_TAG visible characters."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"tags may hold at most {MAX_TAGS} tags, got {len(tags):,}")
    for index, tag in enumerate(tags):
        if not 1 <= len(tag) <= MAX_TAG:
            raise ValueError(f"tags[{index}] must be 1 to {MAX_TAG} characters long, got {len(tag):,}")
        bad = _invisible(tag)
        if bad is not None:
            raise ValueError(
                f"tags[{index}] {tag!r} may not contain control or invisible characters (it has U+{ord(bad):04X})"
            )
    return tags


def check_json_document(field: str, value: Any, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON field (parameters, job_variables, a template) that a JSON store can hold and give back as is.

    Refused: a value that contains itself (a recursive YAML alias), NaN and infinities (JSON has no such
    numbers; they used to be stored as null), nesting deeper than MAX_JSON_DEPTH, and more than
    `max_bytes` of compact UTF-8 JSON. Shared references without a cycle are fine.
    """
    # Iterative, so a deeply nested value is measured rather than blowing Python's stack.
    stack: list[tuple[Any, str, int, frozenset[int]]] = [(value, field, 0, frozenset())]
    visited = 0
    while stack:
        item, where, depth, ancestors = stack.pop()
        visited += 1
        if visited > max_bytes:  # each value is at least a byte of JSON: too big, however it is shared
            raise ValueError(f"{field} may be at most {_kb(max_bytes)} as JSON")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where} is {item!r}, which is not a JSON number; use a finite number, a string or null")
        if not isinstance(item, dict | list | tuple | set | frozenset):
            continue
        if id(item) in ancestors:
            raise ValueError(
                f"{where} refers back to a value that contains it (a recursive YAML alias?), which JSON cannot "
                "hold; write the value out without the recursion"
            )
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"{field} may be nested at most {MAX_JSON_DEPTH} levels deep; {where} is deeper")
        inner = ancestors | {id(item)}
        if isinstance(item, dict):
            children = [(v, f"{where}.{k}") for k, v in item.items()]
        else:
            children = [(v, f"{where}[{i}]") for i, v in enumerate(item)]
        stack.extend((child, at, depth + 1, inner) for child, at in reversed(children))
    try:
        size = len(to_json(value))
    except PydanticSerializationError as exc:
        raise ValueError(
            f"{field} holds a value that is not JSON ({exc}); use strings, numbers, lists and objects"
        ) from None
    if size > max_bytes:
        raise ValueError(f"{field} may be at most {_kb(max_bytes)} as JSON, got {size:,} bytes")
    return value


def _kb(size: int) -> str:
    return f"{size // 1024} KB ({size:,} bytes)"


def check_run_parameters(value: Any) -> Any:
    """A flow run's parameters: a JSON document of at most MAX_RUN_PARAMETERS_BYTES (the one place of that rule)."""
    return check_json_document("parameters", value, MAX_RUN_PARAMETERS_BYTES)


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON: the measure of every JSON bound and of PARAMETERS_APART_BYTES."""
    return len(to_json(value))


def check_scheduled_time(value: datetime) -> datetime:
    """A run's scheduled_time: timezone-aware, from 1970 to the end of 9998 in UTC (never overflowing)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"scheduled_time {value.isoformat()} needs a timezone, e.g. {value.isoformat()}Z")
    # The local year first: only then can the conversion to UTC not overflow (years 0 and 10000 do not exist).
    if not MIN_SCHEDULED_YEAR <= value.year <= MAX_SCHEDULED_YEAR or not (
        MIN_SCHEDULED_YEAR <= value.astimezone(UTC).year <= MAX_SCHEDULED_YEAR
    ):
        raise ValueError(
            f"scheduled_time must be from {MIN_SCHEDULED_YEAR}-01-01T00:00:00Z to "
            f"{MAX_SCHEDULED_YEAR}-12-31T23:59:59Z, got {value.isoformat()}"
        )
    return value


def reject_bool(field: str, value: Any) -> Any:
    """Run before pydantic's coercion, which would otherwise turn True into 1 for an int field."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a whole number, not a boolean ({value!r})")
    return value


def derived_status(paused: bool, last_polled: datetime | None, now: datetime | None = None) -> Status:
    if paused:
        return "PAUSED"
    now = now or utcnow()
    if last_polled is not None and now - last_polled <= READY_WINDOW:
        return "READY"
    return "NOT_READY"


def build(model: type[M], **fields: Any) -> M:
    """Construct a model, turning pydantic's report into one sentence that names the field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise InvalidInput(validation_sentence(exc, model.__name__)) from None


_STRUCTURAL_ERRORS = frozenset({"missing", "extra_forbidden", "model_type", "model_attributes_type", "dict_type"})


def validation_sentence(exc: ValidationError, what: str) -> str:
    """Pydantic's most telling complaint as one sentence; our validators already name their field.

    For a union (a deployment's schedules) pydantic reports every member it tried, the first being
    "CronSchedule.cron: field required" whatever was given; the complaint about a value is preferred to
    those about the shape of a member the input was never meant to be, and member names are left out.
    """
    errors = exc.errors()
    err = next((e for e in errors if e["type"] not in _STRUCTURAL_ERRORS), errors[0])
    field = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper())) or what
    msg = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
    if err["type"] == "value_error":
        return msg + "."
    return f"{field}: {msg[:1].lower()}{msg[1:]}."


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorkPool(_Model):
    name: str
    type: str = "process"
    description: str | None = None
    paused: bool = False
    concurrency_limit: int | None = None
    base_job_template: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="pool-level defaults, above the template's variable defaults"
    )
    last_polled: datetime | None = None
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("work pool", v, reserved_prefix=True)

    @field_validator("concurrency_limit", mode="before")
    @classmethod
    def _limit_not_bool(cls, v: Any) -> Any:
        return reject_bool("concurrency_limit", v)

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        return check_limit("concurrency_limit", v)

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        return check_description(v)

    @field_validator("base_job_template", "job_variables")
    @classmethod
    def _json(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return check_json_document(str(info.field_name), v)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Status:
        return derived_status(self.paused, self.last_polled)


class WorkQueue(_Model):
    pool: str
    name: str
    priority: int
    concurrency_limit: int | None = None
    paused: bool = False
    description: str | None = None
    last_polled: datetime | None = None
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("work queue", v)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_not_bool(cls, v: Any) -> Any:
        return reject_bool("priority", v)

    @field_validator("priority")
    @classmethod
    def _priority(cls, v: int) -> int:
        return check_priority(v)

    @field_validator("concurrency_limit", mode="before")
    @classmethod
    def _limit_not_bool(cls, v: Any) -> Any:
        return reject_bool("concurrency_limit", v)

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        return check_limit("concurrency_limit", v)

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        return check_description(v)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Status:
        return derived_status(self.paused, self.last_polled)


class Deployment(_Model):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    name: str
    pool: str
    queue: str = DEFAULT_QUEUE
    description: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)
    schedule_paused: bool = False
    concurrency_limit: int | None = None
    tags: list[str] = Field(default_factory=list)
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("deployment", v)

    @field_validator("concurrency_limit", mode="before")
    @classmethod
    def _limit_not_bool(cls, v: Any) -> Any:
        return reject_bool("concurrency_limit", v)

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        return check_limit("concurrency_limit", v)

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        return check_description(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return check_tags(v)

    @field_validator("parameters", "job_variables")
    @classmethod
    def _json(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return check_json_document(str(info.field_name), v)


HISTORY_NOOPS_KEPT = 20
"""No-op records a run's history keeps, the newest; the first record and every applied one are always kept."""
HISTORY_MAX_RECORDS = 100
"""A backstop over everything a history keeps: past it, the first record and the newest ones stay."""
RECENT_REPORTS_KEPT = 100
"""Sources of a run's latest reports (callbacks, provider events) kept beside its history, so a replay is still
recognised after the bounded history dropped its no-op record. A signature is good for 300 s and a job sends
a handful of reports, so a replay would need a hundred newer reports in between, and would still change nothing."""
NOOP_MESSAGE_CHARS = 200
"""Characters of a no-op record's message (an applied one keeps MAX_DESCRIPTION): it changed nothing."""


class StateRecord(_Model):
    """One entry of a run's history; `applied` is False for a stale or duplicate transition kept as a no-op.

    Repeated identical no-ops (same state, name, message and kind of source) share one record: `count` says
    how many it stands for, `last_time` and `last_source` are those of the latest.
    """

    state: StateType
    name: str
    time: datetime
    source: str
    message: str | None = None
    applied: bool = True
    count: int = 1
    last_time: datetime | None = None
    last_source: str | None = None

    def came_from(self, source: str) -> bool:
        """Whether this record holds the report of `source` (a callback's digest, a provider event's id)."""
        return source in (self.source, self.last_source)

    def repeats(self, other: StateRecord) -> bool:
        """Whether `other` is the same no-op as this one, to be counted here instead of appended."""
        return (
            not self.applied
            and not other.applied
            and (self.state, self.name, self.message) == (other.state, other.name, other.message)
            and _source_kind(self.source) == _source_kind(other.source)
        )


def _source_kind(source: str) -> str:
    return source.partition(":")[0]


def bounded_history(history: list[StateRecord], record: StateRecord) -> list[StateRecord]:
    """`history` with `record` added, within SPEC §6's bound: repeated no-ops counted, not appended.

    Kept: the first record (how the run began), every applied record (the transitions; the state rules
    bound them per submission attempt) and the newest HISTORY_NOOPS_KEPT no-ops; HISTORY_MAX_RECORDS caps
    the whole. A hostile job holding its own token can thus add nothing but a count and the newest no-ops.
    """
    if history and history[-1].repeats(record):
        last = history[-1]
        merged = last.model_copy(
            update={"count": last.count + 1, "last_time": record.time, "last_source": record.source}
        )
        return [*history[:-1], merged]
    records = [*history, record]
    noops = [i for i, r in enumerate(records) if i > 0 and not r.applied]
    if len(noops) > HISTORY_NOOPS_KEPT:
        dropped = set(noops[: len(noops) - HISTORY_NOOPS_KEPT])
        records = [r for i, r in enumerate(records) if i not in dropped]
    if len(records) > HISTORY_MAX_RECORDS:
        records = [records[0], *records[len(records) - HISTORY_MAX_RECORDS + 1 :]]
    return records


def _clipped(message: str | None, limit: int) -> str | None:
    if message is None or len(message) <= limit:
        return message
    return message[: limit - 1] + "…"


class FlowRun(_Model):
    id: str
    name: str
    deployment: str
    deployment_id: str
    pool: str
    queue: str
    parameters: dict[str, Any] | None = Field(default_factory=dict)
    """None when the store keeps them apart (`parameters_size`) and they were not read: see Store.run_parameters."""
    parameters_size: int | None = None
    """Bytes of the parameters as compact JSON when the store keeps them apart from the run (over
    PARAMETERS_APART_BYTES); None when the run's record holds them."""
    job_variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_time: datetime
    auto_scheduled: bool = False
    state: StateType = StateType.SCHEDULED
    state_name: str = "Scheduled"
    infrastructure_id: str | None = None
    submission_attempts: int = 0
    retries: int = 0
    """How often `flow-run retry` sent this run back to SCHEDULED; each retry is a new identity for providers."""
    tags: list[str] = Field(default_factory=list)
    state_history: list[StateRecord] = Field(default_factory=list)
    recent_reports: list[str] = Field(default_factory=list)
    """The sources of the latest RECENT_REPORTS_KEPT reports, oldest first (see `has_report`)."""
    version: int = 0
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else check_run_parameters(v)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

    def has_report(self, source: str) -> bool:
        """Whether the report of `source` arrived before: a replayed callback, a duplicate event."""
        return source in self.recent_reports or any(record.came_from(source) for record in self.state_history)

    def remembering(self, source: str) -> FlowRun:
        """This run with `source` among its recent reports (the oldest forgotten past RECENT_REPORTS_KEPT)."""
        return self.model_copy(update={"recent_reports": [*self.recent_reports, source][-RECENT_REPORTS_KEPT:]})

    @property
    def ended_time(self) -> datetime | None:
        """When the run ended: the time of the applied record that made it terminal (None while it has not).

        Later no-ops (a late callback, a duplicate event) do not move it: it dates the end, not the last write.
        """
        if not self.is_terminal:
            return None
        for record in reversed(self.state_history):
            if record.applied and record.state in TERMINAL:
                return record.time
        return None

    @property
    def history_end(self) -> datetime | None:
        """The time of the run's newest record (None without any): `moved` stamps no record before it.

        Records are stamped by different clocks and readings (a pass reads its clock before it admits runs that
        may have been created meanwhile; one function's clock may lag another's), and a history read as a story
        must not say "submitted" before "created"."""
        if not self.state_history:
            return None
        last = self.state_history[-1]
        return max(last.time, last.last_time or last.time)

    def moved(
        self,
        state: StateType,
        *,
        source: str,
        name: str | None = None,
        message: str | None = None,
        now: datetime | None = None,
        **changes: Any,
    ) -> tuple[FlowRun, bool]:
        """The run after a proposed transition, and whether it was applied.

        A stale, duplicate or backward proposal is not applied: the state stays and the proposal is
        recorded in the history as a no-op, so one can see what arrived and when (SPEC §2); the history is
        bounded (`bounded_history`).
        """
        name = name or DEFAULT_NAMES[state]
        check_state_name(state, name)
        now = now or utcnow()
        end = self.history_end
        if end is not None and end > now:
            now = end  # the one place record times are kept in order (see `history_end`)
        applied = is_allowed(self.state, self.state_name, state, name)
        message = _clipped(message, MAX_DESCRIPTION if applied else NOOP_MESSAGE_CHARS)
        record = StateRecord(state=state, name=name, time=now, source=source, message=message, applied=applied)
        update: dict[str, Any] = {"state_history": bounded_history(self.state_history, record), "updated": now}
        if applied:
            update.update(state=state, state_name=name, **changes)
        return self.model_copy(update=update), applied
