"""The `azure-container-instance:push` job: its configuration model and the container group it becomes. Pure.

`ACIJobConfiguration` is what templates/azure-container-instance-push.json renders to (a test ties the two),
and `container_group_body` turns one into the ARM request body of a container group (API 2023-05-01). Nothing
here imports the Azure SDK or touches the network, so a template can be checked where no extra is installed.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...errors import InvalidInput
from ..base import job_settings_error, split_command

__all__ = [
    "CONTAINER_NAME",
    "KEEP_TAG",
    "SECURE_ENV",
    "ACIJobConfiguration",
    "container_group_body",
    "group_name",
    "parse_job",
]

CONTAINER_NAME = "pushpool"
"""The flow run's container in every group pushpool creates (an ARM template may name it otherwise)."""

KEEP_TAG = "pushpool-keep-container-group"
"""Tag on each group: whether it outlives its run. Read back by status() and cancel(), which see only the id."""

SECURE_ENV = frozenset({"PUSHPOOL_CALLBACK_TOKEN", "PREFECT_API_KEY"})
"""Variables passed as `secureValue`: Azure never shows them again, in a GET or in the portal."""

_GROUP_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-)){0,61}[a-z0-9]")
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")
_RESOURCE_GROUP = re.compile(r"[-\w._()]{0,89}[-\w_()]")
_SUBSCRIPTION = re.compile(r"[A-Za-z0-9-]{1,64}")
_ARM_EXPRESSION = re.compile(r"^\[.*\]$", re.DOTALL)
# ARM tag names may not contain these; values are at most 256 characters, names 512, 50 tags a resource.
_NOT_TAG_NAME_CHARS = re.compile(r"[<>%&\\?/]")
_MAX_TAGS = 50
_GPU_SKUS = ("K80", "P100", "V100")


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class DockerRegistry(BaseModel):
    """A private registry reached with a username and password (Prefect's DockerRegistry block)."""

    model_config = ConfigDict(extra="ignore")  # Prefect's block carries `reauth` and block metadata

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    registry_url: str = Field(min_length=1)


class ACRManagedIdentity(BaseModel):
    """An Azure Container Registry reached with a user-assigned managed identity of the group."""

    model_config = ConfigDict(extra="ignore")

    registry_url: str = Field(min_length=1)
    identity: str = Field(min_length=1)


class Credentials(BaseModel):
    """`aci_credentials`: which identity DefaultAzureCredential signs in as. Never a secret (see `_no_secrets`)."""

    model_config = ConfigDict(extra="ignore")

    client_id: str | None = None
    tenant_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(value.get(key) for key in ("client_secret", "client_certificate")):
            raise ValueError(
                "must not hold a client secret: a template is stored in clear; give the dispatcher "
                "AZURE_CLIENT_SECRET in its environment, or a managed identity"
            )
        return value

    @field_validator("client_id", "tenant_id", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)


