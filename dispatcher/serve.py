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
from datetime import datetime
from types import FrameType
from typing import Any

from .api import Api
from .dispatch import Dispatcher, PassSummary
from .errors import ConfigError, InvalidInput, NotFound, PushpoolError
from .http_server import ApiServer, make_server
from .models import utcnow
from .store.base import Store
from .wake_socket import WakeListener, wake_socket_path
from .wakeups import PassRequests

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


DUE_MARGIN_SECONDS = 0.005
"""Waited past a run's scheduled time, so the pass it starts finds the run due (clocks tick in steps)."""


class Server:
    """Runs passes while the HTTP API answers callbacks, until stopped.

    A pass runs at once when something lets a run start (a wake-up: through the API, or from the CLI on the
    same SQLite store via `wake_socket`), when a scheduled run's time arrives, and every `interval` seconds
    over every pool as the safety net. Passes run on the loop's thread only, one at a time.
    """

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
        self.wakeups = PassRequests()
        self.http = _listen(Api(store, api_token=api_token, wakeups=self.wakeups), host, port)
        bound_host, bound_port = self.http.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"
        self.dispatcher = dispatcher or Dispatcher(store, callback_base_url=self.url)
        self.on_pass = on_pass
        self.stopping = threading.Event()
        self._http_thread = threading.Thread(target=self.http.serve_forever, name="http", daemon=True)
        self._previous_handlers: dict[int, Any] = {}
        self._finished = threading.Event()
        # Without dispatch, the CLI's wake-ups are for the serve that dispatches: leave the socket to it.
        socket_path = wake_socket_path(store.url) if dispatch else None
        self._listener = None if socket_path is None else WakeListener(socket_path, self.wakeups)
        # Installed now, not only in run(): `pushpool serve` announces itself between the two, and a SIGTERM
        # sent as soon as that line appears must stop the server cleanly rather than kill it.
        self._install_signal_handlers()

    def stop(self, *_: object) -> None:
        self.stopping.set()
        self.wakeups.interrupt()

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
        if self._listener is not None:
            self._listener.start()
        deadline = None if duration is None else time.monotonic() + duration
        next_full = time.monotonic()  # the first pass covers every pool at once
        due: dict[str, datetime] = {}
        try:
            while not self.stopping.is_set():
                everything, woken = self.wakeups.take()
                if everything or time.monotonic() >= next_full:
                    self._pass(None)
                    next_full = time.monotonic() + self.interval
                    due = self._due_times(due)
                else:
                    now = utcnow()
                    pools = sorted(set(woken) | {pool for pool, at in due.items() if at <= now})
                    for pool in pools:
                        self._pass(pool)
                    if pools:
                        due = self._due_times(due, pools)
                wait = next_full - time.monotonic()
                if due:
                    wait = min(wait, (min(due.values()) - utcnow()).total_seconds() + DUE_MARGIN_SECONDS)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left)
                self.wakeups.wait(wait)
        finally:
            if self._listener is not None:
                self._listener.close()
            self.http.shutdown()
            self.http.server_close()
            self.dispatcher.close()
            self._finished.set()
            self._restore_signal_handlers()

    def _pass(self, pool: str | None) -> None:
        """One pass over `pool` (None: every pool); a failure is logged and the loop goes on."""
        if not self.dispatch:  # --no-dispatch: the API and the dashboard only, beside a dispatcher elsewhere
            return
        try:
            summary = self.dispatcher.run_pass(pool=pool)
            if self.on_pass:
                self.on_pass(summary)
        except NotFound as exc:
            log.info("woken for a pool that is gone: %s", exc)  # deleted since, or a name the CLI got wrong
        except PushpoolError as exc:
            log.error("pass failed: %s", exc)
        except Exception:
            # A store hiccup (database locked) or a bug in one pass must not take the API down with it:
            # the next pass starts from the store again.
            log.exception("pass failed unexpectedly; trying again in %gs", self.interval)

    def _due_times(self, known: dict[str, datetime], pools: list[str] | None = None) -> dict[str, datetime]:
        """Per pool that can admit, the next time one of its SCHEDULED runs falls due (one indexed read per queue).

        `pools` None reads every pool (after a full pass); a list re-reads those pools only and keeps what
        `known` says of the others (after woken passes: only a pass over a pool, or a wake-up for it, changes
        its runs ahead), so a burst of wake-ups costs no reads of every pool each time. Schedules create their
        runs ahead of time (the scheduler's horizon), so a deployment schedule's next fire time is a row here
        too. Runs already due and waiting for a slot are not: a freed slot wakes instead.
        """
        if not self.dispatch:
            return {}
        now = utcnow()
        due = {} if pools is None else {name: at for name, at in known.items() if name not in pools}
        try:
            if pools is None:
                listed = self.store.list_pools()
            else:
                listed = [pool for name in pools if (pool := self.store.get_pool(name)) is not None]
            for pool in listed:
                if pool.paused:
                    continue
                for queue in self.store.list_queues(pool.name):
                    at = None if queue.paused else self.store.next_scheduled_time(pool.name, queue.name, now)
                    if at is not None and (pool.name not in due or at < due[pool.name]):
                        due[pool.name] = at
        except Exception:  # the timed pass still comes; this only makes scheduled runs wait for it
            log.exception("could not read the next scheduled times; runs due start at the next timed pass")
            return {}
        return due

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._finished.is_set():
            # run() ended in another thread and could not put the old handlers back: do it now (handlers run
            # in the main thread) and deliver the signal to them.
            self._restore_signal_handlers()
            signal.raise_signal(signum)
            return
        log.info("received %s, stopping after the current pass", signal.Signals(signum).name)
        self.stop()
