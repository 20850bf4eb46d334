"""The embedded store: one SQLite file, the same semantics as DynamoDB with SQL.

Writes run in `BEGIN IMMEDIATE` transactions, so concurrent dispatchers, threads or processes, serialise on
the database's write lock and every conditional check sees the latest committed state.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic_core import to_json

from ..errors import Conflict, NotFound, StoreError
from ..models import Deployment, FlowRun, WorkPool, WorkQueue
from ..private_files import FILE_MODE, narrow, private_dir, private_file, pushpool_home
from ..states import ACTIVE, StateType
from .base import (
    COUNT_CAP,
    DEFAULT_LIST_LIMIT,
    Admission,
    Count,
    RunPage,
    RunPosition,
    Slot,
    UnreadableRows,
    decode,
    deployment_slot,
    from_timestamp,
    pool_slot,
    queue_slot,
    run_slots,
    split_parameters,
    timestamp,
)

_ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY, data TEXT NOT NULL, last_polled TEXT
);
CREATE TABLE IF NOT EXISTS queues (
    pool TEXT NOT NULL, name TEXT NOT NULL, priority INTEGER NOT NULL, data TEXT NOT NULL, last_polled TEXT,
    PRIMARY KEY (pool, name)
);
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY, pool TEXT NOT NULL, scheduled INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_by_pool ON deployments (pool, name);
CREATE INDEX IF NOT EXISTS deployments_scheduled ON deployments (name) WHERE scheduled = 1;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, pool TEXT NOT NULL, queue TEXT NOT NULL, deployment TEXT NOT NULL,
    state TEXT NOT NULL, scheduled_time TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_due ON runs (pool, queue, scheduled_time, id) WHERE state = 'SCHEDULED';
CREATE INDEX IF NOT EXISTS runs_active ON runs (pool, id) WHERE state IN ({_ACTIVE_SQL});
-- Run listings, newest first, ties by id: one index per filter a page can have (pool or deployment, then
-- queue and state), so every page is a range of one index read in order (run_page, EXPLAIN-checked in tests).
CREATE INDEX IF NOT EXISTS runs_page_pool ON runs (pool, scheduled_time DESC, id);
CREATE INDEX IF NOT EXISTS runs_page_pool_state ON runs (pool, state, scheduled_time DESC, id);
CREATE INDEX IF NOT EXISTS runs_page_queue ON runs (pool, queue, scheduled_time DESC, id);
CREATE INDEX IF NOT EXISTS runs_page_queue_state ON runs (pool, queue, state, scheduled_time DESC, id);
CREATE INDEX IF NOT EXISTS runs_page_deployment ON runs (deployment, scheduled_time DESC, id);
CREATE INDEX IF NOT EXISTS runs_page_deployment_state ON runs (deployment, state, scheduled_time DESC, id);
-- Superseded by the runs_page_* indexes (older store files have them).
DROP INDEX IF EXISTS runs_by_pool;
DROP INDEX IF EXISTS runs_by_deployment;
-- Parameters over PARAMETERS_APART_BYTES, kept apart from their run's row (base.split_parameters), so listings,
-- pages and passes read rows of a few KB whatever a run's parameters weigh.
CREATE TABLE IF NOT EXISTS run_parameters (run_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    key TEXT PRIMARY KEY, lim INTEGER, active INTEGER NOT NULL DEFAULT 0,
    ver INTEGER NOT NULL DEFAULT 0, changed REAL NOT NULL DEFAULT 0
);
"""
SLOT_COLUMNS_ADDED = {"ver": "INTEGER NOT NULL DEFAULT 0", "changed": "REAL NOT NULL DEFAULT 0"}
"""Columns later versions added to `slots`: a store file made before them gets them when it is opened."""


def _private_store_file(path: Path) -> None:
    """The store file 0600 in a 0700 directory: it holds the master secret every run token derives from.

    A directory pushpool creates is 0700; an existing one is narrowed only when it is `~/.pushpool`, which
    pushpool owns (a directory the user chose may hold other things and is theirs to set).
    """
    parent = path.absolute().parent
    private_dir(parent, tighten=parent == pushpool_home())
    private_file(path)