class ACIJobConfiguration(BaseModel):
    """A rendered `azure-container-instance:push` job, after the dispatcher injected env, labels and name.

    The variables are Prefect's azure-container-instance worker's, plus `keep_container_group`. A Prefect base
    job template also renders `arm_template` (a deployment template holding one container group): its
    container group's properties are the base that pushpool's variables are applied to.
    """

    model_config = ConfigDict(extra="forbid")

    image: str
    resource_group_name: str
    subscription_id: str
    command: list[str] | None = None
    entrypoint: str | None = None
    env: dict[str, str | None] = {}
    labels: dict[str, str] = {}
    name: str | None = None
    identities: list[str] | None = None
    image_registry: DockerRegistry | ACRManagedIdentity | None = None
    cpu: float = Field(default=1.0, gt=0, le=64)
    memory: float = Field(default=1.0, gt=0, le=1024)
    gpu_count: int | None = Field(default=None, ge=1, le=8)
    gpu_sku: str | None = None
    subnet_ids: list[str] | None = None
    dns_servers: list[str] | None = None
    aci_credentials: Credentials = Field(default_factory=Credentials)
    stream_output: bool = False
    task_start_timeout_seconds: int = Field(default=240, ge=0)
    task_watch_poll_interval: float = Field(default=5.0, ge=0)
    keep_container_group: bool = False
    arm_template: dict[str, Any] | None = None

    @field_validator("image", "resource_group_name", "subscription_id", mode="before")
    @classmethod
    def _required_text(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("is required")
        return value.strip() if isinstance(value, str) else value

    @field_validator("resource_group_name")
    @classmethod
    def _resource_group(cls, value: str) -> str:
        if not _RESOURCE_GROUP.fullmatch(value):
            raise ValueError(
                "must be 1-90 letters, digits, underscores, hyphens, periods or parentheses, not ending in a period"
            )
        return value

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        if not _SUBSCRIPTION.fullmatch(value):
            raise ValueError("must be a subscription id such as 00000000-0000-0000-0000-000000000000")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # no override: the image's own entrypoint and command run
        return split_command(value)

    @field_validator("entrypoint", "name", "gpu_sku", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("env", "labels", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("aci_credentials", mode="before")
    @classmethod
    def _null_credentials(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("stream_output", "keep_container_group", mode="before")
    @classmethod
    def _unset_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("gpu_sku")
    @classmethod
    def _sku(cls, value: str | None) -> str | None:
        if value is not None and value not in _GPU_SKUS:
            raise ValueError(f"must be one of {', '.join(_GPU_SKUS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ACIJobConfiguration:
        if self.gpu_count is not None and self.gpu_sku is None:
            raise ValueError("gpu_sku: is required when gpu_count is set")
        if self.arm_template is not None:
            _template_group(self.arm_template)  # raises ValueError naming what is wrong
        if len(_tags(self)) > _MAX_TAGS:
            raise ValueError(f"labels: a container group takes at most {_MAX_TAGS} tags, with pushpool's own")
        return self


def parse_job(job: Any) -> ACIJobConfiguration:
    """A rendered job as `ACIJobConfiguration`; raises InvalidInput with one sentence per field."""
    if not isinstance(job, dict):
        raise InvalidInput(f"an azure-container-instance:push job must be a JSON object, not {type(job).__name__}.")
    try:
        return ACIJobConfiguration.model_validate(job)
    except ValidationError as exc:
        raise InvalidInput(job_settings_error(exc, "azure-container-instance:push", ACIJobConfiguration)) from None


# -- names -----------------------------------------------------------------------------------------------------


def group_name(run_id: str) -> str:
    """The container group of a run: `pp-<run id>` when that is a valid ACI name, else a readable part plus a hash.

    ACI names are 1-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric; every
    attempt of a run shares the name, so whichever attempt created the group, a later one finds it.
    """
    plain = f"pp-{run_id}"
    if _GROUP_NAME.fullmatch(plain):
        return plain
    readable = _NOT_NAME_CHARS.sub("-", run_id.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return f"pp-{readable}-{digest}" if readable else f"pp-{digest}"


# -- the container group ---------------------------------------------------------------------------------------


def _template_group(arm_template: dict[str, Any]) -> dict[str, Any]:
    """The container group resource of a Prefect ARM template (the first of its resources, as Prefect reads it)."""
    resources = arm_template.get("resources")
    if not isinstance(resources, list) or not resources or not isinstance(resources[0], dict):
        raise ValueError("arm_template: must hold a container group as its first resource")
    group = resources[0]
    if str(group.get("type", "")).lower() != "microsoft.containerinstance/containergroups":
        raise ValueError("arm_template: its first resource must be of type Microsoft.ContainerInstance/containerGroups")
    containers = (group.get("properties") or {}).get("containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        raise ValueError("arm_template: its container group must hold at least one container")
    return group


def _literal(value: Any) -> Any:
    """An ARM template value, or None for an expression ("[parameters('x')]") that only ARM deployments evaluate."""
    return None if isinstance(value, str) and _ARM_EXPRESSION.match(value) else value


def _tag_name(text: str) -> str:
    return _NOT_TAG_NAME_CHARS.sub("_", text)[:512] or "_"


def _tags(config: ACIJobConfiguration) -> dict[str, str]:
    tags: dict[str, str] = {}
    if config.name and "Name" not in config.labels:
        tags["Name"] = config.name[:256]
    for key, value in config.labels.items():
        tags[_tag_name(key)] = value[:256]
    tags[KEEP_TAG] = "true" if config.keep_container_group else "false"
    return tags


def _environment(base: list[Any], env: dict[str, str | None]) -> list[dict[str, str]]:
    values: dict[str, dict[str, str]] = {}
    for item in base:
        if isinstance(item, dict) and item.get("name"):
            values[str(item["name"])] = item
    for key, value in env.items():
        if value is None:
            values.pop(key, None)  # a null unsets what the template's container set
        elif key in SECURE_ENV:
            values[key] = {"name": key, "secureValue": value}
        else:
            values[key] = {"name": key, "value": value}
    return list(values.values())


def container_group_body(config: ACIJobConfiguration, *, location: str) -> dict[str, Any]:
    """The PUT body of the run's container group: restartPolicy Never, the job's container first.

    `location` is the resource group's, unless a Prefect ARM template gives a literal one.
    """
    base: dict[str, Any] = {}
    if config.arm_template is not None:
        base = _template_group(config.arm_template)
    properties: dict[str, Any] = dict(base.get("properties") or {})
    containers = [dict(item) for item in properties.get("containers") or [{}]]
    main = containers[0]
    main_properties: dict[str, Any] = dict(main.get("properties") or {})

    main["name"] = _literal(main.get("name")) or CONTAINER_NAME
    main_properties["image"] = config.image
    command = list(config.command) if config.command is not None else None
    if command is not None and config.entrypoint:
        # An ACI command replaces the image's entrypoint; Prefect puts its entrypoint back in front.
        command.insert(0, config.entrypoint)
    if command is not None:
        main_properties["command"] = command
    else:
        main_properties.pop("command", None)
    requests: dict[str, Any] = {"cpu": config.cpu, "memoryInGB": config.memory}
    if config.gpu_count is not None:
        requests["gpu"] = {"count": config.gpu_count, "sku": config.gpu_sku}
    main_properties["resources"] = {**(main_properties.get("resources") or {}), "requests": requests}
    main_properties["environmentVariables"] = _environment(
        main_properties.get("environmentVariables") or [], config.env
    )
    main["properties"] = main_properties
    containers[0] = main

    properties["containers"] = containers
    properties["osType"] = properties.get("osType") or "Linux"
    properties["restartPolicy"] = "Never"  # one run, one execution: a failed flow is not run again by Azure
    if isinstance(config.image_registry, DockerRegistry):
        properties["imageRegistryCredentials"] = [
            {
                "server": config.image_registry.registry_url,
                "username": config.image_registry.username,
                "password": config.image_registry.password,
            }
        ]
    elif isinstance(config.image_registry, ACRManagedIdentity):
        properties["imageRegistryCredentials"] = [
            {"server": config.image_registry.registry_url, "identity": config.image_registry.identity}
        ]
    if config.subnet_ids:
        properties["subnetIds"] = [{"id": subnet} for subnet in config.subnet_ids]
    if config.dns_servers:
        properties["dnsConfig"] = {"nameServers": list(config.dns_servers)}

    body: dict[str, Any] = {
        "location": _literal(base.get("location")) or location,
        "tags": {**(base.get("tags") or {}), **_tags(config)},
        "properties": properties,
    }
    if config.identities:
        body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {i: {} for i in config.identities}}
    elif isinstance(base.get("identity"), dict):
        body["identity"] = base["identity"]
    return body


def template_location(config: ACIJobConfiguration) -> str | None:
    """A literal location in the job's ARM template, which spares the resource group lookup; else None."""
    if config.arm_template is None:
        return None
    location = _literal(_template_group(config.arm_template).get("location"))
    return location if isinstance(location, str) and location else None
