"""Wake-ups on AWS Lambda: the http and ecs_events functions start a dispatch pass with an asynchronous invoke.

`LambdaWakeups.wake(pool, reason, due)` sends `lambda.invoke(FunctionName=<dispatch function>, InvocationType=
"Event", Payload={"pool", "reason", "not_before", "until"})`: Lambda queues the event and answers 202 at once, and
the dispatch function runs a pass over that pool (`WakeEvent`). The caller never waits for the pass.

Coalescing, per warm instance and per pool (docs/decisions.md, "Wake-ups on AWS"):

- A wake for now (a slot freed, a run due now, a pool resumed) carries `not_before`, the time after which its
  pass reads the store. A wake that comes before the last invoke's `not_before` is covered by that invoke's pass
  and sends nothing; a later one sends the next invoke, at least `window` seconds after the previous one's. So
  an instance sends at most one such invoke per pool per window, and no wake is left without a pass after it.
- A run created to fall due later within the coming minute (`due`) is waited for by the invocation its wake
  starts: `not_before` is the run's time, and the invocation then follows the pool's next due times up to
  `until`. A later run of the pool due inside a pending invocation's span is covered by it (that invocation's
  first pass comes after the run was created, and it follows every due time after) and sends nothing; a run
  due before a pending span starts gets a span that ends where that one starts. Spans never overlap, so no two
  invocations from one instance pass over a pool at the same due time, and none waits for nothing. A run due
  beyond the minute sends nothing: a tick that covers its time will see it.

The invokes go out on a background thread (`wake` returns at once, never raises); the handler calls `flush`
before it returns, because Lambda freezes an instance between invocations and a frozen thread sends nothing.
boto3 is imported when the first invoke is sent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidInput
from .wakeups import RUN_DUE, SCHEDULE_CHANGED, SLOT_FREED

log = logging.getLogger("pushpool.wakeups")

DISPATCH_FUNCTION_ENV = "PUSHPOOL_DISPATCH_FUNCTION"
"""Name or ARN of the dispatch function; unset, the functions wake nothing (the tick still runs every pass)."""
WAKE_WINDOW_ENV = "PUSHPOOL_WAKE_WINDOW_SECONDS"
DEFAULT_WINDOW = 1.0
"""Seconds between two invokes for one pool from one instance: the most a wake waits behind the last invoke."""
CLOCK_SKEW = 0.05
"""Allowance for the clocks of two Lambda instances: a wake this close to `not_before` is not taken as covered."""
DEFAULT_LOOKAHEAD = 60.0
"""How far past a tick the dispatch function looks for runs falling due: the schedule's rate, one minute. A run
created to fall due within it is waited for by its wake's invocation; a later one is left to the ticks."""
FLUSH_TIMEOUT = 2.0
"""How long a handler waits, at most, for its invokes to be accepted before it returns."""
WAKE_SOURCE = "pushpool.wake"

LOOK, PASS, PASS_AND_LOOKAHEAD = 0, 1, 2
"""What a wake needs of the dispatch function, weakest first: a look at the due index (a freed slot takes a run
only if one is due), a pass (a run created due now, a cancel's task to stop, a resumed pool, a raised limit), a
pass and then the coming minute (a schedule set creates runs that may fall due within it). A wake is covered
only by as much or more. A run created to fall due later is a span of its own (`LambdaWakeups.wake`)."""
LOOKAHEAD_REASONS = frozenset({SCHEDULE_CHANGED, RUN_DUE})


def wake_rank(reason: str) -> int:
    """LOOK, PASS or PASS_AND_LOOKAHEAD for a wake's reason."""
    if reason == SLOT_FREED:
        return LOOK
    return PASS_AND_LOOKAHEAD if reason in LOOKAHEAD_REASONS else PASS


