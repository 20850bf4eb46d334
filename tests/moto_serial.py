"""moto's server answering one request at a time: the DynamoDB peer of the tests and the cost benchmark.

moto's DynamoDB gives concurrent requests no isolation: a cancelled transaction restores a copy of the whole
table taken when it began, undoing writes other threads made meanwhile. DynamoDB itself serialises
conflicting writes, so serving requests one at a time is the faithful peer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


def serial_moto_server(host: str, timings: list[tuple[float, float]] | None = None) -> Any:
    """moto's ThreadedMotoServer (HTTP, threaded) on `host`, any free port, one request at a time, quiet.

    `timings`, when given, gets (seconds queued behind other requests, seconds moto took to answer) per request:
    how much of a benchmark's figure is the emulator."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def setup(self) -> None:
            super().setup()
            # Without it, a response's header and body segments wait on the client's delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    class SerialMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def serial(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
                arrived = time.perf_counter()
                with lock:
                    began = time.perf_counter()
                    answer = list(app(environ, start_response))
                    if timings is not None:
                        timings.append((began - arrived, time.perf_counter() - began))
                    return answer

            self._server = make_server(self._ip_address, self._port, serial, True, request_handler=QuietHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerialMotoServer(ip_address=host, port=0, verbose=False)
