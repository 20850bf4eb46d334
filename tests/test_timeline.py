"""Timelines are computed from state histories: admission and end times, peaks, priority jumps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from dispatcher import timeline
from dispatcher.errors import InvalidInput
from dispatcher.models import FlowRun
from dispatcher.states import StateType

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(
    rid: str,
    queue: str,
    *,
    scheduled: float = 0,
    admitted: float | None = None,
    ended: float | None = None,
    final: StateType = StateType.COMPLETED,
) -> FlowRun:
    r = FlowRun(
        id=rid,
        name=rid,
        deployment="d",
        deployment_id="d",
        pool="p",
        queue=queue,
        scheduled_time=T0 + timedelta(seconds=scheduled),
    )
    if admitted is not None:
        r, _ = r.moved(StateType.PENDING, source="t", now=T0 + timedelta(seconds=admitted))
        r, _ = r.moved(StateType.RUNNING, source="t", now=T0 + timedelta(seconds=admitted + 0.1))
    if ended is not None:
        r, _ = r.moved(final, source="t", now=T0 + timedelta(seconds=ended))
    # a stale report after the end must not move the bar
    r, _ = r.moved(StateType.RUNNING, source="t", now=T0 + timedelta(seconds=(ended or 0) + 50))
    return r


def test_bar_spans_first_admission_to_first_end_ignoring_noops() -> None:
    bar = timeline.bar_of(run("a", "q", scheduled=0, admitted=2, ended=5))
    assert bar.admitted == T0 + timedelta(seconds=2)
    assert bar.ended == T0 + timedelta(seconds=5)
    assert bar.state is StateType.COMPLETED


def test_bars_skip_future_and_old_runs() -> None:
    now = T0 + timedelta(seconds=100)
    runs = [
        run("old", "q", admitted=1, ended=2),
        run("new", "q", scheduled=90, admitted=91, ended=95),
        run("future", "q", scheduled=500),
    ]
    got = timeline.bars(runs, since=T0 + timedelta(seconds=60), now=now)
    assert [b.run_id for b in got] == ["new"]


def test_peak_concurrency_counts_overlaps_and_frees_before_taking_at_the_same_instant() -> None:
    now = T0 + timedelta(seconds=100)
    bars = [
        timeline.bar_of(r)
        for r in (
            run("a", "x", admitted=0, ended=10),
            run("b", "x", admitted=5, ended=15),
            run("c", "y", admitted=10, ended=20),
            run("d", "y", admitted=30),
        )
    ]
    assert timeline.peak_concurrency(bars, now) == {"all": 2}
    assert timeline.peak_concurrency(bars, now, key=lambda b: b.queue) == {"x": 2, "y": 1}


def test_priority_jumps_flags_a_lower_queue_admitted_past_a_free_higher_queue() -> None:
    now = T0 + timedelta(seconds=100)
    queues = {"high": (1, 1), "low": (10, None)}
    held = [
        timeline.bar_of(r)
        for r in (
            run("h1", "high", admitted=0, ended=10),
            run("h2", "high", admitted=10, ended=20),
            run("l1", "low", admitted=1, ended=5),  # high was full (limit 1): fine
        )
    ]
    assert timeline.priority_jumps(held, queues, now) == []
    jumped = [
        timeline.bar_of(r)
        for r in (
            run("h1", "high", admitted=0, ended=10),
            run("h2", "high", scheduled=0, admitted=15, ended=20),
            run("l1", "low", admitted=12, ended=14),  # high was free at 12 and h2 waited
        )
    ]
    assert timeline.priority_jumps(jumped, queues, now) == ["l1"]


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert timeline.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "-5m", "10 minutes"])
def test_parse_duration_refuses_with_the_rule(text: str) -> None:
    with pytest.raises(InvalidInput, match="--since must be a number with a unit s, m, h or d"):
        timeline.parse_duration(text)


def test_render_draws_waiting_then_holding_grouped_by_queue_order() -> None:
    now = T0 + timedelta(seconds=40)
    bars = [
        timeline.bar_of(r)
        for r in (
            run("low-1", "low", admitted=0, ended=40),
            run("crit-1", "critical", scheduled=0, admitted=20, ended=40),
            run("waits", "low", scheduled=10),
        )
    ]
    out = Console(width=140, record=True, color_system=None)
    out.print(timeline.render(bars, ["critical", "low"], now, 140))
    lines = [line for line in out.export_text().splitlines() if "│" in line]
    assert [line.split("│")[2].strip() for line in lines] == ["crit-1", "low-1", "waits"]
    crit_bar = lines[0].split("│")[4]
    assert crit_bar.strip().startswith("·") and "█" in crit_bar and crit_bar.index("·") < crit_bar.index("█")
    assert "█" not in lines[2].split("│")[4]
