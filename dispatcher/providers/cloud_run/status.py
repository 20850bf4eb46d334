"""What a Cloud Run execution says of a run (SPEC §6), in one pure function over the execution as a dict.

The dict is the v2 `Execution` with its proto field names (`completion_time`, `failed_count`, conditions with
`type`, `state`, `reason`, `execution_reason`, `message`), enums by name: what
`Execution.to_dict(e, use_integers_for_enums=False)` gives, and what tests write by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..base import JobState, JobStatus

__all__ = ["execution_status"]

_EXIT_CODE = re.compile(r"exit code (?:of )?(-?\d+)")
# Conditions whose failure means the task never ran: no resources, no image, no permission to start it.
_START_CONDITIONS = ("ResourcesAvailable", "Started", "ContainerReady")


def _conditions(execution: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for condition in execution.get("conditions") or []:
        kind = condition.get("type") or condition.get("type_")
        if kind:
            found[str(kind)] = condition
    return found


def _words(name: str, condition: Mapping[str, Any] | None, fallback: str) -> str:
    """Cloud Run's own words for an execution's end: its condition's message, else its reason."""
    short = name.rsplit("/", 1)[-1]
    if condition is not None:
        message = str(condition.get("message") or "").strip()
        reason = condition.get("execution_reason") or condition.get("reason")
        if reason in ("EXECUTION_REASON_UNDEFINED", "COMMON_REASON_UNDEFINED", 0):
            reason = None
        text = " ".join(part for part in (message, f"({reason})" if reason else "") if part)
        if text:
            return f"Cloud Run execution {short}: {text}"
    return f"Cloud Run execution {short}: {fallback}"


def _count(execution: Mapping[str, Any], key: str) -> int:
    try:
        return int(execution.get(key) or 0)
    except (TypeError, ValueError):
        return 0


def execution_status(execution: Mapping[str, Any]) -> JobStatus:
    """The run state an execution reports.

    - ended (`completion_time`, or its `Completed` condition settled): cancelled (a cancelled task or reason
      CANCELLED) → CANCELLED; succeeded → COMPLETED (exit 0); a task failed → FAILED with the exit code Cloud
      Run names; failed without any task having run (image not found, quota, permissions) → CRASHED;
    - otherwise a task running, or the `Started` condition met → RUNNING; else PENDING.
    """
    name = str(execution.get("name") or "")
    conditions = _conditions(execution)
    completed = conditions.get("Completed")
    completed_state = completed.get("state") if completed else None
    ended = bool(execution.get("completion_time")) or completed_state in ("CONDITION_SUCCEEDED", "CONDITION_FAILED")
    cancelled = _count(execution, "cancelled_count")
    succeeded = _count(execution, "succeeded_count")
    failed = _count(execution, "failed_count")
    running = _count(execution, "running_count")
    tasks = _count(execution, "task_count") or 1
    reason = completed.get("execution_reason") if completed else None

    if ended:
        if cancelled or reason in ("CANCELLED", "CANCELLING"):
            return JobStatus(JobState.CANCELLED, message=_words(name, completed, "cancelled"))
        if completed_state == "CONDITION_SUCCEEDED" or (succeeded >= tasks and not failed):
            return JobStatus(JobState.COMPLETED, exit_code=0, message=_words(name, None, "succeeded"))
        if failed:
            message = _words(name, completed, f"{failed} of {tasks} tasks failed")
            match = _EXIT_CODE.search(str(completed.get("message") or "")) if completed else None
            return JobStatus(JobState.FAILED, exit_code=int(match.group(1)) if match else None, message=message)
        start_failure = next(
            (conditions[c] for c in _START_CONDITIONS if conditions.get(c, {}).get("state") == "CONDITION_FAILED"),
            None,
        )
        return JobStatus(JobState.CRASHED, message=_words(name, start_failure or completed, "no task ever ran"))
    if running or conditions.get("Started", {}).get("state") == "CONDITION_SUCCEEDED":
        return JobStatus(JobState.RUNNING, message=_words(name, None, f"{running or 1} of {tasks} tasks running"))
    return JobStatus(JobState.PENDING, message=_words(name, None, "waiting for its task to start"))