class WakeEvent(BaseModel):
    """The dispatch function's event for a wake-up: a pass over `pool` (None: every pool) from `not_before` on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: str = Field(pattern=f"^{WAKE_SOURCE}$")
    pool: str | None = Field(default=None, min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=200)
    not_before: float = Field(ge=0)
    """Seconds since the epoch: the pass reads the store after this time, so every wake before it is covered."""
    until: float | None = Field(default=None, ge=0)
    """Seconds since the epoch: the invocation follows the pool's due times from `not_before` up to here. In a
    hand-off, where the handing invocation's minute ended (the next tick looks on from there): without it a
    hand-off would cover a minute of its own and hand off again, a chain that runs as long as runs fall due (issue
    16's (c) tail). In a wake for a run due later, the end of its span (`LambdaWakeups.wake`). Absent: one pass,
    and the coming minute only for a reason that needs it (a schedule set)."""


def is_wake_event(event: Any) -> bool:
    """Whether a dispatch event was sent by `LambdaWakeups` (the schedule's events come from aws.events)."""
    return isinstance(event, dict) and event.get("source") == WAKE_SOURCE


def parse_wake_event(event: dict[str, Any]) -> WakeEvent:
    """A wake event, or InvalidInput naming the field and what is allowed."""
    try:
        return WakeEvent.model_validate(event)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "event"
        raise InvalidInput(
            f"wake event field {field!r}: {err['msg']} (allowed: source {WAKE_SOURCE!r}, pool a pool name or null, "
            "reason a short text, not_before seconds since the epoch, until (optional) seconds since the epoch)"
        ) from None


class LambdaWakeups:
    """A `dispatcher.wakeups.Wakeups` that invokes the dispatch function asynchronously, coalesced per pool.

    `client` is a boto3 Lambda client, built on first use when not given. `clock` is seconds since the epoch.
    """

    def __init__(
        self,
        function: str,
        *,
        window: float = DEFAULT_WINDOW,
        lookahead: float = DEFAULT_LOOKAHEAD,
        client: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.function = function
        self.window = window
        self.lookahead = lookahead
        self.clock = clock
        self._client = client
        self._lock = threading.Lock()
        self._covered: dict[str | None, tuple[float, int]] = {}
        """pool -> `not_before` and rank of the last invoke sent for it from this instance."""
        self._spans: dict[str | None, list[tuple[float, float]]] = {}
        """pool -> (`not_before`, `until`) of the invokes sent for runs due later whose first pass is still ahead."""
        self._sending: list[Future[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self.invokes = 0
        """Invokes sent (accepted or not) by this instance: the coalescing figures of tests and benchmarks."""
        self.coalesced = 0
        """Wakes covered by an invoke already sent."""
        self.failures = 0
        self.left_to_ticks = 0
        """Wakes for runs due beyond the coming minute: nothing sent, a tick covers their time."""

    # the Wakeups protocol ----------------------------------------------------------------------------------
    def wake(self, pool: str | None, reason: str, due: datetime | None = None) -> None:
        """Make sure a pass over `pool` starts after now, or at `due` (a run created to fall due later): send an
        invoke, or count on one already sent."""
        try:
            now, rank = self.clock(), wake_rank(reason)
            if due is not None and due.timestamp() > now + CLOCK_SKEW:
                self._wake_later(pool, reason, due.timestamp(), now)
                return
            with self._lock:
                last = self._covered.get(pool)
                if last is not None and now < last[0] - CLOCK_SKEW and rank <= last[1]:
                    self.coalesced += 1
                    return
                if last is None:
                    not_before = now
                elif rank > last[1] and now < last[0]:
                    # More than the pending invoke will do (a cancel behind a freed slot's look): at once, and
                    # the pending one still covers what it covered.
                    not_before = now
                else:
                    # The last invoke's pass may have read the store already: another, one window after it.
                    not_before = max(now, last[0] + self.window)
                if last is None or not_before >= last[0]:
                    self._covered[pool] = (not_before, rank)
            self.send(pool, reason, not_before)
        except Exception:  # a wake-up must never fail the change it reports; the tick catches up
            log.exception("wake-up for pool %s (%s) not sent", pool, reason)

    def _wake_later(self, pool: str | None, reason: str, at: float, now: float) -> None:
        """A run of `pool` due at `at`, after now: a span from `at` on, unless a pending one covers it."""
        if at > now + self.lookahead:
            with self._lock:
                self.left_to_ticks += 1
            return
        with self._lock:
            # A span whose first pass has started may already be waiting past `at`: it covers nothing new.
            spans = [span for span in self._spans.get(pool, []) if span[0] > now + CLOCK_SKEW]
            self._spans[pool] = spans
            if any(start - CLOCK_SKEW <= at <= until for start, until in spans):
                self.coalesced += 1
                return
            until = min([now + self.lookahead, *(start for start, _ in spans if start > at)])
            spans.append((at, until))
        self.send(pool, reason, at, until=until)

    # sending -------------------------------------------------------------------------------------------------
    def send(self, pool: str | None, reason: str, not_before: float, *, until: float | None = None) -> None:
        """Queue one Event invoke of the dispatch function on the sender thread; returns at once.

        `until`: where the span of due times the invocation follows ends (a hand-off's: where the handing
        invocation's ends; a run due later's: see `wake`)."""
        payload: dict[str, Any] = {"source": WAKE_SOURCE, "pool": pool, "reason": reason, "not_before": not_before}
        if until is not None:
            payload["until"] = until
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wake")
            self.invokes += 1
            self._sending.append(self._executor.submit(self._invoke, payload))

    def _invoke(self, payload: dict[str, Any]) -> None:
        try:
            answer = self.client.invoke(
                FunctionName=self.function, InvocationType="Event", Payload=json.dumps(payload).encode()
            )
            if answer.get("StatusCode") != 202:
                raise RuntimeError(f"Lambda answered {answer.get('StatusCode')} to an Event invoke")
        except Exception as exc:  # botocore's errors included: logged in the provider's words, never raised
            with self._lock:
                self.failures += 1
                # Nothing covers the pool now: the next wake sends at once.
                if self._covered.get(payload["pool"], (None,))[0] == payload["not_before"]:
                    del self._covered[payload["pool"]]
                spans = self._spans.get(payload["pool"], [])
                spans[:] = [span for span in spans if span[0] != payload["not_before"]]
            log.warning(
                "wake-up of %s for pool %s not accepted (the next tick runs the pass): %s",
                self.function,
                payload["pool"],
                exc,
            )

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait until the invokes sent so far are accepted (or failed), at most `timeout` seconds."""
        with self._lock:
            pending, self._sending = self._sending, []
        if pending:
            wait_for(pending, timeout=timeout)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Short timeouts: an Event invoke is answered at once, and a slow one must not hold the caller.
            config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2, "mode": "standard"})
            self._client = boto3.client("lambda", config=config)
        return self._client

    def close(self) -> None:
        """Send what is queued, then stop the sender thread."""
        self.flush()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
