"""The AWS functions' side of benchmarks/latency.py: handlers/aws_lambda.py invoked as Lambda invokes them,
DynamoDB and ECS on moto's server (each in a process of its own), in this process the three functions:

- `dispatch` on a simulated one-minute EventBridge schedule (the deploy files' rate), its first tick at a
  random phase; each tick is an invocation on a thread of its own, as Lambda runs an overlapping tick in
  another instance. When the http and ecs_events functions invoke `dispatch` asynchronously (wake-ups), the
  invoke reaches a local HTTP server that speaks Lambda's Invoke route (`POST /2015-03-31/functions/
  {name}/invocations`, `X-Amz-Invocation-Type: Event` answered 202) and runs the invocation the same way.
- `http`: API Gateway (payload 2.0) events; runs are created with `POST /deployments/{name}/runs`.
- `ecs_events`: SQS batches of "ECS Task State Change" events; a job "ends" when this side sends its task's
  STOPPED event (exit 0), after a random while, as EventBridge -> SQS would deliver it.

The three measures run at once on three ecs:push pools; every figure is read from the runs' histories in the
DynamoDB store afterwards (see common.py). Run by benchmarks/latency.py with pushpool's venv:

    python -m latency_parts.aws_side --out RESULT.json [sizes]      (cwd or PYTHONPATH: benchmarks/)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import boto3  # noqa: E402
from ecs_fakes import ACCOUNT, AWS_TEST_ENV, AWS_UNSET, REGION, make_vpc, task_state_change  # noqa: E402
from test_handlers_aws import LambdaContext, http_event, scheduled_event, sqs_batch  # noqa: E402

from dispatcher.deployments import create_deployment  # noqa: E402
from dispatcher.models import utcnow  # noqa: E402
from dispatcher.pools import create_pool  # noqa: E402
from dispatcher.store import open_store  # noqa: E402
from dispatcher.store.base import Store  # noqa: E402

from .common import Measured, freed_at, pair_frees, scheduled_lateness, submitted_at, wait_runs  # noqa: E402

API_TOKEN = "latency-bench-token"
DISPATCH_TIMEOUT = 50.0
"""The dispatch function's timeout in infra/template.yaml and serverless.yml (seconds)."""
DISPATCH_FUNCTION = "pushpool-dispatch"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/flows:1"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def moto_process() -> Iterator[str]:
    """benchmarks/vs_prefect/moto_server.py: moto answering one request at a time, in its own process."""
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "vs_prefect" / "moto_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


class Invocation(LambdaContext):
    """A dispatch invocation's context whose remaining time counts down from the function's timeout, as Lambda's
    does: the function plans its waits within the coming minute by it."""

    def __init__(self) -> None:
        super().__init__(DISPATCH_FUNCTION)
        self.deadline = time.monotonic() + DISPATCH_TIMEOUT

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class Invocations:
    """The dispatch function's invocations: each on a thread of its own, counted and timed (Lambda's bill)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_kind: dict[str, list[float]] = {"tick": [], "invoke": []}
        self.threads: list[threading.Thread] = []

    def start(self, kind: str, event: dict[str, Any]) -> None:
        from handlers import aws_lambda

        def run() -> None:
            started = time.monotonic()
            try:
                aws_lambda.dispatch(event, Invocation())
            except Exception as exc:  # Lambda records the error; the next tick runs anyway
                log(f"dispatch ({kind}) failed: {type(exc).__name__}: {exc}")
            with self.lock:
                self.by_kind[kind].append(time.monotonic() - started)

        thread = threading.Thread(target=run, name=f"dispatch-{kind}", daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {kind: {"count": len(d), "seconds": round(sum(d), 2)} for kind, d in self.by_kind.items()}


@contextmanager
def lambda_invoke_server(invocations: Invocations) -> Iterator[str]:
    """Lambda's Invoke route on 127.0.0.1: an `Event` invoke of the dispatch function is answered 202 and run."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.split("/")
            if len(parts) < 5 or parts[1] != "2015-03-31" or parts[2] != "functions" or parts[4] != "invocations":
                self.send_error(404, "not Lambda's Invoke route")
                return
            try:
                event = json.loads(body or b"{}")
            except ValueError:
                self.send_error(400, "the payload is not JSON")
                return
            invocations.start("invoke", event)
            asynchronous = self.headers.get("X-Amz-Invocation-Type", "RequestResponse") == "Event"
            self.send_response(202 if asynchronous else 200)
            self.send_header("Content-Type", "application/json")
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


