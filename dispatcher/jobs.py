"""The job a run submits: rendered from its pool's template, checked by the pool type's provider.

One path for the three places that need it: the dispatcher before it submits, `deployment render` (the same
job, masked, never submitted) and the check a pool's template gets when it is written (its defaults, and a
sample for each variable a deployment must give, rendered through the provider's `validate`, which is pure).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import templating
from .errors import ConfigError, InvalidInput, TemplateError
from .providers.base import Providers

log = logging.getLogger("pushpool.jobs")

__all__ = ["RunContext", "build_job", "check_template", "mask", "provider_problem", "start_timeout"]

MASK = "****"

_SECRET_NAME = re.compile(r"token|secret|password|passwd|private|credential|api_?key|access_key|auth", re.IGNORECASE)
"""Names whose values `mask` hides: env variables, container environment entries, credentials variables."""


@dataclass(frozen=True)
class RunContext:
    """What the dispatcher adds to a run's job (SPEC §4): its identity, parameters and callback."""

    run_id: str
    deployment: str
    pool: str
    queue: str
    parameters: dict[str, Any] | None
    """None when the store keeps them apart and the job reads them by reference (over the inline size)."""
    callback_url: str
    callback_token: str
    run_name: str


SAMPLE_CONTEXT = RunContext(
    run_id="00000000-0000-4000-8000-000000000000",
    deployment="template-check",
    pool="template-check",
    queue="default",
    parameters={},
    callback_url="http://127.0.0.1/callbacks/runs/00000000-0000-4000-8000-000000000000",
    callback_token="template-check",
    run_name="template-check",
)
"""The run a template is checked with when it is written: no real run exists yet."""


def build_job(
    template: dict[str, Any],
    pool_vars: dict[str, Any] | None,
    deployment_vars: dict[str, Any] | None,
    run_vars: dict[str, Any] | None,
    *,
    environ: Mapping[str, str],
    context: RunContext,
) -> dict[str, Any]:
    """Resolve the job variables (required enforced), render the template and add the run's context.

    A pool without a job configuration (an empty template) has no job to render: a TemplateError says so.
    """
    if not isinstance(template.get("job_configuration"), dict) or not template["job_configuration"]:
        raise TemplateError(
            f"work pool {context.pool!r} has no base job template (its job_configuration is missing or empty), so "
            f"there is no job to render; set one with `pushpool work-pool update {context.pool} "
            "--base-job-template FILE` (`pushpool work-pool get-default-base-job-template --type TYPE` prints the "
            "default)."
        )
    values = templating.resolve_job_variables(template, pool_vars, deployment_vars, run_vars)
    job = templating.render(template.get("job_configuration", {}), values, environ)
    return templating.inject_run_context(
        job,
        run_id=context.run_id,
        deployment=context.deployment,
        pool=context.pool,
        queue=context.queue,
        parameters=context.parameters,
        callback_url=context.callback_url,
        callback_token=context.callback_token,
        run_name=context.run_name,
    )


START_TIMEOUT_VARIABLE = "task_start_timeout_seconds"
"""Prefect's variable (ECS, ACI) bounding how long a launched job may take to start."""


def start_timeout(
    template: dict[str, Any],
    pool_vars: dict[str, Any] | None,
    deployment_vars: dict[str, Any] | None,
    run_vars: dict[str, Any] | None,
) -> float | None:
    """A run's `task_start_timeout_seconds`, if its pool's template declares it and it is positive, else None.

    Merged as for rendering but not validated: the reconciler asks this of every PENDING run on every pass, and
    what a run was rendered with was validated when it was submitted.
    """
    properties = template.get("variables", {}).get("properties", {})
    if not isinstance(properties, dict) or START_TIMEOUT_VARIABLE not in properties:
        return None
    merged = templating.merge_job_variables(
        templating.variable_defaults(template), pool_vars, deployment_vars, run_vars
    )
    value = merged.get(START_TIMEOUT_VARIABLE)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def provider_problem(pool_type: str, providers: Providers | None = None) -> str | None:
    """Why the provider of a pool type cannot be loaded here (its extra is missing), or None when it can."""
    try:
        (providers or Providers()).get(pool_type)
    except ConfigError as exc:
        return str(exc)
    return None


