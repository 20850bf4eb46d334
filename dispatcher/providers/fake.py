"""`FakeProvider`: an in-memory provider that tests script, shipped in the package like dramatiq's StubBroker.

It behaves as a well-mannered infrastructure API would: it honours idempotency keys, keeps a status per
job, and answers MISSING for what it does not know. Tests then script the rest: failures, slow submits,
status changes and jobs that vanish. Everything it is asked is recorded, for assertions.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from typing import Any, Literal

from ..errors import InvalidInput, ProviderError
from .base import JobState, JobStatus

__all__ = ["FakeProvider"]

Method = Literal["submit", "status", "cancel", "find"]

_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CRASHED, JobState.CANCELLED})


class FakeProvider:
    """A scriptable provider. Thread-safe: a dispatcher may call it from several threads at once.

    - `launches`: every job actually started, as `(idempotency_key, job)`; a repeated key adds nothing.
    - `submit_calls`: every submit attempt's key, including repeats and scripted failures.
    - `status_calls`, `cancelled`: the ids asked about and the ids cancelled, in call order.
    - `find_calls`: every key `find` was asked about.
    - `hang_seconds`: each submit sleeps this long first (outside the lock), to test the dispatcher's timeouts.
    - `initial_status`: the status of a job just launched (PENDING, like a container being placed).

    Infrastructure ids are `fake-<key>`, so a test can predict them.
    """

    def __init__(self, *, hang_seconds: float = 0.0, initial_status: JobStatus | None = None) -> None:
        self.hang_seconds = hang_seconds
        self.initial_status = initial_status or JobStatus(JobState.PENDING)
        self.launches: list[tuple[str, dict[str, Any]]] = []
        self.submit_calls: list[str] = []
        self.status_calls: list[str] = []
        self.cancelled: list[str] = []
        self.find_calls: list[str] = []
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}
        self._statuses: dict[str, JobStatus] = {}
        self._failures: dict[str, deque[ProviderError]] = {m: deque() for m in ("submit", "status", "cancel", "find")}

    # -- scripting ---------------------------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, *, transient: bool, message: str = "scripted failure", method: Method = "submit"
    ) -> None:
        """Make the next `n` calls of `method` (submit by default) raise `ProviderError(message, transient)`.

        A failed submit launches nothing and does not claim its key: the retry starts the job.
        """
        with self._lock:
            self._failures[method].extend(ProviderError(message, transient=transient) for _ in range(n))

    def clear_failures(self) -> None:
        """Drop every scripted failure not yet raised (the infrastructure recovered)."""
        with self._lock:
            for queue in self._failures.values():
                queue.clear()

    def set_status(self, infrastructure_id: str, status: JobStatus) -> None:
        """What `status` answers for this id from now on (the id need not have been launched)."""
        with self._lock:
            self._statuses[infrastructure_id] = status

    def forget(self, infrastructure_id: str) -> None:
        """Lose all trace of a job, as infrastructure that was torn down would: `status` answers MISSING."""
        with self._lock:
            self._statuses.pop(infrastructure_id, None)

    def infrastructure_id(self, idempotency_key: str) -> str | None:
        """The id a key launched, or None if it launched nothing yet."""
        with self._lock:
            return self._ids.get(idempotency_key)

    # -- Provider protocol -------------------------------------------------------------------------------------

    def validate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Accept any JSON object that has a non-empty `command`; return a copy."""
        if not isinstance(job, dict):
            raise InvalidInput(f"a job must be a JSON object, not {type(job).__name__}.")
        if not job.get("command"):
            raise InvalidInput("command: is required and must not be empty.")
        return copy.deepcopy(job)

    def submit(self, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False) -> str:
        """Launch once per key; a repeated key returns the first launch's id and launches nothing."""
        if self.hang_seconds > 0:
            # Outside the lock, so one slow submit does not hold up the other threads' calls.
            time.sleep(self.hang_seconds)
        with self._lock:
            self.submit_calls.append(idempotency_key)
            self._raise_scripted("submit")
            existing = self._ids.get(idempotency_key)
            if existing is not None:
                return existing
            infra_id = f"fake-{idempotency_key}"
            self._ids[idempotency_key] = infra_id
            self._statuses[infra_id] = self.initial_status
            self.launches.append((idempotency_key, copy.deepcopy(job)))
            return infra_id

    def status(self, infrastructure_id: str) -> JobStatus:
        """The scripted status, or MISSING for an id this fake does not know (or was told to forget)."""
        with self._lock:
            self.status_calls.append(infrastructure_id)
            self._raise_scripted("status")
            return self._statuses.get(
                infrastructure_id, JobStatus(JobState.MISSING, message=f"fake job {infrastructure_id} not found")
            )

    def find(self, idempotency_key: str) -> str | None:
        """The id a key launched (a scripted failed submit launched nothing), or None."""
        with self._lock:
            self.find_calls.append(idempotency_key)
            self._raise_scripted("find")
            return self._ids.get(idempotency_key)

    def cancel(self, infrastructure_id: str) -> None:
        """Record the cancel; a job still going becomes CANCELLED, a finished one keeps its real outcome."""
        with self._lock:
            self._raise_scripted("cancel")
            self.cancelled.append(infrastructure_id)
            current = self._statuses.get(infrastructure_id)
            if current is not None and current.state not in _TERMINAL:
                self._statuses[infrastructure_id] = JobStatus(JobState.CANCELLED, message="cancelled on request")

    def _raise_scripted(self, method: Method) -> None:
        queue = self._failures[method]
        if queue:
            raise queue.popleft()
