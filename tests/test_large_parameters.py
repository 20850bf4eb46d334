"""A run's parameters up to 512 KB, end to end: accepted on every way in, kept apart by the stores (see
tests/test_store_conformance.py and tests/test_store_dynamodb.py), sent to the job by reference, fetched by a real
`pushpool-run` with the run's own token and handed to the command byte for byte (a file past what one environment
variable holds), and never in a log or an error message."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from pydantic_core import to_json
from test_dispatch_e2e import Harness, harness  # noqa: F401  (the fixture)
from test_store_conformance import large_parameters

from dispatcher import deployments, jobs, pools, signing
from dispatcher.api import Api
from dispatcher.callbacks import master_secret, run_token
from dispatcher.cli import app
from dispatcher.errors import InvalidInput, TemplateError
from dispatcher.http_server import make_server
from dispatcher.models import MAX_RUN_PARAMETERS_BYTES
from dispatcher.providers.base import Providers
from dispatcher.states import StateType
from dispatcher.store import open_store
from dispatcher.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
MARKER = "do-not-log-3f9a"
TOO_LARGE = {"blob": "x" * 600_000}
REFUSED = "parameters may be at most 512 KB (524,288 bytes) as JSON, got 600,011 bytes."


# the bound, on every way in ------------------------------------------------------------------------------------
def test_the_cli_takes_200_kb_of_run_parameters_and_refuses_past_512_kb_in_one_sentence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    runner = typer.testing.CliRunner()

    def cli(*args: str) -> typer.testing.Result:
        return runner.invoke(app, ["--store", url, *args])

    assert cli("work-pool", "create", "p").exit_code == 0
    assert cli("deployment", "create", "d", "--pool", "p", "--job-variables", '{"command": "true"}').exit_code == 0
    big = large_parameters(marker=MARKER)
    (tmp_path / "big.json").write_text(json.dumps(big, indent=2))
    made = cli("deployment", "run", "d", "--params", f"@{tmp_path / 'big.json'}", "-o", "json")
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["parameters"] == big
    shown = cli("flow-run", "inspect", json.loads(made.stdout)["id"], "-o", "json")
    assert json.loads(shown.stdout)["parameters"] == big  # read back whole, though kept apart

    (tmp_path / "huge.json").write_text(json.dumps(TOO_LARGE))
    for args in (("--params", f"@{tmp_path / 'huge.json'}"), ("--param", f"blob={'x' * 600_000}")):
        refused = cli("deployment", "run", "d", *args)
        assert refused.exit_code != 0 and refused.stderr.strip() == f"Error: {REFUSED}", refused.stderr[:300]
    store = open_store(url)
    try:
        assert len(store.list_runs("p")) == 1  # nothing half-written
    finally:
        store.close()


def test_the_http_api_takes_200_kb_of_run_parameters_and_refuses_past_512_kb(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    server = make_server(Api(store, api_token="t0ken"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{base}/deployments/d/runs",
            data=json.dumps(body).encode(),
            headers={"Authorization": "Bearer t0ken", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        pools.create_pool(store, "p")
        deployments.create_deployment(store, "d", pool="p", job_variables={"command": "true"})
        big = large_parameters(marker=MARKER)
        status, run = post({"parameters": big})
        assert status == 201 and run["parameters"] == big
        status, answer = post({"parameters": TOO_LARGE})
        assert status == 422 and answer == {"error": REFUSED}
        assert len(store.list_runs("p")) == 1
    finally:
        server.shutdown()
        server.server_close()
        store.close()


def test_a_deployment_keeps_the_64_kb_bound_and_a_run_may_add_to_it(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    try:
        pools.create_pool(store, "p")
        with pytest.raises(InvalidInput, match=r"^parameters may be at most 64 KB \(65,536 bytes\) as JSON"):
            deployments.create_deployment(store, "d", pool="p", parameters={"blob": "x" * 70_000})
        deployments.create_deployment(store, "d", pool="p", parameters={"base": "y" * 60_000})
        run = deployments.run_deployment(store, "d", parameters={"extra": "z" * 400_000})
        assert set(run.parameters or {}) == {"base", "extra"}
        # The bound holds over the merged set.
        with pytest.raises(InvalidInput, match=r"^parameters may be at most 512 KB .* got 5[0-9]{2},[0-9]{3} bytes"):
            deployments.run_deployment(store, "d", parameters={"extra": "z" * (MAX_RUN_PARAMETERS_BYTES - 40_000)})
    finally:
        store.close()


# the job side --------------------------------------------------------------------------------------------------
READER = """
import json, os, stat, sys
path = os.environ.get("PUSHPOOL_PARAMETERS_FILE")
seen = {"inline": "PUSHPOOL_PARAMETERS" in os.environ, "path": path}
if path:
    seen["file_mode"] = stat.S_IMODE(os.stat(path).st_mode)
    seen["dir_mode"] = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
    with open(path, "rb") as f, open(sys.argv[1] + ".bytes", "wb") as out:
        out.write(f.read())
