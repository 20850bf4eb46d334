"""Shared fixtures: a `store` fixture parametrised over every backend, so one suite runs on each."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto_serial import serial_moto_server

from dispatcher.store.base import Store
from dispatcher.store.sqlite import SQLiteStore

DYNAMODB_ENDPOINT_ENV = "PUSHPOOL_TEST_DYNAMODB_ENDPOINT"
"""Set by the session's moto server; child processes of a test inherit it with the dummy AWS credentials."""


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(str(tmp_path / "pushpool.db"))


def _dynamodb(tmp_path: Path) -> Store:
    """A fresh table on the session's moto server (the `dynamodb_endpoint` fixture must be active)."""
    from dispatcher.store.dynamodb import DynamoDBStore

    store = DynamoDBStore(
        f"t-{uuid.uuid4().hex[:12]}", region="us-east-1", endpoint_url=os.environ[DYNAMODB_ENDPOINT_ENV]
    )
    store.init()
    return store


STORE_BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": _sqlite, "dynamodb": _dynamodb}
"""Backend name -> factory of a fresh, empty store. Every backend must pass tests/test_store_conformance.py."""


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """One moto server on 127.0.0.1 for the whole session, with dummy credentials in the environment."""
    patch = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        patch.delenv(name, raising=False)
    server = serial_moto_server("127.0.0.1")
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    patch.setenv(DYNAMODB_ENDPOINT_ENV, endpoint)
    yield endpoint
    server.stop()
    patch.undo()


@pytest.fixture(params=sorted(STORE_BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "dynamodb":
        request.getfixturevalue("dynamodb_endpoint")
    s = STORE_BACKENDS[request.param](tmp_path)
    yield s
    drop = getattr(s, "drop", None)
    if callable(drop):
        drop()
    s.close()


# the reliability scenarios (tests/reliability/) ---------------------------------------------------------------
RELIABILITY_DIR = Path(__file__).parent / "reliability"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if RELIABILITY_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The reliability figures recorder (tests/reliability/reliability_support.py), writing under basetemp."""
    # Imported by name: the requesting test module put tests/reliability on sys.path and imported it already.
    support = importlib.import_module("reliability_support")
    support.FIGURES.json_path = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    return support.FIGURES


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    support = sys.modules.get("reliability_support")
    if support is not None:
        support.report(terminalreporter)
