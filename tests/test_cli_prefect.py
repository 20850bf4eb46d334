"""Prefect's CLI habits (issue 11, deliverable 6): each spelling a Prefect user types, through typer's CliRunner."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from test_cli import _COMMAND, Cli, _admit

from dispatcher.dispatch import idempotency_key
from dispatcher.models import FlowRun
from dispatcher.states import StateType
from dispatcher.store import open_store


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _COMMAND, raising=False)
    return Cli(f"sqlite:///{tmp_path}/s.db")


@pytest.fixture
def dep(cli: Cli) -> Cli:
    """A pool `p` (the default) with a deployment `etl`."""
    cli.ok("work-pool", "create", "p", "--set-as-default")
    cli.ok("deployment", "create", "etl", "--parameters", '{"n": 1, "who": "x"}')
    return cli


def _now() -> datetime:
    return datetime.now(UTC)


def _at(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["scheduled_time"])


def _move(url: str, run_id: str, state: StateType, message: str | None = None) -> None:
    store = open_store(url)
    try:
        run = store.get_run(run_id)
        assert run is not None
        after, applied = run.moved(state, source="test", message=message)
        assert applied and store.save_run(run, after)
    finally:
        store.close()


# work-queue ------------------------------------------------------------------------------------------------
def test_work_queue_limit_spellings_and_ls_without_pool(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("work-pool", "create", "p1")
    cli.ok("work-pool", "create", "p2")
    assert cli.json("work-queue", "create", "q", "--pool", "p1", "--limit", "1")["concurrency_limit"] == 1
    assert cli.json("work-queue", "create", "r", "-p", "p2", "-l", "3")["concurrency_limit"] == 3
    assert cli.json("work-queue", "update", "q", "--pool", "p1", "--limit", "5")["concurrency_limit"] == 5
    listed = cli.json("work-queue", "ls")
    assert sorted((q["pool"], q["name"]) for q in listed) == [
        ("p1", "default"),
        ("p1", "q"),
        ("p2", "default"),
        ("p2", "r"),
    ]
    assert [q["name"] for q in cli.json("work-queue", "ls", "--pool", "p2")] == ["default", "r"]
    table = cli.ok("work-queue", "ls")
    assert "Work queues of p1" in table and "Work queues of p2" in table
    cli.fails("work-queue", "create", "bad", "--pool", "p1", "--limit", "-1", says=("concurrency_limit",))
    monkeypatch.setenv("COLUMNS", "200")  # help columns are cut to the terminal's width
    assert "--concurrency-limit,--limit" in cli.ok("work-queue", "create", "--help")


def test_work_queue_ls_without_pools_says_so(cli: Cli) -> None:
    assert cli.json("work-queue", "ls") == []
    assert "No work pools yet" in cli.ok("work-queue", "ls")


# deployment run --------------------------------------------------------------------------------------------
def test_flow_slash_deployment_names_resolve(dep: Cli) -> None:
    run = dep.json("deployment", "run", "my-flow/etl")
    assert run["deployment"] == "etl"
    dep.ok("deployment", "create", "other-etl")
    # `flow/dep` means `flow-dep` where import named a colliding deployment so; else `dep`.
    assert dep.json("deployment", "run", "other/etl")["deployment"] == "other-etl"
    assert dep.json("deployment", "inspect", "any/etl")["name"] == "etl"
    dep.fails("deployment", "run", "my-flow/missing", says=("'missing' does not exist",))


def test_param_params_and_job_variable_spellings(dep: Cli) -> None:
    run = dep.json(
        "deployment",
        "run",
        "etl",
        "--params",
        '{"who": "json", "keep": true}',
        "--param",
        "n=3",
        "--param",
        "who=world",
        "--param",
        "xs=[1, 2]",
        "--param",
        "flag=false",
        "--param",
        "text=not json {",
        "--job-variable",
        "working_dir=/tmp",
        "-jv",
        'env={"A": "1"}',
    )
    assert run["parameters"] == {
        "n": 3,
        "who": "world",
        "keep": True,
        "xs": [1, 2],
        "flag": False,
        "text": "not json {",
    }
    assert run["job_variables"] == {"working_dir": "/tmp", "env": {"A": "1"}}
    assert dep.json("deployment", "run", "etl", "--parameters", '{"n": 9}')["parameters"]["n"] == 9
    # NaN is not JSON: Prefect would keep the text, so does pushpool.
    assert dep.json("deployment", "run", "etl", "--param", "x=NaN")["parameters"]["x"] == "NaN"
    before = dep.snapshot()
    dep.fails("deployment", "run", "etl", "--param", "novalue", says=("--param must be KEY=VALUE", "'novalue'"))
    dep.fails("deployment", "run", "etl", "--param", "=3", says=("--param must be KEY=VALUE",))
    dep.fails("deployment", "run", "etl", "-jv", "nope=1", says=("nope",))
    assert dep.snapshot() == before


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5 minutes", 300),
        ("in 2 hours", 7200),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2 days, 3 hours", 2 * 86400 + 3 * 3600),
        ("90", 90),
        ("1 week", 7 * 86400),
    ],
)
def test_start_in_reads_prefect_durations(dep: Cli, text: str, seconds: int) -> None:
    before = _now()
    run = dep.json("deployment", "run", "etl", "--start-in", text)
    delay = (_at(run) - before).total_seconds()
    assert seconds - 1 <= delay <= seconds + 5, (text, delay)


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "tomorrow", "5 minutes ago", "in", "-3 hours", "3 years"])
def test_start_in_refuses_what_it_cannot_read(dep: Cli, text: str) -> None:
    before = dep.snapshot()
    dep.fails("deployment", "run", "etl", "--start-in", text, says=("--start-in", repr(text)))
    assert dep.snapshot() == before


def test_start_at_and_its_refusals(dep: Cli) -> None:
    run = dep.json("deployment", "run", "etl", "--start-at", "2030-01-02 03:04:05+01:00")
    assert _at(run) == datetime(2030, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert _at(dep.json("deployment", "run", "etl", "--start-at", "2031-05-06T07:08")) == datetime(
        2031, 5, 6, 7, 8, tzinfo=UTC
    )
    dep.fails("deployment", "run", "etl", "--start-at", "tomorrow 9am", says=("ISO 8601", "--start-in"))
    dep.fails("deployment", "run", "etl", "--start-at", "2030-01-01T00:00", "--start-in", "5m", says=("not both",))


def test_tag_and_flow_run_name(dep: Cli) -> None:
    run = dep.json("deployment", "run", "etl", "--tag", "nightly", "--tag", "team-a", "--flow-run-name", "first-try")
    assert run["tags"] == ["nightly", "team-a"] and run["name"] == "first-try"
    inspected = dep.json("flow-run", "inspect", run["id"])
    assert inspected["tags"] == ["nightly", "team-a"] and inspected["name"] == "first-try"
    before = dep.snapshot()
    dep.fails("deployment", "run", "etl", "--flow-run-name", "a/b", says=("flow run name", "/ % & < >"))
    dep.fails("deployment", "run", "etl", "--tag", "", says=("tags[0]",))
    assert dep.snapshot() == before


def _drive(url: str, states: list[tuple[StateType, str | None]], delay: float = 0.15) -> threading.Thread:
    """A thread that waits for the deployment's run, then moves it through `states` as callbacks would."""

    def work() -> None:
        store = open_store(url)
        try:
            deadline = time.monotonic() + 10
            while not (runs := store.runs_of_deployment("etl")) and time.monotonic() < deadline:
                time.sleep(0.02)
            run_id = runs[0].id
        finally:
            store.close()
        time.sleep(delay)
        _admit(url, run_id)
        for state, message in states:
            time.sleep(delay)
            _move(url, run_id, state, message)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_watch_follows_the_run_and_exits_0_when_it_completes(dep: Cli) -> None:
    thread = _drive(dep.url, [(StateType.RUNNING, None), (StateType.COMPLETED, "exit 0")])
    result = dep.run("deployment", "run", "etl", "--watch", "--watch-interval", "0.05", "--watch-timeout", "20")
    thread.join(5)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    expected = ["Pending", "Running", "Completed (COMPLETED): exit 0"]
    assert [name for name in expected if any(name in line for line in lines)] == expected, result.stdout
    assert "ended Completed" in lines[-1]


