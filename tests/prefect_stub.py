"""A local HTTP server speaking the few routes of Prefect's REST API that `pushpool import prefect` reads.

Shapes are those a Prefect 3 server answers (recorded from `prefect server start`): `POST /api/work_pools/filter`,
`/api/work_pools/{name}/queues/filter`, `/api/deployments/filter`, `/api/flows/filter` (each paged by
`limit`/`offset`) and `GET /api/health`. Every request is recorded, so a test can check the paging.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

PROCESS_TEMPLATE: dict[str, Any] = {
    "job_configuration": {
        "command": "{{ command }}",
        "env": "{{ env }}",
        "labels": "{{ labels }}",
        "name": "{{ name }}",
        "stream_output": "{{ stream_output }}",
        "working_dir": "{{ working_dir }}",
    },
    "variables": {
        "type": "object",
        "properties": {
            "name": {"title": "Name", "type": "string"},
            "env": {"title": "Environment Variables", "type": "object", "additionalProperties": {"type": "string"}},
            "labels": {"title": "Labels", "type": "object", "additionalProperties": {"type": "string"}},
            "command": {"title": "Command", "type": "string"},
            "stream_output": {"title": "Stream Output", "default": True, "type": "boolean"},
            "working_dir": {"title": "Working Directory", "type": "string", "format": "path"},
        },
    },
}


def _id() -> str:
    return str(uuid.uuid4())


def pool(name: str, type: str, template: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": _id(),
        "name": name,
        "type": type,
        "description": None,
        "base_job_template": template or {},
        "is_paused": False,
        "concurrency_limit": None,
        "status": "NOT_READY",
        **fields,
    }


def queue(pool: str, name: str, priority: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": _id(),
        "name": name,
        "description": "",
        "is_paused": False,
        "concurrency_limit": None,
        "priority": priority,
        "work_pool_name": pool,
        **fields,
    }


def schedule(inner: dict[str, Any], *, active: bool = True, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": _id(), "schedule": inner, "active": active, "parameters": parameters or {}, "slug": None}


def deployment(name: str, flow_id: str, pool: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "id": _id(),
        "name": name,
        "flow_id": flow_id,
        "work_pool_name": pool,
        "work_queue_name": "default" if pool else None,
        "parameters": {},
        "job_variables": {},
        "tags": [],
        "paused": False,
        "description": None,
        "schedules": [],
        "concurrency_limit": None,
        "global_concurrency_limit": None,
        "concurrency_options": None,
        "entrypoint": "flows.py:flow",
        "pull_steps": [],
        "version": None,
        **fields,
    }


class PrefectStub:
    """The server's data: pools, queues per pool, deployments and flows (id -> name)."""

    def __init__(self) -> None:
        self.pools: list[dict[str, Any]] = []
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.deployments: list[dict[str, Any]] = []
        self.flows: dict[str, str] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.authorization: list[str | None] = []

    def flow(self, name: str) -> str:
        flow_id = _id()
        self.flows[flow_id] = name
        return flow_id

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if method == "GET" and path == "/api/health":
            return 200, True
        if method != "POST" or not path.endswith("/filter"):
            return 404, {"detail": "Not Found"}
        items: list[Any]
        if path == "/api/work_pools/filter":
            items = self.pools
        elif path.startswith("/api/work_pools/") and path.endswith("/queues/filter"):
            name = unquote(path.removeprefix("/api/work_pools/").removesuffix("/queues/filter"))
            if name not in self.queues:
                return 404, {"detail": "Work pool not found."}
            items = self.queues[name]
        elif path == "/api/deployments/filter":
            items = self.deployments
        elif path == "/api/flows/filter":
            items = [{"id": k, "name": v} for k, v in self.flows.items()]
        else:
            return 404, {"detail": "Not Found"}
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 200))
        return 200, items[offset : offset + limit]


@contextmanager
def serving(stub: PrefectStub) -> Iterator[str]:
    """The stub on 127.0.0.1 (a free port) for the `with` block; yields its API URL (ending in /api)."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            stub.authorization.append(self.headers.get("Authorization"))
            status, data = stub.answer(method, self.path, body)
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._reply("GET")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self._reply("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
