"""`pushpool serve` as a real process, and `pushpool dispatch` through the CLI (SPEC §7)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatcher import deployments, pools
from dispatcher.cli import app
from dispatcher.dispatch import Dispatcher, PassSummary
from dispatcher.errors import ConfigError, InvalidInput
from dispatcher.providers.base import Providers
from dispatcher.providers.fake import FakeProvider
from dispatcher.serve import Server
from dispatcher.states import StateType
from dispatcher.store.sqlite import SQLiteStore

TOKEN = "test-token-0123456789"
ANNOUNCE = re.compile(r"pushpool serving on (http://127\.0\.0\.1:(\d+))")


class Served:
    """`python -m dispatcher serve` in its own process, on a free port, with a temporary store."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.tmp_path = tmp_path
        self.store_url = f"sqlite:///{tmp_path / 's.db'}"
        env = {
            **os.environ,
            "PUSHPOOL_STORE": self.store_url,
            "PUSHPOOL_PROCESS_DIR": str(tmp_path / "procs"),
            "PUSHPOOL_API_TOKEN": TOKEN,
            "PUSHPOOL_RECONCILE_AFTER_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PUSHPOOL_CALLBACK_BASE_URL", None)
        command = [sys.executable, "-m", "dispatcher", "serve", "--port", "0", "--interval", "0.2", *extra]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.first_line = self._read_line(timeout=20)
        match = ANNOUNCE.search(self.first_line)
        assert match, f"unexpected first line {self.first_line!r}"
        self.url = match.group(1)

    def _read_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.process.kill()
            pytest.fail(f"pushpool serve printed nothing in {timeout}s")
        return self.process.stdout.readline().decode()

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def stop(self, sig: signal.Signals, timeout: float = 10.0) -> tuple[int, str, str]:
        """Send `sig` and wait: (exit code, stdout after the first line, stderr)."""
        self.process.send_signal(sig)
        started = time.monotonic()
        out, err = self.process.communicate(timeout=timeout)
        self.stop_seconds = time.monotonic() - started
        return self.process.returncode, out.decode(), err.decode()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_serve_no_dispatch_answers_the_api_and_dashboard_but_runs_no_pass(tmp_path: Path) -> None:
    # Beside a dispatcher elsewhere (the AWS functions): this process must never admit or submit a run.
    s = Served(tmp_path, "--no-dispatch")
    try:
        assert "no dispatch passes" in s.first_line
        assert s.request("POST", "/work_pools", {"name": "p"})[0] == 201
        command = [sys.executable, "-c", "print('never')"]
        assert (
            s.request("POST", "/deployments", {"name": "d", "pool": "p", "job_variables": {"command": command}})[0]
            == 201
        )
        status, run = s.request("POST", "/deployments/d/runs", {})
        assert status == 201
        with urllib.request.urlopen(f"{s.url}/ui/login", timeout=10) as page:
            assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        time.sleep(1.0)  # five intervals of 0.2 s: a dispatching serve would have admitted the run by now
        assert s.request("GET", f"/flow_runs/{run['id']}")[1]["state"] == "SCHEDULED"
        assert s.request("GET", "/work_pools/p")[1]["status"] == "NOT_READY"  # no pass ever served it
    finally:
        s.close()


def test_serve_answers_the_api_runs_a_run_end_to_end_and_stops_on_sigterm(served: Served) -> None:
    s = served
    assert s.request("GET", "/work_pools", token=None)[0] == 401
    assert s.request("GET", "/work_pools", token="wrong")[0] == 401
    assert s.request("GET", "/work_pools") == (200, [])

    status, pool = s.request("POST", "/work_pools", {"name": "p", "concurrency_limit": 2})
    assert status == 201 and pool["name"] == "p"
    command = [sys.executable, "-c", "print('hello from the job')"]
    status, _ = s.request("POST", "/deployments", {"name": "d", "pool": "p", "job_variables": {"command": command}})
    assert status == 201
    status, run = s.request("POST", "/deployments/d/runs", {})
    assert status == 201 and run["state"] == "SCHEDULED"

    def finished() -> dict[str, Any] | None:
        code, current = s.request("GET", f"/flow_runs/{run['id']}")
        assert code == 200
        return current if current["state"] not in ("SCHEDULED", "PENDING", "RUNNING") else None

    done = wait_for(finished, 20, "the run to finish")
    assert done["state"] == "COMPLETED", done["state_history"]
    assert done["infrastructure_id"]
    sources = [h["source"] for h in done["state_history"]]
    assert "dispatcher" in sources and any(src.startswith("callback:") for src in sources)
    log = s.tmp_path / "procs" / done["infrastructure_id"] / "output.log"
    assert "hello from the job" in log.read_text()
    status, listed = s.request("GET", "/work_pools/p")
    assert status == 200 and listed["status"] == "READY"

    code, out, err = s.stop(signal.SIGTERM)
    assert code == 0, err
    assert s.stop_seconds < 5
    assert out.strip().splitlines()[-1] == "Stopped."
    assert "Traceback" not in err
    assert re.search(r"\d+ admitted", out)  # a headline per pass


def test_serve_stops_cleanly_on_sigint(served: Served) -> None:
    s = served
    assert s.request("GET", "/work_pools")[0] == 200
    code, out, err = s.stop(signal.SIGINT)
    assert code == 0, err
    assert s.stop_seconds < 5
    assert "Stopped." in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_serve_stops_cleanly_on_sigterm_sent_as_soon_as_it_announces_itself(tmp_path: Path) -> None:
    s = Served(tmp_path, "--quiet")
    try:
        code, out, err = s.stop(signal.SIGTERM)
        assert code == 0, (code, err)
        assert out.strip() == "Stopped."
    finally:
        s.close()


