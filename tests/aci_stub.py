"""A local HTTP server speaking the ARM routes of Azure Container Instances that pushpool uses.

The real Azure SDK clients talk to it over HTTP on 127.0.0.1: resource group GET, container group PUT (201,
then an Azure-AsyncOperation to poll), GET with the containers' instance views, stop, DELETE, the
subscription's list, and containers/{name}/logs. It keeps what Azure keeps (secure values are never sent back)
and answers faults on demand: any status code with Azure's error body (409, 429, 503, 404, ...) and slow
responses. Tests move a container through its life with `set_container`. Like ARM, a PUT on a group whose creation is
under way is a 409, and a PUT with `If-None-Match: *` on an existing group a 412; any other PUT on an existing
group updates it (and restarts it, on Azure), which is what `count("PUT", "put")` lets tests rule out.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
RESOURCE_GROUP = "flows-rg"
LOCATION = "westeurope"
TOKEN = "stub-token"

_PREFIX = r"/subscriptions/(?P<sub>[^/]+)"
_GROUPS = _PREFIX + r"/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerInstance/containerGroups"
_GROUP = _GROUPS + r"/(?P<name>[^/]+)"
ROUTES = [
    ("GET", re.compile(_PREFIX + r"/resourcegroups/(?P<rg>[^/]+)", re.I), "resource_group"),
    ("GET", re.compile(_PREFIX + r"/providers/Microsoft\.ContainerInstance/containerGroups", re.I), "list"),
    ("GET", re.compile(_GROUPS, re.I), "list_rg"),
    (
        "GET",
        re.compile(_PREFIX + r"/providers/Microsoft\.ContainerInstance/locations/[^/]+/operations/(?P<op>[^/]+)", re.I),
        "operation",
    ),
    ("GET", re.compile(_GROUP + r"/containers/(?P<container>[^/]+)/logs", re.I), "logs"),
    ("POST", re.compile(_GROUP + r"/stop", re.I), "stop"),
    ("GET", re.compile(_GROUP, re.I), "get"),
    ("PUT", re.compile(_GROUP, re.I), "put"),
    ("DELETE", re.compile(_GROUP, re.I), "delete"),
]


class StubCredential:
    """A TokenCredential that hands out a dummy token, as azure-identity's would a real one."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(TOKEN, int(time.time()) + 3600)


