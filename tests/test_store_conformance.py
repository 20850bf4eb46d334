"""The store conformance suite: written once, run against every backend of tests/conftest.py.

It pins the semantics the dispatcher relies on: conditional writes, index order, and admission that moves
a run to PENDING only together with its pool, queue and deployment slots, even under concurrent writers.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.admit_pass import admit_pool
from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import Deployment, FlowRun, StateRecord, WorkPool, WorkQueue
from dispatcher.states import StateType
from dispatcher.store.base import Admission, Count, RunPosition, Store, deployment_slot, pool_slot, queue_slot

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_pool(store: Store, name: str = "pool", limit: int | None = None, **queues: int | None) -> WorkPool:
    pool = WorkPool(name=name, concurrency_limit=limit)
    store.create_pool(pool, WorkQueue(pool=name, name="default", priority=1))
    for priority, (queue, qlimit) in enumerate(queues.items(), start=2):
        queue_model = WorkQueue(pool=name, name=queue, priority=priority, concurrency_limit=qlimit)
        store.save_queues(name, [queue_model], new=queue)
    return pool


def make_deployment(
    store: Store,
    name: str = "dep",
    pool: str = "pool",
    queue: str = "default",
    limit: int | None = None,
    **fields: object,
) -> Deployment:
    deployment = Deployment(name=name, pool=pool, queue=queue, concurrency_limit=limit, **fields)  # type: ignore[arg-type]
    store.create_deployment(deployment)
    return deployment


def make_run(deployment: Deployment, i: int, when: datetime = T0, queue: str | None = None) -> FlowRun:
    return FlowRun(
        id=f"run-{i:05d}",
        name=f"run-{i}",
        deployment=deployment.name,
        deployment_id=deployment.id,
        pool=deployment.pool,
        queue=queue or deployment.queue,
        scheduled_time=when,
    )


def pending(run: FlowRun) -> Admission:
    return Admission(run, run.moved(StateType.PENDING, source="test")[0])


# pools, queues, settings -------------------------------------------------------------------------------------
def test_pool_round_trip_and_conflict(store: Store) -> None:
    make_pool(store, "a", limit=2)
    assert store.get_pool("a") is not None and store.get_pool("a").concurrency_limit == 2  # type: ignore[union-attr]
    assert [q.name for q in store.list_queues("a")] == ["default"]
    assert set(store.slots([pool_slot("a"), queue_slot("a", "default"), pool_slot("zz")])) == {
        pool_slot("a"),
        queue_slot("a", "default"),
    }
    assert store.slots([pool_slot("a")])[pool_slot("a")].limit == 2
    with pytest.raises(Conflict):
        store.create_pool(WorkPool(name="a"), WorkQueue(pool="a", name="default", priority=1))
    assert store.get_pool("missing") is None


def test_update_pool_moves_its_slot_limit(store: Store) -> None:
    pool = make_pool(store, "a", limit=2)
    store.update_pool(pool.model_copy(update={"concurrency_limit": 7, "description": "d"}))
    assert store.get_pool("a").description == "d"  # type: ignore[union-attr]
    assert store.slots([pool_slot("a")])[pool_slot("a")].limit == 7
    with pytest.raises(NotFound):
        store.update_pool(WorkPool(name="ghost"))


def test_list_pools_sorted_and_delete_removes_queues_and_slots(store: Store) -> None:
    make_pool(store, "b")
    make_pool(store, "a", q=None)
    assert [p.name for p in store.list_pools()] == ["a", "b"]
    store.delete_pool("a")
    assert [p.name for p in store.list_pools()] == ["b"]
    assert store.list_queues("a") == []
    assert store.slots([pool_slot("a"), queue_slot("a", "q")]) == {}
    with pytest.raises(NotFound):
        store.delete_pool("a")


def test_queues_in_priority_order_and_saved_together(store: Store) -> None:
    make_pool(store, "p", x=None, y=3)
    assert [(q.name, q.priority) for q in store.list_queues("p")] == [("default", 1), ("x", 2), ("y", 3)]
    x, y = store.get_queue("p", "x"), store.get_queue("p", "y")
    assert x is not None and y is not None
    store.save_queues("p", [x.model_copy(update={"priority": 3}), y.model_copy(update={"priority": 2})])
    assert [q.name for q in store.list_queues("p")] == ["default", "y", "x"]
    with pytest.raises(Conflict):
        store.save_queues("p", [WorkQueue(pool="p", name="x", priority=9)], new="x")
    with pytest.raises(NotFound):
        store.save_queues("p", [WorkQueue(pool="p", name="nope", priority=9)])
    assert store.slots([queue_slot("p", "y")])[queue_slot("p", "y")].limit == 3


def test_a_failed_queue_batch_writes_nothing(store: Store) -> None:
    make_pool(store, "p", x=None)
    x = store.get_queue("p", "x")
    assert x is not None
    with pytest.raises(NotFound):
        store.save_queues("p", [x.model_copy(update={"priority": 9}), WorkQueue(pool="p", name="ghost", priority=4)])
    assert store.get_queue("p", "x").priority == 2  # type: ignore[union-attr]


def test_touch_makes_pool_and_queue_ready(store: Store) -> None:
    make_pool(store, "p")
    assert store.get_pool("p").status == "NOT_READY"  # type: ignore[union-attr]
    store.touch("p", ["default"], datetime.now(UTC))
    assert store.get_pool("p").status == "READY"  # type: ignore[union-attr]
    assert store.get_queue("p", "default").status == "READY"  # type: ignore[union-attr]


def test_settings(store: Store) -> None:
    assert store.get_setting("k") is None
    store.put_setting("k", "v1")
    store.put_setting("k", "v2")
    assert store.get_setting("k") == "v2"
    assert store.setting_default("k", "v3") == "v2"
    assert store.setting_default("fresh", "v4") == "v4"
    assert store.get_setting("fresh") == "v4"


# deployments -------------------------------------------------------------------------------------------------
def test_deployments_by_pool_and_sparse_schedule_index(store: Store) -> None:
    from dispatcher.schedules import IntervalSchedule

    make_pool(store, "p")
    make_pool(store, "q")
    make_deployment(store, "a", pool="p", schedules=[IntervalSchedule(interval=60)])
    make_deployment(store, "b", pool="p", schedules=[IntervalSchedule(interval=60)], schedule_paused=True)
    make_deployment(store, "c", pool="q")
    assert [d.name for d in store.list_deployments("p")] == ["a", "b"]
    assert [d.name for d in store.list_deployments()] == ["a", "b", "c"]
    assert [d.name for d in store.scheduled_deployments()] == ["a"]
    with pytest.raises(Conflict):
        make_deployment(store, "a", pool="q")
    b = store.get_deployment("b")
    assert b is not None
    store.update_deployment(b.model_copy(update={"schedule_paused": False}))
    assert [d.name for d in store.scheduled_deployments()] == ["a", "b"]
    store.delete_deployment("a")
    assert store.get_deployment("a") is None
    with pytest.raises(NotFound):
        store.delete_deployment("a")


# runs --------------------------------------------------------------------------------------------------------
def test_create_runs_is_idempotent(store: Store) -> None:
    make_pool(store)
    dep = make_deployment(store)
    runs = [make_run(dep, i) for i in range(3)]
    assert store.create_runs(runs) == [r.id for r in runs]
    changed = runs[0].model_copy(update={"name": "other"})
    assert store.create_runs([changed, make_run(dep, 3)]) == ["run-00003"]
    assert store.get_run("run-00000").name == "run-0"  # type: ignore[union-attr]
    assert store.get_run("nope") is None


def test_due_runs_in_time_then_id_order_with_limit(store: Store) -> None:
    make_pool(store, "pool", other=None)
    dep = make_deployment(store)
    runs = [
        make_run(dep, 5, T0 + timedelta(seconds=2)),
        make_run(dep, 3, T0),
        make_run(dep, 1, T0),
        make_run(dep, 2, T0 + timedelta(hours=1)),
        make_run(dep, 4, T0, queue="other"),
    ]
    store.create_runs(runs)
    due = store.due_runs("pool", "default", T0 + timedelta(seconds=10), 10)
    assert [r.id for r in due] == ["run-00001", "run-00003", "run-00005"]
    first_two = store.due_runs("pool", "default", T0 + timedelta(seconds=10), 2)
    assert [r.id for r in first_two] == ["run-00001", "run-00003"]
    assert [r.id for r in store.due_runs("pool", "default", T0, 10)] == ["run-00001", "run-00003"]
    store.admit([pending(due[0])])
    assert [r.id for r in store.due_runs("pool", "default", T0, 10)] == ["run-00003"]


def test_list_runs_filters_and_newest_first(store: Store) -> None:
    make_pool(store, "pool", other=None)
    dep = make_deployment(store)
    store.create_runs([make_run(dep, i, T0 + timedelta(minutes=i), queue="other" if i % 2 else None) for i in range(4)])
    assert [r.id for r in store.list_runs("pool")] == ["run-00003", "run-00002", "run-00001", "run-00000"]
    assert [r.id for r in store.list_runs("pool", queue="other")] == ["run-00003", "run-00001"]
    assert [r.id for r in store.list_runs("pool", limit=1)] == ["run-00003"]
    store.admit([pending(store.get_run("run-00002"))])  # type: ignore[arg-type]
    assert [r.id for r in store.list_runs("pool", state=StateType.PENDING)] == ["run-00002"]
    assert [r.id for r in store.runs_of_deployment("dep", limit=2)] == ["run-00003", "run-00002"]


def test_admit_takes_every_slot_and_release_gives_them_back(store: Store) -> None:
    make_pool(store, "pool", limit=5)
    dep = make_deployment(store, limit=4)
    run = make_run(dep, 1)
    store.create_runs([run])
    [admitted] = store.admit([pending(run)])
    assert admitted.state is StateType.PENDING and admitted.version == run.version + 1
    keys = [pool_slot("pool"), queue_slot("pool", "default"), deployment_slot(dep.id)]
    assert [s.active for s in store.slots(keys).values()] == [1, 1, 1]
    assert [r.id for r in store.active_runs("pool")] == [run.id]
    done = admitted.moved(StateType.COMPLETED, source="test")[0]
    assert store.save_run(admitted, done)
    assert [s.active for s in store.slots(keys).values()] == [0, 0, 0]
    assert store.active_runs("pool") == []
    assert store.get_run(run.id).state is StateType.COMPLETED  # type: ignore[union-attr]


def test_admit_refuses_full_slots_and_stale_versions(store: Store) -> None:
    make_pool(store, "pool", limit=1)
    dep = make_deployment(store)
    a, b = make_run(dep, 1), make_run(dep, 2)
    store.create_runs([a, b])
    assert [r.id for r in store.admit([pending(a), pending(b)])] == [a.id]
    assert store.get_run(b.id).state is StateType.SCHEDULED  # type: ignore[union-attr]
    assert store.admit([pending(a)]) == []  # a moved on: its version is stale
    assert store.slots([pool_slot("pool")])[pool_slot("pool")].active == 1


def test_admit_honours_queue_and_deployment_limits_and_zero(store: Store) -> None:
    make_pool(store, "pool", q0=0, q1=1)
    dep = make_deployment(store, queue="q1", limit=None)
    capped = make_deployment(store, "capped", queue="default", limit=1)
    runs = [make_run(dep, 1), make_run(dep, 2), make_run(dep, 3, queue="q0"), make_run(capped, 4), make_run(capped, 5)]
    store.create_runs(runs)
    admitted = store.admit([pending(r) for r in runs])
    assert sorted(r.id for r in admitted) == ["run-00001", "run-00004"]


def test_save_run_is_conditional_and_guards_active_entry(store: Store) -> None:
    make_pool(store)
    dep = make_deployment(store)
    run = make_run(dep, 1)
    store.create_runs([run])
    late = run.moved(StateType.SCHEDULED, name="Late", source="test")[0]
    assert store.save_run(run, late)
    assert not store.save_run(run, late)  # stale: the stored version moved on
    with pytest.raises(ValueError):
        store.save_run(late, late.moved(StateType.PENDING, source="test")[0])
    assert store.get_run(run.id).state_name == "Late"  # type: ignore[union-attr]


def test_save_runs_writes_each_change_on_its_own_condition(store: Store) -> None:
    make_pool(store, "pool", limit=3)
    dep = make_deployment(store)
    runs = [make_run(dep, i) for i in range(3)]
    store.create_runs(runs)
    admitted = sorted(store.admit([pending(r) for r in runs]), key=lambda r: r.id)
    moved_on = admitted[1].moved(StateType.RUNNING, source="callback")[0]
    assert store.save_run(admitted[1], moved_on)  # another writer got to the middle run first
    changes = [
        (admitted[0], admitted[0].moved(StateType.PENDING, name="InfrastructurePending", source="test")[0]),
        (admitted[1], admitted[1].moved(StateType.PENDING, name="InfrastructurePending", source="test")[0]),
        (admitted[2], admitted[2].moved(StateType.FAILED, source="test")[0]),
    ]
    assert store.save_runs(changes) == [True, False, True]
    assert [store.get_run(r.id).state_name for r in runs] == ["InfrastructurePending", "Running", "Failed"]  # type: ignore[union-attr]
    assert store.slots([pool_slot("pool")])[pool_slot("pool")].active == 2  # the failed run released its slot
    assert store.save_runs([]) == []
    with pytest.raises(ValueError):
        store.save_runs([(runs[0], runs[0].moved(StateType.PENDING, source="test")[0])])


def test_a_history_read_back_is_in_time_order_whatever_clocks_stamped_it(store: Store) -> None:
    make_pool(store)
    dep = make_deployment(store)
    created = T0 + timedelta(seconds=10)
    first = StateRecord(state=StateType.SCHEDULED, name="Scheduled", time=created, source="user")
    run = make_run(dep, 1).model_copy(update={"state_history": [first], "created": created, "updated": created})
    store.create_runs([run])
    # A dispatcher whose clock reads 10 s earlier (its pass began before the run was created) admits and submits it.
    [admitted] = store.admit([Admission(run, run.moved(StateType.PENDING, source="dispatcher", now=T0)[0])])
    launched = admitted.moved(
        StateType.PENDING, name="InfrastructurePending", source="dispatcher", now=T0, infrastructure_id="job-1"
    )[0]
    assert store.save_runs([(admitted, launched)]) == [True]
    stored = store.get_run(run.id)
    assert stored is not None
    assert [(r.name, r.time) for r in stored.state_history] == [
        ("Scheduled", created),
        ("Pending", created),
        ("InfrastructurePending", created),
    ]
    assert stored.updated == created


def test_release_never_goes_below_zero_and_backward_retry_frees_slot(store: Store) -> None:
    make_pool(store, "pool", limit=1)
    dep = make_deployment(store)
    run = make_run(dep, 1)
    store.create_runs([run])
    [admitted] = store.admit([pending(run)])
    retry = admitted.moved(StateType.SCHEDULED, name="AwaitingRetry", source="test")[0]
    assert store.save_run(admitted, retry)
    assert store.slots([pool_slot("pool")])[pool_slot("pool")].active == 0
    assert [r.id for r in store.due_runs("pool", "default", T0, 5)] == [run.id]


def test_repair_slot_is_conditional_on_the_version_read(store: Store) -> None:
    make_pool(store, "pool", limit=2)
    key = pool_slot("pool")
    seen = store.slots([key])[key]
    assert (seen.active, seen.version) == (0, 0)
    assert store.repair_slot(key, seen, 3)
    now = store.slots([key])[key]
    assert (now.active, now.limit, now.version) == (3, 2, 1) and now.changed > 0
    assert not store.repair_slot(key, seen, 0)  # a stale read is refused
    assert store.slots([key])[key].active == 3
    assert not store.repair_slot("pool:ghost", seen, 1)
    assert store.slots(["pool:ghost"]) == {}


def test_a_recount_refuses_a_slot_whose_count_went_away_and_came_back(store: Store) -> None:
    # The recount reads the slot, then the active runs. Meanwhile one run ends and another is admitted: the
    # count reads the same again, but the runs read in between no longer describe it.
    make_pool(store, "pool", limit=5)
    dep = make_deployment(store)
    first, second = make_run(dep, 1), make_run(dep, 2)
    store.create_runs([first, second])
    [running] = store.admit([pending(first)])
    key = pool_slot("pool")
    seen = store.slots([key])[key]
    assert store.save_run(running, running.moved(StateType.COMPLETED, source="test")[0])
    counted = len(store.active_runs("pool"))  # 0: read while the slot is empty
    store.admit([pending(second)])
    assert store.slots([key])[key].active == seen.active == 1
    assert not store.repair_slot(key, seen, counted)
    assert store.slots([key])[key].active == 1
    version = store.slots([key])[key].version
    assert version == seen.version + 2  # a release and an admission, each one change


# concurrency -------------------------------------------------------------------------------------------------
POOL_LIMIT, QUEUE_LIMIT, RUNS_PER_QUEUE = 3, 2, 30


def _concurrent_setup(store: Store) -> Deployment:
    make_pool(store, "pool", limit=POOL_LIMIT, fast=QUEUE_LIMIT, slow=QUEUE_LIMIT)
    dep = make_deployment(store, queue="fast")
    runs = [make_run(dep, i, queue="fast" if i % 2 else "slow") for i in range(2 * RUNS_PER_QUEUE)]
    store.create_runs(runs)
    return dep


def _over_limit(store: Store) -> str | None:
    active = store.active_runs("pool", limit=1000)
    per_queue = {q: sum(r.queue == q for r in active) for q in ("fast", "slow")}
    if len(active) > POOL_LIMIT or max(per_queue.values()) > QUEUE_LIMIT:
        return f"{len(active)} active, per queue {per_queue}"
    return None


def _drain(store: Store, worker: int, admitted: list[str], stop: threading.Event) -> None:
    rng = random.Random(worker)
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        now = T0 + timedelta(seconds=1)
        result = admit_pool(store, "pool", now, queue=rng.choice([None, "fast", "slow"]))
        for run in result.admitted:
            admitted.append(run.id)
            time.sleep(rng.random() * 0.003)
            store.save_run(run, run.moved(StateType.COMPLETED, source=f"worker-{worker}")[0])
        if not result.admitted and not any(store.due_runs("pool", q, now, 1) for q in ("fast", "slow")):
            return


def test_threads_admitting_at_once_never_exceed_a_limit(store: Store) -> None:
    _concurrent_setup(store)
    admitted: list[list[str]] = [[] for _ in range(6)]
    stop = threading.Event()
    violations: list[str] = []

    def monitor() -> None:
        while not stop.is_set():
            if (v := _over_limit(store)) is not None:
                violations.append(v)
            time.sleep(0.001)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    workers = [threading.Thread(target=_drain, args=(store, i, admitted[i], stop)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    every = [rid for ids in admitted for rid in ids]
    assert violations == []
    assert len(every) == len(set(every)) == 2 * RUNS_PER_QUEUE  # all admitted, none twice
    assert store.slots([pool_slot("pool")])[pool_slot("pool")].active == 0


WORKER = """
import json, random, sys, time
from datetime import timedelta
sys.path.insert(0, sys.argv[3])
from test_store_conformance import T0, admit_pool
from dispatcher.store import open_store
from dispatcher.states import StateType
store, rng, ids = open_store(sys.argv[1]), random.Random(int(sys.argv[2])), []
peak = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    now = T0 + timedelta(seconds=1)
    result = admit_pool(store, "pool", now, queue=rng.choice([None, "fast", "slow"]))
    peak = max(peak, len(store.active_runs("pool", limit=1000)))
    for run in result.admitted:
        ids.append(run.id)
        time.sleep(rng.random() * 0.003)
        store.save_run(run, run.moved(StateType.COMPLETED, source="proc")[0])
    if not result.admitted and not any(store.due_runs("pool", q, now, 1) for q in ("fast", "slow")):
        break