@pytest.mark.parametrize("end", [StateType.FAILED, StateType.CRASHED])
def test_watch_exits_1_when_the_run_fails_or_crashes(dep: Cli, end: StateType) -> None:
    thread = _drive(dep.url, [(StateType.RUNNING, None), (end, "exit 3")])
    result = dep.run("deployment", "run", "etl", "--watch", "--watch-interval", "0.05", "-o", "json")
    thread.join(5)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert f'"state": "{end.value}"' in result.stdout


def test_watch_exits_1_when_the_run_is_cancelled(dep: Cli) -> None:
    thread = _drive(dep.url, [])

    def cancel() -> None:
        thread.join(5)
        store = open_store(dep.url)
        try:
            run_id = store.runs_of_deployment("etl")[0].id
        finally:
            store.close()
        _move(dep.url, run_id, StateType.CANCELLING)
        _move(dep.url, run_id, StateType.CANCELLED, "stopped")

    canceller = threading.Thread(target=cancel, daemon=True)
    canceller.start()
    result = dep.run("deployment", "run", "etl", "--watch", "--watch-interval", "0.05")
    canceller.join(5)
    assert result.exit_code == 1 and "ended Cancelled" in result.stdout


def test_watch_timeout_exits_1_saying_so(dep: Cli) -> None:
    result = dep.run("deployment", "run", "etl", "--watch", "--watch-interval", "0.05", "--watch-timeout", "0.2")
    assert result.exit_code == 1
    assert "still Scheduled after the --watch-timeout of 0.2s" in result.stderr


