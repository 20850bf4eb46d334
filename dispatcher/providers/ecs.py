"""The `ecs:push` provider: each run is one AWS ECS task, started with RunTask and watched through DescribeTasks.

This is the only module of pushpool that imports boto3; the registry loads it when an `ecs:push` pool is
first used, so a dispatcher that serves other pool types never pays for the SDK.

Submission (SPEC §5), for a rendered job (templates/ecs-push.json):

1. The orphan lookup, for a resubmission or a later attempt: ListTasks(startedBy=<run id>) in the job's
   cluster, for running and stopped tasks (see `_stopped_tasks` for the second). An earlier attempt that
   launched a task and then died before the run recorded it is found here, and its task is returned instead
   of starting a second one. This is the backstop behind `clientToken`, which covers concurrent submits but
   not every crash (and which moto ignores); a first submission straight after admission relies on
   `clientToken` and skips it.
2. The task definition: built from the job, hashed (sha256 of its canonical JSON) and looked up by that
   hash in ECS itself: the latest ACTIVE revision of the family carries the hash as its
   `pushpool.io/content-hash` tag, so a fresh Lambda instance reuses what another one registered.
   RegisterTaskDefinition runs only when the content changed. A per-provider map (hash → ARN) saves
   the lookup on warm instances; it is a cache in front of ECS, never the only memory.
3. RunTask with `clientToken` from the idempotency key, `startedBy` = the run id, the job's labels as tags
   (pushpool adds run, pool and deployment), the command and environment as container overrides, and a
   launch type or a capacity provider strategy (never both). Without `network_configuration`, the subnets
   are those of `vpc_id` (or the default VPC's default-for-AZ subnets) that reach the internet, chosen by
   `ecs_network.choose_subnets`: behind a NAT without a public IP, else public with one, never mixed.

The infrastructure id is the task ARN. ECS's long ARN format (`arn:aws:ecs:<region>:<account>:task/<cluster>/
<id>`) names the cluster, which DescribeTasks and StopTask need. For an account that still gets short ARNs
(`task/<id>`), the id is `<cluster ARN>|<task ARN>` instead, so the cluster is never lost.

How a task's end maps to a run's state (SPEC §6) lives in one pure function, `task_status`, used by
`status()`, `status_many()` and, as `event_to_status`, by the handler of EventBridge task state changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoRegionError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import InvalidInput, ProviderError, TemplateError
from ..templating import check_credentials
from .base import JobState, JobStatus, first_attempt, job_settings_error, key_head, split_command
from .ecs_network import NoRouteOut, SubnetChoice, choose_subnets

log = logging.getLogger("pushpool.providers.ecs")

__all__ = [
    "CANCEL_REASON",
    "CONTENT_HASH_TAG",
    "DEFAULT_CONTAINER_NAME",
    "ECSJobConfiguration",
    "ECSProvider",
    "event_to_status",
    "task_status",
]

DEFAULT_CONTAINER_NAME = "pushpool"
DEFAULT_CPU = 1024
DEFAULT_MEMORY = 2048
DEFAULT_LOG_GROUP = "pushpool"
LOG_GROUP_ENV = "PUSHPOOL_ECS_LOG_GROUP"
OVERRIDES_LIMIT = 8192
"""RunTask's overrides, as JSON, may not exceed this many characters (parameters over 4 KB go by reference)."""

CONTENT_HASH_TAG = "pushpool.io/content-hash"
"""Tag on every task definition pushpool registers: the sha256 of its content, so any instance can find it."""

CANCEL_MARKER = "pushpool: cancelled"
CANCEL_REASON = f"{CANCEL_MARKER} on request"
"""StopTask's reason; a STOPPED task whose stoppedReason holds CANCEL_MARKER was stopped by pushpool."""

DESCRIBE_BATCH = 100
"""DescribeTasks takes at most 100 tasks per call."""

SUBNET_CACHE_SECONDS = 300.0

LOG_PAGES = 50
FIND_CLUSTER_PAGES = 10
"""`find` looks through at most this many pages of ListClusters (100 clusters each)."""
"""GetLogEvents pages `logs()` reads at most (each holds up to 10,000 events or 1 MB)."""
LOG_STREAM_SEARCH_PAGES = 10
"""DescribeLogStreams pages searched for the stream of a task ECS has forgotten (50 streams each)."""

_RUN_ID_ENV = "PUSHPOOL_RUN_ID"
_RUN_ID_LABEL = "pushpool.io/run-id"
_POOL_LABEL = "pushpool.io/pool"
_DEPLOYMENT_LABEL = "pushpool.io/deployment"

_CONTAINER_NAME = r"^[A-Za-z0-9_-]{1,255}$"
_FAMILY = r"^[A-Za-z0-9_-]{1,255}$"
_NOT_FAMILY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_STARTED_BY = re.compile(r"[A-Za-z0-9_/-]{1,36}")
_CLIENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# ECS tags allow letters, digits, spaces and + - = . _ : / @ (any language's letters, but ASCII is what we make).
_NOT_TAG_CHARS = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")
_MAX_TAGS = 50
_TASK_ARN = re.compile(r"arn:[^:]+:ecs:[^:]*:[^:]*:task/(?:(?P<cluster>[^/]+)/)?(?P<id>[^/]+)")

_FARGATE_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})
_PROVIDER_OWNED = ("startedBy", "clientToken", "count")

# lastStatus values of a task on its way up, and on its way down (desiredStatus STOPPED, not stopped yet).
_STARTING = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
_STOPPING = frozenset({"DEACTIVATING", "STOPPING", "DEPROVISIONING"})
# Why the infrastructure, not the job, ended a task: SPEC §6 calls these CRASHED whatever the exit code.
_INFRASTRUCTURE_STOPS = ("TaskFailedToStart", "SpotInterruption", "InfrastructureHealth", "TerminationNotice")

# Error codes a retry can cure: throttling, ECS's own failures, timeouts. Every other error is permanent.
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# RunTask "failures" that capacity may cure later (no room on the cluster, Fargate capacity short, agent away).
_TRANSIENT_FAILURES = ("RESOURCE:", "AGENT", "Capacity is unavailable")


