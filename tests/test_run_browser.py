"""Browsing a large history: the queries behind run pages and counts use indexes (SQLite's plans, DynamoDB's
requests), pages merge across pools without skipping or repeating a run, and the API and CLI expose them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_store_conformance import T0, make_deployment, make_pool, make_run, pending
from typer.testing import CliRunner

from dispatcher.api import Api, Request
from dispatcher.cli import app
from dispatcher.config import Settings
from dispatcher.errors import InvalidInput, NotFound
from dispatcher.models import FlowRun
from dispatcher.run_browser import browse_runs, merge_pages, pool_counts
from dispatcher.states import StateType
from dispatcher.store import dynamodb
from dispatcher.store.base import Count, RunPage, RunPosition, Store
from dispatcher.store.sqlite import SQLiteStore

TOKEN = "browse-token"


def _fill(store: Store, n: int = 60) -> list[FlowRun]:
    """Two pools (p with queues default and q, o), three deployments, runs in four states, ties in time."""
    make_pool(store, "p", limit=5, q=2)
    make_pool(store, "o")
    deps = [make_deployment(store, "d1", pool="p"), make_deployment(store, "d2", pool="p", queue="q")]
    other = make_deployment(store, "d3", pool="o")
    states = [StateType.SCHEDULED, StateType.COMPLETED, StateType.FAILED, StateType.SCHEDULED]
    runs = []
    for i in range(n):
        dep = other if i % 5 == 4 else deps[i % 2]
        run = make_run(dep, i, T0 + timedelta(minutes=i // 3))
        runs.append(run.model_copy(update={"state": states[i % 4], "state_name": states[i % 4].value.title()}))
    store.create_runs(runs)
    return runs


def _newest(runs: list[FlowRun]) -> list[str]:
    return [r.id for r in sorted(runs, key=lambda r: RunPosition.of(r).key)]


def _browse_all(store: Store, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(200):
        page = browse_runs(store, limit=limit, cursor=cursor, **filters)
        assert len(page.runs) <= limit
        seen += [r.id for r in page.runs]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the cursor does not move on")


# merging sources --------------------------------------------------------------------------------------------
def test_browsing_every_pool_merges_their_pages_without_skipping_or_repeating(store: Store) -> None:
    runs = _fill(store)
    for limit in (1, 7, 100):
        assert _browse_all(store, limit) == _newest(runs)
        assert _browse_all(store, limit, queue="default") == _newest([r for r in runs if r.queue == "default"])
    both = [StateType.FAILED, StateType.COMPLETED]
    assert _browse_all(store, 3, states=both) == _newest([r for r in runs if r.state in both])
    assert _browse_all(store, 4, deployment="d2", states=[StateType.SCHEDULED]) == _newest(
        [r for r in runs if r.deployment == "d2" and r.state is StateType.SCHEDULED]
    )


def test_a_merged_page_stops_where_a_short_source_stopped() -> None:
    def run(i: int, minute: int) -> FlowRun:
        return FlowRun(
            id=f"r{i}", name="r", deployment="d", deployment_id="x", pool="p", queue="q", scheduled_time=T0
        ).model_copy(update={"scheduled_time": T0 + timedelta(minutes=minute)})

    # Source a read down to minute 5 only (a budget-bounded page); source b holds runs at minutes 9 and 2.
    a = RunPage([run(1, 8)], RunPosition.of(run(0, 5)))
    b = RunPage([run(2, 9), run(3, 2)], None)
    merged = merge_pages([a, b], limit=10)
    assert [r.id for r in merged.runs] == ["r2", "r1"]  # r3 (minute 2) waits for the next page
    assert merged.next == RunPosition.of(run(0, 5))
    one = merge_pages([b], limit=1)
    assert [r.id for r in one.runs] == ["r2"] and one.next == RunPosition.of(run(2, 9))


def test_browsing_names_what_does_not_exist_and_refuses_a_foreign_cursor(store: Store) -> None:
    _fill(store, 5)
    with pytest.raises(NotFound, match="ghost"):
        browse_runs(store, pool="ghost")
    with pytest.raises(NotFound, match="nope"):
        browse_runs(store, pool="p", queue="nope")
    with pytest.raises(NotFound, match="deployment 'dx'"):
        browse_runs(store, deployment="dx")
    with pytest.raises(InvalidInput, match="cursor"):
        browse_runs(store, cursor="not-a-cursor")


def test_pool_counts_per_queue_and_in_total(store: Store) -> None:
    runs = _fill(store, 24)
    now = T0 + timedelta(minutes=4, seconds=30)
    store.admit([pending(next(r for r in runs if r.pool == "p" and r.state is StateType.SCHEDULED))])
    counts = pool_counts(store, "p", now=now, settings=Settings(late_after_seconds=60))
    due = [
        r
        for r in runs[1:]
        if r.pool == "p" and r.state is StateType.SCHEDULED and r.scheduled_time <= now and r.id != "run-00000"
    ]
    late = [r for r in due if r.scheduled_time <= now - timedelta(seconds=60)]
    per_queue = {q: len([r for r in due if r.queue == q]) for q in ("default", "q")}
    assert {q: g.waiting.value for q, g in counts.queues.items()} == per_queue
    assert counts.total.waiting == Count(len(due)) and counts.total.late == Count(len(late))
    assert counts.total.active == 1 and counts.total.limit == 5
    assert counts.queues["q"].limit == 2 and list(counts.queues) == ["default", "q"]


# the queries: indexed, bounded ----------------------------------------------------------------------------------
@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def test_sqlite_pages_and_counts_read_an_index_in_order(sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    _fill(sqlite_store)
    executed: list[str] = []
    sqlite_store._db.set_trace_callback(executed.append)
    after = RunPosition.of(sqlite_store.run_page(pool="p", limit=1).runs[0])
    for filters in (
        {"pool": "p"},
        {"pool": "p", "queue": "q"},
        {"pool": "p", "state": StateType.FAILED},
        {"pool": "p", "queue": "q", "state": StateType.FAILED},
        {"deployment": "d1"},
        {"deployment": "d1", "state": StateType.FAILED},
    ):
        sqlite_store.run_page(limit=5, **filters)  # type: ignore[arg-type]
        sqlite_store.run_page(limit=5, after=after, **filters)  # type: ignore[arg-type]
    sqlite_store.count_scheduled("p", "q")
    sqlite_store.count_scheduled("p", "q", until=T0)
    sqlite_store._db.set_trace_callback(None)
    reads = [sql for sql in executed if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) >= 14
    probe = sqlite3.connect(tmp_path / "s.db")
    for sql in reads:
        steps = [str(row[-1]) for row in probe.execute(f"EXPLAIN QUERY PLAN {sql}")]
        assert any("USING" in step and "INDEX" in step for step in steps), (sql, steps)
        assert "SCAN runs" not in steps, (sql, steps)  # no walk of the whole table
        # No sort of the matching rows: the index gives the order, and LIMIT stops the read early.
        assert not any("TEMP B-TREE" in step for step in steps), (sql, steps)
    probe.close()


@pytest.fixture
def dynamodb_store(dynamodb_endpoint: str) -> Iterator[Any]:
    s = dynamodb.DynamoDBStore(
        "t-browse-" + str(id(dynamodb_endpoint))[-6:], region="us-east-1", endpoint_url=dynamodb_endpoint
    )
    s.init()
    yield s
    s.drop()
    s.close()


def _recorded(store: Any) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    store.client.meta.events.register("before-parameter-build.dynamodb", record)
    return calls


def test_dynamodb_pages_and_counts_query_one_partition_and_never_scan(
    dynamodb_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _fill(dynamodb_store)
    calls = _recorded(dynamodb_store)
    counted = dynamodb_store.count_scheduled("p", "default", cap=3)
    assert counted == Count(3, capped=True)
    [(name, params)] = [c for c in calls if c[0] == "Query"]
    assert params["Select"] == "COUNT" and params["IndexName"] == "due" and params["Limit"] == 4
    calls.clear()
    # A budget of 5 index entries per page: a rare state ends pages short, with a cursor, and the walk still
    # finds every match once.
    monkeypatch.setattr(dynamodb, "PAGE_EXAMINE_BUDGET", 5)
    seen, after, pages = [], None, 0
    while True:
        page = dynamodb_store.run_page(pool="p", state=StateType.FAILED, limit=50, after=after)
        seen += [r.id for r in page.runs]
        pages += 1
        if page.next is None:
            break
        after = page.next
    assert seen == _newest([r for r in runs if r.pool == "p" and r.state is StateType.FAILED])
    assert pages > 3, "each page read at most 5 entries of the pool's index"
    assert {name for name, _ in calls} <= {"Query", "BatchGetItem"}
    queries = [p for name, p in calls if name == "Query"]
    assert all(p["IndexName"] == "runs_by_pool" and p["Limit"] <= 5 for p in queries)


# the API and the CLI -------------------------------------------------------------------------------------------
def _get(api: Api, path: str, **query: str) -> Any:
    return api.handle(Request("GET", path, {"Authorization": f"Bearer {TOKEN}"}, query))


def test_get_flow_runs_pages_with_a_next_cursor_header(sqlite_store: SQLiteStore) -> None:
    runs = _fill(sqlite_store)
    api = Api(sqlite_store, api_token=TOKEN)
    seen, query = [], {"pool": "p", "limit": "7"}
    while True:
        answer = _get(api, "/flow_runs", **query)
        assert answer.status == 200 and isinstance(answer.body, list)  # the list the CLI and clients read
        seen += [r["id"] for r in answer.body]
        cursor = answer.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in answer.headers
            break
        assert answer.headers["Link"] == f'<?pool=p&limit=7&cursor={cursor}>; rel="next"'
        query = {**query, "cursor": cursor}
    assert seen == _newest([r for r in runs if r.pool == "p"])
    d2 = _get(api, "/flow_runs", deployment="d2", state="scheduled", limit="200")
    assert [r["id"] for r in d2.body] == _newest(
        [r for r in runs if r.deployment == "d2" and r.state is StateType.SCHEDULED]
    )
    assert _get(api, "/flow_runs", cursor="bogus").status == 422
    assert _get(api, "/flow_runs", deployment="ghost").status == 404


def test_get_pool_counts(sqlite_store: SQLiteStore) -> None:
    _fill(sqlite_store)
    answer = _get(Api(sqlite_store, api_token=TOKEN), "/work_pools/p/counts")
    assert answer.status == 200
    assert answer.body["total"]["active"] == 0 and answer.body["total"]["limit"] == 5
    assert answer.body["queues"]["q"]["waiting"] == {"value": 12, "capped": False}  # every scheduled run is past
    assert answer.body["cap"] == 1000
    assert _get(Api(sqlite_store, api_token=TOKEN), "/work_pools/ghost/counts").status == 404


def test_flow_run_ls_by_deployment_with_a_cursor_and_all(sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    runs = _fill(sqlite_store)
    url = f"sqlite:///{tmp_path / 's.db'}"
    cli = CliRunner()
    first = cli.invoke(app, ["--store", url, "flow-run", "ls", "--deployment", "d1", "--limit", "4", "-o", "json"])
    assert first.exit_code == 0, first.output
    expected = _newest([r for r in runs if r.deployment == "d1"])
    assert [r["id"] for r in json.loads(first.stdout)] == expected[:4]
    cursor = first.stderr.strip().rsplit(" ", 1)[-1]
    assert first.stderr.startswith("More runs match: add --cursor")
    rest = cli.invoke(
        app, ["--store", url, "flow-run", "ls", "--deployment", "d1", "--cursor", cursor, "--all", "-o", "json"]
    )
    assert rest.exit_code == 0, rest.output
    assert [r["id"] for r in json.loads(rest.stdout)] == expected[4:] and rest.stderr == ""
    bad = cli.invoke(app, ["--store", url, "flow-run", "ls", "--cursor", "zzz"])
    assert bad.exit_code != 0 and "cursor is not one pushpool gave" in bad.stderr
