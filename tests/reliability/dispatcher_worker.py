"""A dispatcher in an OS process of its own, for the overlap and SIGKILL scenarios.

Run as `python dispatcher_worker.py CONFIG`.

CONFIG is a JSON file: `mode` ("overlap": random rounds; "pass": passes until told to stop or killed),
`store` (a store URL), `provider` ("dir" or "process") and `root` (its state directory), `pool`, `seed`,
`rounds`, `limits` (slot key -> limit, checked after every round) and `out` (where the report goes).
The kill points of dir_provider.KillPoints apply (PUSHPOOL_TEST_KILL_AT).
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

from dir_provider import DirProvider, KillingProvider, KillingStore, KillPoints

from dispatcher import deployments, pools
from dispatcher.cancelling import cancel_run
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.errors import PushpoolError
from dispatcher.models import utcnow
from dispatcher.providers.base import Provider, Providers
from dispatcher.providers.process import ProcessProvider
from dispatcher.store import open_store
from dispatcher.store.base import Store, deployment_slot, pool_slot, queue_slot

SETTINGS = Settings(
    reconcile_after_seconds=0.5,
    resubmit_grace_seconds=1.0,
    provider_timeout_seconds=20.0,
    slot_repair_settle_seconds=0.5,
    retry_backoff_seconds=0.1,
)


def provider_of(config: dict[str, Any]) -> Provider:
    if config["provider"] == "process":
        return ProcessProvider(state_dir=Path(config["root"]), kill_grace_seconds=0.5)
    return DirProvider(Path(config["root"]))


def over_limit(store: Store, pool: str, limits: dict[str, int]) -> list[str]:
    """Slot keys whose active runs or counter exceed their limit right now."""
    active = store.active_runs(pool)
    counts: dict[str, int] = {}
    for run in active:
        for key in (pool_slot(run.pool), queue_slot(run.pool, run.queue), deployment_slot(run.deployment_id)):
            counts[key] = counts.get(key, 0) + 1
    slots = store.slots(list(limits))
    found = []
    for key, limit in limits.items():
        if counts.get(key, 0) > limit:
            found.append(f"{key}: {counts[key]} active runs, limit {limit}")
        if slots[key].active > limit:
            found.append(f"{key}: counter {slots[key].active}, limit {limit}")
    return found


def overlap(config: dict[str, Any], store: Store, dispatcher: Dispatcher, provider: DirProvider) -> dict[str, Any]:
    rng = random.Random(config["seed"])
    pool, limits = config["pool"], config["limits"]
    names = [d.name for d in store.list_deployments(pool)]
    queues = [q.name for q in store.list_queues(pool)]
    done: dict[str, int] = {}
    violations: list[str] = []
    refused = 0
    for _ in range(config["rounds"]):
        action = rng.choices(["pass", "arrive", "complete", "pause", "cancel"], weights=[6, 3, 3, 1, 1])[0]
        done[action] = done.get(action, 0) + 1
        try:
            if action == "pass":
                dispatcher.run_pass(pool=pool)
            elif action == "arrive":
                for _ in range(rng.randint(1, 3)):
                    due = utcnow() - timedelta(seconds=rng.random() * 5)
                    deployments.run_deployment(store, rng.choice(names), scheduled_time=due)
            elif action == "complete":
                running = provider.running()
                for infra_id in rng.sample(running, min(len(running), rng.randint(1, 3))):
                    provider.finish(infra_id, rng.choice([0, 0, 1]))
            elif action == "pause":
                paused = rng.random() < 0.5
                if rng.random() < 0.5:
                    pools.update_pool(store, pool, paused=paused)
                else:
                    pools.update_queue(store, pool, rng.choice(queues), paused=paused)
            else:
                live = [r for r in store.list_runs(pool, limit=200) if not r.is_terminal]
                if live:
                    cancel_run(store, rng.choice(live).id)
        except PushpoolError:
            refused += 1  # a conflict with another worker (e.g. cancelling a run that just ended): by design
        violations += over_limit(store, pool, limits)
        time.sleep(rng.random() * 0.01)
    return {"actions": done, "violations": violations, "refused": refused}


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[1]).read_text())
    kills = KillPoints()
    inner = open_store(config["store"])
    store: Store = KillingStore(inner, kills)  # type: ignore[assignment]
    provider = provider_of(config)
    dispatcher = Dispatcher(
        store,
        providers=Providers({"process": KillingProvider(provider, kills)}),
        settings=SETTINGS,
        callback_base_url="",
    )
    report: dict[str, Any] = {}
    try:
        if config["mode"] == "overlap":
            assert isinstance(provider, DirProvider)
            report = overlap(config, store, dispatcher, provider)
        else:
            for _ in range(config["rounds"]):
                dispatcher.run_pass(pool=config["pool"])
                time.sleep(0.05)
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        dispatcher.close()
        Path(config["out"]).write_text(json.dumps(report))
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