# -- configuration model ---------------------------------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class ContainerDefinition(BaseModel):
    """One entry of `task_definition.containerDefinitions`; keys pushpool does not check pass through to ECS."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(default=None, pattern=_CONTAINER_NAME)
    image: str | None = None
    cpu: int | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=6)
    essential: bool | None = None

    @field_validator("name", "image", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)


class TaskDefinitionSpec(BaseModel):
    """`task_definition`: the RegisterTaskDefinition request pushpool builds on (camelCase, as ECS spells it)."""

    model_config = ConfigDict(extra="allow")

    family: str | None = Field(default=None, pattern=_FAMILY)
    containerDefinitions: list[ContainerDefinition] = []
    cpu: str | None = None
    memory: str | None = None
    executionRoleArn: str | None = None
    taskRoleArn: str | None = None
    networkMode: Literal["none", "bridge", "awsvpc", "host"] | None = None
    requiresCompatibilities: list[str] | None = None

    @field_validator("family", "cpu", "memory", "executionRoleArn", "taskRoleArn", "networkMode", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # ECS takes task-level cpu and memory as strings ("1024", or "1 vCPU"); templates render integers.
        if isinstance(value, bool):
            raise ValueError("must be a number of units, not a boolean")
        if isinstance(value, int):
            if value <= 0:
                raise ValueError("must be positive")
            return str(value)
        return value


class CapacityProviderItem(BaseModel):
    """One entry of a capacity provider strategy."""

    model_config = ConfigDict(extra="forbid")

    capacityProvider: str = Field(min_length=1)
    weight: int | None = Field(default=None, ge=0, le=1000)
    base: int | None = Field(default=None, ge=0, le=100000)


def _normalise_overrides(value: Any) -> Any:
    """RunTask `overrides` in ECS's types, from what a template renders (Prefect's ECS template among them).

    Task-level cpu and memory are strings; a container override's command is a list (a string is split as a
    shell would, no shell runs), its environment a name/value list (a mapping is turned into one, null values
    dropped), its cpu and memory integers. Empty values and empty container overrides are dropped.
    """
    if not isinstance(value, dict):
        return value
    overrides = _drop_empty(value)
    for key in ("cpu", "memory"):
        if isinstance(overrides.get(key), bool):
            raise ValueError(f"{key} must be a number of units, not a boolean")
        if isinstance(overrides.get(key), int | float):
            overrides[key] = str(overrides[key])
    containers = overrides.get("containerOverrides")
    if isinstance(containers, list):
        normalised = []
        for position, container in enumerate(containers):
            if not isinstance(container, dict):
                raise ValueError(f"containerOverrides[{position}] must be an object")
            container = dict(container)
            if isinstance(container.get("command"), str):
                try:
                    container["command"] = split_command(container["command"])
                except ValueError as exc:
                    raise ValueError(f"containerOverrides[{position}].command {exc}") from None
            environment = container.get("environment")
            if isinstance(environment, dict):
                container["environment"] = [
                    {"name": str(k), "value": v if isinstance(v, str) else json.dumps(v)}
                    for k, v in environment.items()
                    if v is not None
                ]
            for key in ("cpu", "memory", "memoryReservation"):
                number = container.get(key)
                if isinstance(number, str) and number.strip().isdigit():
                    container[key] = int(number)
                elif isinstance(number, bool) or (number is not None and not isinstance(number, int)):
                    raise ValueError(f"containerOverrides[{position}].{key} must be a whole number")
            container = _drop_empty(container)
            if container:
                normalised.append(container)
        overrides["containerOverrides"] = normalised
    return overrides


class TaskRunRequestSpec(BaseModel):
    """`task_run_request`: the RunTask request pushpool builds on; keys it does not check pass through to ECS."""

    model_config = ConfigDict(extra="allow")

    cluster: str | None = None
    launchType: Literal["FARGATE", "EC2", "EXTERNAL", "FARGATE_SPOT"] | None = None
    capacityProviderStrategy: list[CapacityProviderItem] | None = None
    taskDefinition: str | None = None
    networkConfiguration: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    tags: list[dict[str, str]] | dict[str, str] | None = None

    @field_validator("cluster", "launchType", "taskDefinition", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("overrides", mode="before")
    @classmethod
    def _ecs_types(cls, value: Any) -> Any:
        return _normalise_overrides(value)

    @model_validator(mode="after")
    def _no_provider_owned_keys(self) -> TaskRunRequestSpec:
        # These carry a run's identity and idempotency; a template that set them would break both.
        owned = [key for key in _PROVIDER_OWNED if key in (self.model_extra or {})]
        if owned:
            raise ValueError(f"{', '.join(owned)} is set by pushpool for each run; remove it from the template")
        return self


class ECSJobConfiguration(BaseModel):
    """A rendered `ecs:push` job (templates/ecs-push.json) after the dispatcher injected env, labels and name.

    `task_definition` and `task_run_request` are ECS requests in ECS's own spelling; the other keys are
    pushpool's (and Prefect's) variables that the provider maps onto them when it submits.
    """

    model_config = ConfigDict(extra="forbid")

    task_definition: TaskDefinitionSpec = Field(default_factory=TaskDefinitionSpec)
    task_run_request: TaskRunRequestSpec = Field(default_factory=TaskRunRequestSpec)
    task_definition_arn: str | None = None
    container_name: str | None = Field(default=None, pattern=_CONTAINER_NAME)
    command: list[str] | None = None
    env: dict[str, str | None] = {}
    labels: dict[str, str] = {}
    name: str | None = None
    vpc_id: str | None = None
    network_configuration: dict[str, Any] | None = None
    configure_cloudwatch_logs: bool = False
    cloudwatch_logs_options: dict[str, str] = {}
    cloudwatch_logs_prefix: str | None = None
    cluster: str | None = None
    """Prefect's top-level cluster: the task's cluster when task_run_request names none."""
    task_start_timeout_seconds: int | None = Field(default=None, ge=0)
    """How long the task may take to start (reach RUNNING) before it is stopped and its run CRASHED; 0: no bound."""
    auto_deregister_task_definition: bool = False
    """Deregister the task definition this run registered once its task is launched, as Prefect's ECS worker."""
    match_latest_revision_in_family: bool = False
    """Reuse the family's latest revision when its content equals this job's, even if pushpool did not register it."""
    # Accepted so Prefect's templates carry over; pushpool has no use for them (docs/prefect.md says why).
    aws_credentials: dict[str, Any] | None = Field(default=None, exclude=True)
    stream_output: bool | None = Field(default=None, exclude=True)
    task_watch_poll_interval: float | None = Field(default=None, ge=0, exclude=True)
    prefect_api_key_secret_arn: str | None = Field(default=None, exclude=True)
    prefect_api_auth_string_secret_arn: str | None = Field(default=None, exclude=True)

    @field_validator(
        "task_definition_arn", "container_name", "name", "vpc_id", "cloudwatch_logs_prefix", "cluster", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("aws_credentials", mode="before")
    @classmethod
    def _no_secrets(cls, value: Any) -> Any:
        # Never used: boto3 finds the dispatcher's own credentials. Refused if it carries a secret, so none is
        # ever written into a job or its record.
        try:
            check_credentials("aws_credentials", value, field="aws_credentials")
        except TemplateError as exc:
            raise ValueError(str(exc).removeprefix("aws_credentials").lstrip(".:").rstrip(".")) from None
        return value

    @field_validator("auto_deregister_task_definition", "match_latest_revision_in_family", mode="before")
    @classmethod
    def _unset_flag_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        # A string is split as a shell would split it, but no shell ever runs it (SPEC §5).
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # no override: the image's own command runs
        return split_command(value)

    @field_validator("configure_cloudwatch_logs", mode="before")
    @classmethod
    def _unset_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("env", "labels", "cloudwatch_logs_options", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("network_configuration", mode="before")
    @classmethod
    def _awsvpc_configuration(cls, value: Any) -> Any:
        # Prefect's variable holds the awsvpcConfiguration itself; a wrapped one is accepted too.
        if value in (None, {}):
            return None
        if isinstance(value, dict) and set(value) == {"awsvpcConfiguration"}:
            value = value["awsvpcConfiguration"]
        if isinstance(value, dict) and not value.get("subnets"):
            raise ValueError("must list the task's subnets")
        return value

    @field_validator("labels")
    @classmethod
    def _tag_keys(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(key for key in value if key.lower().startswith("aws:"))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: tag keys starting with aws: are reserved by AWS")
        if any(not key.strip() for key in value):
            raise ValueError("a label needs a non-blank name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ECSJobConfiguration:
        request_cluster = self.task_run_request.cluster
        if request_cluster and self.cluster and request_cluster != self.cluster:
            raise ValueError("cluster: differs from task_run_request.cluster; set only one of them")
        self.task_run_request.cluster = request_cluster or self.cluster
        self.cluster = None
        request_arn = self.task_run_request.taskDefinition
        if request_arn and self.task_definition_arn and request_arn != self.task_definition_arn:
            raise ValueError("task_definition_arn: differs from task_run_request.taskDefinition; set only one of them")
        self.task_definition_arn = self.task_definition_arn or request_arn
        self.task_run_request.taskDefinition = None

        if self.cloudwatch_logs_options and not self.configure_cloudwatch_logs:
            raise ValueError("cloudwatch_logs_options: needs configure_cloudwatch_logs to be true")

        tags = _tag_list(self.task_run_request.tags, self.labels, self.name)
        if len(tags) > _MAX_TAGS:
            raise ValueError(
                f"labels: an ECS task takes at most {_MAX_TAGS} tags, and this job has {len(tags)} "
                f"(with pushpool's run, pool, deployment and Name tags)"
            )

        if self.task_definition_arn:
            # An existing task definition is used as is; its container is found when the job is submitted.
            return self

        definitions = self.task_definition.containerDefinitions
        container = _find_container(definitions, self.container_name)
        if container is None and self.container_name is not None:
            unnamed = next((c for c in definitions if c.name is None), None)
            if unnamed is None:
                names = ", ".join(str(c.name) for c in definitions) or "none"
                raise ValueError(
                    f"container_name: task_definition.containerDefinitions has no container named "
                    f"{self.container_name!r} (it has: {names})"
                )
            unnamed.name = self.container_name
            container = unnamed
        if container is None:
            raise ValueError("image: is required unless task_definition_arn is set")
        if container.name is None:
            container.name = DEFAULT_CONTAINER_NAME
        self.container_name = container.name
        if not container.image:
            raise ValueError(f"image: is required (for container {container.name!r}) unless task_definition_arn is set")
        if all(c.essential is False for c in definitions):
            raise ValueError("task_definition.containerDefinitions: at least one container must be essential")

        if self.configure_cloudwatch_logs and not self.task_definition.executionRoleArn:
            raise ValueError(
                "execution_role_arn: is required when configure_cloudwatch_logs is true "
                "(ECS writes the logs with the execution role)"
            )
        launch = self.task_run_request.launchType
        mode = self.task_definition.networkMode
        fargate = launch in _FARGATE_PROVIDERS and not self.task_run_request.capacityProviderStrategy
        if fargate and mode not in (None, "awsvpc"):
            raise ValueError(
                f"task_definition.networkMode: {mode!r} does not work with launch type {launch}; Fargate needs 'awsvpc'"
            )
        return self


def _find_container(definitions: list[ContainerDefinition], name: str | None) -> ContainerDefinition | None:
    """The flow run's container: the one named `name`; without a name, `pushpool` if present, else the first."""
    if name is not None:
        return next((c for c in definitions if c.name == name), None)
    return next((c for c in definitions if c.name == DEFAULT_CONTAINER_NAME), definitions[0] if definitions else None)


# -- pure mapping: job -> ECS requests -------------------------------------------------------------------------


def _drop_empty(node: Any) -> Any:
    """A copy without null, "" , [] and {} values (ECS rejects nulls); False and 0 are kept, they mean something."""
    if isinstance(node, dict):
        out = {key: _drop_empty(value) for key, value in node.items()}
        return {key: value for key, value in out.items() if value not in (None, "", [], {})}
    if isinstance(node, list):
        items = [_drop_empty(item) for item in node]
        return [item for item in items if item not in (None, "", [], {})]
    return node


def _slug(text: str, limit: int) -> str:
    return _NOT_FAMILY_CHARS.sub("-", text).strip("-")[:limit]


def _tag_text(text: str, limit: int) -> str:
    return _NOT_TAG_CHARS.sub("_", text)[:limit]


def _tag_list(
    request_tags: list[dict[str, str]] | dict[str, str] | None, labels: Mapping[str, str], name: str | None
) -> list[dict[str, str]]:
    """RunTask tags: the template's, then a `Name` tag from the job name, then the labels (later ones win)."""
    merged: dict[str, str] = {}
    if isinstance(request_tags, dict):
        merged.update(request_tags)
    elif request_tags:
        merged.update({str(tag.get("key")): str(tag.get("value", "")) for tag in request_tags if tag.get("key")})
    if name and "Name" not in labels:
        # ECS tasks have no name field; `Name` is the tag AWS consoles show as a resource's name.
        merged["Name"] = name
    merged.update(labels)
    tags: dict[str, str] = {}
    for key, value in merged.items():
        # Out-of-range characters become "_" rather than failing the run: a pool named "nightly (eu)" is fine.
        tags[_tag_text(key, 128)] = _tag_text(value, 256)
    return [{"key": key, "value": value} for key, value in tags.items()]


def _run_id(config: ECSJobConfiguration, idempotency_key: str) -> str:
    """The run a job belongs to: PUSHPOOL_RUN_ID, else its run label, else the key without its `-<attempt>`."""
    run_id = config.env.get(_RUN_ID_ENV) or config.labels.get(_RUN_ID_LABEL)
    return run_id or key_head(idempotency_key)


def started_by(run_id: str) -> str:
    """RunTask's `startedBy` for a run: the run id (a UUID fits), or a digest when ECS's 36 characters are too few."""
    if _STARTED_BY.fullmatch(run_id):
        return run_id
    return "pp-" + hashlib.sha256(run_id.encode()).hexdigest()[:33]


def client_token(idempotency_key: str) -> str:
    """RunTask's `clientToken` for an idempotency key: the key itself when ECS accepts it, else its sha256."""
    if _CLIENT_TOKEN.fullmatch(idempotency_key):
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def content_hash(task_definition: Mapping[str, Any]) -> str:
    """sha256 of a task definition request's canonical JSON, tags left out (they are where the hash goes)."""
    body = {key: value for key, value in task_definition.items() if key != "tags"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _launch(request: TaskRunRequestSpec) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(launchType, capacityProviderStrategy) for RunTask: never both, as ECS requires."""
    strategy = [item.model_dump(exclude_none=True) for item in request.capacityProviderStrategy or []]
    if strategy:
        return None, strategy
    if request.launchType == "FARGATE_SPOT":
        # Not an ECS launch type: Fargate Spot is a capacity provider.
        return None, [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    return request.launchType, None


def _is_fargate(launch_type: str | None, strategy: list[dict[str, Any]] | None) -> bool:
    if strategy:
        return all(item["capacityProvider"] in _FARGATE_PROVIDERS for item in strategy)
    return launch_type == "FARGATE"


def build_task_definition(config: ECSJobConfiguration, *, region: str, log_group: str | None = None) -> dict[str, Any]:
    """The RegisterTaskDefinition request of a job (without the hash tag). Pure: `region` is for awslogs only.

    `log_group` is a CloudWatch log group that exists already (the stack's `TaskLogGroup`, with a retention):
    tasks then write to it without `awslogs-create-group`, which would need `logs:CreateLogGroup` on the task
    execution role. Without one, the group is `pushpool` and the awslogs driver creates it when missing.
    """
    definition: dict[str, Any] = config.task_definition.model_dump(exclude_none=True)
    definition = _drop_empty(definition)
    containers: list[dict[str, Any]] = definition.setdefault("containerDefinitions", [])
    container = next(c for c in containers if c.get("name") == config.container_name)

    labels = config.labels
    pool, deployment = labels.get(_POOL_LABEL), labels.get(_DEPLOYMENT_LABEL)
    if not definition.get("family"):
        # One family per pool and deployment, not per run name: runs of a deployment then share revisions.
        parts = ["pushpool", *(part for part in (pool, deployment) if part)]
        definition["family"] = _slug("_".join(parts), 255) or "pushpool"

    launch_type, strategy = _launch(config.task_run_request)
    fargate = _is_fargate(launch_type, strategy)
    cpu = str(definition.get("cpu") or DEFAULT_CPU)
    memory = str(definition.get("memory") or DEFAULT_MEMORY)
    if fargate:
        # Fargate needs task-level resources and awsvpc networking; elsewhere both stay the template's choice.
        definition["cpu"], definition["memory"] = cpu, memory
        definition.setdefault("requiresCompatibilities", ["FARGATE"])
        definition.setdefault("networkMode", "awsvpc")
    elif launch_type in ("EC2", "EXTERNAL"):
        definition.setdefault("requiresCompatibilities", [launch_type])
    if not fargate or len(containers) == 1:
        # EC2 and EXTERNAL need container-level resources (moto wants memory on every container, too). On
        # Fargate with sidecars the split is the template's business: the whole task could overcommit it.
        if cpu.isdigit():
            container.setdefault("cpu", int(cpu))
        if memory.isdigit():
            container.setdefault("memory", int(memory))

    # A null env value unsets a variable the template's container definition would set.
    unset = {key for key, value in config.env.items() if value is None}
    if unset and container.get("environment"):
        container["environment"] = [item for item in container["environment"] if item.get("name") not in unset]

    if config.configure_cloudwatch_logs:
        prefix = config.cloudwatch_logs_prefix or _slug(
            "_".join(["pushpool-logs", *(part for part in (pool, deployment) if part)]), 200
        )
        group = (
            {"awslogs-group": log_group}
            if log_group
            else {"awslogs-create-group": "true", "awslogs-group": DEFAULT_LOG_GROUP}
        )
        container["logConfiguration"] = {
            "logDriver": "awslogs",
            "options": {
                **group,
                "awslogs-region": region,
                "awslogs-stream-prefix": prefix,
                **config.cloudwatch_logs_options,
            },
        }
    return _drop_empty(definition)


def _check_overrides_size(request: Mapping[str, Any]) -> None:
    """Refuse, in words, a RunTask whose overrides ECS would refuse: at most 8,192 characters of JSON."""
    size = len(json.dumps(request.get("overrides") or {}, separators=(",", ":")))
    if size > OVERRIDES_LIMIT:
        raise ProviderError(
            f"env: the run's container overrides are {size:,} characters and ECS takes at most {OVERRIDES_LIMIT:,} "
            f"(command, environment and resources together); put large values in the image or the task definition "
            f"(task_definition_arn) instead of env",
            transient=False,
        )


_REGISTRATION_FIELDS = frozenset(
    {
        "taskDefinitionArn",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
        "tags",
    }
)
"""Fields ECS adds to a task definition when it registers it: not part of what was asked for."""


def same_task_definition(registered: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a described revision has the content of a RegisterTaskDefinition request (Prefect's comparison).

    ECS's own fields are left out, empty values dropped on both sides, and a container is essential unless it
    says otherwise, as ECS fills it in.
    """

    def comparable(definition: Mapping[str, Any]) -> Any:
        body = {key: value for key, value in definition.items() if key not in _REGISTRATION_FIELDS}
        body = _drop_empty(copy.deepcopy(body))
        for container in body.get("containerDefinitions") or []:
            container.setdefault("essential", True)
        return body

    return bool(comparable(registered) == comparable(wanted))


def build_run_request(
    config: ECSJobConfiguration,
    *,
    task_definition_arn: str,
    container_name: str,
    network_configuration: dict[str, Any] | None,
    run_id: str,
    idempotency_key: str,
) -> dict[str, Any]:
    """The RunTask request of a job, once its task definition and network are known. Pure."""
    request: dict[str, Any] = _drop_empty(config.task_run_request.model_dump(exclude_none=True))
    request.pop("capacityProviderStrategy", None)
    request.pop("launchType", None)
    launch_type, strategy = _launch(config.task_run_request)
    if strategy:
        request["capacityProviderStrategy"] = strategy
    elif launch_type:
        request["launchType"] = launch_type
    request["taskDefinition"] = task_definition_arn
    if network_configuration and not request.get("networkConfiguration"):
        request["networkConfiguration"] = network_configuration

    overrides: dict[str, Any] = request.setdefault("overrides", {})
    # The template's override of the flow run's container, named or not (Prefect's names it only when
    # container_name is set), is merged into one, which pushpool's command and environment then win in.
    given: list[dict[str, Any]] = overrides.get("containerOverrides") or []
    mine = [c for c in given if c.get("name") in (None, container_name)]
    target: dict[str, Any] = {"name": container_name}
    for item in mine:
        target.update({key: value for key, value in item.items() if key != "name"})
    container_overrides = [target, *(c for c in given if c.get("name") not in (None, container_name))]
    overrides["containerOverrides"] = container_overrides
    if config.command is not None:
        target["command"] = list(config.command)
    environment = {item["name"]: item["value"] for item in target.get("environment", []) if "name" in item}
    for key, value in config.env.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    if environment:
        target["environment"] = [{"name": key, "value": value} for key, value in environment.items()]

    request["tags"] = _tag_list(config.task_run_request.tags, config.labels, config.name)
    request["startedBy"] = started_by(run_id)
    request["clientToken"] = client_token(idempotency_key)
    return request


# -- pure mapping: task -> status (SPEC §6) --------------------------------------------------------------------


def _main_container(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The flow run's container of a described task (or event detail), or None if it cannot be told apart.

    It is the one pushpool gave PUSHPOOL_RUN_ID through the overrides; else the only container; else the
    one with the default name.
    """
    containers = [c for c in task.get("containers") or [] if isinstance(c, Mapping)]
    overrides = (task.get("overrides") or {}).get("containerOverrides") or []
    for override in overrides:
        if not isinstance(override, Mapping):
            continue
        env = override.get("environment") or []
        if any(isinstance(item, Mapping) and item.get("name") == _RUN_ID_ENV for item in env):
            found = next((c for c in containers if c.get("name") == override.get("name")), None)
            if found is not None:
                return found
    if len(containers) == 1:
        return containers[0]
    return next((c for c in containers if c.get("name") == DEFAULT_CONTAINER_NAME), None)


def _exit_code(container: Mapping[str, Any]) -> int | None:
    code = container.get("exitCode")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _join(*parts: Any) -> str | None:
    text = "; ".join(str(part) for part in parts if part)
    return text or None


def task_status(task: Mapping[str, Any]) -> JobStatus:
    """What a task says of its job: a DescribeTasks task or an "ECS Task State Change" event detail (SPEC §6).

    - PROVISIONING, PENDING, ACTIVATING: PENDING. RUNNING: RUNNING.
    - DEACTIVATING, STOPPING, DEPROVISIONING: RUNNING if the task ever ran (startedAt, or an exit code),
      else PENDING, so a task that fails to start never looks as if it had run.
    - STOPPED: CANCELLED if pushpool stopped it; CRASHED for TaskFailedToStart, SpotInterruption,
      InfrastructureHealth or TerminationNotice, whatever the exit code; else the flow run container's exit
      code: 0 COMPLETED, other FAILED, none CRASHED.

    Unknown fields are ignored, so newer event versions parse.
    """
    last = str(task.get("lastStatus") or "").upper()
    stop_code = str(task.get("stopCode") or "")
    reason = str(task.get("stoppedReason") or "")
    containers = [c for c in task.get("containers") or [] if isinstance(c, Mapping)]
    main = _main_container(task)

    if last in _STARTING:
        return JobStatus(JobState.PENDING, message=f"task {last}")
    if last == "RUNNING":
        return JobStatus(JobState.RUNNING, message="task RUNNING")
    if last != "STOPPED":
        ran = bool(task.get("startedAt")) or any(_exit_code(c) is not None for c in containers)
        state = JobState.RUNNING if ran else JobState.PENDING
        return JobStatus(state, message=f"task {last or 'in an unknown state'}")

    main_code = _exit_code(main) if main is not None else None
    main_reason = main.get("reason") if main is not None else None
    if CANCEL_MARKER in reason:
        return JobStatus(JobState.CANCELLED, exit_code=main_code, message=reason)
    for cause in _INFRASTRUCTURE_STOPS:
        if cause == stop_code or cause in reason:
            return JobStatus(JobState.CRASHED, exit_code=main_code, message=_join(stop_code, reason, main_reason))

    if main is None:
        # Several containers and none marked as the flow run's: any failure is the job's failure.
        codes = [(c.get("name"), _exit_code(c)) for c in containers]
        failed = next(((n, c) for n, c in codes if c not in (None, 0)), None)
        if failed is not None:
            return JobStatus(
                JobState.FAILED,
                exit_code=failed[1],
                message=_join(f"container {failed[0]} exited with code {failed[1]}", reason),
            )
        if not codes or any(c is None for _, c in codes):
            return JobStatus(
                JobState.CRASHED, message=_join("the task stopped without an exit code", stop_code, reason)
            )
        return JobStatus(JobState.COMPLETED, exit_code=0)

    if main_code is None:
        return JobStatus(
            JobState.CRASHED,
            message=_join(f"container {main.get('name')} stopped without an exit code", main_reason, stop_code, reason),
        )
    if main_code == 0:
        return JobStatus(JobState.COMPLETED, exit_code=0)
    return JobStatus(
        JobState.FAILED,
        exit_code=main_code,
        message=_join(f"container {main.get('name')} exited with code {main_code}", main_reason, reason),
    )


def event_to_status(detail: Mapping[str, Any]) -> JobStatus:
    """The status an EventBridge "ECS Task State Change" event's `detail` reports; same rules as `status()`."""
    return task_status(detail)


# -- errors ----------------------------------------------------------------------------------------------------


def provider_error(exc: Exception, action: str) -> ProviderError:
    """An SDK error as a ProviderError in ECS's own words, with the request id; transient if a retry may help."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        status = meta.get("HTTPStatusCode")
        request_id = meta.get("RequestId")
        transient = code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500) or code.startswith("5")
        details = code if not request_id else f"{code}, request id {request_id}"
        return ProviderError(f"ECS {action} failed: {message} ({details})", transient=transient)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return ProviderError(f"ECS {action} failed: {exc}", transient=True)
    if isinstance(exc, NoRegionError):
        return ProviderError(
            f"ECS {action} failed: no AWS region is configured; set AWS_REGION or pass region=", transient=False
        )
    return ProviderError(f"ECS {action} failed: {exc}", transient=False)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message") or "")


# -- infrastructure ids ----------------------------------------------------------------------------------------


def make_infrastructure_id(task_arn: str, cluster: str | None) -> str:
    """The task ARN when it names its cluster (long format), else `<cluster>|<task ARN>`."""
    match = _TASK_ARN.fullmatch(task_arn)
    if match is not None and match.group("cluster"):
        return task_arn
    return f"{cluster or 'default'}|{task_arn}"


def split_infrastructure_id(infrastructure_id: str) -> tuple[str | None, str]:
    """(cluster, task ARN) of an infrastructure id; ValueError if it is not one this provider made."""
    cluster: str | None
    if "|" in infrastructure_id:
        cluster, _, task_arn = infrastructure_id.partition("|")
    else:
        cluster, task_arn = None, infrastructure_id
    match = _TASK_ARN.fullmatch(task_arn)
    if match is None:
        raise ValueError(f"{infrastructure_id!r} is not an ECS task ARN")
    return cluster or match.group("cluster"), task_arn


# -- the provider ----------------------------------------------------------------------------------------------


class ECSProvider:
    """Runs jobs as ECS tasks. Thread-safe: the dispatcher submits from several threads at once.

    - `client`: a boto3 ECS client to use; else one is built on first use (with `region` and
      `endpoint_url`) and kept for the life of the provider, so warm Lambda invocations reuse it.
    - `ec2_client`: for the subnets of `vpc_id` (or of the default VPC); built like `client` when needed.
    - `logs_client`: CloudWatch Logs, for `logs()`; built like `client` when needed (in the region the task's
      awslogs configuration names, if that is another one).
    - `store_hashes`: the first-level cache of task definitions (content hash → ARN), owned by the caller
      if given (to share it between providers); a fresh dict otherwise. ECS's hash tags stay the memory
      that counts: an empty cache costs one DescribeTaskDefinition, never a needless registration.
    """

    status_is_cheap = False
    """status() is an AWS call: the reconciler asks only about runs that have been silent for a while."""

    def __init__(
        self,
        client: Any = None,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        store_hashes: MutableMapping[str, str] | None = None,
        ec2_client: Any = None,
        logs_client: Any = None,
        log_group: str | None = None,
    ) -> None:
        self._client = client
        # The deploy files set PUSHPOOL_ECS_LOG_GROUP to the log group they create (with a retention).
        self._log_group = log_group or os.environ.get(LOG_GROUP_ENV) or None
        self._ec2 = ec2_client
        self._logs: dict[str | None, Any] = {None: logs_client} if logs_client is not None else {}
        self._region = region
        self._endpoint_url = endpoint_url
        self._hashes: MutableMapping[str, str] = store_hashes if store_hashes is not None else {}
        self._lock = threading.Lock()
        self._hash_locks: dict[str, threading.Lock] = {}
        self._subnets: dict[str, tuple[float, SubnetChoice]] = {}
        self._described: dict[str, dict[str, Any]] = {}
        self._clusters: dict[str | None, None] = {}
        """The clusters this provider launched in, in first-use order (an ordered set)."""

    # -- clients -----------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ECS client, built on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client("ecs", self._region)
        return self._client

    @property
    def ec2_client(self) -> Any:
        """The EC2 client (subnet lookups), built on first use in the ECS client's region."""
        if self._ec2 is None:
            region = self.client.meta.region_name
            with self._lock:
                if self._ec2 is None:
                    self._ec2 = self._make_client("ec2", region)
        return self._ec2

    def logs_client(self, region: str | None = None) -> Any:
        """The CloudWatch Logs client for `region` (None: the ECS client's region), built on first use."""
        home = self.client.meta.region_name
        key = None if region in (None, "", home) else region
        if key not in self._logs:
            with self._lock:
                if key not in self._logs:
                    self._logs[key] = self._make_client("logs", key or home)
        return self._logs[key]

    def _make_client(self, service: str, region: str | None) -> Any:
        config = Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=10,
            user_agent_extra="pushpool",
        )
        try:
            # A session of its own: boto3's default session is not safe to share between threads.
            session = boto3.session.Session()
            return session.client(service, region_name=region, endpoint_url=self._endpoint_url, config=config)
        except BotoCoreError as exc:
            raise provider_error(exc, f"client setup ({service})") from None

    def _call(self, action: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise provider_error(exc, action) from None

    # -- Provider protocol -------------------------------------------------------------------------------------

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Check a rendered job against `ECSJobConfiguration`; return it normalised (command as a list)."""
        return self._parse(job).model_dump(mode="json", exclude_none=True)

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Start the job's task once per run; return its infrastructure id (see the module docstring).

        The orphan lookup runs for a resubmission and for any attempt after the first, where an earlier
        launch may exist that the run never recorded; a first attempt relies on `clientToken` alone.
        """
        try:
            config = self._parse(job)
        except InvalidInput as exc:
            raise ProviderError(str(exc), transient=False) from None
        run_id = _run_id(config, idempotency_key)
        cluster = config.task_run_request.cluster
        with self._lock:
            self._clusters.setdefault(cluster, None)  # where `find` looks first

        if resubmission or not first_attempt(idempotency_key):
            orphan = self._find_orphan(cluster, started_by(run_id))
            if orphan is not None:
                return make_infrastructure_id(orphan, cluster)

        for attempt in range(2):
            arn, definition, registered = self._task_definition(config, fresh=attempt > 0)
            launch_type, strategy = _launch(config.task_run_request)
            network = None
            if definition.get("networkMode") == "awsvpc" and not config.task_run_request.networkConfiguration:
                network = self._network_configuration(config, fargate=_is_fargate(launch_type, strategy))
            container = _container_in(definition, config.container_name, arn)
            request = build_run_request(
                config,
                task_definition_arn=arn,
                container_name=container,
                network_configuration=network,
                run_id=run_id,
                idempotency_key=idempotency_key,
            )
            _check_overrides_size(request)
            try:
                response = self.client.run_task(**request)
            except ClientError as exc:
                if attempt == 0 and not config.task_definition_arn and "inactive" in _error_message(exc).lower():
                    # Someone deregistered the revision our cache remembers: look it up again, once.
                    self._forget(arn)
                    continue
                raise provider_error(exc, "RunTask") from None
            except BotoCoreError as exc:
                raise provider_error(exc, "RunTask") from None
            if registered and config.auto_deregister_task_definition:
                self._deregister(arn)
            tasks = response.get("tasks") or []
            if tasks:
                return make_infrastructure_id(tasks[0]["taskArn"], tasks[0].get("clusterArn") or cluster)
            raise self._run_failure(response.get("failures") or [])
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def status(self, infrastructure_id: str) -> JobStatus:
        """The task's status per SPEC §6; MISSING when ECS does not know it (stopped tasks expire after ~1 h)."""
        return self.status_many([infrastructure_id])[infrastructure_id]

    def status_many(self, infrastructure_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Statuses of many tasks with one DescribeTasks per cluster and 100 tasks, for the reconciler."""
        result: dict[str, JobStatus] = {}
        by_cluster: dict[str | None, dict[str, str]] = {}
        for infra_id in infrastructure_ids:
            try:
                cluster, task_arn = split_infrastructure_id(infra_id)
            except ValueError as exc:
                result[infra_id] = JobStatus(JobState.MISSING, message=str(exc))
                continue
            by_cluster.setdefault(cluster, {})[task_arn] = infra_id
        for cluster, wanted in by_cluster.items():
            arns = list(wanted)
            for start in range(0, len(arns), DESCRIBE_BATCH):
                batch = arns[start : start + DESCRIBE_BATCH]
                result.update(self._describe(cluster, batch, wanted))
        return result

    def find(self, idempotency_key: str) -> str | None:
        """The task launched for this key's run, found as a resubmission finds it: ListTasks(startedBy=run id).

        The key alone does not say which cluster its job ran in, so the clusters this provider launched in
        come first, then the account's clusters (ListClusters, which includes `default`). Like the
        resubmission's lookup it answers for the run, so a task of an earlier attempt that was never
        recorded counts too: the run's launch has happened. ECS forgets a stopped task after about an hour.
        """
        by = started_by(key_head(idempotency_key))
        for cluster in self._clusters_to_search():
            try:
                orphan = self._find_orphan(cluster, by)
            except ProviderError as exc:
                if "ClusterNotFound" in str(exc):
                    continue  # a remembered cluster that was deleted since
                raise
            if orphan is not None:
                return make_infrastructure_id(orphan, cluster)
        return None

    def _clusters_to_search(self) -> list[str | None]:
        with self._lock:
            clusters: list[str | None] = list(self._clusters)
        kwargs: dict[str, Any] = {}
        for _ in range(FIND_CLUSTER_PAGES):
            page = self._call("ListClusters", self.client.list_clusters, **kwargs)
            clusters += [arn for arn in page.get("clusterArns") or [] if not self._known_cluster(arn, clusters)]
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        return clusters or [None]

    @staticmethod
    def _known_cluster(arn: str, clusters: list[str | None]) -> bool:
        name = arn.rsplit("/", 1)[-1]
        return arn in clusters or name in clusters or (name == "default" and None in clusters)

    def cancel(self, infrastructure_id: str) -> None:
        """StopTask with pushpool's reason; the end is confirmed later by `status` (CANCELLED)."""
        try:
            cluster, task_arn = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            raise ProviderError(f"cannot stop {infrastructure_id!r}: {exc}", transient=False) from None
        kwargs: dict[str, Any] = {"task": task_arn, "reason": CANCEL_REASON}
        if cluster:
            kwargs["cluster"] = cluster
        try:
            self.client.stop_task(**kwargs)
        except ClientError as exc:
            code, message = _error_code(exc), _error_message(exc).lower()
            if code == "ClusterNotFoundException" or (code == "InvalidParameterException" and "not found" in message):
                return  # nothing runs there to stop; status() will say MISSING
            raise provider_error(exc, "StopTask") from None
        except BotoCoreError as exc:
            raise provider_error(exc, "StopTask") from None

    def logs(self, infrastructure_id: str) -> str:
        """The output of the flow run's container as the awslogs driver sent it to CloudWatch Logs, oldest first.

        The log group and stream come from the task's definition: group `awslogs-group` (`pushpool` unless
        `cloudwatch_logs_options` says otherwise), stream `<awslogs-stream-prefix>/<container>/<task id>`, as
        the driver names it. ECS forgets a stopped task after about an hour; the stream is then looked for by
        its task id among the most recently written streams of the default group. "" while nothing was
        written yet. Raises ProviderError when the task has no CloudWatch logs configured or they cannot be
        read.
        """
        try:
            cluster, task_arn = split_infrastructure_id(infrastructure_id)
        except ValueError as exc:
            raise ProviderError(f"cannot read the logs of {infrastructure_id!r}: {exc}", transient=False) from None
        task_id = task_arn.rsplit("/", 1)[-1]
        kwargs: dict[str, Any] = {"tasks": [task_arn]}
        if cluster:
            kwargs["cluster"] = cluster
        try:
            tasks = self.client.describe_tasks(**kwargs).get("tasks") or []
        except ClientError as exc:
            if _error_code(exc) != "ClusterNotFoundException":
                raise provider_error(exc, "DescribeTasks") from None
            tasks = []
        except BotoCoreError as exc:
            raise provider_error(exc, "DescribeTasks") from None
        if not tasks:
            return self._logs_of_forgotten_task(task_id)
        task = tasks[0]
        definition = self._describe_task_definition(str(task["taskDefinitionArn"]))
        container = _log_container(task, definition)
        options = _awslogs_options(container)
        if container is None or options is None or not options.get("awslogs-stream-prefix"):
            name = container.get("name") if container else "the flow run's container"
            raise ProviderError(
                f"task {task_id} sends no CloudWatch logs to read: container {name} has no awslogs log "
                f"configuration with a stream prefix (set configure_cloudwatch_logs on the pool or deployment)",
                transient=False,
            )
        group = options.get("awslogs-group") or DEFAULT_LOG_GROUP
        stream = f"{options['awslogs-stream-prefix']}/{container['name']}/{task_id}"
        return self._read_stream(options.get("awslogs-region"), group, stream)

    def _logs_of_forgotten_task(self, task_id: str) -> str:
        """Logs of a task ECS no longer describes: its stream, found by task id in the default log group."""
        client = self.logs_client()
        default_group = self._log_group or DEFAULT_LOG_GROUP
        kwargs: dict[str, Any] = {"logGroupName": default_group, "orderBy": "LastEventTime", "descending": True}
        try:
            for _ in range(LOG_STREAM_SEARCH_PAGES):
                response = client.describe_log_streams(**kwargs)
                for item in response.get("logStreams") or []:
                    name = str(item.get("logStreamName") or "")
                    if name.endswith(f"/{task_id}"):
                        return self._read_stream(None, default_group, name)
                if not response.get("nextToken"):
                    break
                kwargs["nextToken"] = response["nextToken"]
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise _logs_error(exc, "DescribeLogStreams") from None
        except BotoCoreError as exc:
            raise _logs_error(exc, "DescribeLogStreams") from None
        raise ProviderError(
            f"ECS no longer knows task {task_id} (stopped tasks are kept about an hour) and log group "
            f"{default_group} has no recent stream of it; look for it in the log group its pool configures",
            transient=False,
        )

    def _read_stream(self, region: str | None, group: str, stream: str) -> str:
        """A log stream's messages, one per line, oldest first; at most LOG_PAGES pages of GetLogEvents."""
        client = self.logs_client(region)
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        lines: list[str] = []
        try:
            for _ in range(LOG_PAGES):
                response = client.get_log_events(**kwargs)
                events = response.get("events") or []
                lines.extend(str(event.get("message", "")).rstrip("\n") + "\n" for event in events)
                token = response.get("nextForwardToken")
                if not token or token == kwargs.get("nextToken"):
                    return "".join(lines)  # the same token back: the end of the stream
                kwargs["nextToken"] = token
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return ""  # nothing written yet (the task is starting, or failed before its container ran)
            raise _logs_error(exc, "GetLogEvents") from None
        except BotoCoreError as exc:
            raise _logs_error(exc, "GetLogEvents") from None
        lines.append(f"[pushpool: output cut after {LOG_PAGES} pages; the rest is in {group} / {stream}]\n")
        return "".join(lines)

    # -- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(job: Any) -> ECSJobConfiguration:
        if not isinstance(job, dict):
            raise InvalidInput(f"an ecs:push job must be a JSON object, not {type(job).__name__}.")
        try:
            return ECSJobConfiguration.model_validate(job)
        except ValidationError as exc:
            raise InvalidInput(job_settings_error(exc, "ecs:push", ECSJobConfiguration)) from None

    def _find_orphan(self, cluster: str | None, by: str) -> str | None:
        """A task an earlier attempt of the run started, in any state ECS still remembers."""
        base: dict[str, Any] = {"startedBy": by}
        if cluster:
            base["cluster"] = cluster
        # ListTasks answers for one desired status at a time; RUNNING (the default) also covers tasks starting.
        arns = self._call("ListTasks", self.client.list_tasks, **base).get("taskArns") or []
        if not arns:
            arns = self._stopped_tasks(base)
        return str(arns[0]) if arns else None

    def _stopped_tasks(self, base: dict[str, Any]) -> list[str]:
        """ListTasks(startedBy, desiredStatus=STOPPED), or [] if ECS refuses the two filters together.

        ECS's reference says startedBy "must be the only filter"; moto accepts desiredStatus beside it, and
        whether ECS does is unverified. If it refuses (InvalidParameterException), stopped orphans are not
        looked for, the submission goes on, and `clientToken` is the only guard against a second launch;
        the warning says so. Any other error is the submission's error, as for the running lookup.
        """
        try:
            answer = self.client.list_tasks(**base, desiredStatus="STOPPED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidParameterException":
                raise provider_error(exc, "ListTasks") from None
            log.warning(
                "ECS refused ListTasks(startedBy, desiredStatus=STOPPED) (%s); stopped tasks of %s are not looked "
                "for, and clientToken alone guards against a second launch",
                exc.response.get("Error", {}).get("Message"),
                base["startedBy"],
            )
            return []
        except BotoCoreError as exc:
            raise provider_error(exc, "ListTasks") from None
        return list(answer.get("taskArns") or [])

    def _task_definition(self, config: ECSJobConfiguration, *, fresh: bool) -> tuple[str, dict[str, Any], bool]:
        """(ARN, content, registered now) of the task definition to run: the given one, or ours (once per content)."""
        if config.task_definition_arn:
            return config.task_definition_arn, self._describe_task_definition(config.task_definition_arn), False
        region = self.client.meta.region_name or ""
        definition = build_task_definition(config, region=region, log_group=self._log_group)
        digest = content_hash(definition)
        with self._lock:
            lock = self._hash_locks.setdefault(digest, threading.Lock())
        # One lookup-or-register per content at a time, so concurrent submits do not register twice.
        with lock:
            cached = None if fresh else self._hashes.get(digest)
            if cached is not None:
                return cached, definition, False
            arn = self._latest_with_hash(definition, digest, match_content=config.match_latest_revision_in_family)
            registered = arn is None
            if arn is None:
                tags = [{"key": CONTENT_HASH_TAG, "value": digest}]
                response = self._call(
                    "RegisterTaskDefinition", self.client.register_task_definition, **definition, tags=tags
                )
                arn = str(response["taskDefinition"]["taskDefinitionArn"])
            if not config.auto_deregister_task_definition:
                # A revision that is deregistered once its task is launched is never reused.
                self._hashes[digest] = arn
            return arn, definition, registered

    def _latest_with_hash(self, definition: Mapping[str, Any], digest: str, *, match_content: bool) -> str | None:
        """The family's latest ACTIVE revision if it carries this content hash (registered by any instance).

        With `match_content` (Prefect's match_latest_revision_in_family), a latest revision registered by
        someone else is used too when its content is the same as this job's.
        """
        family = definition["family"]
        try:
            response = self.client.describe_task_definition(taskDefinition=family, include=["TAGS"])
        except ClientError as exc:
            if _error_code(exc) == "ClientException" and "unable to describe" in _error_message(exc).lower():
                return None  # a family nobody registered yet
            raise provider_error(exc, "DescribeTaskDefinition") from None
        except BotoCoreError as exc:
            raise provider_error(exc, "DescribeTaskDefinition") from None
        tags = {tag.get("key"): tag.get("value") for tag in response.get("tags") or []}
        latest = response.get("taskDefinition") or {}
        if latest.get("status", "ACTIVE") != "ACTIVE":
            return None
        if tags.get(CONTENT_HASH_TAG) == digest or (match_content and same_task_definition(latest, definition)):
            return str(latest["taskDefinitionArn"])
        return None

    def _deregister(self, arn: str) -> None:
        """auto_deregister_task_definition: the revision this submission registered is deregistered at once.

        Prefect's worker does it when the task ends; a task keeps running on an INACTIVE revision, so doing it
        once RunTask answered has the same effect without a watcher. A failure is logged, never the run's.
        """
        try:
            self.client.deregister_task_definition(taskDefinition=arn)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not deregister task definition %s: %s", arn, provider_error(exc, "DeregisterTaskDefinition")
            )

    def _describe_task_definition(self, arn: str) -> dict[str, Any]:
        """A task definition given by ARN (its network mode and containers decide the RunTask request)."""
        cached = self._described.get(arn)
        if cached is not None:
            return cached
        response = self._call("DescribeTaskDefinition", self.client.describe_task_definition, taskDefinition=arn)
        definition: dict[str, Any] = response["taskDefinition"]
        if re.search(r":\d+$", arn):
            self._described[arn] = definition  # a revision never changes; a bare family may move on
        return definition

    def _forget(self, arn: str) -> None:
        with self._lock:
            for digest in [d for d, a in self._hashes.items() if a == arn]:
                self._hashes.pop(digest, None)

    def _network_configuration(self, config: ECSJobConfiguration, *, fargate: bool) -> dict[str, Any]:
        """awsvpcConfiguration: the job's own, else subnets of `vpc_id` or the default VPC that reach the internet."""
        if config.network_configuration:
            given = copy.deepcopy(config.network_configuration)
            given.setdefault("securityGroups", [])
            return {"awsvpcConfiguration": given}
        choice = self._vpc_subnets(config.vpc_id, fargate=fargate)
        # No security groups: ECS then uses the VPC's default group, as Prefect's ECS worker leaves it.
        awsvpc: dict[str, Any] = {"subnets": choice.subnets, "securityGroups": []}
        if fargate:
            # A public subnet needs a public IP to pull the image; behind a NAT none is given. EC2 refuses the key.
            awsvpc["assignPublicIp"] = "ENABLED" if choice.public else "DISABLED"
        return {"awsvpcConfiguration": awsvpc}

    def _vpc_subnets(self, vpc_id: str | None, *, fargate: bool) -> SubnetChoice:
        key = f"{vpc_id or '<default>'}/{'fargate' if fargate else 'ec2'}"
        now = time.monotonic()
        cached = self._subnets.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        ec2 = self.ec2_client
        where = f"VPC {vpc_id}" if vpc_id else "the default VPC"
        default_vpc = vpc_id is None
        if vpc_id is None:
            vpcs = self._call_ec2(
                "DescribeVpcs", ec2.describe_vpcs, Filters=[{"Name": "isDefault", "Values": ["true"]}]
            )
            if not vpcs.get("Vpcs"):
                raise ProviderError(
                    f"the task needs awsvpc networking and region {ec2.meta.region_name} has no default VPC; "
                    f"set vpc_id or network_configuration",
                    transient=False,
                )
            vpc_id = str(vpcs["Vpcs"][0]["VpcId"])
        in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
        subnets = self._call_ec2("DescribeSubnets", ec2.describe_subnets, Filters=in_vpc).get("Subnets") or []
        if not subnets:
            raise ProviderError(
                f"vpc_id: {where} has no subnets in region {ec2.meta.region_name} (does it exist there?); "
                f"set network_configuration or another vpc_id",
                transient=False,
            )
        tables = self._call_ec2("DescribeRouteTables", ec2.describe_route_tables, Filters=in_vpc).get("RouteTables")
        try:
            choice = choose_subnets(subnets, list(tables or []), where=where, fargate=fargate, default_vpc=default_vpc)
        except NoRouteOut as exc:
            raise ProviderError(str(exc), transient=False) from None
        self._subnets[key] = (now + SUBNET_CACHE_SECONDS, choice)
        return choice

    @staticmethod
    def _call_ec2(action: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            error = provider_error(exc, action)
            raise ProviderError(str(error).replace("ECS ", "EC2 ", 1), transient=error.transient) from None

    @staticmethod
    def _run_failure(failures: list[dict[str, Any]]) -> ProviderError:
        """RunTask answered with failures instead of a task: capacity shortages may pass, the rest will not."""
        if not failures:
            return ProviderError("ECS RunTask failed: it started no task and gave no reason", transient=True)
        words = "; ".join(_join(f.get("reason"), f.get("detail"), f.get("arn")) or "unknown" for f in failures)
        transient = all(
            any(
                str(f.get("reason") or "").startswith(p) or p in str(f.get("detail") or "") for p in _TRANSIENT_FAILURES
            )
            for f in failures
        )
        return ProviderError(f"ECS RunTask started no task: {words}", transient=transient)

    def _describe(self, cluster: str | None, arns: list[str], wanted: Mapping[str, str]) -> dict[str, JobStatus]:
        kwargs: dict[str, Any] = {"tasks": arns}
        if cluster:
            kwargs["cluster"] = cluster
        try:
            response = self.client.describe_tasks(**kwargs)
        except ClientError as exc:
            if _error_code(exc) == "ClusterNotFoundException":
                gone = JobStatus(JobState.MISSING, message=f"cluster {cluster or 'default'} not found")
                return {wanted[arn]: gone for arn in arns}
            raise provider_error(exc, "DescribeTasks") from None
        except BotoCoreError as exc:
            raise provider_error(exc, "DescribeTasks") from None
        found = {str(task.get("taskArn")): task for task in response.get("tasks") or []}
        failures = {str(f.get("arn")): f for f in response.get("failures") or []}
        result: dict[str, JobStatus] = {}
        for arn in arns:
            task = found.get(arn)
            if task is not None:
                result[wanted[arn]] = task_status(task)
                continue
            failure = failures.get(arn)
            why = _join(failure.get("reason"), failure.get("detail")) if failure else None
            result[wanted[arn]] = JobStatus(
                JobState.MISSING, message=f"ECS does not know task {arn}: {why or 'MISSING'}"
            )
        return result


def _container_in(definition: Mapping[str, Any], wanted: str | None, arn: str) -> str:
    """The flow run's container in a task definition: `wanted` if it has it, else (for the default name) the first.

    An existing task definition (task_definition_arn) need not have a container named `pushpool`, the
    template's default; one named explicitly must exist, or ECS would refuse the overrides less clearly.
    """
    names = [str(c.get("name")) for c in definition.get("containerDefinitions") or [] if c.get("name")]
    if wanted in names or not names:
        return wanted or DEFAULT_CONTAINER_NAME
    if wanted in (None, DEFAULT_CONTAINER_NAME):
        return names[0]
    raise ProviderError(
        f"container_name: task definition {arn} has no container named {wanted!r} (it has: {', '.join(names)})",
        transient=False,
    )


def _log_container(task: Mapping[str, Any], definition: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task definition's entry for the flow run's container (the one whose output `logs()` reads)."""
    definitions = [c for c in definition.get("containerDefinitions") or [] if isinstance(c, dict)]
    main = _main_container(task)
    wanted = main.get("name") if main is not None else None
    found = next((c for c in definitions if c.get("name") == wanted), None) if wanted else None
    if found is None:
        found = next((c for c in definitions if c.get("name") == DEFAULT_CONTAINER_NAME), None)
    if found is None and len(definitions) == 1:
        found = definitions[0]
    return found


def _awslogs_options(container: Mapping[str, Any] | None) -> dict[str, str] | None:
    config = (container or {}).get("logConfiguration") or {}
    if config.get("logDriver") != "awslogs":
        return None
    return {str(k): str(v) for k, v in (config.get("options") or {}).items()}


def _logs_error(exc: Exception, action: str) -> ProviderError:
    error = provider_error(exc, action)
    return ProviderError(str(error).replace("ECS ", "CloudWatch Logs ", 1), transient=error.transient)
