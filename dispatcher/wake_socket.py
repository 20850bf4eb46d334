"""A CLI command wakes a running `pushpool serve` on the same SQLite store: one datagram on a UNIX socket.

`serve` binds `<store file>.wake`, a UNIX datagram socket made 0600 beside the store file (whose directory
pushpool creates private). A CLI command that changed the store in a way that lets a run start sends one
datagram there naming the pool and why, and ignores that nobody listens. No server, no port, no reply: a
datagram lost or never sent costs latency only, as the timed pass is the safety net.

A DynamoDB store has no such socket (the CLI and `serve` need not share a machine): a CLI change there is
seen by `serve` at its next timed pass.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from .private_files import FILE_MODE
from .wakeups import NoWakeups, Wakeups

log = logging.getLogger("pushpool.wakeups")

SUFFIX = ".wake"
MAX_DATAGRAM = 1024
"""Bytes of one wake-up datagram, at most: a pool name and a short reason."""
MAX_REASON = 80
POLL_SECONDS = 0.25
"""How often the listener looks whether serve is stopping (its receive times out this often)."""


def wake_socket_path(store_url: str) -> Path | None:
    """Where `serve` on this store listens for the CLI's wake-ups: `<store file>.wake`; None for other stores."""
    if not store_url.startswith("sqlite:///"):
        return None
    path = store_url.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        return None
    return Path(os.path.abspath(Path(path).expanduser()) + SUFFIX)


def encode(pool: str | None, reason: str) -> bytes:
    """One datagram: {"pool": ..., "reason": ...}; a pool name too long for it asks for every pool."""
    data = json.dumps({"pool": pool, "reason": reason[:MAX_REASON]}).encode()
    return data if len(data) <= MAX_DATAGRAM else json.dumps({"pool": None, "reason": reason[:MAX_REASON]}).encode()


def decode(data: bytes) -> tuple[str | None, str] | None:
    """(pool, reason) from a datagram, or None for anything else (which is ignored, never acted on)."""
    try:
        message: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict):
        return None
    pool, reason = message.get("pool"), message.get("reason")
    if not (pool is None or (isinstance(pool, str) and pool)) or not isinstance(reason, str):
        return None
    return pool, reason[:MAX_REASON]


class SocketWakeups:
    """The CLI's `Wakeups`: one datagram to a listening `serve`; nobody listening is fine."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def wake(self, pool: str | None, reason: str, due: datetime | None = None) -> None:
        # `due` is not sent: the woken loop reads the pool's next due time after its pass.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # a full queue means wake-ups are pending already: never wait for room
                sock.sendto(encode(pool, reason), str(self.path))
        except OSError as exc:  # no socket file (no serve), a stale one (ECONNREFUSED), a full queue, a long path
            log.debug("no serve woken at %s: %s", self.path, exc)


def store_wakeups(store_url: str) -> Wakeups:
    """The `Wakeups` a CLI command writing to this store uses: the socket of SQLite, nothing for others."""
    path = wake_socket_path(store_url)
    return NoWakeups() if path is None else SocketWakeups(path)


class WakeListener:
    """`serve`'s end of the socket: each datagram received becomes a `wakeups.wake(pool, reason)`."""

    def __init__(self, path: Path, wakeups: Wakeups) -> None:
        self.path = path
        self.wakeups = wakeups
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="wake-listener", daemon=True)

    def start(self) -> bool:
        """Bind and listen; False (logged) when it cannot: another serve listens, or the path is too long."""
        sock = self._bind()
        if sock is None:
            return False
        self._sock = sock
        self._thread.start()
        return True

    def _bind(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            try:
                sock.bind(str(self.path))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not self._stale():
                    raise
                # A crashed serve left its socket: nobody reads it, so it is ours to replace.
                self.path.unlink()
                sock.bind(str(self.path))
            os.chmod(self.path, FILE_MODE)  # only this user's CLI may wake it
            self._inode = self.path.stat().st_ino
        except OSError as exc:
            sock.close()
            why = "another serve or dispatch --interval listens there" if exc.errno == errno.EADDRINUSE else str(exc)
            log.warning("CLI wake-ups disabled (%s: %s); CLI changes are seen at the next timed pass", self.path, why)
            return None
        sock.settimeout(POLL_SECONDS)
        return sock

    def _stale(self) -> bool:
        """Whether the existing path is a socket nobody reads (a datagram to it is refused)."""
        try:
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                probe.setblocking(False)
                probe.sendto(b"", str(self.path))  # an empty datagram: the listener ignores it
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False

    def _receive(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            message = decode(data) if len(data) <= MAX_DATAGRAM else None
            if message is not None:
                self.wakeups.wake(*message)

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still ours)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
