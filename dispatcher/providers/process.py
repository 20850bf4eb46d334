"""The `process` provider: each run is a local subprocess under `pushpool-run`, outliving its launcher.

State lives in the filesystem, one directory per run, so any dispatcher process on the machine (a later
`pushpool dispatch`, a restarted `pushpool serve`) can answer for a run another one started:

    <state_dir>/<infrastructure id>/
        job.json     what was launched (command, name, labels, working_dir; never env, which holds the token)
        pid          the supervisor's pid; it is a session leader, so this is also its process group id
        output.log   the command's stdout and stderr (`flow-run logs`)
        work/        the job's working directory unless its job sets `working_dir`: kept apart from the files
                     above, so a job writing `pid` or `exit` in its cwd cannot fool the supervisor's reader
        exit         written by the supervisor when the command ends: {"exit_code": N, "message": ...}
        cancelled    written by `cancel`: the time of the first cancel request

The infrastructure id is the directory name, derived from the idempotency key. Creating the directory with
`os.mkdir` is atomic, which makes submission idempotent across processes: whoever creates it launches,
everyone else waits for its `pid` file and returns the same id. The creator holds an exclusive `flock` on the
directory until its pid file is written; the kernel drops it when the creator ends or dies. So a directory
without a pid whose lock is held is a launch under way, however slow (a submit the dispatcher gave up on
goes on in its thread): it is waited for, never taken over. Only an unlocked one, older than
`launch_wait_seconds`, is an interrupted launch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import InvalidInput, NotFound, ProviderError
from ..private_files import DIR_MODE, private_dir, pushpool_home
from ..runner import signal_name, write_atomic
from .base import JobState, JobStatus, job_settings_error, split_command

__all__ = ["INHERITED_ENV", "STATE_DIR_ENV", "ProcessJob", "ProcessProvider", "job_environment"]

STATE_DIR_ENV = "PUSHPOOL_PROCESS_DIR"
WORK_DIR = "work"
"""The default working directory of a job, inside its run directory."""

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,119}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class ProcessJob(BaseModel):
    """A rendered `process` job (templates/process.json).

    `stream_output` is accepted for compatibility with Prefect's process worker but changes nothing: the
    job outlives the dispatcher that started it, so its output always goes to the run's `output.log`.
    """

    model_config = ConfigDict(extra="forbid")

    command: list[str]
    env: dict[str, str | None] = {}
    labels: dict[str, str] = {}
    name: str | None = None
    working_dir: str | None = None
    stream_output: bool = True

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        value = split_command(value)
        if isinstance(value[0], str) and not value[0].strip():
            raise ValueError("must start with a program name, not a blank argument")
        return value

    @field_validator("working_dir", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # A blank working_dir is what a template renders when nobody set one: it means "the default".
        return None if value == "" else value


INHERITED_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
"""The dispatcher's variables a process job inherits (with every `LC_*`): what a program needs to start and to
read text and time as the machine does. Nothing else of the dispatcher's environment reaches a job (SPEC §8):
not `PUSHPOOL_SECRET`, `PUSHPOOL_API_TOKEN`, cloud credentials, nor anything an operator exported for the
dispatcher. A job that needs more gets it through its template's `env`."""


