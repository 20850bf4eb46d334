"""`pushpool serve`'s HTTP adapter against misbehaving clients: raw sockets against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.api import Api
from dispatcher.http_server import MAX_BODY_BYTES, ApiServer, make_server
from dispatcher.store.sqlite import SQLiteStore

TOKEN = "test-token-0123456789"


class Running:
    """A server from `make_server` on a free port, serving from a thread, over a fresh SQLite store."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.db_path = tmp_path / "s.db"
        self.store = SQLiteStore(str(self.db_path))
        self.http: ApiServer = make_server(Api(self.store, api_token=TOKEN), "127.0.0.1", 0, **options)
        self.address = self.http.server_address[:2]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        return sock

    def exchange(self, raw: bytes, *, half_close: bool = False) -> bytes:
        """Send `raw` (optionally shutting our sending side down) and read until the server closes."""
        with self.connect() as sock:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            return read_all(sock)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.store.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one HTTP response; fails the test on an empty answer."""
    assert raw, "the server closed the connection without answering"
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    assert len(body) == length, (len(body), length, raw)
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def post_head(path: str, length: str | bytes) -> bytes:
    value = length if isinstance(length, bytes) else length.encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n".encode()
        + b"Content-Length: "
        + value
        + b"\r\n\r\n"
    )


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN, the way a killed client or a dropped link looks to the server."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert "Traceback" not in out, out


def get_pool(running: Running, name: str) -> int:
    raw = running.exchange(
        f"GET /work_pools/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    return parse(raw)[0]


# Content-Length -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [b"\xb2", b"1\xb3", b"\xb9\xb9", b"-1", b"1e3", b"0x10"])
def test_a_content_length_that_is_not_ascii_digits_is_a_400(
    running: Running, capfd: pytest.CaptureFixture[str], value: bytes
) -> None:
    # b"\xb2" is Latin-1 "²": str.isdigit() says True, int() refuses it.
    status, headers, body = parse(running.exchange(post_head("/work_pools", value) + b"{}"))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert list(body) == ["error"] and "Content-Length must be a number of bytes" in body["error"]
    no_traceback(capfd)


def test_a_content_length_of_thousands_of_digits_is_a_413_not_a_crash(
    running: Running, capfd: pytest.CaptureFixture[str]
) -> None:
    # int() refuses strings of more than 4300 digits (ValueError) since Python 3.11.
    status, _, body = parse(running.exchange(post_head("/work_pools", "9" * 5000)))
    assert status == 413
    assert f"over the limit of {MAX_BODY_BYTES} bytes" in body["error"]
    no_traceback(capfd)


def test_leading_zeros_in_content_length_are_still_a_number(running: Running) -> None:
    payload = b'{"name":"zeros"}'
    raw = post_head("/work_pools", "0" * 5000 + str(len(payload))) + payload
    status, _, body = parse(running.exchange(raw, half_close=True))
    assert status == 201 and body["name"] == "zeros"


def test_a_body_shorter_than_its_content_length_is_a_400_and_writes_nothing(
    running: Running, capfd: pytest.CaptureFixture[str]
) -> None:
    payload = b'{"name":"truncated"}'
    assert len(payload) == 20
    status, _, body = parse(running.exchange(post_head("/work_pools", "500") + payload, half_close=True))
    assert status == 400
    assert body == {"error": "the request body ended after 20 of the 500 bytes Content-Length announced"}
    assert get_pool(running, "truncated") == 404
    no_traceback(capfd)


def test_a_whole_body_with_a_half_close_is_still_accepted(running: Running) -> None:
    payload = b'{"name":"whole"}'
    status, _, body = parse(running.exchange(post_head("/work_pools", str(len(payload))) + payload, half_close=True))
    assert status == 201 and body["name"] == "whole"


# timeouts -------------------------------------------------------------------------------------------------
def test_a_body_that_never_comes_is_answered_408_after_the_read_timeout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    r = Running(tmp_path, read_timeout=0.5)
    try:
        with r.connect() as sock:
            sock.sendall(post_head("/work_pools", "10"))
            started = time.monotonic()
            status, headers, body = parse(read_all(sock))  # read_all returns: the server closed the connection
            waited = time.monotonic() - started
        assert status == 408
        assert body == {
            "error": "the request body did not arrive within 0.5 s; send all the bytes Content-Length announces"
        }
        assert 0.4 < waited < 5
        assert get_pool(r, "x") == 404  # the server still answers others
    finally:
        r.close()
    no_traceback(capfd)


def test_a_request_that_stops_mid_headers_is_closed_after_the_read_timeout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    r = Running(tmp_path, read_timeout=0.5)
    try:
        with r.connect() as sock:
            sock.sendall(b"GET /work_pools HTTP/1.1\r\nHost: x\r\n")  # no blank line: the headers never end
            started = time.monotonic()
            assert read_all(sock) == b""  # no request, no answer: closed
            assert time.monotonic() - started < 5
    finally:
        r.close()
    no_traceback(capfd)


def test_the_default_read_timeout_is_set_on_every_connection(running: Running) -> None:
    from dispatcher.http_server import READ_TIMEOUT_SECONDS

    assert running.http.read_timeout == READ_TIMEOUT_SECONDS == 30
    raw = running.exchange(b"GET /work_pools HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert parse(raw)[0] == 401


# clients that go away -------------------------------------------------------------------------------------
def wait_for_record(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10) -> logging.LogRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in caplog.records if text in r.getMessage()]
        if found:
            return found[0]
        time.sleep(0.05)
    pytest.fail(f"no log record containing {text!r}: {[r.getMessage() for r in caplog.records]}")


def test_a_client_that_resets_while_sending_the_body_is_one_log_line(
    running: Running, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pushpool.http")
    sock = running.connect()
    sock.sendall(post_head("/work_pools", "10") + b"{")
    time.sleep(0.3)  # the server is now waiting for the other 9 bytes
    reset(sock)
    record = wait_for_record(caplog, "disconnected")
    assert record.levelno <= logging.INFO
    assert "POST /work_pools" in record.getMessage()
    assert record.exc_info is None
    time.sleep(0.2)
    no_traceback(capfd)
    assert get_pool(running, "x") == 404


def test_a_client_that_resets_before_the_answer_is_written_is_one_log_line(
    running: Running, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pushpool.http")
    payload = b'{"name":"late"}'
    # Another writer holds the SQLite write lock, so the server has read the request but cannot answer yet.
    blocker = sqlite3.connect(str(running.db_path), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        sock = running.connect()
        sock.sendall(post_head("/work_pools", str(len(payload))) + payload)
        time.sleep(0.5)
        reset(sock)
        time.sleep(0.2)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    record = wait_for_record(caplog, "disconnected")
    assert "before the 201 answer was sent" in record.getMessage()
    assert record.exc_info is None
    time.sleep(0.2)
    no_traceback(capfd)
    assert get_pool(running, "late") == 200  # the pool was created; only the answer was lost


def test_a_client_that_resets_in_the_middle_of_the_request_line_prints_no_traceback(
    running: Running, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pushpool.http")
    sock = running.connect()
    sock.sendall(b"GET /work_po")
    time.sleep(0.3)  # the server is reading the request line
    reset(sock)
    record = wait_for_record(caplog, "disconnected")
    assert record.exc_info is None
    time.sleep(0.2)
    no_traceback(capfd)
