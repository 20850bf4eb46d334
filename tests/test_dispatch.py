"""The dispatch pass against a real SQLite store and the scriptable FakeProvider (SPEC §2, §3, §5, §6).

Time is a controllable clock (`World.now`), so backoffs, grace periods and lateness are stepped through
without sleeping; only the hung-submit test waits for real, for a fraction of a second.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher import deployments, pools, timeline
from dispatcher.admit_pass import admit_pool
from dispatcher.callbacks import callback_url, master_secret, run_token
from dispatcher.cancelling import cancel_run
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, PassSummary, idempotency_key
from dispatcher.errors import InvalidInput, NotFound, PushpoolError
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.base import JobState, JobStatus, Providers
from dispatcher.providers.fake import FakeProvider
from dispatcher.states import StateType
from dispatcher.store.base import deployment_slot, pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore

CALLBACK_BASE = "http://dispatcher.test:4300"
COMMAND = ["python", "-m", "flow"]


class SlowFake(FakeProvider):
    """A FakeProvider whose first submit of chosen keys hangs, as an infrastructure API call sometimes does."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: dict[str, float] = {}
        self.during_status: Callable[[str], None] | None = None
        """Called inside each status call: what happens elsewhere while the infrastructure API is slow."""
        self.during_submit: Callable[[str], None] | None = None

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        if self.during_submit is not None:
            self.during_submit(idempotency_key)
        delay = self.slow.pop(idempotency_key, 0.0)
        if delay:
            time.sleep(delay)
        return super().submit(job, idempotency_key=idempotency_key, resubmission=resubmission)

    def status(self, infrastructure_id: str) -> JobStatus:
        if self.during_status is not None:
            self.during_status(infrastructure_id)
        return super().status(infrastructure_id)


class World:
    """A store, a fake provider and a dispatcher on a clock the test moves."""

    def __init__(self, tmp_path: Path, *, store_class: type[SQLiteStore] = SQLiteStore, **settings: Any) -> None:
        self.store = store_class(str(tmp_path / "s.db"))
        self.now = [utcnow()]
        self.fake = SlowFake()
        defaults: dict[str, Any] = {
            "late_after_seconds": 15.0,
            "retry_backoff_seconds": 10.0,
            "provider_timeout_seconds": 5.0,
            "resubmit_grace_seconds": 60.0,
            "reconcile_after_seconds": 300.0,
            "slot_repair_settle_seconds": 0.0,  # SQLite has no lagging index; a test may recount at once
        }
        self.settings = Settings(**{**defaults, **settings})
        self.dispatcher = Dispatcher(
            self.store,
            providers=Providers({"process": self.fake}),
            settings=self.settings,
            callback_base_url=CALLBACK_BASE,
            environ={"REGION": "eu-west-1", "PUSHPOOL_TEMPLATE_ENV": "REGION"},
            clock=lambda: self.now[0],
        )

    def advance(self, seconds: float) -> None:
        self.now[0] += timedelta(seconds=seconds)

    def dispatch(self, **scope: str) -> PassSummary:
        return self.dispatcher.run_pass(**scope)

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def active(self, key: str) -> int:
        return self.store.slots([key])[key].active

    def drift(self, key: str, active: int) -> None:
        """Make a slot's count wrong, as a lost write would."""
        assert self.store.repair_slot(key, self.store.slots([key])[key], active)

    def new_run(self, deployment: str, *, ago: float = 1.0, **kwargs: Any) -> FlowRun:
        return deployments.run_deployment(
            self.store, deployment, scheduled_time=self.now[0] - timedelta(seconds=ago), **kwargs
        )

    def finish(self, run_id: str, state: JobState = JobState.COMPLETED, **status: Any) -> None:
        """Make the provider report the run's job as ended."""
        infra = self.run(run_id).infrastructure_id
        assert infra is not None
        self.fake.set_status(infra, JobStatus(state, **status))

    def launched_keys(self) -> list[str]:
        return [key for key, _ in self.fake.launches]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.dispatcher.close()
    w.store.close()


def make_world(tmp_path: Path, **settings: Any) -> World:
    return World(tmp_path, **settings)


def simple_pool(w: World, *, limit: int | None = None, queues: dict[str, tuple[int, int | None]] | None = None) -> None:
    """Pool `p`; a deployment `d-<queue>` per queue (and `d` on the default queue), each with a command."""
    pools.create_pool(w.store, "p", concurrency_limit=limit)
    for name, (priority, qlimit) in (queues or {}).items():
        pools.create_queue(w.store, "p", name, priority=priority, concurrency_limit=qlimit)
    deployments.create_deployment(w.store, "d", pool="p", job_variables={"command": COMMAND})
    for name in queues or {}:
        deployments.create_deployment(w.store, f"d-{name}", pool="p", queue=name, job_variables={"command": COMMAND})


# submission and rendering -----------------------------------------------------------------------------------
TEMPLATE = {
    "job_configuration": {
        "command": "{{ command }}",
        "env": "{{ env }}",
        "labels": "{{ labels }}",
        "name": "{{ name }}",
        "image": "{{ image }}",
        "cpu": "{{ cpu }}",
        "region": "{{ $REGION }}",
        "log_group": "/pushpool/{{ $REGION }}/{{ image }}",
    },
    "variables": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "name": {"type": "string"},
            "image": {"type": "string", "default": "img:template"},
            "cpu": {"type": "integer", "default": 256},
        },
    },
}


