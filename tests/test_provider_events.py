"""A provider's report moves a run forward once; duplicates change nothing, stale ones are recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.cancelling import cancel_run
from dispatcher.models import FlowRun, utcnow
from dispatcher.provider_events import apply_status, state_for
from dispatcher.providers.base import JobState, JobStatus
from dispatcher.states import StateType
from dispatcher.store.base import pool_slot
from dispatcher.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    pools.create_pool(s, "pool", concurrency_limit=2)
    deployments.create_deployment(s, "dep", pool="pool")
    yield s
    s.close()


def admitted(store: SQLiteStore) -> FlowRun:
    now = utcnow()
    run = deployments.run_deployment(store, "dep", scheduled_time=now - timedelta(seconds=1))
    admit_pool(store, "pool", now)
    got = store.get_run(run.id)
    assert got is not None and got.state is StateType.PENDING
    return got


def active(store: SQLiteStore) -> int:
    return store.slots([pool_slot("pool")])[pool_slot("pool")].active


@pytest.mark.parametrize(
    ("job", "state"),
    [
        (JobState.RUNNING, StateType.RUNNING),
        (JobState.COMPLETED, StateType.COMPLETED),
        (JobState.FAILED, StateType.FAILED),
        (JobState.CRASHED, StateType.CRASHED),
        (JobState.CANCELLED, StateType.CANCELLED),
        (JobState.MISSING, StateType.CRASHED),
    ],
)
def test_each_job_state_maps_to_a_run_state(store: SQLiteStore, job: JobState, state: StateType) -> None:
    run = admitted(store)
    after = apply_status(store, run.id, JobStatus(job, message="words"), source=f"test:{job}")
    assert after is not None and after.state is state
    assert active(store) == (1 if state is StateType.RUNNING else 0)


def test_pending_says_nothing_new(store: SQLiteStore) -> None:
    run = admitted(store)
    assert state_for(run, JobStatus(JobState.PENDING)) is None
    after = apply_status(store, run.id, JobStatus(JobState.PENDING), source="test:1")
    assert after is not None and after.version == run.version


def test_a_duplicate_delivery_writes_nothing(store: SQLiteStore) -> None:
    run = admitted(store)
    first = apply_status(store, run.id, JobStatus(JobState.RUNNING), source="ecs:task:2")
    again = apply_status(store, run.id, JobStatus(JobState.RUNNING), source="ecs:task:2")
    assert first is not None and again is not None
    assert again.version == first.version and len(again.state_history) == len(first.state_history)


def test_out_of_order_running_after_completed_is_recorded_not_applied(store: SQLiteStore) -> None:
    run = admitted(store)
    apply_status(store, run.id, JobStatus(JobState.COMPLETED, exit_code=0), source="ecs:task:3")
    late = apply_status(store, run.id, JobStatus(JobState.RUNNING), source="ecs:task:2")
    assert late is not None and late.state is StateType.COMPLETED
    assert (late.state_history[-1].state, late.state_history[-1].applied) == (StateType.RUNNING, False)


def test_a_stop_of_a_cancelling_run_ends_cancelled_whatever_the_exit(store: SQLiteStore) -> None:
    run = admitted(store)
    cancel_run(store, run.id)
    after = apply_status(store, run.id, JobStatus(JobState.FAILED, exit_code=143), source="ecs:task:4")
    assert after is not None and after.state is StateType.CANCELLED
    assert active(store) == 0


def test_missing_infrastructure_is_crashed_with_a_reason(store: SQLiteStore) -> None:
    run = admitted(store)
    after = apply_status(store, run.id, JobStatus(JobState.MISSING, message="gone"), source="reconciler")
    assert after is not None and after.state is StateType.CRASHED
    assert "no longer knows" in (after.state_history[-1].message or "")


def test_running_for_a_scheduled_run_is_recorded_not_applied(store: SQLiteStore) -> None:
    run = deployments.run_deployment(store, "dep", scheduled_time=utcnow() + timedelta(hours=1))
    after = apply_status(store, run.id, JobStatus(JobState.RUNNING), source="ecs:task:1")
    assert after is not None and after.state is StateType.SCHEDULED
    assert after.state_history[-1].applied is False
    assert active(store) == 0


def test_unknown_run_is_none(store: SQLiteStore) -> None:
    assert apply_status(store, "nope", JobStatus(JobState.RUNNING), source="x") is None
