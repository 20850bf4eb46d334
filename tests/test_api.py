"""The management API over real HTTP: bearer auth, pools, queues, deployments, runs, cancel, and its errors."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher.admit_pass import admit_pool
from dispatcher.api import MAX_PREVIEW_HOURS, Api, Request
from dispatcher.http_server import MAX_BODY_BYTES, make_server
from dispatcher.models import utcnow
from dispatcher.store.base import pool_slot
from dispatcher.store.sqlite import SQLiteStore

TOKEN = "test-token-123"
Call = Callable[..., tuple[int, Any, dict[str, str]]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "pushpool.db"))
    yield s
    s.close()


def _serve(api: Api) -> Iterator[tuple[str, int]]:
    server = make_server(api, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield "127.0.0.1", int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def address(store: SQLiteStore) -> Iterator[tuple[str, int]]:
    yield from _serve(Api(store, api_token=TOKEN))


def _client(address: tuple[str, int]) -> Call:
    def call(
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        conn = http.client.HTTPConnection(*address, timeout=10)
        sent = {**({"Authorization": f"Bearer {token}"} if token is not None else {}), **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        return resp.status, json.loads(text) if text else None, dict(resp.getheaders())

    return call


@pytest.fixture
def call(address: tuple[str, int]) -> Call:
    return _client(address)


@pytest.fixture
def pool(call: Call) -> dict[str, Any]:
    status, body, _ = call("POST", "/work_pools", {"name": "p", "concurrency_limit": 1})
    assert status == 201, body
    status, body, _ = call("POST", "/deployments", {"name": "d", "pool": "p"})
    assert status == 201, body
    return dict(body)


def _error(result: tuple[int, Any, dict[str, str]], status: int, *words: str) -> None:
    got, body, _ = result
    assert got == status, body
    message = body["error"]
    assert message.count(". ") == 0, message  # one sentence
    for word in words:
        assert word in message, message


# auth -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": ""}]
)
def test_management_needs_the_bearer_token(call: Call, headers: dict[str, str]) -> None:
    _error(call("GET", "/work_pools", token=None, headers=headers), 401, "bearer")
    _error(call("POST", "/work_pools", {"name": "p"}, token=None, headers=headers), 401)
    assert call("GET", "/work_pools")[1] == []


def test_the_bearer_scheme_is_case_insensitive(call: Call) -> None:
    assert call("GET", "/work_pools", token=None, headers={"authorization": f"bearer {TOKEN}"})[0] == 200


def test_management_disabled_without_a_token(store: SQLiteStore) -> None:
    for address in _serve(Api(store, api_token=None)):
        call = _client(address)
        _error(call("GET", "/work_pools"), 403, "PUSHPOOL_API_TOKEN")
        _error(call("POST", "/flow_runs/x/cancel"), 403)


def test_a_gateway_that_authorised_management_needs_no_bearer(store: SQLiteStore) -> None:
    for address in _serve(Api(store, api_token=None, gateway_authorized=True)):
        call = _client(address)
        status, body, _ = call("POST", "/work_pools", {"name": "p"}, token=None)
        assert status == 201 and body["name"] == "p"
        assert [p["name"] for p in call("GET", "/work_pools", token=None)[1]] == ["p"]


# pools and queues -------------------------------------------------------------------------------------------
def test_pool_lifecycle(call: Call) -> None:
    status, pool, _ = call("POST", "/work_pools", {"name": "p", "concurrency_limit": 2, "description": "team"})
    assert status == 201
    assert (pool["name"], pool["type"], pool["concurrency_limit"], pool["status"]) == ("p", "process", 2, "NOT_READY")
    assert [p["name"] for p in call("GET", "/work_pools")[1]] == ["p"]
    assert call("GET", "/work_pools/p")[1]["description"] == "team"

    _, pool, _ = call("PATCH", "/work_pools/p", {"description": "other"})
    assert (pool["description"], pool["concurrency_limit"]) == ("other", 2)  # an absent limit is kept
    _, pool, _ = call("PATCH", "/work_pools/p", {"concurrency_limit": None})
    assert pool["concurrency_limit"] is None  # an explicit null clears it

    assert call("POST", "/work_pools/p/pause")[1]["status"] == "PAUSED"
    assert call("POST", "/work_pools/p/resume")[1]["status"] == "NOT_READY"
    _error(call("POST", "/work_pools", {"name": "p"}), 409, "already exists")

    status, body, _ = call("DELETE", "/work_pools/p")
    assert (status, body) == (204, None)
    _error(call("GET", "/work_pools/p"), 404, "'p'")


def test_queues(call: Call) -> None:
    call("POST", "/work_pools", {"name": "p"})
    status, queue, _ = call("POST", "/work_pools/p/queues", {"name": "high", "priority": 1, "concurrency_limit": 3})
    assert status == 201 and queue["priority"] == 1
    listed = call("GET", "/work_pools/p/queues")[1]
    assert [(q["name"], q["priority"]) for q in listed] == [("high", 1), ("default", 2)]
    _, queue, _ = call("PATCH", "/work_pools/p/queues/high", {"paused": True})
    assert (queue["status"], queue["concurrency_limit"]) == ("PAUSED", 3)
    assert call("GET", "/work_pools/p/queues/high")[1]["paused"] is True
    _error(call("DELETE", "/work_pools/p/queues/default"), 422, "default")
    assert call("DELETE", "/work_pools/p/queues/high")[0] == 204
    _error(call("GET", "/work_pools/p/queues/high"), 404, "high")
    _error(call("GET", "/work_pools/nope/queues"), 404, "nope")


def test_preview(call: Call, pool: dict[str, Any]) -> None:
    call("POST", "/deployments/d/runs", {})
    status, preview, _ = call("GET", "/work_pools/p/preview?hours=2")
    assert status == 200 and preview["hours"] == 2
    assert [q["queue"]["name"] for q in preview["queues"]] == ["default"]
    assert len(preview["queues"][0]["runs"]) == 1
    _error(call("GET", "/work_pools/p/preview?hours=soon"), 422, "hours")
    _error(call("GET", "/work_pools/p/preview?hours=0"), 422, "hours")
    _error(call("GET", "/work_pools/p/preview?hours=8785"), 422, "hours", "8784")
    assert call("GET", "/work_pools/p/preview?hours=8784")[1]["hours"] == MAX_PREVIEW_HOURS == 8784


# deployments and runs ---------------------------------------------------------------------------------------
def test_deployments(call: Call, pool: dict[str, Any]) -> None:
    assert pool["queue"] == "default"
    status, dep, _ = call(
        "POST",
        "/deployments",
        {
            "name": "nightly",
            "pool": "p",
            "schedules": [{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}],
            "parameters": {"x": 1},
            "tags": ["etl"],
        },
    )
    assert status == 201 and dep["schedules"] == [{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}]
    assert [d["name"] for d in call("GET", "/deployments?pool=p")[1]] == ["d", "nightly"]
    _, dep, _ = call("PATCH", "/deployments/nightly", {"schedule_paused": True, "concurrency_limit": 2})
    assert (dep["schedule_paused"], dep["concurrency_limit"]) == (True, 2)
    assert call("GET", "/deployments/nightly")[1]["tags"] == ["etl"]
    assert call("DELETE", "/deployments/nightly")[0] == 204
    _error(call("GET", "/deployments/nightly"), 404, "nightly")


def test_run_a_deployment_then_list_and_get_runs(call: Call, pool: dict[str, Any]) -> None:
    status, run, _ = call("POST", "/deployments/d/runs", {"parameters": {"x": 1}})
    assert status == 201 and (run["state"], run["parameters"]) == ("SCHEDULED", {"x": 1})
    later = (utcnow() + timedelta(hours=1)).isoformat()
    _, future, _ = call("POST", "/deployments/d/runs", {"scheduled_time": later})
    assert future["scheduled_time"].startswith(later[:19])

    assert [r["id"] for r in call("GET", "/flow_runs")[1]] == [future["id"], run["id"]]
    assert [r["id"] for r in call("GET", "/flow_runs?pool=p&queue=default&limit=1")[1]] == [future["id"]]
    assert len(call("GET", "/flow_runs?state=scheduled")[1]) == 2
    assert call("GET", "/flow_runs?state=RUNNING")[1] == []
    got = call("GET", f"/flow_runs/{run['id']}")[1]
    assert got["id"] == run["id"] and got["state_history"][0]["state"] == "SCHEDULED"
    _error(call("GET", "/flow_runs/nope"), 404, "nope")
    _error(call("GET", "/flow_runs?state=DONE"), 422, "state", "SCHEDULED")
    _error(call("GET", "/flow_runs?limit=0"), 422, "limit")
    _error(call("GET", "/flow_runs?colour=red"), 422, "colour", "pool, queue, deployment, state, limit, cursor")
    _error(call("GET", "/flow_runs?pool=nope"), 404, "nope")


def test_cancel(call: Call, store: SQLiteStore, pool: dict[str, Any]) -> None:
    scheduled = call("POST", "/deployments/d/runs", {"scheduled_time": (utcnow() + timedelta(hours=1)).isoformat()})
    status, run, _ = call("POST", f"/flow_runs/{scheduled[1]['id']}/cancel")
    assert (status, run["state"]) == (200, "CANCELLED")

    admitted = call("POST", "/deployments/d/runs", {})[1]
    assert [r.id for r in admit_pool(store, "p", utcnow()).admitted] == [admitted["id"]]
    status, run, _ = call("POST", f"/flow_runs/{admitted['id']}/cancel")
    assert (status, run["state"]) == (200, "CANCELLING")
    assert store.slots([pool_slot("p")])[pool_slot("p")].active == 1  # held until the infrastructure stops
    assert call("POST", f"/flow_runs/{admitted['id']}/cancel")[1]["version"] == run["version"]  # asking twice

    _error(call("POST", f"/flow_runs/{scheduled[1]['id']}/cancel"), 409, "CANCELLED", "nothing to cancel")
    _error(call("POST", "/flow_runs/nope/cancel"), 404, "nope")


# validation: 4xx naming the field, nothing written ----------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "p", "colour": "red"}, 422, ["'colour'", "allowed fields"]),
        ({"name": "pushpool-x"}, 422, ["pushpool"]),
        ({"name": "a/b"}, 422, ["/"]),
        ({"name": "p", "concurrency_limit": -1}, 422, ["concurrency_limit"]),
        ({"name": "p", "concurrency_limit": "5"}, 422, ["concurrency_limit"]),
        ({"name": "p", "concurrency_limit": True}, 422, ["concurrency_limit"]),
        ({"name": "p", "type": "kubernetes"}, 422, ["kubernetes"]),
        ({"type": "process"}, 422, ["name", "required"]),
        ([1], 422, ["JSON object"]),
    ],
)
def test_a_bad_pool_body_is_refused_and_nothing_written(call: Call, body: Any, status: int, words: list[str]) -> None:
    _error(call("POST", "/work_pools", body), status, *words)
    assert call("GET", "/work_pools")[1] == []


def test_invalid_json_is_400(call: Call) -> None:
    _error(call("POST", "/work_pools", raw=b'{"name": '), 400, "not valid JSON")
    assert call("GET", "/work_pools")[1] == []


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b'[1, {"b": NaN}]'])
def test_nan_and_infinity_are_not_json_numbers(call: Call, pool: dict[str, Any], number: bytes) -> None:
    """Python's and pydantic's parsers take them; stored, they would come back as null."""
    words = ("the request body is not valid JSON: NaN/Infinity are not numbers",)
    _error(call("POST", "/deployments/d/runs", raw=b'{"parameters": {"a": ' + number + b"}}"), 400, *words)
    _error(call("POST", "/deployments/d/runs", raw=b'{"job_variables": {"env": {"X": ' + number + b"}}}"), 400, *words)
    body = b'{"name": "x", "pool": "p", "parameters": {"a": ' + number + b"}}"
    _error(call("POST", "/deployments", raw=body), 400, *words)
    _error(call("PATCH", "/deployments/d", raw=b'{"parameters": {"a": ' + number + b"}}"), 400, *words)
    _error(call("POST", "/work_pools", raw=b'{"name": "q", "job_variables": {"a": ' + number + b"}}"), 400, *words)
    assert call("GET", "/flow_runs")[1] == []
    assert [d["name"] for d in call("GET", "/deployments")[1]] == ["d"]
    assert call("GET", "/deployments/d")[1]["parameters"] == {}
    assert [p["name"] for p in call("GET", "/work_pools")[1]] == ["p"]


def test_finite_numbers_and_other_bad_json_keep_their_answers(call: Call, pool: dict[str, Any]) -> None:
    status, run, _ = call("POST", "/deployments/d/runs", raw=b'{"parameters": {"a": 1e308, "b": -2.5e-300, "c": 7}}')
    assert status == 201 and run["parameters"] == {"a": 1e308, "b": -2.5e-300, "c": 7}
    deep = b'{"parameters": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    _error(call("POST", "/deployments/d/runs", raw=deep), 400, "not valid JSON")
    _error(call("POST", "/deployments/d/runs", raw=b'{"parameters": {"a": ' + b"1" * 5000 + b"}}"), 400, "JSON")
    _error(call("POST", "/deployments/d/runs", raw=b"\xff\xfe{}"), 400, "not valid JSON")
    assert len(call("GET", "/flow_runs")[1]) == 1


def test_bad_deployment_and_run_bodies(call: Call, pool: dict[str, Any]) -> None:
    _error(call("POST", "/deployments", {"name": "x", "pool": "p", "job_variables": {"nope": 1}}), 422, "nope")
    _error(
        call("POST", "/deployments", {"name": "x", "pool": "p", "schedules": [{"cron": "bad"}]}), 422, "schedules[0]"
    )
    _error(call("POST", "/deployments", {"name": "x", "pool": "p", "schedules": [{}]}), 422, "schedules[0]")
    _error(call("POST", "/deployments", {"name": "x", "pool": "nope"}), 404, "nope")
    assert [d["name"] for d in call("GET", "/deployments")[1]] == ["d"]
    _error(call("POST", "/deployments/d/runs", {"scheduled_time": "2030-01-01T00:00:00"}), 422, "scheduled_time")
    _error(call("POST", "/deployments/d/runs", {"parameters": [1]}), 422, "parameters")
    _error(call("PATCH", "/deployments/d", {"pool": "other"}), 422, "'pool'")
    assert call("GET", "/flow_runs")[1] == []


# routing and the adapter ------------------------------------------------------------------------------------
def test_unknown_route_is_404_and_wrong_method_405(call: Call) -> None:
    _error(call("GET", "/nothing/here"), 404, "/nothing/here")
    status, body, headers = call("PUT", "/work_pools")
    assert status == 405 and headers["Allow"] == "GET, POST" and "PUT" in body["error"]
    status, _, headers = call("GET", "/callbacks/runs/x")
    assert status == 405 and headers["Allow"] == "POST"


def test_a_trailing_slash_and_encoded_names_are_accepted(call: Call) -> None:
    call("POST", "/work_pools", {"name": "team a"})
    assert call("GET", "/work_pools/team%20a/")[1]["name"] == "team a"


def test_a_body_over_the_limit_is_413(address: tuple[str, int]) -> None:
    conn = http.client.HTTPConnection(*address, timeout=10)
    # Only the headers are sent: the server must refuse on Content-Length alone, without reading the body.
    conn.putrequest("POST", "/work_pools")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "limit" in json.loads(resp.read())["error"]
    conn.close()


def test_a_body_at_the_limit_is_read(call: Call) -> None:
    padding = " " * (MAX_BODY_BYTES - len(b'{"name": "p"}'))
    assert call("POST", "/work_pools", raw=b'{"name": "p"}' + padding.encode())[0] == 201


def test_handle_without_a_server(store: SQLiteStore) -> None:
    api = Api(store, api_token=TOKEN)
    response = api.handle(Request("post", "/work_pools", {"AUTHORIZATION": f"Bearer {TOKEN}"}, {}, b'{"name": "p"}'))
    assert response.status == 201 and response.body["name"] == "p"
    assert response.all_headers()["Content-Type"] == "application/json"
    assert json.loads(response.encoded())["name"] == "p"
    assert Request("GET", "/", {"X-Thing": "1"}).headers["x-thing"] == "1"


@pytest.mark.parametrize("text", ["abc", "{", "", "[" * 5_000])
def test_a_render_query_that_is_not_json_is_a_422_naming_it(call: Call, pool: dict[str, Any], text: str) -> None:
    from urllib.parse import quote

    status, body, _ = call("GET", f"/deployments/d/render?parameters={quote(text)}")
    assert status == 422, body
    assert "query parameter parameters must be a JSON object" in body["error"]
