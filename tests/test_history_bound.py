"""A run's state history is bounded (SPEC §6): a job holding only its own token cannot grow its run's row.

Before the bound, every callback appended a record: on DynamoDB the item passed 400 KB after ~190 of them,
and from then on neither `cancel` nor the job's own COMPLETED could be written. Here a hostile job sends
thousands of signed no-ops, identical and varied, and the run must stay small, cancellable and completable.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pytest

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.callbacks import SECRET_ENV, apply_callback, master_secret, run_token
from dispatcher.cancelling import cancel_run
from dispatcher.models import (
    HISTORY_NOOPS_KEPT,
    NOOP_MESSAGE_CHARS,
    FlowRun,
    StateRecord,
    bounded_history,
    utcnow,
)
from dispatcher.render_tables import log_lines
from dispatcher.signing import SignatureError, sign
from dispatcher.states import StateType
from dispatcher.store.base import Store, pool_slot
from dispatcher.store.dynamodb import DynamoDBStore, _run_key

DYNAMODB_ITEM_LIMIT = 400 * 1024
HOSTILE_CALLBACKS = int(os.environ.get("PUSHPOOL_HOSTILE_CALLBACKS") or 300)
"""Callbacks per test: 300 in `make test` (past the ~190 that used to fill a DynamoDB item; the size is
checked to have stopped growing by half-way). `PUSHPOOL_HOSTILE_CALLBACKS=10000 pytest
tests/test_history_bound.py` runs the issue's figure (minutes on moto, which serves one request at a time)."""


def _callback(store: Store, run: FlowRun, payload: dict[str, Any], at: int) -> FlowRun:
    body = json.dumps(payload).encode()
    token = run_token(master_secret(store), run.deployment_id, run.id)
    return apply_callback(store, run.id, body, sign(token, body, at), now=utcnow())


def _now() -> int:
    return int(utcnow().timestamp())


def _item_size(store: Store, run_id: str) -> int:
    """The run's size as stored: DynamoDB's item size (names + values, UTF-8), or SQLite's row data."""
    if isinstance(store, DynamoDBStore):
        item = store._get(_run_key(run_id)) or {}
        assert item, "the run's item is where the test expects it"
        return sum(len(name.encode()) + len(next(iter(v.values())).encode()) for name, v in item.items())
    run = store.get_run(run_id)
    assert run is not None
    return len(run.model_dump_json().encode())


@pytest.fixture
def hostile_run(store: Store, monkeypatch: pytest.MonkeyPatch) -> FlowRun:
    # A fixed secret spares a settings read per callback; the tokens are derived the same way.
    monkeypatch.setenv(SECRET_ENV, "history-test-secret")
    pools.create_pool(store, "pool", concurrency_limit=1)
    deployments.create_deployment(store, "dep", pool="pool")
    now = utcnow()
    run = deployments.run_deployment(store, "dep", scheduled_time=now - timedelta(seconds=1))
    assert [r.id for r in admit_pool(store, "pool", now).admitted] == [run.id]
    got = store.get_run(run.id)
    assert got is not None
    return got


