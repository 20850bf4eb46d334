"""The `pushpool` CLI end to end: every command group against a fresh SQLite store, JSON parsed, errors checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner, Result

from dispatcher import deployments, pools
from dispatcher.cli import app
from dispatcher.pools import DEFAULT_POOL_SETTING
from dispatcher.states import StateType
from dispatcher.store import open_store
from dispatcher.store.base import Admission

REPO = Path(__file__).resolve().parents[1]


class Cli:
    """Runs `pushpool --store URL ...` in-process and checks the outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def run(self, *args: str) -> Result:
        return self.runner.invoke(app, ["--store", self.url, *args])

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def fails(self, *args: str, says: tuple[str, ...] = (), code: int | None = None) -> str:
        """Assert a non-zero exit with one `Error: ...` line on stderr containing every text in `says`."""
        result = self.run(*args)
        assert result.exit_code != 0, (args, result.stdout)
        if code is not None:
            assert result.exit_code == code, (args, result.exit_code, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        for text in says:
            assert text in lines[0], (text, lines[0])
        assert "Traceback" not in result.stderr
        return lines[0]

    def snapshot(self) -> dict[str, Any]:
        """Everything a failed command must leave untouched, read straight from the store."""
        store = open_store(self.url)
        try:
            pools = store.list_pools()
            return {
                "pools": [p.model_dump(mode="json") for p in pools],
                "queues": [q.model_dump(mode="json") for p in pools for q in store.list_queues(p.name)],
                "deployments": [d.model_dump(mode="json") for d in store.list_deployments()],
                "runs": [r.model_dump(mode="json") for p in pools for r in store.list_runs(p.name)],
                "default_pool": store.get_setting(DEFAULT_POOL_SETTING),
            }
        finally:
            store.close()


_COMMAND = typer.main.get_command(app)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    # CliRunner rebuilds the click command from the Typer app on every call (~70 ms); build it once instead.
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _COMMAND, raising=False)
    return Cli(f"sqlite:///{tmp_path}/s.db")


def _admit(url: str, run_id: str, *, running: bool = False) -> None:
    """Move a SCHEDULED run to PENDING (taking its slots) and optionally RUNNING, as a dispatcher would."""
    store = open_store(url)
    try:
        run = store.get_run(run_id)
        assert run is not None
        pending, _ = run.moved(StateType.PENDING, source="test")
        admitted = store.admit([Admission(run, pending)])
        assert len(admitted) == 1
        pending = admitted[0]  # as stored, with its new version
        if running:
            after, applied = pending.moved(StateType.RUNNING, source="test")
            assert applied and store.save_run(pending, after)
    finally:
        store.close()


# work-pool -------------------------------------------------------------------------------------------------
def test_work_pool_lifecycle(cli: Cli) -> None:
    created = cli.json("work-pool", "create", "p1", "--concurrency-limit", "2", "--description", "first")
    assert created["name"] == "p1" and created["type"] == "process" and created["concurrency_limit"] == 2
    assert created["status"] == "NOT_READY" and created["paused"] is False
    assert [p["name"] for p in cli.json("work-pool", "ls")] == ["p1"]

    inspected = cli.json("work-pool", "inspect", "p1")
    assert inspected["description"] == "first" and inspected["active"] == 0
    assert [(q["name"], q["priority"], q["active"]) for q in inspected["queues"]] == [("default", 1, 0)]

    updated = cli.json("work-pool", "update", "p1", "--description", "second", "--concurrency-limit", "3")
    assert updated["description"] == "second" and updated["concurrency_limit"] == 3
    assert cli.json("work-pool", "update", "p1", "--description", "third")["concurrency_limit"] == 3

    assert "Paused" in cli.ok("work-pool", "pause", "p1")
    paused = cli.json("work-pool", "inspect", "p1")
    assert paused["paused"] is True and paused["status"] == "PAUSED"
    assert "PAUSED" in cli.ok("work-pool", "ls")
    assert "NOT_READY" in cli.ok("work-pool", "resume", "p1")
    assert cli.json("work-pool", "inspect", "p1")["status"] == "NOT_READY"

    cli.ok("work-pool", "set-concurrency-limit", "p1", "0")
    assert cli.json("work-pool", "inspect", "p1")["concurrency_limit"] == 0
    cli.ok("work-pool", "clear-concurrency-limit", "p1")
    assert cli.json("work-pool", "inspect", "p1")["concurrency_limit"] is None
    assert "0/∞" in cli.ok("work-pool", "inspect", "p1")

    assert "Deleted" in cli.ok("work-pool", "delete", "p1")
    assert cli.json("work-pool", "ls") == []
    cli.fails("work-pool", "inspect", "p1", says=("'p1'", "does not exist"), code=3)


