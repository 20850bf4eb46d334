"""`pushpool import prefect --api-url URL`: copy work pools, queues and deployments from a running Prefect server.

The import reads Prefect's REST API (the routes its own client uses: `POST /work_pools/filter`,
`/work_pools/{name}/queues/filter`, `/deployments/filter`, `/flows/filter`, paged by `limit`/`offset`),
builds an apply document from what it read (`build_document`, pure) and hands it to `apply`'s planning:
the same checks, the same plan, nothing written unless the whole document plans, additive and idempotent
(a second import finds everything unchanged). What cannot be carried over is listed with why.

Mapping:
- **Pool type**: `ecs` -> `ecs:push`, `cloud-run-v2` -> `cloud-run-v2:push`, `azure-container-instance` ->
  `azure-container-instance:push`, `process` -> `process`; a type pushpool serves (`*:push`) is kept. Any
  other type (kubernetes, docker, ...) is not carried over, nor are the deployments on it.
- **Pool**: description, paused, concurrency limit, base job template (an empty one, or one pushpool's
  checks refuse, is replaced by pushpool's default template for the type, and that is listed).
- **Queue**: name, priority, concurrency limit, paused, description.
- **Deployment**: name, pool, queue, parameters, job variables, schedules (cron + timezone, interval +
  anchor + timezone, RRULE; `active`), paused (-> schedule_paused), concurrency limit, tags, description.
  Names: pushpool's deployment names are global, Prefect's are unique per flow. A deployment keeps its
  name unless deployments of several flows share it; those become `<flow>-<name>`, which
  `deployment run <flow>/<name>` finds. A deployment without a work pool (`flow.serve`), a schedule with
  its own parameters or `day_or: false`, and Prefect's entrypoint, pull steps, triggers and versions are
  not carried over and are listed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import templating
from .apply import ApplyPlan, execute, plan_apply
from .errors import ConfigError, InvalidInput, TemplateError
from .models import check_name
from .pool_types import KNOWN_TYPES, default_template
from .store.base import Store

TYPE_MAP = {
    "ecs": "ecs:push",
    "cloud-run-v2": "cloud-run-v2:push",
    "azure-container-instance": "azure-container-instance:push",
    "process": "process",
}
"""Prefect's worker types and the push type pushpool serves for the same infrastructure."""

PAGE = 200
"""Objects asked for per request: Prefect's server caps a page at PREFECT_API_DEFAULT_LIMIT (200)."""

TIMEOUT = 30.0


class PrefectAPI:
    """A small client for the few routes of Prefect's REST API the import reads (urllib, no new dependency)."""

    def __init__(self, url: str, api_key: str | None = None, *, page: int = PAGE, timeout: float = TIMEOUT) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(
                f"--api-url must be an http:// or https:// URL such as http://127.0.0.1:4200/api, got {url!r}."
            )
        self.url = url.rstrip("/")
        self._key = api_key
        self.page = page
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._key:
            request.add_header("Authorization", f"Bearer {self._key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - the user's URL
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            hint = " (is --api-url Prefect's API URL, ending in /api?)" if exc.code == 404 else ""
            raise ConfigError(
                f"Prefect's API at {self.url} answered {method} {path} with HTTP {exc.code}{hint}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"cannot reach Prefect's API at {self.url} ({reason}); "
                "start it (`prefect server start`) or fix --api-url"
            ) from None
        except ValueError:
            raise ConfigError(
                f"Prefect's API at {self.url} answered {method} {path} with something that is not JSON"
            ) from None

    def check(self) -> None:
        """GET /health: fails early, in one sentence, when the URL is not a Prefect API."""
        self._request("GET", "/health")

    def filtered(self, path: str) -> list[dict[str, Any]]:
        """Every object a `POST .../filter` route returns, page by page."""
        found: list[dict[str, Any]] = []
        while True:
            batch = self._request("POST", path, {"limit": self.page, "offset": len(found)})
            if not isinstance(batch, list):
                raise ConfigError(
                    f"Prefect's API at {self.url} answered POST {path} with {type(batch).__name__}, not a list"
                )
            found.extend(item for item in batch if isinstance(item, dict))
            if len(batch) < self.page:
                return found


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"null")
    except ValueError:
        return exc.reason or "no details"
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail if detail is not None else body)[:300]


@dataclass(frozen=True)
class PrefectState:
    """What the import read from Prefect's server."""

    pools: list[dict[str, Any]]
    queues: dict[str, list[dict[str, Any]]]
    deployments: list[dict[str, Any]]
    flows: dict[str, str]
    """flow id -> flow name"""


