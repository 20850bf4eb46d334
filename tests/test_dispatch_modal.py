"""The dispatch pass end to end with a `modal:push` pool, on every store (SQLite, DynamoDB on moto).

The pool uses the shipped template, the real `ModalProvider` and `FakeModal` in place of Modal's servers
(tests/modal_fakes.py). Time is a clock the test moves; the fake's sandboxes end when a test says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from modal import exception as modal_exception
from modal_fakes import FakeModal

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.cancelling import cancel_run
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, PassSummary
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.base import Providers
from dispatcher.providers.modal import ModalProvider
from dispatcher.states import StateType
from dispatcher.store.base import Store, pool_slot, queue_slot

COMMAND = "python -m flows.nightly"


class ModalWorld:
    """A store, a Modal pool `m` served by ModalProvider over FakeModal, and a dispatcher on a moved clock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.now = [utcnow()]
        self.modal = FakeModal()
        self.provider = ModalProvider(self.modal)
        self.settings = Settings(
            retry_backoff_seconds=10.0,
            provider_timeout_seconds=5.0,
            resubmit_grace_seconds=60.0,
            reconcile_after_seconds=0.0,  # ask Modal about every active run on every pass
            slot_repair_settle_seconds=0.0,
        )
        self.dispatcher = Dispatcher(
            store,
            providers=Providers({"modal:push": self.provider}),
            settings=self.settings,
            callback_base_url="http://dispatcher.test:4300",
            environ={},
            clock=lambda: self.now[0],
        )

    def pool(self, limit: int | None, queues: dict[str, tuple[int, int | None]]) -> None:
        pools.create_pool(self.store, "m", type="modal:push", concurrency_limit=limit)
        for name, (priority, queue_limit) in queues.items():
            if name != "default":
                pools.create_queue(self.store, "m", name, priority=priority, concurrency_limit=queue_limit)
            deployments.create_deployment(self.store, f"d-{name}", pool="m", queue=name)

    def new_run(self, queue: str = "default", *, ago: float = 1.0, **job_variables: Any) -> FlowRun:
        return deployments.run_deployment(
            self.store,
            f"d-{queue}",
            scheduled_time=self.now[0] - timedelta(seconds=ago),
            job_variables={"command": COMMAND, **job_variables},
        )

    def advance(self, seconds: float) -> None:
        self.now[0] += timedelta(seconds=seconds)

    def dispatch(self) -> PassSummary:
        self.advance(1)
        return self.dispatcher.run_pass()

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def sandbox(self, run_id: str) -> str:
        infra = self.run(run_id).infrastructure_id
        assert infra is not None
        return infra


@pytest.fixture
def world(store: Store) -> Iterator[ModalWorld]:
    w = ModalWorld(store)
    yield w
    w.dispatcher.close()


def test_a_waterfall_of_runs_becomes_one_sandbox_each_within_every_limit(world: ModalWorld) -> None:
    w = world
    w.pool(2, {"critical": (1, 1), "low": (5, None)})
    low = [w.new_run("low", ago=9 - i) for i in range(2)]
    critical = [w.new_run("critical", ago=5 - i) for i in range(2)]

    first = w.dispatch()
    # critical's limit is 1, so the pool's second slot falls to low's oldest run
    assert sorted(first.submitted) == sorted([critical[0].id, low[0].id])
    box = w.modal.sandboxes[w.sandbox(critical[0].id)]
    assert box.command == ["python", "-m", "flows.nightly"] and box.app == "pushpool"
    assert box.env["PUSHPOOL_RUN_ID"] == critical[0].id and box.env["PUSHPOOL_CALLBACK_TOKEN"]
    assert box.tags["pushpool.io_pool"] == "m" and box.name == f"pushpool-{critical[0].id}-1"

    assert w.dispatch().submitted == []  # both slots held while the sandboxes run
    assert w.run(critical[0].id).state_name == "Running"  # the reconciler's poll() said it runs
    w.modal.finish(w.sandbox(critical[0].id), 0)
    second = w.dispatch()
    assert second.reconciled == {critical[0].id: "COMPLETED"}
    assert second.submitted == [critical[1].id], "the freed slot goes to the higher queue first"

    for run in (critical[1], low[0]):
        w.modal.finish(w.sandbox(run.id), 0)
    third = w.dispatch()
    assert third.submitted == [low[1].id]
    w.modal.finish(w.sandbox(low[1].id), 0)
    w.dispatch()

    assert {w.run(r.id).state for r in (*low, *critical)} == {StateType.COMPLETED}
    assert len(w.modal.sandboxes) == 4
    slots = w.store.slots([pool_slot("m"), queue_slot("m", "critical")])
    assert slots[pool_slot("m")].active == 0 and slots[queue_slot("m", "critical")].active == 0