def test_work_pool_create_options(cli: Cli, tmp_path: Path) -> None:
    template = json.loads((REPO / "templates" / "process.json").read_text())
    template["variables"]["properties"]["command"]["default"] = "echo hi"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    pool = cli.json(
        "work-pool",
        "create",
        "p1",
        "--type",
        "process",
        "--paused",
        "--set-as-default",
        "--base-job-template",
        str(path),
        "--job-variables",
        '{"env": {"A": "1"}}',
    )
    assert pool["paused"] is True and pool["job_variables"] == {"env": {"A": "1"}}
    assert pool["base_job_template"]["variables"]["properties"]["command"]["default"] == "echo hi"

    cli.fails("work-pool", "create", "p1", says=("already exists", "--overwrite"), code=4)
    replaced = cli.json("work-pool", "create", "p1", "--overwrite", "--description", "new")
    assert replaced["description"] == "new" and replaced["paused"] is False

    # --set-as-default lets `deployment create` leave out --pool
    assert cli.json("deployment", "create", "d1")["pool"] == "p1"

    vars_file = tmp_path / "vars.yaml"
    vars_file.write_text("env:\n  B: '2'\n")
    updated = cli.json("work-pool", "update", "p1", "--job-variables", f"@{vars_file}")
    assert updated["job_variables"] == {"env": {"B": "2"}}


def test_work_pool_inspect_shows_active_over_limit(cli: Cli) -> None:
    cli.ok("work-pool", "create", "p1", "--concurrency-limit", "2")
    cli.ok("work-queue", "create", "q1", "--pool", "p1", "--concurrency-limit", "1")
    cli.ok("deployment", "create", "d1", "--pool", "p1", "--queue", "q1")
    run = cli.json("deployment", "run", "d1")
    _admit(cli.url, run["id"])

    inspected = cli.json("work-pool", "inspect", "p1")
    assert inspected["active"] == 1
    assert {q["name"]: (q["active"], q["concurrency_limit"]) for q in inspected["queues"]} == {
        "q1": (1, 1),
        "default": (0, None),
    }
    table = cli.ok("work-pool", "inspect", "p1")
    assert "1/2" in table and "1/1" in table and "0/∞" in table
    assert "command, env, labels, name, stream_output, working_dir" in table
    assert cli.json("work-queue", "inspect", "q1", "--pool", "p1")["active"] == 1
    cli.fails("work-pool", "delete", "p1", says=("deployment",), code=4)


def test_get_default_base_job_template(cli: Cli, tmp_path: Path) -> None:
    expected = json.loads((REPO / "templates" / "process.json").read_text())
    assert json.loads(cli.ok("work-pool", "get-default-base-job-template", "--type", "process")) == expected
    out = tmp_path / "out.json"
    said = cli.ok("work-pool", "get-default-base-job-template", "--type", "process", "--file", str(out))
    assert str(out) in said and json.loads(out.read_text()) == expected
    cli.fails("work-pool", "get-default-base-job-template", "--type", "k8s", says=("'k8s'", "process"))


# work-queue ------------------------------------------------------------------------------------------------
def test_work_queue_lifecycle(cli: Cli) -> None:
    cli.ok("work-pool", "create", "p1")
    queue = cli.json("work-queue", "create", "q1", "--pool", "p1", "--concurrency-limit", "4", "--description", "x")
    assert (queue["pool"], queue["priority"], queue["concurrency_limit"], queue["description"]) == ("p1", 2, 4, "x")
    assert [q["name"] for q in cli.json("work-queue", "ls", "--pool", "p1")] == ["default", "q1"]
    assert cli.json("work-queue", "inspect", "q1", "--pool", "p1")["active"] == 0
    assert "0/4" in cli.ok("work-queue", "inspect", "q1", "--pool", "p1")

    updated = cli.json("work-queue", "update", "q1", "--pool", "p1", "--description", "y", "--concurrency-limit", "5")
    assert (updated["description"], updated["concurrency_limit"]) == ("y", 5)

    cli.ok("work-queue", "pause", "q1", "--pool", "p1")
    assert cli.json("work-queue", "inspect", "q1", "--pool", "p1")["status"] == "PAUSED"
    cli.ok("work-queue", "resume", "q1", "--pool", "p1")
    assert cli.json("work-queue", "inspect", "q1", "--pool", "p1")["status"] == "NOT_READY"

    cli.ok("work-queue", "set-concurrency-limit", "q1", "0", "--pool", "p1")
    assert cli.json("work-queue", "inspect", "q1", "--pool", "p1")["concurrency_limit"] == 0
    cli.ok("work-queue", "clear-concurrency-limit", "q1", "--pool", "p1")
    assert cli.json("work-queue", "inspect", "q1", "--pool", "p1")["concurrency_limit"] is None

    cli.ok("work-queue", "delete", "q1", "--pool", "p1")
    assert [q["name"] for q in cli.json("work-queue", "ls", "--pool", "p1")] == ["default"]
    cli.fails("work-queue", "delete", "default", "--pool", "p1", says=("'default'", "cannot be deleted"))


