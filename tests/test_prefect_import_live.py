"""`pushpool import prefect` against a real `prefect server start` on 127.0.0.1 (issue 11, deliverable 8).

Prefect is never a dependency of pushpool: it lives in a venv of its own, `.bench/prefect-venv` (the one
benchmarks/vs_prefect uses; `PUSHPOOL_PREFECT_VENV` names another). Installing it takes minutes, more than
`make test` can spend, so here the test runs when that venv exists and is skipped, saying so, when it
does not; `make prefect-import-test` creates the venv and runs this test (there a missing venv fails).
The server is started and stopped by benchmarks/vs_prefect/run.py's `prefect_server` (SQLite in a
temporary PREFECT_HOME, stopped by its process group). The objects are created through Prefect's REST API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from test_cli import _COMMAND, Cli

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("PUSHPOOL_PREFECT_VENV") or ROOT / ".bench" / "prefect-venv")
REQUIRED = os.environ.get("PUSHPOOL_PREFECT_LIVE") == "require"


def _prefect_ready() -> str | None:
    """None when the venv has Prefect, else why not."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "prefect").exists():
        return f"no Prefect venv at {VENV}"
    done = subprocess.run([str(python), "-c", "import prefect"], capture_output=True, timeout=120)
    return None if done.returncode == 0 else f"Prefect does not import in {VENV}"


_WHY_NOT = _prefect_ready()
if _WHY_NOT is not None:
    if REQUIRED:
        raise RuntimeError(f"{_WHY_NOT}; `make prefect-import-test` creates it")
    pytest.skip(
        f"{_WHY_NOT}: the import from a live Prefect server is not tested here; `make prefect-import-test` creates "
        "the venv (a few minutes) and runs it",
        allow_module_level=True,
    )