def read_server(api: PrefectAPI) -> PrefectState:
    """Read pools, their queues, deployments and flow names from a Prefect server."""
    api.check()
    pools = api.filtered("/work_pools/filter")
    queues = {
        p["name"]: api.filtered(f"/work_pools/{urllib.parse.quote(str(p['name']), safe='')}/queues/filter")
        for p in pools
        if p.get("type") in TYPE_MAP or p.get("type") in KNOWN_TYPES
    }
    deployments = api.filtered("/deployments/filter")
    flows = {str(f.get("id")): str(f.get("name")) for f in api.filtered("/flows/filter")}
    return PrefectState(pools, queues, deployments, flows)


def build_document(state: PrefectState) -> tuple[dict[str, Any], list[str]]:
    """The apply document for what Prefect has, and one note per thing not carried over (with why)."""
    notes: list[str] = []
    pools: list[dict[str, Any]] = []
    carried: dict[str, str] = {}  # Prefect pool name -> pushpool type
    for pool in sorted(state.pools, key=lambda p: str(p.get("name"))):
        spec = _pool(pool, state.queues.get(str(pool.get("name")), []), notes)
        if spec is not None:
            pools.append(spec)
            carried[spec["name"]] = spec["type"]
    names = _deployment_names(state)
    deployments = []
    for deployment in sorted(state.deployments, key=lambda d: (names.get(str(d.get("id")), ""), str(d.get("id")))):
        spec = _deployment(deployment, names.get(str(deployment.get("id"))), carried, state.flows, notes)
        if spec is not None:
            deployments.append(spec)
    return {"work_pools": pools, "deployments": deployments}, notes


def _pool(pool: Mapping[str, Any], queues: list[dict[str, Any]], notes: list[str]) -> dict[str, Any] | None:
    name, prefect_type = str(pool.get("name")), str(pool.get("type"))
    pool_type = TYPE_MAP.get(prefect_type, prefect_type if prefect_type in KNOWN_TYPES else None)
    if pool_type is None:
        notes.append(
            f"work pool {name!r}: type {prefect_type!r} has no push type in pushpool (it serves "
            f"{', '.join(KNOWN_TYPES)}); the pool and its deployments are not carried over"
        )
        return None
    spec: dict[str, Any] = {
        "name": name,
        "type": pool_type,
        "paused": bool(pool.get("is_paused")),
        "concurrency_limit": pool.get("concurrency_limit"),
    }
    if pool.get("description"):
        spec["description"] = pool["description"]
    template = pool.get("base_job_template") or {}
    why = _template_refusal(template)
    if why is None:
        spec["base_job_template"] = template
    else:
        try:
            default_template(pool_type)
        except (ConfigError, InvalidInput):
            notes.append(
                f"work pool {name!r}: its base job template cannot be used ({why}) and type {pool_type} has no "
                "default; not carried over"
            )
            return None
        notes.append(
            f"work pool {name!r}: base job template not carried over ({why}); "
            f"pushpool's default for {pool_type} is used"
        )
    spec["queues"] = [_queue(q) for q in sorted(queues, key=lambda q: (q.get("priority") or 0, str(q.get("name"))))]
    return spec


def _template_refusal(template: Mapping[str, Any]) -> str | None:
    """Why pushpool's template checks refuse Prefect's template (None when they accept it)."""
    if not template:
        return "it is empty"
    try:
        templating.validate_template(dict(template))
    except (TemplateError, InvalidInput) as exc:
        return str(exc).rstrip(".")
    return None


def _queue(queue: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": queue.get("name"),
        "priority": queue.get("priority"),
        "concurrency_limit": queue.get("concurrency_limit"),
        "paused": bool(queue.get("is_paused")),
    }
    if queue.get("description"):
        spec["description"] = queue["description"]
    return spec


def _deployment_names(state: PrefectState) -> dict[str, str]:
    """Deployment id -> pushpool name: its own, or `<flow>-<name>` where several flows use the name."""
    counts = Counter(str(d.get("name")) for d in state.deployments)
    names = {}
    for d in state.deployments:
        name = str(d.get("name"))
        if counts[name] > 1:
            name = f"{state.flows.get(str(d.get('flow_id')), 'flow')}-{name}"
        names[str(d.get("id"))] = name
    return names