def test_queue_insert_and_shift(cli: Cli) -> None:
    cli.ok("work-pool", "create", "p1")
    for i in (1, 2, 3):
        cli.ok("work-queue", "create", f"q{i}", "--pool", "p1", "--priority", str(i))
    order = [(q["name"], q["priority"]) for q in cli.json("work-queue", "ls", "--pool", "p1")]
    assert order == [("q1", 1), ("q2", 2), ("q3", 3), ("default", 4)]

    inserted = cli.json("work-queue", "create", "new", "--pool", "p1", "--priority", "2")
    assert inserted["priority"] == 2
    order = [(q["name"], q["priority"]) for q in cli.json("work-queue", "ls", "--pool", "p1")]
    assert order == [("q1", 1), ("new", 2), ("q2", 3), ("q3", 4), ("default", 5)]

    cli.ok("work-queue", "update", "default", "--pool", "p1", "--priority", "1")
    order = [(q["name"], q["priority"]) for q in cli.json("work-queue", "ls", "--pool", "p1")]
    assert order[0] == ("default", 1) and order[1] == ("q1", 2)
    table = cli.ok("work-queue", "ls", "--pool", "p1")
    assert table.index("default") < table.index("q1") < table.index("new")


# preview ---------------------------------------------------------------------------------------------------
def test_preview_says_why_due_runs_wait(cli: Cli) -> None:
    cli.ok("work-pool", "create", "p1", "--concurrency-limit", "0")
    cli.ok("deployment", "create", "d1", "--pool", "p1")
    run = cli.json("deployment", "run", "d1")
    later = cli.json("deployment", "run", "d1", "--start-in", "600")

    preview = cli.json("work-pool", "preview", "p1", "--hours", "1")
    runs = {r["id"]: r for q in preview["queues"] for r in q["runs"]}
    assert runs[run["id"]]["due"] is True and runs[run["id"]]["reason"] == "pool limit 0 reached"
    assert runs[later["id"]]["due"] is False and runs[later["id"]]["reason"] is None
    assert "pool limit 0 reached" in cli.ok("work-pool", "preview", "p1")

    cli.ok("work-pool", "clear-concurrency-limit", "p1")
    assert "next pass" in cli.ok("work-queue", "preview", "default", "--pool", "p1", "--hours", "2")
    one_queue = cli.json("work-queue", "preview", "default", "--pool", "p1")
    assert [q["queue"]["name"] for q in one_queue["queues"]] == ["default"]


def test_preview_names_a_deployment_whose_stored_schedule_cannot_be_planned(cli: Cli) -> None:
    import sqlite3
    from contextlib import closing

    cli.ok("work-pool", "create", "p1")
    cli.ok("deployment", "create", "broken", "--pool", "p1", "--rrule", "FREQ=DAILY")
    cli.ok("deployment", "create", "fine", "--pool", "p1", "--interval", "600")
    # As an older version could have stored it: INTERVAL=0 is refused as input today.
    with closing(sqlite3.connect(cli.url.removeprefix("sqlite:///"))) as db, db:
        (data,) = db.execute("SELECT data FROM deployments WHERE name = 'broken'").fetchone()
        document = json.loads(data)
        document["schedules"] = [{"rrule": "FREQ=DAILY;INTERVAL=0", "timezone": "UTC"}]
        db.execute("UPDATE deployments SET data = ? WHERE name = 'broken'", (json.dumps(document),))

    result = cli.run("work-pool", "preview", "p1", "--hours", "1")
    assert result.exit_code == 0, result.stderr
    assert "Planned" in result.stdout and "fine" in result.stdout
    assert result.stderr.startswith("Not planned: deployment 'broken'") and "pause-schedule broken" in result.stderr
    assert list(cli.json("work-pool", "preview", "p1")["problems"]) == ["broken"]


