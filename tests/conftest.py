"""Shared fixtures: a `store` fixture parametrised over every backend, so one suite runs on each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher.store.base import Store
from dispatcher.store.sqlite import SQLiteStore


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(str(tmp_path / "pushpool.db"))


STORE_BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": _sqlite}
"""Backend name -> factory of a fresh, empty store. Every backend must pass tests/test_store_conformance.py."""


@pytest.fixture(params=sorted(STORE_BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = STORE_BACKENDS[request.param](tmp_path)
    yield s
    s.close()