def job_environment(job_env: Mapping[str, str | None], dispatcher_env: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a process job: the harmless basics of `dispatcher_env` (`INHERITED_ENV`,
    `LC_*`), then the rendered job's `env` (which carries the run's PUSHPOOL_* context and its own token).

    A null in `job_env` unsets a basic, as it unsets a variable a lower template level set.
    """
    env = {key: value for key, value in dispatcher_env.items() if key in INHERITED_ENV or key.startswith("LC_")}
    for key, value in job_env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _sanitise(key: str) -> str:
    """A directory name for an idempotency key: the key itself when it is safe, else a readable form plus a hash.

    The hash keeps two keys that differ only in unsafe characters (`a/b` and `a:b`) from sharing a run.
    """
    if _SAFE_ID.fullmatch(key) and key not in (".", ".."):
        return key
    readable = _UNSAFE_CHARS.sub("_", key).lstrip("._-")[:80] or "run"
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _lock_directory(run_dir: Path) -> int:
    """An open descriptor of `run_dir` holding its exclusive flock: the mark of a launch under way."""
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _launching(run_dir: Path) -> bool:
    """Whether a submit is launching in `run_dir` now (it holds the directory's flock; per open file, so a
    thread of this very process counts too)."""
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False  # gone: nobody launches there
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class ProcessProvider:
    """Runs jobs as local processes supervised by `python -m dispatcher.runner`.

    `launch_wait_seconds` is how long a second submit of the same key waits for the first one's pid file once
    the first one holds no lock (a live one, however slow, is waited for);
    `kill_grace_seconds` is how long after the first cancel a repeated cancel escalates to SIGKILL.
    """

    status_is_cheap = True
    """status() reads local files, so the reconciler may ask every pass instead of waiting for silence."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        launch_wait_seconds: float = 5.0,
        kill_grace_seconds: float = 10.0,
    ) -> None:
        if state_dir is None:
            state_dir = Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".pushpool" / "processes")
        # Absolute, because the supervisor runs in the job's working_dir and must still find its exit file.
        self.state_dir = Path(state_dir).expanduser().absolute()
        self.launch_wait_seconds = launch_wait_seconds
        self.kill_grace_seconds = kill_grace_seconds
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- Provider protocol -------------------------------------------------------------------------------------

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Check a rendered job against `ProcessJob`; return it with `command` as a list of arguments."""
        return self._parse(job).model_dump()

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Start the job under the supervisor, once per key; return the run directory's name."""
        self._reap()
        try:
            spec = self._parse(job)
        except InvalidInput as exc:
            raise ProviderError(str(exc), transient=False) from None
        infra_id = _sanitise(idempotency_key)
        run_dir = self.state_dir / infra_id
        try:
            # 0700: run directories hold the jobs' output and job.json. The default one is pushpool's own, so
            # one an older version left wider is narrowed; a directory the operator named is left as it is.
            private_dir(self.state_dir, tighten=self.state_dir.parent == pushpool_home())
        except OSError as exc:
            raise ProviderError(
                f"cannot create the process state directory {self.state_dir}: {exc}", transient=True
            ) from None

        while True:
            try:
                os.mkdir(run_dir, DIR_MODE)
                claim = _lock_directory(run_dir)  # held until the pid is written: this launch is alive
                os.chmod(run_dir, DIR_MODE)  # mkdir's mode passes through the umask; this is the mode
                break
            except FileExistsError:
                if self._await_pid(run_dir):
                    return infra_id
                # An earlier submit created the directory but died before starting anything: set its remains
                # aside (rename is atomic, so of several submitters only one does it) and claim the key afresh.
                with contextlib.suppress(FileNotFoundError):
                    os.rename(run_dir, run_dir.with_name(f"{infra_id}.interrupted-{time.time_ns()}"))
            except OSError as exc:
                raise ProviderError(f"cannot create the run directory {run_dir}: {exc}", transient=True) from None

        # From here on this call owns the key. `_launch` raises only when nothing started, so removing the
        # directory then frees the key for a corrected retry without orphaning a running process.
        try:
            self._launch(spec, run_dir, self._working_dir(spec) or run_dir / WORK_DIR)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        finally:
            os.close(claim)
        return infra_id

    def status(self, infrastructure_id: str) -> JobStatus:
        """What became of the run: from its exit file, else from whether its supervisor still lives."""
        self._reap()
        run_dir = self._existing_run_dir(infrastructure_id)
        if run_dir is None:
            return JobStatus(JobState.MISSING, message=f"no process run {infrastructure_id!r} in {self.state_dir}")
        cancelled = (run_dir / "cancelled").exists()
        outcome = self._read_exit(run_dir)
        if outcome is not None:
            return self._finished(outcome, cancelled)
        pid = self._read_pid(run_dir)
        if pid is None:
            try:
                age = time.time() - run_dir.stat().st_mtime
            except FileNotFoundError:  # a failed launch removed it just now
                return JobStatus(JobState.MISSING, message=f"no process run {infrastructure_id!r} in {self.state_dir}")
            if age < self.launch_wait_seconds or _launching(run_dir):
                return JobStatus(JobState.PENDING, message="the process is starting")
            return JobStatus(JobState.MISSING, message="the launch was interrupted before the process started")
        if self._alive(pid, run_dir):
            return JobStatus(JobState.RUNNING, message=f"process {pid}")
        # The supervisor writes the exit file and then exits; read it again in case that happened just now.
        outcome = self._read_exit(run_dir)
        if outcome is not None:
            return self._finished(outcome, cancelled)
        if cancelled:
            return JobStatus(JobState.CANCELLED, message=f"process {pid} was stopped on request")
        return JobStatus(JobState.MISSING, message=f"process {pid} is gone without an exit code")

    def find(self, idempotency_key: str) -> str | None:
        """The run directory's name for this key if a launch happened there (or is under way), else None.

        A directory left by a launch interrupted before its process started (no pid, no exit, older than
        `launch_wait_seconds`) launched nothing: None, as `status` calls it MISSING.
        """
        infra_id = _sanitise(idempotency_key)
        run_dir = self._existing_run_dir(infra_id)
        if run_dir is None:
            return None
        if self._read_pid(run_dir) is not None or (run_dir / "exit").exists():
            return infra_id
        try:
            age = time.time() - run_dir.stat().st_mtime
        except FileNotFoundError:  # a failed launch removed it just now
            return None
        return infra_id if age < self.launch_wait_seconds or _launching(run_dir) else None

    def cancel(self, infrastructure_id: str) -> None:
        """Stop the run's process group with SIGTERM; a repeat after `kill_grace_seconds` sends SIGKILL.

        Never blocks: the end is confirmed by `status`, which says CANCELLED once the process is gone.
        """
        run_dir = self._existing_run_dir(infrastructure_id)
        if run_dir is None or (run_dir / "exit").exists():
            return  # nothing runs: it never started, or it ended on its own and its real outcome stands
        marker = run_dir / "cancelled"
        first_request = self._read_float(marker)
        if first_request is None:
            first_request = time.time()
            try:
                write_atomic(str(marker), f"{first_request}\n")
            except OSError as exc:
                raise ProviderError(f"cannot mark {run_dir} as cancelled: {exc}", transient=True) from None
        pid = self._read_pid(run_dir)
        if pid is None or not self._alive(pid, run_dir):
            return
        escalate = time.time() - first_request >= self.kill_grace_seconds
        try:
            # The whole group, so a shell script's children stop too, not only the supervisor and CMD.
            os.killpg(pid, signal.SIGKILL if escalate else signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended on its own in the meantime
        except PermissionError as exc:
            raise ProviderError(f"not allowed to stop process group {pid}: {exc}", transient=False) from None

    # -- extras ------------------------------------------------------------------------------------------------

    def logs(self, infrastructure_id: str) -> str:
        """The run's combined stdout and stderr so far (`flow-run logs`)."""
        run_dir = self._existing_run_dir(infrastructure_id)
        if run_dir is None:
            raise NotFound(f"no process run {infrastructure_id!r} in {self.state_dir}; it has no logs.")
        try:
            return (run_dir / "output.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def run_dir(self, infrastructure_id: str) -> Path:
        """Where a run's files live (whether or not it exists)."""
        return self.state_dir / infrastructure_id

    # -- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(job: Any) -> ProcessJob:
        if not isinstance(job, dict):
            raise InvalidInput(f"a process job must be a JSON object, not {type(job).__name__}.")
        try:
            return ProcessJob.model_validate(job)
        except ValidationError as exc:
            raise InvalidInput(job_settings_error(exc, "process", ProcessJob)) from None

    @staticmethod
    def _working_dir(spec: ProcessJob) -> Path | None:
        if spec.working_dir is None:
            return None
        path = Path(spec.working_dir).expanduser()
        if not path.is_dir():
            raise ProviderError(
                f"working_dir: {spec.working_dir} is not an existing directory on this machine.", transient=False
            )
        return path

    def _launch(self, spec: ProcessJob, run_dir: Path, cwd: Path) -> None:
        env = job_environment(spec.env, os.environ)
        record = {"command": spec.command, "name": spec.name, "labels": spec.labels, "working_dir": str(cwd)}
        argv = [
            sys.executable,
            "-m",
            "dispatcher.runner",
            "--exit-file",
            str(run_dir / "exit"),
            "--pid-file",
            str(run_dir / "pid"),
            "--",
            *spec.command,
        ]
        try:
            cwd.mkdir(exist_ok=True)
            write_atomic(str(run_dir / "job.json"), json.dumps(record, indent=2) + "\n")
            with open(run_dir / "output.log", "ab") as log:
                process = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session: the job survives the dispatcher that started it, ignores the terminal's
                    # Ctrl-C, and forms a process group that cancel can stop as a whole.
                    start_new_session=True,
                )
        except OSError as exc:
            # A full disk, a descriptor or process limit, a state directory being remounted: all may pass, so
            # the run is retried with backoff (and crashes, in these words, only after its attempts).
            raise ProviderError(f"cannot start the process: {exc}", transient=True) from None
        # Kept so this process can reap it (no zombie piles up in `pushpool serve`) and Python does not warn
        # about dropping a running child.
        self._children[process.pid] = process
        # The supervisor writes the same file itself; writing it here too closes the gap before it starts. A
        # failure here must not undo the launch (the process runs), and the supervisor's own write covers it.
        with contextlib.suppress(OSError):
            write_atomic(str(run_dir / "pid"), f"{process.pid}\n")

    def _await_pid(self, run_dir: Path) -> bool:
        """Whether the submit that created `run_dir` launched its process. Waits as long as that submit holds the
        directory's lock (it is alive, however slow), else up to `launch_wait_seconds`; False when it failed
        (the directory is gone) or died before launching (no pid, no lock)."""
        deadline = time.monotonic() + self.launch_wait_seconds
        while True:
            if self._read_pid(run_dir) is not None or (run_dir / "exit").exists():
                return True
            if not run_dir.exists():
                return False  # the other submitter failed and removed it: try to claim the key ourselves
            if time.monotonic() >= deadline and not _launching(run_dir):
                return False
            time.sleep(0.05)

    def _existing_run_dir(self, infrastructure_id: str) -> Path | None:
        # The id comes back from the store; refuse anything that could point outside the state directory.
        if not _SAFE_ID.fullmatch(infrastructure_id) or infrastructure_id in (".", ".."):
            return None
        run_dir = self.state_dir / infrastructure_id
        return run_dir if run_dir.is_dir() else None

    @staticmethod
    def _read_pid(run_dir: Path) -> int | None:
        try:
            text = (run_dir / "pid").read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(text) if text.isdigit() and int(text) > 0 else None

    @staticmethod
    def _read_float(path: Path) -> float | None:
        try:
            return float(path.read_text(encoding="utf-8").strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _read_exit(run_dir: Path) -> tuple[int, str | None] | None:
        try:
            text = (run_dir / "exit").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, int) and not isinstance(data, bool):
            return data, None  # a bare number, as a hand-written or older exit file may hold
        if isinstance(data, dict) and isinstance(data.get("exit_code"), int):
            message = data.get("message")
            return data["exit_code"], message if isinstance(message, str) else None
        return None

    @staticmethod
    def _finished(outcome: tuple[int, str | None], cancelled: bool) -> JobStatus:
        code, message = outcome
        if cancelled:
            # Whatever code a stopped command ends with (143, or 0 if it caught SIGTERM), the user asked for it.
            return JobStatus(JobState.CANCELLED, exit_code=code, message="cancelled on request")
        if code == 0:
            return JobStatus(JobState.COMPLETED, exit_code=0)
        if code < 0:
            return JobStatus(JobState.CRASHED, exit_code=128 - code, message=f"killed by {signal_name(-code)}")
        return JobStatus(JobState.FAILED, exit_code=code, message=message or f"exit code {code}")

    def _reap(self) -> None:
        """Collect every finished child, so a long-lived `pushpool serve` leaves no zombies behind."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                self._children.pop(pid, None)

    def _alive(self, pid: int, run_dir: Path) -> bool:
        """Whether `pid` is still this run's supervisor, neither exited, nor a zombie, nor a reused pid."""
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            self._children.pop(pid, None)  # pop, not del: the dispatcher calls providers from several threads
            return False
        try:
            # Reaps it if this process launched it; otherwise its real parent (or init) does that.
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # another user's process: the pid was reused, ours is gone
        proc = Path("/proc") / str(pid)
        if not proc.exists():
            return True  # no procfs (macOS): os.kill is all we can know
        try:
            stat = (proc / "stat").read_text()
            # The state letter follows the parenthesised command name, which may itself contain ") ".
            if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
                return False  # a zombie: exited, waiting for a parent that is not us to reap it
            cmdline = (proc / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return False
        # After a reboot or long uptime the pid may belong to someone else; ours names its run directory.
        return str(run_dir).encode() in cmdline
