"""Wake-ups: ask for a dispatch pass now, when something happened that a pass would act on.

A run waits for the next pass to be admitted and submitted. Without wake-ups that is the next tick (5 s
under `pushpool serve`, a minute on AWS); with them, whoever changes the store in a way that lets a run
start (a run created, a slot freed, a pool resumed, a limit raised) says so through a `Wakeups`, and the
adapter behind it starts a pass soon. The timed pass stays as the safety net: a lost wake-up costs latency,
never a run.

The rules for WHEN to wake live here, once, for every caller (the HTTP API, the CLI, the cloud handlers):
`left_active`, `freed_slot`, `room_opened` and `deployment_wake_reason`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import NamedTuple, Protocol

from .models import Deployment, FlowRun, WorkPool, WorkQueue
from .states import ACTIVE

log = logging.getLogger("pushpool.wakeups")

RUN_CREATED = "run created"
SLOT_FREED = "slot freed"
RUN_CANCELLED = "run cancelled"
POOL_RESUMED = "pool resumed"
QUEUE_RESUMED = "queue resumed"
LIMIT_RAISED = "limit raised"
SCHEDULE_CHANGED = "schedule changed"
RUN_DUE = "run due"
APPLIED = "applied"


class Wakeups(Protocol):
    """Where events that let a run start are reported, so a pass follows at once instead of at the next tick."""

    def wake(self, pool: str | None, reason: str, due: datetime | None = None) -> None:
        """Ask for a pass over `pool` (None: every pool) soon. Never blocks the caller, never raises,
        coalesces bursts; `reason` is a short phrase for logs ("run created", "slot freed",
        "pool resumed", "limit raised", "run due"). `due`, for a run created: when it falls due, so a
        dispatcher that can wait for it (the AWS function) passes then rather than now; None is now."""


class NoWakeups:
    """A `Wakeups` that does nothing: the default everywhere, so a caller that passes none changes nothing."""

    def wake(self, pool: str | None, reason: str, due: datetime | None = None) -> None:
        return None


class PassSteps(NamedTuple):
    """The optional steps of a pass (`Dispatcher.run_pass`'s keywords of the same names)."""

    schedule: bool
    reconcile: bool


def pass_steps(reason: str) -> PassSteps:
    """What of a pass a wake-up needs: the scheduler for a schedule set (its new runs), the reconciler for a
    cancel (the task to stop); admission alone for the rest (a run created or due, a slot freed, a pool or queue
    resumed, a limit raised). An unknown reason gets everything. The timed pass does every step."""
    if reason in (RUN_CREATED, SLOT_FREED, RUN_DUE, POOL_RESUMED, QUEUE_RESUMED, LIMIT_RAISED):
        return PassSteps(schedule=False, reconcile=False)
    if reason in (SCHEDULE_CHANGED, APPLIED):
        return PassSteps(schedule=True, reconcile=False)
    if reason == RUN_CANCELLED:
        return PassSteps(schedule=False, reconcile=True)
    return PassSteps(schedule=True, reconcile=True)


# when to wake ---------------------------------------------------------------------------------------------
def freed_slot(before: FlowRun | None, after: FlowRun | None) -> bool:
    """Whether a change from `before` to `after` released the run's slots: it left an ACTIVE state."""
    return before is not None and after is not None and before.state in ACTIVE and after.state not in ACTIVE


def left_active(run: FlowRun | None) -> bool:
    """Whether the run's newest transition took it out of an ACTIVE state, read from its history alone.

    For callers that only hold the run as stored after a change (`apply_callback`, `provider_events.
    apply_status`): the newest record must be an applied one (a no-op freed nothing) and the applied one
    before it an ACTIVE state. A duplicate delivery that changed nothing answers as the original did; a
    second wake-up is harmless, as wake-ups coalesce.
    """
    if run is None or run.state in ACTIVE or not run.state_history or not run.state_history[-1].applied:
        return False
    applied = [record for record in run.state_history if record.applied]
    return len(applied) >= 2 and applied[-2].state in ACTIVE


def limit_raised(before: int | None, after: int | None) -> bool:
    """Whether a concurrency limit went up or was cleared (None is unlimited)."""
    if before is None:
        return False
    return after is None or after > before


def room_opened(before: WorkPool | WorkQueue, after: WorkPool | WorkQueue) -> str | None:
    """The wake-up reason when a pool or queue change may let waiting runs in: resumed, or limit raised."""
    if before.paused and not after.paused:
        return POOL_RESUMED if isinstance(after, WorkPool) else QUEUE_RESUMED
    if limit_raised(before.concurrency_limit, after.concurrency_limit):
        return LIMIT_RAISED
    return None


def deployment_wake_reason(before: Deployment | None, after: Deployment) -> str | None:
    """The wake-up reason when a deployment's creation or change may start runs sooner than the next tick.

    Its limit raised or cleared; or an active schedule that is new or changed (created, edited, resumed):
    the pass creates its runs at once, so a time due before the next tick is not missed.
    """
    if before is not None and limit_raised(before.concurrency_limit, after.concurrency_limit):
        return LIMIT_RAISED
    if not after.schedules or after.schedule_paused:
        return None
    if before is None or before.schedule_paused or before.schedules != after.schedules:
        return SCHEDULE_CHANGED
    return None


class RecordedWakeups:
    """A `Wakeups` that keeps every call, in order: for tests, and for a caller that wakes after it answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str]] = []
        self.dues: list[datetime | None] = []
        """The `due` of each call, in the same order."""

    def wake(self, pool: str | None, reason: str, due: datetime | None = None) -> None:
        self.calls.append((pool, reason))
        self.dues.append(due)


class PassRequests:
    """The `Wakeups` of a dispatch loop (`serve`, `dispatch --interval`): which pools were asked for since the
    last pass, and an event that ends the loop's wait.

    Wakes coalesce: however many arrive while a pass runs (a hundred callbacks), the loop runs one more pass
    over the pools they named once that pass ends.
    """

    MAX_POOLS = 1000
    """Pools remembered by name; past this many at once (a flood of names), the next pass covers every pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._pools: set[str] = set()
        self._everything = False
        self.received = 0
        """Wake-ups received in total (for logs and tests)."""

    def wake(self, pool: str | None, reason: str, due: datetime | None = None) -> None:
        # `due` is not needed here: after a woken pass the loop reads the pool's next due time itself.
        with self._lock:
            self.received += 1
            if pool is None or len(self._pools) >= self.MAX_POOLS:
                self._everything = True
            else:
                self._pools.add(pool)
        log.debug("woken for %s: %s", pool or "every pool", reason)
        self._event.set()

    def interrupt(self) -> None:
        """End the loop's current wait without asking for a pass (stopping)."""
        self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(max(0.0, timeout))

    def take(self) -> tuple[bool, list[str]]:
        """(every pool?, the pools named) asked for since the last take; clears them."""
        with self._lock:
            self._event.clear()
            # A pass over every pool covers the pools named too.
            everything, pools = self._everything, [] if self._everything else sorted(self._pools)
            self._everything, self._pools = False, set()
        return everything, pools