def check_template(
    pool_type: str,
    template: dict[str, Any],
    job_variables: dict[str, Any] | None,
    *,
    providers: Providers | None = None,
) -> str | None:
    """Check a pool's template as it is written; raise InvalidInput naming the field of a job that cannot be valid.

    The template's shape and schema are checked, then its job is rendered with the variables' defaults (and the
    pool's job variables) through the provider's model, as a run would be. A required variable without a
    value gets a sample of its type, and so does each one the provider then says it needs (`image: field
    required`): a template that a deployment's values make valid is accepted; one that fails for any other
    reason is refused with the provider's sentence. When the provider cannot be loaded here, the template
    is stored unchecked by it and the returned warning says why (the dispatcher, where the extra is installed,
    checks every job it submits).
    """
    templating.validate_template(template)
    templating.validate_job_variables(template, job_variables or {}, field="pool job_variables", enforce_required=False)
    problem = provider_problem(pool_type, providers)
    if problem is not None:
        warning = f"{problem}; the template was stored without checking its job against the {pool_type} model."
        log.warning("%s", warning)
        return warning
    provider = (providers or Providers()).get(pool_type)
    # The names `{{ $NAME }}` may read, as validate_template allowed them, but none of this process's values:
    # those are the dispatcher's, and its placeholders render as unset here.
    environ = {templating.TEMPLATE_ENV: os.environ.get(templating.TEMPLATE_ENV, "")}
    wanted: set[str] = set()
    while True:
        samples = _samples(template, job_variables or {}, wanted)
        try:
            job = build_job(template, job_variables, samples, None, environ=environ, context=SAMPLE_CONTEXT)
            provider.validate(job)
            return None
        except InvalidInput as exc:
            error = exc
        # The provider asks for a value no default gives (an image, say): a deployment will give it.
        named = {name for name in _unset(template, job_variables or {}) if _names(str(error), name)} - wanted
        if not named:
            break
        wanted |= named
    assert error is not None
    raise InvalidInput(
        f"the base job template cannot produce a valid {pool_type} job: {str(error).rstrip('.')} "
        f"(rendered with its defaults); correct job_configuration or the variables' defaults."
    ) from None


def _unset(template: dict[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Variables that neither a default nor the pool's job variables give a value (credentials aside)."""
    defaults = templating.variable_defaults(template)
    properties: dict[str, Any] = template["variables"].get("properties", {})
    return [
        name
        for name in properties
        if name not in defaults and name not in given and name not in templating.CREDENTIAL_VARIABLES
    ]


def _names(message: str, name: str) -> bool:
    """Whether a provider's message blames `name` (`name: ...`, `name.x: ...`, one of its `; `-joined parts)."""
    return re.search(rf"(^|; ){re.escape(name)}(\.|\[|:)", message) is not None


def _samples(template: dict[str, Any], given: Mapping[str, Any], wanted: set[str]) -> dict[str, Any]:
    """A value for each required variable without one, and for each in `wanted`: what a deployment would give."""
    variables = template["variables"]
    required = set(variables.get("required", [])) | wanted
    samples: dict[str, Any] = {}
    for name in _unset(template, given):
        schema = variables["properties"][name]
        if name not in required:
            continue
        sample = _sample(schema if isinstance(schema, dict) else {}, variables)
        # A sample its schema refuses (a pattern, say) is left out rather than blamed on the template.
        if sample is not None and templating.fits(template, name, sample):
            samples[name] = sample
    return samples


def _sample(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A plausible value of a variable's schema: its first example or enum value, else one of its type."""
    if schema.get("examples"):
        return copy.deepcopy(schema["examples"][0])
    if schema.get("enum"):
        return copy.deepcopy(schema["enum"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None:
        for key in ("anyOf", "oneOf", "allOf"):
            if schema.get(key):
                first = schema[key][0]
                return _sample(_resolved(first, root), root) if isinstance(first, dict) else None
        return None
    minimum = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    if kind == "string":
        return "pushpool-sample"
    if kind == "integer":
        return max(int(minimum) + (1 if "exclusiveMinimum" in schema else 0), 1)
    if kind == "number":
        return max(float(minimum), 1.0)
    if kind == "boolean":
        return False
    if kind == "array":
        # Without an items schema any item goes; a string is the likeliest (a command's arguments).
        item = _sample(_resolved(schema.get("items") or {"type": "string"}, root), root)
        return [item] if item is not None and schema.get("maxItems") != 0 else []
    if kind == "object":
        return {}
    return None


def _resolved(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """A `#/...` reference inside the variables schema, followed once (validate_template made sure it resolves)."""
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema if isinstance(schema, dict) else {}
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def mask(job: Any) -> Any:
    """A copy of a job with credentials and tokens replaced by `****`, for showing it to people."""
    if isinstance(job, dict):
        out: dict[Any, Any] = {}
        named = job.get("name") if isinstance(job.get("name"), str) else None
        for key, value in job.items():
            credentials = key in templating.CREDENTIAL_VARIABLES and value not in (None, {})
            if credentials or (isinstance(value, str) and _SECRET_NAME.search(str(key))):
                out[key] = MASK
            elif key == "value" and isinstance(value, str) and named and _SECRET_NAME.search(named):
                out[key] = MASK  # a {"name": ..., "value": ...} entry of a container's environment
            else:
                out[key] = mask(value)
        return out
    if isinstance(job, list):
        return [mask(item) for item in job]
    return copy.deepcopy(job)
