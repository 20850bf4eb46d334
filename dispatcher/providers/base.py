"""The Provider protocol and the lazy registry that maps a pool type to its provider class.

A provider knows one infrastructure API and nothing of pools, queues or the store: the dispatcher hands it
a rendered, validated job and an idempotency key, and asks it later what became of the job.
Loading a pool type imports only that type's module, so a pass over ECS pools never imports Google's SDK.
"""

from __future__ import annotations

import importlib
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError


class JobState(StrEnum):
    """What the infrastructure says of a job."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"
    MISSING = "MISSING"
    """The provider has no trace of the job (it vanished or was never started)."""


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    exit_code: int | None = None
    message: str | None = None


class Provider(Protocol):
    """One infrastructure API. Every call may raise `ProviderError(transient=...)` with the provider's words."""

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Check a rendered job against this provider's configuration model; return it normalised.

        Raises `InvalidInput` naming the field: a job that fails here is never submitted.
        """
        ...

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Start the job and return its infrastructure id.

        Calling again with the same key must not start a second copy: it returns the first one's id.
        `resubmission` is True when the dispatcher repeats an attempt whose outcome it never recorded (a crash
        or a timeout between "admitted" and "recorded"): a provider whose idempotency needs a lookup at the
        infrastructure (ECS's ListTasks by startedBy) does it then, and spares it on a first submission.
        """
        ...

    def status(self, infrastructure_id: str) -> JobStatus: ...

    def find(self, idempotency_key: str) -> str | None:
        """The infrastructure id of a job launched under this key, or None when none was launched.

        The reconciler asks this for a run whose launch was never recorded (a submit that outlived its
        timeout, a kill between launch and record): an id is recorded and the run is then treated as any
        other; None, asked after the grace period, means the launch never happened. A launch still under
        way counts as launched. Starts nothing.
        """
        ...

    def cancel(self, infrastructure_id: str) -> None:
        """Ask the infrastructure to stop the job; the end is confirmed later through `status`."""
        ...


def split_command(value: Any) -> list[Any]:
    """A job's `command` as a list (SPEC §5): a string is split as a shell would split it, but no shell ever
    runs it (no globbing, no $VARs); a list is kept. Raises ValueError saying what is allowed."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split like a shell command line ({exc})") from None
    elif not isinstance(value, list):
        raise ValueError("must be a string or a list of strings")
    if not value:
        raise ValueError("must not be empty")
    return value


def key_head(idempotency_key: str) -> str:
    """A dispatcher key (`<head>-<attempt>`, see `dispatch.idempotency_key`) without its attempt: the run id, or
    `<run id>-r<N>` for a run sent back by `flow-run retry`, whose new life must not find its earlier launch;
    the whole key when it names no attempt. Every attempt of one life shares the head."""
    head, _, attempt = idempotency_key.rpartition("-")
    return head if head and attempt.isdigit() else idempotency_key


def first_attempt(idempotency_key: str) -> bool:
    """Whether a dispatcher key names its run's first submission attempt (no earlier launch can exist)."""
    return idempotency_key.rpartition("-")[2] == "1"


def job_settings_error(
    exc: ValidationError,
    pool_type: str,
    settings: type[BaseModel],
    nested: Mapping[str, type[BaseModel]] | None = None,
) -> str:
    """A job's validation errors as one sentence per field, never quoting a value (it may be a secret).

    The one wording for every provider: `task_definition.containers[0].image: field required`; a setting the
    job does not have lists the allowed ones of the object it sits in (`nested` maps a field holding a model
    of its own, e.g. `credentials`, to that model); a model-level rule that names its own field is kept as is.
    """
    parts = []
    for error in exc.errors():
        where = _location(error["loc"])
        if error["type"] == "extra_forbidden":
            parent = next((m for name, m in (nested or {}).items() if where.startswith(f"{name}.")), settings)
            article = "an" if pool_type[:1] in "aeio" else "a"
            allowed = ", ".join(parent.model_fields)
            parts.append(f"{where}: is not a setting of {article} {pool_type} job; allowed: {allowed}")
            continue
        text = str(error["msg"]).removeprefix("Value error, ")
        if not where and _NAMES_ITS_FIELD.match(text):
            parts.append(text)
        else:
            parts.append(f"{where or 'job'}: {text[:1].lower()}{text[1:]}")
    return "; ".join(dict.fromkeys(parts)) + "."


_NAMES_ITS_FIELD = re.compile(r"[\w.\[\]-]+: ")
"""A model-level rule's message that starts with the field it is about (`image: is required ...`)."""


def _location(loc: tuple[int | str, ...]) -> str:
    """Pydantic's error location as a path, `a.b[0].c`, without its validator and union tags."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not part.startswith(("function-", "union")):
            where += f".{part}" if where else part
    return where


REGISTRY: dict[str, tuple[str, str]] = {
    # pool type: (dotted path of the provider class, extra that installs its SDK)
    "process": ("dispatcher.providers.process:ProcessProvider", ""),
    "ecs:push": ("dispatcher.providers.ecs:ECSProvider", "aws"),
    "cloud-run-v2:push": ("dispatcher.providers.cloud_run:CloudRunProvider", "gcp"),
    "azure-container-instance:push": ("dispatcher.providers.aci:ACIProvider", "azure"),
    "modal:push": ("dispatcher.providers.modal:ModalProvider", "modal"),
}


def load_provider_class(pool_type: str) -> Callable[[], Provider]:
    """Import the provider of a pool type on demand; a missing extra fails with the install command."""
    try:
        path, extra = REGISTRY[pool_type]
    except KeyError:
        raise ConfigError(f"pool type {pool_type!r} has no provider; known types: {', '.join(REGISTRY)}") from None
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dispatcher.providers."):
            raise ConfigError(f"pool type {pool_type!r} is not available in this release of pushpool") from None
        if extra:
            raise ConfigError(
                f"pool type {pool_type!r} needs pushpool[{extra}]: pip install 'pushpool[{extra}]'"
            ) from None
        raise ConfigError(
            f"pool type {pool_type!r} needs {exc.name!r}, which is not installed; reinstall pushpool"
        ) from None
    cls: Callable[[], Provider] = getattr(module, attr)
    return cls


class Providers:
    """The providers a dispatcher uses, built on first use and kept for the life of the object.

    Tests and embedders pass ready instances (`Providers({"process": FakeProvider()})`); anything not given
    is loaded from the registry.
    """

    def __init__(self, given: Mapping[str, Provider] | None = None) -> None:
        self._instances: dict[str, Provider] = dict(given or {})

    def get(self, pool_type: str) -> Provider:
        if pool_type not in self._instances:
            self._instances[pool_type] = load_provider_class(pool_type)()
        return self._instances[pool_type]


def provider_logs(pool_type: str, infrastructure_id: str, providers: Providers | None = None) -> str | None:
    """A job's output where its provider keeps it (`logs(id)`), or None for a provider that keeps none.

    Raises the provider's error (a PushpoolError naming what to configure) when it keeps output but has none
    for this job or cannot read it.
    """
    provider = (providers or Providers()).get(pool_type)
    logs = getattr(provider, "logs", None)
    if logs is None:
        return None
    text: str = logs(infrastructure_id)
    return text
