"""Wake-ups: the rules for when to wake, and the API routes that wake (only after a successful change)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.api import Api, Request
from dispatcher.callbacks import SECRET_ENV, master_secret, run_token
from dispatcher.models import FlowRun, utcnow
from dispatcher.signing import SIGNATURE_HEADER, sign
from dispatcher.states import StateType
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.wakeups import (
    LIMIT_RAISED,
    POOL_RESUMED,
    QUEUE_RESUMED,
    RUN_CANCELLED,
    RUN_CREATED,
    SCHEDULE_CHANGED,
    SLOT_FREED,
    RecordedWakeups,
    deployment_wake_reason,
    freed_slot,
    left_active,
    limit_raised,
    room_opened,
)

TOKEN = "wake-token"
EVERY_MINUTE = [{"interval": 60}]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    s = SQLiteStore(str(tmp_path / "pushpool.db"))
    pools.create_pool(s, "pool", concurrency_limit=1)
    deployments.create_deployment(s, "dep", pool="pool")
    yield s
    s.close()


@pytest.fixture
def woken() -> RecordedWakeups:
    return RecordedWakeups()


@pytest.fixture
def api(store: SQLiteStore, woken: RecordedWakeups) -> Api:
    return Api(store, api_token=TOKEN, wakeups=woken)


def call(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    answer = api.handle(Request(method, path, {"Authorization": f"Bearer {TOKEN}"}, body=data))
    return answer.status, answer.body


def admitted_run(store: SQLiteStore) -> FlowRun:
    now = utcnow()
    run = deployments.run_deployment(store, "dep", scheduled_time=now - timedelta(seconds=1))
    assert [r.id for r in admit_pool(store, "pool", now).admitted] == [run.id]
    stored = store.get_run(run.id)
    assert stored is not None
    return stored


def callback(api: Api, store: SQLiteStore, run: FlowRun, state: str) -> tuple[int, Any]:
    body = json.dumps({"state": state}).encode()
    signature = sign(run_token(master_secret(store), run.deployment_id, run.id), body, int(time.time()))
    answer = api.handle(Request("POST", f"/callbacks/runs/{run.id}", {SIGNATURE_HEADER: signature}, body=body))
    return answer.status, answer.body


# the rules ------------------------------------------------------------------------------------------------
def test_limit_raised_means_up_or_cleared() -> None:
    assert limit_raised(1, 2) and limit_raised(0, None)
    assert not limit_raised(2, 2) and not limit_raised(2, 1) and not limit_raised(None, 5)


def test_freed_slot_and_left_active_read_a_run_leaving_an_active_state(store: SQLiteStore) -> None:
    run = admitted_run(store)
    assert run.state is StateType.PENDING and not left_active(run)
    ended, applied = run.moved(StateType.COMPLETED, source="test", now=utcnow())
    assert applied and freed_slot(run, ended) and left_active(ended)
    # A no-op after it (a stale report) frees nothing more.
    stale, applied = ended.moved(StateType.RUNNING, source="test", now=utcnow())
    assert not applied and not left_active(stale) and not freed_slot(ended, stale)
    # A SCHEDULED run cancelled never held a slot.
    waiting = deployments.run_deployment(store, "dep")
    cancelled, _ = waiting.moved(StateType.CANCELLED, source="test", now=utcnow())
    assert not freed_slot(waiting, cancelled) and not left_active(cancelled)
    assert not freed_slot(None, ended) and not left_active(None)


def test_room_opened_names_what_let_runs_in(store: SQLiteStore) -> None:
    paused = pools.update_pool(store, "pool", paused=True)
    resumed = pools.update_pool(store, "pool", paused=False)
    assert room_opened(paused, resumed) == POOL_RESUMED
    assert room_opened(resumed, paused) is None
    raised = pools.update_pool(store, "pool", concurrency_limit=3)
    assert room_opened(resumed, raised) == LIMIT_RAISED and room_opened(raised, resumed) is None
    queue = pools.get_queue(store, "pool", "default")
    paused_queue = queue.model_copy(update={"paused": True})
    assert room_opened(paused_queue, queue) == QUEUE_RESUMED


def test_deployment_wake_reason_for_a_new_schedule_or_a_raised_limit(store: SQLiteStore) -> None:
    plain = deployments.get_deployment(store, "dep")
    assert deployment_wake_reason(None, plain) is None
    scheduled = plain.model_copy(update={"schedules": [pools_schedule()]})
    assert deployment_wake_reason(None, scheduled) == SCHEDULE_CHANGED
    assert deployment_wake_reason(plain, scheduled) == SCHEDULE_CHANGED
    assert deployment_wake_reason(scheduled, scheduled) is None
    assert deployment_wake_reason(plain, scheduled.model_copy(update={"schedule_paused": True})) is None
    limited = plain.model_copy(update={"concurrency_limit": 1})
    assert deployment_wake_reason(limited, plain) == LIMIT_RAISED


def pools_schedule() -> Any:
    from dispatcher.schedules import parse_schedule

    return parse_schedule({"interval": 60})


# the API's wake-ups ---------------------------------------------------------------------------------------
def test_a_run_created_through_the_api_wakes_its_pool(api: Api, woken: RecordedWakeups) -> None:
    status, body = call(api, "POST", "/deployments/dep/runs", {})
    assert status == 201, body
    later = utcnow() + timedelta(seconds=30)
    status, ahead = call(api, "POST", "/deployments/dep/runs", {"scheduled_time": later.isoformat()})
    assert status == 201, ahead
    assert woken.calls == [("pool", RUN_CREATED), ("pool", RUN_CREATED)]
    # Each wake says when its run falls due: a dispatcher that can wait (on AWS) passes then, not now.
    assert woken.dues == [FlowRun.model_validate(body).scheduled_time, later]


def test_a_refused_request_wakes_nothing(api: Api, woken: RecordedWakeups) -> None:
    assert call(api, "POST", "/deployments/nope/runs", {})[0] == 404
    assert call(api, "POST", "/deployments/dep/runs", {"parameters": "x"})[0] == 422
    assert call(api, "POST", "/work_pools/nope/resume")[0] == 404
    assert call(api, "PATCH", "/work_pools/pool", {"concurrency_limit": -1})[0] == 422
    assert api.handle(Request("POST", "/deployments/dep/runs", body=b"{}")).status == 401
    assert woken.calls == []


def test_a_callback_that_ends_a_run_wakes_its_pool_once(api: Api, store: SQLiteStore, woken: RecordedWakeups) -> None:
    run = admitted_run(store)
    assert callback(api, store, run, "RUNNING")[0] == 200
    assert woken.calls == []  # still active: nothing freed
    assert callback(api, store, run, "COMPLETED")[0] == 200
    assert woken.calls == [("pool", SLOT_FREED)]
    assert callback(api, store, run, "FAILED")[0] == 200  # stale after the end: recorded as a no-op
    assert woken.calls == [("pool", SLOT_FREED)]


def test_cancelling_an_active_run_wakes_its_pool(api: Api, store: SQLiteStore, woken: RecordedWakeups) -> None:
    waiting = deployments.run_deployment(store, "dep", scheduled_time=utcnow() + timedelta(hours=1))
    assert call(api, "POST", f"/flow_runs/{waiting.id}/cancel")[0] == 200
    assert woken.calls == []  # a SCHEDULED run held no slot
    run = admitted_run(store)
    status, body = call(api, "POST", f"/flow_runs/{run.id}/cancel")
    assert status == 200 and body["state"] == "CANCELLING"
    assert woken.calls == [("pool", RUN_CANCELLED)]


def test_resuming_or_raising_a_pool_wakes_it(api: Api, woken: RecordedWakeups) -> None:
    assert call(api, "POST", "/work_pools/pool/pause")[0] == 200
    assert call(api, "POST", "/work_pools/pool/resume")[0] == 200
    assert call(api, "POST", "/work_pools/pool/resume")[0] == 200  # already running: nothing new
    assert call(api, "PATCH", "/work_pools/pool", {"concurrency_limit": 0})[0] == 200  # lowered
    assert call(api, "PATCH", "/work_pools/pool", {"concurrency_limit": 2})[0] == 200
    assert call(api, "PATCH", "/work_pools/pool", {"concurrency_limit": None})[0] == 200
    assert call(api, "PATCH", "/work_pools/pool", {"paused": True})[0] == 200
    assert call(api, "PATCH", "/work_pools/pool", {"paused": False})[0] == 200
    reasons = [POOL_RESUMED, LIMIT_RAISED, LIMIT_RAISED, POOL_RESUMED]
    assert woken.calls == [("pool", reason) for reason in reasons]


def test_resuming_or_raising_a_queue_wakes_its_pool(api: Api, woken: RecordedWakeups) -> None:
    assert call(api, "PATCH", "/work_pools/pool/queues/default", {"paused": True})[0] == 200
    assert call(api, "PATCH", "/work_pools/pool/queues/default", {"paused": False})[0] == 200
    assert call(api, "PATCH", "/work_pools/pool/queues/default", {"concurrency_limit": 1})[0] == 200
    assert call(api, "PATCH", "/work_pools/pool/queues/default", {"concurrency_limit": 4})[0] == 200
    assert woken.calls == [("pool", QUEUE_RESUMED), ("pool", LIMIT_RAISED)]


def test_a_deployment_with_a_schedule_or_a_raised_limit_wakes_its_pool(api: Api, woken: RecordedWakeups) -> None:
    assert call(api, "POST", "/deployments", {"name": "plain", "pool": "pool"})[0] == 201
    assert woken.calls == []
    assert call(api, "POST", "/deployments", {"name": "timed", "pool": "pool", "schedules": EVERY_MINUTE})[0] == 201
    assert call(api, "PATCH", "/deployments/plain", {"concurrency_limit": 1})[0] == 200
    assert call(api, "PATCH", "/deployments/plain", {"concurrency_limit": None})[0] == 200
    assert call(api, "PATCH", "/deployments/plain", {"schedules": EVERY_MINUTE})[0] == 200
    assert woken.calls == [("pool", SCHEDULE_CHANGED), ("pool", LIMIT_RAISED), ("pool", SCHEDULE_CHANGED)]


class _Raising:
    def wake(self, pool: str | None, reason: str) -> None:
        raise RuntimeError("broken wake-up")


def test_a_wakeup_that_raises_does_not_fail_the_stored_change(store: SQLiteStore) -> None:
    api = Api(store, api_token=TOKEN, wakeups=_Raising())
    status, body = call(api, "POST", "/deployments/dep/runs", {})
    assert status == 201 and store.get_run(body["id"]) is not None


def test_the_cli_imports_no_handler_and_no_aws_sdk() -> None:
    """The CLI wakes an AWS stack's dispatch function with `dispatcher.aws_wakeups`: no handler module is loaded
    for it, and boto3 only when an invoke is sent."""
    code = "import json, sys\nimport dispatcher.cli\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(result.stdout))
    assert "dispatcher" in loaded
    assert not loaded & {"handlers", "boto3", "botocore"}, sorted(loaded & {"handlers", "boto3", "botocore"})