def test_serve_stops_by_itself_after_duration(tmp_path: Path) -> None:
    s = Served(tmp_path, "--quiet", "--duration", "0.5")
    try:
        out, err = s.process.communicate(timeout=10)
        assert s.process.returncode == 0, err
        assert out.decode().strip() == "Stopped."
    finally:
        s.close()


# pushpool dispatch ----------------------------------------------------------------------------------------
@pytest.fixture
def cli_store(tmp_path: Path) -> Iterator[tuple[str, SQLiteStore]]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = SQLiteStore(str(tmp_path / "cli.db"))
    yield url, store
    store.close()


def test_dispatch_once_prints_a_json_summary(cli_store: tuple[str, SQLiteStore], tmp_path: Path) -> None:
    url, store = cli_store
    pools.create_pool(store, "p", concurrency_limit=1)
    deployments.create_deployment(store, "d", pool="p", job_variables={"command": [sys.executable, "-c", "pass"]})
    first = deployments.run_deployment(store, "d")
    second = deployments.run_deployment(store, "d")
    env = {"PUSHPOOL_PROCESS_DIR": str(tmp_path / "procs"), "PUSHPOOL_CALLBACK_BASE_URL": None}

    result = CliRunner().invoke(app, ["--store", url, "dispatch", "--once", "-o", "json"], env=env)

    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["pools"] == ["p"]
    assert summary["admitted"] == [first.id]
    assert summary["submitted"] == [first.id]
    waiting = store.get_run(second.id)
    assert waiting is not None and waiting.state is StateType.SCHEDULED  # the pool limit of 1 holds
    stored = store.get_run(first.id)
    assert stored is not None and stored.state is StateType.PENDING and stored.infrastructure_id
    assert (tmp_path / "procs" / stored.infrastructure_id / "pid").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["dispatch", "--queue", "default"], "--queue needs --pool"),
        (["dispatch", "--once", "--interval", "1"], "either --once or --interval"),
        (["dispatch", "--pool", "nope"], "work pool 'nope' does not exist"),
        (["dispatch", "--pool", "p", "--queue", "nope"], "work queue 'nope' does not exist"),
    ],
)
def test_dispatch_refuses_bad_scopes(cli_store: tuple[str, SQLiteStore], args: list[str], says: str) -> None:
    url, store = cli_store
    pools.create_pool(store, "p")
    result = CliRunner().invoke(app, ["--store", url, *args])
    assert result.exit_code != 0
    assert says in result.stderr
    assert result.stdout == ""


# the Server object in this process ------------------------------------------------------------------------
class FlakyDispatcher(Dispatcher):
    """A real dispatcher whose first pass fails the way a busy SQLite file does."""

    calls = 0

    def run_pass(self, *, pool: str | None = None, queue: str | None = None) -> PassSummary:
        self.calls += 1
        if self.calls == 1:
            raise sqlite3.OperationalError("database is locked")
        return super().run_pass(pool=pool, queue=queue)


def test_a_failing_pass_does_not_stop_serve(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    dispatcher = FlakyDispatcher(store, providers=Providers({"process": FakeProvider()}))
    summaries: list[PassSummary] = []
    failures: list[BaseException] = []

    def serve() -> None:  # built and run off the main thread: no signal handlers are touched
        try:
            Server(store, port=0, interval=0.05, dispatcher=dispatcher, on_pass=summaries.append).run(0.6)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join(10)
    store.close()
    assert not thread.is_alive()
    assert failures == []
    assert dispatcher.calls >= 3 and len(summaries) == dispatcher.calls - 1


def test_server_stops_on_sigterm_in_process_and_restores_the_handlers(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    server = Server(store, port=0, interval=0.05, dispatcher=Dispatcher(store, providers=Providers({})))
    try:
        # installed from the start, so a signal between construction and run() is not fatal
        assert signal.getsignal(signal.SIGTERM) == server._on_signal
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        started = time.monotonic()
        server.run(duration=10)
        assert time.monotonic() - started < 5
        assert server.stopping.is_set()
    finally:
        store.close()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# where serve cannot listen --------------------------------------------------------------------------------
@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_serve_on_a_port_in_use_says_so_in_one_sentence(cli_store: tuple[str, SQLiteStore], busy_port: int) -> None:
    url, _ = cli_store
    result = CliRunner().invoke(app, ["--store", url, "serve", "--port", str(busy_port), "--duration", "1"])
    assert result.exit_code == ConfigError.exit_code, (result.output, result.exception)
    assert result.stderr.strip() == (
        f"Error: cannot listen on 127.0.0.1:{busy_port}: the address is already in use; "
        "pick another --port, or stop what is listening there."
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("256.1.1.1", "the host name does not resolve to an IPv4 address"),
        ("nonexistent.invalid", "the host name does not resolve to an IPv4 address"),
        ("8.8.8.8", "it is not an address of this machine"),
    ],
)
def test_serve_on_a_host_it_cannot_listen_on_says_so_in_one_sentence(
    cli_store: tuple[str, SQLiteStore], host: str, why: str
) -> None:
    url, _ = cli_store
    result = CliRunner().invoke(app, ["--store", url, "serve", "--host", host, "--port", "0", "--duration", "1"])
    assert result.exit_code == InvalidInput.exit_code, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"Error: cannot listen on {host}:0: {why} (")
    assert lines[0].endswith("); use an address of this machine, e.g. 127.0.0.1.")
    assert result.stdout == ""


def test_server_raises_a_pushpool_error_when_it_cannot_bind(tmp_path: Path, busy_port: int) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(ConfigError, match="already in use"):
            Server(store, port=busy_port, dispatcher=Dispatcher(store, providers=Providers({})))
    finally:
        store.close()
    assert signal.getsignal(signal.SIGTERM) == before  # nothing installed for a server that never started
