"""Tests for dispatcher.admission: the SPEC §3 waterfall, its limits and its waiting reasons."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.admission import (
    Decision,
    DeploymentView,
    DueRun,
    PoolView,
    QueueView,
    decide,
    free_slots,
)

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def run(run_id: str, queue: str, minutes: int = 0, deployment: str = "d") -> DueRun:
    return DueRun(id=run_id, queue=queue, deployment=deployment, scheduled_time=T0 + timedelta(minutes=minutes))


def pool(limit: int | None = None, active: int = 0, paused: bool = False) -> PoolView:
    return PoolView(name="p", paused=paused, limit=limit, active=active)


def ids(decision: Decision) -> list[str]:
    return [r.id for r in decision.admit]


def example_queues() -> list[QueueView]:
    # Given out of priority order on purpose: decide must sort.
    return [
        QueueView(name="low", priority=10, paused=False, limit=None, active=0),
        QueueView(name="high", priority=5, paused=False, limit=3, active=0),
        QueueView(name="critical", priority=1, paused=False, limit=1, active=0),
    ]


def example_runs() -> list[DueRun]:
    return [run(f"{q}-{i}", q, minutes=i) for q in ("low", "high", "critical") for i in range(4)]


# --- free_slots ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "active", "expected"),
    [(None, 0, None), (None, 99, None), (3, 0, 3), (3, 2, 1), (3, 3, 0), (3, 5, 0), (0, 0, 0)],
)
def test_free_slots(limit: int | None, active: int, expected: int | None) -> None:
    assert free_slots(limit, active) == expected


# --- the documented example ---------------------------------------------------------------------


def test_example_without_pool_limit() -> None:
    d = decide(pool(), example_queues(), example_runs())
    assert ids(d) == ["critical-0", "high-0", "high-1", "high-2", "low-0", "low-1", "low-2", "low-3"]
    assert d.waiting == {
        "critical-1": "queue limit 1 reached",
        "critical-2": "queue limit 1 reached",
        "critical-3": "queue limit 1 reached",
        "high-3": "queue limit 3 reached",
    }


def test_example_with_pool_limit_5() -> None:
    d = decide(pool(limit=5), example_queues(), example_runs())
    assert ids(d) == ["critical-0", "high-0", "high-1", "high-2", "low-0"]
    assert d.waiting == {
        "critical-1": "queue limit 1 reached",
        "critical-2": "queue limit 1 reached",
        "critical-3": "queue limit 1 reached",
        "high-3": "queue limit 3 reached",
        "low-1": "waiting behind higher-priority queue 'high'",
        "low-2": "waiting behind higher-priority queue 'high'",
        "low-3": "waiting behind higher-priority queue 'high'",
    }


# --- pool ---------------------------------------------------------------------------------------


def test_pool_limit_reached_from_the_start() -> None:
    d = decide(pool(limit=2, active=2), example_queues(), example_runs())
    assert d.admit == ()
    # Queue limits outrank the pool limit; everything else names the pool limit, not a queue.
    assert d.waiting["critical-0"] == "pool limit 2 reached"
    assert d.waiting["critical-1"] == "queue limit 1 reached"
    assert d.waiting["high-0"] == "pool limit 2 reached"
    assert d.waiting["high-2"] == "pool limit 2 reached"
    assert d.waiting["high-3"] == "queue limit 3 reached"
    assert {d.waiting[f"low-{i}"] for i in range(4)} == {"pool limit 2 reached"}


def test_pool_over_its_limit_admits_nothing() -> None:
    d = decide(pool(limit=2, active=5), example_queues(), example_runs())
    assert d.admit == ()
    assert d.waiting["low-0"] == "pool limit 2 reached"


def test_pool_limit_zero_delivers_nothing() -> None:
    d = decide(pool(limit=0), example_queues(), example_runs())
    assert d.admit == ()
    assert d.waiting["critical-0"] == "pool limit 0 reached"
    assert d.waiting["low-3"] == "pool limit 0 reached"
    assert len(d.waiting) == 12


def test_pool_filled_by_own_queue_names_the_pool_limit() -> None:
    queues = [QueueView(name="only", priority=1, paused=False, limit=None, active=0)]
    d = decide(pool(limit=2), queues, [run(f"r{i}", "only", i) for i in range(4)])
    assert ids(d) == ["r0", "r1"]
    assert d.waiting == {"r2": "pool limit 2 reached", "r3": "pool limit 2 reached"}


def test_pool_shared_by_higher_and_own_queue_names_the_pool_limit() -> None:
    queues = [
        QueueView(name="a", priority=1, paused=False, limit=None, active=0),
        QueueView(name="b", priority=2, paused=False, limit=None, active=0),
        QueueView(name="c", priority=3, paused=False, limit=None, active=0),
    ]
    runs = [run("a0", "a"), run("b0", "b"), run("b1", "b", 1), run("c0", "c")]
    d = decide(pool(limit=2), queues, runs)
    assert ids(d) == ["a0", "b0"]
    # b0 took one of the two slots, but a0 took the other: b1 waits behind a, c0 behind b (the last taker).
    assert d.waiting == {
        "b1": "waiting behind higher-priority queue 'a'",
        "c0": "waiting behind higher-priority queue 'b'",
    }


def test_pool_paused_admits_nothing() -> None:
    d = decide(pool(paused=True), example_queues(), example_runs())
    assert d.admit == ()
    assert d.waiting == {r.id: "pool 'p' is paused" for r in example_runs()}


def test_pool_paused_outranks_everything() -> None:
    queues = [QueueView(name="q", priority=1, paused=True, limit=0, active=0)]
    d = decide(pool(paused=True, limit=0), queues, [run("r", "q"), run("x", "ghost")])
    assert d.waiting == {"r": "pool 'p' is paused", "x": "pool 'p' is paused"}


# --- queues -------------------------------------------------------------------------------------


def test_paused_queue_waits_and_lower_queues_are_served() -> None:
    queues = [
        QueueView(name="critical", priority=1, paused=True, limit=None, active=0),
        QueueView(name="low", priority=2, paused=False, limit=None, active=0),
    ]
    runs = [run("c0", "critical"), run("c1", "critical", 1), run("l0", "low"), run("l1", "low", 1)]
    d = decide(pool(limit=2), queues, runs)
    assert ids(d) == ["l0", "l1"]
    assert d.waiting == {"c0": "queue 'critical' is paused", "c1": "queue 'critical' is paused"}


def test_queue_paused_outranks_queue_limit() -> None:
    queues = [QueueView(name="q", priority=1, paused=True, limit=0, active=0)]
    d = decide(pool(), queues, [run("r", "q")])
    assert d.waiting == {"r": "queue 'q' is paused"}


def test_queue_limit_does_not_block_lower_queues() -> None:
    queues = [
        QueueView(name="top", priority=1, paused=False, limit=1, active=1),
        QueueView(name="bottom", priority=2, paused=False, limit=None, active=0),
    ]
    d = decide(pool(limit=3, active=1), queues, [run("t0", "top"), run("b0", "bottom"), run("b1", "bottom")])
    assert ids(d) == ["b0", "b1"]
    assert d.waiting == {"t0": "queue limit 1 reached"}


def test_queue_limit_outranks_pool_limit() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=1, active=1)]
    d = decide(pool(limit=1, active=1), queues, [run("r", "q")])
    assert d.waiting == {"r": "queue limit 1 reached"}


def test_existing_active_counts_reduce_free_slots() -> None:
    queues = [
        QueueView(name="a", priority=1, paused=False, limit=3, active=2),
        QueueView(name="b", priority=2, paused=False, limit=None, active=0),
    ]
    runs = [run(f"a{i}", "a", i) for i in range(3)] + [run(f"b{i}", "b", i) for i in range(3)]
    d = decide(pool(limit=5, active=2), queues, runs)
    # Queue a: 1 free of 3; pool: 3 free of 5, so b gets the remaining 2.
    assert ids(d) == ["a0", "b0", "b1"]
    assert d.waiting["a1"] == "queue limit 3 reached"
    assert d.waiting["b2"] == "waiting behind higher-priority queue 'a'"


def test_missing_queue_is_reported_and_does_not_take_slots() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=None, active=0)]
    d = decide(pool(limit=1), queues, [run("ghost-run", "ghost"), run("r", "q", 1)])
    assert ids(d) == ["r"]
    assert d.waiting == {"ghost-run": "queue 'ghost' does not exist"}


def test_duplicate_run_ids_are_rejected() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=None, active=0)]
    with pytest.raises(ValueError, match="duplicate due run id"):
        decide(pool(), queues, [run("r", "q"), run("r", "q", 1)])


def test_duplicate_queue_names_are_rejected() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=None, active=0)] * 2
    with pytest.raises(ValueError, match="duplicate queue name"):
        decide(pool(), queues, [])


# --- deployments --------------------------------------------------------------------------------


def test_deployment_limit_skips_run_without_blocking_its_queue() -> None:
    queues = [
        QueueView(name="q", priority=1, paused=False, limit=2, active=0),
        QueueView(name="lower", priority=2, paused=False, limit=None, active=0),
    ]
    runs = [
        run("a0", "q", 0, deployment="A"),
        run("a1", "q", 1, deployment="A"),
        run("b0", "q", 2, deployment="B"),
        run("l0", "lower", 0, deployment="A"),
    ]
    deployments = {"A": DeploymentView(name="A", limit=1, active=0)}
    d = decide(pool(), queues, runs, deployments)
    assert ids(d) == ["a0", "b0"]
    # The deployment's one slot went to a0, in this pass, so lower's run of A is also held back.
    assert d.waiting == {
        "a1": "deployment limit 1 reached for 'A'",
        "l0": "deployment limit 1 reached for 'A'",
    }


def test_deployment_limit_counts_existing_active_runs() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=None, active=0)]
    deployments = {"A": DeploymentView(name="A", limit=2, active=2)}
    d = decide(pool(), queues, [run("a0", "q", deployment="A"), run("z0", "q", 1, deployment="Z")], deployments)
    assert ids(d) == ["z0"]
    assert d.waiting == {"a0": "deployment limit 2 reached for 'A'"}


def test_deployment_limit_is_the_last_reason() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=None, active=0)]
    deployments = {"A": DeploymentView(name="A", limit=0, active=0)}
    d = decide(pool(limit=0), queues, [run("a0", "q", deployment="A")], deployments)
    assert d.waiting == {"a0": "pool limit 0 reached"}


def test_deployment_unlimited_or_unknown_has_no_limit() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=None, active=0)]
    deployments = {"A": DeploymentView(name="A", limit=None, active=50)}
    runs = [run("a0", "q", deployment="A"), run("u0", "q", 1, deployment="unknown")]
    assert ids(decide(pool(), queues, runs, deployments)) == ["a0", "u0"]


# --- ordering -----------------------------------------------------------------------------------


def test_fifo_inside_a_queue_and_ties_by_id() -> None:
    queues = [QueueView(name="q", priority=1, paused=False, limit=3, active=0)]
    runs = [run("late", "q", 10), run("b", "q", 5), run("a", "q", 5), run("early", "q", 0)]
    d = decide(pool(), queues, runs)
    assert ids(d) == ["early", "a", "b"]
    assert d.waiting == {"late": "queue limit 3 reached"}


def test_input_order_does_not_matter() -> None:
    runs = example_runs()
    expected = decide(pool(limit=5), example_queues(), runs)
    rng = random.Random(7)
    for _ in range(10):
        shuffled_runs, shuffled_queues = runs[:], example_queues()
        rng.shuffle(shuffled_runs)
        rng.shuffle(shuffled_queues)
        assert decide(pool(limit=5), shuffled_queues, shuffled_runs) == expected


def test_new_arrivals_in_a_higher_queue_go_first_next_pass() -> None:
    queues = [
        QueueView(name="high", priority=1, paused=False, limit=None, active=0),
        QueueView(name="low", priority=2, paused=False, limit=None, active=0),
    ]
    first = decide(pool(limit=1), queues, [run("l0", "low", 0), run("l1", "low", 1)])
    assert ids(first) == ["l0"]
    # Next pass: l0 finished, a high run arrived later than l1 was scheduled; it still goes first.
    second = decide(pool(limit=1), queues, [run("l1", "low", 1), run("h0", "high", 30)])
    assert ids(second) == ["h0"]
    assert second.waiting == {"l1": "waiting behind higher-priority queue 'high'"}


def test_empty_due_list() -> None:
    assert decide(pool(), example_queues(), []) == Decision(admit=(), waiting={})


# --- properties ---------------------------------------------------------------------------------

LIMITS = st.one_of(st.none(), st.integers(min_value=0, max_value=6))
ACTIVE = st.integers(min_value=0, max_value=8)
QUEUE_NAMES = ["q0", "q1", "q2", "q3"]
DEPLOYMENT_NAMES = ["A", "B", "C"]
# Paused pools and queues admit nothing, so keep them rare enough that most examples exercise the limits.
RARELY = st.sampled_from([False, False, False, True])


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[PoolView, list[QueueView], list[DueRun], dict[str, DeploymentView] | None]:
    pool_view = PoolView(name="p", paused=draw(RARELY), limit=draw(LIMITS), active=draw(ACTIVE))
    names = draw(st.lists(st.sampled_from(QUEUE_NAMES), min_size=1, max_size=4, unique=True))
    priorities = draw(st.permutations(range(1, len(names) + 1)))
    queues = [
        QueueView(
            name=name,
            priority=prio,
            paused=draw(RARELY),
            limit=draw(LIMITS),
            active=draw(ACTIVE),
        )
        for name, prio in zip(names, priorities, strict=True)
    ]
    n_runs = draw(st.integers(min_value=0, max_value=20))
    runs = [
        DueRun(
            id=f"r{i:02d}",
            queue=draw(st.sampled_from(names)),
            deployment=draw(st.sampled_from(DEPLOYMENT_NAMES)),
            # Few distinct times so that ties by id are common.
            scheduled_time=T0 + timedelta(minutes=draw(st.integers(min_value=0, max_value=4))),
        )
        for i in range(n_runs)
    ]
    runs = draw(st.permutations(runs))
    deployments: dict[str, DeploymentView] | None = None
    if draw(st.booleans()):
        deployments = {
            name: DeploymentView(name=name, limit=draw(LIMITS), active=draw(ACTIVE))
            for name in draw(st.lists(st.sampled_from(DEPLOYMENT_NAMES), unique=True))
        }
    return pool_view, queues, list(runs), deployments


Scenario = tuple[PoolView, list[QueueView], list[DueRun], dict[str, DeploymentView] | None]


def _within_limit(limit: int | None, active: int, admitted: int) -> bool:
    """After admitting, active stays within the limit; if it was already at or over, nothing was added."""
    if limit is None:
        return True
    if active >= limit:
        return admitted == 0
    return active + admitted <= limit


@settings(max_examples=400)
@given(scenarios())
def test_property_no_limit_is_exceeded(scenario: Scenario) -> None:
    pool_view, queues, runs, deployments = scenario
    d = decide(pool_view, queues, runs, deployments)
    assert _within_limit(pool_view.limit, pool_view.active, len(d.admit))
    by_queue = Counter(r.queue for r in d.admit)
    for q in queues:
        assert _within_limit(q.limit, q.active, by_queue[q.name])
        if q.paused:
            assert by_queue[q.name] == 0
    by_deployment = Counter(r.deployment for r in d.admit)
    for name, view in (deployments or {}).items():
        assert _within_limit(view.limit, view.active, by_deployment[name])
    if pool_view.paused:
        assert d.admit == ()


@settings(max_examples=400)
@given(scenarios())
def test_property_pool_starved_queue_blocks_lower_queues(scenario: Scenario) -> None:
    pool_view, queues, runs, deployments = scenario
    d = decide(pool_view, queues, runs, deployments)
    priority = {q.name: q.priority for q in queues}
    by_id = {r.id: r for r in runs}
    admitted_priorities = [priority[r.queue] for r in d.admit]
    for run_id, reason in d.waiting.items():
        if reason.startswith(("waiting behind higher-priority queue", "pool limit")):
            p = priority[by_id[run_id].queue]
            assert all(ap <= p for ap in admitted_priorities), (run_id, reason)
            if reason.startswith("waiting behind"):
                # The named queue is higher than the waiting run's and did take a slot in this pass.
                named = reason.split("'")[1]
                assert priority[named] < p
                assert any(r.queue == named for r in d.admit)


@settings(max_examples=400)
@given(scenarios())
def test_property_fifo_within_a_queue(scenario: Scenario) -> None:
    pool_view, queues, runs, deployments = scenario
    d = decide(pool_view, queues, runs, deployments)
    limited = {n for n, v in (deployments or {}).items() if v.limit is not None}
    admitted_ids = {r.id for r in d.admit}
    for q in queues:
        ordered = sorted((r for r in runs if r.queue == q.name), key=lambda r: (r.scheduled_time, r.id))
        admitted_in_q = [r for r in d.admit if r.queue == q.name]
        # Admission order inside a queue is its FIFO order.
        assert admitted_in_q == [r for r in ordered if r.id in admitted_ids]
        if not any(r.deployment in limited for r in ordered):
            assert admitted_in_q == ordered[: len(admitted_in_q)]
        # With deployment limits, FIFO still holds per (queue, deployment).
        for dep in DEPLOYMENT_NAMES:
            of_dep = [r for r in ordered if r.deployment == dep]
            admitted_of_dep = [r for r in of_dep if r.id in admitted_ids]
            assert admitted_of_dep == of_dep[: len(admitted_of_dep)]


@settings(max_examples=400)
@given(scenarios())
def test_property_every_due_run_accounted_once(scenario: Scenario) -> None:
    pool_view, queues, runs, deployments = scenario
    d = decide(pool_view, queues, runs, deployments)
    admitted_ids = [r.id for r in d.admit]
    assert len(admitted_ids) == len(set(admitted_ids))
    assert not set(admitted_ids) & set(d.waiting)
    assert sorted(admitted_ids + list(d.waiting)) == sorted(r.id for r in runs)


@settings(max_examples=400)
@given(scenarios())
def test_property_admission_order_is_by_priority(scenario: Scenario) -> None:
    pool_view, queues, runs, deployments = scenario
    d = decide(pool_view, queues, runs, deployments)
    priority = {q.name: q.priority for q in queues}
    admitted_priorities = [priority[r.queue] for r in d.admit]
    assert admitted_priorities == sorted(admitted_priorities)


@settings(max_examples=200)
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_input_order_is_irrelevant(scenario: Scenario, rng: random.Random) -> None:
    pool_view, queues, runs, deployments = scenario
    shuffled_runs, shuffled_queues = runs[:], queues[:]
    rng.shuffle(shuffled_runs)
    rng.shuffle(shuffled_queues)
    assert decide(pool_view, shuffled_queues, shuffled_runs, deployments) == decide(
        pool_view, queues, runs, deployments
    )


@settings(max_examples=400)
@given(scenarios())
def test_property_work_conserving(scenario: Scenario) -> None:
    """A waiting run always has a real cause: nothing is left behind while every limit has room."""
    pool_view, queues, runs, deployments = scenario
    d = decide(pool_view, queues, runs, deployments)
    by_name = {q.name: q for q in queues}
    by_id = {r.id: r for r in runs}
    pool_used = pool_view.active + len(d.admit)
    for run_id, reason in d.waiting.items():
        r = by_id[run_id]
        q = by_name[r.queue]
        if reason.startswith(("pool limit", "waiting behind")):
            assert pool_view.limit is not None and pool_used >= pool_view.limit
        elif reason.startswith("queue limit"):
            # Earlier runs of the queue hold its slots: admitted ones, and those held only by the full pool.
            assert q.limit is not None
            holders = [
                e
                for e in runs
                if e.queue == q.name
                and (e.scheduled_time, e.id) < (r.scheduled_time, r.id)
                and (e in d.admit or d.waiting[e.id].startswith(("pool limit", "waiting behind")))
            ]
            assert q.active + len(holders) >= q.limit
        elif reason.startswith("deployment limit"):
            view = (deployments or {})[r.deployment]
            assert view.limit is not None
            assert view.active + sum(1 for a in d.admit if a.deployment == r.deployment) >= view.limit
        elif reason.endswith("is paused"):
            assert pool_view.paused or q.paused
        else:
            pytest.fail(f"unexpected reason {reason!r}")


def test_run_held_by_pool_and_deployment_does_not_claim_a_queue_slot() -> None:
    # Pool full: d0 waits for the pool (outranks its deployment), but it would not run once the pool frees
    # either, so it holds no queue slot and e0 is told about the pool, not the queue limit.
    queues = [QueueView(name="q", priority=1, paused=False, limit=1, active=0)]
    deployments = {"D": DeploymentView(name="D", limit=1, active=1)}
    runs = [run("d0", "q", 0, deployment="D"), run("e0", "q", 1, deployment="E"), run("e1", "q", 2, "E")]
    d = decide(pool(limit=1, active=1), queues, runs, deployments)
    assert d.admit == ()
    assert d.waiting == {
        "d0": "pool limit 1 reached",
        "e0": "pool limit 1 reached",
        "e1": "queue limit 1 reached",
    }
