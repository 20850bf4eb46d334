"""The Azure Functions app, its functions called as the Functions host calls them.

The host indexes `app` (Python v2 programming model) and calls each function's user function with the
trigger's object: a `func.TimerRequest` for the timer, a `func.HttpRequest` for HTTP. The store is a real
SQLite file named by PUSHPOOL_STORE, as an app setting would; the ACI pool runs against the ARM stub.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from aci_stub import ACIStub, StubCredential
from azure.functions.meta import Datum
from azure.functions.timer import TimerRequestConverter
from test_dispatch_aci import ACI, POOL_VARIABLES

from dispatcher import deployments, pools, signing
from dispatcher.callbacks import master_secret, run_token
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.models import FlowRun
from dispatcher.providers.aci import ACIProvider
from dispatcher.providers.aci.model import group_name
from dispatcher.providers.base import Providers
from dispatcher.states import StateType
from handlers.azure_functions import function_app

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "handlers" / "azure_functions"
API_TOKEN = "management-token-for-tests"


@pytest.fixture
def stub() -> Iterator[ACIStub]:
    with ACIStub() as server:
        yield server


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: ACIStub) -> Iterator[function_app.Runtime]:
    """The app's runtime from app settings, its dispatcher's ACI provider pointed at the stub."""
    monkeypatch.setenv("PUSHPOOL_STORE", f"sqlite:///{tmp_path / 'pushpool.db'}")
    monkeypatch.setenv("PUSHPOOL_API_TOKEN", API_TOKEN)
    monkeypatch.delenv("PUSHPOOL_SECRET", raising=False)
    runtime = function_app.reset_runtime()
    provider = ACIProvider(StubCredential(), base_url=stub.url, polling_interval=0)
    runtime.dispatcher = Dispatcher(
        runtime.store,
        providers=Providers({ACI: provider}),
        settings=Settings(reconcile_after_seconds=0.01, slot_repair_settle_seconds=0.01),
    )
    yield runtime
    function_app.reset_runtime()


INDEXED: dict[str, Any] = {}


def functions() -> dict[str, Any]:
    """The app's functions as the host indexes them (once): name -> Function (bindings, and the user function)."""
    if not INDEXED:
        INDEXED.update({f.get_function_name(): f for f in function_app.app.get_functions()})
    return INDEXED


