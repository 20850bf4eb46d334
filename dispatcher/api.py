"""The HTTP API as plain functions (SPEC §7), shared by every adapter: `pushpool serve`, Lambda, Azure Functions.

An adapter turns its event into a `Request`, calls `Api.handle` and shapes the `Response` back; it holds no
logic. Routes call the core (`pools`, `deployments`, `preview`, `cancelling`, `callbacks`) and re-implement
no rule. The callback route is authenticated by its HMAC signature; every other route by a bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlencode

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from . import __version__, docs_page, json_input, openapi
from . import deployments as deployment_ops
from . import pools as pool_ops
from .callbacks import CallbackBody, apply_callback, parse_json_body, run_parameters
from .cancelling import cancel_run, get_run
from .errors import InvalidInput, PushpoolError
from .models import Deployment, FlowRun, WorkPool, WorkQueue, validation_sentence
from .preview import MAX_PREVIEW_HOURS, PoolPreview, preview_pool
from .routes import NO_CONTENT, QueryParam, RouteTable
from .run_browser import MAX_PAGE, PoolCounts, browse_runs, pool_counts
from .schedules import Schedule, parse_schedule
from .signing import SIGNATURE_HEADER
from .states import StateType
from .store.base import Store, with_parameters
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
Q_HOURS = QueryParam(
    "hours",
    {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_PREVIEW_HOURS, "default": 1},
    "How far ahead to look, in hours.",
)
Q_QUEUE = QueryParam("queue", {"type": "string"}, "Only this queue's runs.")
Q_POOL = QueryParam("pool", {"type": "string"}, "Only this pool's.")
Q_STATE = QueryParam(
    "state",
    {"type": "string", "enum": [s.value for s in StateType]},
    "Only runs of this state type (case-insensitive).",
)
Q_LIMIT = QueryParam(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_RUN_LIMIT},
    "At most this many runs in the page.",
)
Q_DEPLOYMENT = QueryParam("deployment", {"type": "string"}, "Only this deployment's runs.")
Q_CURSOR = QueryParam(
    "cursor",
    {"type": "string"},
    "Where the page starts: the `X-Next-Cursor` of the page before (opaque); none for the first page.",
)
Q_JOB_VARIABLES = QueryParam(
    "job_variables", {"type": "string"}, 'Run-level job variables, as a JSON object: `{"cpu": 1024}`.'
)
Q_PARAMETERS = QueryParam("parameters", {"type": "string"}, 'Flow parameters, as a JSON object: `{"day": "today"}`.')


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

ROUTES = RouteTable()
"""Every route of the API; `openapi.document` describes exactly these."""
route = ROUTES.route

TITLE = "pushpool"
DESCRIPTION = (
    "Work pools without workers: the management API (bearer token) and the signed run callbacks. "
    'Generated from the route table and the models; errors are `{"error": "one sentence"}`.'
)


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
        self._openapi: dict[str, Any] | None = None

    def wake(self, pool: str | None, reason: str | None, due: datetime | None = None) -> None:
        """Pass a wake-up on (`reason` None: nothing to wake for); the change is stored, so this never fails it.

        `due`: when the run created falls due (`Wakeups.wake`)."""
        if reason is None:
            return
        try:
            self.wakeups.wake(pool, reason, due)
        except Exception:  # a Wakeups must not raise; if one does, the answer still stands (the tick catches up)
            log.exception("wake-up for pool %s (%s) failed", pool, reason)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of `ROUTES`, generated on first use and kept (the routes never change)."""
        if self._openapi is None:
            self._openapi = openapi.document(ROUTES, title=TITLE, version=__version__, description=DESCRIPTION)
        return self._openapi

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (an unexpected error is a logged 500)."""
        path = request.path.rstrip("/") or "/"
        if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
            # The dashboard has its own routes and cookie authentication; imported on first use, so the API
            # alone (a Lambda answering callbacks) never loads the template engine.
            from .ui import handle_ui

            return handle_ui(self, request, path)
        matches = ROUTES.match(path)
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
            _check_query(request.query, candidate.query_names)
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            response: Response = candidate.handler(self, request, params)
            return response
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


# the document and its page (open: they describe the API and hold no data) ---------------------------------
@route("GET", "/openapi.json", response=dict[str, Any], management=False)
def _openapi_document(api: Api, request: Request, p: dict[str, str]) -> Response:
    """This API's OpenAPI 3.1 document.

    Generated from the route table and the models; readable without a token, like the page at /docs.
    """
    return Response(200, api.openapi())


@route("GET", "/docs", response=str, management=False, content_type="text/html; charset=utf-8")
def _docs_page(api: Api, request: Request, p: dict[str, str]) -> Response:
    """An interactive page for the document: operations by tag, their schemas, and a form to try each.

    The page sends requests with the bearer token typed into it (kept in the page's memory only).
    """
    page = docs_page.page()
    return Response(200, page.html, page.headers(), content_type="text/html; charset=utf-8")


# callbacks ------------------------------------------------------------------------------------------------
class CallbackAnswer(BaseModel):
    """Where the run stands after a callback, and whether this report moved it."""

    id: str
    state: StateType
    state_name: str
    applied: bool


@route("POST", "/callbacks/runs/{run_id}", management=False, signed=True, body=CallbackBody, response=CallbackAnswer)
def _callback(api: Api, request: Request, p: dict[str, str]) -> Response:
    """A job reports its run's state (RUNNING, COMPLETED, FAILED), signed with the run's token.

    A duplicate, stale or out-of-order report is accepted and recorded as a no-op (`applied` false).
    """
    run = apply_callback(api.store, p["run_id"], request.body, request.headers.get(SIGNATURE_HEADER))
    api.wake(run.pool, SLOT_FREED if left_active(run) else None)
    return _ok(callback_answer(run))


@route("GET", "/callbacks/runs/{run_id}/parameters", management=False, signed=True, response=dict[str, Any])
def _run_parameters(api: Api, request: Request, p: dict[str, str]) -> Response:
    """A run's parameters, for its own job (PUSHPOOL_PARAMETERS_URL), signed over the body `GET parameters`."""
    # The stored JSON as it is: the job gets the very bytes the store holds, however large (no re-encoding).
    return Response(200, run_parameters(api.store, p["run_id"], request.headers.get(SIGNATURE_HEADER)))


def callback_answer(run: FlowRun) -> CallbackAnswer:
    """Where the run stands, and whether this report moved it (False: recorded as a no-op)."""
    last = run.state_history[-1] if run.state_history else None
    return CallbackAnswer(id=run.id, state=run.state, state_name=run.state_name, applied=bool(last and last.applied))


# work pools -----------------------------------------------------------------------------------------------
class PoolDetail(WorkPool):
    """A work pool, with why it is NOT_READY when this installation can tell (its provider cannot load)."""

    status_reason: str | None = None


@route("GET", "/work_pools", response=list[WorkPool])
def _pools(api: Api, request: Request, p: dict[str, str]) -> Response:
    """List the work pools, by name."""
    return _ok(api.store.list_pools())


@route("POST", "/work_pools", body=PoolCreate, response=WorkPool, status=201)
def _pool_create(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Create a work pool (and its `default` queue); `overwrite` updates one that exists."""
    body = parse_json_body(PoolCreate, request.body)
    return _ok(pool_ops.create_pool(api.store, **body.model_dump()), 201)


@route("GET", "/work_pools/{pool}", response=PoolDetail)
def _pool(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Read a work pool, with its status and why it is not ready."""
    pool = pool_ops.get_pool(api.store, p["pool"])
    return _ok({**_json(pool), "status_reason": pool_ops.status_reason(pool)})


@route("PATCH", "/work_pools/{pool}", body=PoolUpdate, response=WorkPool)
def _pool_update(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Change a work pool: template, job variables, description, limit (null clears it), paused."""
    body = parse_json_body(PoolUpdate, request.body)
    fields = body.model_dump(exclude={"concurrency_limit"})
    before = pool_ops.get_pool(api.store, p["pool"])
    after = pool_ops.update_pool(api.store, p["pool"], concurrency_limit=_limit_change(body), **fields)
    api.wake(after.name, room_opened(before, after))
    return _ok(after)


@route("DELETE", "/work_pools/{pool}", response=NO_CONTENT, status=204)
def _pool_delete(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Delete a work pool with its queues (refused while deployments or active runs use it)."""
    pool_ops.delete_pool(api.store, p["pool"])
    return Response(204)


@route("POST", "/work_pools/{pool}/pause", response=WorkPool)
def _pool_pause(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Pause a work pool: it delivers nothing; its schedules keep creating runs, which turn Late."""
    return _ok(pool_ops.update_pool(api.store, p["pool"], paused=True))


@route("POST", "/work_pools/{pool}/resume", response=WorkPool)
def _pool_resume(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Resume a paused work pool."""
    before = pool_ops.get_pool(api.store, p["pool"])
    after = pool_ops.update_pool(api.store, p["pool"], paused=False)
    api.wake(after.name, room_opened(before, after))
    return _ok(after)


@route("GET", "/work_pools/{pool}/preview", query=(Q_HOURS, Q_QUEUE), response=PoolPreview)
def _pool_preview(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Upcoming runs per queue and, for each due run, why it waits (as `work-pool preview`)."""
    return _ok(preview_pool(api.store, p["pool"], _hours_param(request.query), queue=request.query.get("queue")))


@route("GET", "/work_pools/{pool}/counts", response=PoolCounts)
def _pool_counts(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Waiting, late and active runs of a pool and of each of its queues (what the dashboard's gauges show).

    Waiting: SCHEDULED and due; late: waiting longer than PUSHPOOL_LATE_AFTER_SECONDS; active: holding a slot
    (from the slot counters), with the limit. Waiting and late are counted up to `cap` (1,000): past it the
    count says `capped` (show "1,000+"), so the answer costs the same whatever the backlog.
    """
    return _ok(pool_counts(api.store, p["pool"]))


# work queues ----------------------------------------------------------------------------------------------
@route("GET", "/work_pools/{pool}/queues", response=list[WorkQueue])
def _queues(api: Api, request: Request, p: dict[str, str]) -> Response:
    """List a pool's queues in priority order (1 first)."""
    pool_ops.get_pool(api.store, p["pool"])
    return _ok(api.store.list_queues(p["pool"]))


@route("POST", "/work_pools/{pool}/queues", body=QueueCreate, response=WorkQueue, status=201)
def _queue_create(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Create a queue; a priority that is taken is inserted at (the holder moves down), none goes last."""
    body = parse_json_body(QueueCreate, request.body)
    return _ok(pool_ops.create_queue(api.store, p["pool"], **body.model_dump()), 201)


@route("GET", "/work_pools/{pool}/queues/{queue}", response=WorkQueue)
def _queue(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Read a work queue."""
    return _ok(pool_ops.get_queue(api.store, p["pool"], p["queue"]))


@route("PATCH", "/work_pools/{pool}/queues/{queue}", body=QueueUpdate, response=WorkQueue)
def _queue_update(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Change a queue: priority, description, limit (null clears it), paused."""
    body = parse_json_body(QueueUpdate, request.body)
    fields = body.model_dump(exclude={"concurrency_limit"})
    before = pool_ops.get_queue(api.store, p["pool"], p["queue"])
    queue = pool_ops.update_queue(api.store, p["pool"], p["queue"], concurrency_limit=_limit_change(body), **fields)
    api.wake(queue.pool, room_opened(before, queue))
    return _ok(queue)


@route("DELETE", "/work_pools/{pool}/queues/{queue}", response=NO_CONTENT, status=204)
def _queue_delete(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Delete a queue (never the pool's `default`)."""
    pool_ops.delete_queue(api.store, p["pool"], p["queue"])
    return Response(204)


# deployments ----------------------------------------------------------------------------------------------
@route("GET", "/deployments", query=(Q_POOL,), response=list[Deployment])
def _deployments(api: Api, request: Request, p: dict[str, str]) -> Response:
    """List deployments, by name."""
    pool = request.query.get("pool")
    if pool is not None:
        pool_ops.get_pool(api.store, pool)
    return _ok(api.store.list_deployments(pool))


@route("POST", "/deployments", body=DeploymentCreate, response=Deployment, status=201)
def _deployment_create(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Create a deployment in a pool (the default pool when none is named)."""
    body = parse_json_body(DeploymentCreate, request.body)
    fields = body.model_dump(exclude={"schedules"})
    deployment = deployment_ops.create_deployment(api.store, schedules=_schedules(body.schedules), **fields)
    api.wake(deployment.pool, deployment_wake_reason(None, deployment))
    return _ok(deployment, 201)


@route("GET", "/deployments/{name}", response=Deployment)
def _deployment(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Read a deployment."""
    return _ok(deployment_ops.get_deployment(api.store, p["name"]))


@route("PATCH", "/deployments/{name}", body=DeploymentUpdate, response=Deployment)
def _deployment_update(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Change a deployment: queue, job variables, parameters, schedules, limit (null clears it), tags."""
    body = parse_json_body(DeploymentUpdate, request.body)
    fields = body.model_dump(exclude={"schedules", "concurrency_limit"})
    before = deployment_ops.get_deployment(api.store, p["name"])
    deployment = deployment_ops.update_deployment(
        api.store, p["name"], schedules=_schedules(body.schedules), concurrency_limit=_limit_change(body), **fields
    )
    api.wake(deployment.pool, deployment_wake_reason(before, deployment))
    return _ok(deployment)


@route("DELETE", "/deployments/{name}", response=NO_CONTENT, status=204)
def _deployment_delete(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Delete a deployment (its runs stay)."""
    deployment_ops.delete_deployment(api.store, p["name"])
    return Response(204)


@route("POST", "/deployments/{name}/runs", body=RunCreate, response=FlowRun, status=201)
def _deployment_run(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Create a flow run of a deployment, due now or at `scheduled_time`."""
    body = parse_json_body(RunCreate, request.body)
    run = deployment_ops.run_deployment(
        api.store,
        p["name"],
        parameters=body.parameters,
        job_variables=body.job_variables,
        scheduled_time=body.scheduled_time,
    )
    api.wake(run.pool, RUN_CREATED, run.scheduled_time)
    return _ok(run, 201)


@route("GET", "/deployments/{name}/render", query=(Q_JOB_VARIABLES, Q_PARAMETERS), response=dict[str, Any])
def _deployment_render(api: Api, request: Request, p: dict[str, str]) -> Response:
    """The job a run would submit, validated, credentials and tokens masked; nothing is submitted or written."""
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
    try:
        value = json_input.loads(text, f"query parameter {name}")
    except (ValueError, RecursionError):  # not JSON at all, or nested beyond the parser
        raise InvalidInput(f'query parameter {name} must be a JSON object like {{"key": "value"}}.') from None
    if not isinstance(value, dict):
        raise InvalidInput(f'query parameter {name} must be a JSON object like {{"key": "value"}}.')
    return value


# flow runs ------------------------------------------------------------------------------------------------
NEXT_CURSOR_HEADER = "X-Next-Cursor"


@route(
    "GET",
    "/flow_runs",
    query=(Q_POOL, Q_QUEUE, Q_DEPLOYMENT, Q_STATE, Q_LIMIT, Q_CURSOR),
    response=list[FlowRun],
    headers=(
        (NEXT_CURSOR_HEADER, "The `cursor` of the next page; absent on the last page."),
        ("Link", 'The next page as `<?...&cursor=...>; rel="next"` (RFC 8288), relative to this URL.'),
    ),
)
def _runs(api: Api, request: Request, p: dict[str, str]) -> Response:
    """List flow runs a page at a time, newest scheduled time first, ties by id.

    Filtered by pool, queue, deployment and state type; every pool's runs, merged, without `pool` or
    `deployment`. When more runs follow, the answer carries `X-Next-Cursor` (and a `Link` rel="next"): pass it
    back as `cursor`. A page may hold fewer runs than `limit`, even none, while the cursor is there.
    """
    q = request.query
    state = _state_param(q)
    page = browse_runs(
        api.store,
        pool=q.get("pool"),
        queue=q.get("queue"),
        deployment=q.get("deployment"),
        states=[state] if state is not None else [],
        limit=_int_param(q, "limit", DEFAULT_RUN_LIMIT, 1, MAX_PAGE),
        cursor=q.get("cursor"),
    )
    headers = {}
    if page.next_cursor is not None:
        following = urlencode({**q, "cursor": page.next_cursor})
        headers = {NEXT_CURSOR_HEADER: page.next_cursor, "Link": f'<?{following}>; rel="next"'}
    return Response(200, _json(page.runs), headers)


@route("GET", "/flow_runs/{run_id}", response=FlowRun)
def _run(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Read a flow run, with its state history and parameters (a listing leaves out parameters over 4 KB)."""
    return _ok(with_parameters(api.store, get_run(api.store, p["run_id"])))


@route("POST", "/flow_runs/{run_id}/cancel", response=FlowRun)
def _run_cancel(api: Api, request: Request, p: dict[str, str]) -> Response:
    """Cancel a flow run: a scheduled one at once, a started one once its infrastructure stops (Cancelling)."""
    run = cancel_run(api.store, p["run_id"], message="cancelled through the API")
    # A CANCELLING run still holds its slot: the pass stops its infrastructure, which frees it.
    api.wake(run.pool, RUN_CANCELLED if run.state is StateType.CANCELLING else None)
    return _ok(run)
