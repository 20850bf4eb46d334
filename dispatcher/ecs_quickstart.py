"""The deploy files' ECS quickstart as an `ecs:push` pool's defaults (`work-pool create --from-stack STACK`).

With `CreateEcsQuickstart=true`, infra/template.yaml and serverless.yml create an ECS cluster, a task execution
role, a task role and (with `EcsQuickstartNetwork=create`) a VPC. The stack's outputs for them are `ecs:push` job
variables, named in CamelCase because CloudFormation output names are alphanumeric: `ExecutionRoleArn` is
`execution_role_arn`, `NetworkConfiguration` (a JSON text) is `network_configuration`. No other output of the
stack is named after a job variable (tests/test_deploy_files.py), so the outputs that name one are the
quickstart's.

`template_from_stack` reads them (CloudFormation DescribeStacks; boto3 is imported there only) and writes them as
the defaults of the pool's base job template, so the first run needs nothing more. Every problem is an error in
one sentence, raised before anything is written.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, InvalidInput, NotFound, ProviderError
from .pool_types import default_template
from .templating import validate_job_variables

POOL_TYPE = "ecs:push"
REQUIRED = ("cluster", "execution_role_arn", "task_role_arn")
"""What every quickstart stack outputs, whatever its network choice."""

USABLE_STATUSES = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)
"""Stack states whose outputs describe resources that exist (a rolled-back update is back at the last good one)."""

_WORD = re.compile(r"[A-Z][a-z0-9]*")


def variable_name(output_key: str) -> str:
    """The job variable a stack output names: `ExecutionRoleArn` -> `execution_role_arn`."""
    words = _WORD.findall(output_key)
    return "_".join(word.lower() for word in words) if "".join(words) == output_key else ""


def quickstart_variables() -> frozenset[str]:
    """The names a quickstart output may have: the variables of the `ecs:push` default template."""
    return frozenset(default_template(POOL_TYPE)["variables"]["properties"])


def job_variables(outputs: Mapping[str, str], template: dict[str, Any], *, stack: str) -> dict[str, Any]:
    """The quickstart's outputs as job variables of `template`, each converted to its variable's type.

    An output is a text; a variable typed object or array takes it as JSON, boolean as `true`/`false`, integer or
    number as a number. Raises InvalidInput when the stack has no quickstart outputs, or one that the template does
    not declare or whose value its schema refuses.
    """
    names = quickstart_variables()
    found = {variable_name(key): value for key, value in outputs.items() if variable_name(key) in names}
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise InvalidInput(
            f"--from-stack: stack {stack!r} has no ECS quickstart outputs ({', '.join(missing)} missing); deploy it "
            "with CreateEcsQuickstart=true (serverless: --param=createEcsQuickstart=true) first."
        )
    properties: dict[str, Any] = template["variables"].get("properties", {})
    values: dict[str, Any] = {}
    for name, text in sorted(found.items()):
        schema = properties.get(name)
        if not isinstance(schema, dict):
            raise InvalidInput(
                f"--from-stack: the base job template declares no variable {name!r}, which stack {stack!r} sets; "
                "declare it or leave out --base-job-template."
            )
        values[name] = _typed(name, text, schema, stack)
    validate_job_variables(template, values, field=f"--from-stack {stack}", enforce_required=False)
    return values


def _typed(name: str, text: str, schema: Mapping[str, Any], stack: str) -> Any:
    types = schema.get("type")
    kinds = set(types) if isinstance(types, list) else {types}
    if "string" in kinds or types is None:
        return text
    if kinds & {"object", "array"}:
        try:
            return json.loads(text)
        except ValueError:
            raise InvalidInput(
                f"--from-stack: output {name!r} of stack {stack!r} is not JSON; redeploy the stack from this release."
            ) from None
    if "boolean" in kinds and text in ("true", "false"):
        return text == "true"
    if kinds & {"integer", "number"} and re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    wanted = " or ".join(sorted(str(kind) for kind in kinds))
    raise InvalidInput(f"--from-stack: output {name!r} of stack {stack!r} is {text!r}, not a {wanted}.")


def with_defaults(template: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `template` whose variables default to `values` (as Prefect's --provision-infra leaves them)."""
    result = copy.deepcopy(template)
    properties = result["variables"]["properties"]
    for name, value in values.items():
        properties[name] = {**properties[name], "default": copy.deepcopy(value)}
    return result


def template_from_stack(
    stack: str, template: dict[str, Any] | None, *, region: str | None = None, endpoint_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base job template (`template`, else the `ecs:push` default) with the stack's outputs as defaults, and
    those job variables."""
    base = template if template is not None else default_template(POOL_TYPE)
    values = job_variables(read_outputs(stack, region=region, endpoint_url=endpoint_url), base, stack=stack)
    return with_defaults(base, values), values


def read_outputs(stack: str, *, region: str | None = None, endpoint_url: str | None = None) -> dict[str, str]:
    """`{OutputKey: OutputValue}` of a stack in a usable state (DescribeStacks); errors in one sentence."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
    except ModuleNotFoundError:
        raise ConfigError("--from-stack needs pushpool[aws]: pip install 'pushpool[aws]'") from None

    try:
        client = boto3.session.Session().client(
            "cloudformation",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 3}, user_agent_extra="pushpool"),
        )
        where = f"in {client.meta.region_name}"
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except NoRegionError:
        raise ConfigError("--from-stack: no AWS region is configured; pass --region or set AWS_REGION.") from None
    except NoCredentialsError:
        raise ConfigError(
            "--from-stack: no AWS credentials were found; configure them (aws configure, AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID) for the account the stack is in."
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = str(error.get("Message") or exc)
        if error.get("Code") == "ValidationError" and "does not exist" in message:
            raise NotFound(f"--from-stack: stack {stack!r} does not exist {where}; check --region.") from None
        raise ProviderError(
            f"--from-stack: CloudFormation DescribeStacks failed: {message} ({error.get('Code') or 'Unknown'})",
            transient=False,
        ) from None
    except BotoCoreError as exc:
        raise ProviderError(f"--from-stack: CloudFormation DescribeStacks failed: {exc}", transient=False) from None
    if not stacks:
        raise NotFound(f"--from-stack: stack {stack!r} does not exist {where}; check --region.")
    found = stacks[0]
    status = str(found.get("StackStatus") or "")
    if status not in USABLE_STATUSES:
        raise InvalidInput(
            f"--from-stack: stack {stack!r} is {status}, not a complete stack; wait for its deploy to finish (or "
            "fix and redeploy it) and try again."
        )
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in found.get("Outputs") or []}