@pytest.mark.parametrize("ending", ["cancel", "completed"])
def test_hostile_callbacks_leave_a_small_run_that_still_ends(
    store: Store, hostile_run: FlowRun, request: pytest.FixtureRequest, ending: str
) -> None:
    backend = "dynamodb" if isinstance(store, DynamoDBStore) else "sqlite"
    count = HOSTILE_CALLBACKS if ending == "cancel" else HOSTILE_CALLBACKS // 3
    run = hostile_run
    assert _callback(store, run, {"state": "RUNNING"}, _now()).state is StateType.RUNNING
    # Worst-case messages: 2,000 four-byte characters each, a different one every callback (nothing merges),
    # then runs of identical duplicates; every body is signed anew, so none is a replay.
    wide = "\U0001f600" * 2000
    sizes = []
    for i in range(count):
        payload: dict[str, Any] = {"state": "RUNNING"}
        if i % 2:
            payload["message"] = f"{i}{wide}"[:2000]
        else:
            payload["message"] = "same again"
            payload["exit_code"] = i  # a new body (a new digest) with the same message: counted
        _callback(store, run, payload, _now())  # every body differs (its message or exit code): none is a replay
        if i in (count // 2, count - 1):
            sizes.append(_item_size(store, run.id))
    size = sizes[-1]
    request.node.user_properties.append(("item_bytes", size))
    print(f"\n{backend}: run item after {count} hostile callbacks: {size} bytes")
    assert size < DYNAMODB_ITEM_LIMIT // 4, f"{size} bytes is not far below DynamoDB's 400 KB"
    assert sizes[0] == sizes[1] or abs(sizes[0] - sizes[1]) < 2_000, "the history keeps growing"

    stored = store.get_run(run.id)
    assert stored is not None and stored.state is StateType.RUNNING
    history = stored.state_history
    assert history[0].state is StateType.SCHEDULED  # the first record stays
    assert [r.state for r in history if r.applied] == [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    noops = [r for r in history if not r.applied]
    assert len(noops) <= HISTORY_NOOPS_KEPT
    assert all(len(r.message or "") <= NOOP_MESSAGE_CHARS for r in noops)

    if ending == "cancel":
        assert cancel_run(store, run.id).state is StateType.CANCELLING
        final = _callback(store, run, {"state": "FAILED", "exit_code": 143}, _now())
        assert final.state is StateType.CANCELLED
    else:
        final = _callback(store, run, {"state": "COMPLETED", "exit_code": 0}, _now())
        assert final.state is StateType.COMPLETED
    assert store.slots([pool_slot("pool")])[pool_slot("pool")].active == 0


def test_a_replay_of_the_latest_counted_no_op_is_still_recognised(store: Store, hostile_run: FlowRun) -> None:
    run = hostile_run
    at = int(utcnow().timestamp())
    _callback(store, run, {"state": "RUNNING"}, at)
    body = json.dumps({"state": "RUNNING", "message": "again"}).encode()
    token = run_token(master_secret(store), run.deployment_id, run.id)
    for offset in (1, 2):
        apply_callback(store, run.id, body, sign(token, body, at + offset))
    with pytest.raises(SignatureError, match="replay"):
        apply_callback(store, run.id, body, sign(token, body, at + 2))
    stored = store.get_run(run.id)
    assert stored is not None
    counted = stored.state_history[-1]
    assert (counted.count, counted.applied, counted.message) == (2, False, "again")
    assert counted.last_time is not None and counted.last_time >= counted.time
    assert "×2" in log_lines(stored)[-1]


def _noop(i: int, message: str = "dup") -> StateRecord:
    return StateRecord(
        state=StateType.RUNNING, name="Running", time=utcnow(), source=f"callback:{i}", message=message, applied=False
    )


def test_bounded_history_counts_repeats_and_keeps_first_applied_and_newest() -> None:
    first = StateRecord(state=StateType.SCHEDULED, name="Scheduled", time=utcnow(), source="user")
    applied = StateRecord(state=StateType.RUNNING, name="Running", time=utcnow(), source="callback:a")
    history = [first, applied]
    for i in range(50):
        history = bounded_history(history, _noop(i))
    assert len(history) == 3 and history[-1].count == 50 and history[-1].last_source == "callback:49"
    for i in range(100):
        history = bounded_history(history, _noop(100 + i, message=f"m{i}"))
    assert history[:2] == [first, applied]
    assert len(history) == 2 + HISTORY_NOOPS_KEPT
    assert history[-1].message == "m99" and history[2].message == f"m{100 - HISTORY_NOOPS_KEPT}"
    # A no-op from another kind of source is not counted with a callback's.
    other = _noop(0).model_copy(update={"source": "reconciler"})
    assert bounded_history(history, other)[-1].count == 1


def test_messages_are_clipped_where_the_history_records_them() -> None:
    run = FlowRun(
        id="r",
        name="n",
        deployment="d",
        deployment_id="di",
        pool="p",
        queue="q",
        scheduled_time=utcnow(),
        state=StateType.RUNNING,
        state_name="Running",
    )
    after, applied = run.moved(StateType.FAILED, source="reconciler", message="x" * 10_000)
    assert applied and len(after.state_history[-1].message or "") == 2000
    again, applied = after.moved(StateType.FAILED, source="reconciler", message="y" * 10_000)
    assert not applied and len(again.state_history[-1].message or "") == NOOP_MESSAGE_CHARS
