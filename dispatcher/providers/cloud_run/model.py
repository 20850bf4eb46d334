"""The `cloud-run-v2:push` job configuration (templates/cloud-run-v2-push.json) and the Cloud Run job it becomes.

Pure: no Google import, no network, no credentials. `validate()` and pool checks run on this alone.

The keys are those of Prefect's `cloud-run-v2` worker, so Prefect's own template works verbatim: `job_body` is
a Cloud Run Admin API v2 `Job` in its REST spelling (camelCase), the other keys are mapped onto it when the
job is built (`build_job_body`), as Prefect's worker maps them.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shlex
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...errors import InvalidInput
from ..base import job_settings_error, split_command

__all__ = [
    "CloudRunCredentials",
    "CloudRunJobConfiguration",
    "SecretKeySelector",
    "START_TOKEN",
    "build_job_body",
    "execution_id_for_job",
    "gcp_labels",
    "job_id_for_run",
    "parse_job",
]

JOB_ID_PREFIX = "pushpool-"
MAX_JOB_ID = 63
START_TOKEN = "start"
"""The job's `startExecutionToken`: Cloud Run starts the job's one execution, `<job id>-start`, in the very operation
that creates the job, so creating and starting are one idempotent call (docs/decisions.md, "Cloud Run: one
execution per run"). Cloud Run wants the job id and the token together under 63 characters."""
MAX_TIMEOUT_SECONDS = 604800
"""Cloud Run jobs run for at most 7 days (Prefect's bound too)."""
MAX_LABELS = 64

_JOB_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_REGION = re.compile(r"[a-z]+(?:-[a-z]+)+[0-9]+")
_NOT_LABEL_KEY = re.compile(r"[^a-z0-9_-]")
_NOT_LABEL_VALUE = re.compile(r"[^a-z0-9_-]")
# Keys Cloud Run refuses in user labels (it sets them itself).
_RESERVED_LABEL_PREFIXES = ("run.googleapis.com", "cloud.googleapis.com", "goog-")
_PUSHPOOL_LABEL_PREFIX = "pushpool.io/"


class SecretKeySelector(BaseModel):
    """A Secret Manager secret version, as Prefect's `env_from_secrets` names one."""

    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=1)
    version: str = "latest"


