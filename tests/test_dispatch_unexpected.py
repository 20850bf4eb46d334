"""An unexpected exception (a bug, not a pushpool error) in one pool's pass never stops the other pools' passes.

Runs the failing pool already admitted are crashed with a sentence (a job whose rendering has a bug), or left
PENDING for the reconciler, which finds their launch again under the same key (SPEC §5, §6). The log gets
the traceback, never the exception's message (it may hold a run's token). The providers here are real
classes (FakeProvider with a bug), no mocks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dispatch import COMMAND, SlowFake, World

from dispatcher import deployments, pools
from dispatcher.callbacks import master_secret, run_token
from dispatcher.cancelling import cancel_run
from dispatcher.dispatch import idempotency_key
from dispatcher.providers.base import JobStatus
from dispatcher.states import StateType
from dispatcher.store.base import pool_slot

UNEXPECTED = "an unexpected {} in the dispatcher (a bug; its log has the traceback)"


class BuggyProvider(SlowFake):
    """A FakeProvider with bugs for chosen pools and jobs: it raises what a bug raises, never a ProviderError."""

    def __init__(self) -> None:
        super().__init__()
        self.render_bug_pools: set[str] = set()
        self.status_bug_ids: set[str] = set()
        self.cancel_bugs = 0
        """How many of the next cancels raise a RuntimeError."""

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        env = job.get("env") or {}
        if env.get("PUSHPOOL_POOL") in self.render_bug_pools:
            # As a careless bug would, the message carries what it was handed, a run token included.
            raise TypeError(f"cannot hash the job (token {env['PUSHPOOL_CALLBACK_TOKEN']})")
        return super().validate(job)

    def status(self, infrastructure_id: str) -> JobStatus:
        if infrastructure_id in self.status_bug_ids:
            raise KeyError(infrastructure_id)
        return super().status(infrastructure_id)

    def cancel(self, infrastructure_id: str) -> None:
        if self.cancel_bugs:
            self.cancel_bugs -= 1
            raise RuntimeError(f"cancel of {infrastructure_id} went wrong")
        super().cancel(infrastructure_id)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.fake = BuggyProvider()
    w.dispatcher.providers._instances["process"] = w.fake
    for pool in ("a", "b"):  # passes go by pool name: the failing pool "a" comes first
        pools.create_pool(w.store, pool)
        deployments.create_deployment(w.store, f"d{pool}", pool=pool, job_variables={"command": COMMAND})
    yield w
    w.dispatcher.close()
    w.store.close()


def buggy(w: World) -> BuggyProvider:
    assert isinstance(w.fake, BuggyProvider)
    return w.fake


def test_a_rendering_bug_crashes_that_pools_runs_with_a_sentence_and_the_other_pools_go_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    buggy(w).render_bug_pools.add("a")
    first, second = w.new_run("da", ago=2), w.new_run("da", ago=1)
    fine = w.new_run("db")
    with caplog.at_level(logging.ERROR, logger="pushpool.dispatch"):
        summary = w.dispatch()
    assert summary.pools == ["a", "b"]
    for run_id in (first.id, second.id):
        crashed = w.run(run_id)
        assert crashed.state is StateType.CRASHED
        why = crashed.state_history[-1].message or ""
        assert why == "the job could not be rendered: " + UNEXPECTED.format("TypeError")
        assert summary.crashed[run_id] == why
    assert w.active(pool_slot("a")) == 0
    # The other pool's pass went on: its run was submitted.
    assert w.run(fine.id).state_name == "InfrastructurePending"
    assert w.launched_keys() == [idempotency_key(w.run(fine.id))]
    # The log has where it was raised; neither it nor the store has the message, which held a run's token.
    assert "unexpected TypeError during rendering" in caplog.text and "in validate" in caplog.text
    token = run_token(master_secret(w.store), first.deployment_id, first.id)
    stored = w.run(first.id).model_dump_json()
    assert token not in caplog.text  # (its source line shows, as code does, not the value it was handed)
    assert token not in stored and "cannot hash" not in stored


def test_a_status_bug_on_one_run_neither_stalls_its_pool_nor_the_others(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    running = w.new_run("da")
    w.dispatch()
    infra = w.run(running.id).infrastructure_id
    assert infra is not None
    buggy(w).status_bug_ids.add(infra)
    w.advance(w.settings.reconcile_after_seconds + 1)  # its silence asks for a status check
    later_a, later_b = w.new_run("da"), w.new_run("db")
    with caplog.at_level(logging.ERROR, logger="pushpool.dispatch"):
        summary = w.dispatch()
    assert summary.problems[running.id] == "could not be reconciled: " + UNEXPECTED.format("KeyError")
    assert w.run(running.id).state is StateType.PENDING  # left as it was, asked again next pass
    assert {w.run(r.id).state_name for r in (later_a, later_b)} == {"InfrastructurePending"}
    assert "unexpected KeyError during reconciling" in caplog.text


def test_a_bug_past_admission_leaves_that_pools_runs_to_the_reconciler_and_the_other_pools_go_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    cancelled, kept = w.new_run("da", ago=2), w.new_run("da", ago=1)
    fine = w.new_run("db")
    # The first run is cancelled while its job is being launched; stopping that job hits a bug.
    w.fake.during_submit = lambda key: cancel_run(w.store, cancelled.id) if key.startswith(cancelled.id) else None
    buggy(w).cancel_bugs = 1
    with caplog.at_level(logging.ERROR, logger="pushpool.dispatch"):
        summary = w.dispatch()
    assert (
        summary.problems["pool a"] == "an unexpected RuntimeError in the dispatcher (a bug; its log has the traceback)"
    )
    assert "unexpected RuntimeError during pool a's pass" in caplog.text
    assert w.run(fine.id).state_name == "InfrastructurePending"  # the other pool's pass went on
    assert w.run(kept.id).state_name == "InfrastructurePending"
    left = w.run(cancelled.id)
    assert (left.state, left.infrastructure_id) == (StateType.CANCELLING, None)  # its launch unrecorded
    # The reconciler finds its launch under the same key, stops it, and it ends CANCELLED: nothing launched twice.
    w.fake.during_submit = None
    w.advance(w.settings.resubmit_grace_seconds + 1)
    w.dispatch()
    infra = w.run(cancelled.id).infrastructure_id
    assert infra is not None and infra in w.fake.cancelled
    w.dispatch()
    assert w.run(cancelled.id).state is StateType.CANCELLED
    assert sorted(w.launched_keys()) == sorted(idempotency_key(w.run(r.id)) for r in (cancelled, kept, fine))
    assert w.active(pool_slot("a")) == 1  # the kept run only