# deployment ------------------------------------------------------------------------------------------------
def test_deployment_lifecycle(cli: Cli) -> None:
    cli.ok("work-pool", "create", "p1")
    cli.ok("work-queue", "create", "q1", "--pool", "p1")
    created = cli.json(
        "deployment",
        "create",
        "d1",
        "--pool",
        "p1",
        "--queue",
        "q1",
        "--cron",
        "0 9 * * *",
        "--timezone",
        "Europe/Berlin",
        "--tag",
        "a",
        "--tag",
        "b",
        "--parameters",
        '{"x": 1, "y": 2}',
        "--job-variables",
        '{"command": "echo hi"}',
        "--concurrency-limit",
        "2",
        "--description",
        "etl",
    )
    assert created["schedules"] == [{"cron": "0 9 * * *", "timezone": "Europe/Berlin"}]
    assert (created["queue"], created["tags"], created["concurrency_limit"]) == ("q1", ["a", "b"], 2)
    assert [d["name"] for d in cli.json("deployment", "ls")] == ["d1"]
    assert cli.json("deployment", "ls", "--pool", "p1")[0]["job_variables"] == {"command": "echo hi"}
    assert "cron 0 9 * * * (Europe/Berlin)" in cli.ok("deployment", "inspect", "d1")

    cli.ok("deployment", "pause-schedule", "d1")
    assert cli.json("deployment", "inspect", "d1")["schedule_paused"] is True
    cli.ok("deployment", "resume-schedule", "d1")
    assert cli.json("deployment", "inspect", "d1")["schedule_paused"] is False

    run = cli.json("deployment", "run", "d1", "--parameters", '{"y": 3}', "--job-variables", '{"stream_output": false}')
    assert run["state"] == "SCHEDULED" and run["parameters"] == {"x": 1, "y": 3}
    assert run["job_variables"] == {"stream_output": False} and run["queue"] == "q1"
    before = datetime.now(UTC)
    later = cli.json("deployment", "run", "d1", "--start-in", "120")
    delay = datetime.fromisoformat(later["scheduled_time"]) - before
    assert timedelta(seconds=100) < delay < timedelta(seconds=140)
    at = cli.json("deployment", "run", "d1", "--at", "2030-01-02T03:04:05")
    assert datetime.fromisoformat(at["scheduled_time"]) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    for interval_args in (("--interval", "300"), ("--rrule", "FREQ=DAILY;BYHOUR=9")):
        made = cli.json("deployment", "create", f"d{len(interval_args[0])}", "--pool", "p1", *interval_args)
        assert made["schedules"][0][interval_args[0].lstrip("-")] in (300, "FREQ=DAILY;BYHOUR=9")

    cli.ok("deployment", "delete", "d1")
    assert "d1" not in [d["name"] for d in cli.json("deployment", "ls")]
    assert {r["state"] for r in cli.json("flow-run", "ls", "--pool", "p1")} == {"CANCELLED"}


# flow-run --------------------------------------------------------------------------------------------------
def test_flow_run_ls_inspect_logs(cli: Cli) -> None:
    for pool in ("p1", "p2"):
        cli.ok("work-pool", "create", pool)
        cli.ok("deployment", "create", f"d-{pool}", "--pool", pool)
    times = {"p1": "2030-01-01T00:00:00Z", "p2": "2030-01-02T00:00:00Z"}
    runs = {p: cli.json("deployment", "run", f"d-{p}", "--at", t) for p, t in times.items()}
    oldest = cli.json("deployment", "run", "d-p1", "--at", "2029-01-01T00:00:00Z")

    listed = cli.json("flow-run", "ls")
    assert [r["id"] for r in listed] == [runs["p2"]["id"], runs["p1"]["id"], oldest["id"]]
    assert [r["id"] for r in cli.json("flow-run", "ls", "--limit", "1")] == [runs["p2"]["id"]]
    assert [r["id"] for r in cli.json("flow-run", "ls", "--pool", "p1")] == [runs["p1"]["id"], oldest["id"]]
    assert len(cli.json("flow-run", "ls", "--queue", "default", "--state", "scheduled")) == 3
    assert cli.json("flow-run", "ls", "--state", "RUNNING") == []
    assert runs["p1"]["name"] in cli.ok("flow-run", "ls")

    inspected = cli.json("flow-run", "inspect", runs["p1"]["id"])
    assert inspected["state_history"][0]["state"] == "SCHEDULED"
    assert "State history" in cli.ok("flow-run", "inspect", runs["p1"]["id"])
    cli.ok("flow-run", "cancel", runs["p1"]["id"])
    lines = cli.ok("flow-run", "logs", runs["p1"]["id"]).splitlines()
    assert len(lines) == 2
    assert "user: SCHEDULED/Scheduled" in lines[0] and "CANCELLED/Cancelled" in lines[1]


def test_flow_run_cancel(cli: Cli) -> None:
    cli.ok("work-pool", "create", "p1", "--concurrency-limit", "1")
    cli.ok("deployment", "create", "d1", "--pool", "p1")
    scheduled = cli.json("deployment", "run", "d1")
    assert cli.json("flow-run", "cancel", scheduled["id"])["state"] == "CANCELLED"
    cli.fails("flow-run", "cancel", scheduled["id"], says=(f"flow run {scheduled['id']} is already CANCELLED",))

    running = cli.json("deployment", "run", "d1")
    _admit(cli.url, running["id"], running=True)
    assert "Cancelling" in cli.ok("flow-run", "cancel", running["id"])
    run = cli.json("flow-run", "inspect", running["id"])
    assert run["state"] == "CANCELLING"
    # the infrastructure still runs, so the slot stays held
    assert cli.json("work-pool", "inspect", "p1")["active"] == 1
    # a second cancel of a cancelling run changes nothing
    assert cli.json("flow-run", "cancel", running["id"])["state_history"] == run["state_history"]

    completed = cli.json("deployment", "run", "d1")
    store = open_store(cli.url)
    try:
        before = store.get_run(completed["id"])
        assert before is not None
        after, _ = before.moved(StateType.COMPLETED, source="test")
        assert store.save_run(before, after)
    finally:
        store.close()
    cli.fails("flow-run", "cancel", completed["id"], says=("is already COMPLETED; nothing to cancel",), code=4)


