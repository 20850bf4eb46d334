"""`pushpool serve`: the dispatch loop and the callback/management HTTP API in one process."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from .api import Api
from .dispatch import Dispatcher, PassSummary
from .errors import PushpoolError
from .http_server import make_server
from .store.base import Store

log = logging.getLogger("pushpool.serve")


def api_token_from_env() -> tuple[str, bool]:
    """The management API's bearer token: $PUSHPOOL_API_TOKEN, else a fresh one (and True: generated)."""
    token = os.environ.get("PUSHPOOL_API_TOKEN")
    return (token, False) if token else (secrets.token_urlsafe(24), True)


class Server:
    """Runs passes every `interval` seconds while the HTTP API answers callbacks, until stopped."""

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 4300,
        interval: float = 5.0,
        api_token: str | None = None,
        dispatcher: Dispatcher | None = None,
        on_pass: Callable[[PassSummary], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.http = make_server(Api(store, api_token=api_token), host, port)
        bound_host, bound_port = self.http.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"
        self.dispatcher = dispatcher or Dispatcher(store, callback_base_url=self.url)
        self.on_pass = on_pass
        self.stopping = threading.Event()
        self._http_thread = threading.Thread(target=self.http.serve_forever, name="http", daemon=True)

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def run(self, duration: float | None = None) -> None:
        """Serve until stop() (SIGINT/SIGTERM when called from the main thread) or `duration` seconds."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
        self._http_thread.start()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self.stopping.is_set():
                try:
                    summary = self.dispatcher.run_pass()
                    if self.on_pass:
                        self.on_pass(summary)
                except PushpoolError as exc:
                    log.error("pass failed: %s", exc)
                wait = self.interval
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                self.stopping.wait(wait)
        finally:
            self.http.shutdown()
            self.http.server_close()
            self.dispatcher.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping after the current pass", signal.Signals(signum).name)
        self.stop()
