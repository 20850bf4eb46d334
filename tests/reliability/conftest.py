"""The reliability scenarios: every test here is marked `reliability` and records figures for one table.

`make test` runs them at a bounded size; `make reliability` sets `RELIABILITY_SCALE=large`. A test records
its figures with the `figures` fixture (`figures.record(scenario, name, value, target=0)`); at the end of
the session the table is printed to the terminal and written as JSON to
`<pytest basetemp>/reliability-figures.json` (never committed). A figure with a target is also asserted
by the test that records it: the table shows what was measured, the assertion makes the run fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from reliability_support import FIGURES, LARGE, SCALE_ENV, Figures


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    FIGURES.json_path = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    yield FIGURES


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
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
