"""Prefect's side of the comparison: run with the Prefect venv's python (`.bench/prefect-venv/bin/python`).

Drives a running Prefect server the way `prefect worker start` does (prefect/workers/base.py):
`get_scheduled_flow_runs_for_work_pool(pool, work_queue_names, scheduled_before=now)`, then, for every run
returned, concurrently: `read_deployment` and `propose_state(client, Pending(), flow_run_id=...)`; an Abort
or a non-Pending answer means the run was not admitted. Nothing is executed: admission only.

    python prefect_side.py SCENARIO --out RESULT.json [options]     (PREFECT_API_URL must be set)
    python prefect_side.py poller                                     (used by scenario C)

Scenarios: w (waterfall), t (throughput), c (over-admission), s (poll cost against backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
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
from prefect.exceptions import Abort, PrefectHTTPStatusError
from prefect.states import Completed, Pending, Scheduled
from prefect.utilities.engine import propose_state

TS = "%Y-%m-%d %H:%M:%S.%f"
"""How Prefect's SQLite database stores a UTC timestamp."""

CREATE_CONCURRENCY = 4
"""Flow runs created at once while setting a scenario up (not timed). More makes Prefect's SQLite say
`database is locked` (HTTP 503) on this machine; a refused creation is retried."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# set-up ------------------------------------------------------------------------------------------------------
async def make_pool(
    client: Any, limit: int | None, queues: list[tuple[str, int, int | None]]
) -> tuple[str, dict[str, Any]]:
    """A process pool with the given (name, priority, limit) queues and one deployment per queue."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=limit))
    for queue, priority, qlimit in queues:
        await client.create_work_queue(name=queue, work_pool_name=name, priority=priority, concurrency_limit=qlimit)
    flow_id = await client.create_flow_from_name("bench-flow")
    deployments = {}
    for queue, _, _ in queues:
        deployments[queue] = await client.create_deployment(
            flow_id=flow_id, name=f"{name}-{queue}", work_pool_name=name, work_queue_name=queue
        )
    return name, deployments


async def retry_5xx(call: Callable[[], Awaitable[Any]], attempts: int = 10) -> Any:
    """Set-up calls are retried when the server answers 5xx (its SQLite says `database is locked`)."""
    for attempt in range(attempts):
        try:
            return await call()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code < 500 or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


async def create_runs(client: Any, deployment_id: Any, times: list[datetime], names: list[str] | None = None) -> None:
    """SCHEDULED flow runs of a deployment at the given times (through the API, CREATE_CONCURRENCY at once)."""
    sem = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(i: int, when: datetime) -> None:
        async with sem:
            await retry_5xx(
                lambda: client.create_flow_run_from_deployment(
                    deployment_id, state=Scheduled(scheduled_time=when), name=names[i] if names else None
                )
            )

    await asyncio.gather(*(one(i, t) for i, t in enumerate(times)))


