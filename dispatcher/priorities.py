"""Queue priorities inside a pool: unique, 1 highest, with Prefect's insert-and-shift rule (pure)."""

from __future__ import annotations

from collections.abc import Mapping


def place(current: Mapping[str, int], name: str, priority: int | None) -> dict[str, int]:
    """New priorities after giving queue `name` the `priority` (None: keep its own, or go last if new).

    A taken priority is inserted at: the queue that held it moves down by one, and so on only where two
    would collide, so gaps and order are kept. Returns only the queues whose priority changes (and `name`).
    """
    others = {q: p for q, p in current.items() if q != name}
    if priority is None:
        priority = current.get(name, max(others.values(), default=0) + 1)
    changed = {name: priority}
    by_priority = {p: q for q, p in others.items()}
    taken, moving = priority, by_priority.get(priority)
    while moving is not None:
        taken += 1
        changed[moving] = taken
        moving = by_priority.get(taken)
    return changed
