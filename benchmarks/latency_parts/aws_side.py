"""The AWS functions' side of benchmarks/latency.py: handlers/aws_lambda.py invoked as Lambda invokes them, each
function's instances in processes of their own (lambda_service.py), DynamoDB and ECS on moto's server (each in
a process of its own, fresh for each measure):

- `dispatch` on a simulated one-minute EventBridge schedule (the deploy files' rate), its first tick at a
  random phase, and on the asynchronous invokes the http and ecs_events functions send it (wake-ups) and it
  sends itself (hand-offs), which reach a local server speaking Lambda's Invoke route. Each invocation runs on
  a warm instance of its own, as Lambda runs overlapping invocations, or on a new one (a cold start).
- `http`: API Gateway (payload 2.0) events, synchronously; runs are created with `POST /deployments/{name}/runs`.
- `ecs_events`: SQS batches of "ECS Task State Change" events; a job "ends" when this side sends its task's
  STOPPED event (exit 0), after a random while, as EventBridge -> SQS would deliver it.

The three measures run one after another, each on a stack of its own (a fresh moto for DynamoDB and for ECS,
fresh instances), so one measure's load is not in another's figures. Every figure is read from the runs'
histories in the DynamoDB store afterwards (see common.py). Beside each measure, where its time went: moto's
own request times (queued behind other requests, and answered), the dispatch passes' durations (the
function's PassDuration metric, from its EMF output) and the invocations' invoke-to-start times. Run by
benchmarks/latency.py with pushpool's venv:

    python -m latency_parts.aws_side --out RESULT.json [sizes]      (cwd or PYTHONPATH: benchmarks/)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks" / "vs_prefect"))

import boto3  # noqa: E402
from ecs_fakes import ACCOUNT, AWS_TEST_ENV, AWS_UNSET, REGION, make_vpc, task_state_change  # noqa: E402
from moto_server import moto_process  # noqa: E402
from test_handlers_aws import http_event, scheduled_event, sqs_batch  # noqa: E402

from dispatcher.deployments import create_deployment  # noqa: E402
from dispatcher.models import utcnow  # noqa: E402
from dispatcher.pools import create_pool  # noqa: E402
from dispatcher.store import open_store  # noqa: E402
from dispatcher.store.base import Store  # noqa: E402

from .common import Measured, freed_at, pair_frees, scheduled_lateness, submitted_at, wait_runs  # noqa: E402
from .lambda_service import Function, invoke_server  # noqa: E402

API_TOKEN = "latency-bench-token"
DISPATCH_TIMEOUT = 50.0
"""The dispatch function's timeout in infra/template.yaml and serverless.yml (seconds)."""
DISPATCH, HTTP, ECS_EVENTS = "pushpool-dispatch", "pushpool-http", "pushpool-ecs-events"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/flows:1"
WARM = {DISPATCH: 4, HTTP: 1, ECS_EVENTS: 1}
"""Instances started before a measure (warm, as after a while of traffic); more start on demand (cold)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Stack:
    """One measure's AWS account: the store (read by this side for the figures), ECS's endpoint, the functions."""

    store: Store
    ecs_endpoint: str
    functions: dict[str, Function]
    moto: dict[str, Any] | None = None
    """moto's request times per service, once the stack is down (the servers report them as they stop)."""

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API Gateway request through the `http` function; the decoded answer."""
        event = http_event(
            method, path, body=json.dumps(body or {}).encode(), headers={"authorization": f"Bearer {API_TOKEN}"}
        )
        done = self.functions[HTTP].invoke(event)
        response = done.answer
        if done.error or response["statusCode"] >= 300:
            raise RuntimeError(f"{method} {path}: {done.error or response}")
        return json.loads(response["body"])

    def stop_task(self, run_id: str, arn: str) -> None:
        """The task's STOPPED event (exit 0) through the `ecs_events` function, as EventBridge -> SQS delivers it."""
        event = task_state_change(arn=arn, run_id=run_id, version=7)
        done = self.functions[ECS_EVENTS].invoke(sqs_batch(json.dumps(event)))
        if done.error or done.answer.get("batchItemFailures"):
            raise RuntimeError(f"the STOPPED event of {run_id} failed: {done.error or done.answer}")


def schedule_ticks(dispatch: Function, stop: threading.Event, tick: float, rng: random.Random) -> None:
    """EventBridge's `rate(1 minute)`: the first tick at a random phase, then one every `tick` seconds."""
    next_at = time.monotonic() + rng.uniform(0, tick)
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        dispatch.invoke_async(scheduled_event(), "tick")
        next_at += tick


