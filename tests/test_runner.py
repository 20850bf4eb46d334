"""`pushpool-run` and callback signing, against a real HTTP server on 127.0.0.1 and real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import PushpoolError
from dispatcher.runner import Reporter
from dispatcher.signing import SIGNATURE_HEADER, TOLERANCE_SECONDS, SignatureError, sign, verify

TOKEN = "run-token-123"
PY = sys.executable

# -- signing ---------------------------------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    body = b'{"state":"RUNNING"}'
    header = sign(TOKEN, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    digest = verify(TOKEN, body, header, now=1_700_000_000.5)
    assert header.endswith(digest) and len(digest) == 64


def test_signature_covers_the_timestamp() -> None:
    body = b"{}"
    # Same body, another second: another digest, so a captured request cannot be re-dated.
    assert sign(TOKEN, body, 100).split("v1=")[1] != sign(TOKEN, body, 101).split("v1=")[1]
    forged = "t=101," + sign(TOKEN, body, 100).split(",")[1]
    with pytest.raises(SignatureError, match="does not match"):
        verify(TOKEN, body, forged, now=101)


@pytest.mark.parametrize(
    ("token", "body", "header", "now", "match"),
    [
        (TOKEN, b'{"state":"FAILED"}', sign(TOKEN, b'{"state":"COMPLETED"}', 1000), 1000, "does not match"),
        ("other-token", b"{}", sign(TOKEN, b"{}", 1000), 1000, "does not match"),
        (TOKEN, b"{}", None, 1000, "missing"),
        (TOKEN, b"{}", "", 1000, "missing"),
        (TOKEN, b"{}", "garbage", 1000, "malformed"),
        (TOKEN, b"{}", "t=1000", 1000, "malformed"),
        (TOKEN, b"{}", "v1=" + "0" * 64, 1000, "malformed"),
        (TOKEN, b"{}", "t=abc,v1=" + "0" * 64, 1000, "timestamp"),
        (TOKEN, b"{}", "t=1000,v1=xyz", 1000, "digest"),
        (TOKEN, b"{}", sign(TOKEN, b"{}", 1000), 1000 + TOLERANCE_SECONDS + 1, "300 s"),
        (TOKEN, b"{}", sign(TOKEN, b"{}", 1000 + TOLERANCE_SECONDS + 1), 1000, "300 s"),
    ],
    ids=[
        "tampered-body",
        "wrong-token",
        "missing",
        "empty",
        "no-equals",
        "no-v1",
        "no-t",
        "bad-t",
        "bad-hex",
        "stale-301s",
        "future-301s",
    ],
)
def test_verify_refuses(token: str, body: bytes, header: str | None, now: float, match: str) -> None:
    with pytest.raises(SignatureError, match=match) as info:
        verify(token, body, header, now)
    assert isinstance(info.value, PushpoolError) and info.value.http_status == 401


def test_verify_accepts_edge_of_window_and_any_matching_v1() -> None:
    body = b"{}"
    good = sign(TOKEN, body, 1000)
    assert verify(TOKEN, body, good, now=1000 + TOLERANCE_SECONDS)
    assert verify(TOKEN, body, good, now=1000 - TOLERANCE_SECONDS)
    # A sender rotating tokens signs with both; the verifier with either token accepts.
    rotated = f"{good},v1={sign('old-token', body, 1000).split('v1=')[1]}"
    assert verify("old-token", body, rotated, now=1000) == sign("old-token", body, 1000).split("v1=")[1]


# -- a callback server that records what it receives -----------------------------------------------------------


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    signature_ok: bool
    content_type: str | None
    at: float
    status: int


@dataclass
class CallbackServer:
    url: str
    token: str = TOKEN
    answers: list[int] = field(default_factory=list)
    """Statuses to answer next, in order; 200 once used up. A bad signature is always answered 401."""
    received: list[Received] = field(default_factory=list)

    def states(self) -> list[str]:
        return [r.body.get("state", "?") for r in self.received]


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    recorder = CallbackServer(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                verify(recorder.token, raw, self.headers.get(SIGNATURE_HEADER), time.time())
                ok = True
            except SignatureError:
                ok = False
            with lock:
                status = (recorder.answers.pop(0) if recorder.answers else 200) if ok else 401
                recorder.received.append(
                    Received(self.path, json.loads(raw), ok, self.headers.get("Content-Type"), time.time(), status)
                )
            payload = b'{"detail": "scripted"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{httpd.server_address[1]}/callbacks/runs/r-1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield recorder
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _env(url: str | None, token: str = TOKEN, retry_seconds: float = 5) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("PUSHPOOL_")}
    if url is not None:
        env.update(
            PUSHPOOL_CALLBACK_URL=url,
            PUSHPOOL_CALLBACK_TOKEN=token,
            PUSHPOOL_CALLBACK_RETRY_SECONDS=str(retry_seconds),
        )
    return env


def _run(
    cmd: list[str], env: dict[str, str], exit_file: Path | None = None, *, via: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    runner = via or [PY, "-m", "dispatcher.runner"]
    options = ["--exit-file", str(exit_file)] if exit_file else []
    return subprocess.run([*runner, *options, "--", *cmd], env=env, capture_output=True, text=True, timeout=60)


def _exit_record(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- the runner ------------------------------------------------------------------------------------------------


def test_reports_running_then_completed(server: CallbackServer, tmp_path: Path) -> None:
    started = tmp_path / "started"
    cmd = [PY, "-c", f"import time, pathlib; pathlib.Path({str(started)!r}).write_text(repr(time.time())); print('hi')"]
    result = _run(cmd, _env(server.url), tmp_path / "exit")
    assert result.returncode == 0, result.stderr
    assert "hi" in result.stdout  # CMD inherits the runner's stdout
    assert server.states() == ["RUNNING", "COMPLETED"]
    assert all(r.signature_ok and r.path == "/callbacks/runs/r-1" for r in server.received)
    assert all(r.content_type == "application/json" for r in server.received)
    assert server.received[1].body == {"state": "COMPLETED", "exit_code": 0}
    # RUNNING is reported before CMD starts, COMPLETED after it ended.
    assert server.received[0].at <= float(started.read_text()) <= server.received[1].at
    assert _exit_record(tmp_path / "exit")["exit_code"] == 0


def test_failed_command_reports_its_exit_code_and_exits_with_it(server: CallbackServer, tmp_path: Path) -> None:
    result = _run([PY, "-c", "raise SystemExit(3)"], _env(server.url), tmp_path / "exit")
    assert result.returncode == 3
    assert server.states() == ["RUNNING", "FAILED"]
    assert server.received[1].body == {"state": "FAILED", "exit_code": 3, "message": "exit code 3"}
    assert _exit_record(tmp_path / "exit") | {"finished_at": 0} == {
        "exit_code": 3,
        "message": "exit code 3",
        "finished_at": 0,
    }


def test_5xx_is_retried_and_never_changes_the_exit_code(server: CallbackServer, tmp_path: Path) -> None:
    server.answers = [503, 503]
    result = _run([PY, "-c", "raise SystemExit(5)"], _env(server.url), tmp_path / "exit")
    assert result.returncode == 5
    assert server.states() == ["RUNNING", "RUNNING", "RUNNING", "FAILED"]
    assert [r.status for r in server.received] == [503, 503, 200, 200]
    # Backoff: the retries are spread out, not hammered.
    assert server.received[2].at - server.received[0].at >= 0.5


def test_final_report_retried_after_5xx(server: CallbackServer, tmp_path: Path) -> None:
    server.answers = [200, 500]
    result = _run(["true"], _env(server.url))
    assert result.returncode == 0
    assert server.states() == ["RUNNING", "COMPLETED", "COMPLETED"]


def test_server_down_still_runs_the_command_and_keeps_its_code(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = _run(
        [PY, "-c", "raise SystemExit(4)"],
        _env(f"http://127.0.0.1:{port}/callbacks/runs/r-1", retry_seconds=0.6),
        tmp_path / "exit",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 4
    assert _exit_record(tmp_path / "exit")["exit_code"] == 4
    # Each report retried for its budget (several attempts), then the runner gave up and went on.
    assert re.search(r"callback RUNNING not delivered after [2-9] attempt", result.stderr), result.stderr
    assert re.search(r"callback FAILED not delivered after [2-9] attempt", result.stderr), result.stderr
    assert 1.2 <= elapsed < 10


def test_4xx_is_not_retried(server: CallbackServer, tmp_path: Path) -> None:
    # The wrong token makes the server refuse every report with 401.
    result = _run(["true"], _env(server.url, token="not-the-run-token"))
    assert result.returncode == 0
    assert server.states() == ["RUNNING", "COMPLETED"]
    assert [r.status for r in server.received] == [401, 401]
    assert result.stderr.count("refused: HTTP 401") == 2


def test_conflict_for_a_finished_run_is_accepted_quietly(server: CallbackServer) -> None:
    server.answers = [200, 409]
    result = _run(["false"], _env(server.url))
    assert result.returncode == 1
    assert server.states() == ["RUNNING", "FAILED"]
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_command_not_found_is_127(server: CallbackServer, tmp_path: Path) -> None:
    result = _run(["no-such-command-pushpool-xyz", "arg"], _env(server.url), tmp_path / "exit")
    assert result.returncode == 127
    assert server.received[-1].body == {
        "state": "FAILED",
        "exit_code": 127,
        "message": "command not found: no-such-command-pushpool-xyz",
    }
    assert _exit_record(tmp_path / "exit")["message"] == "command not found: no-such-command-pushpool-xyz"
    assert "command not found" in result.stderr


def test_without_callback_env_it_only_runs_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = _run([PY, "-c", f"open({str(marker)!r}, 'w').close(); raise SystemExit(7)"], _env(None), tmp_path / "exit")
    assert result.returncode == 7
    assert marker.exists()
    assert _exit_record(tmp_path / "exit")["exit_code"] == 7
    assert result.stderr == ""


def test_installed_console_script(server: CallbackServer, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pushpool-run"
    assert script.exists(), "pushpool-run is not installed next to the interpreter; pip install -e ."
    result = _run(["sh", "-c", "exit 0"], _env(server.url), tmp_path / "exit", via=[str(script)])
    assert result.returncode == 0, result.stderr
    assert server.states() == ["RUNNING", "COMPLETED"]
    assert all(r.signature_ok for r in server.received)


def test_sigterm_is_forwarded_and_no_final_report_is_sent(server: CallbackServer, tmp_path: Path) -> None:
    started = tmp_path / "started"
    cmd = [PY, "-c", f"import time; open({str(started)!r}, 'w').close(); time.sleep(30)"]
    runner = subprocess.Popen(
        [PY, "-m", "dispatcher.runner", "--exit-file", str(tmp_path / "exit"), "--", *cmd],
        env=_env(server.url),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        runner.send_signal(signal.SIGTERM)  # to the runner only: it must pass it on to CMD
        code = runner.wait(timeout=10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert code == 128 + signal.SIGTERM
    record = _exit_record(tmp_path / "exit")
    assert record["exit_code"] == -signal.SIGTERM and "SIGTERM" in record["message"]
    # A FAILED report would overtake the dispatcher's CANCELLED; the stop's author decides the state.
    assert server.states() == ["RUNNING"]
    assert runner.stderr is not None and "leaving the final state" in runner.stderr.read()


def test_signal_death_exits_like_a_shell(tmp_path: Path) -> None:
    result = _run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], _env(None), tmp_path / "exit")
    assert result.returncode == 128 + signal.SIGKILL
    assert _exit_record(tmp_path / "exit")["exit_code"] == -signal.SIGKILL


def test_usage_error_without_a_command() -> None:
    result = subprocess.run([PY, "-m", "dispatcher.runner", "--"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "no command given" in result.stderr


def test_reporter_from_env() -> None:
    assert Reporter.from_env({}) is None
    assert Reporter.from_env({"PUSHPOOL_CALLBACK_URL": "http://x"}) is None  # a token is required too
    reporter = Reporter.from_env(
        {"PUSHPOOL_CALLBACK_URL": "http://x", "PUSHPOOL_CALLBACK_TOKEN": "t", "PUSHPOOL_CALLBACK_RETRY_SECONDS": "2.5"}
    )
    assert reporter is not None and reporter.budget_seconds == 2.5
    reporter = Reporter.from_env(
        {"PUSHPOOL_CALLBACK_URL": "http://x", "PUSHPOOL_CALLBACK_TOKEN": "t", "PUSHPOOL_CALLBACK_RETRY_SECONDS": "x"}
    )
    assert reporter is not None and reporter.budget_seconds == 30


def test_runner_stays_import_light() -> None:
    code = "import sys, dispatcher.runner; print(sorted(m for m in ('pydantic', 'typer', 'rich') if m in sys.modules))"
    result = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "[]"


def test_parameters_that_cannot_be_read_stop_the_command_and_fail_the_run(
    server: CallbackServer, tmp_path: Path
) -> None:
    # The recording server answers no GET (501): after the retry budget the command never starts.
    ran = tmp_path / "ran"
    env = _env(server.url, retry_seconds=0)
    env["PUSHPOOL_PARAMETERS_URL"] = server.url + "/parameters"
    result = _run([PY, "-c", f"open({str(ran)!r}, 'w')"], env, tmp_path / "exit")
    assert result.returncode == 1 and not ran.exists()
    assert f"could not read the run's parameters from {server.url}/parameters" in result.stderr
    assert server.states() == ["RUNNING", "FAILED"]
    assert "could not read the run's parameters" in server.received[1].body["message"]
