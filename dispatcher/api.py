"""The HTTP API as plain functions (SPEC §7), shared by every adapter: `pushpool serve`, Lambda, Azure Functions.

An adapter turns its event into a `Request`, calls `Api.handle` and shapes the `Response` back; it holds no
logic. Routes call the core (`pools`, `deployments`, `preview`, `cancelling`, `callbacks`) and re-implement
no rule. The callback route is authenticated by its HMAC signature; every other route by a bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from . import deployments as deployment_ops
from . import json_input
from . import pools as pool_ops
from .callbacks import apply_callback, parse_json_body, run_parameters
from .cancelling import cancel_run, get_run
from .errors import InvalidInput, PushpoolError
from .models import FlowRun, validation_sentence
from .preview import MAX_PREVIEW_HOURS, preview_pool
from .schedules import Schedule, parse_schedule
from .signing import SIGNATURE_HEADER
from .states import StateType
from .store.base import DEFAULT_LIST_LIMIT, Store
from .wakeups import (
    RUN_CANCELLED,
    RUN_CREATED,
    SLOT_FREED,
    NoWakeups,
    Wakeups,
    deployment_wake_reason,
    left_active,
    room_opened,
)

log = logging.getLogger(__name__)

API_TOKEN_ENV = "PUSHPOOL_API_TOKEN"
UI_PREFIX = "/ui"
"""Where the dashboard lives (dispatcher/ui)."""
DEFAULT_RUN_LIMIT = 50
"""Flow runs listed when `limit` is not given (as `flow-run ls`)."""


# requests and responses -----------------------------------------------------------------------------------
class Headers(Mapping[str, str]):
    """Header names are case-insensitive (RFC 9110); adapters hand them over in whatever case they got."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (headers or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Request:
    """One HTTP request: `path` as sent (still percent-encoded, no query string), `query` one value per name."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    scheme: str = "http"
    """How the client reached the adapter: "https" behind API Gateway or Azure, "http" for `pushpool serve`."""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))
        object.__setattr__(self, "method", self.method.upper())


@dataclass
class Response:
    """An answer: JSON by default; `body` None for no body (204, 304, a redirect).

    A `str` or `bytes` body is sent as it is, with `content_type` (the dashboard's HTML, its stylesheet and
    script), so every adapter passes pages through without knowing about them.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        """The body as bytes, so every adapter writes the same JSON (or page)."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, ensure_ascii=False).encode()

    def all_headers(self) -> dict[str, str]:
        """The headers to send, Content-Type included when there is a body."""
        if self.body is None:
            return dict(self.headers)
        return {"Content-Type": self.content_type, **self.headers}


def _json(data: Any) -> Any:
    """Models as `model_dump(mode="json")` (computed fields such as `status` included), dataclasses likewise."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [_json(item) for item in data]
    return to_jsonable_python(data)


RETRY_AFTER_SECONDS = 30
"""What a 503 tells a client (a job's callback reporter, an API caller) to wait before trying again."""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"error": message}, headers or {})


# request bodies -------------------------------------------------------------------------------------------
class _Body(BaseModel):
    # Strict and closed: "5" is not a number and an unknown field is named back rather than ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class PoolCreate(_Body):
    name: str
    type: str = "process"
    paused: bool = False
    base_job_template: dict[str, Any] | None = None
    job_variables: dict[str, Any] | None = None
    concurrency_limit: int | None = None
    description: str | None = None
    set_as_default: bool = False
    overwrite: bool = False


class PoolUpdate(_Body):
    base_job_template: dict[str, Any] | None = None
    job_variables: dict[str, Any] | None = None
    description: str | None = None
    concurrency_limit: int | None = Field(default=None, description="null clears the limit; absent keeps it")
    paused: bool | None = None


class QueueCreate(_Body):
    name: str
    priority: int | None = None
    concurrency_limit: int | None = None
    description: str | None = None
    paused: bool = False


class QueueUpdate(_Body):
    priority: int | None = None
    description: str | None = None
    concurrency_limit: int | None = Field(default=None, description="null clears the limit; absent keeps it")
    paused: bool | None = None


class DeploymentCreate(_Body):
    name: str
    pool: str | None = None
    queue: str | None = None
    job_variables: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    schedules: list[dict[str, Any]] | None = None
    concurrency_limit: int | None = None
    tags: list[str] | None = None
    description: str | None = None


class DeploymentUpdate(_Body):
    queue: str | None = None
    job_variables: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    schedules: list[dict[str, Any]] | None = None
    schedule_paused: bool | None = None
    concurrency_limit: int | None = Field(default=None, description="null clears the limit; absent keeps it")
    tags: list[str] | None = None
    description: str | None = None


class RunCreate(_Body):
    parameters: dict[str, Any] | None = None
    job_variables: dict[str, Any] | None = None
    scheduled_time: AwareDatetime | None = None


