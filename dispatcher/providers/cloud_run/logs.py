"""`flow-run logs` for Cloud Run: the execution's log URI, and its log entries when google-cloud-logging is there.

Cloud Run sends a job's output to Cloud Logging; the execution's `log_uri` opens it in the console. The
entries themselves are read with google-cloud-logging (optional: `pip install google-cloud-logging`) over its
JSON API, filtered on the job and execution. The execution itself may be gone (its job is deleted once the run
ended), so the URI is rebuilt from the execution's name when Cloud Run no longer has it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...errors import ProviderError
from .clients import CloudRunClients
from .errors import http_status, provider_error

__all__ = ["execution_logs", "log_filter", "visible"]

# C0 and C1 control characters but tab and newline: a job's output must not drive the reader's terminal.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if code not in (9, 10)}


def visible(text: str) -> str:
    """Text a job wrote, with control characters escaped (SPEC §8): `\\x1b[31m` instead of a colour change."""
    return text.translate(_CONTROL)


def log_filter(execution: str) -> str:
    """The Cloud Logging filter of one execution's output."""
    parts = execution.split("/")
    job, short = parts[5], parts[7]
    return (
        f'resource.type="cloud_run_job" AND resource.labels.job_name="{job}" AND '
        f'resource.labels.location="{parts[3]}" AND labels."run.googleapis.com/execution_name"="{short}"'
    )


def _console_uri(execution: str) -> str:
    project = execution.split("/")[1]
    return (
        f"https://console.cloud.google.com/logs/query;query={quote(log_filter(execution), safe='')}?project={project}"
    )


def execution_logs(
    clients: CloudRunClients, execution: str, *, timeout: float, api_endpoint: str | None, max_entries: int
) -> str:
    """The text `flow-run logs` prints: `Logs: <uri>`, then the entries, one per line, oldest first."""
    try:
        found = clients.executions.get_execution(name=execution, retry=None, timeout=timeout)
        uri = str(found.log_uri) or _console_uri(execution)
    except Exception as exc:
        if http_status(exc) != 404:
            raise provider_error(exc, "get_execution") from None
        uri = _console_uri(execution)
    lines = [f"Logs: {uri}"]
    try:
        from google.cloud import logging as cloud_logging
    except ImportError:
        lines.append("(install google-cloud-logging to print the entries here)")
        return "\n".join(lines) + "\n"
    project = execution.split("/")[1]
    options: dict[str, Any] = {"api_endpoint": api_endpoint} if api_endpoint else {}
    try:
        client = cloud_logging.Client(
            project=project, credentials=clients.credentials, _use_grpc=False, client_options=options or None
        )
        entries = client.list_entries(
            resource_names=[f"projects/{project}"],
            filter_=log_filter(execution),
            order_by=cloud_logging.ASCENDING,
            max_results=max_entries,
        )
        for entry in entries:
            payload = entry.payload
            lines.append(visible(payload if isinstance(payload, str) else str(payload)))
    except ProviderError:
        raise
    except Exception as exc:
        raise provider_error(exc, "reading Cloud Logging entries") from None
    return "\n".join(lines) + "\n"
