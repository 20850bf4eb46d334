"""The Lambda service of benchmarks/latency.py's AWS side: each function's instances are processes of their own.

Lambda runs each concurrent invocation of a function in an execution environment of its own and reuses a warm
one for the next invocation. Here an environment is a `lambda_instance.py` process: a `Function` keeps its idle
instances, hands an invocation to one, and starts another (a cold start) when all are busy, up to
`max_instances` (then the invocation queues, as a throttled asynchronous one does). Invocations are synchronous
(`invoke`: API Gateway calling `http`, the SQS poller calling `ecs_events`) or asynchronous (`invoke_async`:
EventBridge's ticks and the `Event` invokes of the dispatch function, which reach `invoke_server`, a local HTTP
server speaking Lambda's Invoke route, through AWS_ENDPOINT_URL_LAMBDA).

Each invocation is recorded: when it was asked for, when its handler started (the difference is Lambda's
invoke-to-start time, cold starts included), when it ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass
class Invocation:
    """One invocation's times (seconds since the epoch) and what the handler answered."""

    kind: str
    asked: float
    started: float = 0.0
    ended: float = 0.0
    answer: Any = None
    error: str | None = None
    cold: bool = False


class Instance:
    """One execution environment: a `lambda_instance.py` process, one invocation at a time."""

    def __init__(self, name: str, handler: str, env: dict[str, str], log_file: Path) -> None:
        full_env = dict(env, _HANDLER=f"handlers/aws_lambda.{handler}", AWS_LAMBDA_FUNCTION_NAME=name)
        full_env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(ROOT)])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "latency_parts.lambda_instance", name, str(log_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=full_env,
        )
        self.stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        self.stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        ready = self.stdout.readline()
        if not ready:
            raise RuntimeError(f"an instance of {name} did not start (see {log_file})")

    def run(self, event: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.stdin.write(json.dumps({"event": event, "timeout": timeout}) + "\n")
        self.stdin.flush()
        line = self.stdout.readline()
        if not line:
            raise RuntimeError("the instance died during an invocation")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        try:
            self.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


class Function:
    """One Lambda function: its warm instances, started on demand, and the record of its invocations."""

    def __init__(
        self, name: str, handler: str, env: dict[str, str], log_file: Path, *, timeout: float, max_instances: int
    ) -> None:
        self.name, self.handler, self.env, self.log_file = name, handler, env, log_file
        self.timeout = timeout
        self.max_instances = max_instances
        self._lock = threading.Condition()
        self._idle: list[Instance] = []
        self._all: list[Instance] = []
        self._starting = 0
        self.started_instances = 0
        """Instances started in all (warm ones included): the function's peak concurrency."""
        self.invocations: list[Invocation] = []
        self._threads: list[threading.Thread] = []

    def warm(self, n: int) -> None:
        """Start `n` instances now (their cold starts outside any measure), in parallel."""
        threads = [threading.Thread(target=self._add_idle) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _add_idle(self) -> None:
        instance = Instance(self.name, self.handler, self.env, self.log_file)
        with self._lock:
            self._all.append(instance)
            self.started_instances += 1
            self._idle.append(instance)
            self._lock.notify()

    def _take(self) -> tuple[Instance, bool]:
        """An idle instance, or a new one (cold) if under the limit; else wait for one to be free."""
        with self._lock:
            while not self._idle and len(self._all) + self._starting >= self.max_instances:
                self._lock.wait()
            if self._idle:
                return self._idle.pop(), False
            self._starting += 1
        try:
            instance = Instance(self.name, self.handler, self.env, self.log_file)
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            self._all.append(instance)
            self.started_instances += 1
        return instance, True

    def _give_back(self, instance: Instance) -> None:
        with self._lock:
            self._idle.append(instance)
            self._lock.notify()

    def invoke(self, event: dict[str, Any], kind: str = "sync") -> Invocation:
        """A synchronous invocation: the caller waits for the handler's answer."""
        record = Invocation(kind=kind, asked=time.time())
        instance, record.cold = self._take()
        try:
            reply = instance.run(event, self.timeout)
        finally:
            self._give_back(instance)
        record.started, record.ended = reply["started"], reply["ended"]
        record.answer, record.error = reply.get("answer"), reply.get("error")
        with self._lock:
            self.invocations.append(record)
        return record

    def invoke_async(self, event: dict[str, Any], kind: str) -> None:
        """An asynchronous invocation (`Event`): queued at once, run on an instance as soon as one is free."""
        thread = threading.Thread(target=self.invoke, args=(event, kind), daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def drain(self, timeout: float) -> None:
        """Wait for the asynchronous invocations under way (a waiting dispatch invocation: up to its timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            instances, self._all, self._idle = list(self._all), [], []
        for instance in instances:
            instance.close()


@contextmanager
def invoke_server(functions: dict[str, Function]) -> Iterator[str]:
    """Lambda's Invoke route on 127.0.0.1 (`POST /2015-03-31/functions/{name}/invocations`): an `Event`
    invoke is answered 202 at once and run as an asynchronous invocation of that function."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.split("/")
            if len(parts) < 5 or parts[1] != "2015-03-31" or parts[2] != "functions" or parts[4] != "invocations":
                self.send_error(404, "not Lambda's Invoke route")
                return
            function = functions.get(parts[3].rsplit(":", 1)[-1])
            if function is None:
                self.send_error(404, f"Function not found: {parts[3]}")
                return
            if self.headers.get("X-Amz-Invocation-Type") != "Event":
                self.send_error(400, "only Event invokes are served here")
                return
            try:
                event = json.loads(body or b"{}")
            except ValueError:
                self.send_error(400, "the payload is not JSON")
                return
            function.invoke_async(event, "invoke")
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="lambda-invoke", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
