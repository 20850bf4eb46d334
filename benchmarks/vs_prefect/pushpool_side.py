"""pushpool's side of the comparison: the same scenarios, each pass being `admit_pool` (what a dispatch pass
does for admission; nothing is submitted). Runs with pushpool's venv, on SQLite or on DynamoDB (moto).

    python pushpool_side.py poller      (used by scenario C: one process per dispatcher)
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from dispatcher.admit_pass import admit_pool
from dispatcher.deployments import create_deployment
from dispatcher.models import Deployment, FlowRun, utcnow
from dispatcher.pools import create_pool, create_queue
from dispatcher.states import StateType
from dispatcher.store import open_store
from dispatcher.store.base import Store

StoreFactory = Callable[[], Store]
"""A fresh, empty store (a new SQLite file, or a new DynamoDB table)."""


def make_pool(
    store: Store, limit: int | None, queues: list[tuple[str, int, int | None]]
) -> tuple[str, dict[str, Deployment]]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    create_pool(store, name, concurrency_limit=limit)
    deployments = {}
    for queue, priority, qlimit in queues:
        if queue != "default":
            create_queue(store, name, queue, priority=priority, concurrency_limit=qlimit)
        deployments[queue] = create_deployment(store, f"{name}-{queue}", pool=name, queue=queue)
    return name, deployments


def runs(deployment: Deployment, times: list[datetime], names: list[str] | None = None) -> list[FlowRun]:
    out = []
    for i, when in enumerate(times):
        run_id = str(uuid.uuid4())
        out.append(
            FlowRun(
                id=run_id,
                name=names[i] if names else f"{deployment.name}-{run_id[:8]}",
                deployment=deployment.name,
                deployment_id=deployment.id,
                pool=deployment.pool,
                queue=deployment.queue,
                scheduled_time=when,
            )
        )
    return out


def create(store: Store, deployment: Deployment, times: list[datetime], names: list[str] | None = None) -> None:
    batch = runs(deployment, times, names)
    for i in range(0, len(batch), 1000):
        store.create_runs(batch[i : i + 1000])


def complete(store: Store, admitted: list[FlowRun]) -> None:
    for run in admitted:
        for state in (StateType.RUNNING, StateType.COMPLETED):
            current = store.get_run(run.id)
            assert current is not None
            if not store.save_run(current, current.moved(state, source="bench")[0]):
                raise RuntimeError(f"could not move run {run.name} to {state.value}")


# scenarios ---------------------------------------------------------------------------------------------------
W_QUEUES = [("critical", 1, 1), ("high", 5, 3), ("low", 10, None)]


def scenario_w(new_store: StoreFactory, rounds: int = 6) -> dict[str, Any]:
    store = new_store()
    pool, deps = make_pool(store, 5, W_QUEUES)
    t0 = utcnow() - timedelta(minutes=10)
    i = 0
    for queue, _, _ in W_QUEUES:
        names = [f"{queue}-{k}" for k in range(1, 5)]
        create(store, deps[queue], [t0 + timedelta(seconds=i + k) for k in range(4)], names)
        i += 4
    out: list[list[str]] = []
    for _ in range(rounds):
        admitted = admit_pool(store, pool, utcnow()).admitted
        out.append(sorted(r.name for r in admitted))
        complete(store, admitted)
        if not admitted:
            break
    store.close()
    return {"rounds": out}


def scenario_t(new_store: StoreFactory, size: int, repeat: int, label: str) -> dict[str, Any]:
    results = []
    for rep in range(repeat + 1):  # round 0 warms up (connections, imports) on 50 runs and is not counted
        store = new_store()
        n = size if rep else min(size, 50)
        pool, deps = make_pool(store, None, [("default", 1, None)])
        t0 = utcnow() - timedelta(minutes=10)
        setup = time.perf_counter()
        create(store, deps["default"], [t0 + timedelta(milliseconds=i) for i in range(n)])
        create_s = time.perf_counter() - setup
        admitted = passes = 0
        start = time.perf_counter()
        while admitted < n:
            got = len(admit_pool(store, pool, utcnow()).admitted)
            if not got:
                raise RuntimeError(f"pass admitted nothing with {n - admitted} runs left")
            admitted += got
            passes += 1
        elapsed = time.perf_counter() - start
        store.close()
        if rep:
            results.append(
                {"runs": n, "seconds": elapsed, "passes": passes, "per_second": n / elapsed, "create_seconds": create_s}
            )
            print(f"  pushpool/{label} T n={n} rep {rep}: {n / elapsed:.0f} runs/s", file=sys.stderr, flush=True)
    return {"n": size, "repeats": results, "per_second": statistics.median(r["per_second"] for r in results)}


def scenario_s(new_store: StoreFactory, sizes: list[int], due: int, repeat: int, label: str) -> dict[str, Any]:
    store = new_store()
    pool, deps = make_pool(store, None, [("default", 1, None)])
    future = utcnow() + timedelta(days=30)
    have = 0
    out = []
    admit_pool(store, pool, utcnow())  # warm
    for size in sizes:
        grow = size - due - have
        start = time.perf_counter()
        create(store, deps["default"], [future + timedelta(seconds=have + i) for i in range(grow)])
        have += grow
        create_s = time.perf_counter() - start
        passes = []
        for _ in range(repeat):
            now = utcnow()
            create(store, deps["default"], [now - timedelta(minutes=1, milliseconds=i) for i in range(due)])
            t = time.perf_counter()
            admitted = admit_pool(store, pool, utcnow()).admitted
            passes.append(time.perf_counter() - t)
            if len(admitted) != due:
                raise RuntimeError(f"expected {due} admitted, got {len(admitted)}")
        row = {"backlog": size, "due": due, "pass_seconds": statistics.median(passes), "create_seconds": create_s}
        print(
            f"  pushpool/{label} S backlog={size}: pass {row['pass_seconds'] * 1000:.1f} ms",
            file=sys.stderr,
            flush=True,
        )
        out.append(row)
    store.close()
    return {"sizes": out}


def scenario_c(new_store: StoreFactory, trials: int, max_delay: float, label: str) -> dict[str, Any]:
    """Four dispatcher processes (`admit_pool` scoped to a queue, or the whole pool) at once; limit 3."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "poller"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise RuntimeError("a pushpool poller did not start")
        variants: dict[str, Any] = {}
        for scope in ("per-queue", "whole-pool"):
            for delays in (False, True):
                counts, errors = [], 0
                for _ in range(trials):
                    store = new_store()  # a fresh store per trial: moto's transactions slow with table size
                    pool, deps = make_pool(store, 3, [("first", 1, None), ("second", 2, None)])
                    t0 = utcnow() - timedelta(minutes=5)
                    for q in ("first", "second"):
                        create(store, deps[q], [t0 + timedelta(seconds=i) for i in range(25)])
                    targets = ["first", "first", "second", "second"] if scope == "per-queue" else ["*"] * 4
                    for p, q in zip(procs, targets, strict=True):
                        assert p.stdin is not None
                        p.stdin.write(f"{store.url} {pool} {q} {random.uniform(0, max_delay) if delays else 0}\n")
                    for p in procs:
                        p.stdin.flush()  # type: ignore[union-attr]
                    for p in procs:
                        errors += p.stdout.readline().startswith("error")  # type: ignore[union-attr]
                    counts.append(len(store.active_runs(pool)))
                    store.close()
                key = f"{scope}{' +delays' if delays else ''}"
                variants[key] = {
                    "admitted": counts,
                    "max": max(counts),
                    "mean": statistics.mean(counts),
                    "errors": errors,
                }
                print(f"  pushpool/{label} C {key}: {counts}", file=sys.stderr, flush=True)
        return {"limit": 3, "trials": trials, "max_delay": max_delay, "variants": variants}
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def poller_loop() -> None:
    """Each stdin line `STORE_URL POOL QUEUE|* DELAY` -> one admission pass -> prints the count admitted."""
    stores: dict[str, Store] = {}
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            return
        url, pool, queue, delay = line.split()
        try:
            store = stores.get(url) or stores.setdefault(url, open_store(url))
            time.sleep(float(delay))
            result = admit_pool(store, pool, utcnow(), queue=None if queue == "*" else queue)
            print(len(result.admitted), flush=True)
        except Exception as exc:  # report, keep serving
            print(f"error {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["poller"]:
        poller_loop()