def _store_error(path: str, exc: BaseException, *, opening: bool = False) -> StoreError:
    """An SQLite or OS error as one sentence saying what is wrong with the store and what to do.

    Every one is a StoreError (exit 5, HTTP 503 with Retry-After): a full disk or a lock passes, and the
    others need the operator, not a retry storm of 500s.
    """
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    where = f"the SQLite store at {path!r}"
    if "readonly" in lowered or "read-only" in lowered:
        return StoreError(
            f"{where} is read-only ({text}); give the user running pushpool write access to the file and its "
            "directory, or point --store or PUSHPOOL_STORE at a writable one."
        )
    if "full" in lowered or "disk i/o" in lowered or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(
            f"{where} cannot be written ({text}): its disk is full or failing; free space there and retry."
        )
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return StoreError(
            f"{where} is damaged ({text}); restore it from a backup, or point --store or PUSHPOOL_STORE at "
            "another file."
        )
    if "locked" in lowered or "busy" in lowered:
        return StoreError(f"{where} is busy ({text}); retry in a moment.")
    if opening:
        return StoreError(f"cannot open {where} ({text}); check the path in --store or PUSHPOOL_STORE.")
    return StoreError(f"{where} failed ({text}); retry, and see the dispatcher's log if it persists.")


def _run(row: tuple[object, ...]) -> FlowRun:
    return decode(FlowRun, str(row[0]), "run")


