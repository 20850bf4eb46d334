"""The OpenAPI document (`/openapi.json`) and its page (`/docs`): generated from the route table, valid, true.

True means: every route is in it and nothing else; its request schemas accept the bodies the CLI's options
make and refuse what the routes refuse; and a bounded schemathesis run against `pushpool serve` finds no 5xx
and no answer that breaks the documented response schema.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from serve_process import start_serve

from dispatcher.api import ROUTES, Api, Request
from dispatcher.openapi import PATH_PARAMETERS, document
from dispatcher.routes import RouteTable
from dispatcher.store.sqlite import SQLiteStore

TOKEN = "openapi-test-token"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = SQLiteStore(str(tmp_path / "s.db"))
    yield Api(store, api_token=TOKEN)
    store.close()


@pytest.fixture
def doc(api: Api) -> dict[str, Any]:
    return api.openapi()


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_route_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    routes = {(r.method.lower(), r.path) for r in ROUTES}
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert routes == documented
    assert len(routes) == len(ROUTES), "a method and path registered twice"


def test_operations_say_their_parameters_security_and_schemas(doc: dict[str, Any]) -> None:
    runs = doc["paths"]["/flow_runs"]["get"]
    params = {p["name"]: p for p in runs["parameters"]}
    assert params["limit"]["schema"]["type"] == "integer" and params["limit"]["schema"]["maximum"] == 200
    assert "RUNNING" in params["state"]["schema"]["enum"]
    assert runs["security"] == [{"bearer": []}]
    assert runs["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/FlowRun")
    assert runs["summary"].startswith("List flow runs")
    create = doc["paths"]["/work_pools"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PoolCreate")
    assert set(create["responses"]) >= {"201", "401", "409", "422", "default"}
    callback = doc["paths"]["/callbacks/runs/{run_id}"]["post"]
    assert callback["security"] == [{"callbackSignature": []}]
    assert {p["name"] for p in callback["parameters"]} == {"run_id", "X-Pushpool-Signature"}
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []
    assert doc["paths"]["/work_pools/{pool}"]["delete"]["responses"]["204"] == {"description": "Done; no content."}
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    # The pool's status is computed: documented as read-only output.
    assert doc["components"]["schemas"]["WorkPool"]["properties"]["status"]["readOnly"] is True


def test_a_route_without_a_docstring_or_registered_twice_is_refused() -> None:
    table = RouteTable()

    def undocumented(api: Any, request: Any, p: dict[str, str]) -> None:
        pass

    with pytest.raises(TypeError, match="docstring"):
        table.route("GET", "/x", response=None)(undocumented)

    def documented(api: Any, request: Any, p: dict[str, str]) -> None:
        """Something."""

    table.route("GET", "/x", response=None)(documented)
    with pytest.raises(ValueError, match="twice"):
        table.route("GET", "/x", response=None)(documented)


def test_a_path_parameter_nobody_described_fails_the_generation() -> None:
    table = RouteTable()

    @table.route("GET", "/things/{thing}", response=None)
    def thing(api: Any, request: Any, p: dict[str, str]) -> None:
        """A thing."""

    assert "thing" not in PATH_PARAMETERS
    with pytest.raises(KeyError, match="thing"):
        document(table, title="t", version="0", description="d")


# request bodies: the schema accepts what the CLI sends and refuses what the route refuses ----------------------
def _validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def _post(api: Api, path: str, body: Any) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return api.handle(Request("POST", path, headers, body=json.dumps(body).encode())).status


# What the CLI's options become (`work-pool create p --concurrency-limit 5 --paused --description ...`,
# `work-queue create q --pool p --priority 1 --limit 2`, `deployment create d --pool p --cron ... --parameters`,
# `deployment run d --param k=v --start-at ...`): the fields the CLI hands the same core functions.
CLI_BODIES = [
    ("/work_pools", "PoolCreate", {"name": "p", "type": "process", "paused": True, "concurrency_limit": 5,
                                   "description": "made by the CLI", "job_variables": {"env": {"A": "1"}}}),
    ("/work_pools/p/queues", "QueueCreate", {"name": "q", "priority": 1, "concurrency_limit": 2}),
    ("/deployments", "DeploymentCreate", {"name": "d", "pool": "p", "queue": "q", "parameters": {"day": "today"},
                                          "job_variables": {"command": "echo hi"}, "tags": ["etl"],
                                          "schedules": [{"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}]}),
    ("/deployments/d/runs", "RunCreate", {"parameters": {"k": "v"}, "scheduled_time": "2030-01-01T00:00:00+00:00"}),
]  # fmt: skip


def test_the_request_schemas_accept_what_the_cli_sends(api: Api, doc: dict[str, Any]) -> None:
    for path, model, body in CLI_BODIES:
        _validator(doc, model).validate(body)
        assert _post(api, path, body) == 201, (path, body)


REFUSED = [
    ("/work_pools", "PoolCreate", {"name": "p", "concurrency_limit": "5"}),  # a string is not a number
    ("/work_pools", "PoolCreate", {"name": "p", "limits": 5}),  # an unknown field is named back
    ("/work_pools", "PoolCreate", {"type": "process"}),  # no name
    ("/work_pools", "PoolCreate", {"name": "p", "paused": "yes"}),
    ("/work_pools/p/queues", "QueueCreate", {"name": "q", "priority": 1.5}),
    ("/deployments", "DeploymentCreate", {"name": "d", "tags": "etl"}),
    ("/deployments/d/runs", "RunCreate", {"parameters": ["not", "an", "object"]}),
]


@pytest.mark.parametrize(("path", "model", "body"), REFUSED)
def test_the_request_schemas_refuse_what_the_routes_refuse(
    api: Api, doc: dict[str, Any], path: str, model: str, body: Any
) -> None:
    for seed_path, _, seed in CLI_BODIES[:3]:  # the pool, queue and deployment the paths name
        _post(api, seed_path, seed)
    assert not _validator(doc, model).is_valid(body)
    assert _post(api, path, body) == 422


# the document and the page over HTTP, without a token -----------------------------------------------------------
class Served:
    """`pushpool serve` (python -m dispatcher serve) on a free port with a temporary store, nothing dispatched."""

    def __init__(self, tmp_path: Path) -> None:
        env = {
            **os.environ,
            "PUSHPOOL_STORE": f"sqlite:///{tmp_path / 's.db'}",
            "PUSHPOOL_PROCESS_DIR": str(tmp_path / "procs"),
            "PUSHPOOL_API_TOKEN": TOKEN,
            "PYTHONUNBUFFERED": "1",
        }
        self.process, self.url = start_serve(env, "--interval", "5")
        self.port = int(self.url.rsplit(":", 1)[1])

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body, dict(response.getheaders())

    def close(self) -> None:
        self.process.kill()
        self.process.communicate(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def test_document_and_page_are_open_and_the_rest_is_not(served: Served) -> None:
    status, body, headers = served.get("/openapi.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    validate(json.loads(body))
    status, page, headers = served.get("/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"openapi.json" in page and b"Bearer" in page
    # Only the page's own inline script and style run; it may talk to this origin only.
    csp = headers["Content-Security-Policy"]
    script = re.search(rb"<script>(.*?)</script>", page, re.DOTALL)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1)).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert b"https://" not in page and b"http://" not in page, "no CDN, nothing from elsewhere"
    assert served.get("/work_pools")[0] == 401


# schemathesis against `pushpool serve` -------------------------------------------------------------------------
EXAMPLES_PER_OPERATION = 12
KNOWN = {"pool": "p", "queue": "q", "name": "d", "run_id": "unknown-run"}


def _seed(served: Served) -> None:
    """A pool (limit 0: nothing is dispatched), a queue and a deployment that the known path names reach."""
    for path, body in [
        ("/work_pools", {"name": "p", "concurrency_limit": 0}),
        ("/work_pools/p/queues", {"name": "q"}),
        ("/deployments", {"name": "d", "pool": "p", "job_variables": {"command": "true"}}),
    ]:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        conn.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {TOKEN}"})
        conn.getresponse().read()
        conn.close()


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(served: Served) -> None:
    schema = schemathesis.openapi.from_dict(json.loads(served.get("/openapi.json")[1]))
    failures: list[str] = []
    started = time.monotonic()
    cases = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy(), known=st.booleans())
        def check(case: Any, known: bool) -> None:
            nonlocal cases
            cases += 1
            if known and case.path_parameters:
                _seed(served)  # what an earlier example deleted comes back
                case.path_parameters = {k: KNOWN[k] for k in case.path_parameters}
            response = case.call(base_url=served.url, headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            except Exception as exc:  # every failure is collected, then reported together
                failures.append(f"{case.operation.label} -> {response.status_code}: {str(exc)[:400]}")

        check()
    assert not failures, "\n".join(failures[:10])
    assert cases >= len(ROUTES) * 5
    print(f"schemathesis: {cases} requests over {len(ROUTES)} operations in {time.monotonic() - started:.1f} s")
