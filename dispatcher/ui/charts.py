"""The run timeline as geometry for an inline SVG: `work-pool timeline`'s bars, in pixels.

`timeline.bars` decides which runs and when each waited and held a slot; this only scales those times to
x positions, groups rows by queue in priority order (as the terminal chart does) and picks tick labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..render_tables import STATE_STYLES
from ..timeline import Bar

WIDTH = 960
"""The chart's width in SVG units (it scales to the page)."""
LABEL_WIDTH = 230
"""Room on the left for the queue and run name."""
ROW_HEIGHT = 22
AXIS_HEIGHT = 26
MAX_ROWS = 60
"""Rows drawn at most (the latest admissions); the rest are counted under the chart."""


@dataclass(frozen=True)
class Row:
    run_id: str
    name: str
    queue: str
    state: str
    state_name: str
    colour: str
    """The CLI's colour of the run's state (render_tables.STATE_STYLES): a CSS class suffix."""
    y: int
    wait_x: float
    wait_w: float
    hold_x: float
    hold_w: float
    """0 wide when the run never held a slot."""


@dataclass
class Timeline:
    rows: list[Row] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)
    height: int = AXIS_HEIGHT
    start: datetime | None = None
    end: datetime | None = None
    hidden: int = 0
    width: int = WIDTH
    label_width: int = LABEL_WIDTH


def timeline_chart(items: list[Bar], queue_order: list[str], now: datetime, ticks: int = 6) -> Timeline:
    """Rows for the newest MAX_ROWS bars, grouped by queue priority, on a shared time axis."""
    chart = Timeline()
    if not items:
        return chart
    hidden = max(0, len(items) - MAX_ROWS)
    items = items[hidden:]  # bars() sorts by admission: the newest are last
    start = min(b.scheduled for b in items)
    end = now if any(b.ended is None for b in items) else max(b.ended or now for b in items)
    span = max((end - start).total_seconds(), 1.0)
    plot = WIDTH - LABEL_WIDTH - 10

    def x(t: datetime) -> float:
        return round(LABEL_WIDTH + max(0.0, min(1.0, (t - start).total_seconds() / span)) * plot, 1)

    ranked = {q: i for i, q in enumerate(queue_order)}
    ordered = sorted(items, key=lambda b: (ranked.get(b.queue, len(ranked)), b.admitted or b.scheduled, b.run_id))
    for i, b in enumerate(ordered):
        wait_end = b.admitted or b.ended or now
        hold_x = x(b.admitted) if b.admitted else 0.0
        hold_w = max(2.0, x(b.ended or now) - hold_x) if b.admitted else 0.0
        chart.rows.append(
            Row(
                b.run_id,
                b.name,
                b.queue,
                b.state.value,
                b.state_name,
                STATE_STYLES.get(b.state.value, "dim"),
                AXIS_HEIGHT + i * ROW_HEIGHT,
                x(b.scheduled),
                max(0.0, x(wait_end) - x(b.scheduled)),
                hold_x,
                hold_w,
            )
        )
    step = span / (ticks - 1)
    fmt = "%H:%M:%S" if span < 86400 else "%m-%d %H:%M"
    chart.ticks = [
        (x(start + timedelta(seconds=step * k)), (start + timedelta(seconds=step * k)).strftime(fmt))
        for k in range(ticks)
    ]
    chart.height = AXIS_HEIGHT + len(ordered) * ROW_HEIGHT + 6
    chart.start, chart.end, chart.hidden = start, end, hidden
    return chart
