"""The dispatch pass end to end with a `cloud-run-v2:push` pool, on SQLite and on DynamoDB (moto).

The provider is the real one, its google-cloud-run client talking REST to the local Cloud Run stub; the
store is a real SQLite file or a table on moto's server. Time is a clock the test moves, so grace periods,
backoffs and the reconciler's silence threshold are stepped through without sleeping; only the crash tests
wait, for the dispatcher's provider timeout (2.5 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cloud_run_stub import CloudRunStub
from google.auth.credentials import AnonymousCredentials

from dispatcher import deployments, pools
from dispatcher.cancelling import cancel_run
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, PassSummary
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.base import Providers
from dispatcher.providers.cloud_run import CloudRunProvider
from dispatcher.states import StateType
from dispatcher.store.base import Store, pool_slot

PROJECT = "flows-project"
POOL = "gcp"
RECONCILE_AFTER = 30.0
PROVIDER_TIMEOUT = 2.5
"""Room for moto and two shared cores; the crash tests hang the stub longer than this."""


@pytest.fixture(scope="module")
def stub() -> Iterator[CloudRunStub]:
    with CloudRunStub() as server:
        yield server


class CloudRunWorld:
    """A store, the Cloud Run provider on the stub, and a dispatcher on a clock the test moves."""

    def __init__(self, store: Store, stub: CloudRunStub) -> None:
        self.store = store
        self.stub = stub
        self.now = [utcnow()]
        self.created = 0
        self.provider = CloudRunProvider(
            credentials=AnonymousCredentials(), api_endpoint=stub.endpoint, project=PROJECT, sweep_interval=None
        )
        self.settings = Settings(
            retry_backoff_seconds=10.0,
            provider_timeout_seconds=PROVIDER_TIMEOUT,
            resubmit_grace_seconds=60.0,
            reconcile_after_seconds=RECONCILE_AFTER,
            slot_repair_settle_seconds=3600.0,
        )
        self.dispatcher = Dispatcher(
            store,
            providers=Providers({"cloud-run-v2:push": self.provider}),
            settings=self.settings,
            callback_base_url="http://dispatcher.test:4300",
            environ={},
            clock=lambda: self.now[0],
        )
        # The SDK is imported and the clients built before the first pass, as a warm function has them: the
        # first pass of a cold one pays that within its provider timeout (30 s by default), not within 2.5 s.
        self.provider._clients.get(None)
        pools.create_pool(
            store, POOL, type="cloud-run-v2:push", concurrency_limit=3, job_variables={"image": "flows:1"}
        )
        pools.create_queue(store, POOL, "critical", priority=1, concurrency_limit=1)
        pools.create_queue(store, POOL, "low", priority=10)
        for queue in ("critical", "low"):
            deployments.create_deployment(
                store, f"d-{queue}", pool=POOL, queue=queue, job_variables={"command": ["python", "-m", "flow"]}
            )

    def advance(self, seconds: float) -> None:
        self.now[0] += timedelta(seconds=seconds)

    def dispatch(self) -> PassSummary:
        return self.dispatcher.run_pass()

    def new_run(self, queue: str) -> FlowRun:
        """A due run; each one scheduled a moment after the previous, so FIFO order is creation order."""
        self.created += 1
        due = self.now[0] - timedelta(seconds=10) + timedelta(milliseconds=self.created)
        return deployments.run_deployment(self.store, f"d-{queue}", scheduled_time=due)

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def execution(self, run_id: str) -> str:
        infra = self.run(run_id).infrastructure_id
        assert infra is not None
        return infra

    def executions(self, run_id: str) -> list[dict[str, Any]]:
        return self.stub.executions_of(f"projects/{PROJECT}/locations/us-central1/jobs/pushpool-{run_id}")

    def reconcile(self) -> PassSummary:
        """A pass after the reconciler's silence threshold, so it asks Cloud Run about active runs."""
        self.advance(RECONCILE_AFTER + 1)
        return self.dispatch()


@pytest.fixture
def world(store: Store, stub: CloudRunStub) -> Iterator[CloudRunWorld]:
    w = CloudRunWorld(store, stub)
    yield w
    w.dispatcher.close()