class CloudRunCredentials(BaseModel):
    """Which Google credentials submit the job (Prefect's `GcpCredentials` block, as data).

    Empty: Application Default Credentials (the dispatcher's environment, `GOOGLE_APPLICATION_CREDENTIALS`).
    `service_account_file`: a file on the dispatcher's machine holding a service-account key or an
    external-account (Workload Identity Federation) configuration. The key contents never go in a job
    variable: they would be stored in the store in clear, so `service_account_info` is refused.
    """

    model_config = ConfigDict(extra="forbid")

    service_account_file: str | None = None
    project: str | None = None
    service_account_info: dict[str, Any] | None = None

    @field_validator("service_account_file", "project", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("service_account_info")
    @classmethod
    def _no_key_material(cls, value: dict[str, Any] | None) -> None:
        if value:
            raise ValueError(
                "pushpool takes no key contents in job variables (they would be stored in clear); name a file "
                "with credentials.service_account_file, or leave credentials empty for Application Default "
                "Credentials"
            )
        return None


class CloudRunJobConfiguration(BaseModel):
    """A rendered `cloud-run-v2:push` job after the dispatcher injected env, labels and name."""

    model_config = ConfigDict(extra="forbid")

    job_body: dict[str, Any]
    region: str = "us-central1"
    credentials: CloudRunCredentials = Field(default_factory=CloudRunCredentials)
    keep_job: bool = False
    timeout: int = Field(default=600, gt=0, le=MAX_TIMEOUT_SECONDS)
    command: list[str] | None = None
    env: dict[str, str | None] = {}
    labels: dict[str, str] = {}
    name: str | None = None
    env_from_secrets: dict[str, SecretKeySelector] = {}
    prefect_api_key_secret: SecretKeySelector | None = None
    prefect_api_auth_string_secret: SecretKeySelector | None = None
    cloudsql_instances: list[str] = []

    @field_validator("credentials", mode="before")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("keep_job", mode="before")
    @classmethod
    def _unset_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("timeout", mode="before")
    @classmethod
    def _unset_timeout(cls, value: Any) -> Any:
        return 600 if value is None else value

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return "us-central1"
        if isinstance(value, str) and not _REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not a Google Cloud region (like us-central1 or europe-west1)")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        # A string is split as a shell would split it, but no shell ever runs it (SPEC §5).
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # the image's own entrypoint runs
        return split_command(value)

    @field_validator("env", "labels", "env_from_secrets", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("cloudsql_instances", mode="before")
    @classmethod
    def _null_is_no_instances(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("name", mode="before")
    @classmethod
    def _blank_name(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("job_body")
    @classmethod
    def _job_body_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The parts the provider fills in must be there, as Prefect's worker requires.
        execution = value.get("template")
        task = execution.get("template") if isinstance(execution, dict) else None
        containers = task.get("containers") if isinstance(task, dict) else None
        if not isinstance(containers, list) or not containers or not all(isinstance(c, dict) for c in containers):
            raise ValueError("must hold template.template.containers, a list with at least the flow run's container")
        if value.get("name"):
            raise ValueError("name is set by pushpool for each run (one job per run); remove it from the template")
        owned = sorted(k for k in ("startExecutionToken", "runExecutionToken") if k in value)
        if owned:
            raise ValueError(f"{', '.join(owned)}: set by pushpool, which starts each run's one execution; remove it")
        image = containers[0].get("image")
        if not isinstance(image, str) or not image.strip():
            raise ValueError("image: is required (the flow run's container image)")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in value if k.lower().startswith(_RESERVED_LABEL_PREFIXES))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)}: label keys starting with run.googleapis.com or goog- are Google's"
            )
        return value

    @model_validator(mode="after")
    def _label_count(self) -> CloudRunJobConfiguration:
        labels = gcp_labels(self.job_body.get("labels"), self.labels, self.name)
        if len(labels) > MAX_LABELS:
            raise ValueError(
                f"labels: a Cloud Run job takes at most {MAX_LABELS} labels, and this job has {len(labels)} "
                "(with pushpool's run, pool, deployment and name labels)"
            )
        return self


def parse_job(job: Any) -> CloudRunJobConfiguration:
    """The configuration of a rendered job; InvalidInput naming the field and the rule otherwise."""
    if not isinstance(job, dict):
        raise InvalidInput(f"a cloud-run-v2:push job must be a JSON object, not {type(job).__name__}.")
    try:
        return CloudRunJobConfiguration.model_validate(job)
    except ValidationError as exc:
        raise InvalidInput(
            job_settings_error(exc, "cloud-run-v2:push", CloudRunJobConfiguration, {"credentials": CloudRunCredentials})
        ) from None


# -- identity ---------------------------------------------------------------------------------------------------


def job_id_for_run(run_id: str) -> str:
    """The Cloud Run job id of a run: `pushpool-<run id>` when that is a valid job id (a UUID run id is, and so is
    `<uuid>-r<N>` of a run sent back by `flow-run retry`), else `pushpool-` and a digest of the run id. Valid means
    lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen, and short enough
    that the id and `START_TOKEN` are under 63 characters together, as Cloud Run requires. Deterministic, so any
    dispatcher finds it again."""
    candidate = JOB_ID_PREFIX + run_id
    if _JOB_ID.fullmatch(candidate) and len(candidate) + len(START_TOKEN) < MAX_JOB_ID:
        return candidate
    return JOB_ID_PREFIX + hashlib.sha256(run_id.encode()).hexdigest()[:40]


def execution_id_for_job(job_id: str) -> str:
    """The id of the execution Cloud Run starts when it creates a job with `START_TOKEN`: `<job id>-<token>`."""
    return f"{job_id}-{START_TOKEN}"


# -- labels -----------------------------------------------------------------------------------------------------


