"""A pass isolates each pool and each record: one stored row today's models refuse stops nothing else.

Such rows are real: an older version stored descriptions of any length before the 2,000-character bound,
and an operator may edit a table by hand. The rows are written here below the store's API, as those would be.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher import deployments, pools
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.errors import StoreError
from dispatcher.models import utcnow
from dispatcher.providers.base import Providers
from dispatcher.providers.fake import FakeProvider
from dispatcher.states import StateType
from dispatcher.store.base import Store
from dispatcher.store.dynamodb import DynamoDBStore, _deployment_key, _pool_key, _run_key
from dispatcher.store.sqlite import SQLiteStore

COMMAND = {"command": ["python", "-m", "flow"]}


def _rewrite(store: Store, kind: str, ident: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a stored record's JSON in place, below the store's API (as an older version or a hand would)."""
    if isinstance(store, SQLiteStore):
        table, column = {"pool": ("pools", "name"), "deployment": ("deployments", "name"), "run": ("runs", "id")}[kind]
        db = sqlite3.connect(store.url.removeprefix("sqlite:///"))
        (text,) = db.execute(f"SELECT data FROM {table} WHERE {column} = ?", (ident,)).fetchone()
        data = json.loads(text)
        change(data)
        db.execute(f"UPDATE {table} SET data = ? WHERE {column} = ?", (json.dumps(data), ident))
        db.commit()
        db.close()
        return
    assert isinstance(store, DynamoDBStore)
    key = {"pool": _pool_key, "deployment": _deployment_key, "run": _run_key}[kind](ident)
    item = store.client.get_item(TableName=store.table, Key=key)["Item"]
    data = json.loads(item["data"]["S"])
    change(data)
    item["data"] = {"S": json.dumps(data)}
    store.client.put_item(TableName=store.table, Item=item)


def _long_description(data: dict[str, Any]) -> None:
    data["description"] = "x" * 2001


def test_one_unreadable_row_is_named_and_every_other_pool_and_run_goes_on(store: Store) -> None:
    for name in ("a", "b", "c"):
        pools.create_pool(store, name)
        deployments.create_deployment(store, f"d{name}", pool=name, job_variables=COMMAND)
    deployments.create_deployment(store, "old", pool="a", job_variables=COMMAND)
    now = utcnow()
    due = now - timedelta(seconds=5)
    good_a = deployments.run_deployment(store, "da", scheduled_time=due)
    old_run = deployments.run_deployment(store, "old", scheduled_time=due)
    bad_c = deployments.run_deployment(store, "dc", scheduled_time=due - timedelta(seconds=1))
    good_c = deployments.run_deployment(store, "dc", scheduled_time=due)
    deployments.run_deployment(store, "db", scheduled_time=due)

    _rewrite(store, "pool", "b", _long_description)
    _rewrite(store, "deployment", "old", _long_description)
    _rewrite(store, "run", bad_c.id, lambda d: d.update(submission_attempts="many"))

    fake = FakeProvider()
    dispatcher = Dispatcher(store, providers=Providers({"process": fake}), settings=Settings(), environ={})
    try:
        summary = dispatcher.run_pass()
    finally:
        dispatcher.close()

    assert summary.pools == ["a", "c"]
    assert sorted(summary.submitted) == sorted([good_a.id, good_c.id])
    assert {key for key, _ in fake.launches} == {f"{good_a.id}-1", f"{good_c.id}-1"}
    assert "description" in summary.problems["pool b"] and "2,000" in summary.problems["pool b"]
    assert "submission_attempts" in summary.problems[f"run {bad_c.id}"]
    # A run of the unreadable deployment cannot be rendered: it crashes saying which record and field.
    crashed = summary.crashed[old_run.id]
    assert "deployment old" in crashed and "description" in crashed
    stored = store.get_run(old_run.id)
    assert stored is not None and stored.state is StateType.CRASHED

    # Asked for by name, the unreadable record is one sentence, not a validation dump.
    with pytest.raises(StoreError, match=r"stored pool b cannot be read: description .*fix or delete") as info:
        store.get_pool("b")
    assert "\n" not in str(info.value)
    # Deleting is the way out for a deployment left by an older version.
    deployments.delete_deployment(store, "old")
    assert store.get_deployment("old") is None


def test_an_unreadable_due_run_does_not_take_the_only_place_in_the_window(store: Store) -> None:
    pools.create_pool(store, "p", concurrency_limit=1)
    deployments.create_deployment(store, "d", pool="p", job_variables=COMMAND)
    now = utcnow()
    bad = deployments.run_deployment(store, "d", scheduled_time=now - timedelta(seconds=10))
    good = deployments.run_deployment(store, "d", scheduled_time=now - timedelta(seconds=5))
    _rewrite(store, "run", bad.id, lambda d: d.update(parameters="not an object"))

    assert [r.id for r in store.due_runs("p", "default", now, 1)] == [good.id]
    assert f"run {bad.id}" in store.unreadable_records()
    assert store.unreadable_records() == {}  # reported once per read, not forever


def test_a_listing_names_the_rows_it_left_out(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    for name in ("a", "b"):
        pools.create_pool(store, name)
    _rewrite(store, "pool", "b", _long_description)
    store.close()
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "work-pool", "ls", "-o", "json"],
        env={**os.environ, "PUSHPOOL_STORE": store.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [p["name"] for p in json.loads(result.stdout)] == ["a"]
    assert result.stderr.count("stored pool b cannot be read: description") == 1  # named once, on stderr
