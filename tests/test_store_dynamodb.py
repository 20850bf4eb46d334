"""What only the DynamoDB store has: request economy, no Scan, batching, retries, error wrapping, the table.

The semantics every store shares are pinned by tests/test_store_conformance.py, which runs on this store too.
Everything here talks HTTP to the session's moto server (tests/conftest.py); faults are injected at the wire
with botocore's own `before-send` event, so botocore's retry machinery and our handling see real responses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from test_store_conformance import T0, make_deployment, make_pool, make_run, pending
from typer.testing import CliRunner

from dispatcher import admit_pass, deployments, pools
from dispatcher.admit_pass import admit_pool
from dispatcher.cli import app
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.errors import ConfigError, StoreError
from dispatcher.providers.base import Providers
from dispatcher.providers.fake import FakeProvider
from dispatcher.schedules import IntervalSchedule
from dispatcher.states import StateType
from dispatcher.store import dynamodb_schema as schema
from dispatcher.store import open_store
from dispatcher.store.base import Admission, deployment_slot, pool_slot, queue_slot
from dispatcher.store.dynamodb import DynamoDBStore

REPO = Path(__file__).resolve().parents[1]


def _table() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ddb(dynamodb_endpoint: str) -> Iterator[DynamoDBStore]:
    store = DynamoDBStore(_table(), region="us-east-1", endpoint_url=dynamodb_endpoint)
    store.init()
    yield store
    store.drop()
    store.close()


class Requests:
    """Counts the store's DynamoDB calls by operation name (`before-call`: once per call, not per retry)."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.ops: Counter[str] = Counter()
        store.client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.ops[model.name] += 1

    def reset(self) -> None:
        self.ops.clear()


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def fault(code: str, message: str = "injected", status: int = 400, **fields: Any) -> AWSResponse:
    """A DynamoDB error response as it comes off the wire."""
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **fields})
    headers = {"x-amzn-RequestId": "REQ-INJECTED-42", "Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse("http://injected", status, headers, _Body(body.encode()))


class Faults:
    """Answers the first `times` attempts of one operation with `response`; later attempts reach moto."""

    def __init__(self, store: DynamoDBStore, operation: str, response: Callable[[], AWSResponse], times: int) -> None:
        self.left, self.attempts, self.response = times, 0, response
        store.client.meta.events.register(f"before-send.dynamodb.{operation}", self._send)

    def _send(self, **_: Any) -> AWSResponse | None:
        self.attempts += 1
        if self.left > 0:
            self.left -= 1
            return self.response()
        return None


def raw(store: DynamoDBStore, run_id: str) -> dict[str, Any]:
    item: dict[str, Any] = store.client.get_item(
        TableName=store.table, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}}, ConsistentRead=True
    )["Item"]
    return item


