"""A local HTTP server that speaks Lambda's Invoke REST route and runs handlers as Lambda would.

    POST /2015-03-31/functions/{FunctionName}/invocations
    X-Amz-Invocation-Type: Event            -> 202, empty body; the handler runs afterwards, on a thread
    X-Amz-Invocation-Type: RequestResponse  -> 200 with the handler's JSON answer (the default)

boto3's Lambda client reaches it through `endpoint_url` (or AWS_ENDPOINT_URL_LAMBDA). A function is named by
its name or its ARN; an unknown one gets Lambda's 404 ResourceNotFoundException. Each function is one warm
instance: its invocations run one at a time, in the order Lambda accepted them (an Event invoke is queued, as
Lambda's asynchronous queue does). Every invocation is recorded with its payload and when it was accepted,
started and finished, so tests count invokes and passes.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

Handler = Callable[[dict[str, Any], Any], Any]
ContextFactory = Callable[[str], Any]

_ROUTE = "/2015-03-31/functions/"


@dataclass
class Invocation:
    """One invocation Lambda accepted, and what became of it."""

    function: str
    kind: str
    payload: Any
    accepted: float
    started: float | None = None
    finished: float | None = None
    answer: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _Instance:
    """One warm instance of a function: a thread that runs its queued invocations one at a time."""

    def __init__(self, name: str, handler: Handler, context: ContextFactory) -> None:
        self.name = name
        self.handler = handler
        self.context = context
        self.queue: queue.Queue[Invocation | None] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name=f"lambda-{name}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (invocation := self.queue.get()) is not None:
            invocation.started = time.time()
            try:
                invocation.answer = self.handler(invocation.payload, self.context(self.name))
            except BaseException as exc:  # noqa: BLE001 - recorded, as Lambda records a failed invocation
                invocation.error = exc
            invocation.finished = time.time()
            invocation.done.set()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=120)


class LambdaStub:
    """Lambda's Invoke API on 127.0.0.1 (a free port) for the functions given: name -> handler."""

    def __init__(self, functions: dict[str, Handler], context: ContextFactory) -> None:
        self._instances = {name: _Instance(name, handler, context) for name, handler in functions.items()}
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()
        stub = self

        class _Route(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                stub._invoke(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Route)
        self._thread = threading.Thread(target=self._server.serve_forever, name="lambda-stub", daemon=True)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def start(self) -> LambdaStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for instance in self._instances.values():
            instance.stop()

    def __enter__(self) -> LambdaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what tests read -------------------------------------------------------------------------------------
    def of(self, function: str, kind: str | None = None) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.function == function and kind in (None, i.kind)]

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every invocation accepted so far has finished (and those it sent, in turn)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [i for i in self.invocations if not i.done.is_set()]
            if not pending:
                return
            if not pending[0].done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{len(pending)} invocations still running after {timeout} s")

    # the route -------------------------------------------------------------------------------------------
    def _invoke(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if not (path.startswith(_ROUTE) and path.endswith("/invocations")):
            return self._error(request, 404, "UnknownOperationException", f"no route {path}")
        name = unquote(path[len(_ROUTE) : -len("/invocations")]).rsplit(":function:", 1)[-1].split(":", 1)[0]
        instance = self._instances.get(name)
        if instance is None:
            return self._error(request, 404, "ResourceNotFoundException", f"Function not found: {name}")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return self._error(request, 400, "InvalidRequestContentException", "Could not parse request body into json")
        kind = request.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        invocation = Invocation(name, kind, payload, accepted=time.time())
        with self._lock:
            self.invocations.append(invocation)
        instance.queue.put(invocation)
        if kind == "Event":
            return self._answer(request, 202, b"")
        invocation.done.wait()
        if invocation.error is not None:
            error = {"errorMessage": str(invocation.error), "errorType": type(invocation.error).__name__}
            return self._answer(request, 200, json.dumps(error).encode(), {"X-Amz-Function-Error": "Unhandled"})
        return self._answer(request, 200, json.dumps(invocation.answer).encode())

    def _answer(
        self, request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.send_header("X-Amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(body)

    def _error(self, request: BaseHTTPRequestHandler, status: int, kind: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._answer(request, status, body, {"x-amzn-ErrorType": kind})