def _worker_templates() -> dict[str, Any]:
    """Prefect's own default base job templates, as its server bundles them (no network)."""
    [path] = VENV.glob(
        "lib/python*/site-packages/prefect/server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    data = json.loads(path.read_text())
    return {
        "process": data["prefect"]["process"]["default_base_job_configuration"],
        "ecs": data["prefect-aws"]["ecs"]["default_base_job_configuration"],
        "kubernetes": data["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"],
    }


def call(url: str, method: str, path: str, body: Any = None) -> Any:
    """One request to Prefect's server. A 503 is Prefect's own SQLite being locked (a busy machine): nothing was
    written, so the request is sent again, a few times, before the test gives up."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(6):
        request = urllib.request.Request(
            url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and attempt < 5:
                time.sleep(0.5 * 2**attempt)
                continue
            raise AssertionError(f"{method} {path}: HTTP {exc.code} {exc.read()[:500]!r}") from None
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def prefect() -> Iterator[tuple[str, dict[str, Any]]]:
    """A Prefect server holding three pools, queues, two flows and four deployments."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "vs_prefect"))
    import run as bench  # benchmarks/vs_prefect/run.py: its server start/stop

    bench.PREFECT_VENV = VENV
    templates = _worker_templates()
    with bench.prefect_server() as (url, _home):
        call(
            url,
            "POST",
            "/work_pools/",
            {"name": "local", "type": "process", "base_job_template": templates["process"], "concurrency_limit": 3},
        )
        call(url, "PATCH", "/work_pools/local", {"is_paused": True})
        call(url, "POST", "/work_pools/local/queues", {"name": "critical", "priority": 2, "concurrency_limit": 1})
        call(url, "POST", "/work_pools/local/queues", {"name": "bulk", "priority": 3, "is_paused": True})
        call(url, "POST", "/work_pools/", {"name": "aws", "type": "ecs", "base_job_template": templates["ecs"]})
        call(
            url,
            "POST",
            "/work_pools/",
            {"name": "k8s", "type": "kubernetes", "base_job_template": templates["kubernetes"]},
        )
        etl = call(url, "POST", "/flows/", {"name": "etl"})["id"]
        report = call(url, "POST", "/flows/", {"name": "report"})["id"]
        common = {"entrypoint": "flows.py:main", "enforce_parameter_schema": False}
        call(url, "POST", "/deployments/", {
            **common, "name": "nightly", "flow_id": etl, "work_pool_name": "local", "work_queue_name": "critical",
            "parameters": {"day": "yesterday"}, "job_variables": {"env": {"MODE": "full"}, "working_dir": "/srv"},
            "tags": ["etl"], "description": "the nightly load", "paused": True, "concurrency_limit": 2,
            "schedules": [
                {"schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}, "active": True},
                {"schedule": {"interval": 3600, "anchor_date": "2024-01-01T00:00:00Z"}, "active": False},
                {"schedule": {"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=6", "timezone": "UTC"}, "active": True},
            ],
        })  # fmt: skip
        call(url, "POST", "/deployments/", {
            **common, "name": "nightly", "flow_id": report, "work_pool_name": "aws",
            "job_variables": {"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/report:1", "cpu": 512},
        })  # fmt: skip
        call(url, "POST", "/deployments/", {**common, "name": "on-k8s", "flow_id": etl, "work_pool_name": "k8s"})
        call(url, "POST", "/deployments/", {**common, "name": "served", "flow_id": report})
        yield url, templates


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _COMMAND, raising=False)
    return Cli(f"sqlite:///{tmp_path}/s.db")


def test_import_from_a_live_prefect_server(cli: Cli, prefect: tuple[str, dict[str, Any]]) -> None:
    url, templates = prefect
    before = cli.snapshot()
    plan = cli.ok("import", "prefect", "--api-url", url, "--dry-run")
    assert cli.snapshot() == before
    assert "+ create work pool 'local'" in plan and "+ create deployment 'etl-nightly'" in plan
    assert "Not carried over: work pool 'k8s': type 'kubernetes' has no push type in pushpool" in plan
    assert "Not carried over: deployment report/served: it has no work pool" in plan
    assert "Not carried over: deployment etl/on-k8s: its work pool 'k8s' is not carried over" in plan

    assert "Imported." in cli.ok("import", "prefect", "--api-url", url)
    pools = {p["name"]: p for p in cli.json("work-pool", "ls")}
    assert sorted(pools) == ["aws", "local"]
    local, aws = pools["local"], pools["aws"]
    assert (local["type"], local["concurrency_limit"], local["paused"]) == ("process", 3, True)
    assert local["base_job_template"] == templates["process"]  # Prefect's own template, verbatim
    assert aws["type"] == "ecs:push" and aws["base_job_template"] == templates["ecs"]

    prefect_queues = call(url, "POST", "/work_pools/local/queues/filter", {"limit": 200, "offset": 0})
    expected = sorted((q["priority"], q["name"], q["concurrency_limit"], q["is_paused"]) for q in prefect_queues)
    ours = cli.json("work-queue", "ls", "--pool", "local")
    assert [(q["priority"], q["name"], q["concurrency_limit"], q["paused"]) for q in ours] == expected
    assert [q["name"] for q in ours] == ["default", "critical", "bulk"]

    etl = cli.json("deployment", "inspect", "etl/nightly")
    assert (etl["name"], etl["pool"], etl["queue"]) == ("etl-nightly", "local", "critical")
    assert etl["parameters"] == {"day": "yesterday"}
    assert etl["job_variables"] == {"env": {"MODE": "full"}, "working_dir": "/srv"}
    assert (etl["tags"], etl["description"], etl["schedule_paused"]) == (["etl"], "the nightly load", True)
    assert etl["concurrency_limit"] == 2
    by_kind = {next(k for k in ("cron", "interval", "rrule") if k in s): s for s in etl["schedules"]}
    assert len(etl["schedules"]) == 3
    assert by_kind["cron"] == {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}
    assert by_kind["interval"]["interval"] == 3600.0 and by_kind["interval"]["active"] is False
    assert by_kind["interval"]["anchor_date"] == "2024-01-01T00:00:00Z"
    # Prefect stores an RRULE with its default DTSTART written in; pushpool reads it the same way.
    assert by_kind["rrule"]["rrule"].endswith("FREQ=WEEKLY;BYDAY=MO;BYHOUR=6") and "active" not in by_kind["rrule"]
    report = cli.json("deployment", "inspect", "report/nightly")
    assert report["pool"] == "aws" and report["job_variables"]["cpu"] == 512

    snapshot = cli.snapshot()
    again = cli.ok("import", "prefect", "--api-url", url)
    assert "Nothing to change." in again
    assert cli.snapshot() == snapshot
