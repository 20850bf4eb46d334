"""`pushpool-run`: the tiny runner that reports a run's states around its command (SPEC §6).

    pushpool-run [--exit-file PATH] [--pid-file PATH] -- CMD ...

(`--pid-file` receives the runner's pid as soon as it starts.)

With `PUSHPOOL_CALLBACK_URL` and `PUSHPOOL_CALLBACK_TOKEN` set, it POSTs a signed `{"state": "RUNNING"}`,
runs CMD with the runner's own stdin/stdout/stderr, POSTs `COMPLETED` or `FAILED` with CMD's exit code,
and exits with CMD's code (a death by signal N gives 128+N, as a shell does). Without them it only runs
CMD. Images may use it as their entrypoint; the `process` provider starts every job under it. Parameters sent
by reference (`PUSHPOOL_PARAMETERS_URL`, when too large for the environment) are read with the run's token
first and given to CMD as `PUSHPOOL_PARAMETERS`, or, when larger than one environment variable may be
(`signing.PARAMETERS_ENV_MAX_BYTES`), as a file named by `PUSHPOOL_PARAMETERS_FILE` (0600, in a private temporary
directory removed once CMD ended). When they cannot be read, CMD does not run and the run FAILS.

The exit file, when asked for, is written before the final report, so a reconciler reading it learns the
outcome even when the callback cannot be delivered. It holds JSON: `{"exit_code": N, "message": ...}`,
where N is the raw return code (negative for a death by signal, so a reader can tell signals apart).

A failed callback never changes the exit code: reporting is retried with exponential backoff and jitter
(5xx, 408, 429, connection errors and timeouts) for up to `PUSHPOOL_CALLBACK_RETRY_SECONDS` (default 30)
for the final report and at most 5 s for RUNNING, so a dispatcher outage delays the command only
briefly. Other 4xx answers (a bad signature, a run that is already over) are final: one line on stderr.

SIGTERM and SIGINT are forwarded to CMD so that a cancel stops the command. After such a stop the final
report is not sent: whoever stopped the job decides its state (the dispatcher confirms a cancel as
CANCELLED; the reconciler finds a preempted job gone), where a FAILED report would overtake them.

Import-light on purpose (stdlib plus `dispatcher.signing`): it starts inside every job.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from dispatcher.signing import (
    PARAMETERS_ENV,
    PARAMETERS_ENV_MAX_BYTES,
    PARAMETERS_FILE_ENV,
    PARAMETERS_SIGNED_BODY,
    PARAMETERS_URL_ENV,
    SIGNATURE_HEADER,
    sign,
)

__all__ = ["Reporter", "main", "signal_name", "write_atomic"]

CALLBACK_URL_ENV = "PUSHPOOL_CALLBACK_URL"
CALLBACK_TOKEN_ENV = "PUSHPOOL_CALLBACK_TOKEN"
EXIT_NO_PARAMETERS = 1
RETRY_SECONDS_ENV = "PUSHPOOL_CALLBACK_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
RUNNING_RETRY_SECONDS = 5.0
"""Cap on retrying the RUNNING report: it holds up the command, and the final report matters more."""

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
REQUEST_TIMEOUT_SECONDS = 10.0

EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
EXIT_USAGE = 2

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Answers worth retrying: the server may be restarting, overloaded or throttling us.
_RETRYABLE_4XX = frozenset({408, 425, 429})


def _say(text: str) -> None:
    """One line on stderr, prefixed, so it stands out among CMD's own output in the same log."""
    print(f"pushpool-run: {text}", file=sys.stderr, flush=True)


