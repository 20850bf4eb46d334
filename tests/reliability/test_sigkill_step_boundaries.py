"""SIGKILL of a dispatcher process at every step boundary of a pass: admit, render, submit, record.

A dispatcher (dispatcher_worker.py, an OS process) runs passes over a process pool (real subprocesses)
through a store and a provider that cross kill points around their calls (dir_provider.KillingStore and
KillingProvider): with `PUSHPOOL_TEST_KILL_AT=submit:after:1` it SIGKILLs itself right after its first
submit returned, before anything was recorded. Then this test runs ONE pass of a fresh dispatcher (after
the re-submission grace) and checks the slot counters, then drains until every run is terminal.

Figures: kills delivered (every boundary), runs lost (0), runs launched twice (0), slot counters off
after one reconcile pass (0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from reliability_support import Figures, size

from dispatcher import deployments, pools
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.models import utcnow
from dispatcher.providers.base import Providers
from dispatcher.providers.process import ProcessProvider
from dispatcher.store.base import deployment_slot, pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore

HERE = Path(__file__).parent
SCENARIO = "SIGKILL at a step boundary"
BOUNDARIES = [f"{step}:{when}" for step in ("admit", "render", "submit", "record") for when in ("before", "after")]
RUNS = 3
LIMIT = 2
SETTINGS = Settings(
    reconcile_after_seconds=0.5,
    resubmit_grace_seconds=0.3,
    provider_timeout_seconds=20.0,
    slot_repair_settle_seconds=0.2,
)
TOTALS: dict[str, int] = {"boundaries": 0, "kills": 0, "lost": 0, "launched twice": 0, "counters off": 0}


@pytest.mark.parametrize("occurrence", range(1, size(1, 3) + 1))
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_dispatcher_killed_at_a_step_boundary_loses_and_duplicates_nothing(
    boundary: str, occurrence: int, tmp_path: Path, figures: Figures
) -> None:
    db = tmp_path / "kill.db"
    store = SQLiteStore(str(db))
    pools.create_pool(store, "k", concurrency_limit=LIMIT)
    job = {"command": [sys.executable, "-c", "import time; time.sleep(0.3)"]}
    deployment = deployments.create_deployment(store, "d", pool="k", job_variables=job)
    due = utcnow() - timedelta(seconds=1)
    ids = [deployments.run_deployment(store, "d", scheduled_time=due).id for _ in range(RUNS)]
    state_dir = tmp_path / "processes"
    config = {
        "mode": "pass",
        "store": f"sqlite:///{db}",
        "provider": "process",
        "root": str(state_dir),
        "pool": "k",
        "rounds": 20,
        "out": str(tmp_path / "worker.json"),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PUSHPOOL_TEST_KILL_AT": f"{boundary}:{occurrence}"}
    worker = subprocess.run(
        [sys.executable, str(HERE / "dispatcher_worker.py"), str(tmp_path / "config.json")],
        cwd=HERE,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    killed = worker.returncode == -signal.SIGKILL

    provider = ProcessProvider(state_dir=state_dir, kill_grace_seconds=0.5)
    dispatcher = Dispatcher(store, providers=Providers({"process": provider}), settings=SETTINGS, callback_base_url="")
    try:
        # One reconcile pass once the grace has passed: counters must then match the active runs exactly.
        time.sleep(max(SETTINGS.resubmit_grace_seconds, SETTINGS.slot_repair_settle_seconds) + 0.1)
        dispatcher.run_pass(pool="k")
        keys = [pool_slot("k"), queue_slot("k", "default"), deployment_slot(deployment.id)]
        active = store.active_runs("k")
        slots = store.slots(keys)
        counted = {pool_slot("k"): len(active), queue_slot("k", "default"): len(active)}
        counted[deployment_slot(deployment.id)] = len(active)
        counters_off = sum(1 for key in keys if slots[key].active != counted[key])

        deadline = time.monotonic() + 60

        def ended() -> bool:
            return all(run is not None and run.is_terminal for run in map(store.get_run, ids))

        while time.monotonic() < deadline and not ended():
            time.sleep(0.2)
            dispatcher.run_pass(pool="k")
    finally:
        dispatcher.close()
    runs = [store.get_run(i) for i in ids]
    lost = sum(1 for r in runs if r is None or not r.is_terminal)
    launches = {i: [d for d in state_dir.glob(f"{i}-*") if (d / "pid").exists()] for i in ids}
    launched_twice = sum(1 for found in launches.values() if len(found) > 1)
    store.close()

    TOTALS["boundaries"] += 1
    TOTALS["kills"] += killed
    TOTALS["lost"] += lost
    TOTALS["launched twice"] += launched_twice
    TOTALS["counters off"] += counters_off
    row = f"{boundary} #{occurrence}: killed, lost, launched twice, counters off"
    figures.record(SCENARIO, row, f"{int(killed)}, {lost}, {launched_twice}, {counters_off}")
    assert killed, (
        f"the worker was not killed at {boundary} #{occurrence}: exit {worker.returncode}\n{worker.stderr[-2000:]}"
    )
    assert (lost, launched_twice, counters_off) == (0, 0, 0), [r.state_name if r else None for r in runs]


def test_sigkill_totals(figures: Figures) -> None:
    """The sums over the boundaries that ran before it in this module (pytest keeps definition order)."""
    figures.record(SCENARIO, "kills delivered", TOTALS["kills"], target=TOTALS["boundaries"])
    figures.record(SCENARIO, "runs lost", TOTALS["lost"], target=0)
    figures.record(SCENARIO, "runs launched twice", TOTALS["launched twice"], target=0)
    figures.record(SCENARIO, "slot counters off after one reconcile", TOTALS["counters off"], target=0)
    assert TOTALS["kills"] == TOTALS["boundaries"]
    assert (TOTALS["lost"], TOTALS["launched twice"], TOTALS["counters off"]) == (0, 0, 0)
