"""Callbacks forged, replayed, tampered, stale, duplicated, reordered and after terminal, over real HTTP.

The callback route of `pushpool serve` (dispatcher/http_server.py over dispatcher/api.py) answers on a free
local port. Each run gets its honest reports (RUNNING, then its end) mixed with hostile ones. Figures:
accepted forged / replayed / tampered / stale / other-run callbacks (0), regressions (a run that moved
backwards or left a terminal state: 0), misapplied ends (0), 5xx answers (0), slot counters off (0).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from reliability_support import Figures, size

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.api import Api
from dispatcher.callbacks import master_secret, run_token
from dispatcher.http_server import make_server
from dispatcher.models import FlowRun, utcnow
from dispatcher.signing import SIGNATURE_HEADER, sign
from dispatcher.states import TERMINAL, StateType
from dispatcher.store.base import pool_slot
from dispatcher.store.sqlite import SQLiteStore

SCENARIO = "callbacks"
ORDER = {StateType.SCHEDULED: 0, StateType.PENDING: 1, StateType.RUNNING: 2, StateType.CANCELLING: 3}


class Served:
    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(str(tmp_path / "callbacks.db"))
        self.server = make_server(Api(self.store, api_token=None), "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.secret = master_secret(self.store)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()

    def token(self, run: FlowRun) -> str:
        return run_token(self.secret, run.deployment_id, run.id)

    def post(self, run_id: str, body: bytes, signature: str | None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        conn.request("POST", f"/callbacks/runs/{run_id}", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data) if data else None

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def _body(state: str, exit_code: int | None = None, message: str | None = None) -> bytes:
    payload: dict[str, Any] = {"state": state}
    if exit_code is not None:
        payload["exit_code"] = exit_code
    if message is not None:
        payload["message"] = message
    return json.dumps(payload).encode()


def test_hostile_callbacks_change_nothing_and_honest_ones_apply_once(served: Served, figures: Figures) -> None:
    rng = random.Random(18)
    n = size(24, 200)
    pools.create_pool(served.store, "cb")
    deployments.create_deployment(served.store, "dep", pool="cb")
    now = utcnow()
    runs = [
        deployments.run_deployment(served.store, "dep", scheduled_time=now - timedelta(seconds=1)) for _ in range(n)
    ]
    assert len(admit_pool(served.store, "cb", utcnow()).admitted) == n

    counts = dict.fromkeys(("forged", "replayed", "tampered", "stale", "other run", "unsigned"), 0)
    accepted = dict.fromkeys(counts, 0)
    regressions = misapplied = server_errors = 0
    sent = 0

    def hostile(kind: str, run: FlowRun, good: tuple[bytes, str] | None) -> None:
        nonlocal server_errors, sent
        token = served.token(run)
        body = _body(rng.choice(["RUNNING", "COMPLETED", "FAILED"]), rng.choice([None, 0, 1]))
        if kind == "forged":
            signature: str | None = sign(uuid.uuid4().hex * 2, body, int(time.time()))
        elif kind == "replayed":
            assert good is not None
            body, signature = good
        elif kind == "tampered":
            assert good is not None
            body = good[0].replace(b"RUNNING", b"FAILED").replace(b"COMPLETED", b"CANCELLED") + b" "
            signature = good[1]
        elif kind == "stale":
            signature = sign(token, body, int(time.time()) - 301)
        elif kind == "other run":
            other = runs[(runs.index(run) + 1) % len(runs)]
            signature = sign(served.token(other), body, int(time.time()))
        else:
            signature = None
        before = served.run(run.id)
        status, _ = served.post(run.id, body, signature)
        sent += 1
        counts[kind] += 1
        server_errors += status >= 500
        if status < 400:
            accepted[kind] += 1
        after = served.run(run.id)
        if after != before:
            accepted[kind] += status >= 400  # refused, yet something changed: as bad as accepted

    def honest(run: FlowRun, body: bytes) -> tuple[int, tuple[bytes, str]]:
        nonlocal server_errors, sent
        signature = sign(served.token(run), body, int(time.time()))
        status, _ = served.post(run.id, body, signature)
        sent += 1
        server_errors += status >= 500
        return status, (body, signature)

    finals: dict[str, StateType] = {}
    for run in runs:
        end = rng.choice([("COMPLETED", 0), ("FAILED", 3)])
        finals[run.id] = StateType(end[0])
        hostiles = [(kind, b"") for kind in counts for _ in range(rng.randint(1, 2))]
        rng.shuffle(hostiles)
        half = len(hostiles) // 2
        # A duplicate while running; after the end, a reordered RUNNING, a duplicate end and a different end:
        # each freshly signed (with a message, since the same bytes in the same second would be a replay),
        # accepted, recorded as a no-op.
        after_end = [
            ("late", _body("RUNNING", None, "late")),
            ("late", _body(*end, "dup")),
            ("late", _body("FAILED", 9)),
        ]
        rng.shuffle(after_end)
        plan: list[tuple[str, bytes]] = [
            ("honest", _body("RUNNING")),
            *hostiles[:half],
            ("late", _body("RUNNING", None, "dup")),
            ("honest", _body(*end)),
            *hostiles[half:],
            *after_end,
        ]
        last_good: tuple[bytes, str] | None = None
        highest = ORDER[StateType.PENDING]
        for step, body in plan:
            if step in ("honest", "late"):
                status, last_good = honest(run, body)
                assert status == 200, (step, body, status)
            else:
                hostile(step, run, last_good)
            now_state = served.run(run.id).state
            rank = 99 if now_state in TERMINAL else ORDER[now_state]
            regressions += rank < highest
            highest = max(highest, rank)

    # Several copies of one honest report at once: applied once, never twice.
    for run in runs[: max(1, n // 4)]:
        body = _body("FAILED", 7)
        signature = sign(served.token(run), body, int(time.time()))
        copies = [(run.id, body, signature)] * 4
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = [status for status, _ in pool.map(lambda c: served.post(*c), copies)]
        server_errors += sum(s >= 500 for s in statuses)
        sent += 4
        accepted["replayed"] += max(0, statuses.count(200) - 1)
        counts["replayed"] += 3

    for run in runs:
        stored = served.run(run.id)
        misapplied += stored.state is not finals[run.id]
    active = served.store.slots([pool_slot("cb")])[pool_slot("cb")].active

    figures.record(SCENARIO, "runs", n)
    figures.record(SCENARIO, "callbacks sent", sent)
    for kind, total in counts.items():
        figures.record(SCENARIO, f"{kind} sent", total)
        figures.record(SCENARIO, f"{kind} accepted", accepted[kind], target=0)
    figures.record(SCENARIO, "regressions", regressions, target=0)
    figures.record(SCENARIO, "misapplied ends", misapplied, target=0)
    figures.record(SCENARIO, "5xx answers", server_errors, target=0)
    figures.record(SCENARIO, "pool slots held after every end", active, target=0)
    assert accepted == dict.fromkeys(counts, 0)
    assert (regressions, misapplied, server_errors, active) == (0, 0, 0, 0)


def test_an_old_callback_replayed_after_many_others_is_still_refused(served: Served, figures: Figures) -> None:
    """History is bounded (issue #18, item 5): trimming it must not make an old signed message new again."""
    pools.create_pool(served.store, "cb")
    deployments.create_deployment(served.store, "dep", pool="cb")
    run = deployments.run_deployment(served.store, "dep", scheduled_time=utcnow() - timedelta(seconds=1))
    admit_pool(served.store, "cb", utcnow())
    first_body = _body("RUNNING")
    first = sign(served.token(run), first_body, int(time.time()))
    assert served.post(run.id, first_body, first)[0] == 200
    later = size(120, 400)
    for i in range(later):
        body = json.dumps({"state": "RUNNING", "message": f"still running {i}"}).encode()
        assert served.post(run.id, body, sign(served.token(run), body, int(time.time())))[0] == 200
    status, _ = served.post(run.id, first_body, first)
    figures.record(SCENARIO, f"first callback replayed after {later} others, accepted", int(status < 400), target=0)
    assert status == 401


def test_an_unknown_run_cannot_be_told_from_a_bad_signature(served: Served, figures: Figures) -> None:
    """Issue #18, item 8: the answer to a bad signature must not say whether the run exists."""
    pools.create_pool(served.store, "cb")
    deployments.create_deployment(served.store, "dep", pool="cb")
    run = deployments.run_deployment(served.store, "dep", scheduled_time=utcnow() - timedelta(seconds=1))
    body = _body("RUNNING")
    signature = sign(uuid.uuid4().hex * 2, body, int(time.time()))
    probes = size(20, 200)
    told_apart = 0
    for _ in range(probes):
        known = served.post(run.id, body, signature)
        unknown = served.post(str(uuid.uuid4()), body, signature)
        told_apart += known != unknown
    figures.record(SCENARIO, f"run ids told apart by {probes} unsigned probes", told_apart, target=0)
    assert told_apart == 0
