"""The `process` provider with real detached processes: launch, idempotency, status, cancel, survival."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import InvalidInput, NotFound, ProviderError
from dispatcher.providers.base import JobState, JobStatus, Provider, Providers
from dispatcher.providers.process import STATE_DIR_ENV, ProcessProvider
from dispatcher.signing import SIGNATURE_HEADER, verify

PY = sys.executable
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "process.json"


def _wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _wait_state(provider: ProcessProvider, infra_id: str, *states: JobState, timeout: float = 15.0) -> JobStatus:
    seen: list[JobStatus] = []

    def reached() -> bool:
        seen.append(provider.status(infra_id))
        return seen[-1].state in states

    try:
        _wait_for(reached, timeout, f"{infra_id} to reach {states}")
    except AssertionError:
        raise AssertionError(f"{infra_id} never reached {states}; last status {seen[-1]}") from None
    return seen[-1]


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[ProcessProvider]:
    state = tmp_path / "state"
    p = ProcessProvider(state, launch_wait_seconds=1.0, kill_grace_seconds=0.3)
    yield p
    # Stop whatever a failed test left running: only the process groups these tests started, by their pgid.
    for pid_file in state.glob("*/pid"):
        pgid = int(pid_file.read_text())
        if p.status(pid_file.parent.name).state is JobState.RUNNING:
            os.killpg(pgid, signal.SIGKILL)


def test_it_is_the_registered_process_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "from-env"))
    loaded = Providers().get("process")
    assert isinstance(loaded, ProcessProvider)
    assert loaded.state_dir == tmp_path / "from-env"
    typed: Provider = loaded  # the protocol, checked by mypy
    assert typed.status("nothing-here").state is JobState.MISSING


def test_default_template_renders_to_a_valid_job(provider: ProcessProvider) -> None:
    template = json.loads(TEMPLATE.read_text())
    # What the template renders with only the defaults and a command: the unset placeholders are removed.
    job = {
        "command": "python flow.py",
        "stream_output": template["variables"]["properties"]["stream_output"]["default"],
    }
    assert provider.validate(job)["command"] == ["python", "flow.py"]
    assert set(template["job_configuration"]) <= set(provider.validate(job))


def test_runs_with_job_env_and_working_dir(
    provider: ProcessProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHPOOL_TEST_INHERITED", "from-dispatcher")
    monkeypatch.setenv("PUSHPOOL_TEST_DROPPED", "should-vanish")
    monkeypatch.setenv("TZ", "UTC")
    work = tmp_path / "work"
    work.mkdir()
    command = _py(
        """
        import os, pathlib
        pathlib.Path("out.txt").write_text("\\n".join([
            os.environ["GREETING"],
            os.environ.get("PUSHPOOL_TEST_INHERITED", "not inherited"),
            os.environ.get("PUSHPOOL_TEST_DROPPED", "unset"),
            os.environ.get("TZ", "no TZ"),
            os.getcwd(),
        ]))
        """
    )
    job = provider.validate(
        {
            "command": command,
            "env": {"GREETING": "hello", "PUSHPOOL_TEST_DROPPED": None, "TZ": None},
            "working_dir": str(work),
        }
    )
    infra_id = provider.submit(job, idempotency_key="run-env")
    assert infra_id == "run-env"
    status = _wait_state(provider, infra_id, JobState.COMPLETED, JobState.FAILED, JobState.MISSING)
    assert status == JobStatus(JobState.COMPLETED, exit_code=0)
    # Only the job's env and a few basics reach it (a null unsets a basic too), never the dispatcher's others.
    assert (work / "out.txt").read_text().splitlines() == ["hello", "not inherited", "unset", "no TZ", str(work)]


def test_default_working_dir_is_a_work_directory_inside_the_run_directory(provider: ProcessProvider) -> None:
    infra_id = provider.submit({"command": _py("open('here.txt', 'w').write('x')")}, idempotency_key="run-cwd")
    _wait_state(provider, infra_id, JobState.COMPLETED)
    assert (provider.run_dir(infra_id) / "work" / "here.txt").read_text() == "x"


def test_a_job_writing_supervisor_file_names_in_its_cwd_fools_nobody(provider: ProcessProvider) -> None:
    # A job that writes `pid` and `exit` where it runs, then keeps running: before, these overwrote the
    # supervisor's files and the reconciler saw a dead pid (MISSING -> CRASHED) while the job ran on.
    code = "open('pid', 'w').write('1\\n'); open('exit', 'w').write('0'); import time; time.sleep(30)"
    infra_id = provider.submit({"command": _py(code)}, idempotency_key="run-pid")
    _wait_for(lambda: (provider.run_dir(infra_id) / "work" / "exit").exists(), what="the job's own files")
    time.sleep(0.2)
    assert provider.status(infra_id).state is JobState.RUNNING
    supervisor = int((provider.run_dir(infra_id) / "pid").read_text())
    assert supervisor > 1
    provider.cancel(infra_id)
    assert _wait_state(provider, infra_id, JobState.CANCELLED).state is JobState.CANCELLED


def test_same_key_launches_once(provider: ProcessProvider, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    job = provider.validate({"command": _py(f"open({str(ledger)!r}, 'a').write('ran\\n')")})
    first = provider.submit(job, idempotency_key="run-once")
    second = provider.submit(job, idempotency_key="run-once")
    assert first == second
    _wait_state(provider, first, JobState.COMPLETED)
    # Even after the job ended, the key still names that one launch.
    assert provider.submit(job, idempotency_key="run-once") == first
    other = provider.submit(job, idempotency_key="run-other")
    _wait_state(provider, other, JobState.COMPLETED)
    assert ledger.read_text().splitlines() == ["ran", "ran"]  # one per key


def test_concurrent_submits_of_one_key_launch_once(provider: ProcessProvider, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    job = provider.validate({"command": _py(f"open({str(ledger)!r}, 'a').write('ran\\n')")})
    # Separate provider objects, as separate dispatcher processes would have: only the filesystem is shared.
    providers = [ProcessProvider(provider.state_dir) for _ in range(6)]
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda p=p: ids.append(p.submit(job, idempotency_key="run-race"))) for p in providers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert ids == ["run-race"] * 6
    _wait_state(provider, "run-race", JobState.COMPLETED)
    time.sleep(0.2)  # room for a second copy, were there one, to write its line
    assert ledger.read_text().splitlines() == ["ran"]


def test_job_survives_the_process_that_launched_it(provider: ProcessProvider, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    job = {"command": _py(f"import time; time.sleep(0.6); open({str(done)!r}, 'w').write('finished')")}
    launcher = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from dispatcher.providers.process import ProcessProvider
        launcher = ProcessProvider(Path({str(provider.state_dir)!r}))
        print(launcher.submit(json.loads(sys.argv[1]), idempotency_key="run-orphan"))
        """
    )
    result = subprocess.run([PY, "-c", launcher, json.dumps(job)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    infra_id = result.stdout.strip()
    assert infra_id == "run-orphan"
    # The launcher is gone; a provider in another process (this one) still sees the job and its end.
    assert not done.exists()
    assert provider.status(infra_id).state is JobState.RUNNING
    assert _wait_state(provider, infra_id, JobState.COMPLETED, JobState.MISSING).state is JobState.COMPLETED
    assert done.read_text() == "finished"


def test_running_then_failed_with_exit_code(provider: ProcessProvider) -> None:
    infra_id = provider.submit(
        {"command": _py("import time; time.sleep(0.3); raise SystemExit(3)")}, idempotency_key="r3"
    )
    assert provider.status(infra_id).state is JobState.RUNNING
    status = _wait_state(provider, infra_id, JobState.FAILED, JobState.COMPLETED, JobState.MISSING)
    assert status == JobStatus(JobState.FAILED, exit_code=3, message="exit code 3")


def test_command_not_found_fails_with_127(provider: ProcessProvider) -> None:
    infra_id = provider.submit({"command": ["no-such-command-pushpool-xyz"]}, idempotency_key="r127")
    status = _wait_state(provider, infra_id, JobState.FAILED, JobState.COMPLETED, JobState.MISSING)
    assert status == JobStatus(
        JobState.FAILED, exit_code=127, message="command not found: no-such-command-pushpool-xyz"
    )


def test_command_killed_by_a_signal_is_crashed(provider: ProcessProvider) -> None:
    infra_id = provider.submit(
        {"command": _py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")}, idempotency_key="rkill"
    )
    status = _wait_state(provider, infra_id, JobState.CRASHED, JobState.FAILED, JobState.COMPLETED)
    assert status.state is JobState.CRASHED
    assert status.exit_code == 128 + signal.SIGKILL and status.message == "killed by SIGKILL"


def test_cancel_stops_the_whole_process_group(provider: ProcessProvider) -> None:
    # A shell whose child is `sleep`: stopping only the supervisor would leave the sleep behind.
    infra_id = provider.submit({"command": ["sh", "-c", "sleep 30; echo never"]}, idempotency_key="rcancel")
    pgid = int((provider.run_dir(infra_id) / "pid").read_text())
    _wait_state(provider, infra_id, JobState.RUNNING)
    provider.cancel(infra_id)
    status = _wait_state(provider, infra_id, JobState.CANCELLED, JobState.FAILED, JobState.MISSING, timeout=10)
    assert status.state is JobState.CANCELLED
    _wait_for(lambda: (provider.status(infra_id), not _group_exists(pgid))[1], 10, "the process group to be gone")
    assert "never" not in provider.logs(infra_id)
    provider.cancel(infra_id)  # a repeat once it is over is harmless
    assert provider.status(infra_id).state is JobState.CANCELLED


def test_second_cancel_after_the_grace_kills(provider: ProcessProvider, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = _py(
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        time.sleep(30)
        """
    )
    infra_id = provider.submit({"command": stubborn}, idempotency_key="rstubborn")
    _wait_for(ready.exists, what="the command to ignore SIGTERM")
    provider.cancel(infra_id)
    time.sleep(0.2)
    assert provider.status(infra_id).state is JobState.RUNNING  # it ignores SIGTERM; the cancel is pending
    time.sleep(0.2)  # past kill_grace_seconds=0.3
    provider.cancel(infra_id)
    status = _wait_state(provider, infra_id, JobState.CANCELLED, JobState.MISSING, timeout=10)
    assert status.state is JobState.CANCELLED


def test_killed_process_group_is_missing(provider: ProcessProvider) -> None:
    infra_id = provider.submit({"command": ["sleep", "30"]}, idempotency_key="rgone")
    pid = int((provider.run_dir(infra_id) / "pid").read_text())
    _wait_state(provider, infra_id, JobState.RUNNING)
    os.killpg(pid, signal.SIGKILL)
    status = _wait_state(provider, infra_id, JobState.MISSING, JobState.CRASHED, JobState.FAILED)
    assert status == JobStatus(JobState.MISSING, message=f"process {pid} is gone without an exit code")


def test_missing_working_dir_is_a_permanent_error(provider: ProcessProvider, tmp_path: Path) -> None:
    job = {"command": ["true"], "working_dir": str(tmp_path / "nowhere")}
    with pytest.raises(ProviderError, match="working_dir") as info:
        provider.submit(job, idempotency_key="rnowhere")
    assert info.value.transient is False
    # Nothing started and the key is free again: a corrected job with the same key launches.
    assert provider.status("rnowhere").state is JobState.MISSING
    (tmp_path / "nowhere").mkdir()
    assert provider.submit(job, idempotency_key="rnowhere") == "rnowhere"
    assert _wait_state(provider, "rnowhere", JobState.COMPLETED, JobState.FAILED).state is JobState.COMPLETED


def test_a_state_directory_that_cannot_be_written_is_a_transient_error(tmp_path: Path) -> None:
    # A write the filesystem refuses (here: RLIMIT_FSIZE 0, EFBIG, as a full disk or quota refuses with
    # ENOSPC/EDQUOT) fails the launch transiently, leaves nothing behind, and the retry launches.
    provider = ProcessProvider(tmp_path / "state")
    provider.state_dir.mkdir()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing pytest
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, limit[1]))
        with pytest.raises(ProviderError, match="cannot start the process") as info:
            provider.submit({"command": ["true"]}, idempotency_key="rfull")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert info.value.transient is True
    assert not provider.run_dir("rfull").exists() and provider.find("rfull") is None
    assert provider.submit({"command": ["true"]}, idempotency_key="rfull") == "rfull"
    assert _wait_state(provider, "rfull", JobState.COMPLETED).state is JobState.COMPLETED


def test_a_state_directory_that_cannot_be_created_is_a_transient_error(tmp_path: Path) -> None:
    blocker = tmp_path / "mount"
    blocker.write_text("not a directory")  # e.g. a volume not mounted yet
    provider = ProcessProvider(blocker / "state")
    with pytest.raises(ProviderError, match="cannot create the process state directory") as info:
        provider.submit({"command": ["true"]}, idempotency_key="rblocked")
    assert info.value.transient is True


def test_invalid_job_at_submit_is_a_permanent_error(provider: ProcessProvider) -> None:
    with pytest.raises(ProviderError, match="command: must not be empty") as info:
        provider.submit({"command": ""}, idempotency_key="rinvalid")
    assert info.value.transient is False
    assert not provider.run_dir("rinvalid").exists()


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"command": ""}, "command: must not be empty."),
        ({"command": "   "}, "command: must not be empty."),
        ({"command": []}, "command: must not be empty."),
        ({}, "command: field required."),
        ({"command": 5}, "command: must be a string or a list of strings."),
        ({"command": ["ok", 5]}, "command[1]: input should be a valid string."),
        ({"command": "echo 'unclosed"}, "command: cannot be split like a shell command line"),
        ({"command": "x", "image": "python:3"}, "image: is not a setting of a process job; allowed: command, env"),
        ({"command": "x", "env": {"A": 1}}, "env.A: input should be a valid string."),
        ({"command": "x", "labels": {"team": None}}, "labels.team: input should be a valid string."),
        ({"command": "x", "stream_output": "maybe"}, "stream_output: input should be a valid boolean"),
        ({"command": "x", "working_dir": 3}, "working_dir: input should be a valid string."),
    ],
)
def test_validate_names_the_field(provider: ProcessProvider, job: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        provider.validate(job)
    assert str(info.value).startswith(message)


def test_validate_refuses_a_non_object(provider: ProcessProvider) -> None:
    with pytest.raises(InvalidInput, match="JSON object"):
        provider.validate(["echo"])  # type: ignore[arg-type]


def test_validate_normalises(provider: ProcessProvider) -> None:
    job = provider.validate({"command": "python -c 'print(1)' \"two words\" $HOME", "working_dir": ""})
    assert job == {
        "command": ["python", "-c", "print(1)", "two words", "$HOME"],
        "env": {},
        "labels": {},
        "name": None,
        "working_dir": None,
        "stream_output": True,
    }


def test_string_command_is_split_like_a_shell_but_not_run_by_one(provider: ProcessProvider, tmp_path: Path) -> None:
    argv_file = tmp_path / "argv.json"
    script = tmp_path / "show_argv.py"
    script.write_text(f"import json, sys\nopen({str(argv_file)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    command = f"{PY} {script} 'two words' \"double quoted\" plain $HOME '*'"
    infra_id = provider.submit({"command": command}, idempotency_key="rsplit")
    _wait_state(provider, infra_id, JobState.COMPLETED)
    # Quotes group words; $HOME and * stay literal because no shell ever sees them.
    assert json.loads(argv_file.read_text()) == ["two words", "double quoted", "plain", "$HOME", "*"]


def test_logs_hold_the_command_output(provider: ProcessProvider) -> None:
    infra_id = provider.submit(
        {"command": _py("import sys; print('to stdout'); print('to stderr', file=sys.stderr)")}, idempotency_key="rlog"
    )
    _wait_state(provider, infra_id, JobState.COMPLETED)
    logs = provider.logs(infra_id)
    assert "to stdout" in logs and "to stderr" in logs
    with pytest.raises(NotFound):
        provider.logs("no-such-run")


def test_unknown_and_unsafe_ids_are_missing(provider: ProcessProvider, tmp_path: Path) -> None:
    (provider.state_dir / "x").mkdir(parents=True)
    assert provider.status("never-submitted").state is JobState.MISSING
    for unsafe in ("../state", "..", "a/b", "/etc", ""):
        assert provider.status(unsafe).state is JobState.MISSING
    provider.cancel("never-submitted")  # nothing to stop: no error


def test_unsafe_keys_get_distinct_safe_ids(provider: ProcessProvider) -> None:
    first = provider.submit({"command": ["true"]}, idempotency_key="flow/run:1")
    second = provider.submit({"command": ["true"]}, idempotency_key="flow_run_1")
    third = provider.submit({"command": ["true"]}, idempotency_key="flow run 1")
    assert len({first, second, third}) == 3
    assert all(Path(i).name == i and provider.run_dir(i).parent == provider.state_dir for i in (first, second, third))
    assert provider.submit({"command": ["true"]}, idempotency_key="flow/run:1") == first


def test_an_interrupted_launch_is_taken_over(tmp_path: Path) -> None:
    provider = ProcessProvider(tmp_path / "state", launch_wait_seconds=0.3)
    # A submit that died between creating the run directory and starting the process leaves this behind.
    (provider.state_dir / "rstale").mkdir(parents=True)
    stale = provider.state_dir / "rstale"
    os.utime(stale, (time.time() - 60, time.time() - 60))
    assert provider.status("rstale") == JobStatus(
        JobState.MISSING, message="the launch was interrupted before the process started"
    )
    marker = tmp_path / "ran"
    started = time.monotonic()
    assert provider.submit({"command": _py(f"open({str(marker)!r}, 'w')")}, idempotency_key="rstale") == "rstale"
    assert time.monotonic() - started >= provider.launch_wait_seconds  # it waited for the first submitter
    _wait_state(provider, "rstale", JobState.COMPLETED)
    assert marker.exists()
    assert [p.name for p in provider.state_dir.iterdir() if p.name.startswith("rstale.interrupted-")]


def test_a_slow_launch_still_under_way_is_waited_for_not_taken_over(tmp_path: Path) -> None:
    """A submit the dispatcher gave up on goes on in its thread: past `launch_wait_seconds` its launch is still
    its own. The test plays that submit: it created the run directory and holds its lock, as a live one does."""
    import fcntl
    import threading

    provider = ProcessProvider(tmp_path / "state", launch_wait_seconds=0.2)
    run_dir = provider.state_dir / "rslow"
    run_dir.mkdir(parents=True)
    os.utime(run_dir, (time.time() - 60, time.time() - 60))  # by its age alone, an interrupted launch
    held = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    marker = tmp_path / "second-launch"
    results: list[str] = []
    second = threading.Thread(
        target=lambda: results.append(
            provider.submit({"command": _py(f"open({str(marker)!r}, 'w')")}, idempotency_key="rslow")
        )
    )
    try:
        assert provider.status("rslow").state is JobState.PENDING
        assert provider.find("rslow") == "rslow", "a launch under way counts as launched"
        second.start()
        second.join(1.0)  # five times launch_wait_seconds
        assert second.is_alive(), "the second submit took over a launch that was still under way"
        # The slow submit's process ends and it lets go: the second submit answers with that launch.
        (run_dir / "exit").write_text(json.dumps({"exit_code": 0}))
    finally:
        os.close(held)
    second.join(10)
    assert results == ["rslow"]
    assert not marker.exists() and not list(provider.state_dir.glob("rslow.interrupted-*"))


def test_find_names_the_run_directory_of_a_launch(provider: ProcessProvider) -> None:
    assert provider.find("run-find-1") is None
    infra_id = provider.submit({"command": ["true"]}, idempotency_key="run-find-1")
    assert provider.find("run-find-1") == infra_id
    _wait_state(provider, infra_id, JobState.COMPLETED)
    assert provider.find("run-find-1") == infra_id  # ended, but launched
    assert provider.find("flow/run:1") is None
    assert provider.find("../..") is None


def test_find_says_an_interrupted_launch_launched_nothing(tmp_path: Path) -> None:
    provider = ProcessProvider(tmp_path / "state", launch_wait_seconds=0.3)
    stale = provider.state_dir / "rhalf-1"
    stale.mkdir(parents=True)
    assert provider.find("rhalf-1") == "rhalf-1"  # young: a launch may be under way
    os.utime(stale, (time.time() - 60, time.time() - 60))
    assert provider.find("rhalf-1") is None


def test_job_reports_through_its_callback(provider: ProcessProvider) -> None:
    received: list[tuple[dict[str, Any], bool]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                verify("tok", raw, self.headers.get(SIGNATURE_HEADER), time.time())
                ok = True
            except Exception:
                ok = False
            received.append((json.loads(raw), ok))
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        env = {
            "PUSHPOOL_CALLBACK_URL": f"http://127.0.0.1:{httpd.server_address[1]}/callbacks/runs/r-9",
            "PUSHPOOL_CALLBACK_TOKEN": "tok",
            # Loopback must not go through a proxy the dispatcher's environment may name.
            "http_proxy": None,
            "HTTP_PROXY": None,
        }
        infra_id = provider.submit({"command": ["sh", "-c", "exit 2"], "env": env}, idempotency_key="r-9")
        _wait_state(provider, infra_id, JobState.FAILED)
        _wait_for(lambda: len(received) == 2, 10, "the final callback")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert received == [
        ({"state": "RUNNING"}, True),
        ({"state": "FAILED", "exit_code": 2, "message": "exit code 2"}, True),
    ]
    # The token is a secret: it is kept out of the run directory's job record.
    assert "tok" not in (provider.run_dir(infra_id) / "job.json").read_text()


def test_finished_children_are_reaped_on_the_next_call(tmp_path: Path) -> None:
    provider = ProcessProvider(state_dir=tmp_path / "procs")
    ids = [provider.submit(provider.validate({"command": ["true"]}), idempotency_key=f"reap-{i}") for i in range(3)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any((tmp_path / "procs" / i / "exit").exists() is False for i in ids):
        time.sleep(0.05)
    time.sleep(0.2)
    provider.status(ids[0])
    assert provider._children == {}
    for pid in [int((tmp_path / "procs" / i / "pid").read_text()) for i in ids]:
        assert not Path(f"/proc/{pid}").exists()  # reaped: not even a zombie remains