@dataclass
class Fault:
    """One scripted answer: `status` with Azure's error body, or a `delay` before the real answer."""

    route: str
    status: int = 0
    code: str = ""
    message: str = ""
    delay: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    route: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class ACIStub:
    """The server and its state; thread-safe. `url` is the ARM base URL to give the client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.resource_groups: dict[tuple[str, str], str] = {(SUBSCRIPTION, RESOURCE_GROUP): LOCATION}
        self.groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.operations: dict[str, str] = {}
        self.logs: dict[str, str] = {}
        self.requests: list[Request] = []
        self.faults: deque[Fault] = deque()
        self.operation_status = "Succeeded"
        """What a PUT's operation ends as; "Failed" answers with Azure's error and marks the group Failed."""
        self.operation_polls = 1
        """How many polls an operation answers InProgress before its end."""
        self._op_polls: dict[str, list[Any]] = {}
        self.creates = 0
        self.updates = 0
        """PUTs that created a group, and PUTs that replaced one (on Azure: restarted it)."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms delayed ACK

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                # The client may have given up first (a read timeout a test asked for).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    stub._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="aci-stub", daemon=True)

    def __enter__(self) -> ACIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- scripting ---------------------------------------------------------------------------------------------

    def fail_next(self, route: str, status: int, code: str = "", message: str = "", times: int = 1) -> None:
        """The next `times` requests of `route` (put, get, stop, delete, logs, list, operation, resource_group)."""
        code = code or {409: "Conflict", 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "Error")
        with self.lock:
            self.faults.extend(Fault(route, status, code, message or f"stub {status}") for _ in range(times))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def slow_next(self, route: str, seconds: float, times: int = 1) -> None:
        """The next `times` requests of `route` answer only after `seconds`."""
        with self.lock:
            self.faults.extend(Fault(route, delay=seconds) for _ in range(times))

    def set_container(self, name: str, state: str, *, exit_code: int | None = None, **extra: Any) -> None:
        """Move a group's first container to `state` (Running, Terminated, Waiting), with instance-view extras."""
        with self.lock:
            group = self._by_name(name)
            view = group["properties"]["containers"][0]["properties"]["instanceView"]
            current: dict[str, Any] = {"state": state, **extra.pop("current", {})}
            if exit_code is not None:
                current["exitCode"] = exit_code
            view["currentState"] = current
            view["events"] = extra.pop("events", view.get("events", []))

    def group(self, name: str) -> dict[str, Any] | None:
        """What the stub keeps of a group (secure values included, as Azure keeps them), or None."""
        with self.lock:
            try:
                return copy.deepcopy(self._by_name(name))
            except KeyError:
                return None

    def count(self, method: str, route: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.method == method and r.route == route)

    def _by_name(self, name: str) -> dict[str, Any]:
        for (_, _, group_name), group in self.groups.items():
            if group_name == name:
                return group
        raise KeyError(name)

    # -- serving -----------------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        route, params = "unknown", {}
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(split.path)
            if method == handler.command and match:
                route, params = name, match.groupdict()
                break
        with self.lock:
            self.requests.append(Request(handler.command, split.path, route, body, dict(handler.headers)))
            fault = next((f for f in self.faults if f.route == route), None)
            if fault is not None:
                self.faults.remove(fault)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        elif fault is not None:
            return self._send(handler, fault.status, _error(fault.code, fault.message))
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(handler, 401, _error("AuthenticationFailed", "no bearer token"))
        if "api-version=" not in split.query:
            return self._send(handler, 400, _error("MissingApiVersionParameter", "api-version is required"))
        if route == "unknown":
            return self._send(handler, 404, _error("NoRoute", f"no route {handler.command} {split.path}"))
        if route == "put":
            status, payload, headers = self._put(params, body, handler.headers.get("If-None-Match"))
        else:
            status, payload, headers = getattr(self, f"_{route}")(params, body)
        self._send(handler, status, payload, headers)

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    # -- routes (called without the lock held) -----------------------------------------------------------------

    def _resource_group(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        location = self.resource_groups.get((p["sub"], p["rg"]))
        if location is None:
            return 404, _error("ResourceGroupNotFound", f"Resource group '{p['rg']}' could not be found."), {}
        return (
            200,
            {"id": f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}", "name": p["rg"], "location": location},
            {},
        )

    def _put(self, p: dict[str, str], body: Any, if_none_match: str | None) -> tuple[int, Any, dict[str, str]]:
        if (p["sub"], p["rg"]) not in self.resource_groups:
            return 404, _error("ResourceGroupNotFound", f"Resource group '{p['rg']}' could not be found."), {}
        properties = (body or {}).get("properties") or {}
        containers = properties.get("containers") or []
        if not body.get("location") or not containers:
            return 400, _error("InvalidRequestContent", "location and at least one container are required"), {}
        image = containers[0]["properties"].get("image", "")
        if image.startswith("inaccessible/"):
            message = f"The image '{image}' in container group '{p['name']}' is not accessible."
            return 400, _error("InaccessibleImage", message), {}
        op = uuid.uuid4().hex
        group = {
            "id": f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}/providers/Microsoft.ContainerInstance/"
            f"containerGroups/{p['name']}",
            "name": p["name"],
            "type": "Microsoft.ContainerInstance/containerGroups",
            "location": body["location"],
            "tags": body.get("tags") or {},
            "identity": body.get("identity"),
            "properties": {**copy.deepcopy(properties), "provisioningState": "Creating", "instanceView": {}},
        }
        for container in group["properties"]["containers"]:
            waiting = {"state": "Waiting", "detailStatus": "ContainerCreating"}
            pulling = [{"name": "Pulling", "message": f'pulling image "{image}"', "type": "Normal"}]
            container["properties"]["instanceView"] = {"currentState": waiting, "events": pulling, "restartCount": 0}
        with self.lock:
            existing = self.groups.get((p["sub"], p["rg"], p["name"]))
            if existing is not None and existing["properties"]["provisioningState"] in ("Creating", "Pending"):
                message = f"The container group '{p['name']}' has another operation in progress."
                return 409, _error("Conflict", message), {}
            if existing is not None and if_none_match == "*":
                return 412, _error("PreconditionFailed", f"The container group '{p['name']}' exists."), {}
            created = existing is None
            self.creates, self.updates = self.creates + created, self.updates + (not created)
            self.groups[(p["sub"], p["rg"], p["name"])] = group
            self.operations[op] = self.operation_status
            self._op_polls[op] = [self.operation_polls, p]
        headers = {
            "Azure-AsyncOperation": f"{self.url}/subscriptions/{p['sub']}/providers/Microsoft.ContainerInstance/"
            f"locations/{body['location']}/operations/{op}?api-version=2023-05-01",
            "Retry-After": "0",
        }
        return (201 if created else 200), _visible(group), headers

    def _operation(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            end = self.operations.get(p["op"])
            remaining, where = self._op_polls.get(p["op"], [0, {}])
            if end is None:
                return 404, _error("OperationNotFound", "no such operation"), {}
            if remaining > 0:
                self._op_polls[p["op"]][0] -= 1
                return 200, {"status": "InProgress"}, {"Retry-After": "0"}
            key = (where["sub"], where["rg"], where["name"])
            group = self.groups.get(key)
            if group is not None:
                group["properties"]["provisioningState"] = end
                main = group["properties"]["containers"][0]["properties"]
                view = main["instanceView"]
                if end == "Succeeded" and main["image"].startswith("unpullable/"):
                    words = f'Failed to pull image "{main["image"]}": manifest unknown'
                    view["currentState"] = {"state": "Waiting", "detailStatus": "ErrImagePull"}
                    view["events"] = [*view["events"], {"name": "Failed", "message": words, "type": "Warning"}]
                elif end == "Succeeded" and view["currentState"].get("state") == "Waiting":
                    view["currentState"] = {"state": "Running", "detailStatus": ""}
        if end == "Failed":
            error = {"code": "ContainerGroupQuotaReached", "message": "Resource type container groups quota exceeded"}
            return 200, {"status": "Failed", "error": error}, {}
        return 200, {"status": end}, {}

    def _get(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            group = self.groups.get((p["sub"], p["rg"], p["name"]))
            if group is None:
                message = (
                    f"The Resource '.../containerGroups/{p['name']}' under resource group '{p['rg']}' was not found."
                )
                return 404, _error("ResourceNotFound", message), {}
            return 200, _visible(group), {}

    def _list(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            value = [_visible(g) for (sub, _, _), g in self.groups.items() if sub == p["sub"]]
        return 200, {"value": value}, {}

    def _list_rg(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            value = [_visible(g) for (sub, rg, _), g in self.groups.items() if (sub, rg) == (p["sub"], p["rg"])]
        for group in value:  # a listing carries no instance views, as Azure's does not
            for container in group["properties"]["containers"]:
                container["properties"].pop("instanceView", None)
        return 200, {"value": value}, {}

    def _stop(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            group = self.groups.get((p["sub"], p["rg"], p["name"]))
            if group is None:
                return 404, _error("ResourceNotFound", f"container group {p['name']} not found"), {}
            group["properties"]["instanceView"] = {"state": "Stopped"}
            for container in group["properties"]["containers"]:
                view = container["properties"]["instanceView"]
                if view["currentState"].get("state") != "Terminated":
                    view["currentState"] = {"state": "Terminated", "exitCode": 137, "detailStatus": "Killed"}
        return 204, None, {}

    def _delete(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            group = self.groups.pop((p["sub"], p["rg"], p["name"]), None)
        if group is None:
            return 204, None, {}
        return 200, _visible(group), {}

    def _logs(self, p: dict[str, str], _: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            group = self.groups.get((p["sub"], p["rg"], p["name"]))
            names = [c["name"] for c in group["properties"]["containers"]] if group else []
        if p["container"] not in names:
            return 404, _error("ContainerNotFound", f"container {p['container']} not found"), {}
        return 200, {"content": self.logs.get(p["name"], "")}, {}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _visible(group: dict[str, Any]) -> dict[str, Any]:
    """A group as Azure answers it: secure environment values are never sent back."""
    shown = copy.deepcopy(group)
    for container in shown["properties"]["containers"]:
        for item in container["properties"].get("environmentVariables") or []:
            item.pop("secureValue", None)
    for credentials in shown["properties"].get("imageRegistryCredentials") or []:
        credentials.pop("password", None)
    return shown


def serve() -> None:
    """Serve in this process until it is terminated, printing the URL first (benchmarks run it on its own)."""
    with ACIStub() as stub:
        print(stub.url, flush=True)
        stub._thread.join()


if __name__ == "__main__":
    serve()
