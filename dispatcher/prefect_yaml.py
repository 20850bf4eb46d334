"""A `prefect.yaml` as an apply document: its deployments section becomes pushpool deployments.

`apply` recognises a prefect.yaml by its shape (`is_prefect_yaml`): no `work_pools` key, and Prefect's
top-level keys (`prefect-version`, `build`, `push`, `pull`, `definitions`) or deployments that name a
`work_pool` or an `entrypoint`. `to_apply_document` turns it into the document `apply` plans, so every
check and the plan are apply's own; nothing is written unless the whole file converts and plans.

Each Prefect deployment field maps to one pushpool field:

    name                                    -> name
    work_pool.name                          -> pool (the pool must exist, or be created first)
    work_pool.work_queue_name               -> queue
    work_pool.job_variables, job_variables  -> job_variables (the deployment-level ones win on a clash)
    parameters, tags, description           -> the same
    paused                                  -> schedule_paused
    concurrency_limit (N or {limit: N})     -> concurrency_limit
    schedules (or Prefect 2's `schedule`)   -> schedules: cron | interval (+ anchor_date) | rrule,
                                               with timezone and active

What pushpool has no use for is reported, not refused: the `build`, `push` and `pull` steps (pushpool runs
no steps: the job's image or command holds the code), `entrypoint` and `flow_name` (the job's command
decides what runs), `version`, `prefect-version`, triggers and the parameter schema. What would change
what runs, or when, is refused with the reason: a schedule's own `parameters`, `day_or: false`, a
`collision_strategy` other than ENQUEUE, and a `{{ step.output }}` or `{{ prefect.* }}` placeholder, which
only Prefect's deploy steps can fill. `{{ $NAME }}` reads the environment, as `prefect deploy` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput

PREFECT_TOP_LEVEL = ("prefect-version", "build", "push", "pull", "definitions")
"""Top-level keys only a prefect.yaml has (with `name` and `deployments`, which alone prove nothing)."""

_IGNORED_TOP: dict[str, str] = {
    "name": "the project's name is not used",
    "prefect-version": "pushpool needs no Prefect",
    "build": "pushpool runs no build steps; build the image before applying",
    "push": "pushpool runs no push steps; push the image before applying",
    "pull": "pushpool runs no pull steps; the job's image or command holds the code",
}
_IGNORED_DEPLOYMENT: dict[str, str] = {
    "entrypoint": "the job's command decides what runs (set `command` in job_variables)",
    "flow_name": "pushpool deployments are named on their own; `deployment run FLOW/NAME` still works",
    "version": "pushpool keeps no deployment versions",
    "version_type": "pushpool keeps no deployment versions",
    "build": "pushpool runs no build steps",
    "push": "pushpool runs no push steps",
    "pull": "pushpool runs no pull steps",
    "triggers": "pushpool has no event triggers; runs come from schedules and `deployment run`",
    "enforce_parameter_schema": "parameters are passed to the job as they are, unchecked",
    "parameter_openapi_schema": "parameters are passed to the job as they are, unchecked",
    "sla": "pushpool has no SLAs",
    "_sla": "pushpool has no SLAs",
    "concurrency_options": "see concurrency_limit",
}
_MAPPED = (
    "name",
    "work_pool",
    "job_variables",
    "parameters",
    "tags",
    "description",
    "paused",
    "concurrency_limit",
    "schedules",
    "schedule",
)
_SCHEDULE_KEYS = ("cron", "interval", "rrule", "timezone", "anchor_date", "active")
_SCHEDULE_IGNORED = {
    "slug": "schedules are numbered, not named",
    "max_scheduled_runs": "the scheduler's horizon is PUSHPOOL_SCHEDULE_HORIZON_SECONDS / _MAX_RUNS",
    "replaces": "schedules are replaced as a list",
    "max_active_runs": "use concurrency_limit",
    "catchup": "missed times are never back-filled",
}
_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def is_prefect_yaml(document: Mapping[str, Any]) -> bool:
    """True when a loaded document has the shape of a prefect.yaml rather than pushpool's apply document."""
    if "work_pools" in document:
        return False
    if any(key in document for key in PREFECT_TOP_LEVEL):
        return True
    deployments = document.get("deployments")
    return isinstance(deployments, list) and any(
        isinstance(d, Mapping) and ("work_pool" in d or "entrypoint" in d) for d in deployments
    )


