"""`pushpool serve` wakes on events: each source starts a pass at once, with the timed pass 60 s away.

Every test here runs serve with `interval=60`: a run submitted within a few seconds was submitted by a pass
that an event started (or a scheduled time), not by the tick. Bounds are generous (a loaded 2-core machine).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatcher import deployments, pools
from dispatcher.callbacks import SECRET_ENV, master_secret, run_token
from dispatcher.cli import app
from dispatcher.dispatch import Dispatcher, PassSummary
from dispatcher.models import FlowRun, WorkPool, utcnow
from dispatcher.providers.base import Providers
from dispatcher.providers.fake import FakeProvider
from dispatcher.schedules import parse_schedule
from dispatcher.serve import PassRequests, Server
from dispatcher.signing import SIGNATURE_HEADER, sign
from dispatcher.states import StateType
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.wake_socket import SocketWakeups, WakeListener, decode, encode, wake_socket_path
from dispatcher.wakeups import (
    LIMIT_RAISED,
    POOL_RESUMED,
    QUEUE_RESUMED,
    RUN_CREATED,
    SCHEDULE_CHANGED,
    RecordedWakeups,
)

TOKEN = "wake-serve-token"
INTERVAL = 60.0
JOB = {"command": [sys.executable, "-c", "pass"]}
SOON = 5.0
"""How long a woken pass may take to submit a run here: far below INTERVAL, generous for a loaded machine."""


class Counting(Dispatcher):
    """A real dispatcher that also counts passes in flight at once (never above 1) and can hold a pass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()

    def run_pass(self, *, pool: str | None = None, queue: str | None = None) -> PassSummary:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.holding.set()
            self.hold.wait(30)
            return super().run_pass(pool=pool, queue=queue)
        finally:
            with self._lock:
                self.in_flight -= 1


