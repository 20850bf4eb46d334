"""A local HTTP server speaking the Cloud Run Admin API v2 REST routes pushpool's provider uses.

It is a real `http.server` on 127.0.0.1 (port 0) that google-cloud-run's own client talks to over HTTP
(`transport="rest"`, an `http://` api_endpoint, AnonymousCredentials), so the provider is tested through the
SDK's request building, JSON encoding, long-running operations and error mapping, not around them.

Routes (all under /v2/): jobs create (`POST .../jobs?jobId=`), get and delete (with an `etag` it must match);
`POST <job>:run`, whose long-running operation carries the new execution as its metadata; operations get;
executions get, list and `POST <execution>:cancel`; and Cloud Logging's `POST /v2/entries:list` for `logs()`.

As Cloud Run does, a job created with `startExecutionToken` gets its execution, `<job id>-<token>`, in the
create's own operation (the job id and token together must be under 63 characters, else 400), and the
operation ends once that execution has started; a job created without one has no execution until run_job.
`hold_starts()` keeps creates' operations under way (the job exists, `reconciling`, without its execution)
until `release_starts()`; `fail_start(message)` makes the next token start fail (the job stays, settled,
with its terminal condition failed and no execution).

Tests script it: `fail(route, status, times)` answers the next calls of a route with an error in Google's
JSON shape (409, 429, 503, 404, ...); `delay(route, seconds)` answers slowly (after doing the work, as a
slow network would); `finish(execution, ...)` moves an execution to its end. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_STATUS_WORDS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_JOBS = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+)/jobs")
_JOB = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+)")
_RUN = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+):run")
_EXECUTIONS = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+)/executions")
_EXECUTION = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+/executions/[^/:]+)")
_CANCEL = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+/executions/[^/:]+):cancel")
_OPERATION = re.compile(r"/v2/(projects/[^/]+/locations/[^/]+/operations/[^/:]+)")

ROUTES = (
    "create_job",
    "list_jobs",
    "get_job",
    "delete_job",
    "run_job",
    "get_operation",
    "get_execution",
    "list_executions",
    "cancel_execution",
    "list_entries",
)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class CloudRunStub:
    """The server and its state. Thread-safe; use as a context manager or call `start()` / `stop()`."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.log_entries: dict[str, list[str]] = {}
        """execution name -> lines its container wrote (served by entries:list)."""
        self.start_at_once = False
        """When True, a new execution's task is running at once (the conformance harness wants RUNNING)."""
        self.started = 0
        """Executions ever started (by a create with a token, or by run_job), deleted ones included."""
        self.held: set[str] = set()
        """Routes whose requests wait, unanswered, until `release()`."""
        self.starts_held = False
        """When True, a create's operation stays under way until `release_starts()` (see the module docstring)."""
        self._pending_starts: dict[str, tuple[str, str | None]] = {}
        """create operation name -> (job name, token) of the creates whose operations are held."""
        self._start_failures: deque[str] = deque()
        self._released = threading.Condition()
        self.requests: list[tuple[str, str]] = []
        """(route, path) of every request, in arrival order."""
        self.bodies: dict[str, list[Any]] = {route: [] for route in ROUTES}
        self.lock = threading.Lock()
        self._failures: dict[str, deque[int]] = {route: deque() for route in ROUTES}
        self._delays: dict[str, deque[float]] = {route: deque() for route in ROUTES}
        self._hangs: dict[str, deque[float]] = {route: deque() for route in ROUTES}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_DELETE(self) -> None:
                stub._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CloudRunStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> CloudRunStub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------------------------

    def fail(self, route: str, status: int, times: int = 1) -> None:
        """Answer the next `times` calls of `route` with HTTP `status`, doing nothing else."""
        with self.lock:
            self._failures[route].extend([status] * times)

    def delay(self, route: str, seconds: float, times: int = 1) -> None:
        """Do the next `times` calls of `route`, then wait `seconds` before answering."""
        with self.lock:
            self._delays[route].extend([seconds] * times)

    def hang(self, route: str, seconds: float, times: int = 1) -> None:
        """Wait `seconds` on the next `times` calls of `route`, then answer 503 having done nothing: the caller
        gives up first, as a dispatcher that died mid-call would."""
        with self.lock:
            self._hangs[route].extend([seconds] * times)

    def clear_faults(self) -> None:
        """Forget every scripted failure, delay and hang not yet used."""
        with self.lock:
            for queue in (*self._failures.values(), *self._delays.values(), *self._hangs.values()):
                queue.clear()

    def hold(self, route: str) -> None:
        """Keep every request of `route` waiting, unanswered, until `release()`; then they are served."""
        with self._released:
            self.held.add(route)

    def release(self) -> None:
        with self._released:
            self.held.clear()
            self._released.notify_all()

    def hold_starts(self) -> None:
        """Keep every create's operation under way, its job `reconciling` and without an execution, until
        `release_starts()`: a Cloud Run start that takes a while."""
        with self.lock:
            self.starts_held = True

    def release_starts(self) -> None:
        """End the held creates' operations: each job created with a token gets its execution now."""
        with self.lock:
            self.starts_held = False
            for operation_name, (job_name, token) in self._pending_starts.items():
                job = self.jobs.get(job_name)
                if job is not None:
                    job["reconciling"] = False
                    if token:
                        self._start_execution(job_name, f"{job_name.rsplit('/', 1)[-1]}-{token}")
                    operation = self.operations[operation_name]
                    operation["metadata"] = {"@type": operation["metadata"]["@type"], **job}
                    operation["done"] = True
                    operation["response"] = operation["metadata"]
            self._pending_starts.clear()

    def fail_start(self, message: str) -> None:
        """The next create with a token makes the job but not its execution: the operation fails with
        RESOURCE_EXHAUSTED and `message`, and the job is left settled, its terminal condition failed."""
        with self.lock:
            self._start_failures.append(message)

    def calls(self, route: str) -> int:
        with self.lock:
            return sum(1 for name, _ in self.requests if name == route)

    def executions_of(self, job_name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.executions.values() if e["job"] == job_name.rsplit("/", 1)[-1]]

    def start_running(self, execution: str) -> None:
        """The execution's task container started."""
        with self.lock:
            e = self.executions[execution]
            e["startTime"] = _now()
            e["runningCount"] = 1
            e["conditions"] = [{"type": "Started", "state": "CONDITION_SUCCEEDED"}]

    def finish(self, execution: str, *, exit_code: int = 0, never_started: str | None = None) -> None:
        """End an execution as Cloud Run reports it: succeeded, a task failed with `exit_code`, or never started."""
        with self.lock:
            e = self.executions[execution]
            e["runningCount"] = 0
            e["completionTime"] = _now()
            self._ended(e)
            if never_started is not None:
                e["conditions"] = [
                    {"type": "Completed", "state": "CONDITION_FAILED", "message": never_started},
                    {"type": "ResourcesAvailable", "state": "CONDITION_FAILED", "reason": "CONTAINER_MISSING",
                     "message": never_started},
                ]  # fmt: skip
            elif exit_code == 0:
                e["succeededCount"] = 1
                e["conditions"] = [{"type": "Completed", "state": "CONDITION_SUCCEEDED", "message": ""}]
            else:
                e["failedCount"] = 1
                message = (
                    f"Task {e['job']}-task0 failed with message: The container exited with an exit code of {exit_code}."
                )
                e["conditions"] = [
                    {"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "NON_ZERO_EXIT_CODE",
                     "message": message},
                ]  # fmt: skip

    # -- HTTP --------------------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        route, match = self._route(method, url.path)
        with self.lock:
            self.requests.append((route, url.path))
            if route in self.bodies:
                self.bodies[route].append(body)
            failure = self._failures[route].popleft() if route in self._failures and self._failures[route] else None
            delay = self._delays[route].popleft() if route in self._delays and self._delays[route] else 0.0
            hang = self._hangs[route].popleft() if route in self._hangs and self._hangs[route] else 0.0
        if hang:
            time.sleep(hang)
            failure = 503
        with self._released:
            self._released.wait_for(lambda: route not in self.held, timeout=60)
        if failure is not None:
            self._reply(request, failure, _error(failure, f"scripted {failure} for {route}"))
            return
        with self.lock:
            status, payload = self._serve(route, match, parse_qs(url.query), body)
        if delay:
            time.sleep(delay)
        self._reply(request, status, payload)

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, re.Match[str] | None]:
        table = [
            ("POST", _CANCEL, "cancel_execution"),
            ("POST", _RUN, "run_job"),
            ("GET", _OPERATION, "get_operation"),
            ("GET", _EXECUTIONS, "list_executions"),
            ("GET", _EXECUTION, "get_execution"),
            ("POST", _JOBS, "create_job"),
            ("GET", _JOBS, "list_jobs"),
            ("GET", _JOB, "get_job"),
            ("DELETE", _JOB, "delete_job"),
        ]
        if method == "POST" and path == "/v2/entries:list":
            return "list_entries", None
        for verb, pattern, route in table:
            match = pattern.fullmatch(path)
            if verb == method and match is not None:
                return route, match
        return "unknown", None

    def _serve(
        self, route: str, match: re.Match[str] | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        name = match.group(1) if match else ""
        if route == "create_job":
            job_id = query.get("jobId", [""])[0]
            full = f"{name}/jobs/{job_id}"
            if full in self.jobs:
                return 409, _error(409, f"Resource '{job_id}' already exists.")
            token = body.get("startExecutionToken")
            if token and len(job_id) + len(token) >= 63:
                return 400, _error(400, "The sum of job name and start_execution_token length must be fewer than 63.")
            job = {
                **body,
                "name": full,
                "uid": str(uuid.uuid4()),
                "etag": f'"{uuid.uuid4().hex}"',
                "createTime": _now(),
                "generation": "1",
                "reconciling": False,
            }
            self.jobs[full] = job
            if self.starts_held:
                job["reconciling"] = True
                operation = self._operation(name, job, "Job", done=False)
                self._pending_starts[operation["name"]] = (full, token)
                return 200, operation
            if token and self._start_failures:
                message = self._start_failures.popleft()
                job["terminalCondition"] = {"type": "Ready", "state": "CONDITION_FAILED", "message": message}
                operation = self._operation(name, job, "Job", done=True)
                operation.pop("response")
                operation["error"] = {"code": 8, "message": message}
                return 200, operation
            if token:
                self._start_execution(full, f"{job_id}-{token}")
            return 200, self._operation(name, job, "Job", done=True)
        if route == "list_jobs":
            return 200, {"jobs": [job for key, job in self.jobs.items() if key.startswith(name + "/jobs/")]}
        if route == "get_job":
            return (200, self.jobs[name]) if name in self.jobs else (404, _error(404, f"Resource '{name}' not found."))
        if route == "delete_job":
            if name not in self.jobs:
                return 404, _error(404, f"Resource '{name}' not found.")
            etag = query.get("etag", [""])[0]
            if etag and etag != self.jobs[name].get("etag"):
                return 409, {"error": {"code": 409, "message": "The etag does not match.", "status": "ABORTED"}}
            job = self.jobs.pop(name)
            for execution in [e for e in self.executions if e.startswith(name + "/")]:
                del self.executions[execution]
            return 200, self._operation(name.split("/jobs/")[0], job, "Job", done=True)
        if route == "run_job":
            if name not in self.jobs:
                return 404, _error(404, f"Resource '{name}' not found.")
            job_id = name.rsplit("/", 1)[-1]
            execution = self._start_execution(name, f"{job_id[:40]}-{uuid.uuid4().hex[:5]}")
            return 200, self._operation(name.split("/jobs/")[0], execution, "Execution", done=False)
        if route == "get_operation":
            if name not in self.operations:
                return 404, _error(404, f"Operation '{name}' not found.")
            operation = self.operations[name]
            if name not in self._pending_starts and not operation.get("error"):
                operation["done"] = True
                operation["response"] = operation["metadata"]
            return 200, operation
        if route == "get_execution":
            if name not in self.executions:
                return 404, _error(404, f"Resource '{name}' not found.")
            return 200, self.executions[name]
        if route == "list_executions":
            if name not in self.jobs:
                return 404, _error(404, f"Resource '{name}' not found.")
            found = [e for key, e in self.executions.items() if key.startswith(name + "/executions/")]
            found.sort(key=lambda e: e["createTime"], reverse=True)
            return 200, {"executions": found}
        if route == "cancel_execution":
            if name not in self.executions:
                return 404, _error(404, f"Resource '{name}' not found.")
            e = self.executions[name]
            if "completionTime" not in e:
                e.update(completionTime=_now(), runningCount=0, cancelledCount=1)
                self._ended(e)
                e["conditions"] = [
                    {"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "CANCELLED",
                     "message": "The execution was cancelled."},
                ]  # fmt: skip
            return 200, self._operation(name.split("/jobs/")[0], e, "Execution", done=False)
        if route == "list_entries":
            wanted = str(body.get("filter", ""))
            lines = next((v for k, v in self.log_entries.items() if k.rsplit("/", 1)[-1] in wanted), [])
            return 200, {"entries": [{"textPayload": line, "logName": "x"} for line in lines]}
        return 404, _error(404, "no such route in the stub")

    def _start_execution(self, job_name: str, execution_id: str) -> dict[str, Any]:
        """A new execution of a job (run_job, or the start of a job created with a token); the caller holds the lock."""
        execution_name = f"{job_name}/executions/{execution_id}"
        execution = {
            "name": execution_name,
            "uid": str(uuid.uuid4()),
            "job": job_name.rsplit("/", 1)[-1],
            "createTime": _now(),
            "taskCount": 1,
            "parallelism": 1,
            "labels": dict((self.jobs[job_name].get("template") or {}).get("labels") or {}),
            "logUri": f"https://console.cloud.google.com/logs/viewer?execution={execution_name}",
            "conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}],
        }
        self.executions[execution_name] = execution
        self.started += 1
        if self.start_at_once:
            execution.update(startTime=_now(), runningCount=1)
            execution["conditions"] = [{"type": "Started", "state": "CONDITION_SUCCEEDED"}]
        self.jobs[job_name]["latestCreatedExecution"] = {"name": execution_name, "createTime": execution["createTime"]}
        execution["template"] = (self.jobs[job_name].get("template") or {}).get("template") or {}
        return execution

    def _ended(self, execution: dict[str, Any]) -> None:
        job = self.jobs.get(execution["name"].split("/executions/")[0])
        if job is not None and job.get("latestCreatedExecution", {}).get("name") == execution["name"]:
            job["latestCreatedExecution"]["completionTime"] = execution["completionTime"]

    def _operation(self, location: str, resource: dict[str, Any], kind: str, *, done: bool) -> dict[str, Any]:
        name = f"{location}/operations/{uuid.uuid4()}"
        metadata = {"@type": f"type.googleapis.com/google.cloud.run.v2.{kind}", **resource}
        operation: dict[str, Any] = {"name": name, "metadata": metadata, "done": done}
        if done:
            operation["response"] = metadata
        self.operations[name] = operation
        return operation

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test)


def _error(status: int, message: str) -> dict[str, Any]:
    """Google's JSON error shape, which google-api-core turns into its exception classes."""
    return {"error": {"code": status, "message": message, "status": _STATUS_WORDS.get(status, "UNKNOWN")}}


if __name__ == "__main__":
    # In a process of its own (benchmarks/dispatch_overhead.py): print the endpoint, then serve until stdin closes,
    # answering each line `calls` on stdin with the requests served so far per route, as one JSON line.
    import sys
    from collections import Counter

    with CloudRunStub() as served:
        print(served.endpoint, flush=True)
        for line in sys.stdin:
            if line.strip() == "calls":
                with served.lock:
                    counts = Counter(route for route, _ in served.requests)
                print(json.dumps(counts), flush=True)
