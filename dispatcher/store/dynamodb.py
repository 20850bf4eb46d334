"""The production store: one DynamoDB table (`dynamodb://TABLE?region=R[&endpoint_url=U]`).

Every method is a key lookup, a query of one partition or index in sort order with a limit, or a conditional
(transactional) write; nothing scans. The table's layout is `dynamodb_schema.TABLE`; docs/dynamodb.md gives
the access pattern of each method and the arithmetic of its limits.

Indexes are eventually consistent: they give candidates. The truth is in the conditions of the writes:
admission puts each run conditioned on its version and state SCHEDULED and adds N to each slot it takes
under `lim = :lim AND active <= :lim - N`, all in one TransactWriteItems; a run that moved on or a slot that
filled is dropped and the rest retried, so no limit is ever exceeded, whoever else is admitting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlparse

from pydantic_core import to_json

from ..errors import ConfigError, Conflict, NotFound, PushpoolError, StoreError
from ..models import Deployment, FlowRun, WorkPool, WorkQueue
from ..states import ACTIVE, TERMINAL, StateType
from . import dynamodb_schema as schema
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
    newest_first,
    pool_slot,
    queue_slot,
    run_slots,
    split_parameters,
    timestamp,
)

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
except ImportError:  # pragma: no cover - the aws extra is part of dev
    raise ConfigError("the DynamoDB store needs boto3: install `pushpool[aws]`") from None

log = logging.getLogger("pushpool.store.dynamodb")

Item = dict[str, dict[str, Any]]

RETENTION_ENV = "PUSHPOOL_RUN_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30.0

MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 3_500_000
"""DynamoDB allows 4 MB per transaction; the margin covers attribute names and request framing."""
MAX_BATCH_GET = 100
TRANSACTION_ATTEMPTS = 10
"""TransactWriteItems tried this often while it is cancelled only by conflicts or throttling."""
ADMISSION_ROUNDS = 6
PAGE_EXAMINE_BUDGET = 2000
"""Index entries one filtered run page reads at most (about 7 requests of 300): past it the page ends short,
with a `next` cursor where the reading stopped, so a rare state in a long history costs a bounded page."""
"""Slot re-reads one admit() call makes after a slot condition failed (another dispatcher took slots)."""

CONDITION_FAILED = "ConditionalCheckFailed"
TRANSIENT_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded", "InternalError"}
)
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_URL_PARAMS = ("region", "endpoint_url")

# key prefixes and constant sort keys (dynamodb_schema's docstring has the whole layout)
POOLS = "POOLS"
DEPLOYMENTS = "DEPLOYMENTS"
POLLED = "#POLLED"
SCHEDULED_PARTITION = "SCHEDULED"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _key(pk: str, sk: str) -> Item:
    return {schema.PK: _s(pk), schema.SK: _s(sk)}


def _setting_key(key: str) -> Item:
    return _key(f"SETTING#{key}", "SETTING")


def _pool_key(name: str) -> Item:
    return _key(POOLS, name)


def _heartbeat_key(pool: str) -> Item:
    return _key(f"POOL#{pool}", POLLED)


def _queue_key(pool: str, name: str) -> Item:
    return _key(f"POOL#{pool}", f"QUEUE#{name}")


def _deployment_key(name: str) -> Item:
    return _key(DEPLOYMENTS, name)


def _count_change(active: str) -> dict[str, Any]:
    """The update of a slot's count to `active` (an expression): bump its version, stamp the time of the change."""
    return {
        "UpdateExpression": f"SET #active = {active}, #changed = :now ADD #ver :one",
        "ExpressionAttributeNames": {"#active": "active", "#ver": "ver", "#changed": "changed"},
        "ExpressionAttributeValues": {":one": _n(1), ":now": {"N": repr(time.time())}},
    }


def _slot_key(key: str) -> Item:
    return _key(f"SLOT#{key}", "SLOT")


def _run_key(run_id: str) -> Item:
    return _key(f"RUN#{run_id}", "RUN")