def clone_runs(db_path: str, template_id: str, times: list[datetime]) -> None:
    """Copies of an API-created SCHEDULED run, one per time, written straight into Prefect's SQLite database.

    Set-up only, never timed: through the API this server creates 7-18 runs/s on a 2-core machine, too slow
    for 10,000-100,000 runs. Each copy is what the API writes for a run (a `flow_run` row and its current
    `flow_run_state` row), with its own ids, name and scheduled time.
    """
    db = sqlite3.connect(db_path, timeout=120)
    db.row_factory = sqlite3.Row
    try:
        run = dict(db.execute("SELECT * FROM flow_run WHERE id = ?", (template_id,)).fetchone())
        state = dict(db.execute("SELECT * FROM flow_run_state WHERE id = ?", (run["state_id"],)).fetchone())
        details = json.loads(state["state_details"])
        now = utcnow().strftime(TS)
        runs, states = [], []
        for when in times:
            run_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
            at = when.astimezone(UTC)
            details.update(flow_run_id=run_id, scheduled_time=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            runs.append(
                {
                    **run,
                    "id": run_id,
                    "name": f"bulk-{run_id[:13]}",
                    "state_id": state_id,
                    "state_name": "Scheduled",
                    "state_timestamp": now,
                    "created": now,
                    "updated": now,
                    "expected_start_time": at.strftime(TS),
                    "next_scheduled_start_time": at.strftime(TS),
                }
            )
            states.append(
                {
                    **state,
                    "id": state_id,
                    "flow_run_id": run_id,
                    "name": "Scheduled",
                    "timestamp": now,
                    "created": now,
                    "updated": now,
                    "state_details": json.dumps(details),
                }
            )
        for table, rows in (("flow_run", runs), ("flow_run_state", states)):
            cols = list(rows[0]) if rows else []
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
            with db:
                for i in range(0, len(rows), 5000):
                    db.executemany(sql, rows[i : i + 5000])
    finally:
        db.close()


def drop_runs(db_path: str | None, pool: str) -> None:
    """Deletes a finished scenario's runs from Prefect's database (not timed), so that the runs it left
    SCHEDULED do not keep the server's late-run service busy during the next scenario."""
    if not db_path:
        return
    runs = (
        "SELECT id FROM flow_run WHERE work_queue_id IN (SELECT q.id FROM work_queue q"
        " JOIN work_pool p ON q.work_pool_id = p.id WHERE p.name = ?)"
    )
    db = sqlite3.connect(db_path, timeout=120)
    try:
        with db:
            db.execute(f"DELETE FROM flow_run_state WHERE flow_run_id IN ({runs})", (pool,))
            db.execute(f"DELETE FROM flow_run WHERE id IN ({runs})", (pool,))
    finally:
        db.close()


async def create_many(client: Any, deployment_id: Any, times: list[datetime], db_path: str | None) -> None:
    """`create_runs`, or, given Prefect's database, one run through the API and the rest as its copies."""
    if not db_path or len(times) <= 5:
        await create_runs(client, deployment_id, times)
        return
    template = await retry_5xx(
        lambda: client.create_flow_run_from_deployment(deployment_id, state=Scheduled(scheduled_time=times[0]))
    )
    await asyncio.to_thread(clone_runs, db_path, str(template.id), times[1:])


# the worker's poll -------------------------------------------------------------------------------------------
ERRORS = {"propose": 0, "poll": 0}
"""Calls that failed (HTTP 5xx: the server's SQLite was locked); a worker logs them and polls again."""


async def propose_pending(client: Any, run: Any) -> bool:
    """What BaseWorker._submit_run does before it starts infrastructure: read the deployment, propose Pending."""
    try:
        if run.deployment_id:
            await client.read_deployment(run.deployment_id)
        state = await propose_state(client, Pending(), flow_run_id=run.id)
    except Abort:
        return False
    except Exception:  # the worker logs it and leaves the run for a later poll
        ERRORS["propose"] += 1
        return False
    return state.is_pending()


async def poll(client: Any, pool: str, queues: list[str] | None = None) -> list[Any]:
    """One worker poll: the runs admitted (moved to Pending)."""
    responses = await client.get_scheduled_flow_runs_for_work_pool(
        work_pool_name=pool, work_queue_names=queues, scheduled_before=utcnow()
    )
    runs = [r.flow_run for r in responses]
    accepted = await asyncio.gather(*(propose_pending(client, r) for r in runs))
    return [r for r, ok in zip(runs, accepted, strict=True) if ok]


async def pending_in_pool(client: Any, pool: str) -> list[Any]:
    return await client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING]))),
        limit=200,
    )


# scenarios ---------------------------------------------------------------------------------------------------
W_QUEUES = [("critical", 1, 1), ("high", 5, 3), ("low", 10, None)]


async def scenario_w(args: argparse.Namespace) -> dict[str, Any]:
    async with get_client() as client:
        pool, deps = await make_pool(client, 5, W_QUEUES)
        t0 = utcnow() - timedelta(minutes=10)
        i = 0
        for queue, _, _ in W_QUEUES:
            names = [f"{queue}-{k}" for k in range(1, 5)]
            times = []
            for _ in names:
                times.append(t0 + timedelta(seconds=i))
                i += 1
            await create_runs(client, deps[queue], times, names)
        rounds: list[list[str]] = []
        for _ in range(args.rounds):
            admitted = await poll(client, pool)
            rounds.append(sorted(r.name for r in admitted))
            for r in admitted:
                await client.set_flow_run_state(r.id, Completed(), force=True)
            if not admitted:
                break
        return {"rounds": rounds}


async def drain(client: Any, pool: str, n: int, cap: float) -> dict[str, Any]:
    """Poll like a worker until `n` runs are admitted or `cap` seconds have passed."""
    admitted = 0
    polls = 0
    start = time.perf_counter()
    while admitted < n and time.perf_counter() - start < cap:
        try:
            admitted += len(await poll(client, pool))
        except PrefectHTTPStatusError:
            ERRORS["poll"] += 1
        polls += 1
    elapsed = time.perf_counter() - start
    return {
        "runs": n,
        "admitted": admitted,
        "seconds": elapsed,
        "polls": polls,
        "per_second": admitted / elapsed,
        "capped": admitted < n,
        "errors": dict(ERRORS),
    }