class SQLiteStore(UnreadableRows):
    """The embedded default store (`sqlite:///PATH`)."""

    def __init__(self, path: str, *, url: str | None = None) -> None:
        super().__init__()
        self._path = path
        self.url = url or f"sqlite:///{path}"
        self._lock = threading.RLock()
        try:
            if path != ":memory:":
                _private_store_file(Path(path))
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            if path != ":memory:":
                # SQLite gives these the database file's mode; ones an older version left are narrowed.
                for suffix in ("-wal", "-shm", "-journal"):
                    narrow(Path(path + suffix), FILE_MODE)
            self._db.execute("PRAGMA busy_timeout=60000")
            self._db.executescript(SCHEMA)
            self._add_slot_columns()
        except (sqlite3.Error, OSError) as exc:
            raise _store_error(path, exc, opening=True) from None

    def _add_slot_columns(self) -> None:
        have = {str(row[1]) for row in self._db.execute("PRAGMA table_info(slots)")}
        for name, kind in SLOT_COLUMNS_ADDED.items():
            if name not in have:
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it meanwhile
                    self._db.execute(f"ALTER TABLE slots ADD COLUMN {name} {kind}")

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.removeprefix("sqlite:///")
        if not path:
            raise StoreError("the SQLite store URL needs a path: sqlite:///PATH")
        return cls(str(Path(path).expanduser()) if path != ":memory:" else path, url=url)

    # plumbing -------------------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _store_error(self._path, exc) from None
            try:
                yield self._db
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._db.execute("ROLLBACK")
                raise _store_error(self._path, exc) from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise _store_error(self._path, exc) from None

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise _store_error(self._path, exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # settings -------------------------------------------------------------------------------------------
    def get_setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put_setting(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def setting_default(self, key: str, value: str) -> str:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", (key, value))
            return str(db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()[0])

    # pools ----------------------------------------------------------------------------------------------
    @staticmethod
    def _pool(row: tuple[object, ...]) -> WorkPool:
        pool = decode(WorkPool, str(row[0]), "pool")
        if row[1] is not None:
            pool = pool.model_copy(update={"last_polled": datetime.fromisoformat(str(row[1]))})
        return pool

    @staticmethod
    def _dump(model: WorkPool | WorkQueue | Deployment | FlowRun) -> str:
        return model.model_dump_json(exclude={"status", "last_polled"})

    def create_pool(self, pool: WorkPool, default_queue: WorkQueue) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM pools WHERE name = ?", (pool.name,)).fetchone():
                raise Conflict(f"work pool {pool.name!r} already exists; use --overwrite or `work-pool update`")
            db.execute("INSERT INTO pools (name, data) VALUES (?, ?)", (pool.name, self._dump(pool)))
            self._insert_queue(db, default_queue)
            self._upsert_slot(db, pool_slot(pool.name), pool.concurrency_limit)

    def update_pool(self, pool: WorkPool) -> None:
        with self._write() as db:
            cur = db.execute("UPDATE pools SET data = ? WHERE name = ?", (self._dump(pool), pool.name))
            if cur.rowcount == 0:
                raise NotFound(f"work pool {pool.name!r} does not exist; see `pushpool work-pool ls`")
            self._upsert_slot(db, pool_slot(pool.name), pool.concurrency_limit)

    def get_pool(self, name: str) -> WorkPool | None:
        rows = self._read("SELECT data, last_polled FROM pools WHERE name = ?", (name,))
        return self._pool(rows[0]) if rows else None

    def list_pools(self) -> list[WorkPool]:
        return self._readable(self._read("SELECT data, last_polled FROM pools ORDER BY name"), self._pool)

    def delete_pool(self, name: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM pools WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"work pool {name!r} does not exist; see `pushpool work-pool ls`")
            queues = [r[0] for r in db.execute("SELECT name FROM queues WHERE pool = ?", (name,))]
            db.execute("DELETE FROM queues WHERE pool = ?", (name,))
            keys = [pool_slot(name), *(queue_slot(name, q) for q in queues)]
            db.executemany("DELETE FROM slots WHERE key = ?", [(k,) for k in keys])

    def touch(self, pool: str, queues: Sequence[str], now: datetime) -> None:
        stamp = now.isoformat()
        with self._write() as db:
            db.execute("UPDATE pools SET last_polled = ? WHERE name = ?", (stamp, pool))
            db.executemany(
                "UPDATE queues SET last_polled = ? WHERE pool = ? AND name = ?", [(stamp, pool, q) for q in queues]
            )

    # queues ---------------------------------------------------------------------------------------------
    @staticmethod
    def _queue(row: tuple[object, ...]) -> WorkQueue:
        queue = decode(WorkQueue, str(row[0]), "queue")
        if row[1] is not None:
            queue = queue.model_copy(update={"last_polled": datetime.fromisoformat(str(row[1]))})
        return queue

    def _insert_queue(self, db: sqlite3.Connection, queue: WorkQueue) -> None:
        db.execute(
            "INSERT INTO queues (pool, name, priority, data) VALUES (?, ?, ?, ?)",
            (queue.pool, queue.name, queue.priority, self._dump(queue)),
        )
        self._upsert_slot(db, queue_slot(queue.pool, queue.name), queue.concurrency_limit)

    def get_queue(self, pool: str, name: str) -> WorkQueue | None:
        rows = self._read("SELECT data, last_polled FROM queues WHERE pool = ? AND name = ?", (pool, name))
        return self._queue(rows[0]) if rows else None

    def list_queues(self, pool: str) -> list[WorkQueue]:
        rows = self._read("SELECT data, last_polled FROM queues WHERE pool = ? ORDER BY priority", (pool,))
        return self._readable(rows, self._queue)

    def save_queues(self, pool: str, queues: Sequence[WorkQueue], *, new: str | None = None) -> None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM pools WHERE name = ?", (pool,)).fetchone():
                raise NotFound(f"work pool {pool!r} does not exist; see `pushpool work-pool ls`")
            for queue in queues:
                if queue.name == new:
                    if db.execute("SELECT 1 FROM queues WHERE pool = ? AND name = ?", (pool, new)).fetchone():
                        raise Conflict(f"work queue {new!r} already exists in pool {pool!r}")
                    self._insert_queue(db, queue)
                    continue
                cur = db.execute(
                    "UPDATE queues SET priority = ?, data = ? WHERE pool = ? AND name = ?",
                    (queue.priority, self._dump(queue), pool, queue.name),
                )
                if cur.rowcount == 0:
                    raise NotFound(f"work queue {queue.name!r} does not exist in pool {pool!r}")
                self._upsert_slot(db, queue_slot(pool, queue.name), queue.concurrency_limit)

    def delete_queue(self, pool: str, name: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM queues WHERE pool = ? AND name = ?", (pool, name)).rowcount == 0:
                raise NotFound(f"work queue {name!r} does not exist in pool {pool!r}")
            db.execute("DELETE FROM slots WHERE key = ?", (queue_slot(pool, name),))

    # deployments ----------------------------------------------------------------------------------------
    @staticmethod
    def _scheduled(deployment: Deployment) -> int:
        return int(bool(deployment.schedules) and not deployment.schedule_paused)

    def create_deployment(self, deployment: Deployment) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM deployments WHERE name = ?", (deployment.name,)).fetchone():
                raise Conflict(f"deployment {deployment.name!r} already exists; pick another name")
            db.execute(
                "INSERT INTO deployments (name, pool, scheduled, data) VALUES (?, ?, ?, ?)",
                (deployment.name, deployment.pool, self._scheduled(deployment), self._dump(deployment)),
            )
            self._upsert_slot(db, deployment_slot(deployment.id), deployment.concurrency_limit)

    def update_deployment(self, deployment: Deployment) -> None:
        with self._write() as db:
            cur = db.execute(
                "UPDATE deployments SET pool = ?, scheduled = ?, data = ? WHERE name = ?",
                (deployment.pool, self._scheduled(deployment), self._dump(deployment), deployment.name),
            )
            if cur.rowcount == 0:
                raise NotFound(f"deployment {deployment.name!r} does not exist; see `pushpool deployment ls`")
            self._upsert_slot(db, deployment_slot(deployment.id), deployment.concurrency_limit)

    def get_deployment(self, name: str) -> Deployment | None:
        rows = self._read("SELECT data FROM deployments WHERE name = ?", (name,))
        return self._deployment(rows[0]) if rows else None

    def list_deployments(self, pool: str | None = None) -> list[Deployment]:
        if pool is None:
            rows = self._read("SELECT data FROM deployments ORDER BY name")
        else:
            rows = self._read("SELECT data FROM deployments WHERE pool = ? ORDER BY name", (pool,))
        return self._readable(rows, self._deployment)

    @staticmethod
    def _deployment(row: tuple[object, ...]) -> Deployment:
        return decode(Deployment, str(row[0]), "deployment")

    def scheduled_deployments(self) -> list[Deployment]:
        rows = self._read("SELECT data FROM deployments WHERE scheduled = 1 ORDER BY name")
        return self._readable(rows, self._deployment)

    def delete_deployment(self, name: str) -> None:
        with self._write() as db:
            row = db.execute("SELECT data FROM deployments WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"deployment {name!r} does not exist; see `pushpool deployment ls`")
            # Read leniently: deleting is how an unreadable deployment (an older version's row) is got rid of.
            deployment_id = json.loads(row[0]).get("id")
            db.execute("DELETE FROM deployments WHERE name = ?", (name,))
            db.execute("DELETE FROM slots WHERE key = ?", (deployment_slot(str(deployment_id)),))

    # runs -----------------------------------------------------------------------------------------------
    def _run_row(self, run: FlowRun) -> tuple[object, ...]:
        run, _ = split_parameters(run)
        return (
            run.id,
            run.pool,
            run.queue,
            run.deployment,
            run.state.value,
            timestamp(run.scheduled_time),
            run.version,
            run.model_dump_json(),
        )

    def create_runs(self, runs: Sequence[FlowRun]) -> list[str]:
        created: list[str] = []
        with self._write() as db:
            for run in runs:
                run, apart = split_parameters(run, new=True)
                cur = db.execute(
                    "INSERT OR IGNORE INTO runs (id, pool, queue, deployment, state, scheduled_time, version, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    self._run_row(run),
                )
                if cur.rowcount:
                    created.append(run.id)
                    if apart is not None:
                        db.execute("INSERT OR REPLACE INTO run_parameters VALUES (?, ?)", (run.id, apart))
        return created

    def _runs(self, sql: str, args: Sequence[object]) -> list[FlowRun]:
        """Runs of a query ending in `LIMIT ?`. Rows that do not decode are left out and the limit widened by
        as many, so an unreadable run never takes a readable one's place (a pool limited to 1 reads one due
        run at a time)."""
        wanted = limit = int(str(args[-1]))
        while True:
            rows = self._read(sql, [*args[:-1], limit])
            runs = self._readable(rows, _run)
            if len(runs) >= wanted or len(rows) < limit:
                return runs[:wanted]
            limit += wanted - len(runs)

    def get_run(self, run_id: str) -> FlowRun | None:
        rows = self._read("SELECT data FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def run_parameters(self, run: FlowRun) -> bytes:
        if run.parameters is not None:
            return to_json(run.parameters)
        rows = self._read("SELECT data FROM run_parameters WHERE run_id = ?", (run.id,))
        if not rows:
            raise NotFound(f"the parameters of flow run {run.id} are gone from the store")
        data = rows[0][0]
        return data if isinstance(data, bytes) else str(data).encode()

    def list_runs(
        self,
        pool: str,
        *,
        queue: str | None = None,
        state: StateType | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[FlowRun]:
        sql, args = "SELECT data FROM runs WHERE pool = ?", [pool]
        if queue is not None:
            sql, args = sql + " AND queue = ?", [*args, queue]
        if state is not None:
            sql, args = sql + " AND state = ?", [*args, state.value]
        return self._runs(sql + " ORDER BY scheduled_time DESC, id LIMIT ?", [*args, limit])

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
        if pool is None and deployment is None:
            raise ValueError("a run page is of a pool or of a deployment")
        filters = [("deployment", deployment), ("pool", pool), ("queue", queue), ("state", state and state.value)]
        where = " AND ".join(f"{column} = ?" for column, value in filters if value is not None)
        args: list[object] = [value for _, value in filters if value is not None]
        select = f"SELECT data FROM runs WHERE {where}"
        runs: list[FlowRun] = []
        if after is None:
            older = (f"{select} ORDER BY scheduled_time DESC, id LIMIT ?", args)
        else:
            # Two ranges of the same index rather than one OR: the rest of `after`'s time, then what is older.
            runs = self._runs(
                f"{select} AND scheduled_time = ? AND id > ? ORDER BY id LIMIT ?",
                [*args, after.ts, after.id, limit + 1],
            )
            older = (f"{select} AND scheduled_time < ? ORDER BY scheduled_time DESC, id LIMIT ?", [*args, after.ts])
        if len(runs) <= limit:
            runs += self._runs(older[0], [*older[1], limit + 1 - len(runs)])
        page = runs[:limit]
        return RunPage(page, RunPosition.of(page[-1]) if len(runs) > limit and page else None)

    def count_scheduled(self, pool: str, queue: str, *, until: datetime | None = None, cap: int = COUNT_CAP) -> Count:
        sql = "SELECT 1 FROM runs WHERE pool = ? AND queue = ? AND state = 'SCHEDULED'"
        args: list[object] = [pool, queue]
        if until is not None:
            sql, args = sql + " AND scheduled_time <= ?", [*args, timestamp(until)]
        # Counted inside the due index, and only up to one past the cap.
        [(found,)] = self._read(f"SELECT COUNT(*) FROM ({sql} LIMIT ?)", [*args, cap + 1])
        counted = int(str(found))
        return Count(cap, True) if counted > cap else Count(counted)

    def due_runs(self, pool: str, queue: str, until: datetime, limit: int) -> list[FlowRun]:
        return self._runs(
            "SELECT data FROM runs WHERE pool = ? AND queue = ? AND state = 'SCHEDULED' AND scheduled_time <= ?"
            " ORDER BY scheduled_time, id LIMIT ?",
            (pool, queue, timestamp(until), limit),
        )

    def next_scheduled_time(self, pool: str, queue: str, after: datetime) -> datetime | None:
        # The runs_due index: (pool, queue) then scheduled_time in order, over SCHEDULED rows only.
        rows = self._read(
            "SELECT scheduled_time FROM runs WHERE pool = ? AND queue = ? AND state = 'SCHEDULED'"
            " AND scheduled_time > ? ORDER BY scheduled_time LIMIT 1",
            (pool, queue, timestamp(after)),
        )
        return from_timestamp(str(rows[0][0])) if rows else None

    def active_runs(self, pool: str, limit: int = DEFAULT_LIST_LIMIT) -> list[FlowRun]:
        return self._runs(
            f"SELECT data FROM runs WHERE pool = ? AND state IN ({_ACTIVE_SQL}) ORDER BY id LIMIT ?", (pool, limit)
        )

    def runs_of_deployment(self, deployment: str, *, limit: int = DEFAULT_LIST_LIMIT) -> list[FlowRun]:
        return self._runs(
            "SELECT data FROM runs WHERE deployment = ? ORDER BY scheduled_time DESC, id LIMIT ?",
            (deployment, limit),
        )

    def _update_run(self, db: sqlite3.Connection, before: FlowRun, after: FlowRun) -> bool:
        cur = db.execute(
            "UPDATE runs SET queue = ?, state = ?, scheduled_time = ?, version = ?, data = ?"
            " WHERE id = ? AND version = ?",
            (
                after.queue,
                after.state.value,
                timestamp(after.scheduled_time),
                before.version + 1,
                split_parameters(after)[0].model_copy(update={"version": before.version + 1}).model_dump_json(),
                before.id,
                before.version,
            ),
        )
        return cur.rowcount == 1

    def admit(self, admissions: Sequence[Admission]) -> list[FlowRun]:
        admitted: list[FlowRun] = []
        with self._write() as db:
            for adm in admissions:
                if adm.before.state is not StateType.SCHEDULED or adm.after.state not in ACTIVE:
                    raise ValueError("admission moves a SCHEDULED run to an active state")
                keys = run_slots(adm.before)
                rows = db.execute(
                    f"SELECT key, lim, active FROM slots WHERE key IN ({', '.join('?' * len(keys))})", keys
                ).fetchall()
                if len(rows) != len(keys) or any(lim is not None and active >= lim for _, lim, active in rows):
                    continue
                if not self._update_run(db, adm.before, adm.after):
                    continue
                db.executemany(
                    "UPDATE slots SET active = active + 1, ver = ver + 1, changed = ? WHERE key = ?",
                    [(time.time(), k) for k in keys],
                )
                admitted.append(adm.after.model_copy(update={"version": adm.before.version + 1}))
        return admitted

    def save_run(self, before: FlowRun, after: FlowRun) -> bool:
        return self.save_runs([(before, after)])[0]

    def save_runs(self, changes: Sequence[tuple[FlowRun, FlowRun]]) -> list[bool]:
        if any(before.state not in ACTIVE and after.state in ACTIVE for before, after in changes):
            raise ValueError("a run enters an active state only through admit()")
        if not changes:
            return []
        with self._write() as db:
            return [self._save_run(db, before, after) for before, after in changes]

    def _save_run(self, db: sqlite3.Connection, before: FlowRun, after: FlowRun) -> bool:
        if not self._update_run(db, before, after):
            return False
        if before.state in ACTIVE and after.state not in ACTIVE:
            db.executemany(
                "UPDATE slots SET active = MAX(active - 1, 0), ver = ver + 1, changed = ? WHERE key = ?",
                [(time.time(), k) for k in run_slots(before)],
            )
        return True

    def delete_run(self, run: FlowRun) -> bool:
        if run.state in ACTIVE:
            raise ValueError("an active run holds slots; it is never deleted")
        with self._write() as db:
            cur = db.execute("DELETE FROM runs WHERE id = ? AND version = ?", (run.id, run.version))
            if cur.rowcount != 1:
                return False
            db.execute("DELETE FROM run_parameters WHERE run_id = ?", (run.id,))
            return True

    # slots ----------------------------------------------------------------------------------------------
    def _upsert_slot(self, db: sqlite3.Connection, key: str, limit: int | None) -> None:
        db.execute(
            "INSERT INTO slots (key, lim, active) VALUES (?, ?, 0) ON CONFLICT(key) DO UPDATE SET lim = excluded.lim",
            (key, limit),
        )

    def repair_slot(self, key: str, seen: Slot, active: int) -> bool:
        with self._write() as db:
            cur = db.execute(
                "UPDATE slots SET active = ?, ver = ver + 1, changed = ? WHERE key = ? AND ver = ?",
                (active, time.time(), key, seen.version),
            )
            return cur.rowcount == 1

    def slots(self, keys: Sequence[str]) -> dict[str, Slot]:
        if not keys:
            return {}
        rows = self._read(
            f"SELECT key, lim, active, ver, changed FROM slots WHERE key IN ({', '.join('?' * len(keys))})", keys
        )
        return {
            str(key): Slot(None if lim is None else int(str(lim)), int(str(active)), int(str(ver)), float(str(changed)))
            for key, lim, active, ver, changed in rows
        }