def _label_key(key: str) -> str:
    if key.startswith(_PUSHPOOL_LABEL_PREFIX):
        key = "pushpool-" + key[len(_PUSHPOOL_LABEL_PREFIX) :]
    key = _NOT_LABEL_KEY.sub("-", key.lower())[:63]
    return key if key[:1].isalpha() else ("l-" + key)[:63]


def _label_value(value: str) -> str:
    return _NOT_LABEL_VALUE.sub("_", value.lower())[:63]


def gcp_labels(body_labels: Any, labels: dict[str, str], name: str | None) -> dict[str, str]:
    """Labels as Cloud Run takes them (keys and values of lowercase letters, digits, `_` and `-`, ≤ 63):
    the template's `job_body.labels`, then `pushpool-name` from the job name, then the job's labels (later win).
    `pushpool.io/run-id` becomes `pushpool-run-id`; other characters become `-` in keys and `_` in values."""
    merged: dict[str, str] = {}
    if isinstance(body_labels, dict):
        merged.update({str(k): str(v) for k, v in body_labels.items()})
    if name:
        merged["pushpool-name"] = name
    merged.update(labels)
    return {_label_key(k): _label_value(v) for k, v in merged.items() if k.strip()}


# -- the Job request --------------------------------------------------------------------------------------------


def build_job_body(config: CloudRunJobConfiguration) -> dict[str, Any]:
    """The Cloud Run v2 `Job` (REST JSON) of a job configuration, as Prefect's worker prepares it, with
    `START_TOKEN` so that creating it starts its execution. Pure."""
    body = copy.deepcopy(config.job_body)
    body["startExecutionToken"] = START_TOKEN
    labels = gcp_labels(body.get("labels"), config.labels, config.name)
    body["labels"] = labels
    execution: dict[str, Any] = body["template"]
    execution["labels"] = {**(execution.get("labels") or {}), **labels}
    task: dict[str, Any] = execution["template"]
    container: dict[str, Any] = task["containers"][0]

    env = [item for item in container.get("env") or [] if isinstance(item, dict)]
    secret_env: dict[str, SecretKeySelector] = dict(config.env_from_secrets)
    if config.prefect_api_key_secret is not None:
        secret_env["PREFECT_API_KEY"] = config.prefect_api_key_secret
    if config.prefect_api_auth_string_secret is not None:
        secret_env["PREFECT_API_AUTH_STRING"] = config.prefect_api_auth_string_secret
    plain = {k: v for k, v in config.env.items() if k not in secret_env}
    unset = {k for k, v in plain.items() if v is None}
    named = set(plain) | set(secret_env)
    env = [item for item in env if item.get("name") not in named]
    env += [{"name": k, "value": v} for k, v in plain.items() if k not in unset]
    env += [
        {"name": k, "valueSource": {"secretKeyRef": {"secret": s.secret, "version": s.version}}}
        for k, s in secret_env.items()
    ]
    container["env"] = env

    if config.command is not None:
        container["command"] = list(config.command)
    elif isinstance(container.get("command"), str):
        container["command"] = split_command(container["command"])
    if not container.get("command"):
        container.pop("command", None)
    args = container.get("args")
    if isinstance(args, str):
        container["args"] = shlex.split(args)
    if not container.get("args"):
        container.pop("args", None)

    task["timeout"] = f"{config.timeout}s"
    vpc = task.get("vpcAccess")
    if isinstance(vpc, dict) and not any(v not in (None, "") for v in vpc.values()):
        task.pop("vpcAccess")
    for key in ("serviceAccount", "maxRetries"):
        if task.get(key) in (None, ""):
            task.pop(key, None)
    if body.get("launchStage") in (None, ""):
        body.pop("launchStage", None)
    if config.cloudsql_instances:
        task.setdefault("volumes", []).append(
            {"name": "cloudsql", "cloudSqlInstance": {"instances": list(config.cloudsql_instances)}}
        )
        container.setdefault("volumeMounts", []).append({"name": "cloudsql", "mountPath": "/cloudsql"})
    return body
