"""The dispatch pass end to end with an azure-container-instance:push pool, on SQLite and on DynamoDB (moto).

The provider is the real ACIProvider on the real Azure SDK, over HTTP to the ARM stub (tests/aci_stub.py);
the store is parametrised over every backend. Time is a clock the test moves, so grace periods and backoffs
are stepped through without sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aci_stub import RESOURCE_GROUP, SUBSCRIPTION, ACIStub, StubCredential

from dispatcher import deployments, pools
from dispatcher.cancelling import cancel_run
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, PassSummary
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.aci import ACIProvider
from dispatcher.providers.aci.model import group_name
from dispatcher.providers.base import Providers
from dispatcher.states import StateType
from dispatcher.store.base import Store

ACI = "azure-container-instance:push"
POOL_VARIABLES = {
    "image": "flows:1",
    "resource_group_name": RESOURCE_GROUP,
    "subscription_id": SUBSCRIPTION,
    "entrypoint": "",
}


class World:
    """A store, the ARM stub, an ACI provider and a dispatcher on a clock the test moves."""

    def __init__(self, store: Store, stub: ACIStub, provider: ACIProvider | None = None) -> None:
        self.store = store
        self.stub = stub
        self.now = [utcnow()]
        self.provider = provider or ACIProvider(StubCredential(), base_url=stub.url, polling_interval=0)
        self.dispatcher = self.make_dispatcher(self.provider)

    def make_dispatcher(self, provider: ACIProvider) -> Dispatcher:
        settings = Settings(
            provider_timeout_seconds=10.0,
            reconcile_after_seconds=1.0,
            resubmit_grace_seconds=30.0,
            retry_backoff_seconds=10.0,
            slot_repair_settle_seconds=0.0,
        )
        return Dispatcher(
            self.store,
            providers=Providers({ACI: provider}),
            settings=settings,
            callback_base_url="http://dispatcher.test:4300",
            clock=lambda: self.now[0],
        )

    def advance(self, seconds: float) -> None:
        self.now[0] += timedelta(seconds=seconds)

    def dispatch(self) -> PassSummary:
        return self.dispatcher.run_pass()

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def new_run(self, deployment: str) -> FlowRun:
        self.advance(0.001)  # distinct scheduled times keep FIFO order unambiguous
        return deployments.run_deployment(self.store, deployment, scheduled_time=self.now[0] - timedelta(seconds=1))

    def end(self, run: FlowRun, exit_code: int) -> None:
        """The run's container ends with `exit_code`."""
        self.stub.set_container(group_name(run.id), "Terminated", exit_code=exit_code)


@pytest.fixture
def stub() -> Iterator[ACIStub]:
    with ACIStub() as server:
        yield server


@pytest.fixture
def world(store: Store, stub: ACIStub) -> Iterator[World]:
    w = World(store, stub)
    yield w
    w.dispatcher.close()


def aci_pool(w: World, *, limit: int | None = None, queues: dict[str, tuple[int, int | None]] | None = None) -> None:
    """Pool `aci` of the ACI type with its default template; a deployment `d-<queue>` per queue, and `d`."""
    pools.create_pool(w.store, "aci", type=ACI, concurrency_limit=limit, job_variables=POOL_VARIABLES)
    deployments.create_deployment(w.store, "d", pool="aci", job_variables={"command": "python flow.py"})
    for name, (priority, queue_limit) in (queues or {}).items():
        pools.create_queue(w.store, "aci", name, priority=priority, concurrency_limit=queue_limit)
        deployments.create_deployment(w.store, f"d-{name}", pool="aci", queue=name)


def test_waterfall_by_queue_priority_under_limits(world: World) -> None:
    w = world
    aci_pool(w, limit=3, queues={"critical": (1, 1), "high": (5, 2), "low": (10, None)})
    low = [w.new_run("d-low") for _ in range(2)]
    high = [w.new_run("d-high") for _ in range(2)]
    critical = [w.new_run("d-critical") for _ in range(2)]

    first = w.dispatch()
    assert set(first.submitted) == {critical[0].id, high[0].id, high[1].id}
    assert w.stub.count("PUT", "put") == 3
    for run in (critical[0], high[0], high[1]):
        assert w.run(run.id).state_name == "InfrastructurePending"
        assert w.run(run.id).infrastructure_id.endswith(group_name(run.id))  # type: ignore[union-attr]

    for run in (critical[0], high[0], high[1]):
        w.end(run, 0)
    w.advance(2)
    second = w.dispatch()
    assert {run_id for run_id, state in second.reconciled.items() if state == "COMPLETED"} == {
        critical[0].id,
        high[0].id,
        high[1].id,
    }
    # Slots freed this pass go to the highest queue first: the second critical run, then low's.
    assert set(second.submitted) == {critical[1].id, low[0].id, low[1].id}
    assert all(w.stub.group(group_name(r.id)) is None for r in (critical[0], high[0], high[1]))  # deleted


