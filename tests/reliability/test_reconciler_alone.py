"""Every callback and event dropped: the reconciler alone brings every run to its end, for every provider.

Jobs get no callback URL and no provider event reaches the store; each job is ended by its harness with a
random exit code as soon as it is launched. Figures per provider: runs that missed the reconcile timeout
(0), runs that ended in the wrong state (0), slots still held at the end (0), runs over the pool limit at
any pass (0), and the slowest end-to-terminal lag (for information).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from provider_harnesses import HARNESSES, ProviderHarness
from reliability_support import Figures, size
from rig import POOL, Rig

from dispatcher.config import Settings
from dispatcher.states import StateType

RECONCILE_AFTER = 1.0
MARGIN = 3.0
"""Beyond the reconcile timeout: a few passes of 0.1 s, and a provider call each (moto answers in ms)."""


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderHarness]:
    h = HARNESSES[request.param](tmp_path_factory.mktemp(request.param))
    yield h
    h.close()


def test_every_run_ends_through_the_reconciler_alone(
    harness: ProviderHarness, tmp_path: Path, figures: Figures
) -> None:
    scenario = f"no callbacks, {harness.name}"
    rng = random.Random(9)
    n, limit = size(6, 40), 3
    settings = Settings(
        reconcile_after_seconds=RECONCILE_AFTER, resubmit_grace_seconds=5.0, provider_timeout_seconds=10.0
    )
    rig = Rig(harness, tmp_path, settings, limit=limit)
    try:
        ids = rig.new_runs(n)
        codes = {run_id: rng.choice([0, 0, 1, 2]) for run_id in ids}
        finished_at: dict[str, float] = {}
        ended_at: dict[str, float] = {}
        over_limit = 0

        def after_pass() -> None:
            nonlocal over_limit
            active = rig.store.active_runs(POOL)
            over_limit += len(active) > limit
            now = time.monotonic()
            for run in rig.store.list_runs(POOL, limit=n + 10):
                if run.infrastructure_id and run.id not in finished_at:
                    harness.finish(run.id, run.infrastructure_id, codes[run.id])
                    finished_at[run.id] = time.monotonic()
                if run.is_terminal and run.id not in ended_at:
                    ended_at[run.id] = now

        budget = RECONCILE_AFTER + MARGIN
        rig.drive(lambda: len(ended_at) == n, timeout=n / limit * budget + 20, each=after_pass)
        lags = {i: ended_at[i] - finished_at[i] for i in ended_at if i in finished_at}
        missed = sum(1 for i in ids if i not in ended_at or lags.get(i, budget + 1) > budget)
        wrong = sum(
            1 for i in ids if rig.run(i).state is not (StateType.COMPLETED if codes[i] == 0 else StateType.FAILED)
        )
        held = rig.active_slots()
        figures.record(scenario, "runs", n)
        figures.record(scenario, f"not terminal within {budget:g}s of the job's end", missed, target=0)
        figures.record(scenario, "ended in the wrong state", wrong, target=0)
        figures.record(scenario, "passes over the pool limit", over_limit, target=0)
        figures.record(scenario, "slots held at the end", held, target=0)
        figures.record(scenario, "slowest job end -> terminal (s)", round(max(lags.values(), default=0.0), 2))
        assert (missed, wrong, over_limit, held) == (0, 0, 0, 0), {i[:8]: rig.run(i).state_name for i in ids}
    finally:
        rig.close()
