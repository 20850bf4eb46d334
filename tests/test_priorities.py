"""Tests for dispatcher.priorities.place: Prefect's insert-and-shift rule for queue priorities (SPEC §1)."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from dispatcher.priorities import place


def apply(current: dict[str, int], name: str, priority: int | None) -> dict[str, int]:
    return {**current, **place(current, name, priority)}


def test_insert_at_a_taken_priority_shifts_only_colliding_queues() -> None:
    current = {"a": 1, "b": 2, "c": 3}
    assert place(current, "new", 2) == {"new": 2, "b": 3, "c": 4}
    assert apply(current, "new", 2) == {"a": 1, "new": 2, "b": 3, "c": 4}


def test_gaps_are_kept() -> None:
    current = {"a": 1, "b": 5, "c": 10}
    assert place(current, "new", 5) == {"new": 5, "b": 6}
    assert apply(current, "new", 5) == {"a": 1, "new": 5, "b": 6, "c": 10}


def test_insert_at_a_free_priority_moves_nothing() -> None:
    assert place({"a": 1, "b": 5}, "new", 3) == {"new": 3}


def test_insert_at_one_pushes_the_contiguous_run_down() -> None:
    assert apply({"a": 1, "b": 2, "c": 4}, "new", 1) == {"new": 1, "a": 2, "b": 3, "c": 4}
    assert apply({"a": 1, "b": 2, "c": 3}, "new", 1) == {"new": 1, "a": 2, "b": 3, "c": 4}


def test_new_queue_without_priority_goes_last() -> None:
    assert place({"a": 1, "b": 7}, "new", None) == {"new": 8}
    assert place({}, "first", None) == {"first": 1}


def test_existing_queue_without_priority_keeps_its_own() -> None:
    assert place({"a": 1, "b": 7}, "b", None) == {"b": 7}


def test_update_moves_a_queue_up() -> None:
    current = {"a": 1, "b": 2, "c": 3}
    # c leaves 3, takes 1; a and b shift down by one, into the room c left.
    assert apply(current, "c", 1) == {"c": 1, "a": 2, "b": 3}


def test_update_moves_a_queue_down() -> None:
    current = {"a": 1, "b": 2, "c": 3}
    assert apply(current, "a", 3) == {"b": 2, "a": 3, "c": 4}
    assert apply(current, "a", 9) == {"b": 2, "c": 3, "a": 9}


def test_update_to_its_own_priority_changes_nothing() -> None:
    assert place({"a": 1, "b": 2}, "b", 2) == {"b": 2}


def test_input_is_not_mutated() -> None:
    current = {"a": 1, "b": 2}
    place(current, "new", 1)
    assert current == {"a": 1, "b": 2}


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> tuple[dict[str, int], str, int | None]:
    priorities = draw(st.lists(st.integers(1, 30), unique=True, max_size=12))
    current = {f"q{i}": p for i, p in enumerate(priorities)}
    existing = draw(st.booleans()) and bool(current)
    name = draw(st.sampled_from(sorted(current))) if existing else "new"
    priority = draw(st.none() | st.integers(1, 35))
    return current, name, priority


@given(layouts())
def test_priorities_stay_unique_and_positive(case: tuple[dict[str, int], str, int | None]) -> None:
    current, name, priority = case
    after = apply(current, name, priority)
    assert len(set(after.values())) == len(after)
    assert all(p >= 1 for p in after.values())
    assert set(after) == set(current) | {name}


@given(layouts())
def test_the_queue_gets_the_asked_priority(case: tuple[dict[str, int], str, int | None]) -> None:
    current, name, priority = case
    after = apply(current, name, priority)
    if priority is not None:
        assert after[name] == priority
    elif name in current:
        assert after[name] == current[name]
    else:
        assert after[name] == max(current.values(), default=0) + 1
        assert all(after[name] > p for q, p in after.items() if q != name)


@given(layouts())
def test_relative_order_of_the_others_is_kept(case: tuple[dict[str, int], str, int | None]) -> None:
    current, name, priority = case
    after = apply(current, name, priority)
    others = [q for q in current if q != name]
    assert sorted(others, key=current.__getitem__) == sorted(others, key=after.__getitem__)


@given(layouts())
def test_queues_above_the_inserted_one_never_change(case: tuple[dict[str, int], str, int | None]) -> None:
    current, name, priority = case
    after = apply(current, name, priority)
    for q, p in current.items():
        if q != name and p < after[name]:
            assert after[q] == p


@given(layouts())
def test_only_colliding_queues_move_and_by_one(case: tuple[dict[str, int], str, int | None]) -> None:
    current, name, priority = case
    changed = place(current, name, priority)
    target = changed[name]
    moved = {q: p for q, p in changed.items() if q != name}
    for q, p in moved.items():
        assert p == current[q] + 1
    # The movers are exactly the unbroken chain of others at target, target+1, ... .
    by_priority = {p: q for q, p in current.items() if q != name}
    chain, k = [], target
    while k in by_priority:
        chain.append(by_priority[k])
        k += 1
    assert sorted(moved) == sorted(chain)


@given(layouts())
def test_place_is_idempotent(case: tuple[dict[str, int], str, int | None]) -> None:
    current, name, priority = case
    after = apply(current, name, priority)
    assume(priority is not None or name in current)
    assert apply(after, name, after[name]) == after
