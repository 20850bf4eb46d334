"""`apply` reads a prefect.yaml (issue 11, deliverable 7): tests/data/prefect.yaml, written as Prefect's docs do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from test_cli import _COMMAND, Cli

from dispatcher.prefect_yaml import is_prefect_yaml

DATA = Path(__file__).resolve().parent / "data" / "prefect.yaml"
ECS_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/analytics:2024.06"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _COMMAND, raising=False)
    cli = Cli(f"sqlite:///{tmp_path}/s.db")
    cli.ok("work-pool", "create", "my-ecs-pool", "--type", "ecs:push")
    cli.ok("work-queue", "create", "high", "--pool", "my-ecs-pool", "--priority", "1")
    cli.ok("work-pool", "create", "local-process")
    cli.ok("work-queue", "create", "critical", "--pool", "local-process")
    return cli


def _variant(tmp_path: Path, old: str, new: str) -> str:
    text = DATA.read_text()
    assert old in text, old
    path = tmp_path / "prefect.yaml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


def test_dry_run_prints_the_plan_and_what_is_not_applied(cli: Cli) -> None:
    before = cli.snapshot()
    out = cli.ok("apply", str(DATA), "--dry-run")
    assert cli.snapshot() == before
    for name in ("nightly-etl", "hourly-sync", "morning-report", "backfill"):
        assert f"+ create deployment {name!r}" in out
    assert "4 to create, 0 to update, 0 unchanged" in out
    for note in (
        "Not applied: prefect-version: pushpool needs no Prefect",
        "Not applied: build: pushpool runs no build steps",
        "Not applied: push: pushpool runs no push steps",
        "Not applied: pull: pushpool runs no pull steps",
        "Not applied: deployments[0] ('nightly-etl').entrypoint: the job's command decides what runs",
        "Not applied: deployments[2] ('morning-report').pull: pushpool runs no pull steps",
        "Not applied: deployments[3] ('backfill').enforce_parameter_schema",
    ):
        assert note in out, note
    assert "').version" not in out  # `version: null` is nothing to report
    planned = json.loads(cli.ok("apply", str(DATA), "--dry-run", "-o", "json"))
    assert planned["dry_run"] is True and len(planned["actions"]) == 4
    assert any(n.startswith("build:") for n in planned["ignored"])


def test_apply_creates_the_deployments_and_a_second_apply_changes_nothing(cli: Cli) -> None:
    assert "Applied." in cli.ok("apply", str(DATA))
    deployments: dict[str, Any] = {d["name"]: d for d in cli.json("deployment", "ls")}
    assert sorted(deployments) == ["backfill", "hourly-sync", "morning-report", "nightly-etl"]

    etl = deployments["nightly-etl"]
    assert (etl["pool"], etl["queue"]) == ("my-ecs-pool", "default")
    assert etl["job_variables"] == {"image": ECS_IMAGE, "cpu": 1024, "memory": 2048}
    assert etl["parameters"] == {"source": "s3://raw/orders", "batch_size": 5000}
    assert etl["tags"] == ["etl", "nightly"] and etl["description"] == "Load yesterday's orders into the warehouse."
    assert etl["concurrency_limit"] == 1 and etl["schedule_paused"] is False
    assert etl["schedules"] == [{"cron": "30 2 * * *", "timezone": "Europe/Berlin"}]

    sync = deployments["hourly-sync"]
    assert (sync["pool"], sync["queue"], sync["concurrency_limit"]) == ("my-ecs-pool", "high", 2)
    assert sync["job_variables"] == {"image": ECS_IMAGE, "cpu": 512, "memory": 1024, "env": {"CRM_REGION": "eu"}}
    assert [s.get("interval") for s in sync["schedules"]] == [600, None]
    assert sync["schedules"][1]["rrule"] == "FREQ=WEEKLY;BYDAY=SA;BYHOUR=6;BYMINUTE=0"
    assert sync["schedules"][1]["active"] is False and "active" not in sync["schedules"][0]

    report = deployments["morning-report"]
    assert (report["pool"], report["queue"], report["schedule_paused"]) == ("local-process", "critical", True)
    assert report["job_variables"] == {"env": {"REPORT_FORMAT": "pdf"}}
    assert report["schedules"] == [{"cron": "0 7 * * 1-5", "timezone": "America/Chicago"}]
    assert report["parameters"] == {"recipients": ["ops@example.com"]}

    backfill = deployments["backfill"]
    assert (backfill["pool"], backfill["queue"], backfill["schedules"]) == ("local-process", "default", [])

    snapshot = cli.snapshot()
    out = cli.ok("apply", str(DATA))
    assert "Nothing to change." in out and "0 to create, 0 to update, 4 unchanged" in out
    assert cli.snapshot() == snapshot
    # Prefect's habit then works on what was applied.
    assert cli.json("deployment", "run", "load-orders/backfill", "--param", "source=s3://x")["parameters"] == {
        "source": "s3://x"
    }


def test_an_edited_prefect_yaml_updates_only_what_changed(cli: Cli, tmp_path: Path) -> None:
    cli.ok("apply", str(DATA))
    edited = _variant(tmp_path, "  concurrency_limit: 1\n", "  concurrency_limit:\n    limit: 3\n")
    out = cli.ok("apply", edited)
    assert "~ update deployment 'nightly-etl'" in out and "concurrency_limit: 1 -> 3" in out
    assert "1 to update, 3 unchanged" in out


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "    timezone: Europe/Berlin\n    active: true\n",
            "    timezone: Europe/Berlin\n    parameters: {batch_size: 1}\n",
            "deployments[0].schedules[0].parameters: a schedule's own parameters are not supported",
        ),
        (
            "    collision_strategy: ENQUEUE",
            "    collision_strategy: CANCEL_NEW",
            "deployments[1].concurrency_limit.collision_strategy: 'CANCEL_NEW' is not supported",
        ),
        (
            "      image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/analytics:2024.06\n      cpu: 512",
            "      image: '{{ build-image.image }}'\n      cpu: 512",
            "deployments[1].work_pool.job_variables.image: {{ build-image.image }} is the output of a deploy step",
        ),
        (
            "    REPORT_FORMAT: pdf",
            "    REPORT_FORMAT: '{{ prefect.variables.report_format }}'",
            "deployments[2].job_variables.env.REPORT_FORMAT: {{ prefect.variables.report_format }} is a Prefect "
            "variable or block",
        ),
        (
            "    name: local-process\n    work_queue_name: null",
            "    name: no-such-pool\n    work_queue_name: null",
            "deployments[3].work_pool.name: work pool 'no-such-pool' is neither in the document nor in the store; "
            "create it first",
        ),
        (
            "      work_queue_name: critical",
            "      work_queue_name: nope",
            "deployments[2].work_pool.work_queue_name: work queue 'nope'",
        ),
        (
            "  enforce_parameter_schema: true",
            "  enforce_parameter_schema: true\n  retries: 3",
            "deployments[3].retries",
        ),
        ("      cpu: 512", "      cpu: many", "deployments[1].job_variables"),
        ("- cron: 30 2 * * *", "- cron: 30 2 * *", "deployments[0].schedules[0].cron"),
        ("  paused: true", "  paused: true\n  work_pool: {name: x}", "appears twice"),
        ("  cron: 0 7 * * 1-5\n", "  cron: 0 7 * * 1-5\n      day_or: false\n", "day_or: false is not supported"),
    ],
)
def test_a_bad_prefect_yaml_is_refused_naming_its_key_and_writes_nothing(
    cli: Cli, tmp_path: Path, old: str, new: str, says: str
) -> None:
    before = cli.snapshot()
    cli.fails("apply", _variant(tmp_path, old, new), says=(says,))
    assert cli.snapshot() == before


def test_env_placeholders_are_read_as_prefect_deploy_reads_them(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _variant(tmp_path, "    REPORT_FORMAT: pdf", "    REPORT_FORMAT: '{{ $REPORT_FORMAT }}-v{{ $REPORT_V }}'")
    cli.fails("apply", path, says=("{{ $REPORT_FORMAT }} reads the environment variable REPORT_FORMAT",))
    monkeypatch.setenv("REPORT_FORMAT", "html")
    monkeypatch.setenv("REPORT_V", "2")
    cli.ok("apply", path)
    assert cli.json("deployment", "inspect", "morning-report")["job_variables"] == {"env": {"REPORT_FORMAT": "html-v2"}}


def test_a_prefect_yaml_is_known_by_its_shape() -> None:
    assert is_prefect_yaml({"deployments": [{"name": "a", "work_pool": {"name": "p"}}]})
    assert is_prefect_yaml({"deployments": [{"name": "a", "entrypoint": "f.py:f"}]})
    assert is_prefect_yaml({"prefect-version": "3.0.0", "deployments": []})
    assert not is_prefect_yaml({"deployments": [{"name": "a", "pool": "p"}]})
    assert not is_prefect_yaml({"work_pools": [], "deployments": [{"name": "a", "work_pool": {"name": "p"}}]})


def test_a_prefect_yaml_deployment_without_a_work_pool_is_refused(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text("prefect-version: 3.0.0\ndeployments:\n- name: a\n  entrypoint: f.py:f\n")
    cli.fails("apply", str(path), says=("deployments[0].work_pool.name: required",))