@contextmanager
def stack(pool: str, limit: int | None, args: argparse.Namespace, workdir: Path, rng: random.Random) -> Iterator[Stack]:
    """A fresh account for one measure: moto for DynamoDB and for ECS, the pool, warm instances, the ticks."""
    with ExitStack() as cleanup:
        dynamodb = cleanup.enter_context(moto_process())
        ecs = cleanup.enter_context(moto_process())
        functions: dict[str, Function] = {}
        lambda_url = cleanup.enter_context(invoke_server(functions))
        table = f"latency-{uuid.uuid4().hex[:8]}"
        url = f"dynamodb://{table}?" + urlencode({"region": REGION, "endpoint_url": dynamodb.url})
        store = open_store(url)
        store.init()  # type: ignore[attr-defined]
        cleanup.callback(store.close)
        set_up(store, ecs.url, pool, limit)
        env = {k: v for k, v in os.environ.items() if k not in AWS_UNSET}
        env.update(
            AWS_TEST_ENV,
            PUSHPOOL_STORE=url,
            AWS_ENDPOINT_URL=ecs.url,  # ECS and EC2 clients built by pushpool reach moto
            AWS_ENDPOINT_URL_LAMBDA=lambda_url,  # the dispatch function's asynchronous invokes reach the Invoke route
            PUSHPOOL_DISPATCH_FUNCTION=DISPATCH,
            POWERTOOLS_TRACE_DISABLED="true",
            POWERTOOLS_LOG_LEVEL="WARNING",
            PUSHPOOL_API_TOKEN=API_TOKEN,
            PUSHPOOL_CALLBACK_BASE_URL="https://abc123.execute-api.us-east-1.amazonaws.com",
        )
        for name, handler, timeout in ((DISPATCH, "dispatch", DISPATCH_TIMEOUT), (HTTP, "http", 30.0)):
            functions[name] = Function(
                name, handler, env, workdir / f"{pool}.{handler}.log", timeout=timeout, max_instances=args.max_instances
            )
        functions[ECS_EVENTS] = Function(
            ECS_EVENTS, "ecs_events", env, workdir / f"{pool}.ecs_events.log", timeout=30.0, max_instances=1
        )
        for function in functions.values():
            cleanup.callback(function.close)
        for name, function in functions.items():
            function.warm(WARM[name])
        stop = threading.Event()
        ticks = threading.Thread(target=schedule_ticks, args=(functions[DISPATCH], stop, args.tick, rng), daemon=True)
        ticks.start()
        account = Stack(store, ecs.url, functions)
        try:
            yield account
        finally:
            stop.set()
            ticks.join()
            functions[DISPATCH].drain(DISPATCH_TIMEOUT + 10)
    # The moto processes have stopped and reported their request times.
    account.moto = {"dynamodb": dynamodb.stats, "ecs": ecs.stats}


# measures -----------------------------------------------------------------------------------------------------
def measure_adhoc(account: Stack, args: argparse.Namespace, rng: random.Random) -> Measured:
    ids = []
    for _ in range(args.adhoc):
        time.sleep(rng.uniform(*args.gap))
        ids.append(str(account.http("POST", "/deployments/lat-adhoc-flow/runs")["id"]))
    runs = wait_runs(account.store, "lat-adhoc", ids, lambda r: submitted_at(r) is not None, args.timeout)
    out = Measured(runs=len(ids))
    for run in runs:
        at = submitted_at(run)
        if at is None:
            out.unfinished += 1
        else:
            out.samples.append((at - run.created).total_seconds())
    return out


def measure_freed(account: Stack, args: argparse.Namespace, rng: random.Random) -> Measured:
    """Limit N, N + `freed` runs due at once; each task "runs" a random while, then its STOPPED event frees it."""
    store = account.store
    ids = [str(account.http("POST", "/deployments/lat-freed-flow/runs")["id"]) for _ in range(args.freed + args.limit)]
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
                account.stop_task(run_id, arn)
                stopped.add(run_id)
        time.sleep(0.5)
    runs = wait_runs(store, "lat-freed", ids, lambda r: freed_at(r) is not None, 30, drained=True)
    frees = [at for at in (freed_at(r) for r in runs) if at is not None]
    subs = [at for at in (submitted_at(r) for r in runs) if at is not None]
    out = Measured(runs=len(ids), unfinished=len(ids) - len(frees))
    out.samples = pair_frees(frees, subs, args.limit)[: args.freed]
    return out


def measure_scheduled(account: Stack, args: argparse.Namespace, rng: random.Random) -> Measured:
    start = utcnow() + timedelta(seconds=args.lead)
    ids = []
    for _ in range(args.scheduled):
        at = start + timedelta(seconds=rng.uniform(0, args.window))
        ids.append(
            str(account.http("POST", "/deployments/lat-scheduled-flow/runs", {"scheduled_time": at.isoformat()})["id"])
        )
    runs = wait_runs(
        account.store,
        "lat-scheduled",
        ids,
        lambda r: submitted_at(r) is not None,
        args.lead + args.window + args.timeout,
    )
    return scheduled_lateness(runs, len(ids))


