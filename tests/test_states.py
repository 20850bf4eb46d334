"""Tests for dispatcher.states and FlowRun.moved: transitions only move forward, terminal is final (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.models import HISTORY_NOOPS_KEPT, FlowRun
from dispatcher.states import (
    ACTIVE,
    NAMES_BY_TYPE,
    TERMINAL,
    StateType,
    check_state_name,
    is_allowed,
    rank,
)

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
ALL_PAIRS = [(t, n) for t, names in NAMES_BY_TYPE.items() for n in names]


def make_run(state: StateType = StateType.SCHEDULED, name: str = "Scheduled") -> FlowRun:
    return FlowRun(
        id="run-1",
        name="d-run-1",
        deployment="d",
        deployment_id="dep-1",
        pool="p",
        queue="default",
        scheduled_time=T0,
        state=state,
        state_name=name,
    )


def test_active_and_terminal_sets_follow_the_spec_table() -> None:
    assert {StateType.PENDING, StateType.RUNNING, StateType.CANCELLING} == ACTIVE
    assert {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED} == TERMINAL
    assert not ACTIVE & TERMINAL


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize(("new", "new_name"), ALL_PAIRS)
def test_every_terminal_state_is_final(terminal: StateType, new: StateType, new_name: str) -> None:
    assert not is_allowed(terminal, NAMES_BY_TYPE[terminal][0], new, new_name)
    run = make_run(terminal, NAMES_BY_TYPE[terminal][0])
    after, applied = run.moved(new, name=new_name, source="test", now=T0)
    assert applied is False
    assert (after.state, after.state_name) == (terminal, NAMES_BY_TYPE[terminal][0])
    assert after.state_history[-1].applied is False


def test_duplicate_running_is_a_recorded_no_op() -> None:
    pending = make_run(StateType.PENDING, "InfrastructurePending")
    run, applied = pending.moved(StateType.RUNNING, source="callback", now=T0)
    assert applied
    again, applied_again = run.moved(StateType.RUNNING, source="callback", message="dup", now=T0)
    assert applied_again is False
    assert again.state is StateType.RUNNING
    assert len(again.state_history) == len(run.state_history) + 1
    last = again.state_history[-1]
    assert (last.state, last.name, last.applied, last.source, last.message) == (
        StateType.RUNNING,
        "Running",
        False,
        "callback",
        "dup",
    )
    assert last.time == T0


def test_running_after_completed_is_ignored_and_recorded() -> None:
    run, _ = make_run(StateType.RUNNING, "Running").moved(StateType.COMPLETED, source="callback")
    late, applied = run.moved(StateType.RUNNING, source="ecs-event")
    assert not applied
    assert late.state is StateType.COMPLETED and late.state_name == "Completed"
    assert [(r.state, r.applied) for r in late.state_history] == [
        (StateType.COMPLETED, True),
        (StateType.RUNNING, False),
    ]


def test_no_op_does_not_apply_changes() -> None:
    run = make_run(StateType.COMPLETED, "Completed")
    after, applied = run.moved(StateType.RUNNING, source="x", infrastructure_id="task-1")
    assert not applied
    assert after.infrastructure_id is None


def test_applied_move_applies_changes_and_updates_time() -> None:
    run = make_run(StateType.PENDING, "Pending")
    later = T0 + timedelta(minutes=1)
    after, applied = run.moved(
        StateType.PENDING, name="InfrastructurePending", source="dispatcher", infrastructure_id="task-1", now=later
    )
    assert applied
    assert after.infrastructure_id == "task-1"
    assert after.updated == later
    # The original is untouched: moved returns a copy.
    assert run.state_name == "Pending" and run.state_history == []


def test_scheduled_to_late_applied_late_to_scheduled_not() -> None:
    assert is_allowed(StateType.SCHEDULED, "Scheduled", StateType.SCHEDULED, "Late")
    assert not is_allowed(StateType.SCHEDULED, "Late", StateType.SCHEDULED, "Scheduled")
    late, applied = make_run().moved(StateType.SCHEDULED, name="Late", source="dispatcher")
    assert applied and late.state_name == "Late"
    back, applied_back = late.moved(StateType.SCHEDULED, name="Scheduled", source="dispatcher")
    assert not applied_back and back.state_name == "Late"


def test_pending_to_infrastructure_pending_applied_reverse_not() -> None:
    assert is_allowed(StateType.PENDING, "Pending", StateType.PENDING, "InfrastructurePending")
    assert not is_allowed(StateType.PENDING, "InfrastructurePending", StateType.PENDING, "Pending")


@pytest.mark.parametrize("name", ["Pending", "InfrastructurePending"])
def test_pending_to_awaiting_retry_is_the_only_step_back(name: str) -> None:
    assert is_allowed(StateType.PENDING, name, StateType.SCHEDULED, "AwaitingRetry")
    assert not is_allowed(StateType.PENDING, name, StateType.SCHEDULED, "Scheduled")
    assert not is_allowed(StateType.PENDING, name, StateType.SCHEDULED, "Late")
    retry, applied = make_run(StateType.PENDING, name).moved(StateType.SCHEDULED, name="AwaitingRetry", source="d")
    assert applied and (retry.state, retry.state_name) == (StateType.SCHEDULED, "AwaitingRetry")


@pytest.mark.parametrize("current", [StateType.RUNNING, StateType.CANCELLING])
def test_no_step_back_to_scheduled_from_later_states(current: StateType) -> None:
    for name in NAMES_BY_TYPE[StateType.SCHEDULED]:
        assert not is_allowed(current, NAMES_BY_TYPE[current][0], StateType.SCHEDULED, name)


def test_is_allowed_accepts_plain_strings_like_the_enum() -> None:
    # StateType is a StrEnum: "PENDING" and StateType.PENDING must mean the same thing.
    assert is_allowed("PENDING", "Pending", "SCHEDULED", "AwaitingRetry")  # type: ignore[arg-type]
    assert not is_allowed("COMPLETED", "Completed", "RUNNING", "Running")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Scheduled", "Late", "AwaitingRetry"])
def test_a_scheduled_run_becomes_active_only_through_admission(name: str) -> None:
    assert is_allowed(StateType.SCHEDULED, name, StateType.PENDING, "Pending")
    for state in (StateType.RUNNING, StateType.CANCELLING):
        assert not is_allowed(StateType.SCHEDULED, name, state, NAMES_BY_TYPE[state][0])
    stale, applied = make_run(StateType.SCHEDULED, name).moved(StateType.RUNNING, source="callback")
    assert not applied and stale.state is StateType.SCHEDULED and stale.state_history[-1].applied is False


def test_cancelling_to_running_ignored_cancelling_to_cancelled_applied() -> None:
    run = make_run(StateType.CANCELLING, "Cancelling")
    stale, applied = run.moved(StateType.RUNNING, source="callback")
    assert not applied and stale.state is StateType.CANCELLING
    done, applied = stale.moved(StateType.CANCELLED, source="provider")
    assert applied and done.state is StateType.CANCELLED and done.state_name == "Cancelled"


def test_scheduled_to_cancelled_at_once() -> None:
    done, applied = make_run().moved(StateType.CANCELLED, source="user")
    assert applied and done.is_terminal and not done.is_active


@pytest.mark.parametrize(("state", "name"), [(StateType.SCHEDULED, "Running"), (StateType.RUNNING, "Bogus")])
def test_unknown_state_name_raises_value_error_naming_allowed(state: StateType, name: str) -> None:
    with pytest.raises(ValueError) as info:
        make_run().moved(state, name=name, source="test")
    for allowed in NAMES_BY_TYPE[state]:
        assert allowed in str(info.value)
    assert name in str(info.value)
    with pytest.raises(ValueError, match="use one of"):
        check_state_name(state, name)


def test_is_allowed_with_unknown_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Scheduled, Late, AwaitingRetry"):
        is_allowed(StateType.SCHEDULED, "Nope", StateType.RUNNING, "Running")
    with pytest.raises(ValueError, match="use one of: Running"):
        rank(StateType.RUNNING, "Late")


def test_default_name_is_used_when_none_given() -> None:
    after, _ = make_run().moved(StateType.PENDING, source="d")
    assert after.state_name == "Pending"
    assert after.state_history[-1].name == "Pending"


# --- property: any sequence of proposals ------------------------------------------------------------------

proposals = st.lists(st.sampled_from(ALL_PAIRS), max_size=40)


@given(proposals)
def test_any_sequence_only_moves_forward(seq: list[tuple[StateType, str]]) -> None:
    run = make_run()
    prev = (run.state, run.state_name)
    for i, (state, name) in enumerate(seq):
        was_terminal = run.is_terminal
        run, applied = run.moved(state, name=name, source="prop", now=T0 + timedelta(seconds=i))
        if was_terminal:
            assert not applied
            assert (run.state, run.state_name) == prev
        if applied:
            step_back = prev[0] is StateType.PENDING and (state, name) == (StateType.SCHEDULED, "AwaitingRetry")
            assert step_back or rank(state, name) > rank(*prev)
            # Nothing becomes active but through admission.
            assert state not in ACTIVE or prev[0] in ACTIVE or state is StateType.PENDING
            assert (run.state, run.state_name) == (state, name)
        else:
            assert (run.state, run.state_name) == prev
        prev = (run.state, run.state_name)
    # Every proposal is in the history, repeated no-ops counted on one record, until the bound drops the oldest.
    recorded = sum(r.count for r in run.state_history)
    assert recorded == len(seq) or (recorded < len(seq) and len(run.state_history) > HISTORY_NOOPS_KEPT)
    expanded = [(r.state, r.name) for r in run.state_history for _ in range(r.count)]
    assert expanded == seq or recorded < len(seq)
    # Once a terminal state is applied, every later record is a no-op.
    applied_terminal = [i for i, r in enumerate(run.state_history) if r.applied and r.state in TERMINAL]
    if applied_terminal:
        assert len(applied_terminal) == 1
        assert not any(r.applied for r in run.state_history[applied_terminal[0] + 1 :])
        assert run.state is run.state_history[applied_terminal[0]].state