# apply, store ----------------------------------------------------------------------------------------------
def test_apply(cli: Cli, tmp_path: Path) -> None:
    doc = tmp_path / "pools.yaml"
    doc.write_text(
        "work_pools:\n"
        "  - name: prod\n    concurrency_limit: 5\n"
        "    queues:\n      - {name: critical, priority: 1, concurrency_limit: 1}\n"
        "deployments:\n  - {name: etl, pool: prod, queue: critical}\n"
    )
    dry = cli.json("apply", str(doc), "--dry-run")
    assert dry["dry_run"] is True and [a["kind"] for a in dry["actions"]] == ["create", "create", "create"]
    assert cli.json("work-pool", "ls") == []

    assert "Applied." in cli.ok("apply", str(doc))
    assert cli.json("work-pool", "inspect", "prod")["concurrency_limit"] == 5
    assert cli.json("deployment", "inspect", "etl")["queue"] == "critical"
    assert {a["kind"] for a in cli.json("apply", str(doc))["actions"]} == {"unchanged"}

    bad = tmp_path / "bad.yaml"
    bad.write_text("work_pools: [{name: 'a/b'}]\n")
    before = cli.snapshot()
    cli.fails("apply", str(bad), says=("work_pools[0].name",))
    assert cli.snapshot() == before


def test_store_init(cli: Cli, tmp_path: Path) -> None:
    assert f"SQLite store ready at {tmp_path}/s.db" in cli.ok("store", "init")


