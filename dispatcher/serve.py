"""`pushpool serve`: the dispatch loop and the callback/management HTTP API in one process."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from .api import Api
from .dispatch import Dispatcher, PassSummary
from .errors import ConfigError, InvalidInput, PushpoolError
from .http_server import ApiServer, make_server
from .store.base import Store

log = logging.getLogger("pushpool.serve")


def api_token_from_env() -> tuple[str, bool]:
    """The management API's bearer token: $PUSHPOOL_API_TOKEN, else a fresh one (and True: generated)."""
    token = os.environ.get("PUSHPOOL_API_TOKEN")
    return (token, False) if token else (secrets.token_urlsafe(24), True)


def _listen(api: Api, host: str, port: int) -> ApiServer:
    """The bound HTTP server, or a PushpoolError naming the address and what to do instead of the OSError."""
    try:
        return make_server(api, host, port)
    except OSError as exc:
        raise _listen_error(host, port, exc) from None


def _listen_error(host: str, port: int, exc: OSError) -> PushpoolError:
    where = f"cannot listen on {host}:{port}"
    reason = exc.strerror or str(exc)
    use_local = "use an address of this machine, e.g. 127.0.0.1."
    if isinstance(exc, socket.gaierror):  # 256.1.1.1, nonexistent.invalid, an IPv6 address
        return InvalidInput(f"{where}: the host name does not resolve to an IPv4 address ({reason}); {use_local}")
    if exc.errno == errno.EADDRNOTAVAIL:  # a valid address, of another machine (8.8.8.8)
        return InvalidInput(f"{where}: it is not an address of this machine ({reason}); {use_local}")
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{where}: the address is already in use; pick another --port, or stop what is listening there."
        )
    if exc.errno == errno.EACCES:
        return ConfigError(f"{where}: permission denied ({reason}); pick a --port above 1023, or 0 for any free one.")
    return ConfigError(f"{where}: {reason}; check --host and --port.")


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
        dispatch: bool = True,
    ) -> None:
        self.store = store
        self.dispatch = dispatch
        self.interval = interval
        self.http = _listen(Api(store, api_token=api_token), host, port)
        bound_host, bound_port = self.http.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"
        self.dispatcher = dispatcher or Dispatcher(store, callback_base_url=self.url)
        self.on_pass = on_pass
        self.stopping = threading.Event()
        self._http_thread = threading.Thread(target=self.http.serve_forever, name="http", daemon=True)
        self._previous_handlers: dict[int, Any] = {}
        self._finished = threading.Event()
        # Installed now, not only in run(): `pushpool serve` announces itself between the two, and a SIGTERM
        # sent as soon as that line appears must stop the server cleanly rather than kill it.
        self._install_signal_handlers()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous_handlers:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    def run(self, duration: float | None = None) -> None:
        """Serve until stop() (SIGINT/SIGTERM when called from the main thread) or `duration` seconds."""
        self._install_signal_handlers()
        self._http_thread.start()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self.stopping.is_set():
                try:
                    # --no-dispatch: the API and the dashboard only, beside a dispatcher that runs elsewhere.
                    if self.dispatch:
                        summary = self.dispatcher.run_pass()
                        if self.on_pass:
                            self.on_pass(summary)
                except PushpoolError as exc:
                    log.error("pass failed: %s", exc)
                except Exception:
                    # A store hiccup (database locked) or a bug in one pass must not take the API down with it:
                    # the next pass starts from the store again.
                    log.exception("pass failed unexpectedly; trying again in %gs", self.interval)
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
            self._finished.set()
            self._restore_signal_handlers()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._finished.is_set():
            # run() ended in another thread and could not put the old handlers back: do it now (handlers run
            # in the main thread) and deliver the signal to them.
            self._restore_signal_handlers()
            signal.raise_signal(signum)
            return
        log.info("received %s, stopping after the current pass", signal.Signals(signum).name)
        self.stop()
