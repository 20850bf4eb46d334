"""A RUNNING report for a run that is SCHEDULED (not admitted) is recorded as a no-op, never applied (SPEC §2-§3).

The case that matters: `flow-run retry` puts an ended run back to SCHEDULED/AwaitingRetry while a job of its
earlier attempt still holds the run's token. Were its RUNNING report applied, the run would be active without
having taken a slot, past every pool and queue limit. Pinned on every store, through `apply_callback` and
through the HTTP route.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.api import Api
from dispatcher.callbacks import SECRET_ENV, apply_callback, master_secret, run_token
from dispatcher.flow_runs import retry_run
from dispatcher.http_server import make_server
from dispatcher.models import FlowRun, utcnow
from dispatcher.signing import SIGNATURE_HEADER, sign
from dispatcher.states import StateType
from dispatcher.store.base import Store, pool_slot, queue_slot


@pytest.fixture
def limited(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    pools.create_pool(store, "pool", concurrency_limit=1)
    deployments.create_deployment(store, "dep", pool="pool")
    return store


@pytest.fixture
def base_url(limited: Store) -> Iterator[str]:
    server = make_server(Api(limited, api_token=None), port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def signed(store: Store, run: FlowRun, payload: dict[str, object], at: int) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, sign(run_token(master_secret(store), run.deployment_id, run.id), body, at)


def stored(store: Store, run_id: str) -> FlowRun:
    run = store.get_run(run_id)
    assert run is not None
    return run


def active(store: Store) -> tuple[int, int]:
    s = store.slots([pool_slot("pool"), queue_slot("pool", "default")])
    return s[pool_slot("pool")].active, s[queue_slot("pool", "default")].active


def retried_with_the_slot_taken(store: Store) -> tuple[FlowRun, FlowRun]:
    """Run A ran and ended, was retried (AwaitingRetry) and run B holds the pool's only slot."""
    now = utcnow()
    first = deployments.run_deployment(store, "dep", scheduled_time=now - timedelta(seconds=2))
    assert [r.id for r in admit_pool(store, "pool", now).admitted] == [first.id]
    body, signature = signed(store, first, {"state": "COMPLETED", "exit_code": 0}, int(time.time()) - 10)
    assert apply_callback(store, first.id, body, signature).state is StateType.COMPLETED
    retried = retry_run(store, first.id)
    assert (retried.state, retried.state_name) == (StateType.SCHEDULED, "AwaitingRetry")
    second = deployments.run_deployment(store, "dep", scheduled_time=now - timedelta(seconds=1))
    # The retried run is due too, but B came first in the queue's order: B takes the one slot.
    admitted = admit_pool(store, "pool", utcnow()).admitted
    assert [r.id for r in admitted] == [second.id]
    assert active(store) == (1, 1)
    return stored(store, first.id), second


def assert_refused(store: Store, before: FlowRun) -> None:
    after = stored(store, before.id)
    assert (after.state, after.state_name) == (StateType.SCHEDULED, "AwaitingRetry")
    last = after.state_history[-1]
    assert (last.state, last.applied) == (StateType.RUNNING, False)
    assert active(store) == (1, 1), "the stale report took no slot and made the run active past the limit"
    assert before.id not in {r.id for r in store.active_runs("pool")}


def test_an_earlier_attempts_running_is_a_no_op_through_apply_callback(limited: Store) -> None:
    run, _ = retried_with_the_slot_taken(limited)
    body, signature = signed(limited, run, {"state": "RUNNING"}, int(time.time()))
    answer = apply_callback(limited, run.id, body, signature)
    assert answer.state is StateType.SCHEDULED
    assert_refused(limited, run)


def test_an_earlier_attempts_running_is_a_no_op_through_the_route(limited: Store, base_url: str) -> None:
    run, _ = retried_with_the_slot_taken(limited)
    body, signature = signed(limited, run, {"state": "RUNNING"}, int(time.time()))
    conn = http.client.HTTPConnection("127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout=10)
    conn.request("POST", f"/callbacks/runs/{run.id}", body=body, headers={SIGNATURE_HEADER: signature})
    response = conn.getresponse()
    status, answer = response.status, json.loads(response.read())
    conn.close()
    assert (status, answer["state"], answer["state_name"], answer["applied"]) == (
        200,
        "SCHEDULED",
        "AwaitingRetry",
        False,
    )
    assert_refused(limited, run)