json.dump(seen, open(sys.argv[1], "w"))
"""


def test_200_kb_of_parameters_reach_the_command_byte_for_byte_in_a_private_file(
    harness: Harness,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness
    caplog.set_level(logging.DEBUG)
    pools.create_pool(h.store, "p")
    out = tmp_path / "seen.json"
    deployments.create_deployment(
        h.store, "d", pool="p", job_variables={"command": [sys.executable, "-c", READER, str(out)]}
    )
    big = large_parameters(marker=MARKER)
    run = deployments.run_deployment(h.store, "d", parameters=big)
    started = time.monotonic()
    h.drive(lambda: h.run(run.id).is_terminal, what="the run to read its parameters")
    print(f"200 KB of parameters: run created to completed in {time.monotonic() - started:.2f}s")
    assert h.run(run.id).state is StateType.COMPLETED
    seen = json.loads(out.read_text())
    assert seen["inline"] is False and seen["path"]
    assert seen["file_mode"] == 0o600 and seen["dir_mode"] == 0o700
    received = Path(str(out) + ".bytes").read_bytes()
    assert received == to_json(big) and json.loads(received) == big
    assert not Path(seen["path"]).exists() and not Path(seen["path"]).parent.exists()  # removed after the command
    assert all(MARKER not in record.getMessage() for record in caplog.records)


def test_another_runs_token_cannot_read_a_large_set(harness: Harness) -> None:  # noqa: F811
    h = harness
    pools.create_pool(h.store, "p")
    deployments.create_deployment(h.store, "d", pool="p", job_variables={"command": "true"})
    mine = deployments.run_deployment(h.store, "d", parameters=large_parameters(marker=MARKER))
    other = deployments.run_deployment(h.store, "d", parameters=large_parameters(marker="theirs"))
    secret = master_secret(h.store)

    def read(run_id: str, token: str) -> tuple[int, bytes]:
        signature = signing.sign(token, signing.PARAMETERS_SIGNED_BODY, int(time.time()))
        request = urllib.request.Request(
            f"{h.url}/callbacks/runs/{run_id}/parameters", headers={signing.SIGNATURE_HEADER: signature}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = read(mine.id, run_token(secret, other.deployment_id, other.id))
    assert status == 401 and MARKER.encode() not in body and b"rows" not in body
    status, body = read(mine.id, "0" * 64)
    assert status == 401 and MARKER.encode() not in body
    status, body = read(mine.id, run_token(secret, mine.deployment_id, mine.id))
    assert status == 200 and body == to_json(mine.parameters)


# every pool type ---------------------------------------------------------------------------------------------
POOL_TYPES = {
    "process": {"command": "python flow.py"},
    "ecs:push": {"image": "flows:1"},
    "cloud-run-v2:push": {"image": "flows:1", "region": "us-central1", "credentials": {"project": "p"}},
    "azure-container-instance:push": {
        "image": "flows:1",
        "resource_group_name": "rg",
        "subscription_id": "00000000-0000-0000-0000-000000000000",
    },
    "modal:push": {"image": "flows:1", "command": "python flow.py"},
}


def _template(pool_type: str) -> dict[str, Any]:
    name = pool_type.removesuffix(":push").replace(":", "-") + ("-push" if pool_type.endswith(":push") else "")
    template: dict[str, Any] = json.loads((ROOT / "templates" / f"{name}.json").read_text())
    return template


@pytest.mark.parametrize("pool_type", sorted(POOL_TYPES))
def test_every_pool_type_s_job_stays_small_with_200_kb_of_parameters(pool_type: str) -> None:
    big = large_parameters()
    callback = "https://abc.execute-api.us-east-1.amazonaws.com/callbacks/runs/8d6f0f7e-0000-4000-8000-000000000000"
    provider = Providers().get(pool_type)
    # As read from a store (kept apart: None) and as just created (the whole dict): the same small job.
    for parameters in (None, big):
        context = jobs.RunContext("8d6f0f7e", "d", "p", "default", parameters, callback, "f" * 64, "run-name")
        job = provider.validate(
            jobs.build_job(_template(pool_type), None, POOL_TYPES[pool_type], None, environ={}, context=context)
        )
        size = len(json.dumps(job, separators=(",", ":")))
        assert size < 8192, (pool_type, size)  # ECS's whole overrides bound; the others allow more
        env = job["env"]
        assert "PUSHPOOL_PARAMETERS" not in env and env["PUSHPOOL_PARAMETERS_URL"] == callback + "/parameters"


def test_without_a_callback_url_parameters_too_large_for_one_variable_are_refused_in_words() -> None:
    def render(parameters: dict[str, Any]) -> dict[str, Any]:
        context = jobs.RunContext("r", "d", "p", "default", parameters, "", "", "run-name")
        return jobs.build_job(_template("process"), None, {"command": "true"}, None, environ={}, context=context)

    inline = {"blob": "x" * 100_000}
    assert json.loads(render(inline)["env"]["PUSHPOOL_PARAMETERS"]) == inline
    with pytest.raises(TemplateError) as refused:
        render(large_parameters(marker=MARKER))
    message = str(refused.value)
    assert message.startswith("the run's parameters are 2") and "PUSHPOOL_CALLBACK_BASE_URL" in message
    assert MARKER not in message


def test_a_job_rendered_for_reading_shows_large_parameters_by_reference_without_a_base_url(tmp_path: Path) -> None:
    # `deployment render` and the dashboard's run page render where PUSHPOOL_CALLBACK_BASE_URL may be unset
    # (`serve` knows its own URL, its API process's environment does not): never a refusal meant for dispatch.
    store = SQLiteStore(str(tmp_path / "s.db"))
    try:
        pools.create_pool(store, "p")
        deployments.create_deployment(store, "d", pool="p", job_variables={"command": "true"})
        big = large_parameters(marker=MARKER)
        job = deployments.render_deployment(store, "d", parameters=big, environ={})
        assert job["env"]["PUSHPOOL_PARAMETERS_URL"].startswith(deployments.UNKNOWN_CALLBACK_BASE_URL)
        assert "PUSHPOOL_PARAMETERS" not in job["env"]
        run = deployments.run_deployment(store, "d", parameters=big)
        stored = store.get_run(run.id)
        assert stored is not None and stored.parameters is None
        job = deployments.render_run(store, stored, environ={"PUSHPOOL_CALLBACK_BASE_URL": "http://127.0.0.1:4300"})
        assert job["env"]["PUSHPOOL_PARAMETERS_URL"] == f"http://127.0.0.1:4300/callbacks/runs/{run.id}/parameters"
        small = deployments.render_deployment(store, "d", parameters={"day": "x"}, environ={})
        assert json.loads(small["env"]["PUSHPOOL_PARAMETERS"]) == {"day": "x"}  # as before: inline, no URL
    finally:
        store.close()


def test_a_real_runner_reads_200_kb_kept_apart_on_dynamodb_through_the_api(
    dynamodb_endpoint: str, tmp_path: Path
) -> None:
    import subprocess
    import uuid

    from dispatcher.store.dynamodb import DynamoDBStore

    store = DynamoDBStore(f"t-{uuid.uuid4().hex[:12]}", region="us-east-1", endpoint_url=dynamodb_endpoint)
    store.init()
    server = make_server(Api(store, api_token="t0ken"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        pools.create_pool(store, "p")
        deployments.create_deployment(store, "d", pool="p", job_variables={"command": "true"})
        big = large_parameters(marker=MARKER)
        run = deployments.run_deployment(store, "d", parameters=big)
        url = f"http://127.0.0.1:{server.server_address[1]}/callbacks/runs/{run.id}"
        env = {
            "PATH": str(Path(sys.executable).parent),
            "PUSHPOOL_CALLBACK_URL": url,
            "PUSHPOOL_CALLBACK_TOKEN": run_token(master_secret(store), run.deployment_id, run.id),
            "PUSHPOOL_PARAMETERS_URL": url + "/parameters",
        }
        out = tmp_path / "seen.json"
        done = subprocess.run(
            [str(Path(sys.executable).parent / "pushpool-run"), "--", sys.executable, "-c", READER, str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert Path(str(out) + ".bytes").read_bytes() == to_json(big)
        assert MARKER not in done.stderr and MARKER not in done.stdout
        # The job's report moved the run; its item never held the parameters.
        stored = store.get_run(run.id)
        assert stored is not None and stored.parameters is None and stored.state is StateType.COMPLETED
    finally:
        server.shutdown()
        server.server_close()
        store.drop()
        store.close()