# deployment schedule ---------------------------------------------------------------------------------------
def test_deployment_schedule_verbs(dep: Cli) -> None:
    created = dep.json("deployment", "schedule", "create", "flow/etl", "--cron", "0 9 * * *", "--timezone", "UTC")
    assert created == [{"cron": "0 9 * * *", "timezone": "UTC"}]
    dep.ok("deployment", "schedule", "create", "etl", "--interval", "3600", "--anchor-date", "2024-01-01T00:00:00Z")
    dep.ok("deployment", "schedule", "create", "etl", "--rrule", "FREQ=DAILY;BYHOUR=6", "--inactive")
    listed = dep.json("deployment", "schedule", "ls", "etl")
    assert [(s["number"], s.get("active", True)) for s in listed] == [(1, True), (2, True), (3, False)]
    assert "FREQ=DAILY" in dep.ok("deployment", "schedule", "ls", "etl")

    dep.ok("deployment", "schedule", "pause", "etl", "1")
    assert dep.json("deployment", "inspect", "etl")["schedules"][0]["active"] is False
    dep.ok("deployment", "schedule", "resume", "etl", "1")
    assert "active" not in dep.json("deployment", "inspect", "etl")["schedules"][0]

    dep.ok("deployment", "schedule", "delete", "etl", "2")
    assert [s.get("rrule") for s in dep.json("deployment", "schedule", "ls", "etl")] == [None, "FREQ=DAILY;BYHOUR=6"]
    replaced = dep.json("deployment", "schedule", "create", "etl", "--interval", "60", "--replace")
    assert [s["interval"] for s in replaced] == [60.0]

    before = dep.snapshot()
    dep.fails("deployment", "schedule", "delete", "etl", "4", says=("SCHEDULE 4", "numbered 1 to 1"))
    dep.fails("deployment", "schedule", "pause", "etl", "0", says=("SCHEDULE 0",))
    dep.fails("deployment", "schedule", "create", "etl", says=("--cron, --interval or --rrule",))
    dep.fails("deployment", "schedule", "create", "etl", "--cron", "0 * * * *", "--anchor-date", "2024-01-01", says=())
    assert dep.snapshot() == before

    dep.ok("deployment", "schedule", "clear", "etl", "-y")
    assert dep.json("deployment", "schedule", "ls", "etl") == []
    dep.fails("deployment", "schedule", "pause", "etl", "1", says=("it has no schedules",))


def test_a_paused_schedule_creates_no_runs(dep: Cli) -> None:
    dep.ok("deployment", "schedule", "create", "etl", "--interval", "60", "--inactive")
    dep.ok("dispatch", "--once")
    assert dep.json("flow-run", "ls") == []
    dep.ok("deployment", "schedule", "resume", "etl", "1")
    dep.ok("work-pool", "pause", "p")  # keep the runs SCHEDULED: nothing would run them here
    dep.ok("dispatch", "--once")
    assert len(dep.json("flow-run", "ls")) > 0


# flow-run --------------------------------------------------------------------------------------------------
def test_flow_run_ls_by_state_name_and_type(dep: Cli) -> None:
    late = dep.json("deployment", "run", "etl", "--start-at", "2020-01-01T00:00:00Z")
    future = dep.json("deployment", "run", "etl", "--start-in", "1h")
    done = dep.json("deployment", "run", "etl")
    _admit(dep.url, done["id"], running=True)
    _move(dep.url, done["id"], StateType.COMPLETED)

    def ids(*args: str) -> set[str]:
        return {r["id"] for r in dep.json("flow-run", "ls", *args)}

    assert ids("--state", "Late") == {late["id"]}  # shown Late though no pass has named it yet
    assert ids("--state", "late") == {late["id"]}
    assert ids("--state", "SCHEDULED") == {late["id"], future["id"]}
    assert ids("--state-type", "scheduled") == {late["id"], future["id"]}
    assert ids("--state", "Completed") == {done["id"]}
    assert ids("--state", "Late", "--state", "Completed") == {late["id"], done["id"]}
    assert ids("--state-type", "COMPLETED", "--state-type", "RUNNING") == {done["id"]}
    assert ids() == {late["id"], future["id"], done["id"]}
    dep.fails("flow-run", "ls", "--state", "Sleeping", says=("--state 'Sleeping'", "Late", "SCHEDULED"))
    dep.fails("flow-run", "ls", "--state-type", "Late", says=("--state-type 'Late'", "COMPLETED"))


