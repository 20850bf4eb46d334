"""Prefect's side of benchmarks/latency.py: run with the Prefect venv's python (`.bench/prefect-venv/bin/python`).

Against a running `prefect server start` (PREFECT_API_URL), one `prefect worker start --type process` per pool,
at Prefect's default settings (a poll every 10 s, runs fetched up to 10 s ahead of their time). The three
measures run at once on three process pools, and every figure comes from Prefect's own state history
(`read_flow_run_states`): created = the first Scheduled state's timestamp, scheduled = its scheduled_time,
submitted = the Pending state the worker proposes before it starts the process, slot freed = the Completed
state.

The deployments' job runs `true` (the process worker's `command` variable) rather than `python -m
prefect.engine`: everything measured happens before the process starts, and 600 flow engines (about 1.5 s of
CPU each to import Prefect) would take this 2-core machine longer than the whole benchmark may. (b) frees a
slot as a flow's engine does when it ends: Running, then Completed, through the API, a random while after the
run went Pending; the server then admits the next run at the worker's next poll, as it does for a real flow.

    python prefect_side.py --out RESULT.json [sizes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import Completed, Running, Scheduled
from prefect.workers.process import ProcessWorker

CREATE_CONCURRENCY = 4
"""Runs created at once while setting (b) and (c) up; more makes Prefect's SQLite answer 503 on this machine."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def retry_5xx(call: Any, attempts: int = 10) -> Any:
    """A call retried while the server answers 5xx (its SQLite says `database is locked`)."""
    for attempt in range(attempts):
        try:
            return await call()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code < 500 or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


class Worker:
    """`prefect worker start --pool P --type process` in a process group of its own, default settings."""

    def __init__(self, pool: str, home: Path) -> None:
        self.pool = pool
        self.log_path = home / f"worker-{pool}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k in ("PREFECT_API_URL",)}
        env.update(PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open for the worker's whole life
        prefect = Path(sys.executable).parent / "prefect"
        self.proc = subprocess.Popen(
            [str(prefect), "worker", "start", "--pool", pool, "--type", "process"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


async def make_pool(client: Any, name: str, limit: int | None) -> Any:
    """A process pool with the worker's own default template, and a deployment whose job runs `true`."""
    await client.create_work_pool(
        WorkPoolCreate(
            name=name,
            type="process",
            concurrency_limit=limit,
            base_job_template=ProcessWorker.get_default_base_job_template(),
        )
    )
    flow_id = await client.create_flow_from_name("latency-flow")
    return await client.create_deployment(
        flow_id=flow_id, name=f"{name}-flow", work_pool_name=name, job_variables={"command": "true"}
    )


async def history(client: Any, run_id: Any) -> dict[str, Any]:
    """The run's states: first Scheduled (timestamp, scheduled_time), first Pending, first Completed."""
    states = sorted(await retry_5xx(lambda: client.read_flow_run_states(run_id)), key=lambda s: s.timestamp)
    out: dict[str, Any] = {}
    for state in states:
        if state.type == StateType.SCHEDULED and "created" not in out:
            out["created"] = state.timestamp
            out["scheduled"] = state.state_details.scheduled_time
        elif state.type == StateType.PENDING and "pending" not in out:
            out["pending"] = state.timestamp
        elif state.type == StateType.COMPLETED and "completed" not in out:
            out["completed"] = state.timestamp
    return out


async def histories(client: Any, ids: list[Any]) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(8)

    async def one(run_id: Any) -> dict[str, Any]:
        async with sem:
            return await history(client, run_id)

    return list(await asyncio.gather(*(one(i) for i in ids)))


async def runs_in(client: Any, pool: str, state: Any, limit: int = 200) -> list[Any]:
    return await client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state]))),
        limit=limit,
    )


async def wait_for(client: Any, pool: str, ids: list[Any], key: str, timeout: float) -> list[dict[str, Any]]:
    """Each run's history once every run has reached `key`, or as it is when `timeout` seconds have passed.

    Cheap while waiting, since the server is the one being measured: every 2 s one query for a SCHEDULED run
    of the pool, and the histories only once none is left.
    """
    deadline = time.monotonic() + timeout
    while True:
        over = time.monotonic() > deadline
        if over or not await retry_5xx(lambda: runs_in(client, pool, StateType.SCHEDULED, 1)):
            found = await histories(client, ids)
            if all(key in h for h in found) or over:
                return found
        await asyncio.sleep(2)


async def create(client: Any, deployment_id: Any, when: datetime | None = None) -> Any:
    state = Scheduled(scheduled_time=when) if when else Scheduled()
    run = await retry_5xx(lambda: client.create_flow_run_from_deployment(deployment_id, state=state))
    return run.id


def measured(samples: list[float], runs: int, unfinished: int, notes: list[str] | None = None) -> dict[str, Any]:
    return {"samples": samples, "runs": runs, "unfinished": unfinished, "notes": notes or []}


