"""Tests for dispatcher.admit_pass and dispatcher.preview on a real SQLite store (SPEC §3)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.admit_pass import DEPLOYMENT_MISSING, admit_pool
from dispatcher.config import Settings
from dispatcher.deployments import create_deployment, run_deployment
from dispatcher.models import FlowRun
from dispatcher.pools import create_pool, create_queue, update_pool, update_queue
from dispatcher.preview import preview_pool
from dispatcher.schedules import IntervalSchedule, scheduled_run_id
from dispatcher.states import StateType
from dispatcher.store.base import deployment_slot, pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
QUEUES = ("critical", "high", "low")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def example(store: SQLiteStore) -> dict[str, list[FlowRun]]:
    """The documented example: pool limit 5; critical (1, limit 1), high (5, limit 3), low (10); 4 due runs each."""
    create_pool(store, "p", concurrency_limit=5)
    create_queue(store, "p", "critical", priority=1, concurrency_limit=1)
    create_queue(store, "p", "high", priority=5, concurrency_limit=3)
    create_queue(store, "p", "low", priority=10)
    runs: dict[str, list[FlowRun]] = {}
    for q in QUEUES:
        create_deployment(store, f"dep-{q}", pool="p", queue=q)
        runs[q] = [run_deployment(store, f"dep-{q}", scheduled_time=NOW - timedelta(minutes=10 - i)) for i in range(4)]
    return runs


def complete(store: SQLiteStore, runs: list[FlowRun]) -> None:
    for run in runs:
        assert store.save_run(run, run.moved(StateType.COMPLETED, source="test")[0])


def by_queue(runs: list[FlowRun]) -> dict[str, int]:
    return {q: sum(r.queue == q for r in runs) for q in QUEUES}


def test_documented_example(store: SQLiteStore) -> None:
    runs = example(store)
    result = admit_pool(store, "p", NOW)
    assert by_queue(result.admitted) == {"critical": 1, "high": 3, "low": 1}
    ids = [r.id for r in result.admitted]
    assert ids == [runs["critical"][0].id, *(r.id for r in runs["high"][:3]), runs["low"][0].id]
    assert all(r.state is StateType.PENDING for r in result.admitted)
    for run in result.admitted:
        stored = store.get_run(run.id)
        assert stored is not None and stored.state is StateType.PENDING
        assert stored.state_history[-1].source == "dispatcher"
    # Only the runs this pass read are explained; the waiting low runs wait behind `high`.
    assert result.waiting == {r.id: "waiting behind higher-priority queue 'high'" for r in runs["low"][1:]}
    assert result.lost == []
    slots = store.slots([pool_slot("p"), *(queue_slot("p", q) for q in QUEUES)])
    assert slots[pool_slot("p")].active == 5
    assert [slots[queue_slot("p", q)].active for q in QUEUES] == [1, 3, 1]


def test_a_second_overlapping_pass_admits_nothing_more(store: SQLiteStore) -> None:
    example(store)
    assert len(admit_pool(store, "p", NOW).admitted) == 5
    again = admit_pool(store, "p", NOW)
    assert again.admitted == []
    assert store.slots([pool_slot("p")])[pool_slot("p")].active == 5
    assert len(store.active_runs("p")) == 5


def test_after_completion_the_next_pass_admits_by_priority(store: SQLiteStore) -> None:
    runs = example(store)
    first = admit_pool(store, "p", NOW)
    complete(store, first.admitted)
    assert store.slots([pool_slot("p")])[pool_slot("p")].active == 0
    second = admit_pool(store, "p", NOW + timedelta(seconds=5))
    assert [r.id for r in second.admitted] == [
        runs["critical"][1].id,
        runs["high"][3].id,
        *(r.id for r in runs["low"][1:]),
    ]
    complete(store, second.admitted)
    # A run newly arrived in a higher queue goes first, whatever waits in lower ones.
    urgent = run_deployment(store, "dep-high", scheduled_time=NOW + timedelta(seconds=1))
    third = admit_pool(store, "p", NOW + timedelta(seconds=10))
    assert [r.id for r in third.admitted] == [runs["critical"][2].id, urgent.id]


def test_queue_scoped_pass_still_honours_the_pool_limit(store: SQLiteStore) -> None:
    runs = example(store)
    high_only = admit_pool(store, "p", NOW, queue="high")
    assert [r.id for r in high_only.admitted] == [r.id for r in runs["high"][:3]]
    critical_only = admit_pool(store, "p", NOW, queue="critical")
    assert len(critical_only.admitted) == 1
    # 4 of the pool's 5 slots are taken: the low queue, unlimited itself, gets one.
    low_only = admit_pool(store, "p", NOW, queue="low")
    assert [r.id for r in low_only.admitted] == [runs["low"][0].id]
    assert store.slots([pool_slot("p")])[pool_slot("p")].active == 5
    full = admit_pool(store, "p", NOW, queue="low")
    assert full.admitted == []
    # With no free slot, one run is read to say why the queue waits.
    assert full.waiting == {runs["low"][1].id: "pool limit 5 reached"}


def test_paused_pool_admits_nothing(store: SQLiteStore) -> None:
    runs = example(store)
    update_pool(store, "p", paused=True)
    result = admit_pool(store, "p", NOW)
    assert result.admitted == []
    assert result.waiting
    assert set(result.waiting.values()) == {"pool 'p' is paused"}
    # The waiting runs are handed back so the dispatcher can name them Late.
    assert {r.id for r in result.due} >= {runs["critical"][0].id, runs["low"][0].id}
    assert store.active_runs("p") == []
    update_pool(store, "p", paused=False)
    assert len(admit_pool(store, "p", NOW).admitted) == 5


def test_paused_queue_stops_only_that_queue(store: SQLiteStore) -> None:
    runs = example(store)
    update_queue(store, "p", "critical", paused=True)
    result = admit_pool(store, "p", NOW)
    assert by_queue(result.admitted) == {"critical": 0, "high": 3, "low": 2}
    assert result.waiting[runs["critical"][0].id] == "queue 'critical' is paused"


def test_future_runs_are_not_admitted_before_their_time(store: SQLiteStore) -> None:
    create_pool(store, "p")
    create_deployment(store, "d", pool="p")
    future = run_deployment(store, "d", scheduled_time=NOW + timedelta(minutes=1))
    assert admit_pool(store, "p", NOW).admitted == []
    assert admit_pool(store, "p", NOW + timedelta(seconds=59)).admitted == []
    assert [r.id for r in admit_pool(store, "p", NOW + timedelta(minutes=1)).admitted] == [future.id]


def test_a_late_run_is_admitted_in_order(store: SQLiteStore) -> None:
    create_pool(store, "p", concurrency_limit=1)
    create_deployment(store, "d", pool="p")
    old = run_deployment(store, "d", scheduled_time=NOW - timedelta(hours=1))
    late, applied = old.moved(StateType.SCHEDULED, name="Late", source="dispatcher")
    assert applied and store.save_run(old, late)
    newer = run_deployment(store, "d", scheduled_time=NOW - timedelta(minutes=1))
    result = admit_pool(store, "p", NOW)
    assert [r.id for r in result.admitted] == [old.id]
    assert admit_pool(store, "p", NOW).waiting == {newer.id: "pool limit 1 reached"}


def test_pool_limit_zero_delivers_nothing(store: SQLiteStore) -> None:
    create_pool(store, "p", concurrency_limit=0)
    create_deployment(store, "d", pool="p")
    run = run_deployment(store, "d", scheduled_time=NOW)
    result = admit_pool(store, "p", NOW)
    assert result.admitted == [] and result.waiting == {run.id: "pool limit 0 reached"}


def test_deployment_limit_does_not_hide_other_deployments_of_the_queue(store: SQLiteStore) -> None:
    create_pool(store, "p", concurrency_limit=3)
    create_deployment(store, "busy", pool="p", concurrency_limit=1)
    create_deployment(store, "other", pool="p")
    busy = [run_deployment(store, "busy", scheduled_time=NOW - timedelta(minutes=30 - i)) for i in range(10)]
    other = run_deployment(store, "other", scheduled_time=NOW - timedelta(minutes=1))
    result = admit_pool(store, "p", NOW)
    # The pool has 3 slots; `busy` may use one: the run of `other` behind its backlog gets another.
    assert [r.id for r in result.admitted] == [busy[0].id, other.id]
    assert result.waiting[busy[1].id] == "deployment limit 1 reached for 'busy'"
    assert store.slots([pool_slot("p")])[pool_slot("p")].active == 2


def test_runs_of_a_deleted_deployment_wait_and_do_not_block_the_queue(store: SQLiteStore) -> None:
    create_pool(store, "p", concurrency_limit=1)
    deployment = create_deployment(store, "d", pool="p")
    orphan = FlowRun(
        id="orphan",
        name="gone-1",
        deployment="gone",
        deployment_id="no-such-id",
        pool="p",
        queue="default",
        scheduled_time=NOW - timedelta(hours=1),
    )
    assert store.create_runs([orphan]) == ["orphan"]
    run = run_deployment(store, "d", scheduled_time=NOW - timedelta(minutes=1))
    result = admit_pool(store, "p", NOW)
    assert [r.id for r in result.admitted] == [run.id]
    assert result.waiting == {"orphan": DEPLOYMENT_MISSING.format(deployment="gone")}
    assert result.lost == []
    assert store.slots([deployment_slot(deployment.id)])[deployment_slot(deployment.id)].active == 1


def test_unknown_pool_gives_an_empty_result(store: SQLiteStore) -> None:
    result = admit_pool(store, "ghost", NOW)
    assert (result.admitted, result.waiting, result.due) == ([], {}, [])


def test_max_admissions_per_pass_bounds_one_pass(store: SQLiteStore) -> None:
    create_pool(store, "p")
    create_deployment(store, "d", pool="p")
    for i in range(5):
        run_deployment(store, "d", scheduled_time=NOW - timedelta(minutes=i))
    assert len(admit_pool(store, "p", NOW, settings=Settings(max_admissions_per_pass=2)).admitted) == 2
    assert len(admit_pool(store, "p", NOW, settings=Settings(max_admissions_per_pass=2)).admitted) == 2
    assert len(admit_pool(store, "p", NOW).admitted) == 1


# --- preview ------------------------------------------------------------------------------------------


def test_preview_explains_every_due_run(store: SQLiteStore) -> None:
    runs = example(store)
    preview = preview_pool(store, "p", hours=1, now=NOW)
    assert [q.queue.name for q in preview.queues] == ["critical", "default", "high", "low"]
    reasons = {r.id: r.reason for q in preview.queues for r in q.runs}
    assert reasons[runs["critical"][0].id] is None
    assert [reasons[r.id] for r in runs["critical"][1:]] == ["queue limit 1 reached"] * 3
    assert [reasons[r.id] for r in runs["high"]] == [None, None, None, "queue limit 3 reached"]
    assert reasons[runs["low"][0].id] is None
    assert [reasons[r.id] for r in runs["low"][1:]] == ["waiting behind higher-priority queue 'high'"] * 3
    assert all(r.due and r.state_name == "Late" for q in preview.queues for r in q.runs)
    # Preview writes nothing.
    assert store.active_runs("p") == []
    assert all(r.state is StateType.SCHEDULED for r in store.list_runs("p"))


def test_preview_of_one_queue_counts_the_queues_above_it(store: SQLiteStore) -> None:
    runs = example(store)
    preview = preview_pool(store, "p", queue="low", now=NOW)
    assert [q.queue.name for q in preview.queues] == ["low"]
    reasons = [r.reason for r in preview.queues[0].runs]
    assert reasons == [None] + ["waiting behind higher-priority queue 'high'"] * 3
    assert [r.id for r in preview.queues[0].runs] == [r.id for r in runs["low"]]


def test_preview_explains_paused_pool_and_queue(store: SQLiteStore) -> None:
    runs = example(store)
    update_queue(store, "p", "high", paused=True)
    preview = preview_pool(store, "p", now=NOW)
    reasons = {r.id: r.reason for q in preview.queues for r in q.runs}
    assert {reasons[r.id] for r in runs["high"]} == {"queue 'high' is paused"}
    update_pool(store, "p", paused=True)
    preview = preview_pool(store, "p", now=NOW)
    reasons = {r.id: r.reason for q in preview.queues for r in q.runs}
    assert set(reasons.values()) == {"pool 'p' is paused"}
    assert preview.pool.status == "PAUSED"


def test_preview_shows_planned_runs_of_schedules(store: SQLiteStore) -> None:
    create_pool(store, "p")
    deployment = create_deployment(store, "etl", pool="p", schedules=[IntervalSchedule(interval=1200, anchor_date=NOW)])
    adhoc = run_deployment(store, "etl", scheduled_time=NOW + timedelta(minutes=5))
    preview = preview_pool(store, "p", hours=1, now=NOW)
    [default] = preview.queues
    assert [(r.state_name, r.scheduled_time, r.due, r.reason) for r in default.runs] == [
        ("Scheduled", NOW + timedelta(minutes=5), False, None),
        ("Planned", NOW + timedelta(minutes=20), False, None),
        ("Planned", NOW + timedelta(minutes=40), False, None),
        ("Planned", NOW + timedelta(minutes=60), False, None),
    ]
    assert default.runs[0].id == adhoc.id
    assert default.runs[1].id == scheduled_run_id(deployment.id, NOW + timedelta(minutes=20))
    # Once created by the scheduler, they are shown once, as stored runs.
    from dispatcher.scheduler import schedule_all

    assert len(schedule_all(store, NOW, Settings(schedule_horizon_seconds=3600)).created) == 3
    again = preview_pool(store, "p", hours=1, now=NOW).queues[0].runs
    assert [r.state_name for r in again] == ["Scheduled"] * 4
    assert len({r.id for r in again}) == 4


def test_preview_never_plans_a_scheduled_run_that_was_created_and_cancelled(store: SQLiteStore) -> None:
    from dispatcher.cancelling import cancel_run
    from dispatcher.scheduler import schedule_all

    create_pool(store, "p")
    create_deployment(store, "etl", pool="p", schedules=[IntervalSchedule(interval=1200, anchor_date=NOW)])
    first, *rest = schedule_all(store, NOW, Settings(schedule_horizon_seconds=2400)).created
    cancel_run(store, first.id)
    assert store.get_run(first.id).state is StateType.CANCELLED  # type: ignore[union-attr]

    runs = preview_pool(store, "p", hours=1, now=NOW).queues[0].runs

    # The 20-minute run is gone for good (the scheduler will not create it again); the 60-minute one is planned.
    assert [(r.state_name, r.scheduled_time) for r in runs] == [
        ("Scheduled", NOW + timedelta(minutes=40)),
        ("Planned", NOW + timedelta(minutes=60)),
    ]
    assert first.id not in {r.id for r in runs} and [r.id for r in rest] == [runs[0].id]


def test_preview_counts_active_runs(store: SQLiteStore) -> None:
    example(store)
    admit_pool(store, "p", NOW)
    preview = preview_pool(store, "p", now=NOW)
    assert preview.active == 5
    assert {q.queue.name: q.active for q in preview.queues} == {"critical": 1, "default": 0, "high": 3, "low": 1}


# -- lookahead: when the next run falls due (issue 16) ----------------------------------------------------------


def test_a_horizon_names_the_next_due_run_and_admits_only_what_is_due(store: SQLiteStore) -> None:
    create_pool(store, "p", concurrency_limit=3)
    create_deployment(store, "d", pool="p")
    due = run_deployment(store, "d", scheduled_time=NOW - timedelta(seconds=5))
    soon = run_deployment(store, "d", scheduled_time=NOW + timedelta(seconds=20))
    run_deployment(store, "d", scheduled_time=NOW + timedelta(seconds=50))
    later = run_deployment(store, "d", scheduled_time=NOW + timedelta(minutes=5))

    result = admit_pool(store, "p", NOW, horizon=timedelta(seconds=60))

    assert [r.id for r in result.admitted] == [due.id] and [r.id for r in result.due] == [due.id]
    assert result.next_due == soon.scheduled_time
    assert store.get_run(soon.id).state is StateType.SCHEDULED  # type: ignore[union-attr]
    # Without a horizon nothing is said; beyond it neither.
    assert admit_pool(store, "p", NOW).next_due is None
    before_later = later.scheduled_time - timedelta(seconds=200)
    assert admit_pool(store, "p", before_later, horizon=timedelta(seconds=10)).next_due is None


def test_no_next_due_where_the_run_would_find_no_room(store: SQLiteStore) -> None:
    create_pool(store, "p", concurrency_limit=1)
    create_queue(store, "p", "held", priority=2, concurrency_limit=0)
    create_deployment(store, "d", pool="p")
    create_deployment(store, "h", pool="p", queue="held")
    run_deployment(store, "h", scheduled_time=NOW + timedelta(seconds=10))
    run_deployment(store, "d", scheduled_time=NOW - timedelta(seconds=1))
    run_deployment(store, "d", scheduled_time=NOW + timedelta(seconds=20))
    horizon = timedelta(seconds=60)

    # The due run takes the pool's only slot: the next one waits for a freed slot's wake-up, not its time.
    first = admit_pool(store, "p", NOW, horizon=horizon)
    assert len(first.admitted) == 1 and first.next_due is None
    update_pool(store, "p", concurrency_limit=2)
    assert admit_pool(store, "p", NOW, horizon=horizon).next_due == NOW + timedelta(seconds=20)
    update_pool(store, "p", paused=True)
    assert admit_pool(store, "p", NOW, horizon=horizon).next_due is None
