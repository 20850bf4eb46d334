"""Run callbacks over real HTTP: signed reports move runs, anything unsigned, stale or replayed changes nothing."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dispatcher import deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.api import Api
from dispatcher.callbacks import (
    SECRET_ENV,
    SECRET_SETTING,
    apply_callback,
    callback_url,
    master_secret,
    run_token,
)
from dispatcher.cancelling import cancel_run
from dispatcher.errors import InvalidInput
from dispatcher.http_server import make_server
from dispatcher.models import HISTORY_NOOPS_KEPT, RECENT_REPORTS_KEPT, FlowRun, utcnow
from dispatcher.signing import PARAMETERS_SIGNED_BODY, SIGNATURE_HEADER, SignatureError, sign
from dispatcher.states import StateType
from dispatcher.store.base import pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    s = SQLiteStore(str(tmp_path / "pushpool.db"))
    pools.create_pool(s, "pool", concurrency_limit=1)
    deployments.create_deployment(s, "dep", pool="pool")
    yield s
    s.close()


@pytest.fixture
def base_url(store: SQLiteStore) -> Iterator[str]:
    server = make_server(Api(store, api_token=None), port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def new_run(store: SQLiteStore, *, admit: bool = True) -> FlowRun:
    now = utcnow()
    run = deployments.run_deployment(store, "dep", scheduled_time=now - timedelta(seconds=1))
    if admit:
        assert [r.id for r in admit_pool(store, "pool", now).admitted] == [run.id]
    stored = store.get_run(run.id)
    assert stored is not None
    return stored


def token_of(store: SQLiteStore, run: FlowRun) -> str:
    return run_token(master_secret(store), run.deployment_id, run.id)


def post(base_url: str, run_id: str, body: bytes, signature: str | None) -> tuple[int, Any]:
    url = urlsplit(callback_url(base_url, run_id))
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    conn.request("POST", url.path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def report(
    base_url: str, store: SQLiteStore, run: FlowRun, payload: dict[str, Any], *, at: int | None = None
) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    return post(base_url, run.id, body, sign(token_of(store, run), body, at or int(time.time())))


def slots_active(store: SQLiteStore) -> tuple[int, int]:
    s = store.slots([pool_slot("pool"), queue_slot("pool", "default")])
    return s[pool_slot("pool")].active, s[queue_slot("pool", "default")].active


def stored(store: SQLiteStore, run: FlowRun) -> FlowRun:
    got = store.get_run(run.id)
    assert got is not None
    return got


# the happy path ---------------------------------------------------------------------------------------------
def test_running_then_completed_moves_the_run_and_releases_its_slot(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    assert slots_active(store) == (1, 1)

    status, body = report(base_url, store, run, {"state": "RUNNING"})
    assert (status, body) == (200, {"id": run.id, "state": "RUNNING", "state_name": "Running", "applied": True})
    assert slots_active(store) == (1, 1)

    status, body = report(base_url, store, run, {"state": "COMPLETED", "exit_code": 0})
    assert status == 200 and body["state"] == "COMPLETED"
    after = stored(store, run)
    assert after.state is StateType.COMPLETED
    assert after.state_history[-1].message == "exit code 0"
    assert after.state_history[-1].source.startswith("callback:")
    assert slots_active(store) == (0, 0)


def test_failed_records_the_exit_code(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    status, body = report(base_url, store, run, {"state": "FAILED", "exit_code": 3})
    assert status == 200 and body["state"] == "FAILED"
    after = stored(store, run)
    assert after.state_history[-1].message == "exit code 3"
    assert slots_active(store) == (0, 0)


def test_a_given_message_is_kept(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    report(base_url, store, run, {"state": "FAILED", "exit_code": 1, "message": "ValueError: boom"})
    assert stored(store, run).state_history[-1].message == "ValueError: boom"


# refused: nothing changes -----------------------------------------------------------------------------------
def _forged(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    return sign("not-the-run-token", body, int(time.time()))


def _tampered(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    return sign(token_of(store, run), body.replace(b"FAILED", b"RUNNING"), int(time.time()))


def _stale(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    return sign(token_of(store, run), body, int(time.time()) - 301)


def _future(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    return sign(token_of(store, run), body, int(time.time()) + 301)


def _missing(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    return None


def _malformed(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    return "v1=deadbeef"


def _other_run(store: SQLiteStore, run: FlowRun, body: bytes) -> str | None:
    # A token leaked from one run must not speak for another run of the same deployment.
    other = new_run(store, admit=False)
    return sign(token_of(store, other), body, int(time.time()))


@pytest.mark.parametrize("signer", [_forged, _tampered, _stale, _future, _missing, _malformed, _other_run])
def test_a_bad_signature_is_refused_and_changes_nothing(base_url: str, store: SQLiteStore, signer: Any) -> None:
    run = new_run(store)
    body = b'{"state": "FAILED", "exit_code": 1}'
    status, answer = post(base_url, run.id, body, signer(store, run, body))
    assert status == 401
    assert SIGNATURE_HEADER in answer["error"]
    assert stored(store, run) == run
    assert slots_active(store) == (1, 1)


def test_the_signature_is_checked_before_the_body(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    status, _ = post(base_url, run.id, b"{not json", sign("wrong", b"{not json", int(time.time())))
    assert status == 401


def test_a_replay_is_refused_and_changes_nothing(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    body = b'{"state": "RUNNING"}'
    signature = sign(token_of(store, run), body, int(time.time()))
    assert post(base_url, run.id, body, signature)[0] == 200
    before = stored(store, run)
    status, answer = post(base_url, run.id, body, signature)
    assert status == 401 and "replay" in answer["error"]
    assert stored(store, run) == before


def test_concurrent_copies_of_one_callback_apply_once(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    body = b'{"state": "COMPLETED", "exit_code": 0}'
    signature = sign(token_of(store, run), body, int(time.time()))
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(post(base_url, run.id, body, signature)[0])) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 401, 401, 401]
    assert [r.state for r in stored(store, run).state_history].count(StateType.COMPLETED) == 1
    assert slots_active(store) == (0, 0)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "garbage",
        "t=1,v1=" + "0" * 64,  # stale
        "t={now},v1=" + "0" * 64,  # fresh and wrong
        "t={now},v1={right}",  # right for the known run: for an unknown id it is simply wrong
    ],
)
def test_an_unknown_run_is_answered_as_a_bad_signature(base_url: str, store: SQLiteStore, header: str | None) -> None:
    """Run ids cannot be probed: an unknown run gets the very answer a known run gets for a bad signature."""
    run = new_run(store)
    body = b'{"state": "RUNNING"}'
    now = int(time.time())
    right = sign(token_of(store, run), body, now).partition("v1=")[2]
    signature = None if header is None else header.format(now=now, right=right)
    if header is not None and "{right}" in header:
        known_bad = post(base_url, run.id, body, sign("0" * 64, body, now))
    else:
        known_bad = post(base_url, run.id, body, signature)
    unknown = post(base_url, "no-such-run", body, signature)
    assert known_bad[0] == 401
    assert unknown == known_bad
    assert "no-such-run" not in json.dumps(unknown[1])
    assert stored(store, run).state is StateType.PENDING


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"{not json", 400, ["not valid JSON"]),
        (b"[1, 2]", 422, ["JSON object"]),
        (b'{"state": "DONE"}', 422, ["state", "RUNNING", "COMPLETED", "FAILED", "DONE"]),
        (b'{"exit_code": 0}', 422, ["state", "required"]),
        (b'{"state": "FAILED", "exit_code": "1"}', 422, ["exit_code"]),
        (b'{"state": "FAILED", "exit_code": true}', 422, ["exit_code"]),
        (b'{"state": "FAILED", "code": 1}', 422, ["'code'", "state, exit_code, message"]),
        (json.dumps({"state": "FAILED", "message": "x" * 2001}).encode(), 422, ["message", "2000"]),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(
    base_url: str, store: SQLiteStore, payload: bytes, status: int, words: list[str]
) -> None:
    run = new_run(store)
    got, answer = post(base_url, run.id, payload, sign(token_of(store, run), payload, int(time.time())))
    assert got == status
    for word in words:
        assert word in answer["error"]
    assert answer["error"].endswith(".")
    assert stored(store, run) == run


# accepted as no-ops (SPEC §2) -------------------------------------------------------------------------------
def test_a_late_running_after_completed_is_recorded_not_applied(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    report(base_url, store, run, {"state": "COMPLETED", "exit_code": 0})
    status, body = report(base_url, store, run, {"state": "RUNNING"})
    assert (status, body["state"], body["applied"]) == (200, "COMPLETED", False)
    after = stored(store, run)
    assert after.state is StateType.COMPLETED
    last = after.state_history[-1]
    assert (last.state, last.applied) == (StateType.RUNNING, False)
    assert slots_active(store) == (0, 0)


def test_a_duplicate_completed_is_a_no_op(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    report(base_url, store, run, {"state": "COMPLETED", "exit_code": 0})
    # A fresh signature (another second) makes it a duplicate report, not a replay of the same message.
    status, body = report(base_url, store, run, {"state": "COMPLETED", "exit_code": 0}, at=int(time.time()) - 5)
    assert (status, body["applied"]) == (200, False)
    after = stored(store, run)
    assert [(r.state, r.applied) for r in after.state_history[-2:]] == [
        (StateType.COMPLETED, True),
        (StateType.COMPLETED, False),
    ]
    assert slots_active(store) == (0, 0)


def test_running_for_a_run_not_admitted_is_recorded_not_applied(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store, admit=False)
    status, body = report(base_url, store, run, {"state": "RUNNING"})
    assert (status, body["state"], body["applied"]) == (200, "SCHEDULED", False)
    after = stored(store, run)
    assert after.state is StateType.SCHEDULED
    assert (after.state_history[-1].state, after.state_history[-1].applied) == (StateType.RUNNING, False)
    assert after.version == run.version + 1
    assert slots_active(store) == (0, 0)


def test_a_cancelling_run_ends_cancelled_with_its_job(base_url: str, store: SQLiteStore) -> None:
    run = new_run(store)
    cancel_run(store, run.id)
    _, body = report(base_url, store, run, {"state": "RUNNING"}, at=int(time.time()) - 1)
    assert (body["state"], body["applied"]) == ("CANCELLING", False)
    _, body = report(base_url, store, run, {"state": "FAILED", "exit_code": 143})
    assert (body["state"], body["applied"]) == ("CANCELLED", True)
    assert stored(store, run).state_history[-1].message == "ended while cancelling: FAILED, exit code 143"
    assert slots_active(store) == (0, 0)


# the core function and tokens -------------------------------------------------------------------------------
def test_apply_callback_uses_the_given_clock(store: SQLiteStore) -> None:
    run = new_run(store)
    body = b'{"state": "RUNNING"}'
    signature = sign(token_of(store, run), body, 1_000_000)
    with pytest.raises(SignatureError):
        apply_callback(store, run.id, body, signature)
    now = datetime.fromtimestamp(1_000_100, tz=UTC)
    after = apply_callback(store, run.id, body, signature, now=now)
    assert after.state is StateType.RUNNING and after.version == run.version + 1
    assert after == stored(store, run)
    # A clock behind the run's own records (1970 here) stamps no record before them: the history stays in order.
    assert after.state_history[-1].time == run.state_history[-1].time > now


def test_apply_callback_errors_are_pushpool_errors(store: SQLiteStore) -> None:
    with pytest.raises(SignatureError):
        apply_callback(store, "nope", b"{}", None)
    run = new_run(store)
    with pytest.raises(InvalidInput):
        apply_callback(store, run.id, b"{}", sign(token_of(store, run), b"{}", int(time.time())))


def test_tokens_are_per_run_and_per_deployment() -> None:
    secret = b"s3cret"
    token = run_token(secret, "dep-1", "run-1")
    assert token == run_token(secret, "dep-1", "run-1")
    assert len(token) == 64 and int(token, 16) >= 0
    others = [
        run_token(secret, "dep-1", "run-2"),
        run_token(secret, "dep-2", "run-1"),
        run_token(b"x", "dep-1", "run-1"),
    ]
    assert len({token, *others}) == 4


def test_master_secret_from_env_else_generated_once(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = master_secret(store)
    assert len(first) == 64 and master_secret(store) == first
    assert store.get_setting(SECRET_SETTING) == first.decode()
    monkeypatch.setenv(SECRET_ENV, "from-the-environment")
    assert master_secret(store) == b"from-the-environment"


def test_callback_url() -> None:
    assert callback_url("https://x.example/api/", "r1") == "https://x.example/api/callbacks/runs/r1"
    assert callback_url("http://127.0.0.1:4300", "r1") == "http://127.0.0.1:4300/callbacks/runs/r1"


# parameters by reference ---------------------------------------------------------------------------------
def get_parameters(base_url: str, run_id: str, signature: str | None) -> tuple[int, Any]:
    url = urlsplit(callback_url(base_url, run_id) + "/parameters")
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    conn.request("GET", url.path, headers={SIGNATURE_HEADER: signature} if signature else {})
    response = conn.getresponse()
    status, body = response.status, json.loads(response.read() or b"null")
    conn.close()
    return status, body


def test_a_job_reads_its_own_parameters_with_its_token_and_nobody_else_can(store: SQLiteStore, base_url: str) -> None:
    big = {"rows": list(range(2000)), "name": "x" * 5000}
    run = deployments.run_deployment(store, "dep", parameters=big)
    other = deployments.run_deployment(store, "dep", parameters={"secret": "of another run"})
    now = int(time.time())
    good = sign(token_of(store, run), PARAMETERS_SIGNED_BODY, now)
    assert get_parameters(base_url, run.id, good) == (200, big)
    # Another run's token, a callback's signature, none at all, or an unknown run: the same 401.
    refused = [
        get_parameters(base_url, run.id, sign(token_of(store, other), PARAMETERS_SIGNED_BODY, now)),
        get_parameters(base_url, run.id, sign(token_of(store, run), b'{"state":"RUNNING"}', now)),
        get_parameters(base_url, run.id, None),
        get_parameters(base_url, "00000000-0000-4000-8000-000000000000", good),
    ]
    assert {status for status, _ in refused} == {401}
    assert refused[0][1] == refused[3][1], "an unknown run is answered as a wrong signature"
    # And a parameters signature is no callback: it moves nothing.
    status, _ = post(base_url, run.id, PARAMETERS_SIGNED_BODY, good)
    assert status in (400, 422)
    assert get_run_state(store, run.id) is StateType.SCHEDULED


def get_run_state(store: SQLiteStore, run_id: str) -> StateType:
    run = store.get_run(run_id)
    assert run is not None
    return run.state


def test_a_replayed_no_op_is_refused_after_the_history_dropped_its_record(base_url: str, store: SQLiteStore) -> None:
    # The history keeps only the newest HISTORY_NOOPS_KEPT no-ops; a replay must be recognised all the same.
    run = new_run(store)
    token = token_of(store, run)
    assert (
        post(base_url, run.id, b'{"state":"RUNNING"}', sign(token, b'{"state":"RUNNING"}', int(time.time())))[0] == 200
    )
    first = b'{"state":"RUNNING","message":"noop 0"}'
    first_signature = sign(token, first, int(time.time()))
    assert post(base_url, run.id, first, first_signature)[0] == 200
    for i in range(1, HISTORY_NOOPS_KEPT + 40):
        body = json.dumps({"state": "RUNNING", "message": f"noop {i}"}).encode()
        assert post(base_url, run.id, body, sign(token, body, int(time.time())))[0] == 200
    before = store.get_run(run.id)
    assert before is not None and not any(r.message == "noop 0" for r in before.state_history), "record dropped"
    status, answer = post(base_url, run.id, first, first_signature)
    assert status == 401 and "replay" in answer["error"]
    after = store.get_run(run.id)
    assert after is not None and after.version == before.version
    assert len(after.recent_reports) <= RECENT_REPORTS_KEPT
