"""Dispatch end to end: real subprocesses (the process provider) reporting through signed HTTP callbacks.

A real `pushpool` HTTP API answers the runs' callbacks on a free local port while the test runs dispatch
passes every 0.2 s. The checks read only the store: final states, state histories and the timeline built
from them (limits held, no priority jumps), plus invariants sampled after every pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher import deployments, pools, signing, timeline
from dispatcher.admit_pass import admit_pool
from dispatcher.api import Api
from dispatcher.callbacks import master_secret, run_token
from dispatcher.cancelling import cancel_run
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, idempotency_key
from dispatcher.http_server import make_server
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.base import JobState, Providers
from dispatcher.providers.process import ProcessProvider
from dispatcher.states import StateType
from dispatcher.store.base import pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore

PASS_INTERVAL = 0.2


def sleeper(seconds: float, code: int = 0) -> list[str]:
    return [sys.executable, "-c", f"import sys, time; time.sleep({seconds:.2f}); sys.exit({code})"]


class Harness:
    """A store, a callback server on a free port, a process provider and a dispatcher; passes on demand."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(str(tmp_path / "s.db"))
        self.http = make_server(Api(self.store, api_token=None), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread = threading.Thread(target=self.http.serve_forever, name="callbacks", daemon=True)
        self._thread.start()
        self.provider = ProcessProvider(state_dir=tmp_path / "procs", kill_grace_seconds=0.5)
        self.dispatcher = Dispatcher(
            self.store,
            providers=Providers({"process": self.provider}),
            settings=Settings(reconcile_after_seconds=1.0, resubmit_grace_seconds=5.0, provider_timeout_seconds=10.0),
            callback_base_url=self.url,
        )
        self.since = utcnow() - timedelta(seconds=1)
        self.limits: dict[str, int] = {}
        """slot key -> limit, checked against the store's active runs after every pass."""
        self.passes = 0

    def close(self) -> None:
        self.dispatcher.close()
        self.http.shutdown()
        self.http.server_close()
        # Stop whatever a failed test left running: only the process groups this test's provider started.
        for pid_file in self.provider.state_dir.glob("*/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        self.store.close()

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def drive(self, done: Callable[[], bool], *, timeout: float = 30.0, what: str = "the runs to finish") -> None:
        """Run passes every PASS_INTERVAL until `done()`; check the limits after each pass."""
        deadline = time.monotonic() + timeout
        while True:
            summary = self.dispatcher.run_pass()
            self.passes += 1
            assert not summary.crashed, summary.crashed
            self.check_limits()
            if done():
                return
            if time.monotonic() > deadline:
                states = {r.id[:8]: r.state_name for r in self.store.list_runs("p", limit=100)}
                pytest.fail(f"timed out after {timeout}s waiting for {what}: {states}")
            time.sleep(PASS_INTERVAL)

    def check_limits(self) -> None:
        active = self.store.active_runs("p")
        counts: dict[str, int] = {pool_slot("p"): len(active)}
        for run in active:
            counts[queue_slot("p", run.queue)] = counts.get(queue_slot("p", run.queue), 0) + 1
        slots = self.store.slots(list(self.limits))
        for key, limit in self.limits.items():
            assert counts.get(key, 0) <= limit, f"{key}: {counts.get(key, 0)} active runs over the limit {limit}"
            assert slots[key].active <= limit, f"{key}: slot counter {slots[key].active} over the limit {limit}"

    def all_ended(self, ids: list[str]) -> Callable[[], bool]:
        return lambda: all(self.run(i).is_terminal for i in ids)

    def pid(self, run_id: str) -> int:
        infra = self.run(run_id).infrastructure_id
        assert infra is not None
        return int((self.provider.run_dir(infra) / "pid").read_text().strip())

    def post_callback(self, run: FlowRun, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload).encode()
        token = run_token(master_secret(self.store), run.deployment_id, run.id)
        request = urllib.request.Request(
            f"{self.url}/callbacks/runs/{run.id}",
            data=body,
            headers={
                "Content-Type": "application/json",
                signing.SIGNATURE_HEADER: signing.sign(token, body, int(time.time())),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def example_pool(h: Harness, pool_limit: int, queues: dict[str, tuple[int, int | None]]) -> None:
    pools.create_pool(h.store, "p", concurrency_limit=pool_limit)
    h.limits[pool_slot("p")] = pool_limit
    for name, (priority, limit) in queues.items():
        pools.create_queue(h.store, "p", name, priority=priority, concurrency_limit=limit)
        deployments.create_deployment(h.store, f"d-{name}", pool="p", queue=name)
        if limit is not None:
            h.limits[queue_slot("p", name)] = limit


def check_timeline(h: Harness, queues: dict[str, tuple[int, int | None]], pool_limit: int) -> None:
    now = utcnow()
    bars = timeline.bars(h.store.list_runs("p", limit=500), h.since, now)
    assert all(b.admitted is not None and b.ended is not None for b in bars)
    assert timeline.peak_concurrency(bars, now).get("all", 0) <= pool_limit
    peaks = timeline.peak_concurrency(bars, now, key=lambda b: b.queue)
    for name, (_, limit) in queues.items():
        if limit is not None:
            assert peaks.get(name, 0) <= limit, (name, peaks)
    assert timeline.priority_jumps(bars, queues, now) == []


def live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies waiting to be reaped do not count)."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(proc.name))
    return members


def assert_group_gone(pgid: int, timeout: float = 3.0) -> None:
    # The supervisor writes its exit file (which the reconciler reads) a moment before it exits.
    deadline = time.monotonic() + timeout
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_group_members(pgid) == []


def callback_records(run: FlowRun) -> list[str]:
    return [
        f"{r.state.value}{'' if r.applied else ' (no-op)'}"
        for r in run.state_history
        if r.source.startswith("callback")
    ]


# priority and limits ----------------------------------------------------------------------------------------
PRIORITY_QUEUES: dict[str, tuple[int, int | None]] = {"critical": (1, 1), "high": (5, 2), "low": (10, None)}


def test_runs_are_admitted_in_priority_order_with_real_processes(harness: Harness) -> None:
    h = harness
    example_pool(h, 3, PRIORITY_QUEUES)
    ids: dict[str, list[str]] = {q: [] for q in PRIORITY_QUEUES}
    for queue, count in (("low", 4), ("high", 3), ("critical", 3)):  # created lowest first, on purpose
        for _ in range(count):
            ids[queue].append(
                deployments.run_deployment(h.store, f"d-{queue}", job_variables={"command": sleeper(0.3)}).id
            )
    every = [i for q in ids.values() for i in q]

    h.drive(h.all_ended(every))

    runs = {i: h.run(i) for i in every}
    assert {r.state for r in runs.values()} == {StateType.COMPLETED}
    check_timeline(h, PRIORITY_QUEUES, 3)
    # critical's limit plus high's equals the pool's, so low gets a slot only once high has no due run left
    admitted = {i: b.admitted for i, r in runs.items() if (b := timeline.bar_of(r)).admitted is not None}
    assert len(admitted) == len(runs)
    assert max(admitted[i] for i in ids["high"]) <= min(admitted[i] for i in ids["low"])
    for run in runs.values():
        # the job reported its end itself (the reconciler, reading the exit file, may have recorded it first)
        assert {"COMPLETED", "COMPLETED (no-op)"} & set(callback_records(run)), run.state_history
        assert run.infrastructure_id is not None


def test_limits_hold_with_processes_finishing_at_random(harness: Harness) -> None:
    h = harness
    queues: dict[str, tuple[int, int | None]] = {"a": (1, 1), "b": (5, 2), "c": (10, None)}
    example_pool(h, 3, queues)
    rng = random.Random(20240601)
    expected: dict[str, int] = {}
    for i in range(14):
        queue = ("a", "b", "c")[i % 3]
        code = rng.choice((0, 0, 1, 3))
        run = deployments.run_deployment(
            h.store, f"d-{queue}", job_variables={"command": sleeper(rng.uniform(0.1, 0.7), code)}
        )
        expected[run.id] = code

    h.drive(h.all_ended(list(expected)))

    assert h.passes > 3
    check_timeline(h, queues, 3)
    applied_by_callback = 0
    for run_id, code in expected.items():
        run = h.run(run_id)
        assert run.state is (StateType.COMPLETED if code == 0 else StateType.FAILED), (code, run.state_history)
        final = StateType.COMPLETED if code == 0 else StateType.FAILED
        # the job reported its own end (the reconciler, reading the exit file, may have recorded it first)
        reports = [r for r in run.state_history if r.source.startswith("callback") and r.state is final]
        assert reports, run.state_history
        applied_by_callback += reports[0].applied
        if code:
            assert f"exit code {code}" in (next(r for r in run.state_history if r.state is final).message or "")
    assert applied_by_callback > len(expected) // 2
    assert h.store.slots([pool_slot("p")])[pool_slot("p")].active == 0


# the reconciler and cancellation ----------------------------------------------------------------------------
def test_a_killed_process_ends_crashed_through_the_reconciler(harness: Harness) -> None:
    h = harness
    example_pool(h, 2, {})
    deployments.create_deployment(h.store, "d", pool="p", job_variables={"command": sleeper(30)})
    run = deployments.run_deployment(h.store, "d")
    # until the job has said it runs (the reconciler, seeing the process alive, may have said so first)
    h.drive(lambda: any(r.startswith("RUNNING") for r in callback_records(h.run(run.id))), what="the run to start")
    assert h.run(run.id).state is StateType.RUNNING

    pid = h.pid(run.id)
    os.killpg(pid, signal.SIGKILL)  # spot loss, OOM killer: no exit code, no callback
    h.drive(lambda: h.run(run.id).is_terminal, what="the reconciler")

    crashed = h.run(run.id)
    assert crashed.state is StateType.CRASHED
    last = crashed.state_history[-1]
    assert last.source == "reconciler" and "without an exit code" in (last.message or "")
    assert h.store.slots([pool_slot("p")])[pool_slot("p")].active == 0


def test_cancelled_run_ends_cancelled_frees_its_slot_and_its_process_group(harness: Harness) -> None:
    h = harness
    example_pool(h, 1, {})
    deployments.create_deployment(h.store, "d", pool="p", job_variables={"command": sleeper(30)})
    run = deployments.run_deployment(h.store, "d")
    waiting = deployments.run_deployment(h.store, "d", job_variables={"command": sleeper(0.1)})
    h.drive(lambda: h.run(run.id).state is StateType.RUNNING, what="the run to start")
    pid = h.pid(run.id)

    assert cancel_run(h.store, run.id).state is StateType.CANCELLING
    h.drive(lambda: h.run(run.id).is_terminal, what="the cancel to be confirmed")

    assert h.run(run.id).state is StateType.CANCELLED
    assert_group_gone(pid)
    # the freed slot lets the waiting run through
    h.drive(h.all_ended([waiting.id]))
    assert h.run(waiting.id).state is StateType.COMPLETED
    assert h.store.slots([pool_slot("p")])[pool_slot("p")].active == 0


def test_a_job_that_ignores_sigterm_is_still_stopped(harness: Harness, tmp_path: Path) -> None:
    h = harness
    example_pool(h, 1, {})
    ready = tmp_path / "ready"
    stubborn = [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(30)",
        str(ready),
    ]
    deployments.create_deployment(h.store, "d", pool="p", job_variables={"command": stubborn})
    run = deployments.run_deployment(h.store, "d")
    h.drive(ready.exists, what="the job to ignore SIGTERM")
    pid = h.pid(run.id)

    cancel_run(h.store, run.id)
    started = time.monotonic()
    h.drive(lambda: h.run(run.id).is_terminal, timeout=15, what="the stubborn job to be killed")
    assert h.run(run.id).state is StateType.CANCELLED
    assert time.monotonic() - started >= 0.4  # it took the SIGKILL after the provider's grace
    assert_group_gone(pid)
    assert h.store.slots([pool_slot("p")])[pool_slot("p")].active == 0


# stale callbacks ------------------------------------------------------------------------------------------
def test_a_late_running_report_after_completed_is_recorded_but_not_applied(harness: Harness) -> None:
    h = harness
    example_pool(h, 1, {})
    deployments.create_deployment(h.store, "d", pool="p", job_variables={"command": sleeper(0.1)})
    run = deployments.run_deployment(h.store, "d")
    h.drive(h.all_ended([run.id]))
    done = h.run(run.id)
    assert done.state is StateType.COMPLETED
    history = len(done.state_history)

    status, answer = h.post_callback(done, {"state": "RUNNING"})
    assert status == 200
    assert answer["applied"] is False and answer["state"] == "COMPLETED"
    status, answer = h.post_callback(done, {"state": "FAILED", "exit_code": 2})
    assert status == 200 and answer["applied"] is False

    after = h.run(run.id)
    assert after.state is StateType.COMPLETED
    assert len(after.state_history) == history + 2
    assert [r.applied for r in after.state_history[-2:]] == [False, False]
    # a further pass changes nothing either
    h.drive(lambda: True)
    assert h.run(run.id).state is StateType.COMPLETED

    # an unsigned or wrongly signed report is refused and changes nothing
    request = urllib.request.Request(
        f"{h.url}/callbacks/runs/{run.id}",
        data=b'{"state": "RUNNING"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert len(h.run(run.id).state_history) == history + 2


# parameters too large for a job's environment ------------------------------------------------------------
def test_parameters_too_large_for_the_environment_reach_the_command_by_reference(
    harness: Harness, tmp_path: Path
) -> None:
    # 60 KB of parameters: far over ECS's 8 KB of overrides, so they travel as PUSHPOOL_PARAMETERS_URL and
    # pushpool-run reads them with the run's token before the command starts.
    h = harness
    example_pool(h, 1, {})
    out = tmp_path / "seen.json"
    reader = [
        sys.executable,
        "-c",
        "import json, os, sys; p = json.loads(os.environ['PUSHPOOL_PARAMETERS']); "
        "url = os.environ.get('PUSHPOOL_PARAMETERS_URL', ''); "
        "json.dump({'blob': len(p['blob']), 'url': url}, open(sys.argv[1], 'w'))",
        str(out),
    ]
    deployments.create_deployment(h.store, "d", pool="p", job_variables={"command": reader})
    blob = "x" * 60_000
    run = deployments.run_deployment(h.store, "d", parameters={"blob": blob})
    h.drive(lambda: h.run(run.id).is_terminal, what="the run to read its parameters")
    assert h.run(run.id).state is StateType.COMPLETED
    seen = json.loads(out.read_text())
    assert seen["blob"] == len(blob)
    assert seen["url"] == f"{h.url}/callbacks/runs/{run.id}/parameters"


def test_cancelling_a_run_whose_real_launch_was_not_recorded_stops_its_process_before_the_next_run(
    tmp_path: Path,
) -> None:
    """Pool limit 1: a pass launched a job and died before recording it; the run is cancelled. The job must be
    found and stopped, and the next run must not start while it still runs (before: CANCELLED at once, the
    job ran on, and a second job started beside it)."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    provider = ProcessProvider(state_dir=tmp_path / "procs", kill_grace_seconds=0.3)
    now = [utcnow()]
    dispatcher = Dispatcher(
        store,
        providers=Providers({"process": provider}),
        settings=Settings(resubmit_grace_seconds=60.0, reconcile_after_seconds=300.0),
        clock=lambda: now[0],
    )
    try:
        pools.create_pool(store, "p", concurrency_limit=1)
        deployments.create_deployment(store, "d", pool="p", job_variables={"command": sleeper(60)})
        first = deployments.run_deployment(store, "d", scheduled_time=now[0] - timedelta(seconds=2))
        second = deployments.run_deployment(store, "d", scheduled_time=now[0] - timedelta(seconds=1))
        (admitted,) = admit_pool(store, "p", now[0]).admitted
        assert admitted.id == first.id
        infra = provider.submit({"command": sleeper(60)}, idempotency_key=idempotency_key(admitted))
        pgid = int((provider.run_dir(infra) / "pid").read_text())
        assert cancel_run(store, first.id, now=now[0]).state is StateType.CANCELLING

        now[0] += timedelta(seconds=61)
        found = dispatcher.run_pass()
        stored = store.get_run(first.id)
        assert stored is not None and (stored.state, stored.infrastructure_id) == (StateType.CANCELLING, infra)
        assert found.admitted == [] and found.submitted == []

        deadline = time.monotonic() + 15
        while provider.status(infra).state is not JobState.CANCELLED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert provider.status(infra).state is JobState.CANCELLED
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)  # the job's whole process group is gone

        after = dispatcher.run_pass()
        assert after.cancelled == [first.id] and after.submitted == [second.id]
    finally:
        dispatcher.close()
        for pid_file in provider.state_dir.glob("*/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        store.close()