async def scenario_t(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for rep in range(args.repeat):
        async with get_client() as client:
            pool, deps = await make_pool(client, None, [("q", 1, None)])
            t0 = utcnow() - timedelta(minutes=10)
            setup = time.perf_counter()
            await create_many(client, deps["q"], [t0 + timedelta(milliseconds=i) for i in range(args.n)], args.db)
            await asyncio.sleep(args.settle)
            create_s = time.perf_counter() - setup
            r = await drain(client, pool, args.n, args.cap)
            r["create_seconds"] = create_s
            print(f"  prefect T n={args.n} rep {rep + 1}: {r['per_second']:.1f} runs/s", file=sys.stderr, flush=True)
            results.append(r)
            await asyncio.to_thread(drop_runs, args.db, pool)
    return {
        "n": args.n,
        "repeats": results,
        "per_second": statistics.median(r["per_second"] for r in results),
        "capped": any(r["capped"] for r in results),
    }


async def scenario_s(args: argparse.Namespace) -> dict[str, Any]:
    """Backlog grows through `sizes` (scheduled runs, `due` of them due); poll cost and a full pass at each."""
    out = []
    async with get_client() as client:
        pool, deps = await make_pool(client, None, [("q", 1, None)])
        future = utcnow() + timedelta(days=30)
        have = 0
        for size in args.sizes:
            grow = size - args.due - have
            start = time.perf_counter()
            await create_many(client, deps["q"], [future + timedelta(seconds=have + i) for i in range(grow)], args.db)
            have += grow
            create_s = time.perf_counter() - start
            polls, passes = [], []
            for _ in range(args.repeat):
                due = utcnow() - timedelta(minutes=1)
                times = [due + timedelta(milliseconds=i) for i in range(args.due)]
                await create_many(client, deps["q"], times, args.db)
                for _ in range(2):  # the poll alone: reads the due runs, changes nothing
                    t = time.perf_counter()
                    got = await client.get_scheduled_flow_runs_for_work_pool(
                        work_pool_name=pool, scheduled_before=utcnow()
                    )
                    polls.append(time.perf_counter() - t)
                t = time.perf_counter()
                admitted = await poll(client, pool)  # a full pass: poll + Pending for each due run
                passes.append(time.perf_counter() - t)
                if len(got) != args.due or len(admitted) != args.due:
                    raise RuntimeError(f"expected {args.due} due runs, polled {len(got)}, admitted {len(admitted)}")
            row = {
                "backlog": size,
                "due": args.due,
                "poll_seconds": statistics.median(polls),
                "pass_seconds": statistics.median(passes),
                "create_seconds": create_s,
            }
            print(
                f"  prefect S backlog={size}: poll {row['poll_seconds'] * 1000:.1f} ms, "
                f"pass {row['pass_seconds'] * 1000:.0f} ms (created {grow} runs in {create_s:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            out.append(row)
        await asyncio.to_thread(drop_runs, args.db, pool)
    return {"sizes": out}


# scenario C: four worker processes polling at once ----------------------------------------------------------
async def poller_loop() -> None:
    """Long-lived poller: each stdin line `POOL QUEUE|* DELAY` -> one worker poll -> prints the count admitted."""
    async with get_client() as client:
        await client.read_work_pools()  # warm the connection
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return
            pool, queue, delay = line.split()
            await asyncio.sleep(float(delay))
            try:
                admitted = await poll(client, pool, None if queue == "*" else [queue])
                print(len(admitted), flush=True)
            except Exception as exc:  # report, keep serving
                print(f"error {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)


async def scenario_c(args: argparse.Namespace) -> dict[str, Any]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "poller"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a Prefect poller did not start")
        variants: dict[str, Any] = {}
        async with get_client() as client:
            for scope in ("per-queue", "whole-pool"):
                for delays in (False, True):
                    counts, errors = [], 0
                    for _ in range(args.trials):
                        pool, deps = await make_pool(client, 3, [("first", 1, None), ("second", 2, None)])
                        t0 = utcnow() - timedelta(minutes=5)
                        for q in ("first", "second"):
                            await create_many(client, deps[q], [t0 + timedelta(seconds=i) for i in range(25)], args.db)
                        targets = ["first", "first", "second", "second"] if scope == "per-queue" else ["*"] * 4
                        for p, q in zip(procs, targets, strict=True):
                            assert p.stdin is not None
                            p.stdin.write(f"{pool} {q} {random.uniform(0, args.max_delay) if delays else 0}\n")
                        for p in procs:
                            p.stdin.flush()  # type: ignore[union-attr]
                        for p in procs:
                            answer = p.stdout.readline().strip()  # type: ignore[union-attr]
                            errors += answer.startswith("error")
                        counts.append(len(await pending_in_pool(client, pool)))
                        await asyncio.to_thread(drop_runs, args.db, pool)
                    key = f"{scope}{' +delays' if delays else ''}"
                    variants[key] = {
                        "admitted": counts,
                        "max": max(counts),
                        "mean": statistics.mean(counts),
                        "errors": errors,
                    }
                    print(f"  prefect C {key}: {counts}", file=sys.stderr, flush=True)
        return {"limit": 3, "trials": args.trials, "max_delay": args.max_delay, "variants": variants}
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["w", "t", "c", "s", "poller"])
    parser.add_argument("--out")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--cap", type=float, default=120.0, help="T: seconds of draining before stopping")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--max-delay", type=float, default=0.25)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000])
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--db", help="Prefect's SQLite file: bulk set-up writes copies of an API-created run there")
    parser.add_argument("--settle", type=float, default=5.0, help="T: seconds to wait after set-up, before timing")
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        parser.error("PREFECT_API_URL must point at the running server")
    if args.scenario == "poller":
        asyncio.run(poller_loop())
        return 0
    fn = {"w": scenario_w, "t": scenario_t, "c": scenario_c, "s": scenario_s}[args.scenario]
    result = asyncio.run(fn(args))
    result["errors"] = dict(ERRORS)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