def test_a_failing_command_and_a_timeout_fail_their_runs_in_modal_s_words(world: ModalWorld) -> None:
    w = world
    w.pool(None, {"default": (1, None)})
    failing, slow = w.new_run(ago=2), w.new_run(ago=1, timeout=60)
    w.dispatch()
    assert w.modal.sandboxes[w.sandbox(slow.id)].resources["timeout"] == 60
    w.modal.finish(w.sandbox(failing.id), 3, stderr="Traceback: boom\n")
    w.modal.time_out(w.sandbox(slow.id))
    w.dispatch()

    failed = w.run(failing.id)
    assert failed.state is StateType.FAILED
    assert "the command exited with code 3" in (failed.state_history[-1].message or "")
    timed_out = w.run(slow.id)
    assert timed_out.state is StateType.FAILED
    assert "timed out: a Sandbox exceeds its execution duration limit" in (timed_out.state_history[-1].message or "")
    assert "Traceback: boom" in w.provider.logs(w.sandbox(failing.id))


def test_a_cancel_terminates_the_sandbox_and_holds_the_slot_until_modal_confirms(world: ModalWorld) -> None:
    w = world
    w.pool(1, {"default": (1, None)})
    run, waiting = w.new_run(ago=2), w.new_run(ago=1)
    w.dispatch()
    sandbox = w.sandbox(run.id)

    cancel_run(w.store, run.id, now=w.now[0])
    assert w.run(run.id).state is StateType.CANCELLING
    w.modal.fail_next("terminate", modal_exception.ConnectionError("Could not connect"))
    stuck = w.dispatch()
    assert "Could not connect" in stuck.problems[run.id] and w.run(run.id).state is StateType.CANCELLING
    assert stuck.submitted == [], "the slot is held while the sandbox may still run"

    stopped = w.dispatch()  # asked again, terminated; the next poll confirms
    assert w.modal.sandboxes[sandbox].end is not None
    assert w.run(run.id).state is StateType.CANCELLING and not stopped.cancelled
    w.dispatch()
    cancelled = w.run(run.id)
    assert cancelled.state is StateType.CANCELLED
    assert "terminated" in (cancelled.state_history[-1].message or "")
    assert w.run(waiting.id).infrastructure_id is not None, "the freed slot went to the next run"


def test_a_crash_between_create_and_record_starts_no_second_sandbox(world: ModalWorld) -> None:
    w = world
    w.pool(3, {"default": (1, None)})
    run = w.new_run(ago=1)
    # A pass admitted the run and created its sandbox, then died before recording the sandbox's id.
    result = admit_pool(w.store, "m", w.now[0], settings=w.settings)
    assert [r.id for r in result.admitted] == [run.id]
    job = w.dispatcher._render(w.store.get_pool("m"), w.store.get_deployment("d-default"), result.admitted[0])  # type: ignore[arg-type]
    first = w.provider.submit(job, idempotency_key=f"{run.id}-1")

    assert w.dispatch().submitted == []  # inside the grace period the dead pass might still record it
    w.advance(61)
    later = w.dispatch()
    assert later.submitted == [run.id]
    assert w.sandbox(run.id) == first
    assert [box.id for box in w.modal.of_run(run.id)] == [first]
    assert len(w.modal.calls_of("create")) == 1, "the resubmission found the sandbox by its run tag"


def test_a_create_whose_answer_was_lost_is_found_by_the_retry(world: ModalWorld) -> None:
    w = world
    w.pool(None, {"default": (1, None)})
    run = w.new_run()
    w.modal.lose_next_answer()
    lost = w.dispatch()
    assert run.id in lost.retrying and w.run(run.id).state_name == "AwaitingRetry"
    w.advance(11)
    retried = w.dispatch()
    assert retried.submitted == [run.id]
    assert [box.id for box in w.modal.of_run(run.id)] == [w.sandbox(run.id)]


def test_a_throttled_create_is_retried_with_backoff_then_submitted(world: ModalWorld) -> None:
    w = world
    w.pool(1, {"default": (1, None)})
    run = w.new_run()
    w.modal.fail_next("create", modal_exception.ResourceExhaustedError("Rate limit exceeded"), n=2)

    first = w.dispatch()
    assert "ResourceExhaustedError: Rate limit exceeded" in first.retrying[run.id]
    assert w.store.slots([pool_slot("m")])[pool_slot("m")].active == 0, "a retry waits without a slot"
    assert w.dispatch().submitted == [], "not before its backoff"
    w.advance(10)
    assert run.id in w.dispatch().retrying  # the second attempt is throttled too; backoff doubles
    w.advance(21)
    third = w.dispatch()
    assert third.submitted == [run.id]
    stored = w.run(run.id)
    assert stored.submission_attempts == 3 and len(w.modal.sandboxes) == 1
    assert w.modal.sandboxes[w.sandbox(run.id)].name == f"pushpool-{run.id}-3"


def test_a_permanent_modal_error_crashes_the_run_with_modal_s_words(world: ModalWorld) -> None:
    w = world
    w.pool(None, {"default": (1, None)})
    run = w.new_run(secrets=["missing-secret"])
    summary = w.dispatch()
    assert "NotFoundError: Secret 'missing-secret' not found" in summary.crashed[run.id]
    assert w.run(run.id).state is StateType.CRASHED and not w.modal.sandboxes