def call_http(
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    request = func.HttpRequest(
        method=method,
        url=f"https://pushpool-app.azurewebsites.net{path}",
        headers=headers or {},
        params=params or {},
        route_params={"path": path.lstrip("/")},
        body=body,
    )
    response = functions()["http"].get_user_function()(request)
    raw = response.get_body()
    return response.status_code, json.loads(raw) if raw else None


def call_timer(*, past_due: bool = False) -> None:
    """The timer's payload decoded by the library's own converter, as the Python worker decodes it."""
    payload = {"IsPastDue": past_due, "ScheduleStatus": {}, "Schedule": {"AdjustForDST": True}}
    timer = TimerRequestConverter.decode(Datum(type="json", value=json.dumps(payload)), trigger_metadata={})
    functions()["dispatch"].get_user_function()(timer)


def aci_run(runtime: function_app.Runtime) -> FlowRun:
    pools.create_pool(runtime.store, "aci", type=ACI, job_variables=POOL_VARIABLES)
    deployments.create_deployment(runtime.store, "d", pool="aci", job_variables={"command": "python flow.py"})
    return deployments.run_deployment(runtime.store, "d")


def signed(runtime: function_app.Runtime, run: FlowRun, report: dict[str, Any], token: str | None = None) -> Any:
    body = json.dumps(report).encode()
    token = token or run_token(master_secret(runtime.store), run.deployment_id, run.id)
    return body, {signing.SIGNATURE_HEADER: signing.sign(token, body, int(time.time()))}


# -- layout ----------------------------------------------------------------------------------------------------


def test_the_app_folder_is_what_func_publishes() -> None:
    host = json.loads((APP_DIR / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == ""  # /callbacks/runs/{id}, not /api/callbacks/...
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    requirements = (APP_DIR / "requirements.txt").read_text()
    assert "azure-functions" in requirements and "azure-mgmt-containerinstance" in requirements
    assert "local.settings.json" in (APP_DIR / ".funcignore").read_text()


def test_the_host_indexes_a_timer_and_a_catch_all_http_function() -> None:
    found = functions()
    assert set(found) == {"dispatch", "http"}
    timer = found["dispatch"].get_bindings_dict()["bindings"]
    assert timer[0]["type"] == "timerTrigger" and timer[0]["schedule"] == "0 */1 * * * *"
    http = {b["type"]: b for b in found["http"].get_bindings_dict()["bindings"]}
    assert http["httpTrigger"]["route"] == "{*path}"
    assert str(http["httpTrigger"]["authLevel"]).lower().endswith("anonymous")
    assert {str(getattr(m, "value", m)) for m in http["httpTrigger"]["methods"]} >= {"GET", "POST", "DELETE"}


def test_importing_the_app_loads_neither_the_azure_sdk_nor_the_dispatcher() -> None:
    code = (
        "import sys; import handlers.azure_functions.function_app; "
        "print(sorted(m for m in sys.modules if m.startswith(('azure.mgmt', 'azure.identity', 'boto', "
        "'dispatcher.dispatch', 'dispatcher.providers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the timer: dispatch and watch -----------------------------------------------------------------------------


def test_the_timer_submits_due_runs_and_later_sees_their_end(runtime: function_app.Runtime, stub: ACIStub) -> None:
    run = aci_run(runtime)
    call_timer()
    submitted = runtime.store.get_run(run.id)
    assert submitted is not None and submitted.state_name == "InfrastructurePending"
    assert stub.group(group_name(run.id)) is not None

    stub.set_container(group_name(run.id), "Terminated", exit_code=0)
    time.sleep(0.05)
    call_timer(past_due=True)
    ended = runtime.store.get_run(run.id)
    assert ended is not None and ended.state is StateType.COMPLETED
    assert stub.group(group_name(run.id)) is None  # the watcher deleted the ended group


# -- HTTP: callbacks and the management API --------------------------------------------------------------------


def test_the_dashboard_is_served_with_its_cookie_over_https(runtime: function_app.Runtime) -> None:
    pools.create_pool(runtime.store, "aci-pool", type=ACI, job_variables=POOL_VARIABLES)
    host = "pushpool-app.azurewebsites.net"
    login = func.HttpRequest(
        method="POST",
        url=f"https://{host}/ui/login",
        headers={"host": host, "origin": f"https://{host}", "content-type": "application/x-www-form-urlencoded"},
        params={},
        route_params={"path": "ui/login"},
        body=f"token={API_TOKEN}".encode(),
    )
    response = functions()["http"].get_user_function()(login)
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert "; Secure" in cookie and "SameSite=Strict" in cookie
    page = func.HttpRequest(
        method="GET",
        url=f"https://{host}/ui",
        headers={"host": host, "cookie": cookie.split(";")[0]},
        params={},
        route_params={"path": "ui"},
        body=b"",
    )
    response = functions()["http"].get_user_function()(page)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert 'data-pool="aci-pool"' in response.get_body().decode()


def test_a_signed_callback_moves_the_run(runtime: function_app.Runtime) -> None:
    run = aci_run(runtime)
    call_timer()
    body, headers = signed(runtime, run, {"state": "RUNNING"})
    status, answer = call_http("POST", f"/callbacks/runs/{run.id}", body=body, headers=headers)
    assert status == 200, answer
    current = runtime.store.get_run(run.id)
    assert current is not None and current.state is StateType.RUNNING


def test_a_forged_callback_is_refused_and_changes_nothing(runtime: function_app.Runtime) -> None:
    run = aci_run(runtime)
    call_timer()
    before = runtime.store.get_run(run.id)
    body, headers = signed(runtime, run, {"state": "COMPLETED", "exit_code": 0}, token="not-the-runs-token")
    status, answer = call_http("POST", f"/callbacks/runs/{run.id}", body=body, headers=headers)
    assert status == 401
    assert "signature" in answer["error"]
    unsigned_status, _ = call_http("POST", f"/callbacks/runs/{run.id}", body=body)
    assert unsigned_status == 401
    after = runtime.store.get_run(run.id)
    assert before is not None and after is not None and after.version == before.version


def test_the_management_api_needs_the_bearer_token(runtime: function_app.Runtime) -> None:
    aci_run(runtime)
    status, _ = call_http("GET", "/work_pools")
    assert status == 401
    status, answer = call_http("GET", "/work_pools", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 200
    assert [pool["name"] for pool in answer] == ["aci"]
    assert answer[0]["type"] == ACI


def test_bad_input_is_a_4xx_in_one_sentence_and_writes_nothing(runtime: function_app.Runtime) -> None:
    aci_run(runtime)
    auth = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    body = json.dumps({"name": "bad", "type": ACI, "concurrency_limit": -1}).encode()
    status, answer = call_http("POST", "/work_pools", body=body, headers=auth)
    assert 400 <= status < 500
    assert "concurrency_limit" in answer["error"]
    status, _ = call_http("GET", "/work_pools/bad", headers=auth)
    assert status == 404
    status, answer = call_http("GET", "/no/such/route", headers=auth)
    assert status == 404 and "no route" in answer["error"]


def test_a_lambda_pass_over_an_ecs_pool_imports_nothing_of_azure() -> None:
    """benchmarks/cold_start.py's check, run here too: the ECS path of a Lambda pass never loads Azure's SDK."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cold_start
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    probe = cold_start.pass_probe()
    assert probe["ecs_reached"] is True
    assert probe["azure_after_ecs"] == []


def test_the_openapi_document_and_its_page_answer_without_a_token(runtime: function_app.Runtime) -> None:
    status, document = call_http("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1") and "/work_pools" in document["paths"]
    request = func.HttpRequest(
        method="GET", url="https://pushpool-app.azurewebsites.net/docs", headers={}, params={},
        route_params={"path": "docs"}, body=b"",
    )  # fmt: skip
    page = functions()["http"].get_user_function()(request)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"openapi.json" in page.get_body() and "Content-Security-Policy" in page.headers
