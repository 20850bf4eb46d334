"""The OpenAPI 3.1 document of the HTTP API, generated from the route table and the pydantic models.

Nothing here is written by hand per route: paths and methods come from `routes.RouteTable`, path parameters
from the templates, query parameters from each route's `QueryParam`s, request bodies from the body models'
JSON Schemas (validation mode: what the route accepts), responses from the types the routes return
(serialization mode: what they send), the summary and description from the handlers' docstrings. Schemas
are shared under `components/schemas`; pydantic names a model `-Input`/`-Output` where the two modes differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from .routes import Route

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]

BEARER = "bearer"
SIGNATURE = "callbackSignature"

PATH_PARAMETERS = {
    "pool": "The work pool's name.",
    "queue": "The work queue's name, in its pool.",
    "name": "The deployment's name (`FLOW/NAME` is not accepted here: use the deployment's own name).",
    "run_id": "The flow run's id.",
}
"""What each path parameter means; a route naming another one fails the document's generation (a test)."""


class ErrorBody(BaseModel):
    """Every refusal and failure: one sentence naming the field and what is allowed."""

    error: str


_TAGS = {
    "callbacks": ("Callbacks", "A job reports its own run, signed with the run's token (X-Pushpool-Signature)."),
    "queues": ("Work queues", "A pool's queues: priority order, limits, pause."),
    "work_pools": ("Work pools", "Pools: type, base job template, limit, pause; the preview of the next pass."),
    "deployments": ("Deployments", "What runs where: job variables, parameters, schedules; start a run."),
    "flow_runs": ("Flow runs", "List, read and cancel runs."),
    "docs": ("Documentation", "This document and its page."),
}


def tag_of(route: Route) -> str:
    """The group an operation is listed under, from its path."""
    segments = route.path.strip("/").split("/")
    if "queues" in segments:
        return _TAGS["queues"][0]
    return _TAGS.get(segments[0], _TAGS["docs"])[0]


def operation_id(route: Route) -> str:
    """A stable identifier: the handler's name without its leading underscore (`pool_create`)."""
    return route.handler.__name__.lstrip("_")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
    }


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.signed:
        return [{SIGNATURE: []}]
    return [{BEARER: []}] if route.management else []


def _operation(route: Route, schemas: Mapping[tuple[str, Mode], Any]) -> dict[str, Any]:
    key = f"{route.method} {route.path}"
    operation: dict[str, Any] = {
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [tag_of(route)],
        "security": _security(route),
    }
    if route.description:
        operation["description"] = route.description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_PARAMETERS[name],
            "schema": {"type": "string"},
        }
        for name in route.path_parameters
    ]
    parameters += [
        {"name": q.name, "in": "query", "required": False, "description": q.description, "schema": q.schema}
        for q in route.query
    ]
    if route.signed:
        parameters.append(
            {
                "name": "X-Pushpool-Signature",
                "in": "header",
                "required": True,
                "description": '`t=<unix time>,v1=<hex HMAC-SHA256 of "t.body" with the run\'s token>`.',
                "schema": {"type": "string"},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[(key, "validation")]}},
        }
    responses: dict[str, Any] = {}
    if route.response is None:
        responses[str(route.status)] = {"description": "Done; no content."}
    else:
        responses[str(route.status)] = {
            "description": route.summary,
            "content": {route.content_type: {"schema": schemas[(key, "serialization")]}},
        }
        if route.headers:
            responses[str(route.status)]["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in route.headers
            }
    if route.body is not None:
        responses["400"] = _error("The body is not JSON, or holds NaN/Infinity.")
    if route.signed:
        responses["401"] = _error("Bad, stale or missing signature; the same answer for an unknown run.")
    elif route.management:
        responses["401"] = _error("Missing or wrong bearer token.")
        responses["403"] = _error("The management API is disabled: the server has no PUSHPOOL_API_TOKEN.")
    if route.path_parameters and not route.signed:
        responses["404"] = _error("The pool, queue, deployment or run named in the path does not exist.")
    if route.method == "POST" and route.status == 201:
        responses["409"] = _error("The name is taken.")
    if route.body is not None or route.query:
        responses["422"] = _error("A field or query parameter breaks a rule; the sentence names it.")
    responses["503"] = _error("The store cannot answer now (busy, throttled, disk full); retry after Retry-After.")
    responses["default"] = _error("Any other refusal or failure.")
    operation["responses"] = responses
    return operation


def document(routes: Iterable[Route], *, title: str, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` (JSON-ready)."""
    routes = list(routes)
    inputs: list[tuple[str, Mode, TypeAdapter[Any]]] = [("ErrorBody", "serialization", TypeAdapter(ErrorBody))]
    for route in routes:
        key = f"{route.method} {route.path}"
        if route.body is not None:
            inputs.append((key, "validation", TypeAdapter(route.body)))
        if route.response is not None:
            inputs.append((key, "serialization", TypeAdapter(route.response)))
    schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    used = sorted({tag_of(r) for r in routes})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "tags": [{"name": name, "description": text} for name, text in _TAGS.values() if name in used],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer $PUSHPOOL_API_TOKEN` (on AWS: IAM at API Gateway).",
                },
                SIGNATURE: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Pushpool-Signature",
                    "description": "HMAC-SHA256 with the run's own callback token (PUSHPOOL_CALLBACK_TOKEN).",
                },
            },
        },
    }
