"""benchmarks/latency.py's `pushpool serve` harness at a tiny size, so it cannot rot between `make bench` runs.

A real `pushpool serve` subprocess on SQLite with process jobs, five runs per measure, no Prefect. The
assertions are about the harness (every run measured, figures read from the histories, slots freed by the
jobs' own callbacks), never about speed: the latency targets live in the benchmark.
"""

from __future__ import annotations

import math
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from latency_parts import serve_side  # noqa: E402
from latency_parts.common import freed_at, pair_frees, submitted_at  # noqa: E402

from dispatcher.models import FlowRun  # noqa: E402
from dispatcher.states import StateType  # noqa: E402


def test_the_serve_harness_measures_every_run_of_each_measure(tmp_path: Path) -> None:
    sizes = serve_side.Sizes(
        adhoc=5, freed=5, scheduled=5, limit=2, gap=(0.0, 0.3), job_seconds=(0.1, 0.6), lead=2.0, window=3.0
    )
    sizes.timeout = 90.0

    results = serve_side.run_all(tmp_path, sizes, seed=7, log=lambda _: None)

    for key in ("a", "b", "c"):
        result = results[key]
        assert "error" not in result, result
        assert result["unfinished"] == 0, result
        assert len(result["samples"]) == 5, result
        # Sane, not timed: real numbers, none before its cause by more than the pass's own clock reading.
        assert all(math.isfinite(x) and x > -1.0 for x in result["samples"]), result
    assert results["a"]["runs"] == 5 and results["c"]["runs"] == 5
    assert results["b"]["runs"] == 5 + 2  # the first `limit` runs take free slots: they pair with no free
    assert results["b"]["notes"] == ["slots freed by: callback"]  # the jobs' own COMPLETED callbacks
    assert any("admitted" in line for line in results["serve_output_tail"])  # the serve's own pass lines


def _run(*records: tuple[StateType, str, float, bool]) -> FlowRun:
    t0 = datetime(2026, 12, 7, tzinfo=UTC)
    run = FlowRun(id="r", name="r", deployment="d", deployment_id="d", pool="p", queue="default", scheduled_time=t0)
    for state, name, at, applied in records:
        moved, ok = run.moved(state, name=name, source="test", now=t0 + timedelta(seconds=at))
        assert ok is applied
        run = moved
    return run


def test_history_times_are_the_applied_transitions() -> None:
    run = _run(
        (StateType.PENDING, "Pending", 1.0, True),
        (StateType.PENDING, "InfrastructurePending", 1.5, True),
        (StateType.RUNNING, "Running", 2.0, True),
        (StateType.COMPLETED, "Completed", 4.0, True),
        (StateType.RUNNING, "Running", 5.0, False),  # a late report: a no-op, never a time
    )
    t0 = run.scheduled_time
    assert submitted_at(run) == t0 + timedelta(seconds=1.5)
    assert freed_at(run) == t0 + timedelta(seconds=4.0)
    waiting = _run((StateType.SCHEDULED, "Late", 20.0, True))
    assert submitted_at(waiting) is None and freed_at(waiting) is None


def test_frees_pair_with_the_submissions_beyond_the_limit() -> None:
    t0 = datetime(2026, 12, 7, tzinfo=UTC)
    at = [t0 + timedelta(seconds=s) for s in range(20)]
    rng = random.Random(3)
    submissions = [at[0], at[0], at[5], at[9]]  # limit 2: the third waited for the first free, the fourth the 2nd
    frees = [at[8], at[4], at[12], at[15]]  # in any order
    rng.shuffle(submissions)
    assert pair_frees(frees, submissions, 2) == [1.0, 1.0]
