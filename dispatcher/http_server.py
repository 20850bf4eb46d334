"""`pushpool serve`'s HTTP adapter: the stdlib threading server in front of `Api.handle`.

It only translates: socket bytes to a `Request`, a `Response` to socket bytes. Limits that protect the
process itself (body size) live here because no other adapter needs them: API Gateway and Azure cap bodies
before the function runs.
"""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .api import Api, Request, Response, error

MAX_BODY_BYTES = 1024 * 1024
"""Bodies above 1 MiB are refused (413) unread: a callback or a template is a few KiB at most."""

Log = Callable[[str], None]


class ApiServer(ThreadingHTTPServer):
    """A threading HTTP server that owns an `Api` and an optional log callable (None: silent)."""

    daemon_threads = True  # a hung client must not keep `serve` from exiting
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api, log: Log | None = None) -> None:
        self.api = api
        self.log = log
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "pushpool"
    sys_version = ""

    def _serve(self) -> None:
        response = self._read_and_handle()
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
        if not length_text.isdigit():
            self.close_connection = True
            return error(400, f"Content-Length must be a number of bytes, got {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            # The body stays unread, so the connection cannot be reused for another request.
            self.close_connection = True
            return error(413, f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(length) if length else b""
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


def make_server(api: Api, host: str = "127.0.0.1", port: int = 4300, *, log: Log | None = None) -> ApiServer:
    """A bound server; run it with `serve_forever()` and stop it with `shutdown()` from another thread.

    Port 0 picks a free port; the bound one is `server.server_address[1]`.
    """
    return ApiServer((host, port), api, log)
