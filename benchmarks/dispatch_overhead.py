"""What a dispatch pass costs on top of the ECS, Cloud Run and ACI calls it exists to make.

N runs (default 50) of an `ecs:push` pool are dispatched to moto's ECS by one `Dispatcher.run_pass()`
(schedule, reconcile, admit atomically, render, validate, submit with the dispatcher's thread pool, record),
against the same N RunTask calls made directly with boto3 against the same server, with the same task
definition, network configuration, overrides and tags, and the same concurrency as the dispatcher's
submit pool. moto runs in its own process (`python -m moto.server` on 127.0.0.1); the store is SQLite in a
temporary directory, so the figure is pushpool's overhead, not a network's.

Each figure is the median of --repeat rounds, after one warm-up round (clients built, task definition
registered: what a warm Lambda instance has). Between rounds the runs are ended, so every pass starts
with no active runs. Target (issue 5): pass / raw <= 1.3; prints PASS or FAIL and the ECS calls per run (a first
submission makes one RunTask; the orphan lookup by startedBy runs only on re-submissions).

The same for a `cloud-run-v2:push` pool: N runs through one pass against the local Cloud Run stub
(tests/cloud_run_stub.py, in its own process), vs the same raw google-cloud-run calls a first submission
makes (create_job with a startExecutionToken, whose operation starts the execution and which the stub completes
at once) with the same clients' settings and concurrency. Target (issue 12): pass / raw <= 1.3.

The same for an `azure-container-instance:push` pool against the ARM stub (tests/aci_stub.py, in its own
process) vs raw container group PUTs with the Azure SDK; see benchmarks/aci_overhead.py. Target (issue 13):
pass / raw <= 1.3.

    .venv/bin/python benchmarks/dispatch_overhead.py [-n 50] [--repeat 3] [--only ecs|cloud-run|aci]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.3
REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:7"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in a process of its own (so it does not share this one's GIL), on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def count_calls(client: Any) -> Counter[str]:
    """ECS operations made through `client`, counted by a botocore event hook."""
    counts: Counter[str] = Counter()

    def record(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    client.meta.events.register("before-call.ecs.*", record)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="runs per pass")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median)")
    parser.add_argument("--only", choices=["ecs", "cloud-run", "aci"], help="one provider (default: all)")
    args = parser.parse_args()
    os.environ.update(AWS_ENV)
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(key, None)

    failed = 0
    if args.only in (None, "ecs"):
        with moto_server() as url, tempfile.TemporaryDirectory() as tmp:
            os.environ["AWS_ENDPOINT_URL"] = url
            failed |= bench(url, Path(tmp), args.n, args.repeat)
    if args.only in (None, "cloud-run"):
        from cloud_run_overhead import bench_cloud_run

        if args.only is None:
            print()
        with tempfile.TemporaryDirectory() as tmp:
            failed |= bench_cloud_run(Path(tmp), args.n, args.repeat)
    if args.only in (None, "aci"):
        from aci_overhead import bench_aci

        if args.only is None:
            print()
        with tempfile.TemporaryDirectory() as tmp:
            failed |= bench_aci(Path(tmp), args.n, args.repeat)
    return failed


def bench(url: str, tmp: Path, n: int, repeat: int) -> int:
    import boto3
    from botocore.config import Config

    from dispatcher.deployments import create_deployment, run_deployment
    from dispatcher.dispatch import Dispatcher
    from dispatcher.pools import create_pool
    from dispatcher.provider_events import apply_status
    from dispatcher.providers.base import JobState, JobStatus, Providers
    from dispatcher.providers.ecs import ECSProvider
    from dispatcher.store.sqlite import SQLiteStore

    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=url, config=Config(retries={"max_attempts": 1}))
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.1.0/24")["Subnet"]["SubnetId"]
    network = {"subnets": [subnet], "securityGroups": [], "assignPublicIp": "ENABLED"}
    ecs.create_cluster(clusterName="bench")

    store = SQLiteStore(str(tmp / "pushpool.db"))
    create_pool(
        store,
        "bench",
        type="ecs:push",
        job_variables={"image": IMAGE, "cluster": "bench", "network_configuration": network},
    )
    create_deployment(
        store,
        "nightly",
        pool="bench",
        job_variables={"command": "pushpool-run -- python -m flows.nightly", "env": {"MODE": "full"}},
        parameters={"day": "2026-03-01"},
    )
    provider = ECSProvider()  # reaches moto through AWS_ENDPOINT_URL, as a Lambda's would reach ECS
    dispatcher = Dispatcher(store, providers=Providers({"ecs:push": provider}), callback_base_url="https://cb.example")
    workers = dispatcher.settings.submit_concurrency
    raw_pool = ThreadPoolExecutor(max_workers=workers)

    def end_all(run_ids: list[str]) -> None:
        for run_id in run_ids:
            apply_status(store, run_id, JobStatus(JobState.COMPLETED, exit_code=0), source=f"bench:{run_id}")

    def one_pass(count: int) -> tuple[float, list[str]]:
        runs = [run_deployment(store, "nightly").id for _ in range(count)]
        start = time.perf_counter()
        summary = dispatcher.run_pass()
        elapsed = time.perf_counter() - start
        if sorted(summary.submitted) != sorted(runs):
            raise RuntimeError(f"the pass did not submit every run: {summary.headline()}; {summary.problems}")
        end_all(runs)
        return elapsed, runs

    warm_seconds, warm_runs = one_pass(1)  # clients built, task definition registered
    warm = store.get_run(warm_runs[0])
    assert warm is not None and warm.infrastructure_id is not None
    described = ecs.describe_tasks(cluster="bench", tasks=[warm.infrastructure_id])
    task_definition = described["tasks"][0]["taskDefinitionArn"]

    def raw_request() -> dict[str, Any]:
        run_id = str(uuid.uuid4())
        env = {
            "MODE": "full",
            "PUSHPOOL_RUN_ID": run_id,
            "PUSHPOOL_DEPLOYMENT": "nightly",
            "PUSHPOOL_POOL": "bench",
            "PUSHPOOL_QUEUE": "default",
            "PUSHPOOL_PARAMETERS": '{"day": "2026-03-01"}',
            "PUSHPOOL_CALLBACK_URL": f"https://cb.example/callbacks/runs/{run_id}",
            "PUSHPOOL_CALLBACK_TOKEN": uuid.uuid4().hex * 2,
        }
        return {
            "cluster": "bench",
            "taskDefinition": task_definition,
            "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": network},
            "overrides": {
                "containerOverrides": [
                    {
                        "name": "pushpool",
                        "command": ["pushpool-run", "--", "python", "-m", "flows.nightly"],
                        "environment": [{"name": k, "value": v} for k, v in env.items()],
                    }
                ]
            },
            "tags": [
                {"key": "Name", "value": f"nightly-{run_id[:8]}"},
                {"key": "pushpool.io/run-id", "value": run_id},
                {"key": "pushpool.io/pool", "value": "bench"},
                {"key": "pushpool.io/deployment", "value": "nightly"},
            ],
            "startedBy": run_id,
            "clientToken": f"{run_id}-1",
        }

    def raw(count: int, concurrent: bool) -> float:
        requests = [raw_request() for _ in range(count)]
        start = time.perf_counter()
        if concurrent:
            answers = list(raw_pool.map(lambda r: ecs.run_task(**r), requests))
        else:
            answers = [ecs.run_task(**r) for r in requests]
        elapsed = time.perf_counter() - start
        assert all(a["tasks"] for a in answers)
        return elapsed

    raw(1, concurrent=False)  # warm-up

    calls = count_calls(provider.client)
    passes, raws, raws_sequential = [], [], []
    for _ in range(repeat):
        passes.append(one_pass(n)[0])
        raws.append(raw(n, concurrent=True))
        raws_sequential.append(raw(n, concurrent=False))
    per_run = {op: count / (n * repeat) for op, count in sorted(calls.items())}

    dispatcher.close()
    raw_pool.shutdown()

    pass_s, raw_s = statistics.median(passes), statistics.median(raws)
    seq_s = statistics.median(raws_sequential)
    ratio = pass_s / raw_s
    print(f"dispatch overhead: {n} runs per pass, moto ECS in its own process, SQLite store, median of {repeat}")
    print(f"(warm-up pass of 1 run, registering the task definition: {warm_seconds * 1000:.0f} ms)")
    print()
    print(f"{'what':62} {'total ms':>9} {'ms/run':>7}")
    rows = [
        (f"raw RunTask x{n}, {workers} threads (the baseline)", raw_s),
        (f"raw RunTask x{n}, one after another", seq_s),
        (f"run_pass(): {n} runs admitted, rendered, submitted, recorded", pass_s),
    ]
    for what, seconds in rows:
        print(f"{what:62} {seconds * 1000:9.0f} {seconds * 1000 / n:7.1f}")
    print()
    print("ECS calls per run in a pass: " + ", ".join(f"{op} {count:.2f}" for op, count in per_run.items()))
    print()
    print(f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}  pass / raw = {ratio:.2f} (target <= {TARGET_RATIO})")
    if ratio > TARGET_RATIO:
        print(
            "      where the rest goes: the store's admission and recording writes, rendering and validation, "
            "and any ECS call per run beyond the baseline's one RunTask (listed above)"
        )
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