def test_usage_errors_stay_typer_errors(cli: Cli) -> None:
    result = cli.run("work-queue", "create", "q1")
    assert result.exit_code == 2 and "--pool" in result.stderr
    result = cli.run("work-pool", "ls", "-o", "yaml")
    assert result.exit_code == 2 and "yaml" in result.stderr


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pushpool"
    url = f"sqlite:///{tmp_path}/s.db"
    env = {**os.environ, "PUSHPOOL_STORE": url}
    made = subprocess.run([str(script), "work-pool", "create", "p1"], capture_output=True, text=True, env=env)
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [str(script), "--store", url, "work-pool", "ls", "-o", "json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [p["name"] for p in json.loads(done.stdout)] == ["p1"]


# bad input: non-zero exit, one sentence naming the field, nothing written -----------------------------------
def _template_file(tmp_path: Path, content: str) -> str:
    path = tmp_path / "template.json"
    path.write_text(content)
    return str(path)


UNDECLARED = json.dumps({"job_configuration": {"command": "{{ nope }}"}, "variables": {"type": "object"}})

BAD_INPUT: list[tuple[str, Callable[[Path], list[str]], tuple[str, ...]]] = [
    # names
    ("pool name with /", lambda _: ["work-pool", "create", "pool/x"], ("work pool name", "/ % & < >")),
    ("reserved pool name", lambda _: ["work-pool", "create", "pushpool-x"], ("'pushpool-x'", "reserved")),
    ("101-char pool name", lambda _: ["work-pool", "create", "x" * 101], ("work pool name", "1 to 100")),
    ("queue name with &", lambda _: ["work-queue", "create", "a&b", "--pool", "p"], ("work queue name",)),
    ("deployment name <", lambda _: ["deployment", "create", "a<b", "--pool", "p"], ("deployment name",)),
    # unknown things
    ("unknown pool", lambda _: ["work-pool", "inspect", "nope"], ("work pool 'nope' does not exist",)),
    ("queue in unknown pool", lambda _: ["work-queue", "create", "q2", "--pool", "nope"], ("'nope'",)),
    ("unknown queue", lambda _: ["work-queue", "inspect", "nope", "--pool", "p"], ("work queue 'nope'", "q")),
    (
        "deployment on unknown queue",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--queue", "nope"],
        ("work queue 'nope'",),
    ),
    ("unknown deployment", lambda _: ["deployment", "run", "nope"], ("deployment 'nope' does not exist",)),
    ("pause unknown deployment", lambda _: ["deployment", "pause-schedule", "nope"], ("deployment 'nope'",)),
    ("unknown run", lambda _: ["flow-run", "inspect", "nope"], ("flow run 'nope' does not exist",)),
    ("cancel unknown run", lambda _: ["flow-run", "cancel", "nope"], ("flow run 'nope'",)),
    ("logs of unknown run", lambda _: ["flow-run", "logs", "nope"], ("flow run 'nope'",)),
    ("runs of unknown pool", lambda _: ["flow-run", "ls", "--pool", "nope"], ("work pool 'nope'",)),
    # negative limits
    (
        "pool create limit",
        lambda _: ["work-pool", "create", "p2", "--concurrency-limit", "-1"],
        ("concurrency_limit", "0 or more"),
    ),
    ("pool update limit", lambda _: ["work-pool", "update", "p", "--concurrency-limit", "-1"], ("concurrency_limit",)),
    ("pool set limit", lambda _: ["work-pool", "set-concurrency-limit", "p", "-1"], ("concurrency_limit",)),
    (
        "queue create limit",
        lambda _: ["work-queue", "create", "q2", "--pool", "p", "--concurrency-limit", "-3"],
        ("concurrency_limit", "0 or more"),
    ),
    (
        "queue update limit",
        lambda _: ["work-queue", "update", "q", "--pool", "p", "--concurrency-limit", "-1"],
        ("concurrency_limit",),
    ),
    (
        "queue set limit",
        lambda _: ["work-queue", "set-concurrency-limit", "q", "-1", "--pool", "p"],
        ("concurrency_limit",),
    ),
    ("queue priority 0", lambda _: ["work-queue", "create", "q2", "--pool", "p", "--priority", "0"], ("priority",)),
    (
        "deployment limit",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--concurrency-limit", "-1"],
        ("concurrency_limit",),
    ),
    # JSON arguments
    (
        "malformed pool job variables",
        lambda _: ["work-pool", "create", "p2", "--job-variables", "{bad"],
        ("--job-variables is not valid JSON", "line 1 column 2", "@FILE"),
    ),
    (
        "malformed deployment job variables",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--job-variables", "nope"],
        ("--job-variables is not valid",),
    ),
    (
        "malformed parameters",
        lambda _: ["deployment", "run", "d", "--parameters", "{'a': 1}"],
        ("--parameters is not valid JSON",),
    ),
    (
        "parameters not an object",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--parameters", "[1]"],
        ("--parameters must be a JSON object", "list"),
    ),
    (
        "missing @file",
        lambda tmp: ["deployment", "run", "d", "--job-variables", f"@{tmp}/missing.json"],
        ("--job-variables", "missing.json"),
    ),
    # templates and job variables
    (
        "malformed template file",
        lambda tmp: ["work-pool", "create", "p2", "--base-job-template", _template_file(tmp, "{nope")],
        ("--base-job-template", "not valid JSON"),
    ),
    (
        "missing template file",
        lambda tmp: ["work-pool", "update", "p", "--base-job-template", f"{tmp}/gone.json"],
        ("--base-job-template", "gone.json"),
    ),
    (
        "undeclared placeholder",
        lambda tmp: ["work-pool", "create", "p2", "--base-job-template", _template_file(tmp, UNDECLARED)],
        ("undeclared variables nope",),
    ),
    (
        "template update undeclared",
        lambda tmp: ["work-pool", "update", "p", "--base-job-template", _template_file(tmp, UNDECLARED)],
        ("undeclared variables nope",),
    ),
    (
        "undeclared job variable",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--job-variables", '{"image": "x"}'],
        ("job_variables", "'image'", "allowed: command, env, labels, name, stream_output, working_dir"),
    ),
    (
        "undeclared run job variable",
        lambda _: ["deployment", "run", "d", "--job-variables", '{"cpu": 1}'],
        ("'cpu'", "allowed:"),
    ),
    (
        "schema violation",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--job-variables", '{"stream_output": "yes"}'],
        ("job_variables.stream_output", "boolean"),
    ),
    (
        "pool schema violation",
        lambda _: ["work-pool", "update", "p", "--job-variables", '{"stream_output": "yes"}'],
        ("job_variables.stream_output",),
    ),
    ("unknown pool type", lambda _: ["work-pool", "create", "p2", "--type", "k8s"], ("type 'k8s'", "process")),
    # schedules and times
    (
        "two schedules",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--cron", "* * * * *", "--interval", "60"],
        ("--cron", "--interval"),
    ),
    ("bad cron", lambda _: ["deployment", "create", "d2", "--pool", "p", "--cron", "every day"], ("cron 'every day'",)),
    (
        "bad timezone",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--cron", "0 * * * *", "--timezone", "Mars/Base"],
        ("timezone 'Mars/Base'",),
    ),
    ("interval 0", lambda _: ["deployment", "create", "d2", "--pool", "p", "--interval", "0"], ("--interval",)),
    (
        "start-in and at",
        lambda _: ["deployment", "run", "d", "--start-in", "5", "--at", "2030-01-01T00:00:00"],
        ("--start-in", "--at"),
    ),
    ("bad --at", lambda _: ["deployment", "run", "d", "--at", "tomorrow"], ("--at 'tomorrow'", "ISO 8601")),
]


def _world(cli: Cli) -> None:
    """The world each bad-input case starts from, made through the core (faster than the CLI)."""
    store = open_store(cli.url)
    try:
        pools.create_pool(store, "p")
        pools.create_queue(store, "p", "q")
        deployments.create_deployment(store, "d", pool="p")
        deployments.run_deployment(store, "d")
    finally:
        store.close()


@pytest.mark.parametrize(("args", "says"), [pytest.param(a, s, id=i) for i, a, s in BAD_INPUT])
def test_bad_input_is_refused_and_writes_nothing(
    cli: Cli, tmp_path: Path, args: Callable[[Path], list[str]], says: tuple[str, ...]
) -> None:
    _world(cli)
    before = cli.snapshot()
    cli.fails(*args(tmp_path), says=says)
    assert cli.snapshot() == before


def _binary_file(tmp_path: Path) -> str:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe\x00")
    return str(path)


def _text_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def _run(*extra: str) -> Callable[[Path], list[str]]:
    return lambda _: ["deployment", "run", "d", *extra]


NOT_UTF8 = ("not UTF-8 text",)
START_IN = ("--start-in", "0 to 315619200", "10 years")
AT = ("--at", "1970-01-01T00:00:00Z", "9998-12-31T23:59:59Z")
HOURS = ("--hours", "above 0", "8784", "a year")
SINCE = ("--since", "3653d", "10 years")
NON_FINITE = ("is not valid JSON: NaN/Infinity are not numbers",)

INVALID_INPUT: list[tuple[str, Callable[[Path], list[str]], tuple[str, ...]]] = [
    # files that are not text
    (
        "binary @FILE",
        lambda tmp: ["work-pool", "create", "p2", "--job-variables", f"@{_binary_file(tmp)}"],
        ("--job-variables", "binary.json", *NOT_UTF8),
    ),
    ("binary run @FILE", lambda tmp: _run("--parameters", f"@{_binary_file(tmp)}")(tmp), ("--parameters", *NOT_UTF8)),
    (
        "binary template",
        lambda tmp: ["work-pool", "create", "p2", "--base-job-template", _binary_file(tmp)],
        ("--base-job-template", "binary.json", *NOT_UTF8),
    ),
    (
        "binary template update",
        lambda tmp: ["work-pool", "update", "p", "--base-job-template", _binary_file(tmp)],
        ("--base-job-template", *NOT_UTF8),
    ),
    # times out of range
    ("start-in 1e30", _run("--start-in", "1e30"), START_IN),
    ("start-in inf", _run("--start-in", "inf"), START_IN),
    ("start-in nan", _run("--start-in", "nan"), START_IN),
    ("start-in -1", _run("--start-in", "-1"), START_IN),
    ("start-in 10 years and a second", _run("--start-in", "315619201"), START_IN),
    ("at with no UTC form after 9999", _run("--at", "9999-12-31T23:59:59-05:00"), AT),
    ("at with no UTC form before 1", _run("--at", "0001-01-01T00:00:00+05:00"), AT),
    ("at in 9999", _run("--at", "9999-06-01T00:00:00"), AT),
    ("at before 1970", _run("--at", "1969-12-31T23:59:59Z"), AT),
    ("at 1970 in UTC+1, 1969 in UTC", _run("--at", "1970-01-01T00:30:00+01:00"), AT),
    ("hours 1e30", lambda _: ["work-pool", "preview", "p", "--hours", "1e30"], HOURS),
    ("hours inf", lambda _: ["work-pool", "preview", "p", "--hours", "inf"], HOURS),
    ("hours nan", lambda _: ["work-pool", "preview", "p", "--hours", "nan"], HOURS),
    ("hours 999999999", lambda _: ["work-pool", "preview", "p", "--hours", "999999999"], HOURS),
    ("hours a year and an hour", lambda _: ["work-pool", "preview", "p", "--hours", "8785"], HOURS),
    ("hours 0", lambda _: ["work-pool", "preview", "p", "--hours", "0"], HOURS),
    ("queue hours 999999999", lambda _: ["work-queue", "preview", "q", "-p", "p", "--hours", "999999999"], HOURS),
    ("queue hours -1", lambda _: ["work-queue", "preview", "q", "-p", "p", "--hours", "-1"], HOURS),
    ("since 99999999999d", lambda _: ["work-pool", "timeline", "p", "--since", "99999999999d"], SINCE),
    ("since 100000000d", lambda _: ["work-pool", "timeline", "p", "--since", "100000000d"], SINCE),
    ("since 3654d", lambda _: ["work-pool", "timeline", "p", "--since", "3654d"], SINCE),
    # JSON with numbers JSON does not have (Python's parser takes them, and they would be stored as null)
    ("parameters NaN", _run("--parameters", '{"a": NaN}'), ("--parameters", *NON_FINITE)),
    ("parameters Infinity", _run("--parameters", '{"a": [Infinity]}'), ("--parameters", *NON_FINITE)),
    ("parameters -Infinity", _run("--parameters", '{"a": {"b": -Infinity}}'), ("--parameters", *NON_FINITE)),
    ("parameters 1e999", _run("--parameters", '{"a": 1e999}'), ("--parameters", *NON_FINITE)),
    ("parameters -1e999", _run("--parameters", '{"a": -1e999}'), ("--parameters", *NON_FINITE)),
    (
        "deployment job variables NaN",
        lambda _: ["deployment", "create", "d2", "--pool", "p", "--job-variables", '{"env": {"X": NaN}}'],
        ("--job-variables", *NON_FINITE),
    ),
    (
        "pool job variables @FILE Infinity",
        lambda tmp: ["work-pool", "update", "p", "--job-variables", "@" + _text_file(tmp, "v.json", '{"a": Infinity}')],
        ("--job-variables", *NON_FINITE),
    ),
    (
        "YAML .nan",
        lambda tmp: _run("--parameters", f"@{_text_file(tmp, 'p.yaml', 'a: [1, .nan]')}")(tmp),
        ("--parameters", "NaN/Infinity are not numbers"),
    ),
    (
        "template NaN",
        lambda tmp: ["work-pool", "create", "p2", "--base-job-template", _text_file(tmp, "t.json", '{"a": NaN}')],
        ("--base-job-template", *NON_FINITE),
    ),
    (
        "too deeply nested JSON",
        lambda _: _run("--parameters", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")(_),
        ("--parameters is not valid JSON", "nested too deeply"),
    ),
    # options that only make sense together
    ("dispatch queue without pool", lambda _: ["dispatch", "--queue", "q"], ("--queue needs --pool",)),
]


@pytest.mark.parametrize(("args", "says"), [pytest.param(a, s, id=i) for i, a, s in INVALID_INPUT])
def test_invalid_input_exits_2_and_writes_nothing(
    cli: Cli, tmp_path: Path, args: Callable[[Path], list[str]], says: tuple[str, ...]
) -> None:
    _world(cli)
    before = cli.snapshot()
    cli.fails(*args(tmp_path), says=says, code=2)
    assert cli.snapshot() == before


def test_time_limits_accept_their_bounds(cli: Cli) -> None:
    _world(cli)
    assert cli.json("work-pool", "preview", "p", "--hours", "8784")["hours"] == 8784
    assert cli.json("work-queue", "preview", "q", "-p", "p", "--hours", "0.01")["hours"] == 0.01
    assert isinstance(cli.json("work-pool", "timeline", "p", "--since", "3653d"), list)
    far = cli.json("deployment", "run", "d", "--start-in", "315619200")["scheduled_time"]
    assert datetime.fromisoformat(far) - datetime.now(UTC) > timedelta(days=3652)
    assert cli.json("deployment", "run", "d", "--start-in", "0")["state"] == "SCHEDULED"
    first = cli.json("deployment", "run", "d", "--at", "1970-01-01T01:00:00+01:00")["scheduled_time"]
    assert datetime.fromisoformat(first) == datetime(1970, 1, 1, tzinfo=UTC)
    last = cli.json("deployment", "run", "d", "--at", "9998-12-31T23:59:59")["scheduled_time"]
    assert datetime.fromisoformat(last) == datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_finite_json_numbers_and_utf8_files_still_work(cli: Cli, tmp_path: Path) -> None:
    _world(cli)
    params = tmp_path / "params.yaml"
    params.write_text("name: Zoë\nratio: 1.5e+300\n", encoding="utf-8")
    run = cli.json("deployment", "run", "d", "--parameters", f"@{params}")
    assert run["parameters"] == {"name": "Zoë", "ratio": 1.5e300}
    run = cli.json("deployment", "run", "d", "--parameters", '{"big": 1e308, "small": -2.5e-300, "n": 10}')
    assert run["parameters"] == {"big": 1e308, "small": -2.5e-300, "n": 10}


def test_unsupported_store_url_is_one_sentence() -> None:
    Cli("ftp://somewhere/x").fails("work-pool", "ls", says=("'ftp://somewhere/x'", "sqlite:///PATH"), code=6)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:", "sqlite:/x.db", "sqlite://x.db", "SQLITE:///x.db", "sqlite:///"]
)
def test_a_sqlite_url_without_a_path_is_refused_and_creates_no_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    Cli(url).fails("work-pool", "ls", says=(repr(url), "sqlite:///PATH", "dynamodb://TABLE?region="), code=6)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_store_url_is_refused_not_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default store, were it (wrongly) used
    monkeypatch.delenv("PUSHPOOL_STORE", raising=False)
    says = ("empty", "--store", "PUSHPOOL_STORE", "sqlite:///PATH")
    Cli("").fails("work-pool", "ls", says=says, code=6)
    monkeypatch.setenv("PUSHPOOL_STORE", "")
    result = CliRunner().invoke(app, ["work-pool", "ls"])
    assert result.exit_code == 6 and result.stderr.startswith("Error: ") and "PUSHPOOL_STORE" in result.stderr
    assert list(tmp_path.iterdir()) == []
    # unset still means the default store
    monkeypatch.delenv("PUSHPOOL_STORE")
    assert CliRunner().invoke(app, ["work-pool", "ls", "-o", "json"]).stdout.strip() == "[]"
    assert (tmp_path / "home" / ".pushpool" / "pushpool.db").exists()