async def measure_adhoc(deployment: Any, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    async with get_client() as client:
        ids = []
        for _ in range(args.adhoc):
            await asyncio.sleep(rng.uniform(*args.gap))
            ids.append(await create(client, deployment))
        found = await wait_for(client, "lat-adhoc", ids, "pending", args.timeout)
    samples = [(h["pending"] - h["created"]).total_seconds() for h in found if "pending" in h]
    return measured(samples, len(ids), len(ids) - len(samples))


async def measure_freed(deployment: Any, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Limit N, N + `freed` runs due at once; each ends (Running, Completed) a random while after going Pending."""
    async with get_client() as client:
        sem = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one() -> Any:
            async with sem:
                return await create(client, deployment)

        ids = list(await asyncio.gather(*(one() for _ in range(args.freed + args.limit))))
        end_at: dict[Any, float] = {}
        ended: set[Any] = set()
        deadline = time.monotonic() + args.timeout
        while len(ended) < len(ids) and time.monotonic() < deadline:
            # Only to play the flows' part (when each one ends); no figure comes from here.
            for run in await retry_5xx(lambda: runs_in(client, "lat-freed", StateType.PENDING)):
                end_at.setdefault(run.id, time.monotonic() + rng.uniform(*args.job_seconds))
            now = time.monotonic()
            for run_id, when in list(end_at.items()):
                if when <= now and run_id not in ended:
                    await retry_5xx(lambda run_id=run_id: client.set_flow_run_state(run_id, Running()))
                    await retry_5xx(lambda run_id=run_id: client.set_flow_run_state(run_id, Completed()))
                    ended.add(run_id)
            await asyncio.sleep(0.5)
        found = await histories(client, ids)
    frees = sorted(h["completed"] for h in found if "completed" in h)
    subs = sorted(h["pending"] for h in found if "pending" in h)
    samples = [(s - f).total_seconds() for f, s in zip(frees, subs[args.limit :], strict=False)][: args.freed]
    return measured(samples, len(ids), len(ids) - len(frees))


async def measure_scheduled(deployment: Any, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    async with get_client() as client:
        start = utcnow() + timedelta(seconds=args.lead)
        sem = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(when: datetime) -> Any:
            async with sem:
                return await create(client, deployment, when)

        times = [start + timedelta(seconds=rng.uniform(0, args.window)) for _ in range(args.scheduled)]
        ids = list(await asyncio.gather(*(one(t) for t in times)))
        found = await wait_for(client, "lat-scheduled", ids, "pending", args.lead + args.window + args.timeout)
    samples = [(h["pending"] - h["scheduled"]).total_seconds() for h in found if "pending" in h]
    late = sum(1 for h in found if h["created"] > h["scheduled"])
    notes = [f"{late} runs were created after their scheduled time (creation too slow)"] if late else []
    return measured(samples, len(ids), len(ids) - len(samples), notes)


async def workers_ready(client: Any, pools: list[str], timeout: float = 120) -> None:
    """Until every pool reads READY: its worker has started and sent its first heartbeat."""
    deadline = time.monotonic() + timeout
    while True:
        states = [(await client.read_work_pool(p)).status for p in pools]
        if all(str(getattr(s, "value", s)).upper() == "READY" for s in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prefect workers not ready after {timeout:g} s: {states}")
        await asyncio.sleep(1)


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    measures = {"a": ("lat-adhoc", None, measure_adhoc), "b": ("lat-freed", args.limit, measure_freed)}
    measures["c"] = ("lat-scheduled", None, measure_scheduled)
    home = Path(os.environ["PREFECT_HOME"])
    results: dict[str, Any] = {}
    workers: list[Worker] = []
    try:
        # The pools first, then their workers (a worker started on a missing pool would create it its own way),
        # then the measures, once every worker polls: a run created earlier would wait for a worker to start.
        async with get_client() as client:
            deployments = {key: await make_pool(client, pool, limit) for key, (pool, limit, _) in measures.items()}
            workers = [Worker(pool, home) for pool, _, _ in measures.values()]
            await workers_ready(client, [pool for pool, _, _ in measures.values()])
        log("  prefect workers ready")

        async def one(key: str, own: random.Random) -> None:
            started = time.monotonic()
            try:
                results[key] = await measures[key][2](deployments[key], args, own)
            except Exception as exc:  # reported as this measure's result, so the others still count
                results[key] = {"error": f"{type(exc).__name__}: {exc}", "samples": []}
            log(f"  prefect ({key}) done in {time.monotonic() - started:.0f} s")

        await asyncio.gather(*(one(key, random.Random(rng.random())) for key in measures))
    finally:
        for worker in workers:
            worker.stop()
    for worker in workers:
        tail = worker.log_path.read_text(errors="replace").splitlines()[-5:]
        results.setdefault("worker_log_tail", {})[worker.pool] = tail
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--adhoc", type=int, default=200)
    parser.add_argument("--freed", type=int, default=200)
    parser.add_argument("--scheduled", type=int, default=200)
    parser.add_argument("--limit", type=int, default=50, help="(b): the pool's concurrency limit")
    parser.add_argument("--gap", type=float, nargs=2, default=(0.05, 1.15), help="(a): seconds between creations")
    parser.add_argument("--job-seconds", type=float, nargs=2, default=(1.0, 12.0), help="(b): how long a run lasts")
    parser.add_argument("--lead", type=float, default=40.0, help="(c): first scheduled time after creation starts")
    parser.add_argument("--window", type=float, default=120.0, help="(c): scheduled times spread over this long")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL") or not os.environ.get("PREFECT_HOME"):
        parser.error("PREFECT_API_URL must point at the running server, PREFECT_HOME at its home")
    # A SIGTERM (the benchmark stopped) unwinds like Ctrl-C, so the workers' process groups are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = asyncio.run(run_all(args))
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
