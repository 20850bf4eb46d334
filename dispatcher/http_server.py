"""`pushpool serve`'s HTTP adapter: the stdlib threading server in front of `Api.handle`.

It only translates: socket bytes to a `Request`, a `Response` to socket bytes. Limits that protect the
process itself (body size) live here because no other adapter needs them: API Gateway and Azure cap bodies
before the function runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .api import Api, Request, Response, error

MAX_BODY_BYTES = 1024 * 1024
"""Bodies above 1 MiB are refused (413) unread: a callback or a template is a few KiB at most."""

READ_TIMEOUT_SECONDS = 30.0
"""How long one read from a client may wait. A body that stops coming is answered 408; a request line or
headers that stop coming close the connection. Without it, a client that sends nothing holds a thread forever."""

Log = Callable[[str], None]
log = logging.getLogger("pushpool.http")


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server that owns an `Api` and an optional log callable (None: silent)."""

    daemon_threads = True  # a hung client must not keep `serve` from exiting
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        api: Api,
        log: Log | None = None,
        *,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self.api = api
        self.log = log
        self.read_timeout = read_timeout
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client gone while its request line or headers were read: the default would print a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.info("%s disconnected (%s); nothing left to answer", client_address[0], _reason(exc))
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "pushpool"
    sys_version = ""
    timeout = READ_TIMEOUT_SECONDS  # StreamRequestHandler.setup puts it on each connection's socket

    def setup(self) -> None:
        super().setup()
        # Then the server's own value: READ_TIMEOUT_SECONDS unless make_server was given another (tests).
        self.connection.settimeout(self.server.read_timeout)

    def _serve(self) -> None:
        response: Response | None = None
        try:
            response = self._read_and_handle()
            self._write(response)
        except ConnectionError as exc:
            # The client is gone (reset, or closed before reading the answer): nobody is left to answer.
            self.close_connection = True
            when = (
                "before its request body was read"
                if response is None
                else f"before the {response.status} answer was sent"
            )
            log.info(
                "%s disconnected %s: %s %s (%s)",
                self.address_string(),
                when,
                self.command,
                urlsplit(self.path).path,
                _reason(exc),
            )

    def _write(self, response: Response) -> None:
        body = response.encoded()
        self.send_response(response.status)
        for name, value in response.all_headers().items():
            self.send_header(name, value)
        if response.status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _read_and_handle(self) -> Response:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return error(411, "send the body with a Content-Length header; chunked bodies are not accepted")
        length_text = self.headers.get("Content-Length", "0").strip() or "0"
        # isdigit() alone accepts non-ASCII digits such as "²", which int() then rejects.
        if not (length_text.isascii() and length_text.isdigit()):
            self.close_connection = True
            return error(400, f"Content-Length must be a number of bytes, got {length_text!r}")
        digits = length_text.lstrip("0") or "0"
        # More digits than the limit has is over it; int() is not even tried (it refuses over 4300 digits).
        if len(digits) > len(str(MAX_BODY_BYTES)) or int(digits) > MAX_BODY_BYTES:
            # The body stays unread, so the connection cannot be reused for another request.
            self.close_connection = True
            shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
            return error(413, f"request body of {shown} bytes is over the limit of {MAX_BODY_BYTES} bytes")
        length = int(digits)
        try:
            body = self.rfile.read(length) if length else b""
        except TimeoutError:
            self.close_connection = True
            return error(
                408,
                f"the request body did not arrive within {self.server.read_timeout:g} s; "
                "send all the bytes Content-Length announces",
            )
        if len(body) < length:
            # The client half-closed (or the connection ended) before the whole body came: never act on a part.
            self.close_connection = True
            return error(
                400, f"the request body ended after {len(body)} of the {length} bytes Content-Length announced"
            )
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            headers=dict(self.headers.items()),
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            body=body,
        )
        return self.server.api.handle(request)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # BaseHTTPRequestHandler writes every request to stderr; `serve` decides what, if anything, is logged.
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")


def make_server(
    api: Api,
    host: str = "127.0.0.1",
    port: int = 4300,
    *,
    log: Log | None = None,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> ApiServer:
    """A bound server; run it with `serve_forever()` and stop it with `shutdown()` from another thread.

    Port 0 picks a free port; the bound one is `server.server_address[1]`. Binding fails with the socket's
    OSError (socket.gaierror for a host that does not resolve); `serve.Server` turns it into one sentence.
    """
    return ApiServer((host, port), api, log, read_timeout=read_timeout)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