print(json.dumps({"ids": ids, "peak": peak}))
"""


def test_processes_admitting_at_once_never_exceed_a_limit(store: Store) -> None:
    _concurrent_setup(store)
    here = str(Path(__file__).parent)
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, store.url, str(i), here], stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    violations: list[str] = []
    while any(p.poll() is None for p in procs):
        if (v := _over_limit(store)) is not None:
            violations.append(v)
        time.sleep(0.002)
    reports = [json.loads(p.communicate()[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    every = [rid for r in reports for rid in r["ids"]]
    assert violations == []
    assert max(r["peak"] for r in reports) <= POOL_LIMIT
    assert len(every) == len(set(every)) == 2 * RUNS_PER_QUEUE
    assert store.slots([pool_slot("pool")])[pool_slot("pool")].active == 0


def test_a_sqlite_store_made_before_slot_versions_gains_them_when_opened(tmp_path: Path) -> None:
    import sqlite3

    from dispatcher.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the slots table as the first release made it, with one slot in use
        db.execute("CREATE TABLE slots (key TEXT PRIMARY KEY, lim INTEGER, active INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO slots VALUES ('pool:old', 4, 2)")
    store = SQLiteStore(str(path))
    try:
        seen = store.slots(["pool:old"])["pool:old"]
        assert (seen.limit, seen.active, seen.version, seen.changed) == (4, 2, 0, 0.0)
        assert store.repair_slot("pool:old", seen, 1)
        assert store.slots(["pool:old"])["pool:old"].version == 1
    finally:
        store.close()


def test_delete_run_only_at_its_version_and_never_an_active_one(store: Store) -> None:
    make_pool(store)
    deployment = make_deployment(store)
    first, second = make_run(deployment, 1), make_run(deployment, 2)
    store.create_runs([first, second])
    stale = first.model_copy(update={"version": first.version + 1})
    assert store.delete_run(stale) is False  # another writer moved it on: nothing deleted
    assert store.get_run(first.id) is not None
    assert store.delete_run(first) is True
    assert store.get_run(first.id) is None
    assert store.delete_run(first) is False  # already gone
    [admitted] = store.admit([pending(second)])
    with pytest.raises(ValueError, match="active run"):
        store.delete_run(admitted)
    assert store.get_run(second.id) is not None
    assert store.runs_of_deployment(deployment.name) == [store.get_run(second.id)]


def test_next_scheduled_time_is_the_queues_earliest_scheduled_run_after_a_time(store: Store) -> None:
    make_pool(store, "pool", other=None)
    dep = make_deployment(store)
    assert store.next_scheduled_time("pool", "default", T0) is None
    store.create_runs(
        [
            make_run(dep, 1, T0 - timedelta(seconds=5)),  # due already (waiting for a slot): not "next"
            make_run(dep, 2, T0),  # exactly at `after`: not later than it
            make_run(dep, 3, T0 + timedelta(seconds=30)),
            make_run(dep, 4, T0 + timedelta(milliseconds=1500)),
            make_run(dep, 5, T0 + timedelta(seconds=1), queue="other"),
        ]
    )
    assert store.next_scheduled_time("pool", "default", T0) == T0 + timedelta(milliseconds=1500)
    assert store.next_scheduled_time("pool", "other", T0) == T0 + timedelta(seconds=1)
    assert store.next_scheduled_time("pool", "default", T0 - timedelta(seconds=10)) == T0 - timedelta(seconds=5)
    # Only SCHEDULED runs count: once run 4 is admitted, run 3 is next.
    store.admit([pending(store.get_run("run-00004"))])  # type: ignore[arg-type]
    assert store.next_scheduled_time("pool", "default", T0) == T0 + timedelta(seconds=30)
    assert store.next_scheduled_time("pool", "default", T0 + timedelta(seconds=30)) is None
    assert store.next_scheduled_time("nope", "default", T0) is None


# run pages and counts (the dashboard's reads) ------------------------------------------------------------------
def _history(store: Store) -> list[FlowRun]:
    """40 runs over two pools, three queues, two deployments and four states, with ties in scheduled time."""
    make_pool(store, "p", q=None)
    make_pool(store, "o")
    deps = [make_deployment(store, "d1", pool="p"), make_deployment(store, "d2", pool="p", queue="q")]
    other = make_deployment(store, "d3", pool="o")
    states = [StateType.SCHEDULED, StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED]
    runs = []
    for i in range(40):
        dep = other if i % 10 == 9 else deps[i % 2]
        run = make_run(dep, i, T0 + timedelta(minutes=i // 3))  # three runs per minute: ties broken by id
        runs.append(run.model_copy(update={"state": states[i % 4], "state_name": states[i % 4].value.title()}))
    store.create_runs(runs)
    return runs


def _newest_first(runs: list[FlowRun]) -> list[str]:
    return [r.id for r in sorted(runs, key=lambda r: (-r.scheduled_time.timestamp(), r.id))]


def _all_pages(store: Store, limit: int, **filters: object) -> tuple[list[str], int]:
    seen: list[str] = []
    after, pages = None, 0
    while True:
        page = store.run_page(after=after, limit=limit, **filters)  # type: ignore[arg-type]
        assert len(page.runs) <= limit
        seen += [r.id for r in page.runs]
        pages += 1
        if page.next is None:
            return seen, pages
        assert pages < 100, "the cursor does not move on"
        after = page.next


@pytest.mark.parametrize(
    "filters",
    [
        {"pool": "p"},
        {"pool": "p", "queue": "q"},
        {"pool": "p", "state": StateType.SCHEDULED},
        {"pool": "p", "queue": "default", "state": StateType.FAILED},
        {"pool": "o"},
        {"deployment": "d1"},
        {"deployment": "d2", "state": StateType.COMPLETED},
        {"deployment": "d1", "queue": "q"},
        {"pool": "ghost"},
    ],
    ids=repr,
)
def test_run_pages_give_each_matching_run_once_newest_first(store: Store, filters: dict[str, object]) -> None:
    runs = _history(store)
    expected = _newest_first(
        [r for r in runs if all(getattr(r, "deployment" if k == "deployment" else k) == v for k, v in filters.items())]
    )
    for limit in (1, 4, 50):
        seen, pages = _all_pages(store, limit, **filters)
        assert seen == expected, limit
        assert pages <= len(expected) // limit + 2


def test_a_run_page_starts_just_past_its_cursor_even_inside_a_tie(store: Store) -> None:
    _history(store)
    first = store.run_page(pool="p", limit=2)
    # Pool p's newest minute holds runs 36, 37 and 38 (39 is pool o's): a tie broken by id.
    assert [r.id for r in first.runs] == ["run-00036", "run-00037"]
    assert first.next == RunPosition.of(first.runs[-1])
    second = store.run_page(pool="p", after=first.next, limit=2)
    assert [r.id for r in second.runs] == ["run-00038", "run-00033"]
    token = second.next.token()  # type: ignore[union-attr]
    assert RunPosition.from_token(token) == second.next
    for bad in ("", "abc", "W10", RunPosition("yesterday", "x").token()):
        with pytest.raises(InvalidInput, match="cursor"):
            RunPosition.from_token(bad)


def test_count_scheduled_counts_the_due_index_up_to_a_cap(store: Store) -> None:
    make_pool(store, "p", q=None)
    dep = make_deployment(store, "d", pool="p")
    runs = [make_run(dep, i, T0 + timedelta(minutes=i)) for i in range(12)]
    done = make_run(dep, 99, T0).model_copy(update={"state": StateType.COMPLETED, "state_name": "Completed"})
    store.create_runs([*runs, done, make_run(dep, 50, T0, queue="q")])
    assert store.count_scheduled("p", "default") == Count(12)
    assert store.count_scheduled("p", "default", until=T0 + timedelta(minutes=4)) == Count(5)  # minutes 0..4
    assert store.count_scheduled("p", "default", cap=5) == Count(5, capped=True)
    assert str(store.count_scheduled("p", "default", cap=5)) == "5+"
    assert store.count_scheduled("p", "default", cap=12) == Count(12)
    assert store.count_scheduled("p", "q") == Count(1)
    assert store.count_scheduled("p", "ghost") == Count(0)
    # An admitted run leaves the count.
    store.admit([pending(runs[0])])
    assert store.count_scheduled("p", "default") == Count(11)


# parameters kept apart -----------------------------------------------------------------------------------------
def large_parameters(size: int = 200 * 1024, marker: str = "marker") -> dict[str, object]:
    """`size` bytes of compact JSON (a row more at most), with quotes, backslashes, newlines, multi-byte characters."""
    from pydantic_core import to_json

    text = 'é€ "quoted" \\ back\nslash ' + "x" * 60
    value: dict[str, object] = {"marker": marker, "n": 1.5, "ok": True, "rows": []}
    rows: list[dict[str, object]] = []
    total = len(to_json(value))
    while total < size:
        rows.append({"i": len(rows), "text": text})
        total += len(to_json(rows[-1])) + (1 if len(rows) > 1 else 0)
    return {**value, "rows": rows}


def test_large_parameters_are_kept_apart_and_read_back_whole(store: Store) -> None:
    from pydantic_core import to_json

    from dispatcher.flow_runs import retry_run
    from dispatcher.models import PARAMETERS_APART_BYTES
    from dispatcher.store.base import with_parameters

    make_pool(store)
    dep = make_deployment(store)
    big, small = large_parameters(), {"day": "2026-01-01"}
    assert len(to_json(big)) >= 200 * 1024
    large_run = make_run(dep, 1).model_copy(update={"parameters": big})
    small_run = make_run(dep, 2).model_copy(update={"parameters": small})
    assert store.create_runs([large_run, small_run]) == [large_run.id, small_run.id]
    # A second create of the same id leaves the first run and its parameters alone.
    assert store.create_runs([large_run.model_copy(update={"parameters": large_parameters(marker="other")})]) == []

    stored = store.get_run(large_run.id)
    assert stored is not None and stored.parameters is None and stored.parameters_size == len(to_json(big))
    assert store.run_parameters(stored) == to_json(big)  # the very bytes, in one read
    assert with_parameters(store, stored).parameters == big
    inline = store.get_run(small_run.id)
    assert inline is not None and inline.parameters == small and inline.parameters_size is None
    assert json.loads(store.run_parameters(inline)) == small
    assert len(to_json(small)) <= PARAMETERS_APART_BYTES

    # Listings, pages and the dispatch path read the run's record only.
    due = store.due_runs("pool", "default", T0, 10)
    assert {r.id: r.parameters for r in due} == {large_run.id: None, small_run.id: small}
    assert [r.parameters for r in store.list_runs("pool") if r.id == large_run.id] == [None]
    assert [r.parameters for r in store.run_page(pool="pool").runs if r.id == large_run.id] == [None]

    # Every state change keeps them, whole, through admission, release and a retry after the end.
    [admitted] = store.admit([pending(due[0] if due[0].id == large_run.id else due[1])])
    assert [r.parameters_size for r in store.active_runs("pool")] == [len(to_json(big))]
    ended, _ = admitted.moved(StateType.COMPLETED, source="test")
    assert store.save_run(admitted, ended)
    retried = retry_run(store, large_run.id)
    assert retried.parameters is None and store.run_parameters(retried) == to_json(big)
    cancelled, _ = retried.moved(StateType.CANCELLED, source="test")
    assert store.save_run(retried, cancelled)
    final = store.get_run(large_run.id)
    assert final is not None and store.run_parameters(final) == to_json(big)

    # They go with their run.
    assert store.delete_run(final) is True
    with pytest.raises(NotFound, match=f"parameters of flow run {large_run.id} are gone"):
        store.run_parameters(final)


def test_parameters_an_older_version_stored_inline_stay_inline_through_every_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dispatcher.store.base as base

    make_pool(store)
    dep = make_deployment(store)
    params = large_parameters(20 * 1024)
    monkeypatch.setattr(base, "PARAMETERS_APART_BYTES", 10**9)  # as before parameters were kept apart
    store.create_runs([make_run(dep, 1).model_copy(update={"parameters": params})])
    monkeypatch.undo()
    stored = store.get_run("run-00001")
    assert stored is not None and stored.parameters == params and stored.parameters_size is None
    [admitted] = store.admit([pending(stored)])
    assert store.save_run(admitted, admitted.moved(StateType.COMPLETED, source="test")[0])
    final = store.get_run("run-00001")
    assert final is not None and final.parameters == params and json.loads(store.run_parameters(final)) == params


def test_a_run_saved_as_it_was_created_keeps_its_large_parameters_apart(store: Store) -> None:
    from dispatcher.deployments import create_deployment, run_deployment
    from dispatcher.pools import create_pool

    create_pool(store, "p")
    create_deployment(store, "d", pool="p", job_variables={"command": "true"})
    params = large_parameters(8 * 1024)
    created = run_deployment(store, "d", parameters=params)
    assert created.parameters == params and created.parameters_size is not None
    # The object the creation returned (parameters whole), moved and saved: the record still holds none of them.
    assert store.save_run(created, created.moved(StateType.CANCELLED, source="test")[0])
    stored = store.get_run(created.id)
    assert stored is not None and stored.parameters is None and stored.parameters_size == created.parameters_size
    assert json.loads(store.run_parameters(stored)) == params