def schedule_ticks(invocations: Invocations, stop: threading.Event, tick: float, rng: random.Random) -> None:
    """EventBridge's `rate(1 minute)`: the first tick at a random phase, then one every `tick` seconds."""
    next_at = time.monotonic() + rng.uniform(0, tick)
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        invocations.start("tick", scheduled_event())
        next_at += tick


HTTP_INSTANCE = threading.Lock()
ECS_EVENTS_INSTANCE = threading.Lock()
"""One warm instance of each function: an instance handles one invocation at a time (and powertools' resolver
keeps the current event on itself), so the measures' threads take turns, as queued requests would."""


def http(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One API Gateway request through the `http` function, as Lambda would hand it over; the decoded answer."""
    from handlers import aws_lambda

    event = http_event(
        method,
        path,
        body=json.dumps(body or {}).encode(),
        headers={"authorization": f"Bearer {API_TOKEN}"},
    )
    with HTTP_INSTANCE:
        response = aws_lambda.http(event, LambdaContext("pushpool-http"))
    if response["statusCode"] >= 300:
        raise RuntimeError(f"{method} {path}: {response['statusCode']} {response.get('body')}")
    return json.loads(response["body"])


def stop_task(run_id: str, arn: str) -> None:
    """The task's STOPPED event (exit 0) through the `ecs_events` function, as EventBridge -> SQS delivers it."""
    from handlers import aws_lambda

    event = task_state_change(arn=arn, run_id=run_id, version=7)
    with ECS_EVENTS_INSTANCE:
        answer = aws_lambda.ecs_events(sqs_batch(json.dumps(event)), LambdaContext("pushpool-ecs-events"))
    if answer.get("batchItemFailures"):
        raise RuntimeError(f"the STOPPED event of {run_id} failed: {answer}")


# measures -----------------------------------------------------------------------------------------------------
def measure_adhoc(store: Store, args: argparse.Namespace, rng: random.Random) -> Measured:
    ids = []
    for _ in range(args.adhoc):
        time.sleep(rng.uniform(*args.gap))
        ids.append(str(http("POST", "/deployments/lat-adhoc-flow/runs")["id"]))
    runs = wait_runs(store, "lat-adhoc", ids, lambda r: submitted_at(r) is not None, args.timeout)
    out = Measured(runs=len(ids))
    for run in runs:
        at = submitted_at(run)
        if at is None:
            out.unfinished += 1
        else:
            out.samples.append((at - run.created).total_seconds())
    return out


def measure_freed(store: Store, args: argparse.Namespace, rng: random.Random) -> Measured:
    """Limit N, N + `freed` runs due at once; each task "runs" a random while, then its STOPPED event frees it."""
    ids = [str(http("POST", "/deployments/lat-freed-flow/runs")["id"]) for _ in range(args.freed + args.limit)]
    stop_at: dict[str, tuple[float, str]] = {}
    stopped: set[str] = set()
    deadline = time.monotonic() + args.timeout
    while len(stopped) < len(ids) and time.monotonic() < deadline:
        # Only to play the tasks' part (when each one ends); no figure comes from here.
        for run in store.active_runs("lat-freed", limit=1000):
            if run.infrastructure_id and run.id not in stop_at:
                stop_at[run.id] = (time.monotonic() + rng.uniform(*args.job_seconds), run.infrastructure_id)
        now = time.monotonic()
        for run_id, (when, arn) in list(stop_at.items()):
            if when <= now and run_id not in stopped:
                stop_task(run_id, arn)
                stopped.add(run_id)
        time.sleep(0.5)
    runs = wait_runs(store, "lat-freed", ids, lambda r: freed_at(r) is not None, 30, drained=True)
    frees = [at for at in (freed_at(r) for r in runs) if at is not None]
    subs = [at for at in (submitted_at(r) for r in runs) if at is not None]
    out = Measured(runs=len(ids), unfinished=len(ids) - len(frees))
    out.samples = pair_frees(frees, subs, args.limit)[: args.freed]
    return out


def measure_scheduled(store: Store, args: argparse.Namespace, rng: random.Random) -> Measured:
    start = utcnow() + timedelta(seconds=args.lead)
    ids = []
    for _ in range(args.scheduled):
        at = start + timedelta(seconds=rng.uniform(0, args.window))
        ids.append(str(http("POST", "/deployments/lat-scheduled-flow/runs", {"scheduled_time": at.isoformat()})["id"]))
    runs = wait_runs(
        store, "lat-scheduled", ids, lambda r: submitted_at(r) is not None, args.lead + args.window + args.timeout
    )
    return scheduled_lateness(runs, len(ids))


# the account ----------------------------------------------------------------------------------------------------
def set_up(store: Store, ecs_endpoint: str, args: argparse.Namespace) -> None:
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=ecs_endpoint)
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=ecs_endpoint)
    vpc_id, _ = make_vpc(ec2, "10.60.0.0/16", ["10.60.1.0/24"])
    cluster = "latency-bench"
    ecs.create_cluster(clusterName=cluster)
    variables = {"image": IMAGE, "cluster": cluster, "vpc_id": vpc_id}
    for pool, limit in (("lat-adhoc", None), ("lat-freed", args.limit), ("lat-scheduled", None)):
        create_pool(store, pool, type="ecs:push", concurrency_limit=limit, job_variables=variables)
        create_deployment(store, f"{pool}-flow", pool=pool, job_variables={"command": "pushpool-run -- true"})


