"""The dashboard's actions (POST forms): the same core calls as the API's routes, then back to the page.

A value the core refuses re-renders the page with the core's one sentence (the CLI's and the API's) and the
error's status; the core checks before it writes, so nothing is written.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .. import json_input
from .. import pools as pool_ops
from ..cancelling import cancel_run
from ..deployments import get_deployment, run_deployment
from ..errors import InvalidInput, PushpoolError
from ..models import WorkPool, WorkQueue
from ..states import StateType
from ..wakeups import RUN_CANCELLED, RUN_CREATED, room_opened
from .pages import pool_view, redirect, run_view
from .router import Context, Response, ui_route


def limit_value(text: str) -> Any:
    """A limit field: empty clears the limit, digits are a number; anything else goes to the core as it was
    typed, so the refusal is the core's own sentence ("concurrency_limit must be a whole number ...")."""
    text = text.strip()
    if text == "":
        return None
    if text.lstrip("-").isascii() and text.lstrip("-").isdigit():
        return int(text)
    return text


def parameters_value(text: str) -> dict[str, Any] | None:
    """A custom run's parameters field: empty for the deployment's own, else a JSON object (merged over them)."""
    if not text.strip():
        return None
    wrong = 'parameters must be a JSON object like {"name": "value"}'
    try:
        value = json_input.loads(text, "parameters")
    except (ValueError, RecursionError) as exc:  # not JSON at all, or nested beyond the parser
        raise InvalidInput(f"{wrong}; the text is not valid JSON ({getattr(exc, 'msg', exc)}).") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{wrong}, got {type(value).__name__}.")
    return value


def _on_pool(c: Context, change: dict[str, Any], queue: str | None = None) -> Response:
    pool = c.params["pool"]
    try:
        before: WorkPool | WorkQueue
        after: WorkPool | WorkQueue
        if queue is None:
            before = pool_ops.get_pool(c.api.store, pool)
            after = pool_ops.update_pool(c.api.store, pool, **change)
        else:
            before = pool_ops.get_queue(c.api.store, pool, queue)
            after = pool_ops.update_queue(c.api.store, pool, queue, **change)
    except PushpoolError as exc:
        if exc.http_status == 404:
            raise
        return pool_view(c, status=exc.http_status, error=str(exc))
    # As the API's routes: a resume or a raised limit asks for a pass now rather than at the next tick.
    c.api.wake(pool, room_opened(before, after))
    return redirect(f"/ui/pools/{quote(pool, safe='')}")


@ui_route("POST", "/pools/{pool}/pause")
def pause_pool(c: Context) -> Response:
    return _on_pool(c, {"paused": True})


@ui_route("POST", "/pools/{pool}/resume")
def resume_pool(c: Context) -> Response:
    return _on_pool(c, {"paused": False})


@ui_route("POST", "/pools/{pool}/limit")
def set_pool_limit(c: Context) -> Response:
    return _on_pool(c, {"concurrency_limit": limit_value(c.form.get("limit", ""))})


@ui_route("POST", "/pools/{pool}/queues/{queue}/pause")
def pause_queue(c: Context) -> Response:
    return _on_pool(c, {"paused": True}, c.params["queue"])


@ui_route("POST", "/pools/{pool}/queues/{queue}/resume")
def resume_queue(c: Context) -> Response:
    return _on_pool(c, {"paused": False}, c.params["queue"])


@ui_route("POST", "/pools/{pool}/queues/{queue}/limit")
def set_queue_limit(c: Context) -> Response:
    return _on_pool(c, {"concurrency_limit": limit_value(c.form.get("limit", ""))}, c.params["queue"])


@ui_route("POST", "/runs/{run_id}/cancel")
def cancel(c: Context) -> Response:
    try:
        run = cancel_run(c.api.store, c.params["run_id"], message="cancelled from the dashboard")
    except PushpoolError as exc:
        if exc.http_status == 404:
            raise
        return run_view(c, status=exc.http_status, error=str(exc))
    # A CANCELLING run still holds its slot: the pass stops its infrastructure, which frees it.
    c.api.wake(run.pool, RUN_CANCELLED if run.state is StateType.CANCELLING else None)
    return redirect(f"/ui/runs/{quote(c.params['run_id'], safe='')}")


@ui_route("POST", "/deployments/{deployment}/run")
def start_run(c: Context) -> Response:
    deployment = get_deployment(c.api.store, c.params["deployment"])
    try:
        run = run_deployment(c.api.store, deployment.name, parameters=parameters_value(c.form.get("parameters", "")))
    except PushpoolError as exc:
        if exc.http_status == 404:
            raise
        return pool_view(
            Context(c.api, c.request, {"pool": deployment.pool}, c.csrf, c.form), status=exc.http_status, error=str(exc)
        )
    c.api.wake(run.pool, RUN_CREATED, run.scheduled_time)
    return redirect(f"/ui/runs/{run.id}")