def _parameter_keys(run: FlowRun) -> list[Item]:
    """The items holding a run's parameters kept apart (none when its item holds them), in order."""
    chunks = -(-(run.parameters_size or 0) // schema.PARAMETERS_CHUNK_BYTES)
    return [_key(f"RUN#{run.id}", f"{schema.PARAMETERS_PREFIX}{n:04d}") for n in range(chunks)]


def _ident(item: Item) -> tuple[str, str]:
    return item[schema.PK]["S"], item[schema.SK]["S"]


def _data(item: Item) -> str:
    return str(item[schema.DATA]["S"])


def _run(item: Item) -> FlowRun:
    return decode(FlowRun, _data(item), "run")


def _deployment(item: Item) -> Deployment:
    return decode(Deployment, _data(item), "deployment")


def _dump(model: WorkPool | WorkQueue | Deployment) -> str:
    return model.model_dump_json(exclude={"status", "last_polled"})


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


T = TypeVar("T")


def _first_of_each(items: Iterable[T], ident: Callable[[T], str]) -> list[T]:
    seen: set[str] = set()
    return [i for i in items if not (ident(i) in seen or seen.add(ident(i)))]  # type: ignore[func-returns-value]


def _reasons(exc: ClientError) -> list[str | None]:
    """The cancellation code of each item of a cancelled transaction (None where its part passed)."""
    reasons = exc.response.get("CancellationReasons") or []
    return [None if r.get("Code") in (None, "None") else str(r["Code"]) for r in reasons]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def retention_days(environ: dict[str, str] | None = None) -> float:
    """How long finished runs are kept before DynamoDB's TTL deletes them ($PUSHPOOL_RUN_RETENTION_DAYS)."""
    env = os.environ if environ is None else environ
    raw = env.get(RETENTION_ENV)
    if raw is None or raw == "":
        return DEFAULT_RETENTION_DAYS
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise ConfigError(f"{RETENTION_ENV} must be a number of days greater than 0, got {raw!r}")
    return days


class _Contended(StoreError):
    """A transaction kept being cancelled by conflicts or throttling; nothing was written."""


class DynamoDBStore(UnreadableRows):
    """The DynamoDB store. Thread-safe: the boto3 client is built once, on first use, and shared."""

    def __init__(
        self,
        table: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        client: Any = None,
        max_attempts: int = 5,
        retention: float | None = None,
    ) -> None:
        if not _TABLE_NAME.match(table):
            raise StoreError(
                f"DynamoDB table name {table!r} is not valid: use 3 to 255 letters, digits, '_', '-' or '.'"
            )
        super().__init__()
        self.table = table
        self.region = region
        self.endpoint_url = endpoint_url
        query = {"region": region, **({"endpoint_url": endpoint_url} if endpoint_url else {})}
        self.url = f"dynamodb://{table}?{urlencode(query)}"
        self._dynamodb = client
        self._lock = threading.Lock()
        self._max_attempts = max_attempts
        self._retention_seconds = int((retention if retention is not None else retention_days()) * 86400)
        self.metrics: Counter[str] = Counter()
        """Events worth a dashboard: lost admission races, slots released that read 0 (drift), retries."""

    @classmethod
    def from_url(cls, url: str) -> DynamoDBStore:
        parsed = urlparse(url)
        table = parsed.netloc
        if not table or parsed.path not in ("", "/"):
            raise StoreError(f"store URL {url!r} needs a table name: dynamodb://TABLE?region=REGION")
        params = parse_qs(parsed.query, keep_blank_values=True)
        unknown = sorted(set(params) - set(_URL_PARAMS))
        if unknown:
            raise StoreError(
                f"store URL {url!r} has unknown parameter {unknown[0]!r}; "
                "use dynamodb://TABLE?region=REGION[&endpoint_url=URL]"
            )
        region = (
            (params.get("region") or [""])[-1] or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region:
            raise StoreError(f"store URL {url!r} names no region; add ?region=REGION (or set AWS_REGION)")
        endpoint = (params.get("endpoint_url") or [""])[-1] or None
        return cls(table, region=region, endpoint_url=endpoint)

    # plumbing -------------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client, built on first use with botocore's standard (jittered) retry mode."""
        if self._dynamodb is None:
            with self._lock:
                if self._dynamodb is None:
                    session = boto3.session.Session()
                    self._dynamodb = session.client(
                        "dynamodb",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=Config(
                            retries={"mode": "standard", "max_attempts": self._max_attempts},
                            connect_timeout=5,
                            read_timeout=30,
                            max_pool_connections=32,
                        ),
                    )
        return self._dynamodb

    def close(self) -> None:
        client, self._dynamodb = self._dynamodb, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def _where(self) -> str:
        return f"{self.region} at {self.endpoint_url}" if self.endpoint_url else self.region

    def _wrap(self, operation: str, exc: ClientError) -> StoreError:
        code = _code(exc)
        if code == "ResourceNotFoundException":
            return StoreError(
                f"DynamoDB table {self.table!r} does not exist in {self._where()}; "
                f"run `pushpool --store '{self.url}' store init` to create it"
            )
        message = exc.response.get("Error", {}).get("Message", "")
        request_id = exc.response.get("ResponseMetadata", {}).get("RequestId", "unknown")
        return StoreError(
            f"DynamoDB {operation} on table {self.table!r} failed: {code}: {message} (request id {request_id})"
        )

    def _unreachable(self, operation: str, exc: BotoCoreError) -> StoreError:
        if isinstance(exc, NoCredentialsError):
            return StoreError(
                "no AWS credentials found for the DynamoDB store; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, EndpointConnectionError):
            where = self.endpoint_url or f"the {self.region} endpoint"
            return StoreError(
                f"cannot reach DynamoDB at {where} (table {self.table!r}); check region and endpoint_url "
                "in the store URL and that the service is up"
            )
        return StoreError(f"DynamoDB {operation} on table {self.table!r} failed before an answer: {exc}")

    def _call(self, operation: str, expected: Iterable[str] = (), **kwargs: Any) -> dict[str, Any]:
        """One request; ClientErrors whose code is `expected` pass through, all others become StoreError.

        Throttling, 5xx and connection errors were already retried by botocore (standard mode: jittered
        exponential backoff) before anything reaches here.
        """
        method = getattr(self.client, operation)
        try:
            result: dict[str, Any] = method(**kwargs)
            return result
        except ClientError as exc:
            if _code(exc) in set(expected):
                raise
            raise self._wrap(self.client.meta.method_to_api_mapping.get(operation, operation), exc) from None
        except BotoCoreError as exc:
            raise self._unreachable(operation, exc) from None

    @staticmethod
    def _backoff(attempt: int) -> None:
        # Full jitter: overlapping dispatchers that collided do not collide again in step.
        time.sleep(random.uniform(0, min(2.0, 0.02 * 2**attempt)))

    def _transact(self, items: list[dict[str, Any]]) -> list[str | None] | None:
        """TransactWriteItems: None when it committed, else each item's cancellation code.

        A cancellation caused only by conflicts with other transactions or by throttling is retried with
        jittered backoff; one caused by a failed condition is returned for the caller to act on.
        """
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self._call("transact_write_items", ("TransactionCanceledException",), TransactItems=items)
                return None
            except ClientError as exc:
                codes = _reasons(exc)
                if CONDITION_FAILED in codes:
                    return codes
                if not codes or any(c is not None and c not in TRANSIENT_REASONS for c in codes):
                    raise self._wrap("TransactWriteItems", exc) from None
                self.metrics["transaction_retries"] += 1
                self._backoff(attempt)
        raise _Contended(
            f"DynamoDB TransactWriteItems on table {self.table!r} kept conflicting with other writers "
            f"({TRANSACTION_ATTEMPTS} attempts); retry in a moment"
        )

    def _write_all(self, ops: Sequence[tuple[dict[str, Any], PushpoolError | None]]) -> None:
        """One transaction of (operation, error raised if its condition fails); chunked beyond 100 items."""
        for chunk in _chunks(list(ops), MAX_TRANSACTION_ITEMS):
            codes = self._transact([op for op, _ in chunk])
            if codes is None:
                continue
            for (_, error), code in zip(chunk, codes, strict=False):
                if code == CONDITION_FAILED and error is not None:
                    raise error
            raise StoreError(f"a conditional write on DynamoDB table {self.table!r} was refused; retry")

    def _get(self, key: Item) -> Item | None:
        item: Item | None = self._call("get_item", TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        return item

    def _batch_get(self, keys: Sequence[Item]) -> dict[tuple[str, str], Item]:
        """Strongly consistent BatchGetItem of distinct keys, 100 per request, unprocessed keys retried."""
        unique = list({_ident(k): k for k in keys}.values())
        found: dict[tuple[str, str], Item] = {}
        for chunk in _chunks(unique, MAX_BATCH_GET):
            request: dict[str, Any] = {self.table: {"Keys": list(chunk), "ConsistentRead": True}}
            attempt = 0
            while request:
                answer = self._call("batch_get_item", RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[_ident(item)] = item
                request = answer.get("UnprocessedKeys") or {}
                if request:
                    if attempt >= TRANSACTION_ATTEMPTS:
                        raise StoreError(f"DynamoDB table {self.table!r} is throttling reads; retry in a moment")
                    self._backoff(attempt)
                    attempt += 1
        return found

    def _query(
        self,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        *,
        index: str | None = None,
        limit: int | None = None,
        filter_expression: str | None = None,
        page: int | None = None,
    ) -> list[Item]:
        """A query of one partition in sort order, following pages until `limit` items (None: all)."""
        if limit is not None and limit <= 0:
            return []
        items: list[Item] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        if index is None:
            request["ConsistentRead"] = True
        else:
            request["IndexName"] = index
        if filter_expression:
            request["FilterExpression"] = filter_expression
        while True:
            if limit is not None:
                # A filter applies after Limit, so a filtered query reads pages of `page` items instead.
                request["Limit"] = max(page or 0, limit - len(items))
            answer = self._call("query", **request)
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start or (limit is not None and len(items) >= limit):
                return items if limit is None else items[:limit]
            request["ExclusiveStartKey"] = start

    # settings -------------------------------------------------------------------------------------------
    def get_setting(self, key: str) -> str | None:
        item = self._get(_setting_key(key))
        return None if item is None else str(item["value"]["S"])

    def put_setting(self, key: str, value: str) -> None:
        self._call("put_item", TableName=self.table, Item={**_setting_key(key), "value": _s(value)})

    def setting_default(self, key: str, value: str) -> str:
        try:
            self._call(
                "put_item",
                ("ConditionalCheckFailedException",),
                TableName=self.table,
                Item={**_setting_key(key), "value": _s(value)},
                ConditionExpression="attribute_not_exists(pk)",
            )
            return value
        except ClientError:
            stored = self.get_setting(key)
            return value if stored is None else stored

    # writes shared by several entities --------------------------------------------------------------------
    def _put(self, item: Item, condition: str | None = None) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if condition:
            put["ConditionExpression"] = condition
        return {"Put": put}

    def _delete(self, key: Item, condition: str | None = None) -> dict[str, Any]:
        delete: dict[str, Any] = {"TableName": self.table, "Key": key}
        if condition:
            delete["ConditionExpression"] = condition
        return {"Delete": delete}

    def _upsert_slot(self, key: str, limit: int | None) -> dict[str, Any]:
        """Set a slot's limit, keeping its active count (0 for a new slot)."""
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": _slot_key(key),
            "ExpressionAttributeNames": {"#lim": "lim", "#active": "active"},
            "ExpressionAttributeValues": {":zero": _n(0)},
        }
        if limit is None:
            update["UpdateExpression"] = "SET #active = if_not_exists(#active, :zero) REMOVE #lim"
        else:
            update["UpdateExpression"] = "SET #active = if_not_exists(#active, :zero), #lim = :lim"
            update["ExpressionAttributeValues"][":lim"] = _n(limit)
        return {"Update": update}

    # pools ----------------------------------------------------------------------------------------------
    @staticmethod
    def _stamp(heartbeat: Item | None, attribute: str) -> datetime | None:
        if heartbeat is None or attribute not in heartbeat:
            return None
        return datetime.fromisoformat(heartbeat[attribute]["S"])

    def _pool(self, item: Item, heartbeat: Item | None) -> WorkPool:
        pool = decode(WorkPool, _data(item), "pool")
        polled = self._stamp(heartbeat, "polled")
        return pool if polled is None else pool.model_copy(update={"last_polled": polled})

    def create_pool(self, pool: WorkPool, default_queue: WorkQueue) -> None:
        self._write_all(
            [
                (
                    self._put({**_pool_key(pool.name), schema.DATA: _s(_dump(pool))}, "attribute_not_exists(pk)"),
                    Conflict(f"work pool {pool.name!r} already exists; use --overwrite or `work-pool update`"),
                ),
                (self._put(_heartbeat_key(pool.name)), None),
                (self._put(self._queue_item(default_queue)), None),
                (self._upsert_slot(pool_slot(pool.name), pool.concurrency_limit), None),
                (self._upsert_slot(queue_slot(pool.name, default_queue.name), default_queue.concurrency_limit), None),
            ]
        )

    def update_pool(self, pool: WorkPool) -> None:
        self._write_all(
            [
                (
                    self._put({**_pool_key(pool.name), schema.DATA: _s(_dump(pool))}, "attribute_exists(pk)"),
                    NotFound(f"work pool {pool.name!r} does not exist; see `pushpool work-pool ls`"),
                ),
                (self._upsert_slot(pool_slot(pool.name), pool.concurrency_limit), None),
            ]
        )

    def get_pool(self, name: str) -> WorkPool | None:
        found = self._batch_get([_pool_key(name), _heartbeat_key(name)])
        item = found.get(_ident(_pool_key(name)))
        return None if item is None else self._pool(item, found.get(_ident(_heartbeat_key(name))))

    def list_pools(self) -> list[WorkPool]:
        items = self._query("pk = :pk", {}, {":pk": _s(POOLS)})
        beats = self._batch_get([_heartbeat_key(i[schema.SK]["S"]) for i in items])
        return self._readable(items, lambda i: self._pool(i, beats.get(_ident(_heartbeat_key(i[schema.SK]["S"])))))

    def _pool_partition(self, pool: str) -> list[Item]:
        return self._query("pk = :pk", {}, {":pk": _s(f"POOL#{pool}")})

    def delete_pool(self, name: str) -> None:
        sort_keys = [i[schema.SK]["S"] for i in self._pool_partition(name)]
        queues = [sk.removeprefix("QUEUE#") for sk in sort_keys if sk.startswith("QUEUE#")]
        missing = NotFound(f"work pool {name!r} does not exist; see `pushpool work-pool ls`")
        ops: list[tuple[dict[str, Any], PushpoolError | None]] = [
            (self._delete(_pool_key(name), "attribute_exists(pk)"), missing),
            (self._delete(_heartbeat_key(name)), None),
            (self._delete(_slot_key(pool_slot(name))), None),
        ]
        for queue in queues:
            ops.append((self._delete(_queue_key(name, queue)), None))
            ops.append((self._delete(_slot_key(queue_slot(name, queue))), None))
        # Beyond 100 items (a pool of 48+ queues) the pool goes first, atomically with as much as fits.
        self._write_all(ops)

    def touch(self, pool: str, queues: Sequence[str], now: datetime) -> None:
        stamp = _s(now.isoformat())
        names = {"#polled": "polled", **{f"#q{i}": f"q:{q}" for i, q in enumerate(queues)}}
        assignments = ", ".join(f"{name} = :now" for name in names)
        # A ConditionalCheckFailed means the pool was deleted meanwhile: nothing to record.
        with contextlib.suppress(ClientError):
            self._call(
                "update_item",
                ("ConditionalCheckFailedException",),
                TableName=self.table,
                Key=_heartbeat_key(pool),
                UpdateExpression=f"SET {assignments}",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":now": stamp},
            )

    # queues ---------------------------------------------------------------------------------------------
    def _queue_item(self, queue: WorkQueue) -> Item:
        return {**_queue_key(queue.pool, queue.name), schema.DATA: _s(_dump(queue)), "priority": _n(queue.priority)}

    def _queue(self, item: Item, heartbeat: Item | None) -> WorkQueue:
        queue = decode(WorkQueue, _data(item), "queue")
        polled = self._stamp(heartbeat, f"q:{queue.name}")
        return queue if polled is None else queue.model_copy(update={"last_polled": polled})

    def get_queue(self, pool: str, name: str) -> WorkQueue | None:
        found = self._batch_get([_queue_key(pool, name), _heartbeat_key(pool)])
        item = found.get(_ident(_queue_key(pool, name)))
        return None if item is None else self._queue(item, found.get(_ident(_heartbeat_key(pool))))

    def list_queues(self, pool: str) -> list[WorkQueue]:
        items = self._pool_partition(pool)
        heartbeat = next((i for i in items if i[schema.SK]["S"] == POLLED), None)
        queues = self._readable(
            (i for i in items if i[schema.SK]["S"].startswith("QUEUE#")), lambda i: self._queue(i, heartbeat)
        )
        # A pool has few queues: they are read whole and ordered here, so a priority change moves no key.
        return sorted(queues, key=lambda q: (q.priority, q.name))

    def save_queues(self, pool: str, queues: Sequence[WorkQueue], *, new: str | None = None) -> None:
        ops: list[tuple[dict[str, Any], PushpoolError | None]] = [
            (
                {
                    "ConditionCheck": {
                        "TableName": self.table,
                        "Key": _pool_key(pool),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                NotFound(f"work pool {pool!r} does not exist; see `pushpool work-pool ls`"),
            )
        ]
        for queue in {q.name: q for q in queues}.values():
            if queue.name == new:
                ops.append(
                    (
                        self._put(self._queue_item(queue), "attribute_not_exists(pk)"),
                        Conflict(f"work queue {new!r} already exists in pool {pool!r}"),
                    )
                )
                # A queue of the same name deleted earlier left its stamp on the heartbeat: a new queue starts unseen.
                forget = {
                    "TableName": self.table,
                    "Key": _heartbeat_key(pool),
                    "UpdateExpression": "REMOVE #q",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeNames": {"#q": f"q:{queue.name}"},
                }
                ops.append(({"Update": forget}, None))
            else:
                ops.append(
                    (
                        self._put(self._queue_item(queue), "attribute_exists(pk)"),
                        NotFound(f"work queue {queue.name!r} does not exist in pool {pool!r}"),
                    )
                )
            ops.append((self._upsert_slot(queue_slot(pool, queue.name), queue.concurrency_limit), None))
        self._write_all(ops)

    def delete_queue(self, pool: str, name: str) -> None:
        self._write_all(
            [
                (
                    self._delete(_queue_key(pool, name), "attribute_exists(pk)"),
                    NotFound(f"work queue {name!r} does not exist in pool {pool!r}"),
                ),
                (self._delete(_slot_key(queue_slot(pool, name))), None),
            ]
        )

    # deployments ----------------------------------------------------------------------------------------
    @staticmethod
    def _deployment_item(deployment: Deployment) -> Item:
        item: Item = {
            **_deployment_key(deployment.name),
            schema.DATA: _s(_dump(deployment)),
            "dep_pool": _s(deployment.pool),
        }
        if deployment.schedules and not deployment.schedule_paused:
            item["sched"] = _s(SCHEDULED_PARTITION)  # the sparse index of deployments with due schedules
        return item

    def _deployments(self, items: Iterable[Item]) -> list[Deployment]:
        return self._readable(items, _deployment)

    def create_deployment(self, deployment: Deployment) -> None:
        self._write_all(
            [
                (
                    self._put(self._deployment_item(deployment), "attribute_not_exists(pk)"),
                    Conflict(f"deployment {deployment.name!r} already exists; pick another name"),
                ),
                (self._upsert_slot(deployment_slot(deployment.id), deployment.concurrency_limit), None),
            ]
        )

    def update_deployment(self, deployment: Deployment) -> None:
        self._write_all(
            [
                (
                    self._put(self._deployment_item(deployment), "attribute_exists(pk)"),
                    NotFound(f"deployment {deployment.name!r} does not exist; see `pushpool deployment ls`"),
                ),
                (self._upsert_slot(deployment_slot(deployment.id), deployment.concurrency_limit), None),
            ]
        )

    def get_deployment(self, name: str) -> Deployment | None:
        item = self._get(_deployment_key(name))
        return None if item is None else _deployment(item)

    def list_deployments(self, pool: str | None = None) -> list[Deployment]:
        if pool is None:
            return self._deployments(self._query("pk = :pk", {}, {":pk": _s(DEPLOYMENTS)}))
        items = self._query(
            "#pool = :pool", {"#pool": "dep_pool"}, {":pool": _s(pool)}, index=schema.DEPLOYMENTS_BY_POOL_INDEX
        )
        return self._deployments(items)

    def scheduled_deployments(self) -> list[Deployment]:
        items = self._query(
            "#s = :s", {"#s": "sched"}, {":s": _s(SCHEDULED_PARTITION)}, index=schema.SCHEDULED_DEPLOYMENTS_INDEX
        )
        return self._deployments(items)

    def delete_deployment(self, name: str) -> None:
        missing = NotFound(f"deployment {name!r} does not exist; see `pushpool deployment ls`")
        item = self._get(_deployment_key(name))
        if item is None:
            raise missing
        # Read leniently: deleting is how an unreadable deployment (an older version's item) is got rid of.
        deployment_id = str(json.loads(_data(item)).get("id"))
        self._write_all(
            [
                (self._delete(_deployment_key(name), "attribute_exists(pk)"), missing),
                (self._delete(_slot_key(deployment_slot(deployment_id))), None),
            ]
        )

    # runs -----------------------------------------------------------------------------------------------
    def run_item(self, run: FlowRun) -> Item:
        """The item of a run: its JSON plus the key attributes of every index it belongs to now."""
        ts = timestamp(run.scheduled_time)
        run, _ = split_parameters(run)
        item: Item = {
            **_run_key(run.id),
            schema.DATA: _s(run.model_dump_json()),
            "state": _s(run.state.value),
            "version": _n(run.version),
            "queue": _s(run.queue),
            "run_pool": _s(run.pool),
            "run_dep": _s(run.deployment),
            "rsk": _s(newest_first(ts, run.id)),
        }
        if run.state is StateType.SCHEDULED:
            item["due_pk"] = _s(queue_slot(run.pool, run.queue).removeprefix("queue:"))
            item["due_sk"] = _s(f"{ts}#{run.id}")
        elif run.state in ACTIVE:
            item["active_pk"] = _s(run.pool)
            item["active_sk"] = _s(run.id)
        elif run.state in TERMINAL:
            item[schema.TTL_ATTRIBUTE] = _n(self._expiry(run))
        return item

    def _expiry(self, run: FlowRun) -> int:
        """When DynamoDB's TTL may delete an ended run and its parameters: the retention counted from its end.

        Counted from the record that ended it, not from this write, so that a rewrite after the end (a late
        callback recorded as a no-op) never pushes the expiry later: a job holding its token cannot keep its
        run forever, nor make it outlive its parameters kept apart (whose expiry is set once, at the end).
        """
        ended = run.ended_time
        return int(ended.timestamp() if ended is not None else time.time()) + self._retention_seconds

    @staticmethod
    def _size(op: dict[str, Any]) -> int:
        """A generous estimate of an operation's share of the 4 MB transaction limit."""
        body = next(iter(op.values()))
        item = body.get("Item") or body.get("Key") or {}
        return 200 + sum(
            len(name) + (len(value["B"]) if "B" in value else len(str(value))) for name, value in item.items()
        )

    def _run_puts(self, run: FlowRun) -> list[dict[str, Any]]:
        """The puts that create a run: its item, only if the id is new, then its parameters kept apart, if any."""
        stored, apart = split_parameters(run, new=True)
        puts = [self._put(self.run_item(stored), "attribute_not_exists(pk)")]
        if apart is not None:
            step = schema.PARAMETERS_CHUNK_BYTES
            for key, start in zip(_parameter_keys(stored), range(0, len(apart), step), strict=True):
                puts.append(self._put({**key, schema.CHUNK: {"B": apart[start : start + step]}}))
        return puts

    def create_runs(self, runs: Sequence[FlowRun]) -> list[str]:
        todo = _first_of_each(runs, lambda r: r.id)  # as INSERT OR IGNORE: the first of an id wins
        created: set[str] = set()
        for group in self._packed([(r.id, self._run_puts(r)) for r in todo]):
            while group:
                codes = self._transact([op for _, ops in group for op in ops])
                if codes is None:
                    created.update(run_id for run_id, _ in group)
                    break
                # The ids that exist already are left alone (as INSERT OR IGNORE), with their parameters; the
                # others go again. A run's own put comes first among its items.
                firsts = [sum(len(ops) for _, ops in group[:i]) for i in range(len(group))]
                remaining = [g for g, at in zip(group, firsts, strict=True) if codes[at : at + 1] != [CONDITION_FAILED]]
                if len(remaining) == len(group):
                    raise StoreError(f"DynamoDB refused to write runs to table {self.table!r}; retry")
                group = remaining
        return [r.id for r in todo if r.id in created]

    def _packed(self, entries: list[tuple[str, list[dict[str, Any]]]]) -> list[list[tuple[str, list[dict[str, Any]]]]]:
        """Runs' puts in transactions of at most 100 items and about 3.5 MB, a run's items always together."""
        groups: list[list[tuple[str, list[dict[str, Any]]]]] = []
        size = items = 0
        for entry in entries:
            cost = sum(self._size(op) for op in entry[1])
            if not groups or items + len(entry[1]) > MAX_TRANSACTION_ITEMS or size + cost > MAX_TRANSACTION_BYTES:
                groups.append([])
                size = items = 0
            groups[-1].append(entry)
            size += cost
            items += len(entry[1])
        return groups

    def _runs(self, items: Iterable[Item]) -> list[FlowRun]:
        return self._readable(items, _run)

    def get_run(self, run_id: str) -> FlowRun | None:
        item = self._get(_run_key(run_id))
        return None if item is None else _run(item)

    def run_parameters(self, run: FlowRun) -> bytes:
        if run.parameters is not None:
            return to_json(run.parameters)
        # One Query of the run's partition, its chunks in order (the run item's sort key `RUN` is not among them).
        items = self._query(
            "pk = :pk AND begins_with(sk, :prefix)",
            {},
            {":pk": _s(f"RUN#{run.id}"), ":prefix": _s(schema.PARAMETERS_PREFIX)},
        )
        data = b"".join(bytes(item[schema.CHUNK]["B"]) for item in items if schema.CHUNK in item)
        if not items or len(data) != run.parameters_size:
            raise NotFound(f"the parameters of flow run {run.id} are gone from the store (they expire with the run)")
        return data

    def _fetch_runs(self, index_items: Sequence[Item]) -> list[FlowRun]:
        """The base items behind index keys, in the index's order (runs deleted meanwhile are left out)."""
        found = self._batch_get([_key(*_ident(i)) for i in index_items])
        return self._runs(found[_ident(i)] for i in index_items if _ident(i) in found)

    def list_runs(
        self,
        pool: str,
        *,
        queue: str | None = None,
        state: StateType | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[FlowRun]:
        names, values = {"#pool": "run_pool"}, {":pool": _s(pool)}
        filters = []
        if queue is not None:
            names["#queue"], values[":queue"] = "queue", _s(queue)
            filters.append("#queue = :queue")
        if state is not None:
            names["#state"], values[":state"] = "state", _s(state.value)
            filters.append("#state = :state")
        # Listing is not on the dispatch path; a filtered listing reads the pool's index in pages.
        keys = self._query(
            "#pool = :pool",
            names,
            values,
            index=schema.RUNS_BY_POOL_INDEX,
            limit=limit,
            filter_expression=" AND ".join(filters) or None,
            page=max(limit, 100) if filters else None,
        )
        runs = self._fetch_runs(keys)
        # The index may lag the item: the item's own state and queue decide.
        return [r for r in runs if (queue is None or r.queue == queue) and (state is None or r.state is state)]

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
        names = {"#pk": "run_dep" if deployment is not None else "run_pool"}
        values: dict[str, Any] = {":pk": _s(deployment if deployment is not None else str(pool))}
        condition = "#pk = :pk"
        if after is not None:
            names["#rsk"], values[":after"] = "rsk", _s(after.key)
            condition += " AND #rsk > :after"
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": schema.RUNS_BY_DEPLOYMENT_INDEX if deployment is not None else schema.RUNS_BY_POOL_INDEX,
            "KeyConditionExpression": condition,
        }
        # runs_by_pool carries queue and state, so a pool's page filters in the index; runs_by_deployment
        # carries keys only, so a deployment's page filters the items it fetches.
        filters = []
        if deployment is None:
            for attribute, value in (("queue", queue), ("state", state and state.value)):
                if value is not None:
                    names[f"#{attribute}"], values[f":{attribute}"] = attribute, _s(value)
                    filters.append(f"#{attribute} = :{attribute}")
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        request["ExpressionAttributeNames"], request["ExpressionAttributeValues"] = names, values

        def wanted(run: FlowRun) -> bool:
            # The item decides: an index may lag a state change, and a deployment's index filters nothing.
            return all(
                have is None or have == got for have, got in ((pool, run.pool), (queue, run.queue), (state, run.state))
            )

        filtered = bool(filters) or (deployment is not None and (pool, queue, state) != (None, None, None))
        budget = PAGE_EXAMINE_BUDGET if filtered else limit + 1
        runs: list[FlowRun] = []
        examined = 0
        while True:
            request["Limit"] = min(
                budget - examined, (100 if deployment is not None else 300) if filtered else limit + 1
            )
            answer = self._call("query", **request)
            examined += int(answer.get("ScannedCount", len(answer.get("Items", []))))
            keys = answer.get("Items", [])
            while keys and len(runs) <= limit:
                # Only as many items as the page still needs are fetched (more if the index lagged).
                chunk, keys = keys[: limit + 1 - len(runs)], keys[limit + 1 - len(runs) :]
                runs += [r for r in self._fetch_runs(chunk) if wanted(r)]
            if len(runs) > limit:
                return RunPage(runs[:limit], RunPosition.of(runs[limit - 1]))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return RunPage(runs, None)
            if examined >= budget:
                # Stopped reading, not at the end: the next page starts where this one stopped.
                return RunPage(runs, RunPosition.from_key(start["rsk"]["S"]))
            request["ExclusiveStartKey"] = start

    def count_scheduled(self, pool: str, queue: str, *, until: datetime | None = None, cap: int = COUNT_CAP) -> Count:
        condition = "#pk = :pk"
        names = {"#pk": "due_pk"}
        values: dict[str, Any] = {":pk": _s(f"{pool}/{queue}")}
        if until is not None:
            # '$' sorts just after '#': every run at exactly `until` counts, whatever its id.
            names["#sk"], values[":until"] = "due_sk", _s(f"{timestamp(until)}$")
            condition += " AND #sk < :until"
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": schema.DUE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "Select": "COUNT",
        }
        counted = 0
        while True:
            request["Limit"] = cap + 1 - counted
            answer = self._call("query", **request)
            counted += int(answer.get("Count", 0))
            if counted > cap:
                return Count(cap, True)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return Count(counted)
            request["ExclusiveStartKey"] = start

    def due_runs(self, pool: str, queue: str, until: datetime, limit: int) -> list[FlowRun]:
        # '$' sorts just after '#', so `< ts$` takes every run at exactly `until` whatever its id.
        window = limit
        while True:
            items = self._query(
                "#pk = :pk AND #sk < :until",
                {"#pk": "due_pk", "#sk": "due_sk"},
                {":pk": _s(f"{pool}/{queue}"), ":until": _s(f"{timestamp(until)}$")},
                index=schema.DUE_INDEX,
                limit=window,
            )
            runs = self._runs(items)
            # An unreadable run must not take a readable one's place in the window: widen it by as many.
            if len(items) < window or len(runs) >= limit:
                return [r for r in runs[:limit] if r.state is StateType.SCHEDULED]
            window += limit - len(runs)

    def next_scheduled_time(self, pool: str, queue: str, after: datetime) -> datetime | None:
        # One Query of the due index, Limit=1, its sort key only. `> ts$` skips every run at exactly `after`
        # ('$' sorts after '#'). The index lags: a run admitted a moment ago may still answer (one early wake).
        answer = self._call(
            "query",
            TableName=self.table,
            IndexName=schema.DUE_INDEX,
            KeyConditionExpression="#pk = :pk AND #sk > :after",
            ExpressionAttributeNames={"#pk": "due_pk", "#sk": "due_sk"},
            ExpressionAttributeValues={":pk": _s(f"{pool}/{queue}"), ":after": _s(f"{timestamp(after)}$")},
            ProjectionExpression="#sk",
            Limit=1,
        )
        items = answer.get("Items", [])
        return from_timestamp(items[0]["due_sk"]["S"].partition("#")[0]) if items else None

    def active_runs(self, pool: str, limit: int = DEFAULT_LIST_LIMIT) -> list[FlowRun]:
        # The index says which runs; a consistent read of their items says what they are now. The index lags:
        # a run released a moment ago may still be in it, with the state it had (the slot recount counts
        # these, and the reconciler would act on a stale version).
        keys = self._query("#pk = :pk", {"#pk": "active_pk"}, {":pk": _s(pool)}, index=schema.ACTIVE_INDEX, limit=limit)
        return [r for r in self._fetch_runs(keys) if r.state in ACTIVE]

    def runs_of_deployment(self, deployment: str, *, limit: int = DEFAULT_LIST_LIMIT) -> list[FlowRun]:
        keys = self._query(
            "#dep = :dep",
            {"#dep": "run_dep"},
            {":dep": _s(deployment)},
            index=schema.RUNS_BY_DEPLOYMENT_INDEX,
            limit=limit,
        )
        return self._fetch_runs(keys)

    def _put_run(self, after: FlowRun, before: FlowRun, *, scheduled: bool = False) -> dict[str, Any]:
        """Write `after` (at before.version + 1) only if the stored run is still at before's version."""
        put = self._put(self.run_item(after.model_copy(update={"version": before.version + 1})))
        body = put["Put"]
        body["ConditionExpression"] = "#version = :version"
        body["ExpressionAttributeNames"] = {"#version": "version"}
        body["ExpressionAttributeValues"] = {":version": _n(before.version)}
        if scheduled:
            body["ConditionExpression"] += " AND #state = :scheduled"
            body["ExpressionAttributeNames"]["#state"] = "state"
            body["ExpressionAttributeValues"][":scheduled"] = _s(StateType.SCHEDULED.value)
        return put

    # admission ------------------------------------------------------------------------------------------
    @staticmethod
    def _fit(candidates: Sequence[Admission], slots: dict[str, Slot]) -> list[Admission]:
        """The admissions that fit the slots as read, in order (a run whose slot is gone never fits)."""
        taken: Counter[str] = Counter()
        fit = []
        for adm in candidates:
            keys = run_slots(adm.before)
            if any(k not in slots for k in keys):
                continue
            if any((lim := slots[k].limit) is not None and slots[k].active + taken[k] + 1 > lim for k in keys):
                continue
            taken.update(keys)
            fit.append(adm)
        return fit

    def _take(self, key: str, count: int, slot: Slot) -> dict[str, Any]:
        """Add `count` to a slot if it has room for all of them, with the limit read in this call.

        DynamoDB conditions take no arithmetic, so the bound is computed here: `active <= limit - count`,
        guarded by `lim = :lim` in case the limit changed since it was read.
        """
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": _slot_key(key),
            **_count_change("#active + :count"),
        }
        update["ExpressionAttributeNames"]["#lim"] = "lim"
        update["ExpressionAttributeValues"][":count"] = _n(count)
        if slot.limit is None:
            update["ConditionExpression"] = "attribute_exists(#active) AND attribute_not_exists(#lim)"
        else:
            update["ConditionExpression"] = "#lim = :lim AND #active <= :max"
            update["ExpressionAttributeValues"][":lim"] = _n(slot.limit)
            update["ExpressionAttributeValues"][":max"] = _n(slot.limit - count)
        return {"Update": update}

    def _admission_groups(self, plan: Sequence[Admission]) -> list[list[Admission]]:
        """Pack admissions into transactions: each run once, each slot once (adding N), ≤ 100 items, ≤ 4 MB."""
        groups: list[list[Admission]] = []
        keys: set[str] = set()
        size = 0
        for adm in plan:
            adm_keys = set(run_slots(adm.before))
            cost = 600 + 2 * len(adm.after.model_dump_json())
            if (
                groups
                and len(groups[-1]) + 1 + len(keys | adm_keys) <= MAX_TRANSACTION_ITEMS
                and size + cost <= MAX_TRANSACTION_BYTES
            ):
                groups[-1].append(adm)
                keys |= adm_keys
                size += cost
            else:
                groups.append([adm])
                keys, size = adm_keys, cost
        return groups

    def _admit_group(self, group: list[Admission], slots: dict[str, Slot]) -> tuple[bool, set[str], bool]:
        """One admission transaction: (committed, runs that moved on, whether a slot refused)."""
        counts: Counter[str] = Counter(k for adm in group for k in run_slots(adm.before))
        slot_keys = sorted(counts)
        items = [self._put_run(adm.after, adm.before, scheduled=True) for adm in group]
        items += [self._take(k, counts[k], slots[k]) for k in slot_keys]
        codes = self._transact(items)
        if codes is None:
            return True, set(), False
        lost = {adm.before.id for adm, code in zip(group, codes, strict=False) if code == CONDITION_FAILED}
        refused = any(code == CONDITION_FAILED for code in codes[len(group) :])
        # Reasons that name neither a run nor a slot are read as a refusal: the slots are read again.
        return False, lost, refused or not lost

    def admit(self, admissions: Sequence[Admission]) -> list[FlowRun]:
        for adm in admissions:
            if adm.before.state is not StateType.SCHEDULED or adm.after.state not in ACTIVE:
                raise ValueError("admission moves a SCHEDULED run to an active state")
        unique = _first_of_each(admissions, lambda a: a.before.id)
        todo = list(unique)
        if not todo:
            return []
        slots = self.slots(sorted({k for a in todo for k in run_slots(a.before)}))
        admitted: set[str] = set()
        rounds = 0
        while todo:
            plan = self._fit(todo, slots)
            if not plan:
                break
            refused = False
            for group in self._admission_groups(plan):
                while group:
                    try:
                        committed, lost, refused = self._admit_group(group, slots)
                    except _Contended:
                        # Still conflicting after the retries: these runs wait for the next pass.
                        self.metrics["admissions_contended"] += len(group)
                        given_up = {a.before.id for a in group}
                        todo = [a for a in todo if a.before.id not in given_up]
                        break
                    if committed:
                        admitted.update(a.before.id for a in group)
                        break
                    # A run that moved on is another writer's now: losing a race is not an error.
                    self.metrics["admissions_lost"] += len(lost)
                    todo = [a for a in todo if a.before.id not in lost]
                    group = [a for a in group if a.before.id not in lost]
                    if refused:
                        break
                if refused:
                    break
            todo = [a for a in todo if a.before.id not in admitted]
            if not refused:
                break
            # A slot had less room than read: re-read the slots and admit what the limits allow now.
            rounds += 1
            if rounds >= ADMISSION_ROUNDS:
                break
            slots = self.slots(sorted({k for a in todo for k in run_slots(a.before)}))
        return [a.after.model_copy(update={"version": a.before.version + 1}) for a in unique if a.before.id in admitted]

    def save_run(self, before: FlowRun, after: FlowRun) -> bool:
        if before.state not in ACTIVE and after.state in ACTIVE:
            raise ValueError("a run enters an active state only through admit()")
        put = self._put_run(after, before)
        keys = list(run_slots(before)) if before.state in ACTIVE and after.state not in ACTIVE else []
        expiry = self._parameters_expiry(after) if before.is_terminal != after.is_terminal else []
        if not keys and not expiry:
            try:
                self._call("put_item", ("ConditionalCheckFailedException",), **put["Put"])
            except ClientError:
                return False
            return True
        while True:
            codes = self._transact([put, *(self._release(k) for k in keys), *expiry])
            if codes is None:
                return True
            if codes[0] == CONDITION_FAILED:
                return False
            # A slot that already reads 0 (or is gone) is left alone, as SQLite's MAX(active - 1, 0).
            drifted = {k for k, code in zip(keys, codes[1:], strict=False) if code == CONDITION_FAILED}
            gone = CONDITION_FAILED in codes[1 + len(keys) :]
            if not drifted and not gone:
                raise StoreError(f"DynamoDB refused to release the slots of run {before.id} in {self.table!r}; retry")
            for key in drifted:
                self.metrics["slot_release_drift"] += 1
                log.warning("slot %s read 0 when run %s released it; the reconciler recounts it", key, before.id)
            keys = [k for k in keys if k not in drifted]
            if gone:
                # Its parameters expired already (a run item rewritten after it ended outlives them): nothing to mark.
                expiry = []

    def _parameters_expiry(self, run: FlowRun) -> list[dict[str, Any]]:
        """Updates giving a run's parameters kept apart the run's expiry (it ended) or none (a retry revived it).

        DynamoDB's TTL removes each item by its own `expires`, so the chunks follow their run's: set in the same
        transaction as the state that ends the run, removed in the one that brings it back.
        """
        updates = []
        for key in _parameter_keys(run):
            update: dict[str, Any] = {
                "TableName": self.table,
                "Key": key,
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeNames": {"#exp": schema.TTL_ATTRIBUTE},
            }
            if run.is_terminal:
                update["UpdateExpression"] = "SET #exp = :exp"
                update["ExpressionAttributeValues"] = {":exp": _n(self._expiry(run))}
            else:
                update["UpdateExpression"] = "REMOVE #exp"
            updates.append({"Update": update})
        return updates

    def save_runs(self, changes: Sequence[tuple[FlowRun, FlowRun]]) -> list[bool]:
        # One conditional write each: a transaction would fail every change with the one that lost its race.
        if any(before.state not in ACTIVE and after.state in ACTIVE for before, after in changes):
            raise ValueError("a run enters an active state only through admit()")
        return [self.save_run(before, after) for before, after in changes]

    def delete_run(self, run: FlowRun) -> bool:
        if run.state in ACTIVE:
            raise ValueError("an active run holds slots; it is never deleted")
        delete = self._delete(_run_key(run.id), "#version = :version")["Delete"]
        delete["ExpressionAttributeNames"] = {"#version": "version"}
        delete["ExpressionAttributeValues"] = {":version": _n(run.version)}
        chunks = _parameter_keys(run)
        if chunks:
            # The run and its parameters go together, or neither (a run that moved on keeps both).
            return self._transact([{"Delete": delete}, *(self._delete(key) for key in chunks)]) is None
        try:
            self._call("delete_item", ("ConditionalCheckFailedException",), **delete)
        except ClientError:
            return False
        return True

    def _release(self, key: str) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": _slot_key(key),
            "ConditionExpression": "#active > :zero",
            **_count_change("#active - :one"),
        }
        update["ExpressionAttributeValues"][":zero"] = _n(0)
        return {"Update": update}

    # slots ----------------------------------------------------------------------------------------------
    def slots(self, keys: Sequence[str]) -> dict[str, Slot]:
        if not keys:
            return {}
        found = self._batch_get([_slot_key(k) for k in keys])
        result: dict[str, Slot] = {}
        for key in keys:
            item = found.get(_ident(_slot_key(key)))
            if item is not None:
                limit = int(item["lim"]["N"]) if "lim" in item else None
                version = int(item["ver"]["N"]) if "ver" in item else 0
                changed = float(item["changed"]["N"]) if "changed" in item else 0.0
                result[key] = Slot(limit, int(item["active"]["N"]), version, changed)
        return result

    def repair_slot(self, key: str, seen: Slot, active: int) -> bool:
        update = _count_change(":active")
        update["ExpressionAttributeValues"][":active"] = _n(active)
        if seen.version:
            update["ConditionExpression"] = "#ver = :seen"
            update["ExpressionAttributeValues"][":seen"] = _n(seen.version)
        else:  # a slot whose count never changed has no version yet
            update["ConditionExpression"] = "attribute_exists(#active) AND attribute_not_exists(#ver)"
        try:
            self._call(
                "update_item", ("ConditionalCheckFailedException",), TableName=self.table, Key=_slot_key(key), **update
            )
        except ClientError:
            return False
        self.metrics["slot_repairs"] += 1
        return True

    # table ----------------------------------------------------------------------------------------------
    def init(self, *, timeout: float = 300.0) -> bool:
        """Create the table and its indexes from `dynamodb_schema.TABLE` and enable TTL; True if created.

        Idempotent: an existing table is checked for the indexes and left as it is.
        """
        created = True
        try:
            self._call("create_table", ("ResourceInUseException",), **schema.create_table_request(self.table))
            log.info("created DynamoDB table %s in %s", self.table, self.region)
        except ClientError:
            created = False
        self._wait_active(timeout)
        ttl = self._call("describe_time_to_live", TableName=self.table).get("TimeToLiveDescription", {})
        if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            if ttl.get("AttributeName") != schema.TTL_ATTRIBUTE:
                raise StoreError(
                    f"DynamoDB table {self.table!r} expires items by {ttl.get('AttributeName')!r}, not "
                    f"{schema.TTL_ATTRIBUTE!r}; change its time-to-live attribute"
                )
        else:
            self._call("update_time_to_live", TableName=self.table, TimeToLiveSpecification=schema.TIME_TO_LIVE)
        return created

    def _wait_active(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            table = self._call("describe_table", TableName=self.table)["Table"]
            present = {g["IndexName"]: g.get("IndexStatus", "ACTIVE") for g in table.get("GlobalSecondaryIndexes", [])}
            missing = [name for name in schema.index_names() if name not in present]
            if missing:
                raise StoreError(
                    f"DynamoDB table {self.table!r} exists without the index {missing[0]!r}; add the indexes of "
                    "dispatcher/store/dynamodb_schema.py or use another table name"
                )
            if table.get("TableStatus") == "ACTIVE" and all(s == "ACTIVE" for s in present.values()):
                return
            if time.monotonic() > deadline:
                raise StoreError(f"DynamoDB table {self.table!r} is not ACTIVE after {timeout:g}s; retry `store init`")
            time.sleep(1.0)

    def drop(self) -> None:
        """Delete the table (tests and benchmarks)."""
        with contextlib.suppress(ClientError):
            self._call("delete_table", ("ResourceNotFoundException",), TableName=self.table)