def run(args: argparse.Namespace) -> dict[str, Any]:
    for key in AWS_UNSET:
        os.environ.pop(key, None)
    os.environ.update(AWS_TEST_ENV)
    rng = random.Random(args.seed)
    invocations = Invocations()
    results: dict[str, Any] = {}
    with moto_process() as dynamodb, moto_process() as ecs_endpoint, lambda_invoke_server(invocations) as lam:
        table = f"latency-{uuid.uuid4().hex[:8]}"
        url = f"dynamodb://{table}?" + urlencode({"region": REGION, "endpoint_url": dynamodb})
        os.environ.update(
            PUSHPOOL_STORE=url,
            AWS_ENDPOINT_URL=ecs_endpoint,  # ECS and EC2 clients built by pushpool reach moto
            AWS_ENDPOINT_URL_LAMBDA=lam,  # the dispatch function's asynchronous invokes reach the local Invoke route
            PUSHPOOL_DISPATCH_FUNCTION=DISPATCH_FUNCTION,
            POWERTOOLS_TRACE_DISABLED="true",
            POWERTOOLS_LOG_LEVEL="WARNING",
            PUSHPOOL_API_TOKEN=API_TOKEN,
            PUSHPOOL_CALLBACK_BASE_URL="https://abc123.execute-api.us-east-1.amazonaws.com",
        )
        store = open_store(url)
        store.init()  # type: ignore[attr-defined]
        set_up(store, ecs_endpoint, args)
        from handlers import aws_lambda

        aws_lambda.reset_runtime()
        stop = threading.Event()
        ticks = threading.Thread(
            target=schedule_ticks, args=(invocations, stop, args.tick, random.Random(rng.random())), daemon=True
        )
        ticks.start()
        measures = {"a": measure_adhoc, "b": measure_freed, "c": measure_scheduled}

        def one(key: str, own: random.Random) -> None:
            started = time.monotonic()
            try:
                results[key] = measures[key](store, args, own).as_dict()
            except Exception as exc:  # reported as this measure's result, so the others still count
                results[key] = {"error": f"{type(exc).__name__}: {exc}", "samples": []}
            log(f"  aws ({key}) done in {time.monotonic() - started:.0f} s")

        threads = [
            threading.Thread(target=one, args=(key, random.Random(rng.random())), name=f"aws-{key}") for key in measures
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        ticks.join()
        for thread in list(invocations.threads):
            thread.join(timeout=90)
        results["invocations"] = invocations.summary()
        aws_lambda.reset_runtime()
        store.close()
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--adhoc", type=int, default=200)
    parser.add_argument("--freed", type=int, default=200)
    parser.add_argument("--scheduled", type=int, default=200)
    parser.add_argument("--limit", type=int, default=40, help="(b): the pool's concurrency limit")
    parser.add_argument("--tick", type=float, default=60.0, help="seconds between scheduled dispatch invocations")
    parser.add_argument("--gap", type=float, nargs=2, default=(0.05, 1.15), help="(a): seconds between creations")
    parser.add_argument("--job-seconds", type=float, nargs=2, default=(1.0, 30.0), help="(b): how long a task runs")
    parser.add_argument("--lead", type=float, default=15.0, help="(c): first scheduled time after creation")
    parser.add_argument("--window", type=float, default=120.0, help="(c): scheduled times spread over this long")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=16)
    return parser.parse_args(argv)


def main() -> int:
    args = parse()
    results = run(args)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