def signal_name(signum: int) -> str:
    """`SIGTERM` for 15; the number itself when the platform has no name for it."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def write_atomic(path: str, text: str) -> None:
    """Write a file so a reader sees the old file or the whole new one, never a half-written one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Reporter:
    """Sends signed state reports for one run, retrying what a retry can fix."""

    def __init__(self, url: str, token: str, *, budget_seconds: float = DEFAULT_RETRY_SECONDS) -> None:
        self.url = url
        self.token = token
        self.budget_seconds = budget_seconds

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Reporter | None:
        """A reporter when both callback variables are set, else None (run without reporting)."""
        env = os.environ if environ is None else environ
        url, token = env.get(CALLBACK_URL_ENV, ""), env.get(CALLBACK_TOKEN_ENV, "")
        if not url or not token:
            return None
        raw = env.get(RETRY_SECONDS_ENV, "")
        budget = DEFAULT_RETRY_SECONDS
        if raw:
            try:
                budget = max(0.0, float(raw))
            except ValueError:
                _say(f"ignoring {RETRY_SECONDS_ENV}={raw!r}: not a number of seconds; using {budget:g}")
        return cls(url, token, budget_seconds=budget)

    def report(self, payload: dict[str, Any], *, budget_seconds: float | None = None) -> bool:
        """POST one report; True once the server accepted it (2xx), False when it refused or never answered."""
        body = json.dumps(payload, separators=(",", ":")).encode()

        def post() -> urllib.request.Request:
            # Signed afresh on every attempt: the signature's timestamp must be near the moment it is sent.
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: self._sign(body)}
            return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

        what = f"callback {payload.get('state', '?')}"
        return self._send(post, what, self.budget_seconds if budget_seconds is None else budget_seconds) is not None

    def fetch_parameters(self, url: str) -> bytes | None:
        """The run's parameters as JSON from `url` (PUSHPOOL_PARAMETERS_URL); None when refused or unreachable."""

        def get() -> urllib.request.Request:
            headers = {SIGNATURE_HEADER: self._sign(PARAMETERS_SIGNED_BODY)}
            return urllib.request.Request(url, headers=headers, method="GET")

        return self._send(get, "reading the parameters", self.budget_seconds)

    def _sign(self, body: bytes) -> str:
        return sign(self.token, body, int(time.time()))

    def _send(self, make: Callable[[], urllib.request.Request], what: str, budget: float) -> bytes | None:
        """The answer's body once a request succeeded (2xx); None when refused or not answered within `budget`."""
        deadline = time.monotonic() + budget
        backoff = FIRST_BACKOFF_SECONDS
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            outcome = self._once(make(), timeout=max(1.0, min(REQUEST_TIMEOUT_SECONDS, remaining)))
            if isinstance(outcome, bytes):
                return outcome
            text, retryable = outcome
            if not retryable:
                _say(f"{what} refused: {text}")
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _say(f"{what} not delivered after {attempts} attempt(s): {text}")
                return None
            # Jitter spreads the retries of many runs that lost the same dispatcher at the same moment.
            time.sleep(min(remaining, backoff * random.uniform(0.5, 1.0)))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    @staticmethod
    def _once(request: urllib.request.Request, *, timeout: float) -> bytes | tuple[str, bool]:
        """The answer's body on success, else (what went wrong, whether a retry may help)."""
        request.add_header("User-Agent", "pushpool-run")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body: bytes = response.read()
            return body
        except urllib.error.HTTPError as exc:
            try:
                detail = _short(exc.read())
            except OSError:  # the server closed the connection mid-answer; the status code says enough
                detail = ""
            text = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
            return text, exc.code >= 500 or exc.code in _RETRYABLE_4XX
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # URLError wraps refused connections and DNS failures; TimeoutError is an OSError.
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return f"{type(reason).__name__}: {reason}", True


def _short(raw: bytes, limit: int = 200) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Supervisor:
    """Runs CMD, forwarding stop signals to it, and remembers whether it was asked to stop."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None

    def install(self) -> None:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        child = self.child
        if child is not None:
            # send_signal() skips a child already reaped and ignores one that ended a moment ago.
            child.send_signal(signum)

    def run(self, command: Sequence[str]) -> tuple[int, str | None]:
        """CMD's raw return code (negative for a signal) and a message for anything but success."""
        if self.stop_signal is not None:
            # Stopped before CMD started (a cancel during the RUNNING report): do not start it at all.
            return -self.stop_signal, f"stopped by {signal_name(self.stop_signal)} before the command started"
        try:
            self.child = subprocess.Popen(list(command))
        except FileNotFoundError:
            return EXIT_NOT_FOUND, f"command not found: {command[0]}"
        except PermissionError:
            return EXIT_CANNOT_EXECUTE, f"permission denied: {command[0]}"
        except OSError as exc:
            return EXIT_CANNOT_EXECUTE, f"cannot execute {command[0]}: {exc.strerror or exc}"
        if self.stop_signal is not None:
            # The signal arrived while Popen ran, before `child` was set, so the handler could not forward it.
            self.child.send_signal(self.stop_signal)
        code = self.child.wait()  # PEP 475: retried after each signal handler runs
        if code == 0:
            return 0, None
        if code < 0:
            return code, f"killed by {signal_name(-code)} (exit code {128 - code})"
        return code, f"exit code {code}"


