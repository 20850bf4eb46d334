"""The Store protocol: the narrow seam between the core and its backends.

Shaped by DynamoDB, the production store: every method is a key lookup, a query of one partition or index
in sort order with a limit, or a conditional (transactional) write. Nothing needs a scan, so the SQLite
store may not offer anything DynamoDB could not serve cheaply.

Concurrency slots live in *slot* records, one per pool, queue and deployment, each holding the limit and
the number of active runs. Admission writes the run and increments its slots in one conditional
transaction; leaving an active state decrements them in the same write that records the new state. Every
change to a slot's count also bumps its version and stamps when it happened, so the reconciler's recount
can be conditioned on nothing having changed since it read the slot (not merely on the count reading the
same again), and can leave alone a slot that changed too recently for an index to have caught up.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from ..errors import InvalidInput, StoreError
from ..models import PARAMETERS_APART_BYTES, Deployment, FlowRun, WorkPool, WorkQueue, validation_sentence
from ..states import StateType

log = logging.getLogger("pushpool.store")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_LIST_LIMIT = 200


@dataclass(frozen=True)
class Slot:
    """Active runs counted against a limit (None = unlimited)."""

    limit: int | None
    active: int
    version: int = 0
    """Bumped by every change to `active` (admission, release, repair); 0 before the first."""
    changed: float = 0.0
    """When `active` last changed (seconds since the epoch, the writer's clock); 0 before the first change."""

    @property
    def free(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.active)


class UnreadableRecord(StoreError):
    """A stored row today's model refuses (an older version wrote it, or someone edited it): one sentence
    naming the record and the field. `subject` names the record as a pass's problems do (`run <id>`)."""

    def __init__(self, subject: str, message: str) -> None:
        super().__init__(message)
        self.subject = subject


def _subject(kind: str, text: str) -> str:
    """`pool nightly`, `run 1b2c...`: the record's name or id, read leniently from the raw JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    ident = data.get("id" if kind == "run" else "name") if isinstance(data, dict) else None
    if kind == "queue" and isinstance(data, dict) and data.get("pool"):
        ident = f"{data['pool']}/{ident}"
    return f"{kind} {ident!s}" if isinstance(ident, str) else f"a {kind}"


def decode(model: type[M], text: str, kind: str) -> M:
    """A stored row as a model; UnreadableRecord naming the record and the field if it does not validate."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        subject = _subject(kind, text)
        raise UnreadableRecord(
            subject,
            f"stored {subject} cannot be read: {validation_sentence(exc, kind).rstrip('.')}; "
            f"fix or delete that record (it is skipped meanwhile).",
        ) from None


class UnreadableRows:
    """Mixed into a store: list reads skip rows that do not decode and keep why, for the next pass to report.

    One bad row (a description over today's bound left by an older version) must not stop a pass over every
    other pool and run; a pass drains `unreadable_records()` into its problems, naming each record.
    """

    def __init__(self) -> None:
        self._unreadable: dict[str, str] = {}
        self._unreadable_lock = threading.Lock()

    def _readable(self, rows: Iterable[R], build: Callable[[R], T]) -> list[T]:
        """`build` of each row, leaving out (and keeping why) the rows that raise UnreadableRecord."""
        built = []
        for row in rows:
            try:
                built.append(build(row))
            except UnreadableRecord as exc:
                log.warning("%s", exc)
                with self._unreadable_lock:
                    self._unreadable[exc.subject] = str(exc)
        return built

    def unreadable_records(self) -> dict[str, str]:
        """The rows list reads skipped since the last call (record -> why), forgotten once returned."""
        with self._unreadable_lock:
            found, self._unreadable = self._unreadable, {}
        return found


def pool_slot(pool: str) -> str:
    return f"pool:{pool}"


def queue_slot(pool: str, queue: str) -> str:
    # Pool names cannot contain "/", so this key is unambiguous.
    return f"queue:{pool}/{queue}"


def deployment_slot(deployment_id: str) -> str:
    return f"deployment:{deployment_id}"


def run_slots(run: FlowRun) -> tuple[str, str, str]:
    """The slots an active run holds: its pool's, its queue's and its deployment's."""
    return pool_slot(run.pool), queue_slot(run.pool, run.queue), deployment_slot(run.deployment_id)


TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def timestamp(value: datetime) -> str:
    """A UTC timestamp whose text sorts in time order (sort keys in both stores)."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def from_timestamp(text: str) -> datetime:
    """The aware UTC datetime a `timestamp` text stands for."""
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


_INVERT = str.maketrans("0123456789", "9876543210")


def newest_first(ts: str, run_id: str) -> str:
    """A sort key that orders runs newest scheduled time first, ties by id ascending, in an ascending sort.

    `ts` is a `timestamp()`: fixed-width, so complementing its digits reverses its order (as SQLite's
    `ORDER BY scheduled_time DESC, id`). DynamoDB's run listings are sorted by it.
    """
    return f"{ts.translate(_INVERT)}#{run_id}"


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
_BAD_CURSOR = "cursor is not one pushpool gave: pass the next cursor of an earlier page, or none for the first page."


@dataclass(frozen=True)
class RunPosition:
    """Where a run sits in a newest-first listing: its scheduled time (`timestamp()` text) and its id.

    A page's `next` is the position of the last run it covered; the page after it starts just past there.
    """

    ts: str
    id: str

    @classmethod
    def of(cls, run: FlowRun) -> RunPosition:
        return cls(timestamp(run.scheduled_time), run.id)

    @classmethod
    def from_key(cls, key: str) -> RunPosition:
        """The position a `newest_first` key encodes (what DynamoDB's LastEvaluatedKey holds)."""
        inverted, _, run_id = key.partition("#")
        return cls(inverted.translate(_INVERT), run_id)

    @property
    def key(self) -> str:
        """Sorts positions newest first (ascending text order)."""
        return newest_first(self.ts, self.id)

    def token(self) -> str:
        """The opaque cursor a client passes back (URL-safe, no padding)."""
        return base64.urlsafe_b64encode(json.dumps([self.ts, self.id]).encode()).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> RunPosition:
        """A cursor back into a position; InvalidInput (one sentence) for anything `token()` did not make."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            ts, run_id = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidInput(_BAD_CURSOR) from None
        if not (isinstance(ts, str) and _TIMESTAMP.match(ts) and isinstance(run_id, str) and 0 < len(run_id) <= 200):
            raise InvalidInput(_BAD_CURSOR)
        return cls(ts, run_id)


@dataclass(frozen=True)
class RunPage:
    """One page of a run listing, newest first; `next` is where the page after it starts (None: no more)."""

    runs: list[FlowRun]
    next: RunPosition | None


COUNT_CAP = 1000
"""Where a dashboard count stops: it shows "1,000+" rather than read a whole backlog (docs/decisions.md)."""


@dataclass(frozen=True)
class Count:
    """A count that stops at a cap: `value` runs, or at least that many when `capped`."""

    value: int
    capped: bool = False

    def __str__(self) -> str:
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"

    @staticmethod
    def total(counts: Iterable[Count]) -> Count:
        """The sum of several counts, capped if any of them was."""
        counted = list(counts)
        return Count(sum(c.value for c in counted), any(c.capped for c in counted))


def split_parameters(run: FlowRun, *, new: bool = False) -> tuple[FlowRun, bytes | None]:
    """The run as its record holds it, and the JSON of parameters to keep apart from it (None: none to write).

    Parameters over PARAMETERS_APART_BYTES live outside the run's record, written once, when the run is created
    (`new`; a run's parameters never change): the record then says only how large they are (`parameters_size`),
    so the writes of every state change and the reads of every pass, listing and page carry none of them.
    Later writes go by `parameters_size` alone, so a run an older version stored with its parameters inline
    keeps them there.
    """
    if run.parameters is None or (run.parameters_size is None and not new):
        return run, None
    text = to_json(run.parameters)
    if new and len(text) <= PARAMETERS_APART_BYTES:
        return run.model_copy(update={"parameters_size": None}), None
    return run.model_copy(update={"parameters": None, "parameters_size": len(text)}), text


def parameters_of(store: Store, run: FlowRun) -> dict[str, Any]:
    """A run's parameters, read from where the store keeps them when its record does not hold them."""
    if run.parameters is not None:
        return run.parameters
    value = json.loads(store.run_parameters(run))
    if not isinstance(value, dict):
        raise StoreError(f"the stored parameters of flow run {run.id} are not a JSON object; delete the run")
    return value


def with_parameters(store: Store, run: FlowRun) -> FlowRun:
    """The run with its parameters read in (what `flow-run inspect`, the API's run and the run page show)."""
    return run if run.parameters is not None else run.model_copy(update={"parameters": parameters_of(store, run)})


@dataclass(frozen=True)
class Admission:
    """A proposed SCHEDULED -> PENDING move: written only if `before` is unchanged and every slot is free."""

    before: FlowRun
    after: FlowRun


class Store(Protocol):
    """Persistence for pools, queues, deployments, runs and slots. Implementations are thread-safe."""

    url: str

    def unreadable_records(self) -> dict[str, str]:
        """Rows list reads skipped because they do not decode (record -> why), since the last call."""
        ...

    # settings --------------------------------------------------------------------------------------------
    def get_setting(self, key: str) -> str | None: ...

    def put_setting(self, key: str, value: str) -> None: ...

    def setting_default(self, key: str, value: str) -> str:
        """Store `value` under `key` unless the key exists (a conditional put); return what is stored."""

    # pools -----------------------------------------------------------------------------------------------
    def create_pool(self, pool: WorkPool, default_queue: WorkQueue) -> None:
        """Write a new pool, its default queue and their slots at once; Conflict if the name is taken."""

    def update_pool(self, pool: WorkPool) -> None:
        """Replace an existing pool's fields and its slot's limit; NotFound if it is gone."""

    def get_pool(self, name: str) -> WorkPool | None: ...

    def list_pools(self) -> list[WorkPool]: ...

    def delete_pool(self, name: str) -> None:
        """Remove a pool with its queues and slots (callers check it has no deployments or active runs)."""

    def touch(self, pool: str, queues: Sequence[str], now: datetime) -> None:
        """Record that a dispatcher serviced the pool and these queues (their READY status)."""

    # queues ----------------------------------------------------------------------------------------------
    def get_queue(self, pool: str, name: str) -> WorkQueue | None: ...

    def list_queues(self, pool: str) -> list[WorkQueue]:
        """The pool's queues in priority order (1 first)."""

    def save_queues(self, pool: str, queues: Sequence[WorkQueue], *, new: str | None = None) -> None:
        """Write several queues of one pool in one transaction (a priority insert shifts others).

        `new` names a queue in `queues` that must not exist yet (Conflict otherwise); its slot is created.
        """

    def delete_queue(self, pool: str, name: str) -> None: ...

    # deployments -----------------------------------------------------------------------------------------
    def create_deployment(self, deployment: Deployment) -> None:
        """Conflict if the name is taken."""

    def update_deployment(self, deployment: Deployment) -> None: ...

    def get_deployment(self, name: str) -> Deployment | None: ...

    def list_deployments(self, pool: str | None = None) -> list[Deployment]: ...

    def scheduled_deployments(self) -> list[Deployment]:
        """Deployments with at least one schedule and schedules not paused (a sparse index)."""

    def delete_deployment(self, name: str) -> None: ...

    # runs ------------------------------------------------------------------------------------------------
    def create_runs(self, runs: Sequence[FlowRun]) -> list[str]:
        """Write runs whose id is new; an existing id is left alone. Returns the ids written."""

    def get_run(self, run_id: str) -> FlowRun | None:
        """The run as its record holds it: parameters kept apart are not read (`parameters` None)."""
        ...

    def run_parameters(self, run: FlowRun) -> bytes:
        """A run's parameters as the compact JSON the store holds (`split_parameters`), read from where the store
        keeps them apart when the run's record does not hold them. NotFound once they are gone."""
        ...

    def list_runs(
        self,
        pool: str,
        *,
        queue: str | None = None,
        state: StateType | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[FlowRun]:
        """A pool's runs, newest scheduled time first."""

    def run_page(
        self,
        *,
        pool: str | None = None,
        deployment: str | None = None,
        queue: str | None = None,
        state: StateType | None = None,
        after: RunPosition | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> RunPage:
        """One page of a pool's or a deployment's runs (at least one of the two), newest scheduled time first,
        ties by id, filtered by queue and state, starting just past `after` (an earlier page's `next`).

        An index query in that order, never a scan of the history. A page holds at most `limit` runs and may
        hold fewer, even none, while `next` is set: a store may bound what one page examines (DynamoDB's
        filtered pages). `next` is None once nothing is left.
        """
        ...

    def count_scheduled(self, pool: str, queue: str, *, until: datetime | None = None, cap: int = COUNT_CAP) -> Count:
        """SCHEDULED runs of a queue (those with scheduled_time <= `until`, when given), counted over the due
        index up to `cap`: past it, `Count(cap, capped=True)`."""
        ...

    def due_runs(self, pool: str, queue: str, until: datetime, limit: int) -> list[FlowRun]:
        """SCHEDULED runs of a queue with scheduled_time <= until, oldest first, ties by id."""

    def next_scheduled_time(self, pool: str, queue: str, after: datetime) -> datetime | None:
        """The earliest scheduled_time later than `after` among a queue's SCHEDULED runs; None if none.

        One indexed read of one item (the due index): `serve` sleeps until this time, not a whole interval.
        """

    def active_runs(self, pool: str, limit: int = DEFAULT_LIST_LIMIT) -> list[FlowRun]:
        """Runs of a pool that hold a slot (PENDING, RUNNING, CANCELLING), each as it is now.

        An index may find a run admitted a moment ago late, but never returns a run as active after it left.
        """

    def runs_of_deployment(self, deployment: str, *, limit: int = DEFAULT_LIST_LIMIT) -> list[FlowRun]:
        """A deployment's runs, newest scheduled time first."""

    def admit(self, admissions: Sequence[Admission]) -> list[FlowRun]:
        """Admit each run atomically with its pool, queue and deployment slots; returns those admitted.

        A run whose version moved on or whose any slot is full is skipped: losing a race is normal.
        """

    def save_run(self, before: FlowRun, after: FlowRun) -> bool:
        """Write `after` if the stored run is still `before`; release its slots if it left an active state.

        Returns False (and writes nothing) when another writer got there first.
        """

    def save_runs(self, changes: Sequence[tuple[FlowRun, FlowRun]]) -> list[bool]:
        """`save_run` for each `(before, after)`, in one write where the store can (SQLite: one transaction).

        Each change stays conditional on its own run alone: one that lost its race is False and the others are
        still written. The answers are in the order of `changes`.
        """

    def delete_run(self, run: FlowRun) -> bool:
        """Delete a run that holds no slot, with its parameters, if the stored run is still at `run`'s version.

        Returns False (and deletes nothing) when it is gone or another writer got there first.
        """
        ...

    def slots(self, keys: Sequence[str]) -> dict[str, Slot]:
        """Current slot records by key; a missing key is absent from the answer."""

    def repair_slot(self, key: str, seen: Slot, active: int) -> bool:
        """Set a slot's active count to `active` if it is still at `seen`'s version (the reconciler's recount).

        A count that went away and came back (a release, then an admission) has a new version: the recount,
        made from runs read in between, is refused.
        """

    def close(self) -> None: ...
