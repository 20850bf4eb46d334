"""Run timelines: when each run was admitted and when it ended, drawn as bars in the terminal.

Built from the runs' state histories alone, so the same picture comes from any store, after the fact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.table import Table
from rich.text import Text

from .errors import InvalidInput
from .models import FlowRun
from .render_tables import STATE_STYLES
from .states import ACTIVE, TERMINAL, StateType

MAX_RUNS = 500
"""Runs drawn at most (the newest)."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, field: str = "--since") -> timedelta:
    """'90s', '10m', '2h' or '1d' as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidInput(f"{field} must be a number with a unit s, m, h or d (like 10m), got {text!r}.")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True)
class Bar:
    """One run's stay in a slot: from admission to its end (or now, while it still holds one)."""

    run_id: str
    name: str
    queue: str
    scheduled: datetime
    admitted: datetime | None
    ended: datetime | None
    state: StateType
    state_name: str


def bar_of(run: FlowRun) -> Bar:
    admitted = ended = None
    for record in run.state_history:
        if not record.applied:
            continue
        if admitted is None and record.state in ACTIVE:
            admitted = record.time
        if ended is None and record.state in TERMINAL:
            ended = record.time
    return Bar(run.id, run.name, run.queue, run.scheduled_time, admitted, ended, run.state, run.state_name)


def bars(runs: Iterable[FlowRun], since: datetime, now: datetime) -> list[Bar]:
    """Bars of the runs due, admitted or ended between `since` and `now`, oldest admission first."""
    result = [bar_of(r) for r in runs if r.scheduled_time <= now]
    result = [b for b in result if max(filter(None, (b.scheduled, b.admitted, b.ended))) >= since]
    return sorted(result, key=lambda b: (b.admitted or b.scheduled, b.run_id))


def peak_concurrency(
    items: Iterable[Bar], now: datetime, key: Callable[[Bar], str] = lambda b: "all"
) -> dict[str, int]:
    """The most runs that held a slot at the same moment, per key: the figure a limit bounds."""
    events: dict[str, list[tuple[datetime, int]]] = {}
    for b in items:
        if b.admitted is None:
            continue
        # An end sorts before a start at the same instant: the slot was freed before it was taken.
        events.setdefault(key(b), []).extend([(b.admitted, 1), (b.ended or now, -1)])
    peaks: dict[str, int] = {}
    for k, evs in events.items():
        level = peak = 0
        for _, delta in sorted(evs, key=lambda e: (e[0], e[1])):
            level += delta
            peak = max(peak, level)
        peaks[k] = peak
    return peaks


def render(items: list[Bar], queue_order: list[str], now: datetime, total_width: int = 100) -> Table:
    """A table with one row per run, grouped by queue in priority order; bars span admission to end.

    `total_width` is the terminal's width: the bars get what the other columns leave.
    """
    table = Table(title="Run timeline (· waiting, █ holding a slot)", show_lines=False, expand=False)
    table.add_column("queue", no_wrap=True, max_width=10)
    table.add_column("run", no_wrap=True, max_width=22)
    table.add_column("state", no_wrap=True, max_width=21)
    width = max(20, total_width - 66)
    if not items:
        table.add_column("timeline")
        return table
    start = min(b.admitted or b.scheduled for b in items)
    still_open = any(b.ended is None for b in items)
    end = now if still_open else max(b.ended or now for b in items)
    span = max((end - start).total_seconds(), 1e-6)
    table.add_column(f"{start:%H:%M:%S} → {end:%H:%M:%S} ({span:.0f}s)", no_wrap=True)

    def col(t: datetime) -> int:
        return min(width - 1, max(0, int((t - start).total_seconds() / span * (width - 1))))

    ranked = {q: i for i, q in enumerate(queue_order)}
    for b in sorted(items, key=lambda b: (ranked.get(b.queue, len(ranked)), b.admitted or b.scheduled, b.run_id)):
        wait_from = col(max(b.scheduled, start))
        if b.admitted is None:
            line = Text("".join("·" if wait_from <= i <= col(now) else " " for i in range(width)), style="dim")
        else:
            a, e = col(b.admitted), col(b.ended or now)
            chars = ["·" if wait_from <= i < a else "█" if a <= i <= e else " " for i in range(width)]
            line = Text("".join(chars))
            line.stylize("dim", 0, a)
            line.stylize(STATE_STYLES.get(b.state.value, ""), a, e + 1)
        table.add_row(b.queue, b.name, Text(b.state_name, style=STATE_STYLES.get(b.state.value, "")), line)
    return table


def priority_jumps(items: list[Bar], queues: dict[str, tuple[int, int | None]], now: datetime) -> list[str]:
    """Runs admitted while a higher-priority queue had a due run waiting and a free slot of its own.

    `queues` maps a queue to (priority, limit). An empty answer means the waterfall held: every admission
    went to the highest queue that could take it.
    """
    jumps: list[str] = []
    admitted = [b for b in items if b.admitted is not None]
    for b in admitted:
        t = b.admitted
        assert t is not None
        priority = queues.get(b.queue, (0, None))[0]
        for other, (other_priority, limit) in queues.items():
            if other_priority >= priority:
                continue
            waiting = any(
                w.queue == other
                and w.scheduled <= t
                and (w.admitted is None or w.admitted > t)
                and (w.ended is None or w.ended > t)
                for w in items
            )
            active = sum(1 for a in admitted if a.queue == other and _holds(a, t, now))
            if waiting and (limit is None or active < limit):
                jumps.append(b.run_id)
                break
    return jumps


def _holds(bar: Bar, t: datetime, now: datetime) -> bool:
    """Whether the run held a slot at instant t."""
    return bar.admitted is not None and bar.admitted <= t < (bar.ended or now)