def _load_parameters(reporter: Reporter | None) -> tuple[str | None, str | None]:
    """Hand parameters sent by reference to the command: (a message if that failed, a directory to remove later).

    Parameters too large for the job's environment (ECS caps overrides at 8 KB) come as PUSHPOOL_PARAMETERS_URL
    and are read with the run's token. Up to PARAMETERS_ENV_MAX_BYTES the command gets them in
    PUSHPOOL_PARAMETERS; larger ones cannot be one variable (Linux: 128 KB), so they go, byte for byte as served,
    to a file only this user can read, named by PUSHPOOL_PARAMETERS_FILE. The command sees one of the two.
    """
    url = os.environ.get(PARAMETERS_URL_ENV)
    os.environ.pop(PARAMETERS_FILE_ENV, None)  # only ever the one written here
    if not url or PARAMETERS_ENV in os.environ:
        return None, None
    data = reporter.fetch_parameters(url) if reporter is not None else None
    if data is None:
        return f"could not read the run's parameters from {url}", None
    if len(data) <= PARAMETERS_ENV_MAX_BYTES:
        os.environ[PARAMETERS_ENV] = data.decode("utf-8", "replace")
        return None, None
    try:
        directory = tempfile.mkdtemp(prefix="pushpool-run-")  # 0700
        path = os.path.join(directory, "parameters.json")
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except OSError as exc:
        return f"could not write the run's parameters to a temporary file: {exc.strerror or exc}", None
    os.environ[PARAMETERS_FILE_ENV] = path
    return None, directory


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pushpool-run",
        description="Run a command and report its states to pushpool through the run's callback.",
        usage="pushpool-run [--exit-file PATH] [--pid-file PATH] -- CMD ...",
    )
    parser.add_argument("--exit-file", help="write CMD's exit code here (JSON) before the final report")
    parser.add_argument("--pid-file", help="write this runner's pid here when it starts")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    args = parser.parse_args(list(argv))
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given; put it after --, e.g. pushpool-run -- python flow.py")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pushpool-run`; returns the exit code (CMD's, or 2 for a usage error)."""
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse exits on --help and on errors; keep main() returning a code
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    supervisor = _Supervisor()
    # Installed before anything else so a cancel arriving during the RUNNING report is not lost.
    supervisor.install()
    if args.pid_file:
        try:
            # The runner writes its own pid so a launcher that dies right after starting it loses nothing.
            write_atomic(args.pid_file, f"{os.getpid()}\n")
        except OSError as exc:
            _say(f"cannot write the pid file {args.pid_file}: {exc.strerror or exc}")

    reporter = Reporter.from_env()
    if reporter is not None:
        reporter.report({"state": "RUNNING"}, budget_seconds=min(RUNNING_RETRY_SECONDS, reporter.budget_seconds))

    missing, parameters_dir = _load_parameters(reporter)
    if missing is None:
        raw_code, message = supervisor.run(args.command)
    else:
        raw_code, message = EXIT_NO_PARAMETERS, missing
        _say(missing)
    if parameters_dir is not None:
        shutil.rmtree(parameters_dir, ignore_errors=True)
    exit_code = raw_code if raw_code >= 0 else 128 - raw_code

    if args.exit_file:
        try:
            record = {"exit_code": raw_code, "message": message, "finished_at": time.time()}
            write_atomic(args.exit_file, json.dumps(record) + "\n")
        except OSError as exc:
            _say(f"cannot write the exit file {args.exit_file}: {exc.strerror or exc}")

    if message and raw_code in (EXIT_NOT_FOUND, EXIT_CANNOT_EXECUTE) and supervisor.child is None:
        _say(message)
    if reporter is not None:
        if supervisor.stop_signal is not None:
            _say(f"stopped by {signal_name(supervisor.stop_signal)}; leaving the final state to the dispatcher")
        elif exit_code == 0:
            reporter.report({"state": "COMPLETED", "exit_code": 0})
        else:
            reporter.report({"state": "FAILED", "exit_code": exit_code, "message": message or f"exit code {exit_code}"})
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
