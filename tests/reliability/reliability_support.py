"""Sizes and figures shared by the reliability scenarios (imported by them and by this directory's conftest)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

SCALE_ENV = "RELIABILITY_SCALE"
LARGE = os.environ.get(SCALE_ENV, "bounded").strip().lower() == "large"


def size(bounded: int, large: int) -> int:
    """The size of a scenario: `bounded` under `make test`, `large` under `make reliability`."""
    return large if LARGE else bounded


@dataclass
class Figure:
    scenario: str
    name: str
    value: float
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

    def record(self, scenario: str, name: str, value: float, *, target: float | None = None) -> None:
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