def to_apply_document(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The apply document for a prefect.yaml's deployments, and one note per thing it leaves out (and why).

    Raises InvalidInput naming the prefect.yaml key path when a value cannot be carried over.
    """
    notes = [f"{key}: {why}" for key, why in _IGNORED_TOP.items() if document.get(key) not in (None, [], {})]
    unknown = sorted(str(k) for k in document if k not in (*_IGNORED_TOP, "deployments", "definitions"))
    if unknown:
        raise InvalidInput(
            f"{unknown[0]}: not a key of a prefect.yaml; the top-level keys are "
            f"{', '.join([*_IGNORED_TOP, 'definitions', 'deployments'])}."
        )
    raw = document.get("deployments")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise InvalidInput(f"deployments: must be a list of deployments, got {type(raw).__name__}.")
    deployments = [_deployment(f"deployments[{i}]", item, notes) for i, item in enumerate(raw)]
    return {"deployments": deployments}, notes


def _deployment(where: str, item: Any, notes: list[str]) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where}: a deployment must be a mapping with name and work_pool.")
    known = (*_MAPPED, *_IGNORED_DEPLOYMENT)
    unknown = sorted(str(k) for k in item if k not in known)
    if unknown:
        raise InvalidInput(
            f"{where}.{unknown[0]}: not a field of a prefect.yaml deployment; the fields are {', '.join(known)}."
        )
    name = item.get("name")
    label = f"{where} ({name!r})" if isinstance(name, str) else where
    for key, why in _IGNORED_DEPLOYMENT.items():
        if item.get(key) not in (None, [], {}):
            notes.append(f"{label}.{key}: {why}")

    out: dict[str, Any] = {"name": name}
    pool = item.get("work_pool")
    if not isinstance(pool, Mapping) or not pool.get("name"):
        raise InvalidInput(
            f"{where}.work_pool.name: required; pushpool runs a deployment on a work pool, so name one "
            "(create it first with `pushpool work-pool create NAME --type T`)."
        )
    extra = sorted(str(k) for k in pool if k not in ("name", "work_queue_name", "job_variables"))
    if extra:
        raise InvalidInput(
            f"{where}.work_pool.{extra[0]}: not a field of work_pool; the fields are name, work_queue_name, "
            "job_variables."
        )
    out["pool"] = pool["name"]
    if pool.get("work_queue_name") is not None:
        out["queue"] = pool["work_queue_name"]
    variables: dict[str, Any] = {}
    for at, given in (
        (f"{where}.work_pool.job_variables", pool.get("job_variables")),
        (f"{where}.job_variables", item.get("job_variables")),
    ):
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise InvalidInput(f"{at}: must be a mapping of job variables, got {type(given).__name__}.")
        variables.update(_filled(at, dict(given)))
    if variables or pool.get("job_variables") is not None or item.get("job_variables") is not None:
        out["job_variables"] = variables
    if item.get("parameters") is not None:
        out["parameters"] = _filled(f"{where}.parameters", item["parameters"])
    for key, target in (("tags", "tags"), ("description", "description"), ("paused", "schedule_paused")):
        if item.get(key) is not None:
            out[target] = item[key]
    if "concurrency_limit" in item:
        out["concurrency_limit"] = _limit(f"{where}.concurrency_limit", item["concurrency_limit"])
    schedules = _schedules(where, item, notes, label)
    if schedules is not None:
        out["schedules"] = schedules
    return out


def _limit(where: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value  # an int, or null (unlimited); apply checks the bounds
    extra = sorted(str(k) for k in value if k not in ("limit", "collision_strategy"))
    if extra:
        raise InvalidInput(
            f"{where}.{extra[0]}: not a field of concurrency_limit; the fields are limit, collision_strategy."
        )
    strategy = value.get("collision_strategy")
    if strategy not in (None, "ENQUEUE"):
        raise InvalidInput(
            f"{where}.collision_strategy: {strategy!r} is not supported; runs over the limit wait their turn "
            "(ENQUEUE), which is the only strategy pushpool has."
        )
    return value.get("limit")


def _schedules(where: str, item: Mapping[str, Any], notes: list[str], label: str) -> list[dict[str, Any]] | None:
    if item.get("schedules") is not None and item.get("schedule") not in (None, {}):
        raise InvalidInput(f"{where}: give schedules or schedule, not both.")
    if item.get("schedules") is not None:
        raw, key = item["schedules"], "schedules"
        if not isinstance(raw, list):
            raise InvalidInput(f"{where}.schedules: must be a list of schedules, got {type(raw).__name__}.")
    elif item.get("schedule") not in (None, {}):
        raw, key = [item["schedule"]], "schedule"
    else:
        return None
    schedules = []
    for index, schedule in enumerate(raw):
        at = f"{where}.{key}[{index}]" if key == "schedules" else f"{where}.schedule"
        if not isinstance(schedule, Mapping):
            raise InvalidInput(f"{at}: a schedule must be a mapping with cron, interval or rrule.")
        if schedule.get("parameters") not in (None, {}):
            raise InvalidInput(
                f"{at}.parameters: a schedule's own parameters are not supported; pushpool's scheduled runs take "
                "the deployment's parameters (make a second deployment for the other parameters)."
            )
        if schedule.get("day_or") is False:
            raise InvalidInput(
                f"{at}.day_or: false is not supported; a cron with both day fields fires when either matches "
                "(day_or: true, Prefect's default)."
            )
        for ignored, why in _SCHEDULE_IGNORED.items():
            if schedule.get(ignored) is not None:
                notes.append(f"{label}.{key}[{index}].{ignored}: {why}")
        allowed = (*_SCHEDULE_KEYS, "day_or", "parameters", *_SCHEDULE_IGNORED)
        extra = sorted(str(k) for k in schedule if k not in allowed)
        if extra:
            raise InvalidInput(f"{at}.{extra[0]}: not a field of a schedule; the fields are {', '.join(allowed)}.")
        schedules.append({k: schedule[k] for k in _SCHEDULE_KEYS if schedule.get(k) is not None})
    return schedules


def _filled(where: str, value: Any) -> Any:
    """`value` with `{{ $NAME }}` read from the environment; any other placeholder is refused."""
    if isinstance(value, dict):
        return {k: _filled(f"{where}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(f"{where}[{i}]", v) for i, v in enumerate(value)]
    if not isinstance(value, str) or "{{" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref.startswith("$"):
            found = os.environ.get(ref[1:])
            if found is None:
                raise InvalidInput(
                    f"{where}: {{{{ {ref} }}}} reads the environment variable {ref[1:]}, which is not set."
                )
            return found
        if ref.startswith("prefect."):
            raise InvalidInput(
                f"{where}: {{{{ {ref} }}}} is a Prefect variable or block, which pushpool cannot read; "
                "write the value itself, or {{ $NAME }} for an environment variable."
            )
        raise InvalidInput(
            f"{where}: {{{{ {ref} }}}} is the output of a deploy step, which pushpool does not run; "
            "write the value itself (for example the image's full name)."
        )

    return _PLACEHOLDER.sub(one, value)


KEY_PATHS = (
    (re.compile(r"(deployments\[\d+\])\.pool\b"), r"\1.work_pool.name"),
    (re.compile(r"(deployments\[\d+\])\.queue\b"), r"\1.work_pool.work_queue_name"),
    (re.compile(r"(deployments\[\d+\])\.schedule_paused\b"), r"\1.paused"),
)
"""apply's key paths rewritten to the prefect.yaml's own, for its error sentences."""


def prefect_words(message: str) -> str:
    """An apply error about the converted document, in the prefect.yaml's terms."""
    for pattern, replacement in KEY_PATHS:
        message = pattern.sub(replacement, message)
    return message.replace(
        "add it under work_pools or fix the name", "create it first with `pushpool work-pool create` or fix the name"
    )