_NOT_CARRIED = {
    "entrypoint": "the job's command decides what runs",
    "pull_steps": "pushpool runs no pull steps",
    "triggers": "pushpool has no event triggers",
    "version": "pushpool keeps no deployment versions",
}


def _deployment(
    deployment: Mapping[str, Any],
    name: str | None,
    pools: Mapping[str, str],
    flows: Mapping[str, str],
    notes: list[str],
) -> dict[str, Any] | None:
    flow = flows.get(str(deployment.get("flow_id")), "?")
    label = f"deployment {flow}/{deployment.get('name')}"
    pool = deployment.get("work_pool_name")
    if not pool:
        notes.append(f"{label}: it has no work pool (it is served by `flow.serve`); not carried over")
        return None
    if pool not in pools:
        notes.append(f"{label}: its work pool {pool!r} is not carried over; neither is the deployment")
        return None
    try:
        check_name("deployment", name or "")
    except ValueError as exc:
        notes.append(f"{label}: {exc}; not carried over")
        return None
    spec: dict[str, Any] = {
        "name": name,
        "pool": pool,
        "queue": deployment.get("work_queue_name") or "default",
        "parameters": deployment.get("parameters") or {},
        "job_variables": deployment.get("job_variables") or {},
        "tags": list(deployment.get("tags") or []),
        "schedule_paused": bool(deployment.get("paused")),
        "concurrency_limit": _limit(deployment, label, notes),
        "schedules": _schedules(deployment.get("schedules") or [], label, notes),
    }
    if deployment.get("description"):
        spec["description"] = deployment["description"]
    if name != deployment.get("name"):
        notes.append(
            f"{label}: named {name!r}, since deployments of several flows are named {deployment.get('name')!r}"
        )
    for key, why in _NOT_CARRIED.items():
        if deployment.get(key):
            notes.append(f"{label}: {key} not carried over ({why})")
    return spec


def _limit(deployment: Mapping[str, Any], label: str, notes: list[str]) -> int | None:
    limit = deployment.get("concurrency_limit")
    gcl = deployment.get("global_concurrency_limit")
    if limit is None and isinstance(gcl, Mapping):
        limit = gcl.get("limit")
    options = deployment.get("concurrency_options")
    strategy = options.get("collision_strategy") if isinstance(options, Mapping) else None
    if limit is not None and strategy not in (None, "ENQUEUE"):
        notes.append(f"{label}: collision_strategy {strategy} not carried over; runs over the limit wait (ENQUEUE)")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _schedules(schedules: list[Any], label: str, notes: list[str]) -> list[dict[str, Any]]:
    out = []
    for index, item in enumerate(schedules, 1):
        inner = item.get("schedule") if isinstance(item, Mapping) else None
        if not isinstance(inner, Mapping):
            notes.append(f"{label}: schedule {index} has no cron, interval or rrule; not carried over")
            continue
        if item.get("parameters"):
            notes.append(
                f"{label}: schedule {index} has parameters of its own, which pushpool's schedules lack; "
                "not carried over"
            )
            continue
        if inner.get("day_or") is False:
            notes.append(f"{label}: schedule {index} has day_or false, which pushpool's cron lacks; not carried over")
            continue
        keys = (
            ("cron", "timezone")
            if "cron" in inner
            else ("interval", "anchor_date", "timezone")
            if "interval" in inner
            else ("rrule", "timezone")
        )
        spec = {k: inner[k] for k in keys if inner.get(k) is not None}
        if item.get("active") is False:
            spec["active"] = False
        out.append(spec)
    return out


def plan_import(store: Store, url: str, *, api_key: str | None = None, api: PrefectAPI | None = None) -> ApplyPlan:
    """Read the Prefect server at `url` and plan the copy with `apply`'s planning; nothing is written.

    The plan's notes list what is not carried over, with why.
    """
    state = read_server(api or PrefectAPI(url, api_key))
    document, notes = build_document(state)
    try:
        plan = plan_apply(store, document, Path.cwd())
    except InvalidInput as exc:
        raise type(exc)(f"the import from {url} cannot be applied: {exc}") from None
    return replace(plan, notes=notes)


def import_prefect(
    store: Store, url: str, *, dry_run: bool, api_key: str | None = None, api: PrefectAPI | None = None
) -> ApplyPlan:
    """`plan_import`, then, unless `dry_run`, the plan carried out by apply's `execute`."""
    plan = plan_import(store, url, api_key=api_key, api=api)
    if not dry_run:
        execute(store, plan)
    return plan