class Running:
    """A `Server` (interval 60 s, the fake provider for `process` pools) running in a thread of this test."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.fake = FakeProvider()
        self.dispatcher = Counting(store, providers=Providers({"process": self.fake}))
        self.passes: list[PassSummary] = []
        built = threading.Event()

        def main() -> None:
            # Built in this thread, not the test's main one: no signal handlers are installed for it.
            self.server = Server(
                store,
                port=0,
                interval=INTERVAL,
                api_token=TOKEN,
                dispatcher=self.dispatcher,
                on_pass=self.passes.append,
            )
            built.set()
            self.server.run()

        self.thread = threading.Thread(target=main, name="serve", daemon=True)
        self.thread.start()
        assert built.wait(20), "the server was not built"
        wait_for(lambda: self.passes, SOON, "the first pass")

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        sent = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}", **(headers or {})}
        request = urllib.request.Request(f"{self.server.url}{path}", data=data, headers=sent, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            assert response.status < 300
            return json.loads(raw) if raw else None

    def launched(self, run_id: str) -> bool:
        return any(key.startswith(run_id) for key, _ in self.fake.launches)

    def stop(self) -> None:
        self.dispatcher.hold.set()
        self.server.stop()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    s = SQLiteStore(str(tmp_path / "serve.db"))
    pools.create_pool(s, "pool", concurrency_limit=1)
    deployments.create_deployment(s, "dep", pool="pool", job_variables=JOB)
    yield s
    s.close()


@pytest.fixture
def running(store: SQLiteStore) -> Iterator[Running]:
    r = Running(store)
    yield r
    r.stop()


def submitted_soon(r: Running, run_id: str, what: str) -> None:
    wait_for(lambda: r.launched(run_id), SOON, f"{what} to start a pass that submits {run_id}")


def active_run(r: Running) -> FlowRun:
    """A run created through the API and submitted (the pool's one slot is then taken)."""
    run = r.request("POST", "/deployments/dep/runs", {})
    submitted_soon(r, run["id"], "the run created")

    def recorded() -> FlowRun | None:  # the launch is recorded on the run just after the provider answered
        stored = r.store.get_run(run["id"])
        return stored if stored is not None and stored.infrastructure_id is not None else None

    stored = wait_for(recorded, SOON, "the launch to be recorded")
    assert stored.state is StateType.PENDING
    return stored


# one test per event source ------------------------------------------------------------------------------
def test_a_run_created_through_the_api_is_submitted_at_once(running: Running) -> None:
    first_passes = len(running.passes)
    run = running.request("POST", "/deployments/dep/runs", {})
    submitted_soon(running, run["id"], "the run created")
    woken = wait_for(lambda: running.passes[first_passes:], SOON, "the pass to end")
    assert woken[0].pools == ["pool"] and woken[0].submitted == [run["id"]]  # a pass over the woken pool only


def test_a_callback_that_ends_a_run_frees_its_slot_for_the_next(running: Running) -> None:
    first = active_run(running)
    second = running.request("POST", "/deployments/dep/runs", {})
    time.sleep(0.3)
    assert not running.launched(second["id"])  # the pool's limit is 1
    body = json.dumps({"state": "COMPLETED"}).encode()
    token = run_token(master_secret(running.store), first.deployment_id, first.id)
    signature = sign(token, body, int(time.time()))
    running.request("POST", f"/callbacks/runs/{first.id}", body, {SIGNATURE_HEADER: signature})
    submitted_soon(running, second["id"], "the callback")


def test_a_cancel_starts_the_pass_that_stops_the_infrastructure(running: Running) -> None:
    run = active_run(running)
    assert running.request("POST", f"/flow_runs/{run.id}/cancel")["state"] == "CANCELLING"
    wait_for(lambda: running.fake.cancelled, SOON, "the cancel to start a pass that stops the job")
    assert running.fake.cancelled == [run.infrastructure_id]


def test_resuming_a_pool_submits_its_waiting_run(store: SQLiteStore) -> None:
    pools.update_pool(store, "pool", paused=True)
    r = Running(store)
    try:
        run = r.request("POST", "/deployments/dep/runs", {})
        time.sleep(0.3)
        assert not r.launched(run["id"])
        r.request("POST", "/work_pools/pool/resume")
        submitted_soon(r, run["id"], "the pool resumed")
    finally:
        r.stop()


def test_resuming_a_queue_submits_its_waiting_run(store: SQLiteStore) -> None:
    pools.update_queue(store, "pool", "default", paused=True)
    r = Running(store)
    try:
        run = r.request("POST", "/deployments/dep/runs", {})
        time.sleep(0.3)
        assert not r.launched(run["id"])
        r.request("PATCH", "/work_pools/pool/queues/default", {"paused": False})
        submitted_soon(r, run["id"], "the queue resumed")
    finally:
        r.stop()


def test_raising_a_limit_submits_the_waiting_run(running: Running) -> None:
    active_run(running)
    second = running.request("POST", "/deployments/dep/runs", {})
    time.sleep(0.3)
    assert not running.launched(second["id"])
    running.request("PATCH", "/work_pools/pool", {"concurrency_limit": 2})
    submitted_soon(running, second["id"], "the limit raised")


def test_a_scheduled_run_is_submitted_when_its_time_arrives(running: Running) -> None:
    due = utcnow() + timedelta(seconds=2)
    run = running.request("POST", "/deployments/dep/runs", {"scheduled_time": due.isoformat()})
    submitted_soon(running, run["id"], "the scheduled time")
    stored = running.store.get_run(run["id"])
    assert stored is not None and stored.state is StateType.PENDING
    admitted = next(h.time for h in stored.state_history if h.state is StateType.PENDING)
    assert timedelta(0) <= admitted - due < timedelta(seconds=SOON)  # not early, and not at the tick 60 s away


def test_a_deployment_schedules_next_run_is_submitted_at_its_time(store: SQLiteStore) -> None:
    fire = utcnow().replace(microsecond=0) + timedelta(seconds=3)
    schedule = parse_schedule({"interval": 3600, "anchor_date": fire.isoformat()})
    deployments.create_deployment(store, "hourly", pool="pool", schedules=[schedule], job_variables=JOB)
    r = Running(store)  # its first pass creates the run ahead of time; then it sleeps until `fire`, not 60 s
    try:
        runs = wait_for(lambda: store.runs_of_deployment("hourly"), SOON, "the scheduled run to be created")
        assert runs[0].scheduled_time == fire
        submitted_soon(r, runs[0].id, "the schedule's time")
        stored = store.get_run(runs[0].id)
        assert stored is not None
        assert next(h.time for h in stored.state_history if h.state is StateType.PENDING) >= fire
    finally:
        r.stop()


# coalescing and one pass at a time ----------------------------------------------------------------------
def test_a_hundred_wakes_during_a_pass_cause_exactly_one_more_pass(running: Running) -> None:
    time.sleep(0.2)
    before = len(running.passes)
    running.dispatcher.hold.clear()
    running.dispatcher.holding.clear()
    running.server.wakeups.wake("pool", "test")
    assert running.dispatcher.holding.wait(SOON)  # that pass has started and is held
    for _ in range(100):
        running.server.wakeups.wake("pool", "slot freed")
    running.dispatcher.hold.set()
    wait_for(lambda: len(running.passes) >= before + 2, SOON, "the pass held and the one after it")
    time.sleep(0.5)
    assert len(running.passes) == before + 2


def test_a_burst_of_a_hundred_wakes_causes_a_few_passes(running: Running) -> None:
    time.sleep(0.2)
    before = len(running.passes)
    for _ in range(100):
        running.server.wakeups.wake("pool", "slot freed")
    wait_for(lambda: len(running.passes) > before, SOON, "a pass after the burst")
    time.sleep(0.5)
    assert 1 <= len(running.passes) - before <= 3


def test_passes_never_overlap_however_many_wake_at_once(running: Running) -> None:
    stop = time.monotonic() + 1.0

    def waker(pool: str | None) -> None:
        while time.monotonic() < stop:
            running.server.wakeups.wake(pool, "test")
            time.sleep(0.001)

    threads = [threading.Thread(target=waker, args=(pool,)) for pool in ("pool", None, "pool", "other")]
    for thread in threads:
        thread.start()
    for _ in range(5):
        running.request("POST", "/deployments/dep/runs", {})
    for thread in threads:
        thread.join()
    assert len(running.passes) > 2  # woken passes ran meanwhile
    assert running.dispatcher.most_in_flight == 1


def test_pass_requests_merge_pools_and_every_pool() -> None:
    requests = PassRequests()
    requests.wake("a", "run created")
    requests.wake("b", "slot freed")
    requests.wake("a", "slot freed")
    assert requests.take() == (False, ["a", "b"])
    assert requests.take() == (False, [])
    requests.wake("a", "x")
    requests.wake(None, "applied")
    assert requests.take() == (True, [])


class CountingStore(SQLiteStore):
    """A real SQLite store that counts how often every pool is listed."""

    pool_listings = 0

    def list_pools(self) -> list[WorkPool]:
        self.pool_listings += 1
        return super().list_pools()


def test_woken_passes_read_the_due_times_of_their_pools_only(tmp_path: Path) -> None:
    store = CountingStore(str(tmp_path / "count.db"))
    pools.create_pool(store, "pool")
    pools.create_pool(store, "other")
    deployments.create_deployment(store, "dep", pool="pool", job_variables=JOB)
    r = Running(store)
    try:
        listings = store.pool_listings
        later = (utcnow() + timedelta(hours=1)).isoformat()
        for _ in range(10):
            run = r.request("POST", "/deployments/dep/runs", {})
            submitted_soon(r, run["id"], "the run created")
        r.request("POST", "/deployments/dep/runs", {"scheduled_time": later})
        wait_for(lambda: r.server.wakeups.received >= 11 and r.dispatcher.in_flight == 0, SOON, "the passes")
        time.sleep(0.2)
        assert store.pool_listings == listings  # no pass and no due-time read went over every pool
    finally:
        r.stop()
        store.close()


# the CLI wakes a serve process on the same store --------------------------------------------------------
ANNOUNCE = re.compile(r"pushpool serving on (http://127\.0\.0\.1:\d+)")


def test_a_run_created_with_the_cli_wakes_a_running_serve(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"
    store = SQLiteStore(str(db))
    pools.create_pool(store, "pool")
    command = [sys.executable, "-c", "pass"]
    deployments.create_deployment(store, "dep", pool="pool", job_variables={"command": command})
    env = {
        **os.environ,
        "PUSHPOOL_STORE": url,
        "PUSHPOOL_PROCESS_DIR": str(tmp_path / "procs"),
        "PUSHPOOL_API_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "serve", "--port", "0", "--interval", str(INTERVAL)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert serve.stdout is not None
        ready, _, _ = select.select([serve.stdout], [], [], 30)
        assert ready and ANNOUNCE.search(serve.stdout.readline().decode())
        socket_path = wake_socket_path(url)
        assert socket_path is not None
        wait_for(socket_path.exists, SOON, "serve to listen for wake-ups")
        assert socket_path.stat().st_mode & 0o777 == 0o600
        wait_for(lambda: serve.stdout and select.select([serve.stdout], [], [], 0)[0], SOON, "the first pass")
        serve.stdout.readline()  # the first (timed) pass's headline; the next timed one is 60 s away

        result = CliRunner().invoke(app, ["--store", url, "deployment", "run", "dep", "-o", "json"])
        assert result.exit_code == 0, result.output
        run_id = json.loads(result.output)["id"]

        def started() -> bool:
            run = store.get_run(run_id)
            return run is not None and run.state is not StateType.SCHEDULED

        wait_for(started, SOON, "the CLI's wake-up to start a pass in serve")
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=20)
        store.close()
    assert serve.returncode == 0, err.decode()
    assert not socket_path.exists()  # removed on the way out


def test_a_run_created_with_the_cli_wakes_a_running_dispatch_loop(tmp_path: Path) -> None:
    """`pushpool dispatch --interval` (no HTTP) listens on the same socket as serve: its next timed pass is 60 s
    away, and the run created by the CLI starts at once."""
    db = tmp_path / "loop.db"
    url = f"sqlite:///{db}"
    store = SQLiteStore(str(db))
    pools.create_pool(store, "pool")
    pools.create_pool(store, "other")
    deployments.create_deployment(store, "dep", pool="pool", job_variables={"command": [sys.executable, "-c", "pass"]})
    env = {
        **os.environ,
        "PUSHPOOL_STORE": url,
        "PUSHPOOL_PROCESS_DIR": str(tmp_path / "procs"),
        "PYTHONUNBUFFERED": "1",
    }
    loop = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "dispatch", "--interval", str(INTERVAL), "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    socket_path = wake_socket_path(url)
    assert socket_path is not None
    try:
        assert loop.stdout is not None
        ready, _, _ = select.select([loop.stdout], [], [], 30)
        assert ready and json.loads(loop.stdout.readline())["pools"] == ["other", "pool"]  # the first, timed pass
        wait_for(socket_path.exists, SOON, "the loop to listen for wake-ups")
        assert socket_path.stat().st_mode & 0o777 == 0o600

        result = CliRunner().invoke(app, ["--store", url, "deployment", "run", "dep", "-o", "json"])
        assert result.exit_code == 0, result.output
        run_id = json.loads(result.output)["id"]

        def started() -> bool:
            run = store.get_run(run_id)
            return run is not None and run.state is not StateType.SCHEDULED

        wait_for(started, SOON, "the CLI's wake-up to start a pass in the dispatch loop")
        ready, _, _ = select.select([loop.stdout], [], [], SOON)
        assert ready and json.loads(loop.stdout.readline())["pools"] == ["pool"], "a pass over the woken pool only"
    finally:
        loop.send_signal(signal.SIGINT)
        out, err = loop.communicate(timeout=20)
        store.close()
    assert loop.returncode == 0, err.decode()
    assert b"Stopped." in out + err
    assert not socket_path.exists()  # removed on the way out


def test_the_cli_wakes_nobody_quietly_when_no_serve_listens(tmp_path: Path) -> None:
    db = tmp_path / "alone.db"
    store = SQLiteStore(str(db))
    pools.create_pool(store, "pool")
    deployments.create_deployment(store, "dep", pool="pool")
    store.close()
    result = CliRunner().invoke(app, ["--store", f"sqlite:///{db}", "deployment", "run", "dep"])
    assert result.exit_code == 0, result.output
    stale = wake_socket_path(f"sqlite:///{db}")
    assert stale is not None
    SocketWakeups(stale).wake("pool", "run created")  # no file: nothing raised


def test_wake_datagrams_round_trip_and_anything_else_is_ignored() -> None:
    assert decode(encode("pool", "run created")) == ("pool", "run created")
    assert decode(encode(None, "applied")) == (None, "applied")
    assert decode(encode("p" * 5000, "run created")) == (None, "run created")  # too long a name: every pool
    for data in (
        b"",
        b"not json",
        b"[]",
        b'{"pool": 1, "reason": "x"}',
        b'{"pool": "p"}',
        b'{"pool": "", "reason": "x"}',
    ):
        assert decode(data) is None
    assert wake_socket_path("dynamodb://table?region=eu-west-1") is None
    assert wake_socket_path("sqlite:///:memory:") is None


def test_each_cli_change_that_lets_a_run_start_sends_its_wake_up(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"
    store = SQLiteStore(str(db))
    pools.create_pool(store, "pool", concurrency_limit=1)
    deployments.create_deployment(store, "dep", pool="pool", job_variables=JOB)
    socket_path = wake_socket_path(url)
    assert socket_path is not None
    heard = RecordedWakeups()
    listener = WakeListener(socket_path, heard)
    assert listener.start()

    def cli(*args: str) -> None:
        result = CliRunner().invoke(app, ["--store", url, *args])
        assert result.exit_code == 0, result.output

    try:
        expected: list[tuple[str | None, str]] = []
        for args, wakes in [
            (("work-pool", "pause", "pool"), []),
            (("work-pool", "resume", "pool"), [("pool", POOL_RESUMED)]),
            (("work-pool", "set-concurrency-limit", "pool", "0"), []),
            (("work-pool", "set-concurrency-limit", "pool", "2"), [("pool", LIMIT_RAISED)]),
            (("work-pool", "clear-concurrency-limit", "pool"), [("pool", LIMIT_RAISED)]),
            (("work-queue", "pause", "default", "--pool", "pool"), []),
            (("work-queue", "resume", "default", "--pool", "pool"), [("pool", QUEUE_RESUMED)]),
            (("work-queue", "set-concurrency-limit", "default", "3", "--pool", "pool"), []),
            (("work-queue", "clear-concurrency-limit", "default", "--pool", "pool"), [("pool", LIMIT_RAISED)]),
            (("deployment", "schedule", "create", "dep", "--interval", "3600"), [("pool", SCHEDULE_CHANGED)]),
            (("deployment", "run", "dep"), [("pool", RUN_CREATED)]),
        ]:
            cli(*args)
            expected += wakes
            count = len(expected)
            wait_for(lambda n=count: len(heard.calls) >= n, SOON, f"the wake-up of {' '.join(args)}")
        time.sleep(0.3)  # nothing more arrives late
        assert heard.calls == expected
        refused = CliRunner().invoke(app, ["--store", url, "work-pool", "resume", "nope"])
        assert refused.exit_code != 0
        time.sleep(0.3)
        assert heard.calls == expected  # a refused command wakes nothing
    finally:
        listener.close()
        store.close()
    assert not socket_path.exists()


def test_a_stale_wake_socket_is_replaced_and_a_live_one_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db.wake"
    first = WakeListener(path, RecordedWakeups())
    assert first.start()
    second = WakeListener(path, RecordedWakeups())
    assert not second.start()  # another serve listens: this one does without CLI wake-ups
    first.close()
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    leftover.bind(str(path))  # as a crashed serve leaves it: bound, then nobody reads
    leftover.close()
    heard = RecordedWakeups()
    third = WakeListener(path, heard)
    assert third.start()
    try:
        SocketWakeups(path).wake("pool", "run created")
        wait_for(lambda: heard.calls, SOON, "the wake-up through the replaced socket")
        assert heard.calls == [("pool", "run created")]
    finally:
        third.close()