def _limit_change(body: PoolUpdate | QueueUpdate | DeploymentUpdate) -> int | None:
    """An explicit null clears a limit, an absent field keeps it: the core tells them apart by UNSET."""
    return body.concurrency_limit if "concurrency_limit" in body.model_fields_set else pool_ops.UNSET


def _schedules(raw: list[dict[str, Any]] | None) -> list[Schedule] | None:
    if raw is None:
        return None
    parsed: list[Schedule] = []
    for i, item in enumerate(raw):
        try:
            parsed.append(parse_schedule(item))
        except ValidationError as exc:
            raise InvalidInput(f"schedules[{i}]: {validation_sentence(exc, 'schedule')}") from None
        except ValueError as exc:
            raise InvalidInput(f"schedules[{i}]: {exc}.") from None
    return parsed


# query parameters -----------------------------------------------------------------------------------------
def _check_query(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}; allowed: {names}.")


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise InvalidInput(f"query parameter {name} must be a whole number from {low} to {high}, got {text!r}.")
    return int(text)


def _hours_param(query: Mapping[str, str]) -> float:
    text = query.get("hours")
    if text is None:
        return 1.0
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not 0 < hours <= MAX_PREVIEW_HOURS:
        raise InvalidInput(
            f"query parameter hours must be a number of hours above 0 and at most {MAX_PREVIEW_HOURS} (a year), "
            f"got {text!r}."
        )
    return hours


def _state_param(query: Mapping[str, str]) -> StateType | None:
    text = query.get("state")
    if text is None:
        return None
    try:
        return StateType(text.upper())
    except ValueError:
        allowed = ", ".join(s.value for s in StateType)
        raise InvalidInput(f"query parameter state must be one of {allowed}, got {text!r}.") from None