def test_flow_run_logs_head_tail_and_n(dep: Cli) -> None:
    run = dep.json("deployment", "run", "etl")
    _admit(dep.url, run["id"], running=True)
    _move(dep.url, run["id"], StateType.COMPLETED, "done")
    every = dep.ok("flow-run", "logs", run["id"]).splitlines()
    assert len(every) == 4  # Scheduled, Pending, Running, Completed
    assert dep.ok("flow-run", "logs", run["id"], "--tail", "-n", "2").splitlines() == every[-2:]
    assert dep.ok("flow-run", "logs", run["id"], "-t", "-n", "1").splitlines() == every[-1:]
    assert dep.ok("flow-run", "logs", run["id"], "--head", "-n", "1").splitlines() == every[:1]
    assert dep.ok("flow-run", "logs", run["id"], "-h", "--num-logs", "3").splitlines() == every[:3]
    assert dep.ok("flow-run", "logs", run["id"], "-n", "1").splitlines() == every[-1:]
    assert dep.ok("flow-run", "logs", run["id"], "--head").splitlines() == every  # 20 at most
    assert "--tail" in dep.ok("flow-run", "logs", "--help")
    dep.fails("flow-run", "logs", run["id"], "--head", "--tail", says=("either --head or --tail",))


def test_flow_run_retry_sends_an_ended_run_back_with_a_new_provider_identity(dep: Cli) -> None:
    run = dep.json("deployment", "run", "etl", "--param", "n=5")
    dep.fails("flow-run", "retry", run["id"], says=("Scheduled (SCHEDULED)", "only a run that has ended"))
    _admit(dep.url, run["id"], running=True)
    dep.fails("flow-run", "retry", run["id"], says=("Running (RUNNING)",))
    _move(dep.url, run["id"], StateType.FAILED, "exit 1")
    store = open_store(dep.url)
    try:
        failed = store.get_run(run["id"])
    finally:
        store.close()
    assert failed is not None and failed.retries == 0
    first_key = idempotency_key(failed.model_copy(update={"submission_attempts": 1}))  # as the dispatcher admits

    before = _now()
    retried = dep.json("flow-run", "retry", run["id"])
    assert (retried["state"], retried["state_name"]) == ("SCHEDULED", "AwaitingRetry")
    assert retried["id"] == run["id"] and retried["parameters"]["n"] == 5
    assert retried["infrastructure_id"] is None and retried["submission_attempts"] == 0
    assert _at(retried) >= before - timedelta(seconds=1)
    assert retried["state_history"][-1]["applied"] is True
    assert retried["state_history"][-1]["message"] == "retry requested"
    again = FlowRun.model_validate(retried).model_copy(update={"submission_attempts": 1})
    assert idempotency_key(again) != first_key  # the earlier launch is never found as this attempt's
    assert {r["id"] for r in dep.json("flow-run", "ls", "--state", "AwaitingRetry")} == {run["id"]}
    # The retried run is admitted again like any other.
    _admit(dep.url, run["id"], running=True)
    _move(dep.url, run["id"], StateType.COMPLETED)
    assert dep.json("flow-run", "inspect", run["id"])["state"] == "COMPLETED"
    dep.fails("flow-run", "retry", "no-such-run", says=("does not exist",))


def test_flow_run_delete_refuses_an_active_run(dep: Cli) -> None:
    scheduled = dep.json("deployment", "run", "etl")
    active = dep.json("deployment", "run", "etl")
    _admit(dep.url, active["id"], running=True)
    before = dep.snapshot()
    dep.fails("flow-run", "delete", active["id"], says=("Running (RUNNING)", "cancel it"))
    assert dep.snapshot() == before
    assert "Deleted flow run" in dep.ok("flow-run", "delete", scheduled["id"])
    dep.fails("flow-run", "delete", scheduled["id"], says=("does not exist",))
    _move(dep.url, active["id"], StateType.COMPLETED)
    dep.ok("flow-run", "delete", active["id"])
    assert dep.json("flow-run", "ls") == []


# work-pool -------------------------------------------------------------------------------------------------
def test_work_pool_ls_verbose_and_preview_h(dep: Cli) -> None:
    plain, verbose = dep.ok("work-pool", "ls"), dep.ok("work-pool", "ls", "-v")
    assert "Variables" not in plain and "Variables" in verbose and "command" in verbose
    assert "Variables" in dep.ok("work-pool", "ls", "--verbose")
    assert dep.json("work-pool", "preview", "p", "-h", "2")["hours"] == 2
    assert dep.json("work-queue", "preview", "default", "--pool", "p", "-h", "3")["hours"] == 3
    assert "--hours" in dep.ok("work-pool", "preview", "--help")
    dep.fails("work-pool", "preview", "p", "-h", "0", says=("--hours",))
