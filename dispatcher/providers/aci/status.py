"""What a container group says of its run (SPEC §6): one pure function over the ARM JSON of a GET. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import JobState, JobStatus
from .model import CONTAINER_NAME, KEEP_TAG

__all__ = ["group_status", "is_kept", "main_container"]

_PULL_WORDS = ("pull", "inaccessibleimage", "imagenotfound", "manifest unknown")


def main_container(group: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The flow run's container: the one pushpool named, else the one given PUSHPOOL_RUN_ID, else the first."""
    containers = [c for c in (group.get("properties") or {}).get("containers") or [] if isinstance(c, Mapping)]
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            return container
    for container in containers:
        env = (container.get("properties") or {}).get("environmentVariables") or []
        if any(isinstance(item, Mapping) and item.get("name") == "PUSHPOOL_RUN_ID" for item in env):
            return container
    return containers[0] if containers else None


def is_kept(group: Mapping[str, Any]) -> bool:
    """Whether the group outlives its run (`keep_container_group`, kept as a tag on the group)."""
    return str((group.get("tags") or {}).get(KEEP_TAG, "")).lower() == "true"


def _events(view: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in view.get("events") or [] if isinstance(e, Mapping)]


def _pull_failure(current: Mapping[str, Any], events: list[Mapping[str, Any]]) -> str | None:
    """Azure's words for an image that cannot be pulled, or None when the container is merely waiting."""
    detail = str(current.get("detailStatus") or "")
    failed = [
        str(e.get("message") or e.get("name") or "")
        for e in events
        if str(e.get("type", "")).lower() == "warning" or str(e.get("name", "")).lower() == "failed"
    ]
    words = [text for text in failed if any(w in text.lower() for w in _PULL_WORDS)]
    if words:
        return words[-1]
    if any(w in detail.lower() for w in _PULL_WORDS):
        return detail
    return None


def _join(*parts: Any) -> str | None:
    text = "; ".join(str(part) for part in parts if part)
    return text or None


def group_status(group: Mapping[str, Any]) -> JobStatus:
    """The status of a run from its container group's GET (properties with the containers' instance views).

    - the flow run's container Terminated: exit 0 COMPLETED, another code FAILED, none CRASHED;
    - Waiting with an image pull error, or the group's provisioning Failed: CRASHED, in Azure's words;
    - Running: RUNNING; a group Stopped before its container ended: CRASHED (a stop pushpool asked for ends
      the run CANCELLED anyway, through the CANCELLING state);
    - anything else (Pending, Creating, Waiting): PENDING.
    """
    properties = group.get("properties") or {}
    provisioning = str(properties.get("provisioningState") or "")
    group_view = properties.get("instanceView") or {}
    container = main_container(group)
    name = container.get("name") if container else None
    view = ((container or {}).get("properties") or {}).get("instanceView") or {}
    current = view.get("currentState") or {}
    state = str(current.get("state") or "")
    detail = current.get("detailStatus")

    if state == "Terminated":
        code = current.get("exitCode")
        if not isinstance(code, int) or isinstance(code, bool):
            return JobStatus(JobState.CRASHED, message=_join(f"container {name} ended without an exit code", detail))
        if code == 0:
            return JobStatus(JobState.COMPLETED, exit_code=0)
        return JobStatus(
            JobState.FAILED, exit_code=code, message=_join(f"container {name} exited with code {code}", detail)
        )
    if state == "Waiting":
        pulled = _pull_failure(current, _events(view))
        if pulled is not None:
            return JobStatus(JobState.CRASHED, message=f"container {name} cannot start: {pulled}")
    if provisioning == "Failed":
        words = [str(e.get("message")) for e in _events(group_view) + _events(view) if e.get("message")]
        return JobStatus(
            JobState.CRASHED, message=_join("the container group failed to provision", *words[-2:], detail)
        )
    if state == "Running":
        return JobStatus(JobState.RUNNING, message=f"container {name} running")
    if str(group_view.get("state") or "") == "Stopped":
        return JobStatus(JobState.CRASHED, message="the container group was stopped before its container ended")
    return JobStatus(JobState.PENDING, message=_join(f"container group {provisioning or 'pending'}", state, detail))