def test_waterfall_runs_become_cloud_run_executions_and_end(world: CloudRunWorld) -> None:
    w = world
    critical = [w.new_run("critical") for _ in range(2)]
    low = [w.new_run("low") for _ in range(3)]
    first = w.dispatch()
    assert set(first.admitted) == {critical[0].id, low[0].id, low[1].id}, "critical gets its 1, low the rest of 3"
    for run in (critical[0], low[0], low[1]):
        assert w.run(run.id).state_name == "InfrastructurePending"
        assert len(w.executions(run.id)) == 1
    job = w.stub.jobs[w.execution(critical[0].id).split("/executions/")[0]]
    env = {e["name"]: e.get("value") for e in job["template"]["template"]["containers"][0]["env"]}
    assert env["PUSHPOOL_RUN_ID"] == critical[0].id and env["PUSHPOOL_CALLBACK_TOKEN"]
    assert not any("SECRET" in name for name in env), "nothing of the dispatcher's own secrets reaches a job"

    w.stub.start_running(w.execution(critical[0].id))
    assert w.reconcile().reconciled == {critical[0].id: "RUNNING"}
    w.stub.finish(w.execution(critical[0].id), exit_code=0)
    second = w.reconcile()
    assert second.reconciled[critical[0].id] == "COMPLETED"
    assert second.admitted == [critical[1].id], "the freed slot goes to the higher queue first"
    assert w.run(critical[0].id).state is StateType.COMPLETED
    assert not w.executions(critical[0].id), "the ended run's job was deleted"
    assert w.store.slots([pool_slot(POOL)])[pool_slot(POOL)].active == 3


def test_a_failing_task_fails_its_run_with_cloud_run_s_words(world: CloudRunWorld) -> None:
    w = world
    run = w.new_run("low")
    w.dispatch()
    w.stub.finish(w.execution(run.id), exit_code=3)
    w.reconcile()
    ended = w.run(run.id)
    assert ended.state is StateType.FAILED
    assert "The container exited with an exit code of 3" in str(ended.state_history[-1].message)


def test_a_cancelled_run_stops_its_execution_and_ends_cancelled(world: CloudRunWorld) -> None:
    w = world
    run = w.new_run("critical")
    w.dispatch()
    w.stub.start_running(w.execution(run.id))
    cancel_run(w.store, run.id)
    assert w.run(run.id).state is StateType.CANCELLING
    w.dispatch()  # asks Cloud Run to cancel; the stub confirms at once
    assert w.stub.calls("cancel_execution") >= 1
    w.dispatch()
    assert w.run(run.id).state is StateType.CANCELLED
    behind = w.new_run("critical")
    assert w.dispatch().admitted == [behind.id], "the cancelled run's slot is free again"


def test_a_start_that_outlives_the_timeout_is_found_not_started_again(world: CloudRunWorld) -> None:
    w = world
    run = w.new_run("low")
    w.stub.hold_starts()  # the job is created; its execution is still starting when the dispatcher gives up
    try:
        summary = w.dispatch()
        assert "timed out" in summary.problems[run.id]
        assert w.run(run.id).state is StateType.PENDING and w.run(run.id).infrastructure_id is None
        w.advance(61)  # past the resubmit grace: the reconciler submits the same attempt while the start goes on
        w.dispatch()
        assert w.run(run.id).infrastructure_id is None and not w.executions(run.id), "it started none itself"
    finally:
        w.stub.release_starts()
    w.advance(61)
    w.dispatch()
    assert w.run(run.id).state_name == "InfrastructurePending"
    assert [e["name"] for e in w.executions(run.id)] == [w.execution(run.id)]


def test_a_crash_between_start_and_record_finds_the_execution(world: CloudRunWorld) -> None:
    w = world
    run = w.new_run("low")
    w.stub.delay("create_job", PROVIDER_TIMEOUT + 1.5)  # the execution starts; the answer comes after the timeout
    w.dispatch()
    assert w.run(run.id).infrastructure_id is None and len(w.executions(run.id)) == 1
    w.advance(61)
    w.dispatch()
    assert [e["name"] for e in w.executions(run.id)] == [w.execution(run.id)], "no second execution"


def test_a_throttled_submit_is_retried_and_launches_once(world: CloudRunWorld) -> None:
    w = world
    run = w.new_run("low")
    w.stub.fail("create_job", 429)
    summary = w.dispatch()
    assert "HTTP 429" in summary.retrying[run.id]
    waiting = w.run(run.id)
    assert (waiting.state, waiting.state_name) == (StateType.SCHEDULED, "AwaitingRetry")
    w.advance(11)
    w.dispatch()
    assert w.run(run.id).state_name == "InfrastructurePending"
    assert len(w.executions(run.id)) == 1