# the account ----------------------------------------------------------------------------------------------------
def set_up(store: Store, ecs_endpoint: str, pool: str, limit: int | None) -> None:
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=ecs_endpoint)
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=ecs_endpoint)
    vpc_id, _ = make_vpc(ec2, "10.60.0.0/16", ["10.60.1.0/24"])
    cluster = "latency-bench"
    ecs.create_cluster(clusterName=cluster)
    variables = {"image": IMAGE, "cluster": cluster, "vpc_id": vpc_id}
    create_pool(store, pool, type="ecs:push", concurrency_limit=limit, job_variables=variables)
    create_deployment(store, f"{pool}-flow", pool=pool, job_variables={"command": "pushpool-run -- true"})


# where the time went ------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, Any]:
    """n, p50, p99 and max (nearest rank, as benchmarks/latency.py's figures)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def rank(q: float) -> float:
        return ordered[max(1, math.ceil(q * len(ordered))) - 1]

    return {"n": len(ordered), "p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1]}


def pass_durations(log_file: Path) -> list[float]:
    """Every dispatch pass's duration, from the function's EMF output (its PassDuration metric)."""
    durations: list[float] = []
    if not log_file.exists():
        return durations
    for line in log_file.read_text().splitlines():
        if '"PassDuration"' not in line or not line.startswith("{"):
            continue
        try:
            value = json.loads(line).get("PassDuration")
        except ValueError:
            continue
        durations += [float(v) for v in (value if isinstance(value, list) else [value])]
    return durations


def where_the_time_went(account: Stack, log_file: Path) -> dict[str, Any]:
    dispatch = account.functions[DISPATCH]
    calls = dispatch.invocations
    return {
        "moto": account.moto,
        "passes": spread(pass_durations(log_file)),
        "invoke_to_start": spread([c.started - c.asked for c in calls if c.kind == "invoke"]),
        "invocations": {
            kind: {
                "count": sum(1 for c in calls if c.kind == kind),
                "seconds": round(sum(c.ended - c.started for c in calls if c.kind == kind), 2),
                "cold": sum(1 for c in calls if c.kind == kind and c.cold),
                "errors": sorted({str(c.error) for c in calls if c.kind == kind and c.error})[:3],
            }
            for kind in ("tick", "invoke")
        },
        "dispatch_instances": dispatch.started_instances,
    }


MEASURES: dict[str, tuple[str, Callable[[argparse.Namespace], int | None], Any]] = {
    "a": ("lat-adhoc", lambda args: None, measure_adhoc),
    "b": ("lat-freed", lambda args: args.limit, measure_freed),
    "c": ("lat-scheduled", lambda args: None, measure_scheduled),
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    for key in AWS_UNSET:
        os.environ.pop(key, None)
    os.environ.update(AWS_TEST_ENV)
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}
    totals = {kind: {"count": 0, "seconds": 0.0} for kind in ("tick", "invoke")}
    args.workdir.mkdir(parents=True, exist_ok=True)
    for key, (pool, limit, measure) in MEASURES.items():
        started = time.monotonic()
        own = random.Random(rng.random())
        account: Stack | None = None
        try:
            with stack(pool, limit(args), args, args.workdir, random.Random(own.random())) as account:
                measured = measure(account, args, own)
            results[key] = measured.as_dict()
        except Exception as exc:  # reported as this measure's result, so the others still count
            results[key] = {"error": f"{type(exc).__name__}: {exc}", "samples": []}
        if account is not None:
            results[key]["where"] = where = where_the_time_went(account, args.workdir / f"{pool}.dispatch.log")
            for kind, figures in where["invocations"].items():
                totals[kind]["count"] += figures["count"]
                totals[kind]["seconds"] += figures["seconds"]
        log(f"  aws ({key}) done in {time.monotonic() - started:.0f} s")
    results["invocations"] = {k: {"count": v["count"], "seconds": round(v["seconds"], 2)} for k, v in totals.items()}
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, help="the functions' logs (default: beside --out)")
    parser.add_argument("--adhoc", type=int, default=200)
    parser.add_argument("--freed", type=int, default=200)
    parser.add_argument("--scheduled", type=int, default=200)
    parser.add_argument("--limit", type=int, default=40, help="(b): the pool's concurrency limit")
    parser.add_argument("--tick", type=float, default=60.0, help="seconds between scheduled dispatch invocations")
    parser.add_argument("--gap", type=float, nargs=2, default=(0.05, 1.15), help="(a): seconds between creations")
    parser.add_argument("--job-seconds", type=float, nargs=2, default=(1.0, 30.0), help="(b): how long a task runs")
    parser.add_argument("--lead", type=float, default=30.0, help="(c): first scheduled time after creation")
    parser.add_argument("--window", type=float, default=120.0, help="(c): scheduled times spread over this long")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--max-instances", type=int, default=24, help="concurrent instances per function, at most")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    args.workdir = args.workdir or args.out.parent / "aws-functions"
    return args


def main() -> int:
    args = parse()
    results = run(args)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
