"""`make demo`: the documented waterfall on real processes, served by `pushpool serve`, in under two minutes.

A `process` pool with a pool limit and three queues — critical (priority 1, limit 1), high (5, limit 3),
low (10, no limit) — a deployment on a short interval, and a burst of ad-hoc runs that sleep and exit 0 or
1, one of them cancelled while it runs. `pushpool serve` runs in its own process for a bounded time; the
runs report back through signed callbacks. At the end: the queues, every run's final state, a timeline
and the figures that show the limits and the priority order held.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import deployments, pools, timeline
from .cancelling import cancel_run
from .models import FlowRun, WorkQueue, utcnow
from .schedules import IntervalSchedule
from .states import StateType
from .store.sqlite import SQLiteStore

POOL = "demo"
POOL_LIMIT = 4
QUEUES = {"critical": (1, 1), "high": (5, 3), "low": (10, None)}  # name: (priority, limit)
BURST = {"critical": 3, "high": 6, "low": 6}
DEADLINE_SECONDS = 90

console = Console()


def sleeper(seconds: float, code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys, time; time.sleep({seconds:.1f}); sys.exit({code})"]


def set_up(store: SQLiteStore, rng: random.Random) -> list[FlowRun]:
    pools.create_pool(store, POOL, concurrency_limit=POOL_LIMIT, description="make demo")
    for name, (priority, limit) in QUEUES.items():
        pools.create_queue(store, POOL, name, priority=priority, concurrency_limit=limit)
    deployments.create_deployment(
        store,
        "heartbeat",
        pool=POOL,
        queue="low",
        job_variables={"command": sleeper(0.5, 0)},
        schedules=[IntervalSchedule(interval=10)],
    )
    runs = []
    for queue, count in BURST.items():
        deployments.create_deployment(store, f"{queue}-job", pool=POOL, queue=queue)
        for _ in range(count):
            code = 1 if rng.random() < 0.2 else 0
            runs.append(
                deployments.run_deployment(
                    store, f"{queue}-job", job_variables={"command": sleeper(rng.uniform(1.5, 3.5), code)}
                )
            )
    return runs


def serve(store_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PUSHPOOL_STORE": store_url,
        "PUSHPOOL_PROCESS_DIR": str(workdir / "processes"),
        "PUSHPOOL_RECONCILE_AFTER_SECONDS": "2",
        "PUSHPOOL_RESUBMIT_GRACE_SECONDS": "5",
        "PUSHPOOL_SCHEDULE_HORIZON_SECONDS": "30",
    }
    log = (workdir / "serve.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "dispatcher",
        "serve",
        "--port",
        "0",
        "--interval",
        "1",
        "--duration",
        str(DEADLINE_SECONDS),
    ]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_runs(store: SQLiteStore, burst: list[FlowRun], server: subprocess.Popen[bytes]) -> None:
    """Until every burst run has ended; cancels one high run once it is running."""
    cancelled: str | None = None
    started = time.monotonic()
    with console.status("pushpool serve is dispatching…") as status:
        while time.monotonic() - started < DEADLINE_SECONDS and server.poll() is None:
            runs = [store.get_run(r.id) for r in burst]
            done = sum(1 for r in runs if r is not None and r.is_terminal)
            status.update(f"pushpool serve is dispatching… {done}/{len(burst)} runs ended")
            if cancelled is None:
                running = [r for r in runs if r and r.queue == "high" and r.state is StateType.RUNNING]
                if running:
                    cancelled = cancel_run(store, running[0].id, message="cancelled by make demo").id
            if done == len(burst):
                return
            time.sleep(0.5)


def report(store: SQLiteStore, since: datetime) -> bool:
    now = utcnow()
    queues = store.list_queues(POOL)
    table = Table(title=f"Work pool {POOL} (limit {POOL_LIMIT}): queues")
    for column in ("queue", "priority", "limit", "status", "runs"):
        table.add_column(column)
    runs = [r for r in store.list_runs(POOL, limit=500) if r.scheduled_time <= now]
    for q in queues:
        mine = [r for r in runs if r.queue == q.name]
        table.add_row(q.name, str(q.priority), str(q.concurrency_limit or "∞"), q.status, str(len(mine)))
    console.print(table)

    finals = Table(title="Final states")
    for column in ("run", "queue", "state", "last message"):
        finals.add_column(column)
    for r in sorted(runs, key=lambda r: (r.queue, r.scheduled_time)):
        last = next((h.message for h in reversed(r.state_history) if h.applied and h.message), "")
        finals.add_row(r.name, r.queue, r.state_name, last or "")
    console.print(finals)

    bars = timeline.bars(runs, since, now)
    console.print(timeline.render(bars, [q.name for q in queues], now, console.width))
    return verdict(bars, queues, now)


def verdict(bars: list[timeline.Bar], queues: list[WorkQueue], now: datetime) -> bool:
    """Check from the timeline that no limit was exceeded and no lower queue jumped a higher one."""
    pool_peak = timeline.peak_concurrency(bars, now).get("all", 0)
    queue_peaks = timeline.peak_concurrency(bars, now, key=lambda b: b.queue)
    ok = pool_peak <= POOL_LIMIT
    console.print(f"{'pool':<9}peak {pool_peak} of limit {POOL_LIMIT}: {'held' if ok else 'EXCEEDED'}")
    for q in queues:
        peak = queue_peaks.get(q.name, 0)
        held = q.concurrency_limit is None or peak <= q.concurrency_limit
        ok &= held
        console.print(f"{q.name:<9}peak {peak} of limit {q.concurrency_limit or '∞'}: {'held' if held else 'EXCEEDED'}")
    jumps = timeline.priority_jumps(bars, {q.name: (q.priority, q.concurrency_limit) for q in queues}, now)
    console.print(f"priority order: {'held' if not jumps else f'{len(jumps)} runs admitted ahead of a higher queue'}")
    return ok and not jumps


def main() -> int:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="pushpool-demo-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'demo.db'}"
        store = SQLiteStore(str(workdir / "demo.db"), url=url)
        since = utcnow() - timedelta(seconds=1)
        burst = set_up(store, rng)
        console.print(
            f"Created pool {POOL!r} (limit {POOL_LIMIT}), queues {', '.join(QUEUES)}, "
            f"{len(burst)} ad-hoc runs and a deployment every 10 s. Starting `pushpool serve`…"
        )
        server = serve(url, workdir)
        try:
            wait_for_runs(store, burst, server)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        time.sleep(0.2)
        ok = report(store, since)
        store.close()
    console.print("[green]Every limit and the priority order held.[/]" if ok else "[red]A check failed.[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
