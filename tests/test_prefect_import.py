"""`pushpool import prefect` (issue 11, deliverable 8): against a local stub of Prefect's REST routes (always), and
against a real `prefect server start` when the Prefect venv is there (tests/test_prefect_import_live.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.testing
from prefect_stub import PROCESS_TEMPLATE, PrefectStub, deployment, pool, queue, schedule, serving
from test_cli import _COMMAND, Cli

from dispatcher.pool_types import default_template
from dispatcher.prefect_import import PrefectAPI, read_server


def realistic() -> PrefectStub:
    """Pools of five types, queues, and deployments that exercise every mapping rule."""
    stub = PrefectStub()
    stub.pools = [
        pool("local", "process", PROCESS_TEMPLATE, concurrency_limit=4, description="laptop"),
        pool("aws", "ecs", {}, is_paused=True),
        pool("k8s", "kubernetes", {"job_configuration": {}, "variables": {"properties": {}}}),
        pool("pushed", "ecs:push", {}, concurrency_limit=0),
    ]
    stub.queues = {
        "local": [
            queue("local", "default", 1, description="The work pool's default queue."),
            queue("local", "critical", 2, concurrency_limit=1),
            queue("local", "bulk", 3, is_paused=True),
        ],
        "aws": [queue("aws", "default", 1, concurrency_limit=5)],
        "k8s": [queue("k8s", "default", 1)],
        "pushed": [queue("pushed", "default", 1)],
    }
    etl, report = stub.flow("etl"), stub.flow("report")
    stub.deployments = [
        deployment(
            "nightly",
            etl,
            "local",
            work_queue_name="critical",
            parameters={"day": "yesterday"},
            job_variables={"env": {"MODE": "full"}},
            tags=["etl"],
            description="the nightly load",
            paused=True,
            schedules=[
                schedule({"cron": "0 2 * * *", "timezone": "Europe/Berlin", "day_or": True}),
                schedule({"interval": 3600.0, "anchor_date": "2024-01-01T00:00:00Z", "timezone": "UTC"}, active=False),
                schedule({"rrule": "FREQ=WEEKLY;BYDAY=MO", "timezone": "UTC"}),
                schedule({"cron": "0 3 * * *", "timezone": "UTC", "day_or": True}, parameters={"day": "today"}),
                schedule({"cron": "0 4 1 * 1", "timezone": "UTC", "day_or": False}),
            ],
            global_concurrency_limit={"limit": 2, "active": True},
            concurrency_options={"collision_strategy": "CANCEL_NEW"},
        ),
        deployment("nightly", report, "aws", job_variables={"image": "repo/report:1"}),
        deployment("served", report, None),
        deployment("on-k8s", etl, "k8s"),
        deployment("ad-hoc", etl, "pushed", work_queue_name=None),
    ]
    return stub


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _COMMAND, raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    return Cli(f"sqlite:///{tmp_path}/s.db")


@pytest.fixture
def stub() -> Iterator[tuple[PrefectStub, str]]:
    data = realistic()
    with serving(data) as url:
        yield data, url


def test_dry_run_prints_the_plan_and_what_is_not_carried_over(cli: Cli, stub: tuple[PrefectStub, str]) -> None:
    _, url = stub
    before = cli.snapshot()
    out = cli.ok("import", "prefect", "--api-url", url, "--dry-run")
    assert cli.snapshot() == before
    for line in (
        "+ create work pool 'local'",
        "+ create work pool 'aws'",
        "+ create work pool 'pushed'",
        "+ create work queue 'local/critical'",
        "+ create deployment 'etl-nightly'",
        "+ create deployment 'report-nightly'",
        "+ create deployment 'ad-hoc'",
        "Dry run: nothing written.",
    ):
        assert line in out, line
    assert "'k8s'" not in out.split("Not carried over")[0]  # not planned
    for note in (
        "work pool 'k8s': type 'kubernetes' has no push type in pushpool",
        "work pool 'aws': base job template not carried over (it is empty); pushpool's default for ecs:push is used",
        "deployment report/served: it has no work pool (it is served by `flow.serve`)",
        "deployment etl/on-k8s: its work pool 'k8s' is not carried over",
        "deployment etl/nightly: named 'etl-nightly', since deployments of several flows are named 'nightly'",
        "deployment etl/nightly: schedule 4 has parameters of its own",
        "deployment etl/nightly: schedule 5 has day_or false",
        "deployment etl/nightly: collision_strategy CANCEL_NEW not carried over",
        "deployment etl/nightly: entrypoint not carried over",
    ):
        assert f"Not carried over: {note}" in out, note


def test_import_copies_pools_queues_and_deployments_and_is_idempotent(cli: Cli, stub: tuple[PrefectStub, str]) -> None:
    _, url = stub
    assert "Imported." in cli.ok("import", "prefect", "--api-url", url)

    pools = {p["name"]: p for p in cli.json("work-pool", "ls")}
    assert sorted(pools) == ["aws", "local", "pushed"]
    assert (pools["local"]["type"], pools["local"]["concurrency_limit"], pools["local"]["paused"]) == (
        "process",
        4,
        False,
    )
    assert pools["local"]["base_job_template"] == PROCESS_TEMPLATE and pools["local"]["description"] == "laptop"
    assert (pools["aws"]["type"], pools["aws"]["paused"]) == ("ecs:push", True)
    assert pools["aws"]["base_job_template"] == default_template("ecs:push")
    assert (pools["pushed"]["type"], pools["pushed"]["concurrency_limit"]) == ("ecs:push", 0)

    queues = {q["name"]: q for q in cli.json("work-queue", "ls", "--pool", "local")}
    assert [(q["name"], q["priority"]) for q in cli.json("work-queue", "ls", "--pool", "local")] == [
        ("default", 1),
        ("critical", 2),
        ("bulk", 3),
    ]
    assert queues["critical"]["concurrency_limit"] == 1 and queues["bulk"]["paused"] is True
    assert queues["default"]["description"] == "The work pool's default queue."
    assert cli.json("work-queue", "inspect", "default", "--pool", "aws")["concurrency_limit"] == 5

    etl = cli.json("deployment", "inspect", "etl/nightly")  # Prefect's spelling finds the renamed deployment
    assert etl["name"] == "etl-nightly" and (etl["pool"], etl["queue"]) == ("local", "critical")
    assert etl["parameters"] == {"day": "yesterday"} and etl["job_variables"] == {"env": {"MODE": "full"}}
    assert etl["tags"] == ["etl"] and etl["description"] == "the nightly load"
    assert etl["schedule_paused"] is True and etl["concurrency_limit"] == 2
    assert etl["schedules"] == [
        {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        {"interval": 3600.0, "anchor_date": "2024-01-01T00:00:00Z", "timezone": "UTC", "active": False},
        {"rrule": "FREQ=WEEKLY;BYDAY=MO", "timezone": "UTC"},
    ]
    report = cli.json("deployment", "inspect", "report/nightly")
    assert report["name"] == "report-nightly" and report["job_variables"] == {"image": "repo/report:1"}
    assert cli.json("deployment", "inspect", "ad-hoc")["queue"] == "default"
    assert sorted(d["name"] for d in cli.json("deployment", "ls")) == ["ad-hoc", "etl-nightly", "report-nightly"]

    snapshot = cli.snapshot()
    again = cli.ok("import", "prefect", "--api-url", url)
    assert "Nothing to change." in again and "0 to create, 0 to update" in again
    assert cli.snapshot() == snapshot


def test_a_change_on_the_prefect_side_is_an_update(cli: Cli, stub: tuple[PrefectStub, str]) -> None:
    data, url = stub
    cli.ok("import", "prefect", "--api-url", url)
    data.pools[0]["concurrency_limit"] = 9
    data.queues["local"][1]["concurrency_limit"] = 3
    data.deployments[0]["tags"] = ["etl", "moved"]
    planned = json.loads(cli.ok("import", "prefect", "--api-url", url, "-o", "json"))
    changed = {(a["target"], a["name"]): a["changes"] for a in planned["actions"] if a["kind"] == "update"}
    assert changed == {
        ("work pool", "local"): {"concurrency_limit": {"old": 4, "new": 9}},
        ("work queue", "local/critical"): {"concurrency_limit": {"old": 1, "new": 3}},
        ("deployment", "etl-nightly"): {"tags": {"old": ["etl"], "new": ["etl", "moved"]}},
    }
    assert any("kubernetes" in n for n in planned["not_carried_over"])


def test_pages_are_followed(stub: tuple[PrefectStub, str]) -> None:
    data, url = stub
    state = read_server(PrefectAPI(url, page=2))
    assert [p["name"] for p in state.pools] == ["local", "aws", "k8s", "pushed"]
    assert len(state.deployments) == 5 and len(state.queues["local"]) == 3
    offsets = [body["offset"] for method, path, body in data.requests if path == "/api/deployments/filter"]
    assert offsets == [0, 2, 4]
    assert ("GET", "/api/health", None) in data.requests
    assert not any(path.endswith("k8s/queues/filter") for _, path, _ in data.requests)  # not read: not carried


def test_a_document_that_cannot_be_applied_writes_nothing(cli: Cli) -> None:
    data = realistic()
    data.deployments.append(deployment("bad", data.flow("x"), "local", job_variables={"image": "nope"}))
    with serving(data) as url:
        before = cli.snapshot()
        line = cli.fails("import", "prefect", "--api-url", url, says=("cannot be applied", "image"))
        assert cli.snapshot() == before
    assert "Traceback" not in line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_api_urls_get_one_sentence(cli: Cli, stub: tuple[PrefectStub, str]) -> None:
    _, url = stub
    cli.fails("import", "prefect", "--api-url", f"http://127.0.0.1:{_closed_port()}/api", says=("cannot reach",))
    cli.fails("import", "prefect", "--api-url", url.removesuffix("/api"), says=("HTTP 404", "ending in /api"))
    cli.fails("import", "prefect", "--api-url", "127.0.0.1:4200", says=("--api-url must be an http://",))
    result = cli.run("import", "prefect")
    assert result.exit_code == 2 and "--api-url" in result.stderr


def test_api_url_and_key_come_from_prefects_environment(
    cli: Cli, stub: tuple[PrefectStub, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, url = stub
    monkeypatch.setenv("PREFECT_API_URL", url)
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_secret")
    out = cli.ok("import", "prefect", "--dry-run")
    assert "pnu_secret" not in out
    assert data.authorization and set(data.authorization) == {"Bearer pnu_secret"}