def test_admitted_runs_are_submitted_once_with_the_rendered_job(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    monkeypatch.setenv("PUSHPOOL_TEMPLATE_ENV", "REGION")  # the operator lets templates read $REGION
    pools.create_pool(
        w.store,
        "p",
        base_job_template=TEMPLATE,
        job_variables={"image": "img:pool", "cpu": 512, "env": {"A": "pool", "B": "pool"}},
        providers=w.dispatcher.providers,  # a job of the fake's, which takes any keys
    )
    dep = deployments.create_deployment(
        w.store,
        "d",
        pool="p",
        job_variables={"image": "img:dep", "env": {"B": "dep", "C": "dep"}, "command": COMMAND},
        parameters={"x": 1},
    )
    first = w.new_run("d", ago=2, job_variables={"cpu": 1024, "env": {"C": "run"}}, parameters={"y": 2})
    second = w.new_run("d", ago=1)

    summary = w.dispatch()

    assert summary.admitted == [first.id, second.id]
    assert sorted(summary.submitted) == sorted([first.id, second.id])
    assert summary.crashed == {} and summary.retrying == {}
    assert summary.pools == ["p"]
    assert sorted(w.launched_keys()) == sorted([f"{first.id}-1", f"{second.id}-1"])
    jobs = {key: job for key, job in w.fake.launches}
    job = jobs[f"{first.id}-1"]

    # precedence: template default < pool < deployment < run; env merged key by key
    assert job["image"] == "img:dep"
    assert job["cpu"] == 1024  # a whole placeholder keeps the value's type
    assert job["command"] == COMMAND
    assert job["region"] == "eu-west-1"  # {{ $REGION }} from the dispatcher's environment
    assert job["log_group"] == "/pushpool/eu-west-1/img:dep"
    env = job["env"]
    assert {k: env[k] for k in ("A", "B", "C")} == {"A": "pool", "B": "dep", "C": "run"}
    assert env["PUSHPOOL_RUN_ID"] == first.id
    assert env["PUSHPOOL_DEPLOYMENT"] == "d"
    assert env["PUSHPOOL_POOL"] == "p"
    assert env["PUSHPOOL_QUEUE"] == "default"
    assert json.loads(env["PUSHPOOL_PARAMETERS"]) == {"x": 1, "y": 2}
    assert env["PUSHPOOL_CALLBACK_URL"] == callback_url(CALLBACK_BASE, first.id)
    assert env["PUSHPOOL_CALLBACK_URL"] == f"{CALLBACK_BASE}/callbacks/runs/{first.id}"
    assert env["PUSHPOOL_CALLBACK_TOKEN"] == run_token(master_secret(w.store), dep.id, first.id)
    assert job["labels"] == {"pushpool.io/run-id": first.id, "pushpool.io/pool": "p", "pushpool.io/deployment": "d"}
    assert job["name"] == first.name

    # the second run takes the pool's and deployment's values, and its own token
    other = jobs[f"{second.id}-1"]
    assert other["cpu"] == 512
    assert {k: other["env"][k] for k in ("A", "B", "C")} == {"A": "pool", "B": "dep", "C": "dep"}
    assert other["env"]["PUSHPOOL_CALLBACK_TOKEN"] != env["PUSHPOOL_CALLBACK_TOKEN"]

    for run in (first, second):
        stored = w.run(run.id)
        assert (stored.state, stored.state_name) == (StateType.PENDING, "InfrastructurePending")
        assert stored.infrastructure_id == f"fake-{run.id}-1"
        assert stored.submission_attempts == 1
        assert idempotency_key(stored) == f"{run.id}-1"
    assert w.active(pool_slot("p")) == 2

    # a second pass launches nothing again
    again = w.dispatch()
    assert again.admitted == [] and again.submitted == []
    assert len(w.fake.launches) == 2
    assert len(w.fake.submit_calls) == 2


# priority and limits ------------------------------------------------------------------------------------
EXAMPLE = {"critical": (1, 1), "high": (5, 3), "low": (10, None)}


def queues_of(w: World, ids: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(EXAMPLE, 0)
    for run_id in ids:
        counts[w.run(run_id).queue] += 1
    return counts


def test_priority_waterfall_and_limits_across_passes(tmp_path: Path) -> None:
    w = make_world(tmp_path, reconcile_after_seconds=1.0)
    try:
        simple_pool(w, limit=5, queues=EXAMPLE)
        runs = {q: [w.new_run(f"d-{q}", ago=60 - i) for i in range(4 if q != "low" else 6)] for q in EXAMPLE}

        first = w.dispatch()
        assert queues_of(w, first.admitted) == {"critical": 1, "high": 3, "low": 1}
        # inside a queue, the oldest first
        assert set(first.admitted) == {runs["critical"][0].id, *(r.id for r in runs["high"][:3]), runs["low"][0].id}
        assert len(w.fake.launches) == 5
        assert w.active(pool_slot("p")) == 5
        assert w.active(queue_slot("p", "critical")) == 1 and w.active(queue_slot("p", "high")) == 3

        # every limit is full: nothing moves, and the waiting runs are explained
        blocked = w.dispatch()
        assert blocked.admitted == []
        assert runs["critical"][1].id in blocked.waiting and runs["low"][1].id in blocked.waiting

        # all five end; the reconciler (past reconcile_after) frees their slots before admission
        for run_id in first.admitted:
            w.finish(run_id)
        w.advance(2)
        second = w.dispatch()
        assert set(second.reconciled) == set(first.admitted)
        assert set(second.reconciled.values()) == {"COMPLETED"}
        assert all(w.run(i).state is StateType.COMPLETED for i in first.admitted)
        assert queues_of(w, second.admitted) == {"critical": 1, "high": 1, "low": 3}
        assert w.active(pool_slot("p")) == 5

        # one low run ends and a high run arrives: the freed slot goes to the higher queue
        low_done = next(i for i in second.admitted if w.run(i).queue == "low")
        w.finish(low_done)
        newcomer = w.new_run("d-high", ago=0)
        w.advance(2)
        third = w.dispatch()
        assert third.reconciled == {low_done: "COMPLETED"}
        assert third.admitted == [newcomer.id]
        assert w.active(pool_slot("p")) == 5
        assert w.active(queue_slot("p", "high")) == 2
    finally:
        w.dispatcher.close()
        w.store.close()


def test_deployment_limit_holds(world: World) -> None:
    w = world
    pools.create_pool(w.store, "p")
    deployments.create_deployment(w.store, "d", pool="p", job_variables={"command": COMMAND}, concurrency_limit=1)
    a, b = w.new_run("d", ago=2), w.new_run("d", ago=1)
    summary = w.dispatch()
    assert summary.admitted == [a.id]
    assert b.id in summary.waiting
    assert w.active(deployment_slot(a.deployment_id)) == 1


# submission failures --------------------------------------------------------------------------------------
def test_transient_failures_retry_with_backoff_and_new_keys_then_crash(world: World) -> None:
    w = world
    simple_pool(w, limit=1)
    a = w.new_run("d", ago=2)
    b = w.new_run("d", ago=1)

    w.fake.fail_next(1, transient=True, message="ThrottlingException: rate exceeded")
    first = w.dispatch()
    assert first.admitted == [a.id]
    assert a.id in first.retrying and "ThrottlingException" in first.retrying[a.id]
    run = w.run(a.id)
    assert (run.state, run.state_name) == (StateType.SCHEDULED, "AwaitingRetry")
    assert run.scheduled_time == w.now[0] + timedelta(seconds=10)
    assert run.submission_attempts == 1 and run.infrastructure_id is None
    assert "ThrottlingException" in (run.state_history[-1].message or "")
    assert w.active(pool_slot("p")) == 0  # the slot is free again

    # the freed slot goes to b while a waits out its backoff
    second = w.dispatch()
    assert second.admitted == [b.id] and second.submitted == [b.id]

    # b ends; a is due again: a new admission is a new attempt with a new key, and it fails again
    w.finish(b.id)
    w.advance(301)
    w.fake.fail_next(1, transient=True, message="ServerException: 503")
    third = w.dispatch()
    assert third.reconciled == {b.id: "COMPLETED"}
    assert third.admitted == [a.id]
    run = w.run(a.id)
    assert run.state_name == "AwaitingRetry" and run.submission_attempts == 2
    assert run.scheduled_time == w.now[0] + timedelta(seconds=20)  # backoff doubles
    assert w.fake.submit_calls[-1] == f"{a.id}-2"
    assert f"{a.id}-1" in w.fake.submit_calls

    # the third attempt fails too: with submission_attempts=3 the run is CRASHED with the provider's words
    w.advance(21)
    w.fake.fail_next(1, transient=True, message="ServerException: still 503")
    fourth = w.dispatch()
    assert fourth.admitted == [a.id]
    run = w.run(a.id)
    assert run.state is StateType.CRASHED
    assert "ServerException: still 503" in (run.state_history[-1].message or "")
    assert "3 attempts" in fourth.crashed[a.id]
    assert w.fake.submit_calls.count(f"{a.id}-3") == 1
    assert not any(key.startswith(a.id) for key in w.launched_keys())
    assert w.active(pool_slot("p")) == 0


def test_permanent_failure_crashes_at_once_with_the_providers_words(world: World) -> None:
    w = world
    simple_pool(w, limit=2)
    run = w.new_run("d")
    words = "AccessDeniedException: not authorized to perform ecs:RunTask"
    w.fake.fail_next(1, transient=False, message=words)
    summary = w.dispatch()
    assert summary.crashed == {run.id: words}
    stored = w.run(run.id)
    assert stored.state is StateType.CRASHED and stored.submission_attempts == 1
    assert stored.state_history[-1].message == words
    assert w.active(pool_slot("p")) == 0 and w.fake.launches == []


def test_render_failure_crashes_naming_the_variable(world: World) -> None:
    w = world
    template: dict[str, Any] = {
        "job_configuration": {"command": "{{ command }}", "image": "{{ image }}"},
        "variables": {
            "type": "object",
            "properties": {"command": {"type": "array"}, "image": {"type": "string"}},
        },
    }
    pools.create_pool(w.store, "p", base_job_template=template, providers=w.dispatcher.providers)
    deployments.create_deployment(w.store, "d", pool="p", job_variables={"command": COMMAND})
    run = w.new_run("d")
    # The platform team now requires an image; the run created before cannot be rendered any more.
    pools.update_pool(
        w.store,
        "p",
        base_job_template={**template, "variables": {**template["variables"], "required": ["image"]}},
        providers=w.dispatcher.providers,
    )
    summary = w.dispatch()
    assert summary.admitted == [run.id]
    assert run.id in summary.crashed and "image" in summary.crashed[run.id]
    stored = w.run(run.id)
    assert stored.state is StateType.CRASHED
    assert "'image'" in (stored.state_history[-1].message or "")
    assert w.fake.submit_calls == [] and w.active(pool_slot("p")) == 0


def test_a_pool_without_a_template_crashes_its_runs_saying_so_and_the_pass_goes_on(world: World) -> None:
    w = world
    simple_pool(w)
    pools.create_pool(w.store, "bare")
    deployments.create_deployment(w.store, "b", pool="bare", job_variables={"command": COMMAND})
    stranded, fine = w.new_run("b"), w.new_run("d")
    bare = w.store.get_pool("bare")
    assert bare is not None
    w.store.update_pool(bare.model_copy(update={"base_job_template": {}}))  # the model's default: no template
    with pytest.raises(InvalidInput, match="'command' is not a variable of this pool"):
        deployments.create_deployment(w.store, "b2", pool="bare", job_variables={"command": COMMAND})

    summary = w.dispatch()
    assert summary.submitted == [fine.id]
    assert "has no base job template" in summary.crashed[stranded.id]
    assert w.run(stranded.id).state is StateType.CRASHED and w.active(pool_slot("bare")) == 0


def test_invalid_job_for_the_provider_crashes_before_submission(world: World) -> None:
    w = world
    pools.create_pool(w.store, "p")
    deployments.create_deployment(w.store, "d", pool="p")  # no command: the provider's model refuses it
    run = w.new_run("d")
    summary = w.dispatch()
    assert "command" in summary.crashed[run.id]
    assert w.fake.submit_calls == []


# hung submits and interrupted passes ------------------------------------------------------------------------
def test_hung_submit_times_out_and_is_resubmitted_with_the_same_key(tmp_path: Path) -> None:
    w = make_world(tmp_path, provider_timeout_seconds=0.3, resubmit_grace_seconds=30)
    try:
        simple_pool(w)
        slow, b, c = w.new_run("d", ago=3), w.new_run("d", ago=2), w.new_run("d", ago=1)
        key = f"{slow.id}-1"
        w.fake.slow[key] = 1.2

        started = time.monotonic()
        first = w.dispatch()
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"the pass waited {elapsed:.2f}s for a hung call"
        assert sorted(first.submitted) == sorted([b.id, c.id])
        assert "timed out" in first.problems[slow.id]
        hung = w.run(slow.id)
        assert hung.state is StateType.PENDING and hung.state_name == "Pending"
        assert hung.infrastructure_id is None
        assert w.run(b.id).infrastructure_id == f"fake-{b.id}-1"

        # the abandoned call still completes at the provider, later
        deadline = time.monotonic() + 5
        while w.fake.infrastructure_id(key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.fake.infrastructure_id(key) == f"fake-{key}"

        # within the grace period nothing is resubmitted
        w.advance(10)
        assert w.dispatch().submitted == []
        assert w.fake.submit_calls.count(key) == 1

        # after it, the same key finds the first launch instead of starting a second one
        w.advance(25)
        later = w.dispatch()
        assert later.submitted == [slow.id]
        assert w.fake.submit_calls.count(key) == 2
        assert w.launched_keys().count(key) == 1
        assert len(w.fake.launches) == 3
        recorded = w.run(slow.id)
        assert (recorded.state_name, recorded.infrastructure_id) == ("InfrastructurePending", f"fake-{key}")
        assert recorded.submission_attempts == 1
    finally:
        w.dispatcher.close()
        w.store.close()


def test_pass_killed_between_admit_and_submit_loses_nothing_and_launches_nothing_twice(world: World) -> None:
    w = world
    simple_pool(w, limit=3)
    lost = w.new_run("d", ago=2)
    launched = w.new_run("d", ago=1)
    # A pass admitted both and died: one before calling the provider, one after the provider launched it but
    # before the id was recorded.
    result = admit_pool(w.store, "p", w.now[0], settings=w.settings)
    assert {r.id for r in result.admitted} == {lost.id, launched.id}
    w.fake.submit({"command": COMMAND}, idempotency_key=f"{launched.id}-1")
    assert w.active(pool_slot("p")) == 2

    # inside the grace period a pass leaves them alone (the dead pass might still be finishing)
    early = w.dispatch()
    assert early.submitted == [] and early.admitted == []
    assert w.fake.submit_calls == [f"{launched.id}-1"]

    w.advance(61)
    after = w.dispatch()
    assert sorted(after.submitted) == sorted([lost.id, launched.id])
    assert sorted(w.launched_keys()) == sorted([f"{lost.id}-1", f"{launched.id}-1"])
    for run in (lost, launched):
        stored = w.run(run.id)
        assert stored.infrastructure_id == f"fake-{run.id}-1"
        assert stored.state_name == "InfrastructurePending"

    w.advance(61)
    w.dispatch()
    assert len(w.fake.launches) == 2
    assert w.fake.submit_calls.count(f"{lost.id}-1") == 1
    assert w.active(pool_slot("p")) == 2


def test_what_happens_to_a_run_while_it_is_submitted_is_respected(world: World) -> None:
    w = world
    simple_pool(w)
    fast, cancelled, plain = w.new_run("d", ago=3), w.new_run("d", ago=2), w.new_run("d", ago=1)

    def meanwhile(key: str) -> None:
        if key == f"{fast.id}-1":  # a fast job: its COMPLETED callback lands before the id is recorded
            run = w.run(fast.id)
            assert w.store.save_run(run, run.moved(StateType.COMPLETED, source="callback:x", now=w.now[0])[0])
        elif key == f"{cancelled.id}-1":  # a user cancels while the provider call is in flight
            cancel_run(w.store, cancelled.id, now=w.now[0])

    w.fake.during_submit = meanwhile
    w.fake.fail_next(1, transient=True, message="StopTask throttled", method="cancel")
    summary = w.dispatch()

    # the failed stop of the cancelled run is a problem for this run only; the others are recorded
    assert "StopTask throttled" in summary.problems[cancelled.id]
    assert w.run(plain.id).state_name == "InfrastructurePending"
    done = w.run(fast.id)
    assert done.state is StateType.COMPLETED
    assert done.infrastructure_id == f"fake-{fast.id}-1"  # kept, so its logs can be found
    stopping = w.run(cancelled.id)
    assert stopping.state is StateType.CANCELLING
    assert stopping.infrastructure_id == f"fake-{cancelled.id}-1"

    # the next pass asks the provider to stop it again, and then it ends
    w.dispatch()
    assert f"fake-{cancelled.id}-1" in w.fake.cancelled
    w.dispatch()
    assert w.run(cancelled.id).state is StateType.CANCELLED
    assert w.active(pool_slot("p")) == 1  # only `plain` still holds a slot


class CountingStore(SQLiteStore):
    """A real SQLite store that counts its write transactions and the runs it is asked for one by one."""

    writes = 0
    run_reads = 0

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.writes += 1
        with super()._write() as db:
            yield db

    def get_run(self, run_id: str) -> FlowRun | None:
        self.run_reads += 1
        return super().get_run(run_id)


def test_a_pass_records_its_launches_in_one_write_without_reading_each_run_back(tmp_path: Path) -> None:
    w = World(tmp_path, store_class=CountingStore)
    store = w.store
    assert isinstance(store, CountingStore)
    simple_pool(w)

    def one_pass(count: int) -> tuple[int, int]:
        ids = [w.new_run("d").id for _ in range(count)]
        store.writes = store.run_reads = 0
        summary = w.dispatch()
        counted = store.writes, store.run_reads
        assert sorted(summary.submitted) == sorted(ids)
        assert {w.run(i).state_name for i in ids} == {"InfrastructurePending"}
        assert all(w.run(i).infrastructure_id == f"fake-{i}-1" for i in ids)
        for run_id in ids:
            w.finish(run_id)
        w.dispatch()  # the reconciler ends them: the next pass starts with free slots
        return counted

    one_pass(1)  # the first pass also writes the master secret
    single, many = one_pass(1), one_pass(20)
    assert many == single  # the admission, the pool's touch and one write for every launch: none per run
    assert many[1] == 0
    w.dispatcher.close()


def test_history_times_never_go_back_and_submission_is_stamped_when_recorded(world: World) -> None:
    w = world
    simple_pool(w)
    late_comer = w.new_run("d", ago=5)
    w.now[0] = late_comer.created - timedelta(seconds=2)  # the pass read its clock before the run was created
    w.fake.during_submit = lambda key: w.advance(3)  # the provider call takes 3 s of the pass's clock
    assert w.dispatch().submitted == [late_comer.id]

    history = w.run(late_comer.id).state_history
    assert [r.name for r in history] == ["Scheduled", "Pending", "InfrastructurePending"]
    times = [r.time for r in history]
    assert times == sorted(times), "no record predates the one before it"
    assert times[1] == late_comer.created  # admitted at the pass's clock, 2 s before: kept in order
    assert times[2] == w.now[0]  # recorded when the launch was known, not at admission
    assert timeline.bar_of(w.run(late_comer.id)).admitted == late_comer.created


# cancellation -----------------------------------------------------------------------------------------------
def test_cancelling_a_scheduled_run_is_immediate(world: World) -> None:
    w = world
    simple_pool(w)
    run = w.new_run("d")
    cancelled = cancel_run(w.store, run.id, now=w.now[0])
    assert cancelled.state is StateType.CANCELLED
    summary = w.dispatch()
    assert summary.admitted == [] and w.fake.submit_calls == []
    assert w.run(run.id).state is StateType.CANCELLED


def test_cancelling_a_running_run_stops_it_and_holds_the_slot_until_confirmed(tmp_path: Path) -> None:
    w = make_world(tmp_path, reconcile_after_seconds=1.0)
    try:
        simple_pool(w, limit=1)
        run = w.new_run("d", ago=2)
        waiting = w.new_run("d", ago=1)
        w.dispatch()
        w.finish(run.id, JobState.RUNNING)
        w.advance(2)
        assert w.dispatch().reconciled == {run.id: "RUNNING"}
        infra = w.run(run.id).infrastructure_id
        assert infra is not None

        assert cancel_run(w.store, run.id, now=w.now[0]).state is StateType.CANCELLING
        stop = w.dispatch()
        assert w.fake.cancelled == [infra]
        assert w.run(run.id).state is StateType.CANCELLING
        assert w.active(pool_slot("p")) == 1 and stop.admitted == []  # the infrastructure may still run

        # the job ignored the stop: the next pass asks again (the process provider escalates to SIGKILL)
        w.finish(run.id, JobState.RUNNING)
        again = w.dispatch()
        assert w.fake.cancelled == [infra, infra]
        assert w.run(run.id).state is StateType.CANCELLING and again.admitted == []

        # the provider confirms: CANCELLED, and the slot goes to the waiting run in the same pass
        confirmed = w.dispatch()
        assert confirmed.cancelled == [run.id]
        assert w.run(run.id).state is StateType.CANCELLED
        assert confirmed.admitted == [waiting.id]
        assert w.active(pool_slot("p")) == 1
        w.dispatch()
        assert w.fake.cancelled == [infra, infra]  # nothing is stopped twice once it ended
    finally:
        w.dispatcher.close()
        w.store.close()


def test_cancelling_a_run_never_submitted_ends_after_the_grace(world: World) -> None:
    w = world
    simple_pool(w, limit=1)
    run = w.new_run("d")
    admit_pool(w.store, "p", w.now[0], settings=w.settings)  # admitted by a pass that then died
    assert cancel_run(w.store, run.id, now=w.now[0]).state is StateType.CANCELLING

    w.advance(30)
    w.dispatch()
    assert w.run(run.id).state is StateType.CANCELLING
    assert w.active(pool_slot("p")) == 1

    w.advance(31)
    summary = w.dispatch()
    assert summary.cancelled == [run.id]
    stored = w.run(run.id)
    assert stored.state is StateType.CANCELLED
    assert "before it was submitted" in (stored.state_history[-1].message or "")
    assert w.fake.submit_calls == [] and w.active(pool_slot("p")) == 0


def _launched_but_not_recorded(w: World, deployment: str = "d") -> FlowRun:
    """A run admitted by a pass that launched its job and died before recording the id (or timed out)."""
    run = w.new_run(deployment, ago=1)
    result = admit_pool(w.store, "p", w.now[0], settings=w.settings)
    assert [r.id for r in result.admitted] == [run.id]
    w.fake.submit({"command": COMMAND}, idempotency_key=idempotency_key(result.admitted[0]))
    return w.run(run.id)


def test_cancelling_a_run_whose_launch_was_not_recorded_stops_its_job_first(world: World) -> None:
    w = world
    simple_pool(w, limit=1)
    run = _launched_but_not_recorded(w)
    waiting = w.new_run("d", ago=0.5)
    assert cancel_run(w.store, run.id, now=w.now[0]).state is StateType.CANCELLING
    infra = f"fake-{run.id}-1"

    w.advance(61)
    found = w.dispatch()
    stored = w.run(run.id)
    assert (stored.state, stored.infrastructure_id) == (StateType.CANCELLING, infra)  # found, then stopped
    assert w.fake.cancelled == [infra] and f"{run.id}-1" in w.fake.find_calls
    assert found.admitted == [] and w.active(pool_slot("p")) == 1  # the job may still run: no second one

    w.fake.set_status(infra, JobStatus(JobState.RUNNING))  # it ignores the stop: still no second job
    w.advance(61)
    assert w.dispatch().admitted == [] and w.run(run.id).state is StateType.CANCELLING
    assert w.fake.cancelled == [infra, infra]

    confirmed = w.dispatch()  # the fake confirms the second stop
    assert w.run(run.id).state is StateType.CANCELLED
    assert confirmed.admitted == [waiting.id]
    assert [key for key, _ in w.fake.launches] == [f"{run.id}-1", f"{waiting.id}-1"]


def test_a_running_run_without_infrastructure_id_is_found_and_then_reconciled(tmp_path: Path) -> None:
    w = make_world(tmp_path, reconcile_after_seconds=5.0)
    try:
        simple_pool(w, limit=2)
        run = _launched_but_not_recorded(w)
        # Its job's RUNNING callback arrives; the id was never recorded.
        current = w.run(run.id)
        assert w.store.save_run(current, current.moved(StateType.RUNNING, source="callback:a", now=w.now[0])[0])

        w.advance(30)
        assert w.dispatch().reconciled == {} and w.fake.find_calls == []  # within the grace: left alone
        w.advance(31)
        w.dispatch()
        infra = f"fake-{run.id}-1"
        assert w.run(run.id).infrastructure_id == infra and w.run(run.id).state is StateType.RUNNING

        # Its job dies without a word: the status says so, and the slot is freed.
        w.fake.set_status(infra, JobStatus(JobState.CRASHED, exit_code=137, message="OOM killed"))
        w.advance(6)
        assert w.dispatch().reconciled == {run.id: "CRASHED"}
        assert w.active(pool_slot("p")) == 0
    finally:
        w.dispatcher.close()
        w.store.close()


def test_a_running_run_whose_launch_cannot_be_found_crashes_after_the_grace(world: World) -> None:
    w = world
    simple_pool(w, limit=1)
    run = w.new_run("d", ago=1)
    admit_pool(w.store, "p", w.now[0], settings=w.settings)
    current = w.run(run.id)
    assert w.store.save_run(current, current.moved(StateType.RUNNING, source="callback:a", now=w.now[0])[0])
    w.advance(61)
    summary = w.dispatch()
    assert summary.reconciled == {run.id: "CRASHED"}
    message = w.run(run.id).state_history[-1].message or ""
    assert "never recorded" in message and f"{run.id}-1" in message
    assert w.active(pool_slot("p")) == 0 and w.fake.launches == []


# reconciler -------------------------------------------------------------------------------------------------
def test_reconciler_moves_runs_the_provider_reports_and_frees_their_slots(tmp_path: Path) -> None:
    w = make_world(tmp_path, reconcile_after_seconds=5.0)
    try:
        simple_pool(w, limit=3)
        done, failed, vanished = (w.new_run("d", ago=3 - i) for i in range(3))
        w.dispatch()
        assert w.active(pool_slot("p")) == 3
        w.finish(done.id)
        w.finish(failed.id, JobState.FAILED, exit_code=3, message="exit code 3")
        infra = w.run(vanished.id).infrastructure_id
        assert infra is not None
        w.fake.forget(infra)

        # not silent long enough yet: the provider is not asked
        w.advance(2)
        assert w.dispatch().reconciled == {}
        assert w.fake.status_calls == []

        w.advance(4)
        summary = w.dispatch()
        assert summary.reconciled == {done.id: "COMPLETED", failed.id: "FAILED", vanished.id: "CRASHED"}
        assert w.run(done.id).state is StateType.COMPLETED
        assert w.run(failed.id).state is StateType.FAILED
        assert w.run(failed.id).state_history[-1].message == "exit code 3"
        crashed = w.run(vanished.id)
        assert crashed.state is StateType.CRASHED
        assert infra in (crashed.state_history[-1].message or "")
        assert "no longer knows" in (crashed.state_history[-1].message or "")
        assert all(h.source == "reconciler" for h in (w.run(i).state_history[-1] for i in summary.reconciled))
        assert w.active(pool_slot("p")) == 0
        assert w.active(queue_slot("p", "default")) == 0
    finally:
        w.dispatcher.close()
        w.store.close()


def test_admissions_are_stamped_after_the_reconciler_ran(tmp_path: Path) -> None:
    """A slot freed by a callback while the pass was busy reconciling must not look taken before it was freed."""
    w = make_world(tmp_path, reconcile_after_seconds=1.0)
    try:
        simple_pool(w, limit=1)
        first, second = w.new_run("d", ago=2), w.new_run("d", ago=1)
        w.dispatch()
        w.advance(2)

        def slow_status(_: str) -> None:
            w.advance(1)
            current = w.run(first.id)
            if current.is_active:  # the job's own COMPLETED callback lands while the provider call is slow
                assert w.store.save_run(
                    current, current.moved(StateType.COMPLETED, source="callback:x", now=w.now[0])[0]
                )
            w.advance(1)

        w.fake.during_status = slow_status
        summary = w.dispatch()
        assert summary.admitted == [second.id]
        now = w.now[0]
        bars = timeline.bars([w.run(first.id), w.run(second.id)], now - timedelta(hours=1), now)
        assert timeline.peak_concurrency(bars, now) == {"all": 1}
        ended, admitted = timeline.bar_of(w.run(first.id)).ended, timeline.bar_of(w.run(second.id)).admitted
        assert ended is not None and admitted is not None and admitted >= ended
    finally:
        w.dispatcher.close()
        w.store.close()


def test_slot_repair_is_counted_and_lets_admission_proceed(world: World) -> None:
    w = world
    simple_pool(w, limit=2)
    first = w.new_run("d", ago=2)
    w.dispatch()
    assert w.active(pool_slot("p")) == 1
    second = w.new_run("d", ago=1)
    # a lost decrement (say) leaves the pool looking full
    w.drift(pool_slot("p"), 2)
    summary = w.dispatch()
    assert summary.repairs == {pool_slot("p"): "was 2, counted 1"}
    assert summary.admitted == [second.id]  # repaired before admission
    assert w.active(pool_slot("p")) == 2
    assert w.run(first.id).is_active
    assert w.dispatch().repairs == {}


def test_slot_repair_down_from_a_phantom_count(world: World) -> None:
    w = world
    simple_pool(w)
    w.drift(queue_slot("p", "default"), 7)
    summary = w.dispatch()
    assert summary.repairs == {queue_slot("p", "default"): "was 7, counted 0"}
    assert w.active(queue_slot("p", "default")) == 0


def test_a_slot_that_changed_within_the_settle_time_is_recounted_up_but_not_down(tmp_path: Path) -> None:
    # On DynamoDB the index of active runs may not show an admission made a moment ago; a recount from it
    # would undo the admission, so a slot that just changed is not lowered until a later pass. An undercount
    # is raised at once: a lagging index only misses runs, and an undercount is what breaks a limit.
    w = World(tmp_path, slot_repair_settle_seconds=3600.0)
    try:
        simple_pool(w, limit=2)
        w.new_run("d", ago=2)
        w.dispatch()
        w.drift(queue_slot("p", "default"), 7)
        w.drift(pool_slot("p"), 0)
        assert w.dispatch().repairs == {pool_slot("p"): "was 0, counted 1"}
        assert (w.active(pool_slot("p")), w.active(queue_slot("p", "default"))) == (1, 7)
    finally:
        w.dispatcher.close()
        w.store.close()


# lateness, scoping, heartbeat -------------------------------------------------------------------------------
def test_run_waiting_behind_a_limit_turns_late(world: World) -> None:
    w = world
    simple_pool(w, limit=1)
    w.new_run("d", ago=1)
    waiting = w.new_run("d", ago=0)
    first = w.dispatch()
    assert first.late == 0
    assert w.run(waiting.id).state_name == "Scheduled"

    w.advance(10)
    assert w.dispatch().late == 0
    assert w.run(waiting.id).state_name == "Scheduled"

    w.advance(6)  # now 16 s past its scheduled time, over late_after (15 s)
    summary = w.dispatch()
    assert summary.late == 1
    late = w.run(waiting.id)
    assert (late.state, late.state_name) == (StateType.SCHEDULED, "Late")
    assert w.dispatch().late == 0  # named once


def test_scoped_passes_admit_only_what_the_pool_s_waterfall_gives_their_queue(world: World) -> None:
    w = world
    simple_pool(w, limit=3, queues={"high": (1, None), "low": (10, None)})
    highs = [w.new_run("d-high", ago=5 - i) for i in range(2)]
    lows = [w.new_run("d-low", ago=3 - i) for i in range(3)]

    # The whole pool's waterfall gives high both its runs and low the one slot left: a pass scoped to low
    # admits that one, not three, however long high's runs have waited.
    low_pass = w.dispatch(pool="p", queue="low")
    assert low_pass.admitted == [lows[0].id]
    assert all(w.run(h.id).state is StateType.SCHEDULED for h in highs)
    assert lows[1].id in low_pass.waiting and "high" in low_pass.waiting[lows[1].id]
    assert set(low_pass.waiting) <= {r.id for r in lows}  # it explains its own queue's runs only
    queues = {q.name: q.status for q in w.store.list_queues("p")}
    assert queues["low"] == "READY" and queues["high"] == "NOT_READY"
    assert w.dispatch(pool="p", queue="low").admitted == []  # high's due runs still come first

    high_pass = w.dispatch(pool="p", queue="high")
    assert high_pass.admitted == [h.id for h in highs]
    assert w.active(pool_slot("p")) == 3
    assert w.dispatch(pool="p", queue="low").admitted == []  # and now the pool is full

    with pytest.raises(PushpoolError, match="--pool"):
        w.dispatch(queue="low")
    with pytest.raises(NotFound, match="nope"):
        w.dispatch(pool="nope")
    with pytest.raises(NotFound, match="nope"):
        w.dispatch(pool="p", queue="nope")


def test_a_pass_marks_pools_and_queues_ready(world: World) -> None:
    w = world
    simple_pool(w, queues={"extra": (5, None)})
    pool = w.store.get_pool("p")
    assert pool is not None and pool.status == "NOT_READY"
    assert {q.status for q in w.store.list_queues("p")} == {"NOT_READY"}
    w.dispatch()
    pool = w.store.get_pool("p")
    assert pool is not None and pool.status == "READY"
    assert {q.name: q.status for q in w.store.list_queues("p")} == {"default": "READY", "extra": "READY"}


def test_a_paused_pool_admits_nothing_and_its_runs_turn_late(world: World) -> None:
    w = world
    simple_pool(w)
    pools.update_pool(w.store, "p", paused=True)
    run = w.new_run("d", ago=20)
    summary = w.dispatch()
    assert summary.admitted == [] and summary.late == 1
    assert w.run(run.id).state_name == "Late"
    assert w.fake.submit_calls == []


def test_summary_serialises(world: World) -> None:
    w = world
    simple_pool(w)
    run = w.new_run("d")
    summary = w.dispatch()
    data = json.loads(json.dumps(summary.as_dict()))
    assert data["admitted"] == [run.id]
    assert datetime.fromisoformat(data["started"]) == w.now[0]
    assert "1 admitted" in summary.headline()


def test_a_deployment_whose_stored_schedule_cannot_be_evaluated_stops_no_other_run(world: World) -> None:
    # A schedule an older version stored (INTERVAL=0: a ZeroDivisionError in every pass, for every pool).
    import sqlite3
    from contextlib import closing

    from dispatcher.schedules import IntervalSchedule, RRuleSchedule

    w = world
    simple_pool(w)
    pools.create_pool(w.store, "q")
    every_minute = IntervalSchedule(interval=60)
    deployments.update_deployment(w.store, "d", schedules=[every_minute])
    deployments.create_deployment(w.store, "broken", pool="q", schedules=[RRuleSchedule(rrule="FREQ=DAILY")])
    with closing(sqlite3.connect(w.store.url.removeprefix("sqlite:///"))) as db, db:
        (data,) = db.execute("SELECT data FROM deployments WHERE name = 'broken'").fetchone()
        document = json.loads(data)
        document["schedules"] = [{"rrule": "FREQ=DAILY;INTERVAL=0", "timezone": "UTC"}]
        db.execute("UPDATE deployments SET data = ? WHERE name = 'broken'", (json.dumps(document),))

    first = w.dispatch()
    assert first.pools == ["p", "q"]
    assert first.scheduled == 60  # d's runs for the next hour
    assert list(first.problems) == ["broken"]
    assert "INTERVAL must be a whole number of 1 or more" in first.problems["broken"]
    assert "pause-schedule broken" in first.problems["broken"]

    w.advance(61)
    second = w.dispatch()
    assert list(second.problems) == ["broken"]
    assert second.admitted and second.submitted == second.admitted
    assert {w.run(run_id).deployment for run_id in second.admitted} == {"d"}
    assert all(w.run(run_id).auto_scheduled for run_id in second.admitted)
    assert w.store.list_runs("q", limit=10) == []


def test_a_job_that_does_not_start_within_task_start_timeout_seconds_is_stopped_and_crashed(tmp_path: Path) -> None:
    w = make_world(tmp_path, reconcile_after_seconds=300.0)
    try:
        template: dict[str, Any] = {
            "job_configuration": {
                "command": "{{ command }}",
                "task_start_timeout_seconds": "{{ task_start_timeout_seconds }}",
            },
            "variables": {
                "type": "object",
                "properties": {
                    "command": {"type": "array", "items": {"type": "string"}},
                    "task_start_timeout_seconds": {"type": "integer", "minimum": 0, "default": 300},
                },
            },
        }
        pools.create_pool(w.store, "p", base_job_template=template, providers=w.dispatcher.providers)
        deployments.create_deployment(
            w.store, "d", pool="p", job_variables={"command": COMMAND, "task_start_timeout_seconds": 30}
        )
        deployments.create_deployment(
            w.store, "unbounded", pool="p", job_variables={"command": COMMAND, "task_start_timeout_seconds": 0}
        )
        slow, started, free = w.new_run("d"), w.new_run("d"), w.new_run("unbounded")
        w.dispatch()
        w.fake.set_status(w.run(started.id).infrastructure_id or "", JobStatus(JobState.RUNNING))

        w.advance(29)
        assert w.dispatch().reconciled == {} and w.fake.status_calls == []

        w.advance(2)
        summary = w.dispatch()
        slow_infra = w.run(slow.id).infrastructure_id
        assert summary.reconciled == {slow.id: "CRASHED", started.id: "RUNNING"}
        assert w.fake.cancelled == [slow_infra]
        message = w.run(slow.id).state_history[-1].message or ""
        assert "did not start within 30 s" in message and "task_start_timeout_seconds" in message
        assert w.run(free.id).state is StateType.PENDING, "0 means no bound: left to the usual reconcile time"
        assert w.active(pool_slot("p")) == 2
    finally:
        w.dispatcher.close()
        w.store.close()
