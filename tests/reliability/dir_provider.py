"""`DirProvider`: a provider whose infrastructure is a directory, shared by every process of a scenario.

A launch is `os.mkdir(<root>/<key>)`, atomic across processes (as the process provider's run directories are),
so a repeated key finds the first launch and a second launch of one run is a second directory. A job ends
when someone writes `exit` into its directory; `cancel` writes `cancelled`. Cheap to launch by the thousand,
which the overlapping-dispatcher scenario needs: its subject is admission, not the processes a job runs.

`KillPoints` makes the process that uses it SIGKILL itself at a named step boundary (`PUSHPOOL_TEST_KILL_AT`,
e.g. `submit:after:2` = right after the second submit returned), to crash a dispatcher between two steps.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from dispatcher.errors import InvalidInput
from dispatcher.providers.base import JobState, JobStatus, Provider
from dispatcher.store.base import Store

KILL_ENV = "PUSHPOOL_TEST_KILL_AT"


class DirProvider:
    """See the module docstring. Infrastructure ids are the idempotency keys."""

    status_is_cheap = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(job, dict) or not job.get("command"):
            raise InvalidInput("command: is required and must not be empty.")
        return dict(job)

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        path = self.root / idempotency_key
        try:
            path.mkdir()
        except FileExistsError:
            return idempotency_key
        (path / "run").write_text(str((job.get("env") or {}).get("PUSHPOOL_RUN_ID", "")))
        return idempotency_key

    def status(self, infrastructure_id: str) -> JobStatus:
        path = self.root / infrastructure_id
        if not path.is_dir():
            return JobStatus(JobState.MISSING, message=f"no directory {infrastructure_id}")
        if (path / "exit").exists():
            code = int((path / "exit").read_text() or 0)
            if (path / "cancelled").exists():
                return JobStatus(JobState.CANCELLED, exit_code=code, message="cancelled on request")
            return JobStatus(JobState.COMPLETED if code == 0 else JobState.FAILED, exit_code=code)
        if (path / "cancelled").exists():
            return JobStatus(JobState.CANCELLED, message="cancelled on request")
        return JobStatus(JobState.RUNNING)

    def find(self, idempotency_key: str) -> str | None:
        return idempotency_key if (self.root / idempotency_key).is_dir() else None

    def cancel(self, infrastructure_id: str) -> None:
        path = self.root / infrastructure_id
        if path.is_dir() and not (path / "exit").exists():
            (path / "cancelled").touch()

    # -- for the scenarios -------------------------------------------------------------------------------------
    def launches(self) -> dict[str, list[str]]:
        """run id -> the keys it was launched under (more than one is a duplicated launch)."""
        found: dict[str, list[str]] = {}
        for path in self.root.iterdir():
            run = path / "run"
            if run.exists():
                found.setdefault(run.read_text(), []).append(path.name)
        return found

    def running(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if (p / "run").exists() and not (p / "exit").exists()]

    def finish(self, infrastructure_id: str, exit_code: int) -> None:
        exit_file = self.root / infrastructure_id / "exit"
        if not exit_file.exists():
            tmp = exit_file.with_suffix(f".{os.getpid()}")
            tmp.write_text(str(exit_code))
            os.replace(tmp, exit_file)


class KillPoints:
    """Counts step boundaries and SIGKILLs this process at the one `PUSHPOOL_TEST_KILL_AT` names."""

    def __init__(self, spec: str | None = None) -> None:
        spec = spec if spec is not None else os.environ.get(KILL_ENV, "")
        self.step, self.when, count = (spec.split(":") + ["", "", "1"])[:3] if spec else ("", "", "1")
        self.count = int(count or 1)
        self.seen: dict[tuple[str, str], int] = {}

    def at(self, step: str, when: str) -> None:
        key = (step, when)
        self.seen[key] = self.seen.get(key, 0) + 1
        if (step, when) == (self.step, self.when) and self.seen[key] == self.count:
            os.kill(os.getpid(), signal.SIGKILL)


class KillingProvider:
    """A provider that passes every call on and crosses the `render` and `submit` kill points around them."""

    def __init__(self, inner: Provider, kills: KillPoints) -> None:
        self.inner = inner
        self.kills = kills
        self.status_is_cheap = getattr(inner, "status_is_cheap", False)

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        self.kills.at("render", "before")
        result = self.inner.validate(job)
        self.kills.at("render", "after")
        return result

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        self.kills.at("submit", "before")
        result = self.inner.submit(job, idempotency_key=idempotency_key, resubmission=resubmission)
        self.kills.at("submit", "after")
        return result

    def status(self, infrastructure_id: str) -> JobStatus:
        return self.inner.status(infrastructure_id)

    def find(self, idempotency_key: str) -> str | None:
        return self.inner.find(idempotency_key)

    def cancel(self, infrastructure_id: str) -> None:
        self.inner.cancel(infrastructure_id)


class KillingStore:
    """A store that passes every call on and crosses the `admit` and `record` kill points around them.

    `record` is the save that gives a run its infrastructure id (InfrastructurePending).
    """

    def __init__(self, inner: Store, kills: KillPoints) -> None:
        self._inner = inner
        self._kills = kills

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def admit(self, admissions: Any) -> Any:
        self._kills.at("admit", "before")
        result = self._inner.admit(admissions)
        self._kills.at("admit", "after")
        return result

    def save_run(self, before: Any, after: Any) -> bool:
        return self.save_runs([(before, after)])[0]

    def save_runs(self, changes: Any) -> list[bool]:
        recording = any(b.infrastructure_id is None and a.infrastructure_id is not None for b, a in changes)
        if recording:
            self._kills.at("record", "before")
        result: list[bool] = self._inner.save_runs(changes)
        if recording:
            self._kills.at("record", "after")
        return result


def describe(path: Path) -> dict[str, Any]:
    """A worker's report, read by the test."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data