# routes ---------------------------------------------------------------------------------------------------
Handler = Callable[["Api", Request, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    management: bool = True
    query: tuple[str, ...] = ()


_ROUTES: list[Route] = []


def route(
    method: str, path: str, *, management: bool = True, query: tuple[str, ...] = ()
) -> Callable[[Handler], Handler]:
    """Register a handler; `{name}` in `path` matches one path segment, handed over URL-decoded."""
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def register(handler: Handler) -> Handler:
        _ROUTES.append(Route(method, pattern, handler, management, query))
        return handler

    return register


class Api:
    """The routes over one store. `api_token` None disables the management routes (callbacks still work).

    `gateway_authorized` is for a deployment where the gateway in front already authorised every management
    call (API Gateway with IAM auth on those routes: SigV4 takes the Authorization header, so no bearer can
    travel with it). Never set it where the function is reachable without that gateway.

    `wakeups` hears of every successful change that lets a run start sooner than the next pass (a run
    created, a slot freed, a pool or queue resumed, a limit raised, a schedule set): `serve` and the cloud
    functions start a pass on it. A refused request wakes nothing.
    """

    def __init__(
        self,
        store: Store,
        *,
        api_token: str | None,
        gateway_authorized: bool = False,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.store = store
        self.api_token = api_token
        self.gateway_authorized = gateway_authorized
        self.wakeups: Wakeups = wakeups or NoWakeups()

    def wake(self, pool: str | None, reason: str | None) -> None:
        """Pass a wake-up on (`reason` None: nothing to wake for); the change is stored, so this never fails it."""
        if reason is None:
            return
        try:
            self.wakeups.wake(pool, reason)
        except Exception:  # a Wakeups must not raise; if one does, the answer still stands (the tick catches up)
            log.exception("wake-up for pool %s (%s) failed", pool, reason)

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (an unexpected error is a logged 500)."""
        path = request.path.rstrip("/") or "/"
        if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
            # The dashboard has its own routes and cookie authentication; imported on first use, so the API
            # alone (a Lambda answering callbacks) never loads the template engine.
            from .ui import handle_ui

            return handle_ui(self, request, path)
        matches = [(r, m) for r in _ROUTES if (m := r.pattern.match(path))]
        if not matches:
            return error(404, f"no route {path}; see the management API under /work_pools, /deployments, /flow_runs")
        chosen = next(((r, m) for r, m in matches if r.method == request.method), None)
        if chosen is None:
            allowed = ", ".join(sorted({r.method for r, _ in matches}))
            return error(405, f"{request.method} is not allowed on {path}; use {allowed}", {"Allow": allowed})
        candidate, match = chosen
        try:
            if candidate.management:
                refused = self._authorize(request)
                if refused is not None:
                    return refused
            _check_query(request.query, candidate.query)
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            return candidate.handler(self, request, params)
        except PushpoolError as exc:
            # 503 is a store that cannot take the write now (a full disk, a lock, throttling): say when to retry.
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.http_status == 503 else None
            return error(exc.http_status, str(exc), retry)
        except ValidationError as exc:
            return error(422, validation_sentence(exc, "request"))
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, path)
            return error(500, "internal error; see the server log")

    def _authorize(self, request: Request) -> Response | None:
        if self.gateway_authorized:
            return None
        if self.api_token is None:
            return error(403, f"management API disabled: set {API_TOKEN_ENV}")
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest: the time taken must not tell how much of a guessed token was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_token.encode()):
            return error(401, "missing or wrong bearer token; send Authorization: Bearer <PUSHPOOL_API_TOKEN>")
        return None


def _ok(data: Any, status: int = 200) -> Response:
    return Response(status, _json(data))


# callbacks ------------------------------------------------------------------------------------------------
@route("POST", "/callbacks/runs/{run_id}", management=False)
def _callback(api: Api, request: Request, p: dict[str, str]) -> Response:
    run = apply_callback(api.store, p["run_id"], request.body, request.headers.get(SIGNATURE_HEADER))
    api.wake(run.pool, SLOT_FREED if left_active(run) else None)
    return _ok(callback_answer(run))


@route("GET", "/callbacks/runs/{run_id}/parameters", management=False)
def _run_parameters(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(run_parameters(api.store, p["run_id"], request.headers.get(SIGNATURE_HEADER)))


def callback_answer(run: FlowRun) -> dict[str, Any]:
    """Where the run stands, and whether this report moved it (False: recorded as a no-op)."""
    last = run.state_history[-1] if run.state_history else None
    return {
        "id": run.id,
        "state": run.state.value,
        "state_name": run.state_name,
        "applied": bool(last and last.applied),
    }


# work pools -----------------------------------------------------------------------------------------------
@route("GET", "/work_pools")
def _pools(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(api.store.list_pools())


@route("POST", "/work_pools")
def _pool_create(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(PoolCreate, request.body)
    return _ok(pool_ops.create_pool(api.store, **body.model_dump()), 201)


@route("GET", "/work_pools/{pool}")
def _pool(api: Api, request: Request, p: dict[str, str]) -> Response:
    pool = pool_ops.get_pool(api.store, p["pool"])
    return _ok({**_json(pool), "status_reason": pool_ops.status_reason(pool)})


@route("PATCH", "/work_pools/{pool}")
def _pool_update(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(PoolUpdate, request.body)
    fields = body.model_dump(exclude={"concurrency_limit"})
    before = pool_ops.get_pool(api.store, p["pool"])
    after = pool_ops.update_pool(api.store, p["pool"], concurrency_limit=_limit_change(body), **fields)
    api.wake(after.name, room_opened(before, after))
    return _ok(after)


@route("DELETE", "/work_pools/{pool}")
def _pool_delete(api: Api, request: Request, p: dict[str, str]) -> Response:
    pool_ops.delete_pool(api.store, p["pool"])
    return Response(204)


@route("POST", "/work_pools/{pool}/pause")
def _pool_pause(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(pool_ops.update_pool(api.store, p["pool"], paused=True))


@route("POST", "/work_pools/{pool}/resume")
def _pool_resume(api: Api, request: Request, p: dict[str, str]) -> Response:
    before = pool_ops.get_pool(api.store, p["pool"])
    after = pool_ops.update_pool(api.store, p["pool"], paused=False)
    api.wake(after.name, room_opened(before, after))
    return _ok(after)


@route("GET", "/work_pools/{pool}/preview", query=("hours", "queue"))
def _pool_preview(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(preview_pool(api.store, p["pool"], _hours_param(request.query), queue=request.query.get("queue")))


# work queues ----------------------------------------------------------------------------------------------
@route("GET", "/work_pools/{pool}/queues")
def _queues(api: Api, request: Request, p: dict[str, str]) -> Response:
    pool_ops.get_pool(api.store, p["pool"])
    return _ok(api.store.list_queues(p["pool"]))


@route("POST", "/work_pools/{pool}/queues")
def _queue_create(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(QueueCreate, request.body)
    return _ok(pool_ops.create_queue(api.store, p["pool"], **body.model_dump()), 201)


@route("GET", "/work_pools/{pool}/queues/{queue}")
def _queue(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(pool_ops.get_queue(api.store, p["pool"], p["queue"]))


@route("PATCH", "/work_pools/{pool}/queues/{queue}")
def _queue_update(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(QueueUpdate, request.body)
    fields = body.model_dump(exclude={"concurrency_limit"})
    before = pool_ops.get_queue(api.store, p["pool"], p["queue"])
    queue = pool_ops.update_queue(api.store, p["pool"], p["queue"], concurrency_limit=_limit_change(body), **fields)
    api.wake(queue.pool, room_opened(before, queue))
    return _ok(queue)


@route("DELETE", "/work_pools/{pool}/queues/{queue}")
def _queue_delete(api: Api, request: Request, p: dict[str, str]) -> Response:
    pool_ops.delete_queue(api.store, p["pool"], p["queue"])
    return Response(204)


# deployments ----------------------------------------------------------------------------------------------
@route("GET", "/deployments", query=("pool",))
def _deployments(api: Api, request: Request, p: dict[str, str]) -> Response:
    pool = request.query.get("pool")
    if pool is not None:
        pool_ops.get_pool(api.store, pool)
    return _ok(api.store.list_deployments(pool))


@route("POST", "/deployments")
def _deployment_create(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(DeploymentCreate, request.body)
    fields = body.model_dump(exclude={"schedules"})
    deployment = deployment_ops.create_deployment(api.store, schedules=_schedules(body.schedules), **fields)
    api.wake(deployment.pool, deployment_wake_reason(None, deployment))
    return _ok(deployment, 201)


@route("GET", "/deployments/{name}")
def _deployment(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(deployment_ops.get_deployment(api.store, p["name"]))


@route("PATCH", "/deployments/{name}")
def _deployment_update(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(DeploymentUpdate, request.body)
    fields = body.model_dump(exclude={"schedules", "concurrency_limit"})
    before = deployment_ops.get_deployment(api.store, p["name"])
    deployment = deployment_ops.update_deployment(
        api.store, p["name"], schedules=_schedules(body.schedules), concurrency_limit=_limit_change(body), **fields
    )
    api.wake(deployment.pool, deployment_wake_reason(before, deployment))
    return _ok(deployment)


@route("DELETE", "/deployments/{name}")
def _deployment_delete(api: Api, request: Request, p: dict[str, str]) -> Response:
    deployment_ops.delete_deployment(api.store, p["name"])
    return Response(204)


@route("POST", "/deployments/{name}/runs")
def _deployment_run(api: Api, request: Request, p: dict[str, str]) -> Response:
    body = parse_json_body(RunCreate, request.body)
    run = deployment_ops.run_deployment(
        api.store,
        p["name"],
        parameters=body.parameters,
        job_variables=body.job_variables,
        scheduled_time=body.scheduled_time,
    )
    api.wake(run.pool, RUN_CREATED)
    return _ok(run, 201)


@route("GET", "/deployments/{name}/render", query=("job_variables", "parameters"))
def _deployment_render(api: Api, request: Request, p: dict[str, str]) -> Response:
    """The job a run would submit (credentials and tokens masked); nothing is submitted or written."""
    job = deployment_ops.render_deployment(
        api.store,
        p["name"],
        job_variables=_json_object_param(request.query, "job_variables"),
        parameters=_json_object_param(request.query, "parameters"),
    )
    return _ok(job)


def _json_object_param(query: Mapping[str, str], name: str) -> dict[str, Any] | None:
    text = query.get(name)
    if text is None:
        return None
    value = json_input.loads(text, f"query parameter {name}")
    if not isinstance(value, dict):
        raise InvalidInput(f'query parameter {name} must be a JSON object like {{"key": "value"}}.')
    return value


# flow runs ------------------------------------------------------------------------------------------------
@route("GET", "/flow_runs", query=("pool", "queue", "state", "limit"))
def _runs(api: Api, request: Request, p: dict[str, str]) -> Response:
    q = request.query
    pool, queue, state = q.get("pool"), q.get("queue"), _state_param(q)
    limit = _int_param(q, "limit", DEFAULT_RUN_LIMIT, 1, DEFAULT_LIST_LIMIT)
    if pool is not None:
        pool_ops.get_pool(api.store, pool)
        if queue is not None:
            pool_ops.get_queue(api.store, pool, queue)
    names = [pool] if pool is not None else [w.name for w in api.store.list_pools()]
    runs = [r for name in names for r in api.store.list_runs(name, queue=queue, state=state, limit=limit)]
    # Each pool's page is newest first; merged, the newest `limit` across pools are kept (as `flow-run ls`).
    return _ok(sorted(runs, key=lambda r: (r.scheduled_time, r.id), reverse=True)[:limit])


@route("GET", "/flow_runs/{run_id}")
def _run(api: Api, request: Request, p: dict[str, str]) -> Response:
    return _ok(get_run(api.store, p["run_id"]))


@route("POST", "/flow_runs/{run_id}/cancel")
def _run_cancel(api: Api, request: Request, p: dict[str, str]) -> Response:
    run = cancel_run(api.store, p["run_id"], message="cancelled through the API")
    # A CANCELLING run still holds its slot: the pass stops its infrastructure, which frees it.
    api.wake(run.pool, RUN_CANCELLED if run.state is StateType.CANCELLING else None)
    return _ok(run)