def test_a_failing_container_fails_its_run_with_the_exit_code(world: World) -> None:
    w = world
    aci_pool(w)
    run = w.new_run("d")
    w.dispatch()
    w.end(run, 3)
    w.advance(2)
    w.dispatch()
    failed = w.run(run.id)
    assert failed.state is StateType.FAILED
    assert "exited with code 3" in (failed.state_history[-1].message or "")
    assert w.stub.group(group_name(run.id)) is None


def test_a_cancel_stops_and_deletes_the_group_then_ends_cancelled(world: World) -> None:
    w = world
    aci_pool(w)
    run = w.new_run("d")
    w.dispatch()
    cancel_run(w.store, run.id, now=w.now[0])
    assert w.run(run.id).state is StateType.CANCELLING
    w.advance(1)
    w.dispatch()  # still running at Azure: stop, then delete
    assert w.stub.count("POST", "stop") == 1
    assert w.stub.group(group_name(run.id)) is None
    w.advance(1)
    w.dispatch()
    cancelled = w.run(run.id)
    assert cancelled.state is StateType.CANCELLED
    assert w.store.active_runs("aci") == []


class _Crash(BaseException):
    """The dispatcher's process dying: not an error anything in the pass may catch."""


class CrashAfterPut(ACIProvider):
    """An ACIProvider whose process dies right after Azure accepted the PUT, before the run records it."""

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        super().submit(job, idempotency_key=idempotency_key, resubmission=resubmission)
        raise _Crash()


def test_a_crash_between_put_and_record_never_starts_a_second_group(store: Store, stub: ACIStub) -> None:
    w = World(store, stub, CrashAfterPut(StubCredential(), base_url=stub.url, polling_interval=0))
    aci_pool(w)
    run = w.new_run("d")
    with pytest.raises(_Crash):
        w.dispatch()
    w.dispatcher.close()
    pending = w.run(run.id)
    assert pending.state is StateType.PENDING and pending.infrastructure_id is None
    assert w.stub.count("PUT", "put") == 1

    # A fresh dispatcher (a new function instance, a new provider), after the grace period.
    fresh = ACIProvider(StubCredential(), base_url=stub.url, polling_interval=0)
    w.dispatcher = w.make_dispatcher(fresh)
    try:
        w.advance(31)
        w.dispatch()
    finally:
        w.dispatcher.close()
    recorded = w.run(run.id)
    assert recorded.state_name == "InfrastructurePending"
    assert recorded.infrastructure_id is not None and recorded.infrastructure_id.endswith(group_name(run.id))
    assert w.stub.count("PUT", "put") == 1  # the GET found the group: no second PUT, no restart


def test_a_throttled_submit_waits_and_retries_without_a_second_group(world: World) -> None:
    w = world
    aci_pool(w)
    run = w.new_run("d")
    w.stub.fail_next("put", 429, "TooManyRequests", "Too many requests for container groups, retry later")
    first = w.dispatch()
    assert run.id in first.retrying
    waiting = w.run(run.id)
    assert waiting.state_name == "AwaitingRetry"
    assert "retry later" in (waiting.state_history[-1].message or "")
    assert w.store.active_runs("aci") == []  # the slot was freed

    w.advance(11)
    second = w.dispatch()
    assert second.submitted == [run.id]
    assert w.run(run.id).submission_attempts == 2
    assert len(w.stub.groups) == 1


def test_a_permanent_error_crashes_the_run_in_azures_words(world: World) -> None:
    w = world
    aci_pool(w)
    run = deployments.run_deployment(
        w.store, "d", scheduled_time=w.now[0] - timedelta(seconds=1), job_variables={"image": "inaccessible/x:1"}
    )
    summary = w.dispatch()
    assert run.id in summary.crashed
    crashed = w.run(run.id)
    assert crashed.state is StateType.CRASHED
    assert "is not accessible" in (crashed.state_history[-1].message or "")