# request economy -------------------------------------------------------------------------------------------
ALLOWED_IN_A_PASS = {"GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "TransactWriteItems"}


def test_a_full_dispatch_pass_never_scans(ddb: DynamoDBStore) -> None:
    pools.create_pool(ddb, "pool", concurrency_limit=3)
    pools.create_queue(ddb, "pool", "low")
    dep = deployments.create_deployment(
        ddb, "dep", pool="pool", job_variables={"command": "true"}, schedules=[IntervalSchedule(interval=60)]
    )
    ddb.create_runs([make_run(dep, i, queue="low" if i % 2 else None) for i in range(6)])
    provider = FakeProvider()
    requests = Requests(ddb)
    dispatcher = Dispatcher(
        ddb, providers=Providers({"process": provider}), settings=Settings(), clock=lambda: T0 + timedelta(minutes=5)
    )
    try:
        first = dispatcher.run_pass()
        second = dispatcher.run_pass()
    finally:
        dispatcher.close()
    assert len(first.admitted) == 3 and len(first.submitted) == 3 and first.scheduled > 0
    assert second.admitted == []  # the pool is full
    assert "Scan" not in requests.ops
    assert set(requests.ops) <= ALLOWED_IN_A_PASS, requests.ops


def test_twenty_runs_of_one_queue_are_admitted_in_one_transaction(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool", limit=50)
    dep = make_deployment(ddb, limit=30)
    ddb.create_runs([make_run(dep, i) for i in range(20)])
    requests = Requests(ddb)
    result = admit_pool(ddb, "pool", T0)
    assert len(result.admitted) == 20
    assert requests.ops["TransactWriteItems"] <= 2
    assert sum(requests.ops.values()) <= 2 * 20
    keys = [pool_slot("pool"), queue_slot("pool", "default"), deployment_slot(dep.id)]
    assert [s.active for s in ddb.slots(keys).values()] == [20, 20, 20]


def test_a_batch_beyond_a_hundred_items_is_split(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool")
    dep = make_deployment(ddb)
    runs = [make_run(dep, i) for i in range(150)]
    ddb.create_runs(runs)
    requests = Requests(ddb)
    admitted = ddb.admit([pending(r) for r in runs])
    assert len(admitted) == 150
    assert requests.ops == Counter({"BatchGetItem": 1, "TransactWriteItems": 2})
    assert ddb.slots([pool_slot("pool")])[pool_slot("pool")].active == 150


# admission races -------------------------------------------------------------------------------------------
def _before_first_transaction(store: DynamoDBStore, action: Callable[[], None]) -> None:
    done: list[bool] = []

    def hook(**_: Any) -> None:
        if not done:
            done.append(True)
            action()

    store.client.meta.events.register("before-call.dynamodb.TransactWriteItems", hook)


def test_slots_taken_meanwhile_admit_only_what_still_fits(ddb: DynamoDBStore, dynamodb_endpoint: str) -> None:
    make_pool(ddb, "pool", limit=5)
    dep = make_deployment(ddb)
    ddb.create_runs([make_run(dep, i) for i in range(10)])
    other = DynamoDBStore(ddb.table, region="us-east-1", endpoint_url=dynamodb_endpoint)
    # Another dispatcher takes two pool slots between our read of the slots and our transaction.
    key = pool_slot("pool")
    _before_first_transaction(ddb, lambda: other.repair_slot(key, other.slots([key])[key], 2) or None)
    result = admit_pool(ddb, "pool", T0)
    assert len(result.admitted) == 3
    assert ddb.slots([pool_slot("pool")])[pool_slot("pool")].active == 5
    assert [r.id for r in result.admitted] == ["run-00000", "run-00001", "run-00002"]
    other.close()


def test_a_run_taken_meanwhile_is_dropped_and_the_rest_admitted(ddb: DynamoDBStore, dynamodb_endpoint: str) -> None:
    make_pool(ddb, "pool", limit=5)
    dep = make_deployment(ddb)
    runs = [make_run(dep, i) for i in range(3)]
    ddb.create_runs(runs)
    other = DynamoDBStore(ddb.table, region="us-east-1", endpoint_url=dynamodb_endpoint)
    _before_first_transaction(ddb, lambda: other.admit([pending(runs[1])]) and None)
    admitted = ddb.admit([pending(r) for r in runs])
    assert [r.id for r in admitted] == ["run-00000", "run-00002"]
    assert ddb.slots([pool_slot("pool")])[pool_slot("pool")].active == 3
    assert ddb.metrics["admissions_lost"] == 1
    other.close()


# retries and errors ----------------------------------------------------------------------------------------
def test_throttled_reads_are_retried_by_botocore(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool")
    faults = Faults(ddb, "BatchGetItem", lambda: fault("ProvisionedThroughputExceededException"), times=1)
    assert ddb.get_pool("pool") is not None
    assert faults.attempts == 2


def test_internal_errors_are_retried_by_botocore(ddb: DynamoDBStore) -> None:
    faults = Faults(ddb, "GetItem", lambda: fault("InternalServerError", status=500), times=2)
    assert ddb.get_setting("missing") is None
    assert faults.attempts == 3


def test_transaction_conflicts_are_retried_with_backoff(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool", limit=2)
    dep = make_deployment(ddb)
    run = make_run(dep, 1)
    ddb.create_runs([run])
    reasons = [{"Code": "TransactionConflict", "Message": "conflict"}] + [{"Code": "None"}] * 3
    faults = Faults(
        ddb, "TransactWriteItems", lambda: fault("TransactionCanceledException", CancellationReasons=reasons), times=2
    )
    assert [r.id for r in ddb.admit([pending(run)])] == [run.id]
    assert faults.attempts == 3 and ddb.metrics["transaction_retries"] == 2


def test_endless_conflicts_lose_the_race_without_an_error(ddb: DynamoDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dispatcher.store.dynamodb.TRANSACTION_ATTEMPTS", 3)
    make_pool(ddb, "pool")
    dep = make_deployment(ddb)
    run = make_run(dep, 1)
    ddb.create_runs([run])
    reasons = [{"Code": "TransactionConflict"}] + [{"Code": "None"}] * 3
    Faults(ddb, "TransactWriteItems", lambda: fault("TransactionCanceledException", CancellationReasons=reasons), 99)
    assert ddb.admit([pending(run)]) == []
    assert ddb.get_run(run.id).state is StateType.SCHEDULED  # type: ignore[union-attr]


def test_other_client_errors_are_wrapped_with_table_and_request_id(ddb: DynamoDBStore) -> None:
    Faults(ddb, "GetItem", lambda: fault("ValidationException", "One or more parameter values were invalid"), 1)
    with pytest.raises(StoreError) as caught:
        ddb.get_setting("k")
    message = str(caught.value)
    assert ddb.table in message and "REQ-INJECTED-42" in message and "GetItem" in message
    assert "ValidationException" in message and caught.value.__cause__ is None


def test_a_real_refusal_from_moto_is_wrapped_too(ddb: DynamoDBStore) -> None:
    with pytest.raises(StoreError, match=rf"PutItem on table '{ddb.table}' failed: ValidationException"):
        ddb.put_setting("big", "x" * 410_000)  # over DynamoDB's 400 KB item size


def test_a_missing_table_is_one_clear_sentence(dynamodb_endpoint: str) -> None:
    store = DynamoDBStore("no-such-table", region="us-east-1", endpoint_url=dynamodb_endpoint)
    with pytest.raises(StoreError) as caught:
        store.list_pools()
    assert str(caught.value).startswith("DynamoDB table 'no-such-table' does not exist in us-east-1")
    assert "store init" in str(caught.value) and "\n" not in str(caught.value)


def test_an_endpoint_that_is_down_is_one_clear_sentence(dynamodb_endpoint: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = DynamoDBStore("t-down", region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(StoreError, match=rf"cannot reach DynamoDB at http://127.0.0.1:{port} \(table 't-down'\)"):
        store.get_pool("p")


# items, indexes, TTL ---------------------------------------------------------------------------------------
def test_index_keys_follow_the_state_and_finished_runs_expire(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool")
    dep = make_deployment(ddb)
    run = make_run(dep, 1)
    ddb.create_runs([run])
    item = raw(ddb, run.id)
    assert item["due_pk"] == {"S": "pool/default"} and "active_pk" not in item and "expires" not in item
    [admitted] = ddb.admit([pending(run)])
    item = raw(ddb, run.id)
    assert "due_pk" not in item and item["active_pk"] == {"S": "pool"}
    assert ddb.save_run(admitted, admitted.moved(StateType.COMPLETED, source="test")[0])
    item = raw(ddb, run.id)
    assert "due_pk" not in item and "active_pk" not in item
    assert abs(int(item["expires"]["N"]) - (time.time() + 30 * 86400)) < 120


def test_retention_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHPOOL_RUN_RETENTION_DAYS", "2")
    assert DynamoDBStore("t-ret", region="us-east-1")._retention_seconds == 2 * 86400
    monkeypatch.setenv("PUSHPOOL_RUN_RETENTION_DAYS", "soon")
    with pytest.raises(ConfigError, match="PUSHPOOL_RUN_RETENTION_DAYS must be a number of days"):
        DynamoDBStore("t-ret", region="us-east-1")


def test_a_release_that_finds_a_slot_at_zero_counts_drift(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool", limit=3)
    dep = make_deployment(ddb)
    run = make_run(dep, 1)
    ddb.create_runs([run])
    [admitted] = ddb.admit([pending(run)])
    key = pool_slot("pool")
    assert ddb.repair_slot(key, ddb.slots([key])[key], 0)  # drift: the pool slot lost its count
    assert ddb.save_run(admitted, admitted.moved(StateType.FAILED, source="test")[0])
    keys = [pool_slot("pool"), queue_slot("pool", "default"), deployment_slot(dep.id)]
    assert [s.active for s in ddb.slots(keys).values()] == [0, 0, 0]
    assert ddb.metrics["slot_release_drift"] == 1


def test_store_init_is_idempotent_and_builds_the_schema(ddb: DynamoDBStore) -> None:
    assert ddb.init() is False  # the fixture created it
    table = ddb.client.describe_table(TableName=ddb.table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted(g["IndexName"] for g in table["GlobalSecondaryIndexes"]) == sorted(schema.index_names())
    ttl = ddb.client.describe_time_to_live(TableName=ddb.table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}


def test_urls_carry_table_region_and_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("dynamodb://my.table?region=eu-west-1&endpoint_url=http://127.0.0.1:9")
    assert isinstance(store, DynamoDBStore) and store._dynamodb is None  # the client is built on first use
    assert (store.table, store.region, store.endpoint_url) == ("my.table", "eu-west-1", "http://127.0.0.1:9")
    assert open_store(store.url).url == store.url
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(StoreError, match="names no region"):
        open_store("dynamodb://tbl")
    with pytest.raises(StoreError, match="unknown parameter 'regoin'"):
        open_store("dynamodb://tbl?regoin=x")
    with pytest.raises(StoreError, match="needs a table name"):
        open_store("dynamodb://?region=x")
    with pytest.raises(StoreError, match="is not valid"):
        open_store("dynamodb://a?region=x")


def test_the_sqlite_path_never_imports_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dispatcher.cli import app\n"
        f"r = CliRunner().invoke(app, ['--store', 'sqlite:///{tmp_path}/s.db', 'work-pool', 'ls'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# the CLI ---------------------------------------------------------------------------------------------------
def test_the_cli_runs_on_dynamodb(dynamodb_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHPOOL_PROCESS_DIR", str(tmp_path / "processes"))
    url = f"dynamodb://{_table()}?region=us-east-1&endpoint_url={dynamodb_endpoint}"
    runner = CliRunner()

    def ok(*args: str) -> str:
        result = runner.invoke(app, ["--store", url, *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    assert "Store ready" in ok("store", "init")
    assert "Store ready" in ok("store", "init")  # idempotent
    ok("work-pool", "create", "p", "--concurrency-limit", "2")
    assert [p["name"] for p in json.loads(ok("work-pool", "ls", "-o", "json"))] == ["p"]
    command = json.dumps({"command": [sys.executable, "-c", "pass"]})
    ok("deployment", "create", "d", "--pool", "p", "--job-variables", command)
    ok("deployment", "run", "d")
    summary = json.loads(ok("dispatch", "--once", "-o", "json"))
    assert len(summary["admitted"]) == 1 and len(summary["submitted"]) == 1, summary
    open_store(url).drop()  # type: ignore[attr-defined]


def test_the_cli_says_one_sentence_when_the_table_is_missing(dynamodb_endpoint: str) -> None:
    url = f"dynamodb://absent-table?region=us-east-1&endpoint_url={dynamodb_endpoint}"
    result = CliRunner().invoke(app, ["--store", url, "work-pool", "ls"])
    assert result.exit_code == StoreError.exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: DynamoDB table 'absent-table' does not exist in us-east-1")
    assert "Traceback" not in result.output


def test_plan_reads_no_more_due_runs_than_free_slots(ddb: DynamoDBStore) -> None:
    make_pool(ddb, "pool", limit=2)
    dep = make_deployment(ddb)
    ddb.create_runs([make_run(dep, i) for i in range(40)])
    seen: list[int] = []
    ddb.client.meta.events.register(
        "before-parameter-build.dynamodb.Query",
        lambda params, **_: seen.append(params.get("Limit", 0)) if params.get("IndexName") == "due" else None,
    )
    result = admit_pass.admit_pool(ddb, "pool", T0)
    assert len(result.admitted) == 2 and seen == [2]


def test_serve_runs_on_dynamodb(ddb: DynamoDBStore) -> None:
    """`pushpool serve` on the DynamoDB store: passes admit and submit, the API answers from the same table."""
    import threading
    import urllib.request

    from dispatcher import deployments, pools
    from dispatcher.dispatch import Dispatcher
    from dispatcher.providers.base import Providers
    from dispatcher.providers.fake import FakeProvider
    from dispatcher.serve import Server
    from dispatcher.states import StateType

    pools.create_pool(ddb, "p", concurrency_limit=1)
    deployments.create_deployment(ddb, "d", pool="p", job_variables={"command": "true"})
    runs = [deployments.run_deployment(ddb, "d") for _ in range(2)]
    fake = FakeProvider()
    dispatcher = Dispatcher(ddb, providers=Providers({"process": fake}))
    server = Server(ddb, port=0, interval=0.2, api_token="t", dispatcher=dispatcher)
    thread = threading.Thread(target=server.run, kwargs={"duration": 30})
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(fake.launches) < 1:
            time.sleep(0.1)
        request = urllib.request.Request(f"{server.url}/work_pools/p", headers={"Authorization": "Bearer t"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.load(answer)["status"] == "READY"
    finally:
        server.stop()
        thread.join(timeout=30)
    states = sorted(r.state for r in (ddb.get_run(run.id) for run in runs) if r is not None)
    assert states == [StateType.PENDING, StateType.SCHEDULED]  # the pool limit of 1 held
    assert len(fake.launches) == 1


# parameters kept apart ---------------------------------------------------------------------------------------
class Queries:
    """The key conditions of the store's Query requests: a read of parameter chunks names their prefix."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.conditions: list[str] = []
        store.client.meta.events.register("provide-client-params.dynamodb.Query", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        values = json.dumps(params.get("ExpressionAttributeValues", {}))
        self.conditions.append(f"{params.get('KeyConditionExpression')} {values}")

    def of_parameters(self) -> list[str]:
        return [c for c in self.conditions if schema.PARAMETERS_PREFIX in c]


def test_large_parameters_leave_the_run_item_and_admission_as_small_ones(ddb: DynamoDBStore) -> None:
    from test_store_conformance import large_parameters

    make_pool(ddb, "small")
    make_pool(ddb, "large")
    small_dep = make_deployment(ddb, "small-dep", pool="small")
    large_dep = make_deployment(ddb, "large-dep", pool="large")
    big = large_parameters()
    ddb.create_runs([make_run(small_dep, i).model_copy(update={"parameters": {"i": i}}) for i in range(20)])
    ddb.create_runs([make_run(large_dep, 100 + i).model_copy(update={"parameters": big}) for i in range(20)])
    small_item, large_item = raw(ddb, "run-00000"), raw(ddb, "run-00100")
    # The run item (and so every index projecting its data) carries the size of the parameters only.
    assert len(large_item["data"]["S"]) - len(small_item["data"]["S"]) < 100
    assert len(large_item["data"]["S"]) < 2048

    requests, queries = Requests(ddb), Queries(ddb)
    assert len(admit_pool(ddb, "small", T0).admitted) == 20
    small_ops = Counter(requests.ops)
    requests.reset()
    assert len(admit_pool(ddb, "large", T0).admitted) == 20
    assert requests.ops == small_ops and small_ops["TransactWriteItems"] == 1
    assert queries.of_parameters() == []  # admission never reads them


def test_parameter_items_expire_with_their_run_and_go_when_it_is_deleted(ddb: DynamoDBStore) -> None:
    from test_store_conformance import large_parameters

    from dispatcher.flow_runs import retry_run

    def chunks() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = ddb.client.query(
            TableName=ddb.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": "RUN#run-00001"}, ":p": {"S": schema.PARAMETERS_PREFIX}},
            ConsistentRead=True,
        )["Items"]
        return items

    make_pool(ddb, "pool")
    dep = make_deployment(ddb)
    # Over one chunk (256 KB): two items, each well under DynamoDB's 400 KB.
    ddb.create_runs([make_run(dep, 1).model_copy(update={"parameters": large_parameters(300 * 1024)})])
    assert [c["sk"]["S"] for c in chunks()] == ["PARAMS#0000", "PARAMS#0001"]
    assert all(len(c["chunk"]["B"]) <= schema.PARAMETERS_CHUNK_BYTES and "expires" not in c for c in chunks())
    [admitted] = ddb.admit([pending(ddb.get_run("run-00001"))])  # type: ignore[arg-type]
    assert ddb.save_run(admitted, admitted.moved(StateType.FAILED, source="test")[0])
    expiry = int(raw(ddb, "run-00001")["expires"]["N"])
    assert [abs(int(c["expires"]["N"]) - expiry) <= 2 for c in chunks()] == [True, True]
    retried = retry_run(ddb, "run-00001")  # back to SCHEDULED: neither the run nor its parameters expire
    assert "expires" not in raw(ddb, "run-00001") and all("expires" not in c for c in chunks())
    cancelled, _ = retried.moved(StateType.CANCELLED, source="test")
    assert ddb.save_run(retried, cancelled)
    assert all("expires" in c for c in chunks())
    stored = ddb.get_run("run-00001")
    assert stored is not None and ddb.delete_run(stored)
    assert chunks() == []


def test_a_finished_runs_expiry_dates_from_its_end_and_no_op_rewrites_never_push_it_later(
    ddb: DynamoDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_store_conformance import large_parameters

    from dispatcher.callbacks import SECRET_ENV, apply_callback, master_secret, run_token
    from dispatcher.flow_runs import retry_run
    from dispatcher.models import utcnow
    from dispatcher.signing import sign

    monkeypatch.delenv(SECRET_ENV, raising=False)
    make_pool(ddb, "pool")
    dep = make_deployment(ddb)
    ddb.create_runs([make_run(dep, 1).model_copy(update={"parameters": large_parameters(300 * 1024)})])
    run = ddb.get_run("run-00001")
    assert run is not None
    # The run ran and ended an hour ago (its records dated so): its expiry counts from then.
    ended_at = utcnow() - timedelta(hours=1)
    [admitted] = ddb.admit([Admission(run, run.moved(StateType.PENDING, source="test", now=ended_at)[0])])
    assert ddb.save_run(admitted, admitted.moved(StateType.COMPLETED, source="test", now=ended_at)[0])
    expected = int(ended_at.timestamp()) + ddb._retention_seconds

    def expiries() -> list[int | None]:
        items = ddb.client.query(
            TableName=ddb.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "RUN#run-00001"}},
            ConsistentRead=True,
        )["Items"]
        return [int(item["expires"]["N"]) if "expires" in item else None for item in items]

    assert expiries() == [expected] * 3  # the run item and its two parameter chunks
    # Its job, still holding the token, keeps reporting: each report is recorded (a no-op) and rewrites the
    # run item, and none of them moves its expiry later, nor past its parameters'.
    token = run_token(master_secret(ddb), dep.id, "run-00001")
    for i, state in enumerate(["RUNNING", "COMPLETED", "FAILED"]):
        body = json.dumps({"state": state, "message": f"late {i}"}).encode()
        after = apply_callback(ddb, "run-00001", body, sign(token, body, int(time.time()) - i))
        assert after.state is StateType.COMPLETED and not after.state_history[-1].applied
    assert expiries() == [expected] * 3
    # A retry revives it (no expiry); its new end dates a new expiry, for the run and its parameters alike.
    retried = retry_run(ddb, "run-00001")
    assert expiries() == [None] * 3
    ended, _ = retried.moved(StateType.CANCELLED, source="test")
    assert ddb.save_run(retried, ended)
    again = expiries()
    assert len(again) == 3 and len(set(again)) == 1 and (again[0] or 0) > expected + 3000


def test_a_run_whose_parameters_expired_first_still_ends_and_says_so(ddb: DynamoDBStore) -> None:
    from test_store_conformance import large_parameters

    from dispatcher.errors import NotFound

    make_pool(ddb, "pool")
    dep = make_deployment(ddb)
    ddb.create_runs([make_run(dep, 1).model_copy(update={"parameters": large_parameters()})])
    ddb.client.delete_item(TableName=ddb.table, Key={"pk": {"S": "RUN#run-00001"}, "sk": {"S": "PARAMS#0000"}})
    run = ddb.get_run("run-00001")
    assert run is not None
    # The state change that would mark them for expiry finds them gone and is written all the same.
    assert ddb.save_run(run, run.moved(StateType.CANCELLED, source="test")[0])
    with pytest.raises(NotFound, match="parameters of flow run run-00001 are gone"):
        ddb.run_parameters(run)


def test_a_dispatch_pass_reads_large_parameters_only_when_the_job_cannot_fetch_them(ddb: DynamoDBStore) -> None:
    from test_store_conformance import large_parameters

    pools.create_pool(ddb, "pool")
    deployments.create_deployment(ddb, "dep", pool="pool", job_variables={"command": "true"})
    queries = Queries(ddb)
    for base_url, reads in (("https://cb.example", 0), ("", 1)):
        run = deployments.run_deployment(ddb, "dep", parameters=large_parameters(100 * 1024))
        provider = FakeProvider()
        dispatcher = Dispatcher(
            ddb,
            providers=Providers({"process": provider}),
            settings=Settings(),
            clock=lambda: T0 + timedelta(days=400),
            callback_base_url=base_url,
        )
        queries.conditions.clear()
        try:
            assert dispatcher.run_pass().submitted == [run.id]
        finally:
            dispatcher.close()
        assert len(queries.of_parameters()) == reads, (base_url, queries.conditions)
        [(_, job)] = provider.launches
        # With a callback URL the job reads them itself; without one they go inline (100 KB fit one variable).
        assert ("PUSHPOOL_PARAMETERS_URL" in job["env"]) == bool(base_url)
        assert ("PUSHPOOL_PARAMETERS" in job["env"]) == (not base_url)
