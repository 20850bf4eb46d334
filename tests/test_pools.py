"""Tests for dispatcher.pools on a real SQLite store: pools, queues, limits, and nothing half-written."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import pools
from dispatcher.deployments import create_deployment, delete_deployment
from dispatcher.errors import Conflict, InvalidInput, NotFound, PushpoolError
from dispatcher.models import WorkQueue
from dispatcher.pool_types import KNOWN_TYPES
from dispatcher.store.base import pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore

TEMPLATE: dict[str, Any] = {
    # A process pool's job: image and cpu reach it as labels, where the process provider accepts them.
    "job_configuration": {
        "command": "{{ command }}",
        "env": "{{ env }}",
        "labels": {"image": "{{ image }}", "cpu": "{{ cpu }} cpus"},
    },
    "variables": {
        "type": "object",
        "properties": {
            "command": {"type": "string"},
            "env": {"type": "object"},
            "image": {"type": "string", "default": "python:3.11"},
            "cpu": {"type": "integer", "minimum": 1, "maximum": 8},
        },
    },
}
OBJECT: dict[str, Any] = {"type": "object"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def snapshot(store: SQLiteStore) -> dict[str, Any]:
    """Everything the pool operations can write, read back through the store."""
    state: dict[str, Any] = {"default_pool": store.get_setting(pools.DEFAULT_POOL_SETTING), "pools": {}}
    for p in store.list_pools():
        queues = store.list_queues(p.name)
        keys = [pool_slot(p.name), *(queue_slot(p.name, q.name) for q in queues)]
        state["pools"][p.name] = {
            "pool": p.model_dump(),
            "queues": [q.model_dump() for q in queues],
            "slots": store.slots(keys),
            "deployments": [d.model_dump() for d in store.list_deployments(p.name)],
        }
    return state


def priorities(store: SQLiteStore, pool: str = "p") -> dict[str, int]:
    return {q.name: q.priority for q in store.list_queues(pool)}


def assert_unchanged(store: SQLiteStore, exc: type[PushpoolError], fn: Any, *args: Any, **kw: Any) -> str:
    before = snapshot(store)
    with pytest.raises(exc) as info:
        fn(store, *args, **kw)
    assert snapshot(store) == before
    return str(info.value)


# --- create -------------------------------------------------------------------------------------------


def test_create_pool_makes_a_default_queue_with_priority_1(store: SQLiteStore) -> None:
    pool = pools.create_pool(store, "p")
    assert pool.type == "process" and pool.concurrency_limit is None and not pool.paused
    assert pool.base_job_template["variables"]["type"] == "object"
    assert store.get_pool("p") is not None
    queues = store.list_queues("p")
    assert [(q.name, q.priority, q.concurrency_limit, q.paused) for q in queues] == [("default", 1, None, False)]
    slots = store.slots([pool_slot("p"), queue_slot("p", "default")])
    assert set(slots) == {pool_slot("p"), queue_slot("p", "default")}
    assert all(s.limit is None and s.active == 0 for s in slots.values())


def test_create_pool_with_settings(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", paused=True, concurrency_limit=3, description="gpu jobs", base_job_template=TEMPLATE)
    stored = store.get_pool("p")
    assert stored is not None
    assert stored.paused and stored.status == "PAUSED"
    assert stored.concurrency_limit == 3
    assert stored.description == "gpu jobs"
    assert stored.base_job_template == TEMPLATE
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 3


def test_create_pool_with_limit_zero(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", concurrency_limit=0)
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 0


def test_set_as_default(store: SQLiteStore) -> None:
    assert pools.default_pool_name(store) is None
    pools.create_pool(store, "p", set_as_default=True)
    assert pools.default_pool_name(store) == "p"
    pools.create_pool(store, "other")
    assert pools.default_pool_name(store) == "p"


def test_duplicate_name_conflicts_and_changes_nothing(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", description="first")
    message = assert_unchanged(store, Conflict, pools.create_pool, "p", description="second")
    assert "'p' already exists" in message and "--overwrite" in message


def test_overwrite_replaces_settings_but_keeps_queues(store: SQLiteStore) -> None:
    first = pools.create_pool(store, "p", description="first", concurrency_limit=2)
    pools.create_queue(store, "p", "high", priority=1)
    pools.create_pool(
        store, "p", description="second", concurrency_limit=7, paused=True, base_job_template=TEMPLATE, overwrite=True
    )
    stored = store.get_pool("p")
    assert stored is not None
    assert (stored.description, stored.concurrency_limit, stored.paused) == ("second", 7, True)
    assert stored.base_job_template == TEMPLATE
    assert stored.created == first.created
    assert priorities(store) == {"high": 1, "default": 2}
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 7


def test_type_change_on_overwrite_rejected(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    message = assert_unchanged(
        store, InvalidInput, pools.create_pool, "p", type="ecs:push", base_job_template=TEMPLATE, overwrite=True
    )
    assert "'process'" in message and "'ecs:push'" in message


def test_unknown_type_rejected_listing_allowed_types(store: SQLiteStore) -> None:
    message = assert_unchanged(store, InvalidInput, pools.create_pool, "p", type="kubernetes")
    assert "'kubernetes'" in message
    for known in KNOWN_TYPES:
        assert known in message


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "pushpool-x"}, "reserved"),
        ({"name": "a/b"}, "may not contain"),
        ({"name": "p", "concurrency_limit": -1}, "concurrency_limit"),
        ({"name": "p", "concurrency_limit": True}, "concurrency_limit"),
        ({"name": "p", "base_job_template": {"job_configuration": {}}}, "variables"),
        ({"name": "p", "base_job_template": {"job_configuration": {"x": "{{ nope }}"}, "variables": OBJECT}}, "nope"),
        ({"name": "p", "base_job_template": TEMPLATE, "job_variables": {"gpu": 1}}, "gpu"),
        ({"name": "p", "base_job_template": TEMPLATE, "job_variables": {"cpu": 99}}, "cpu"),
    ],
)
def test_bad_pool_input_writes_nothing(store: SQLiteStore, kwargs: dict[str, Any], words: str) -> None:
    pools.create_pool(store, "existing")
    name = kwargs.pop("name")
    message = assert_unchanged(store, InvalidInput, pools.create_pool, name, **kwargs)
    assert words in message
    assert store.get_pool(name) is None or name == "existing"


# --- update -------------------------------------------------------------------------------------------


def test_update_changes_only_given_fields(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", description="d", concurrency_limit=4, base_job_template=TEMPLATE)
    pools.update_pool(store, "p", description="new")
    stored = store.get_pool("p")
    assert stored is not None
    assert (stored.description, stored.concurrency_limit, stored.paused) == ("new", 4, False)
    assert stored.base_job_template == TEMPLATE
    pools.update_pool(store, "p", paused=True)
    stored = store.get_pool("p")
    assert stored is not None and stored.paused and stored.description == "new" and stored.concurrency_limit == 4


def test_update_limit_unset_keeps_none_clears(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", concurrency_limit=4)
    pools.update_pool(store, "p", description="x")
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 4
    pools.update_pool(store, "p", concurrency_limit=2)
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 2
    assert store.get_pool("p").concurrency_limit == 2  # type: ignore[union-attr]
    pools.update_pool(store, "p", concurrency_limit=None)
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit is None
    assert store.get_pool("p").concurrency_limit is None  # type: ignore[union-attr]
    pools.update_pool(store, "p", concurrency_limit=0)
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 0


def test_update_bad_input_writes_nothing(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", base_job_template=TEMPLATE, concurrency_limit=1)
    assert "concurrency_limit" in assert_unchanged(store, InvalidInput, pools.update_pool, "p", concurrency_limit=-1)
    assert_unchanged(store, InvalidInput, pools.update_pool, "p", base_job_template={"job_configuration": {}})
    assert "gpu" in assert_unchanged(store, InvalidInput, pools.update_pool, "p", job_variables={"gpu": 2})
    assert "'nope'" in assert_unchanged(store, NotFound, pools.update_pool, "nope", description="x")


def test_update_pool_job_variables_validated_against_template(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", base_job_template=TEMPLATE)
    pools.update_pool(store, "p", job_variables={"cpu": 2})
    assert store.get_pool("p").job_variables == {"cpu": 2}  # type: ignore[union-attr]
    narrower = copy.deepcopy(TEMPLATE)
    narrower["variables"]["properties"]["cpu"]["maximum"] = 1
    # The pool's own defaults no longer fit the new template: refused.
    assert "cpu" in assert_unchanged(store, InvalidInput, pools.update_pool, "p", base_job_template=narrower)


def test_template_change_that_rejects_a_deployment_is_refused(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", base_job_template=TEMPLATE)
    create_deployment(store, "etl", pool="p", job_variables={"cpu": 4})
    narrower = copy.deepcopy(TEMPLATE)
    narrower["variables"]["properties"]["cpu"]["maximum"] = 2
    message = assert_unchanged(store, InvalidInput, pools.update_pool, "p", base_job_template=narrower)
    assert "'etl'" in message and "cpu" in message
    without_cpu = copy.deepcopy(TEMPLATE)
    del without_cpu["variables"]["properties"]["cpu"]
    del without_cpu["job_configuration"]["labels"]["cpu"]
    assert "'etl'" in assert_unchanged(store, InvalidInput, pools.update_pool, "p", base_job_template=without_cpu)
    # The same change through create --overwrite is refused too.
    assert "'etl'" in assert_unchanged(
        store, InvalidInput, pools.create_pool, "p", base_job_template=narrower, overwrite=True
    )
    # A change the deployment fits is fine.
    wider = copy.deepcopy(TEMPLATE)
    wider["variables"]["properties"]["cpu"]["maximum"] = 16
    pools.update_pool(store, "p", base_job_template=wider)
    assert store.get_pool("p").base_job_template == wider  # type: ignore[union-attr]


def test_set_and_clear_limit_reflected_in_slot(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "q", concurrency_limit=2)
    assert store.slots([queue_slot("p", "q")])[queue_slot("p", "q")].limit == 2
    pools.update_queue(store, "p", "q", concurrency_limit=5)
    assert store.slots([queue_slot("p", "q")])[queue_slot("p", "q")].limit == 5
    pools.update_queue(store, "p", "q", description="keeps the limit")
    assert store.slots([queue_slot("p", "q")])[queue_slot("p", "q")].limit == 5
    pools.update_queue(store, "p", "q", concurrency_limit=None)
    assert store.slots([queue_slot("p", "q")])[queue_slot("p", "q")].limit is None
    assert store.get_queue("p", "q").concurrency_limit is None  # type: ignore[union-attr]


# --- delete -------------------------------------------------------------------------------------------


def test_delete_refused_while_a_deployment_exists_then_allowed(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", set_as_default=True)
    create_deployment(store, "etl", pool="p")
    message = assert_unchanged(store, Conflict, pools.delete_pool, "p")
    assert "etl" in message
    delete_deployment(store, "etl")
    pools.delete_pool(store, "p")
    assert store.get_pool("p") is None
    assert store.list_queues("p") == []
    assert store.slots([pool_slot("p"), queue_slot("p", "default")]) == {}
    assert pools.default_pool_name(store) is None


def test_delete_unknown_pool(store: SQLiteStore) -> None:
    assert "'ghost'" in assert_unchanged(store, NotFound, pools.delete_pool, "ghost")


# --- queues -------------------------------------------------------------------------------------------


def test_default_queue_cannot_be_deleted(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    assert "default" in assert_unchanged(store, InvalidInput, pools.delete_queue, "p", "default")


def test_queue_delete_refused_while_a_deployment_uses_it(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "q")
    create_deployment(store, "etl", pool="p", queue="q")
    assert "etl" in assert_unchanged(store, Conflict, pools.delete_queue, "p", "q")
    delete_deployment(store, "etl")
    pools.delete_queue(store, "p", "q")
    assert store.get_queue("p", "q") is None
    assert store.slots([queue_slot("p", "q")]) == {}


def test_queue_create_without_priority_goes_last(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "a", priority=5)
    pools.create_queue(store, "p", "b")
    assert priorities(store) == {"default": 1, "a": 5, "b": 6}


def test_queue_create_inserts_and_shifts(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "b", priority=2)
    pools.create_queue(store, "p", "c", priority=3)
    created = pools.create_queue(store, "p", "new", priority=2, concurrency_limit=1, description="x")
    assert (created.priority, created.concurrency_limit, created.description) == (2, 1, "x")
    assert priorities(store) == {"default": 1, "new": 2, "b": 3, "c": 4}
    assert [q.name for q in store.list_queues("p")] == ["default", "new", "b", "c"]


def test_queue_create_keeps_gaps(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "five", priority=5)
    pools.create_queue(store, "p", "ten", priority=10)
    pools.create_queue(store, "p", "new", priority=5)
    assert priorities(store) == {"default": 1, "new": 5, "five": 6, "ten": 10}


def test_queue_update_moves_up_and_down(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "b", priority=2)
    pools.create_queue(store, "p", "c", priority=3)
    pools.update_queue(store, "p", "c", priority=1)
    assert priorities(store) == {"c": 1, "default": 2, "b": 3}
    pools.update_queue(store, "p", "c", priority=3)
    assert priorities(store) == {"default": 2, "c": 3, "b": 4}
    pools.update_queue(store, "p", "c", description="same priority")
    assert priorities(store) == {"default": 2, "c": 3, "b": 4}


class _RacingStore(SQLiteStore):
    """A real store that hides one queue from get_queue, as if another process created it just now."""

    hidden: str = ""

    def get_queue(self, pool: str, name: str) -> WorkQueue | None:
        return None if name == self.hidden else super().get_queue(pool, name)


def test_queue_insert_and_shift_is_one_transaction(tmp_path: Path) -> None:
    store = _RacingStore(str(tmp_path / "race.db"))
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "b", priority=2)
    store.hidden = "b"
    before = snapshot(store)
    # The shift of `default` is written with the insert of `b`, whose name is taken: neither lands.
    with pytest.raises(Conflict, match="'b' already exists"):
        pools.create_queue(store, "p", "b", priority=1)
    assert snapshot(store) == before
    assert priorities(store) == {"default": 1, "b": 2}
    store.close()


def test_queue_bad_input_writes_nothing(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "q", priority=2)
    assert "priority" in assert_unchanged(store, InvalidInput, pools.create_queue, "p", "x", priority=0)
    assert "priority" in assert_unchanged(store, InvalidInput, pools.create_queue, "p", "x", priority=True)
    assert "concurrency_limit" in assert_unchanged(
        store, InvalidInput, pools.create_queue, "p", "x", priority=1, concurrency_limit=-1
    )
    assert "may not contain" in assert_unchanged(store, InvalidInput, pools.create_queue, "p", "a/b", priority=1)
    assert "'q' already exists" in assert_unchanged(store, Conflict, pools.create_queue, "p", "q", priority=1)
    assert "'nope'" in assert_unchanged(store, NotFound, pools.create_queue, "nope", "x")
    assert "priority" in assert_unchanged(store, InvalidInput, pools.update_queue, "p", "q", priority=-3)
    assert "concurrency_limit" in assert_unchanged(
        store, InvalidInput, pools.update_queue, "p", "q", priority=1, concurrency_limit=-1
    )
    message = assert_unchanged(store, NotFound, pools.update_queue, "p", "ghost", priority=1)
    assert "'ghost'" in message and "default, q" in message


def test_pause_and_resume_queue(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "q", priority=2)
    paused = pools.update_queue(store, "p", "q", paused=True)
    assert paused.paused and paused.status == "PAUSED"
    assert store.get_queue("p", "q").paused  # type: ignore[union-attr]
    assert priorities(store) == {"default": 1, "q": 2}
    resumed = pools.update_queue(store, "p", "q", paused=False)
    assert not resumed.paused and resumed.status == "NOT_READY"
    assert not store.get_queue("p", "q").paused  # type: ignore[union-attr]


def test_queue_status_ready_after_touch(store: SQLiteStore) -> None:
    from dispatcher.models import utcnow

    pools.create_pool(store, "p")
    store.touch("p", ["default"], utcnow())
    assert pools.get_queue(store, "p", "default").status == "READY"
    assert pools.get_pool(store, "p").status == "READY"
    pools.update_pool(store, "p", paused=True)
    assert pools.get_pool(store, "p").status == "PAUSED"
    pools.update_pool(store, "p", paused=False)
    assert pools.get_pool(store, "p").status == "READY"


def test_active_counts_reads_slots(store: SQLiteStore) -> None:
    pool = pools.create_pool(store, "p", concurrency_limit=2)
    counts = pools.active_counts(store, pool, store.list_queues("p"))
    assert counts == {pool_slot("p"): 0, queue_slot("p", "default"): 0}


# --- bounds: limits, priorities, names, descriptions ---------------------------------------------------
# Values beyond SQLite's 64-bit integers used to pass validation and crash on write (OverflowError).


@pytest.mark.parametrize("limit", [1_000_001, 2**63, 10**23])
def test_pool_limit_beyond_the_bound_writes_nothing(store: SQLiteStore, limit: int) -> None:
    pools.create_pool(store, "p", concurrency_limit=2)
    message = assert_unchanged(store, InvalidInput, pools.create_pool, "big", concurrency_limit=limit)
    assert message.startswith("concurrency_limit must be a whole number of 0 or more and at most 1,000,000")
    assert str(limit) in message
    assert "concurrency_limit" in assert_unchanged(store, InvalidInput, pools.update_pool, "p", concurrency_limit=limit)
    assert store.get_pool("big") is None


def test_pool_and_queue_limit_at_the_bound_is_stored(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", concurrency_limit=1_000_000)
    pools.create_queue(store, "p", "q", concurrency_limit=1_000_000)
    assert store.slots([pool_slot("p")])[pool_slot("p")].limit == 1_000_000
    assert store.get_queue("p", "q").concurrency_limit == 1_000_000  # type: ignore[union-attr]
    pools.update_pool(store, "p", concurrency_limit=0)  # 0 (deliver nothing) and None (no limit) keep their meaning
    pools.update_queue(store, "p", "q", concurrency_limit=None)
    assert store.get_pool("p").concurrency_limit == 0  # type: ignore[union-attr]
    assert store.get_queue("p", "q").concurrency_limit is None  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [1_000_001, 9223372036854775807, 10**23])
def test_queue_priority_and_limit_beyond_the_bound_write_nothing(store: SQLiteStore, value: int) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "q", priority=2)
    message = assert_unchanged(store, InvalidInput, pools.create_queue, "p", "x", priority=value)
    assert (
        message
        == f"priority must be a whole number of 1 or more and at most 1,000,000 (1 is the highest), got {value}."
    )
    assert "priority" in assert_unchanged(store, InvalidInput, pools.update_queue, "p", "q", priority=value)
    for fn, args in ((pools.create_queue, ("p", "x")), (pools.update_queue, ("p", "q"))):
        message = assert_unchanged(store, InvalidInput, fn, *args, concurrency_limit=value)
        assert message.startswith("concurrency_limit must be a whole number of 0 or more and at most 1,000,000")


def test_insert_at_the_last_priority_that_would_push_a_queue_out_of_range_is_refused(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "bottom", priority=1_000_000)
    message = assert_unchanged(store, InvalidInput, pools.create_queue, "p", "second", priority=1_000_000)
    assert message == (
        "priority 1,000,000 for work queue 'second' would push work queue 'bottom' down to 1,000,001, beyond the "
        "allowed priorities 1 to 1,000,000; pick a free priority, or move 'bottom' up first."
    )
    # A chain of taken priorities ending at the bound: the queue at its end is named.
    pools.create_queue(store, "p", "above", priority=999_999)
    message = assert_unchanged(store, InvalidInput, pools.update_queue, "p", "default", priority=999_999)
    assert "work queue 'bottom' down to 1,000,001" in message
    # A free priority, or an insert with room below, still works.
    pools.create_queue(store, "p", "second", priority=999_998)
    pools.update_queue(store, "p", "bottom", priority=5)
    pools.create_queue(store, "p", "third", priority=999_999)
    assert priorities(store) == {
        "default": 1,
        "bottom": 5,
        "second": 999_998,
        "third": 999_999,
        "above": 1_000_000,
    }


def test_a_queue_without_priority_cannot_go_last_beyond_the_bound(store: SQLiteStore) -> None:
    pools.create_pool(store, "p")
    pools.create_queue(store, "p", "bottom", priority=1_000_000)
    message = assert_unchanged(store, InvalidInput, pools.create_queue, "p", "x")
    assert message == (
        "work queue 'x' would go last, at priority 1,000,001, beyond the allowed priorities 1 to 1,000,000; "
        "give it a free priority."
    )
    assert pools.create_queue(store, "p", "x", priority=2).priority == 2


def test_placed_is_the_insert_and_shift_rule_within_the_bound() -> None:
    assert pools.placed({"a": 1, "b": 2}, "c", 1) == {"c": 1, "a": 2, "b": 3}
    assert pools.placed({"a": 999_999}, "c", 999_999) == {"c": 999_999, "a": 1_000_000}
    with pytest.raises(InvalidInput, match=r"^priority 999,999 for work queue 'c' would push work queue 'b'"):
        pools.placed({"a": 999_999, "b": 1_000_000}, "c", 999_999)


@pytest.mark.parametrize(("name", "code"), [("e\x1b[31mred", "U+001B"), ("a\x01b", "U+0001"), ("a\u200bb", "U+200B")])
def test_names_with_control_or_invisible_characters_write_nothing(store: SQLiteStore, name: str, code: str) -> None:
    pools.create_pool(store, "p")
    message = assert_unchanged(store, InvalidInput, pools.create_pool, name)
    assert message.startswith("work pool name ") and code in message and "\x1b" not in message
    message = assert_unchanged(store, InvalidInput, pools.create_queue, "p", name)
    assert message.startswith("work queue name ") and code in message
    assert [p.name for p in store.list_pools()] == ["p"]


def test_unicode_pool_and_queue_names_are_stored(store: SQLiteStore) -> None:
    pools.create_pool(store, "ünïcødé-日本")
    pools.create_queue(store, "ünïcødé-日本", "Ωμέγα")
    assert store.get_queue("ünïcødé-日本", "Ωμέγα") is not None


def test_descriptions_are_bounded_and_write_nothing(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", description="short")
    pools.create_queue(store, "p", "q")
    long = "x" * 500_000
    expected = "description must be at most 2,000 characters, got 500,000."
    assert assert_unchanged(store, InvalidInput, pools.create_pool, "other", description=long) == expected
    assert assert_unchanged(store, InvalidInput, pools.update_pool, "p", description=long) == expected
    assert assert_unchanged(store, InvalidInput, pools.create_queue, "p", "x", description=long) == expected
    assert assert_unchanged(store, InvalidInput, pools.update_queue, "p", "q", description=long) == expected
    pools.update_pool(store, "p", description="d" * 2_000)
    assert store.get_pool("p").description == "d" * 2_000  # type: ignore[union-attr]


def test_pool_job_variables_and_template_are_bounded(store: SQLiteStore) -> None:
    pools.create_pool(store, "p", base_job_template=TEMPLATE)
    big = {"command": "x" * 70_000}
    message = assert_unchanged(store, InvalidInput, pools.update_pool, "p", job_variables=big)
    assert message == "job_variables may be at most 64 KB (65,536 bytes) as JSON, got 70,014 bytes."
    message = assert_unchanged(
        store, InvalidInput, pools.create_pool, "q", base_job_template=TEMPLATE, job_variables=big
    )
    assert message.startswith("job_variables may be at most 64 KB")
    huge_template = copy.deepcopy(TEMPLATE)
    huge_template["variables"]["description"] = "x" * 70_000
    message = assert_unchanged(store, InvalidInput, pools.create_pool, "q", base_job_template=huge_template)
    assert message.startswith("base_job_template may be at most 64 KB (65,536 bytes) as JSON, got ")
    message = assert_unchanged(store, InvalidInput, pools.update_pool, "p", job_variables={"cpu": float("nan")})
    assert message == "job_variables.cpu is nan, which is not a JSON number; use a finite number, a string or null."
