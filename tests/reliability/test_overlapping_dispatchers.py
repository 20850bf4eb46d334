"""Four dispatcher processes at once on one store (SQLite, and DynamoDB on moto served one request at a time).

Each worker (dispatcher_worker.py, an OS process of its own) plays random rounds: a dispatch pass, new runs
arriving, jobs ending, pool or queue paused and resumed, a run cancelled; after every round it checks every
limit against the store. Limits, priorities and the deployment limit are random per trial. Then the test
resumes everything and drains: passes and job ends until every run is terminal.

Figures per store: rounds, runs, over-limit observations (0), runs admitted twice (0), runs launched
twice (0), lost runs (not terminal after the drain: 0), slot counters not back to 0 (0), worker errors (0).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dir_provider import DirProvider
from dispatcher_worker import SETTINGS
from reliability_support import Figures, size

from dispatcher import deployments, pools
from dispatcher.dispatch import Dispatcher
from dispatcher.providers.base import Providers
from dispatcher.store import open_store
from dispatcher.store.base import Store, deployment_slot, pool_slot, queue_slot

HERE = Path(__file__).parent
WORKERS = 4
POOL = "overlap"
JOB_TEMPLATE = {
    "job_configuration": {"command": "{{ command }}", "env": "{{ env }}"},
    "variables": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "default": ["run"]},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


def _world(store: Store, rng: random.Random) -> tuple[dict[str, int], str]:
    """A pool with three queues and three deployments, with random limits; returns slot key -> limit, and words."""
    pool_limit = rng.randint(2, 6)
    pools.create_pool(store, POOL, base_job_template=JOB_TEMPLATE, concurrency_limit=pool_limit)
    limits = {pool_slot(POOL): pool_limit}
    words = [f"pool {pool_limit}"]
    for name, priority in (("hi", 1), ("mid", 5), ("lo", 9)):
        queue_limit = rng.choice([None, 1, 2, 3])
        pools.create_queue(store, POOL, name, priority=priority, concurrency_limit=queue_limit)
        if queue_limit is not None:
            limits[queue_slot(POOL, name)] = queue_limit
            words.append(f"queue {name} {queue_limit}")
        deployment_limit = rng.choice([None, 1, 2])
        d = deployments.create_deployment(store, f"d-{name}", pool=POOL, queue=name, concurrency_limit=deployment_limit)
        if deployment_limit is not None:
            limits[deployment_slot(d.id)] = deployment_limit
            words.append(f"d-{name} {deployment_limit}")
    return limits, ", ".join(words)


def _store_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'overlap.db'}"
    endpoint = os.environ["PUSHPOOL_TEST_DYNAMODB_ENDPOINT"]
    return f"dynamodb://overlap-{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint_url={endpoint}"


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_overlapping_dispatchers_hold_every_limit_and_lose_nothing(
    backend: str, tmp_path: Path, figures: Figures, request: pytest.FixtureRequest
) -> None:
    if backend == "dynamodb":
        request.getfixturevalue("dynamodb_endpoint")
    scenario = f"overlap, {backend}"
    rng = random.Random(f"overlap-{backend}")
    rounds = size(12 if backend == "sqlite" else 6, 200)
    url = _store_url(backend, tmp_path)
    store = open_store(url)
    getattr(store, "init", lambda: None)()
    limits, limit_words = _world(store, rng)
    root = tmp_path / "launches"
    provider = DirProvider(root)

    started = time.monotonic()
    workers = []
    for i in range(WORKERS):
        config = {
            "mode": "overlap",
            "store": url,
            "provider": "dir",
            "root": str(root),
            "pool": POOL,
            "seed": rng.randrange(1 << 30),
            "rounds": rounds,
            "limits": limits,
            "out": str(tmp_path / f"worker-{i}.json"),
        }
        path = tmp_path / f"worker-{i}.config.json"
        path.write_text(json.dumps(config))
        workers.append(
            subprocess.Popen([sys.executable, str(HERE / "dispatcher_worker.py"), str(path)], cwd=HERE, env=os.environ)
        )
    for worker in workers:
        worker.wait(timeout=1800)
    reports = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(WORKERS)]
    errors = [r["error"] for r in reports if "error" in r]
    violations = [v for r in reports for v in r.get("violations", [])]

    # Drain: everything resumed, every job ended, passes until every run is terminal.
    pools.update_pool(store, POOL, paused=False)
    for queue in store.list_queues(POOL):
        pools.update_queue(store, POOL, queue.name, paused=False)
    dispatcher = Dispatcher(store, providers=Providers({"process": provider}), settings=SETTINGS, callback_base_url="")
    runs = store.list_runs(POOL, limit=10_000)
    # A pass admits at most the pool's limit, and DynamoDB on moto takes a second or more per pass on a busy
    # machine: the drain gets time in proportion to the runs left, so "lost" means never, not "not yet".
    deadline = time.monotonic() + 120 + 3 * sum(1 for r in runs if not r.is_terminal)
    try:
        while time.monotonic() < deadline:
            dispatcher.run_pass(pool=POOL)
            for infra_id in provider.running():
                provider.finish(infra_id, 0)
            runs = store.list_runs(POOL, limit=10_000)
            if all(r.is_terminal for r in runs):
                break
            time.sleep(0.1)
        # One more pass after the settle time, so a counter lowered by a recount is counted too.
        time.sleep(SETTINGS.slot_repair_settle_seconds + 0.1)
        dispatcher.run_pass(pool=POOL)
    finally:
        dispatcher.close()

    lost = [r.id for r in runs if not r.is_terminal]
    admitted_twice = [r.id for r in runs if sum(1 for h in r.state_history if h.name == "Pending" and h.applied) > 1]
    launched_twice = [run for run, keys in provider.launches().items() if len(keys) > 1]
    slots = store.slots(list({pool_slot(POOL), *(queue_slot(POOL, q.name) for q in store.list_queues(POOL)), *limits}))
    counters_off = {k: s.active for k, s in slots.items() if s.active != 0}
    store.close()

    figures.record(scenario, "worker processes x rounds", f"{WORKERS} x {rounds}")
    figures.record(scenario, "runs", len(runs))
    figures.record(scenario, "limits", limit_words)
    figures.record(scenario, "over-limit observations", len(violations), target=0)
    figures.record(scenario, "runs admitted twice", len(admitted_twice), target=0)
    figures.record(scenario, "runs launched twice", len(launched_twice), target=0)
    figures.record(scenario, "lost runs", len(lost), target=0)
    figures.record(scenario, "slot counters not 0 after the drain", len(counters_off), target=0)
    figures.record(scenario, "worker errors", len(errors), target=0)
    figures.record(scenario, "seconds", round(time.monotonic() - started, 1))
    assert errors == [], errors[0] if errors else ""
    assert violations == [], violations[:5]
    lost_states = sorted({r.state_name for r in runs if not r.is_terminal})
    assert (admitted_twice, launched_twice, lost, counters_off) == ([], [], [], {}), (lost_states, counters_off)
    assert all(w.returncode == 0 for w in workers)
