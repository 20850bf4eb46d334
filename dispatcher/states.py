"""Flow-run state types and the one rule for moving between them: forward only, terminal is final."""

from __future__ import annotations

from enum import StrEnum


class StateType(StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"


ACTIVE = frozenset({StateType.PENDING, StateType.RUNNING, StateType.CANCELLING})
"""Types that hold a pool, queue and deployment slot (SPEC §3): CANCELLING too, its infrastructure still runs."""

TERMINAL = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})

DEFAULT_NAMES: dict[StateType, str] = {
    StateType.SCHEDULED: "Scheduled",
    StateType.PENDING: "Pending",
    StateType.RUNNING: "Running",
    StateType.CANCELLING: "Cancelling",
    StateType.COMPLETED: "Completed",
    StateType.FAILED: "Failed",
    StateType.CRASHED: "Crashed",
    StateType.CANCELLED: "Cancelled",
}

NAMES_BY_TYPE: dict[StateType, tuple[str, ...]] = {
    StateType.SCHEDULED: ("Scheduled", "Late", "AwaitingRetry"),
    StateType.PENDING: ("Pending", "InfrastructurePending"),
    StateType.RUNNING: ("Running",),
    StateType.CANCELLING: ("Cancelling",),
    StateType.COMPLETED: ("Completed",),
    StateType.FAILED: ("Failed",),
    StateType.CRASHED: ("Crashed",),
    StateType.CANCELLED: ("Cancelled",),
}

# Progress of a run: a transition must raise the rank. Names inside a type are ranked too, so
# Scheduled -> Late and Pending -> InfrastructurePending move on while their reverse is stale.
_RANK: dict[tuple[StateType, str], int] = {
    (StateType.SCHEDULED, "Scheduled"): 0,
    (StateType.SCHEDULED, "AwaitingRetry"): 0,
    (StateType.SCHEDULED, "Late"): 1,
    (StateType.PENDING, "Pending"): 10,
    (StateType.PENDING, "InfrastructurePending"): 11,
    (StateType.RUNNING, "Running"): 20,
    (StateType.CANCELLING, "Cancelling"): 30,
}
_TERMINAL_RANK = 40


def rank(state: StateType, name: str) -> int:
    """Where a (type, name) stands in a run's life; terminal states share the top rank.

    Raises ValueError for a name that `state` does not use (never a bare KeyError).
    """
    state = StateType(state)
    check_state_name(state, name)
    if state in TERMINAL:
        return _TERMINAL_RANK
    return _RANK[(state, name)]


def check_state_name(state: StateType, name: str) -> None:
    """Raise ValueError unless `name` is one of the names used for `state`."""
    state = StateType(state)
    if name not in NAMES_BY_TYPE[state]:
        allowed = ", ".join(NAMES_BY_TYPE[state])
        raise ValueError(f"state name {name!r} is not used for {state.value}; use one of: {allowed}")


def is_allowed(current: StateType, current_name: str, new: StateType, new_name: str) -> bool:
    """True when moving from the current state to the new one is progress.

    The one sanctioned step back is a failed submission: PENDING -> SCHEDULED/AwaitingRetry, which frees
    the slot so the run can be admitted again after its backoff (SPEC §5). A SCHEDULED run becomes active
    only through admission, to PENDING: the store refuses any other way in, since it would take no slot.
    """
    # Compare by value, not identity: StateType is a StrEnum and callers may pass its plain text.
    current, new = StateType(current), StateType(new)
    if current in TERMINAL:
        check_state_name(new, new_name)
        return False
    if current == StateType.PENDING and new == StateType.SCHEDULED and new_name == "AwaitingRetry":
        check_state_name(current, current_name)
        return True
    if current == StateType.SCHEDULED and new in ACTIVE and new != StateType.PENDING:
        # Only admission (-> PENDING, together with the slots) makes a run active; a RUNNING or CANCELLING
        # report for a run that was never admitted, or was returned to AwaitingRetry, is stale.
        check_state_name(current, current_name)
        check_state_name(new, new_name)
        return False
    return rank(new, new_name) > rank(current, current_name)
