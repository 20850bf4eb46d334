"""A dispatcher over one provider harness: a real store, one pool of the harness's type, one deployment.

The scenarios drive passes themselves (`Rig.pass_`), so every figure is read from the store between passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from provider_harnesses import ProviderHarness

from dispatcher import deployments, pools
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, PassSummary
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.base import Providers
from dispatcher.store.base import Store, pool_slot
from dispatcher.store.sqlite import SQLiteStore

POOL = "p"
DEPLOYMENT = "d"


class Rig:
    """`harness`'s provider behind a Dispatcher with `settings`, over a SQLite store in `tmp_path`."""

    def __init__(
        self,
        harness: ProviderHarness,
        tmp_path: Path,
        settings: Settings,
        *,
        limit: int | None = None,
        store: Store | None = None,
    ) -> None:
        self.harness = harness
        self.store = store or SQLiteStore(str(tmp_path / "rig.db"))
        pools.create_pool(
            self.store, POOL, type=harness.pool_type, base_job_template=harness.template(), concurrency_limit=limit
        )
        deployments.create_deployment(self.store, DEPLOYMENT, pool=POOL, job_variables=harness.job_variables())
        self.settings = settings
        # No callback URL: jobs report nothing, the reconciler alone moves runs (callbacks "dropped").
        self.dispatcher = Dispatcher(
            self.store,
            providers=Providers({harness.pool_type: harness.provider()}),
            settings=settings,
            callback_base_url="",
        )
        self.summaries: list[PassSummary] = []

    def close(self) -> None:
        self.dispatcher.close()
        self.store.close()

    def new_runs(self, n: int) -> list[str]:
        due = utcnow() - timedelta(seconds=1)
        return [deployments.run_deployment(self.store, DEPLOYMENT, scheduled_time=due).id for _ in range(n)]

    def run(self, run_id: str) -> FlowRun:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def pass_(self) -> PassSummary:
        summary = self.dispatcher.run_pass(pool=POOL)
        self.summaries.append(summary)
        return summary

    def drive(
        self,
        done: Callable[[], bool],
        *,
        timeout: float,
        interval: float = 0.1,
        each: Callable[[], None] = lambda: None,
    ) -> bool:
        """Passes every `interval` until `done()` or `timeout`; `each` runs after every pass. True if done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pass_()
            each()
            if done():
                return True
            time.sleep(interval)
        return done()

    def active_slots(self) -> int:
        return self.store.slots([pool_slot(POOL)])[pool_slot(POOL)].active
