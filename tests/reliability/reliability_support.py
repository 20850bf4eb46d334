"""Sizes and figures shared by the reliability scenarios.

Every test under tests/reliability/ is marked `reliability` (by tests/conftest.py). `make test` runs them at a
bounded size; `make reliability` sets `RELIABILITY_SCALE=large`. A test records its figures with the
`figures` fixture (`figures.record(scenario, name, value, target=0)`); at the end of the session the table
is printed and written as JSON to `<pytest basetemp>/reliability-figures.json` (never committed). A figure
with a target is also asserted by the test that records it: the table shows what was measured, the
assertion fails the run.

(No conftest.py here: a second module named `conftest` would shadow tests/conftest.py for the tests that
import from it.)
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCALE_ENV = "RELIABILITY_SCALE"
LARGE = os.environ.get(SCALE_ENV, "bounded").strip().lower() == "large"


def size(bounded: int, large: int) -> int:
    """The size of a scenario: `bounded` under `make test`, `large` under `make reliability`."""
    return large if LARGE else bounded


@dataclass
class Figure:
    scenario: str
    name: str
    value: float | str
    target: float | None
    """The value the figure must have (0 for a count of failures); None for a figure that only informs."""

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.value == self.target


class Figures:
    """The session's figures, in the order recorded."""

    def __init__(self) -> None:
        self.items: list[Figure] = []
        self.json_path: Path | None = None

    def record(self, scenario: str, name: str, value: float | str, *, target: float | None = None) -> None:
        self.items.append(Figure(scenario, name, value, target))

    def table(self, title: str) -> str:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in ("scenario", "figure", "value", "target"):
            table.add_column(column, justify="right" if column in ("value", "target") else "left")
        table.add_column("", justify="center")
        for f in self.items:
            mark = "" if f.ok is None else ("ok" if f.ok else "FAIL")
            value = f"{f.value:g}" if isinstance(f.value, float) else str(f.value)
            target = "" if f.target is None else f"{f.target:g}"
            table.add_row(f.scenario, f.name, value, target, mark)
        out = io.StringIO()
        Console(file=out, width=120, color_system=None).print(table)
        return out.getvalue()


FIGURES = Figures()
"""The session's one recorder; conftest prints it at the end."""


def report(terminalreporter: Any) -> None:
    """Print the session's figures and write them as JSON (called by tests/conftest.py at the session's end)."""
    if not FIGURES.items:
        return
    title = f"Reliability figures ({'large' if LARGE else 'bounded'} size; {SCALE_ENV}=large for make reliability)"
    terminalreporter.write_sep("=", "reliability")
    terminalreporter.write(FIGURES.table(title))
    if FIGURES.json_path is not None:
        data = {"scale": "large" if LARGE else "bounded", "figures": [asdict(f) for f in FIGURES.items]}
        # Another pytest session of the same user may have pruned old basetemps meanwhile.
        FIGURES.json_path.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.json_path.write_text(json.dumps(data, indent=2) + "\n")
        terminalreporter.write_line(f"figures written to {FIGURES.json_path}")
