"""The nouns of pushpool (SPEC §1): work pools, work queues, deployments and flow runs."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, field_validator

from .errors import InvalidInput
from .schedules import Schedule
from .states import ACTIVE, DEFAULT_NAMES, TERMINAL, StateType, check_state_name, is_allowed

READY_WINDOW = timedelta(seconds=60)
"""A pool or queue serviced by a dispatcher within this window reads READY."""

DEFAULT_QUEUE = "default"
_FORBIDDEN_NAME_CHARS = re.compile(r"[/%&<>]")

Status = Literal["READY", "NOT_READY", "PAUSED"]
M = TypeVar("M", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_name(kind: str, value: str, *, reserved_prefix: bool = False) -> str:
    """Validate a pool, queue or deployment name; the message says what is allowed."""
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        raise ValueError(f"{kind} name must be 1 to 100 characters long")
    if _FORBIDDEN_NAME_CHARS.search(value):
        raise ValueError(f"{kind} name {value!r} may not contain any of / % & < >")
    if value != value.strip() or any(ch in value for ch in "\n\r\t"):
        raise ValueError(f"{kind} name {value!r} may not start or end with spaces or contain tabs or newlines")
    if reserved_prefix and value.lower().startswith("pushpool"):
        raise ValueError(f"{kind} name {value!r} may not start with 'pushpool', which is reserved")
    return value


def check_limit(field: str, value: int | None) -> int | None:
    """A concurrency limit is unset (unlimited) or a whole number >= 0 (0 delivers nothing)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{field} must be a whole number of 0 or more (0 delivers nothing), got {value!r}")
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
        if isinstance(v, bool) or v < 1:
            raise ValueError(f"priority must be a whole number of 1 or more (1 is the highest), got {v!r}")
        return v

    @field_validator("concurrency_limit", mode="before")
    @classmethod
    def _limit_not_bool(cls, v: Any) -> Any:
        return reject_bool("concurrency_limit", v)

    @field_validator("concurrency_limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        return check_limit("concurrency_limit", v)

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


class StateRecord(_Model):
    """One entry of a run's history; `applied` is False for a stale or duplicate transition kept as a no-op."""

    state: StateType
    name: str
    time: datetime
    source: str
    message: str | None = None
    applied: bool = True


class FlowRun(_Model):
    id: str
    name: str
    deployment: str
    deployment_id: str
    pool: str
    queue: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_time: datetime
    auto_scheduled: bool = False
    state: StateType = StateType.SCHEDULED
    state_name: str = "Scheduled"
    infrastructure_id: str | None = None
    submission_attempts: int = 0
    state_history: list[StateRecord] = Field(default_factory=list)
    version: int = 0
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

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
        recorded in the history as a no-op, so one can see what arrived and when (SPEC §2).
        """
        name = name or DEFAULT_NAMES[state]
        check_state_name(state, name)
        now = now or utcnow()
        applied = is_allowed(self.state, self.state_name, state, name)
        record = StateRecord(state=state, name=name, time=now, source=source, message=message, applied=applied)
        update: dict[str, Any] = {"state_history": [*self.state_history, record], "updated": now}
        if applied:
            update.update(state=state, state_name=name, **changes)
        return self.model_copy(update=update), applied
