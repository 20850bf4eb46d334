"""The AWS Lambda handlers, called as Lambda calls them, against moto's server (ECS, EC2, CloudWatch Logs,
Secrets Manager) and a DynamoDB store on moto.

Events have the shapes AWS delivers: an EventBridge scheduled event for `dispatch`, an SQS batch of
EventBridge "ECS Task State Change" events for `ecs_events`, an API Gateway HTTP API (payload 2.0) event for
`http`. moto ignores RunTask's `clientToken`; a re-submission is kept single by the orphan lookup
(ListTasks(startedBy=run id)), which is what these tests exercise. Tracing is off (POWERTOOLS_TRACE_DISABLED),
except in the tracing tests, which run a handler in a process of its own that sends its X-Ray segments to a
UDP socket standing in for the X-Ray daemon.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from botocore.config import Config
from ecs_fakes import ACCOUNT, AWS_TEST_ENV, AWS_UNSET, REGION, MotoServer, make_vpc, task_state_change
from lambda_stub import LambdaStub
from typer.testing import CliRunner

import handlers.aws_lambda as aws_lambda
from dispatcher import signing
from dispatcher.admit_pass import admit_pool
from dispatcher.aws_wakeups import DISPATCH_FUNCTION_ENV, WAKE_SOURCE, LambdaWakeups
from dispatcher.callbacks import master_secret, run_token
from dispatcher.cli import app as cli_app
from dispatcher.deployments import create_deployment, run_deployment, update_deployment
from dispatcher.errors import InvalidInput
from dispatcher.models import FlowRun
from dispatcher.pools import create_pool
from dispatcher.providers.ecs import CANCEL_REASON, ECSProvider
from dispatcher.schedules import parse_schedule
from dispatcher.states import StateType
from dispatcher.store import open_store
from dispatcher.store.base import Admission, Store, pool_slot

ROOT = Path(__file__).resolve().parent.parent
API_TOKEN = "api-token-for-tests"
CALLBACK_BASE = "https://abc123.execute-api.us-east-1.amazonaws.com"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/flows:7"


# -- Lambda's side: context and event shapes --------------------------------------------------------------------


class LambdaContext:
    """What the Lambda runtime hands a handler, as far as powertools reads it."""

    def __init__(self, function_name: str = "pushpool-dispatch", remaining_ms: int = 60_000) -> None:
        self.function_name = function_name
        self.remaining_ms = remaining_ms
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/03/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def scheduled_event() -> dict[str, Any]:
    """An EventBridge schedule's event (rate or cron rule)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/pushpool-dispatch"],
        "detail": {},
    }


def sqs_record(body: str) -> dict[str, Any]:
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now_ms,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:pushpool-ecs-events",
        "awsRegion": REGION,
    }


def sqs_batch(*bodies: str) -> dict[str, Any]:
    """What the SQS event source mapping delivers: EventBridge put each event's JSON in a message body."""
    return {"Records": [sqs_record(body) for body in bodies]}


def http_event(
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    stage: str = "$default",
    base64_body: bool = False,
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0 (a function URL sends the same shape)."""
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": urlencode(query or {}),
        "headers": {
            "accept": "application/json",
            "content-length": str(len(body or b"")),
            "content-type": "application/json",
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "user-agent": "pushpool-run/0.1",
            "x-amzn-trace-id": "Root=1-65f1c2a0-0123456789abcdef01234567",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            **{k.lower(): v for k, v in (headers or {}).items()},
        },
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "pushpool-run/0.1",
            },
            "requestId": "Kq3gNiK3oAMEYgQ=",
            "routeKey": "$default",
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": base64_body,
    }
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = base64.b64encode(body).decode() if base64_body else body.decode()
    return event


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_TEST_ENV.items():
            mp.setenv(key, value)
        for key in AWS_UNSET:
            mp.delenv(key, raising=False)
        server = MotoServer().start()
        yield server
        server.stop()


def _client(moto: MotoServer, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=moto.url, config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def vpc_id(moto: MotoServer) -> str:
    vpc, _ = make_vpc(_client(moto, "ec2"), "10.50.0.0/16", ["10.50.1.0/24"])
    return vpc


@dataclass
class World:
    """One test's AWS account: a DynamoDB store, an ECS cluster, an ecs:push pool and a deployment on it."""

    store: Store
    store_url: str
    moto: MotoServer
    ecs: Any
    cluster: str
    pool: str
    deployment: str

    def run(self, deployment: str | None = None) -> FlowRun:
        return run_deployment(self.store, deployment or self.deployment)

    def run_at(self, when: datetime, deployment: str | None = None) -> FlowRun:
        return run_deployment(self.store, deployment or self.deployment, scheduled_time=when)

    def get(self, run: FlowRun) -> FlowRun:
        found = self.store.get_run(run.id)
        assert found is not None
        return found

    def tasks_of(self, run: FlowRun) -> list[str]:
        """Every task ECS knows that the run started, running or stopped."""
        arns: list[str] = []
        for desired in ("RUNNING", "STOPPED"):
            arns += self.ecs.list_tasks(cluster=self.cluster, startedBy=run.id, desiredStatus=desired)["taskArns"]
        return arns

    def task(self, arn: str) -> dict[str, Any]:
        task: dict[str, Any] = self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn], include=["TAGS"])["tasks"][0]
        return task

    def active(self) -> int:
        return self.store.slots([pool_slot(self.pool)])[pool_slot(self.pool)].active


@pytest.fixture
def world(moto: MotoServer, vpc_id: str, dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    table = f"t-{uuid.uuid4().hex[:12]}"
    url = f"dynamodb://{table}?" + urlencode({"region": REGION, "endpoint_url": dynamodb_endpoint})
    store = open_store(url)
    store.init()  # type: ignore[attr-defined]
    for key, value in {
        "PUSHPOOL_STORE": url,
        "AWS_ENDPOINT_URL": moto.url,  # ECS, EC2, Logs and Secrets Manager clients built by pushpool reach moto
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PUSHPOOL_API_TOKEN": API_TOKEN,
        "PUSHPOOL_CALLBACK_BASE_URL": CALLBACK_BASE,
    }.items():
        monkeypatch.setenv(key, value)
    unset = ("PUSHPOOL_SECRET", "PUSHPOOL_SECRET_ARN", "PUSHPOOL_SECRET_PARAMETER", "_HANDLER", DISPATCH_FUNCTION_ENV)
    for key in unset:
        monkeypatch.delenv(key, raising=False)
    ecs = _client(moto, "ecs")
    cluster = f"pushpool-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    pool = create_pool(
        store, "ecs-pool", type="ecs:push", job_variables={"image": IMAGE, "cluster": cluster, "vpc_id": vpc_id}
    )
    deployment = create_deployment(
        store,
        "nightly-load",
        pool=pool.name,
        job_variables={"command": "pushpool-run -- python -m flows.nightly", "env": {"MODE": "full"}},
        parameters={"day": "2026-03-01"},
    )
    aws_lambda.reset_runtime()
    yield World(store, url, moto, ecs, cluster, pool.name, deployment.name)
    aws_lambda.reset_runtime()
    store.drop()  # type: ignore[attr-defined]
    store.close()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """The handlers' structured log lines (powertools writes JSON, one object per line)."""
    handler = aws_lambda.logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    lines: list[dict[str, Any]] = []
    yield lines
    handler.setStream(previous)  # type: ignore[attr-defined]


def read_logs(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = aws_lambda.logger.registered_handler.stream  # type: ignore[attr-defined]
    lines[:] = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return lines


def emf_metrics(out: str) -> dict[str, float]:
    """Metric values from the EMF documents powertools printed (the last value of each name wins)."""
    values: dict[str, float] = {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "pushpool"
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                values[metric["Name"]] = value[-1] if isinstance(value, list) else value
    return values


def dispatch() -> dict[str, Any]:
    return aws_lambda.dispatch(scheduled_event(), LambdaContext("pushpool-dispatch"))


def ecs_events(*events: dict[str, Any]) -> dict[str, Any]:
    return aws_lambda.ecs_events(sqs_batch(*(json.dumps(e) for e in events)), LambdaContext("pushpool-ecs-events"))


def http(event: dict[str, Any]) -> tuple[int, Any]:
    response = aws_lambda.http(event, LambdaContext("pushpool-http"))
    body = response.get("body") or ""
    return response["statusCode"], json.loads(body) if body else None


def signed_callback(store: Store, run: FlowRun, report: dict[str, Any], *, token: str | None = None) -> dict[str, Any]:
    body = json.dumps(report).encode()
    token = token or run_token(master_secret(store), run.deployment_id, run.id)
    header = signing.sign(token, body, int(time.time()))
    return http_event("POST", f"/callbacks/runs/{run.id}", body=body, headers={signing.SIGNATURE_HEADER: header})


def stopped(run: FlowRun, arn: str, **kwargs: Any) -> dict[str, Any]:
    return task_state_change(arn=arn, run_id=run.id, **kwargs)


# -- cold start -----------------------------------------------------------------------------------------------


FORBIDDEN = ("google", "azure", "modal", "typer", "rich", "click", "aws_xray_sdk")
ON_FIRST_USE = ("jsonschema", "croniter")
"""Imported where a template is checked or a cron evaluated, never at a cold start."""
FUNCTION_ONLY = {
    "aws_lambda_powertools.utilities.parser.models": "ecs_events",
    "aws_lambda_powertools.utilities.batch": "ecs_events",
    "aws_lambda_powertools.event_handler": "http",
    "dispatcher.api": "http",
}
"""Modules only one function needs: the others' cold starts must not pay for them."""


@pytest.mark.parametrize("function", [None, "dispatch", "ecs_events", "http"])
def test_cold_start_imports_boto3_powertools_and_the_core_only(function: str | None) -> None:
    code = "import json, sys\nimport handlers.aws_lambda\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {k: v for k, v in os.environ.items() if k != "_HANDLER"}
    env.update(AWS_TEST_ENV, PUSHPOOL_STORE="dynamodb://t?region=us-east-1")
    if function is not None:
        env["_HANDLER"] = f"handlers/aws_lambda.{function}"  # as Lambda sets it from the function's Handler
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(result.stdout))
    tops = {name.split(".")[0] for name in loaded}
    assert not tops & set(FORBIDDEN), sorted(tops & set(FORBIDDEN))
    assert not tops & set(ON_FIRST_USE), sorted(tops & set(ON_FIRST_USE))
    assert "dispatcher.cli" not in loaded and "dispatcher.providers.process" not in loaded
    assert {"aws_lambda_powertools", "pydantic", "dispatcher"} <= tops
    wrong = {module for module, owner in FUNCTION_ONLY.items() if module in loaded and owner != function}
    assert not wrong, f"{function or 'the bare import'} loaded {sorted(wrong)}"
    if function is not None:
        # Under Lambda the function's own modules, boto3 and the store's backend load at init.
        assert set(aws_lambda.PRELOAD[function]) <= loaded
        assert "dispatcher.store.dynamodb" in loaded and "boto3" in tops


# -- tracing --------------------------------------------------------------------------------------------------
TRACE_ID = "1-6760f3a2-0123456789abcdef01234567"
IN_LAMBDA = "\n".join(
    [
        "import json, sys",
        "sys.path.insert(0, 'tests')",
        "from test_handlers_aws import LambdaContext, scheduled_event",
        "import handlers.aws_lambda as aws_lambda",
        "tracer = aws_lambda.runtime.__dict__.get('tracer') is not None",  # built, and not None
        "print('=>', json.dumps({'xray': 'aws_xray_sdk.core' in sys.modules, 'tracer': tracer}))",
        "if sys.argv[1] == 'dispatch':",
        "    print('=>', json.dumps(aws_lambda.dispatch(scheduled_event(), LambdaContext('pushpool-dispatch'))))",
    ]
)
"""A Lambda instance: `_HANDLER` names the function, init imports, then (for dispatch) one invocation."""


def in_lambda(function: str, daemon: socket.socket, **env: str) -> list[dict[str, Any]]:
    """Run `function` as a traced Lambda instance would; what it printed after `=>` (its logs go between)."""
    host, port = daemon.getsockname()
    lambda_env = {
        **os.environ,
        "_HANDLER": f"handlers/aws_lambda.{function}",
        "LAMBDA_TASK_ROOT": str(ROOT),
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_XRAY_DAEMON_ADDRESS": f"{host}:{port}",
        "_X_AMZN_TRACE_ID": f"Root={TRACE_ID};Parent=53995c3f42cd8ad8;Sampled=1",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", IN_LAMBDA, function],
        cwd=ROOT,
        env=lambda_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line[2:]) for line in result.stdout.splitlines() if line.startswith("=>")]


def segments(daemon: socket.socket) -> list[dict[str, Any]]:
    """Every segment document the X-Ray SDK sent (each datagram: a header line, then the document)."""
    daemon.settimeout(0.5)
    found = []
    with contextlib.suppress(TimeoutError):
        while True:
            header, _, body = daemon.recv(65536).decode().partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            found.append(json.loads(body))
    return found


@pytest.fixture
def xray_daemon() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        yield daemon


def test_dispatch_traces_each_provider_call_as_an_x_ray_subsegment(world: World, xray_daemon: socket.socket) -> None:
    run = world.run()

    loaded, answer = in_lambda("dispatch", xray_daemon)

    assert loaded == {"xray": True, "tracer": True}  # built at init, where Lambda expects it
    assert answer["submitted"] == 1
    sent = segments(xray_daemon)
    assert sent and all(doc["trace_id"] == TRACE_ID for doc in sent)
    submit = [doc for doc in sent if doc["name"] == "## ecs:push submit"]
    assert len(submit) == 1 and submit[0]["annotations"]["idempotency_key"].startswith(run.id)
    # botocore's RunTask is patched by the Tracer: it nests inside the provider's subsegment.
    nested = [
        (doc["name"], doc.get("aws", {}).get("operation")) for doc in sent if doc.get("parent_id") == submit[0]["id"]
    ]
    assert ("ecs", "RunTask") in nested, [(d["name"], d.get("parent_id"), d.get("aws")) for d in sent]
    assert world.get(run).state is StateType.PENDING


@pytest.mark.parametrize("function", ["ecs_events", "http"])
def test_functions_without_provider_calls_never_load_the_x_ray_sdk(function: str, xray_daemon: socket.socket) -> None:
    (loaded,) = in_lambda(function, xray_daemon, PUSHPOOL_STORE="dynamodb://t?region=us-east-1", **AWS_TEST_ENV)
    assert loaded == {"xray": False, "tracer": False}


def test_dispatch_with_tracing_disabled_loads_no_x_ray_sdk(world: World, xray_daemon: socket.socket) -> None:
    run = world.run()

    loaded, answer = in_lambda("dispatch", xray_daemon, POWERTOOLS_TRACE_DISABLED="true")

    assert loaded == {"xray": False, "tracer": False}
    assert answer["submitted"] == 1 and world.get(run).state is StateType.PENDING
    assert segments(xray_daemon) == []


# -- dispatch -------------------------------------------------------------------------------------------------


def test_dispatch_starts_each_run_s_task_with_its_overrides_tags_and_started_by(
    world: World, capsys: pytest.CaptureFixture[str], logs: list[dict[str, Any]]
) -> None:
    update_deployment(world.store, world.deployment, concurrency_limit=2)
    runs = [world.run() for _ in range(3)]

    answer = dispatch()

    assert (answer["admitted"], answer["submitted"], answer["waiting"]) == (2, 2, 1)
    submitted = [world.get(r) for r in runs if world.get(r).state is StateType.PENDING]
    assert len(submitted) == 2 and all(r.state_name == "InfrastructurePending" for r in submitted)
    assert sorted(world.ecs.list_tasks(cluster=world.cluster)["taskArns"]) == sorted(
        str(r.infrastructure_id) for r in submitted
    )
    for run in submitted:
        assert world.tasks_of(run) == [run.infrastructure_id]
        task = world.task(str(run.infrastructure_id))
        assert task["startedBy"] == run.id
        override = task["overrides"]["containerOverrides"][0]
        assert override["name"] == "pushpool"
        assert override["command"] == ["pushpool-run", "--", "python", "-m", "flows.nightly"]
        env = {item["name"]: item["value"] for item in override["environment"]}
        assert env["PUSHPOOL_RUN_ID"] == run.id and env["MODE"] == "full"
        assert env["PUSHPOOL_CALLBACK_URL"] == f"{CALLBACK_BASE}/callbacks/runs/{run.id}"
        assert env["PUSHPOOL_CALLBACK_TOKEN"] == run_token(master_secret(world.store), run.deployment_id, run.id)
        assert json.loads(env["PUSHPOOL_PARAMETERS"]) == {"day": "2026-03-01"}
        tags = {tag["key"]: tag["value"] for tag in task["tags"]}
        assert tags["pushpool.io/run-id"] == run.id
        assert (tags["pushpool.io/pool"], tags["pushpool.io/deployment"]) == (world.pool, world.deployment)

    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["Admitted"] == 2 and metrics["Submitted"] == 2 and metrics["Waiting"] == 1
    assert metrics["SubmitFailures"] == 0 and metrics["CounterRepairs"] == 0
    assert 0 <= metrics["DispatchLag"] < 60 and answer["lag_seconds"] == metrics["DispatchLag"]
    lines = read_logs(logs)
    summary = next(line for line in lines if str(line["message"]).startswith("dispatch pass:"))
    assert sorted(summary["summary"]["submitted"]) == sorted(r.id for r in submitted)
    assert summary["function_name"] == "pushpool-dispatch"
    assert sorted(line["run_id"] for line in lines if line["message"] == "run submitted") == sorted(
        r.id for r in submitted
    )


def test_a_submission_ecs_refuses_is_counted_and_logged_with_its_run(
    world: World, capsys: pytest.CaptureFixture[str], logs: list[dict[str, Any]]
) -> None:
    create_deployment(world.store, "elsewhere", pool=world.pool, job_variables={"cluster": "no-such-cluster"})
    run = world.run("elsewhere")
    dispatch()
    crashed = world.get(run)
    assert crashed.state is StateType.CRASHED and "Cluster not found" in str(crashed.state_history[-1].message)
    assert emf_metrics(capsys.readouterr().out)["SubmitFailures"] == 1
    assert any(line.get("run_id") == run.id and "crashed" in line["message"] for line in read_logs(logs))
    assert world.active() == 0


# -- ECS task state changes -----------------------------------------------------------------------------------


def _dispatched(world: World, n: int) -> list[tuple[FlowRun, str]]:
    runs = [world.run() for _ in range(n)]
    assert dispatch()["submitted"] == n
    return [(world.get(r), str(world.get(r).infrastructure_id)) for r in runs]


def test_task_state_changes_move_runs_as_spec_6_says_and_release_their_slots(world: World) -> None:
    started = _dispatched(world, 6)
    assert world.active() == 6
    (ok, ok_arn), (bad, bad_arn), (unpulled, unpulled_arn), (spot, spot_arn), (ours, our_arn), (up, up_arn) = started
    answer = ecs_events(
        stopped(ok, ok_arn, exit_code=0),
        stopped(bad, bad_arn, exit_code=3),
        stopped(
            unpulled,
            unpulled_arn,
            exit_code=None,
            stop_code="TaskFailedToStart",
            stopped_reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)",
            started=False,
        ),
        stopped(
            spot,
            spot_arn,
            exit_code=143,
            stop_code="SpotInterruption",
            stopped_reason="Your Spot Task was interrupted.",
        ),
        stopped(ours, our_arn, exit_code=143, stop_code="UserInitiated", stopped_reason=CANCEL_REASON),
        stopped(up, up_arn, last_status="RUNNING", version=2),
    )
    assert answer == {"batchItemFailures": []}
    states = {r.id: world.get(r).state for r, _ in started}
    assert states == {
        ok.id: StateType.COMPLETED,
        bad.id: StateType.FAILED,
        unpulled.id: StateType.CRASHED,
        spot.id: StateType.CRASHED,
        ours.id: StateType.CANCELLED,
        up.id: StateType.RUNNING,
    }
    assert "exited with code 3" in str(world.get(bad).state_history[-1].message)
    assert "CannotPullContainerError" in str(world.get(unpulled).state_history[-1].message)
    assert world.active() == 1, "five ended and freed their slots; the running one holds its own"


def test_duplicate_and_out_of_order_events_are_no_ops(world: World, logs: list[dict[str, Any]]) -> None:
    [(run, arn)] = _dispatched(world, 1)
    running = stopped(run, arn, last_status="RUNNING", version=2)
    done = stopped(run, arn, exit_code=0, version=5, someFieldOf2030={"nested": [1, 2]})
    assert ecs_events(running, done) == {"batchItemFailures": []}
    after = world.get(run)
    assert after.state is StateType.COMPLETED
    assert [r.source for r in after.state_history if r.applied][-2:] == [
        f"ecs:{arn.rsplit('/', 1)[-1]}:2",
        f"ecs:{arn.rsplit('/', 1)[-1]}:5",
    ]

    # Redelivered (same task and version, a new SQS message) and late (RUNNING after STOPPED): nothing moves.
    late = stopped(run, arn, last_status="RUNNING", version=3)
    assert ecs_events(done, running, late) == {"batchItemFailures": []}
    final = world.get(run)
    assert final.state is StateType.COMPLETED
    assert len(final.state_history) == len(after.state_history) + 1, "only the unseen version is recorded"
    assert final.state_history[-1].applied is False and final.state_history[-1].state is StateType.RUNNING
    assert world.active() == 0
    assert {line.get("run_id") for line in read_logs(logs) if line["message"] == "ecs task state change"} == {run.id}


def test_a_malformed_record_fails_alone(world: World, logs: list[dict[str, Any]]) -> None:
    [(run, arn)] = _dispatched(world, 1)
    good = sqs_record(json.dumps(stopped(run, arn, exit_code=0)))
    not_json = sqs_record("{'detail-type': 'ECS Task State Change'")
    no_arn = task_state_change(run_id=run.id)
    del no_arn["detail"]["taskArn"]
    missing_arn = sqs_record(json.dumps(no_arn))
    other = sqs_record(json.dumps({**task_state_change(), "detail-type": "ECS Container Instance State Change"}))
    foreign = sqs_record(json.dumps(task_state_change(run_id=str(uuid.uuid4()))))  # a task of no run we know
    service = task_state_change(started=True)
    service["detail"].update(startedBy="ecs-svc/1234567890", overrides={"containerOverrides": []}, tags=[])
    service_task = sqs_record(json.dumps(service))
    batch = {"Records": [not_json, good, missing_arn, other, foreign, service_task]}

    answer = aws_lambda.ecs_events(batch, LambdaContext("pushpool-ecs-events"))

    failed = [item["itemIdentifier"] for item in answer["batchItemFailures"]]
    assert failed == [not_json["messageId"], missing_arn["messageId"]]
    assert world.get(run).state is StateType.COMPLETED
    errors = [line for line in read_logs(logs) if line["level"] == "ERROR"]
    assert [line["message_id"] for line in errors] == failed and all("malformed" in e["message"] for e in errors)


# -- HTTP: callbacks and the management API -------------------------------------------------------------------


def test_signed_callbacks_move_the_run_and_forged_ones_change_nothing(world: World) -> None:
    [(run, _)] = _dispatched(world, 1)

    status, body = http(signed_callback(world.store, run, {"state": "RUNNING"}))
    assert status == 200 and body == {"id": run.id, "state": "RUNNING", "state_name": "Running", "applied": True}

    forged = signed_callback(world.store, run, {"state": "COMPLETED", "exit_code": 0}, token="0" * 64)
    assert http(forged)[0] == 401
    unsigned = http_event("POST", f"/callbacks/runs/{run.id}", body=b'{"state": "COMPLETED"}')
    assert http(unsigned)[0] == 401
    stale_body = b'{"state": "COMPLETED"}'
    token = run_token(master_secret(world.store), run.deployment_id, run.id)
    stale = signing.sign(token, stale_body, int(time.time()) - 3600)
    assert (
        http(
            http_event("POST", f"/callbacks/runs/{run.id}", body=stale_body, headers={signing.SIGNATURE_HEADER: stale})
        )[0]
        == 401
    )
    # An unknown run is answered exactly as a forged signature: run ids cannot be probed.
    nobody = run.model_copy(update={"id": "no-such-run"})
    assert http(signed_callback(world.store, nobody, {"state": "RUNNING"})) == http(
        signed_callback(world.store, run, {"state": "RUNNING"}, token="0" * 64)
    )
    assert world.get(run).state is StateType.RUNNING and world.active() == 1

    # A function URL may hand the body over base64-encoded; the signature is over the bytes sent.
    done = signed_callback(world.store, run, {"state": "COMPLETED", "exit_code": 0})
    done["body"] = base64.b64encode(done["body"].encode()).decode()
    done["isBase64Encoded"] = True
    status, body = http(done)
    assert status == 200 and body["state"] == "COMPLETED"
    assert world.active() == 0


def test_management_api_needs_the_bearer_token_and_answers_on_any_stage(world: World) -> None:
    run = world.run()
    assert http(http_event("GET", f"/flow_runs/{run.id}"))[0] == 401
    wrong = http_event("GET", f"/flow_runs/{run.id}", headers={"Authorization": "Bearer nope"})
    assert http(wrong)[0] == 401
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    status, body = http(http_event("GET", f"/flow_runs/{run.id}", headers=auth, stage="prod"))
    assert status == 200 and body["id"] == run.id and body["state"] == "SCHEDULED"
    status, body = http(http_event("GET", "/flow_runs", headers=auth, query={"pool": world.pool, "limit": "5"}))
    assert status == 200 and [r["id"] for r in body] == [run.id]
    assert http(http_event("GET", "/flow_runs", headers=auth, query={"colour": "red"}))[0] == 422
    status, body = http(http_event("GET", "/nowhere", headers=auth))
    assert status == 404 and "no route" in body["error"]


def test_the_dashboard_signs_in_and_reads_its_session_from_payload_cookies(world: World) -> None:
    # Payload 2.0 moves the Cookie header into `cookies`; API Gateway serves HTTPS only, so the cookie is Secure.
    host = "abc123.execute-api.us-east-1.amazonaws.com"
    form = urlencode({"token": API_TOKEN, "next": "/ui"}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded", "origin": f"https://{host}"}
    response = aws_lambda.http(
        http_event("POST", "/ui/login", body=form, headers=headers), LambdaContext("pushpool-http")
    )
    assert response["statusCode"] == 303
    set_cookie = response["headers"]["Set-Cookie"]
    assert "; Secure" in set_cookie and "HttpOnly" in set_cookie and API_TOKEN not in set_cookie
    page = http_event("GET", "/ui")
    page["cookies"] = ["other=1", set_cookie.split(";")[0]]
    response = aws_lambda.http(page, LambdaContext("pushpool-http"))
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"].startswith("text/html")
    assert f'data-pool="{world.pool}"' in response["body"]
    refused = aws_lambda.http(http_event("GET", "/ui"), LambdaContext("pushpool-http"))
    assert refused["statusCode"] == 303 and refused["headers"]["Location"].startswith("/ui/login")


def test_behind_iam_the_dashboard_says_to_use_serve(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHPOOL_API_AUTH", "iam")
    aws_lambda.reset_runtime()
    response = aws_lambda.http(http_event("GET", "/ui"), LambdaContext("pushpool-http"))
    assert response["statusCode"] == 404 and "pushpool serve" in response["body"]


def test_cancelling_through_the_api_stops_the_task_and_its_stop_event_ends_the_run(world: World) -> None:
    [(run, arn)] = _dispatched(world, 1)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}

    status, body = http(http_event("POST", f"/flow_runs/{run.id}/cancel", headers=auth))
    assert status == 200 and body["state"] == "CANCELLING"
    assert world.task(arn)["lastStatus"] != "STOPPED"

    dispatch()  # the pass asks ECS to stop the task
    task = world.task(arn)
    assert (task["desiredStatus"], task["lastStatus"]) == ("STOPPED", "STOPPED")
    assert task["stoppedReason"] == CANCEL_REASON
    assert world.get(run).state is StateType.CANCELLING and world.active() == 1, "the slot is held until ECS confirms"

    event = stopped(run, arn, exit_code=143, stop_code="UserInitiated", stopped_reason=task["stoppedReason"])
    assert ecs_events(event) == {"batchItemFailures": []}
    assert world.get(run).state is StateType.CANCELLED and world.active() == 0


def test_cancelling_a_modal_run_through_the_http_function_needs_no_modal_token(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The http function calls no provider: a cancel is a store write (and a wake of the dispatch function, whose
    pass stops the job with the token it reads, as the ECS test above shows). So it needs no Modal token."""
    monkeypatch.setenv(aws_lambda.MODAL_TOKEN_SECRET_ENV, "pushpool/no-such-modal-token")  # read it, and it shows
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(key, raising=False)
    create_pool(world.store, "modal-pool", type="modal:push", job_variables={"image": "python:3.12-slim"})
    create_deployment(world.store, "modal-dep", pool="modal-pool", job_variables={"command": "python -m flows.x"})
    run = world.run("modal-dep")
    [admitted] = world.store.admit([Admission(run, run.moved(StateType.PENDING, source="dispatcher")[0])])
    sandbox = "sb-0123456789abcdef"
    launched = admitted.moved(
        StateType.PENDING, name="InfrastructurePending", source="dispatcher", infrastructure_id=sandbox
    )[0]
    assert world.store.save_run(admitted, launched)

    with caplog.at_level(logging.DEBUG):
        status, body = http(http_event("POST", f"/flow_runs/{run.id}/cancel", headers=AUTH))
    assert status == 200 and body["state"] == "CANCELLING"
    stored = world.get(run)
    assert stored.state is StateType.CANCELLING and stored.infrastructure_id == sandbox
    assert world.store.slots([pool_slot("modal-pool")])[pool_slot("modal-pool")].active == 1, "held until stopped"
    assert "MODAL_TOKEN_ID" not in os.environ and "no-such-modal-token" not in caplog.text, "no token was read"


# -- re-submission after a crash ------------------------------------------------------------------------------


class LambdaStopped(BaseException):
    """The invocation dying mid-pass (a timeout, an out-of-memory kill): nothing after this line runs."""


def test_a_run_admitted_by_a_pass_that_died_before_submitting_is_launched_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHPOOL_RESUBMIT_GRACE_SECONDS", "0.01")  # Settings refuse 0; this is as good
    aws_lambda.reset_runtime()
    run = world.run()
    admitted = admit_pool(world.store, world.pool, datetime.now(UTC)).admitted
    assert [r.id for r in admitted] == [run.id] and world.get(run).infrastructure_id is None
    time.sleep(0.05)

    dispatch()
    assert world.tasks_of(run) == [world.get(run).infrastructure_id]
    dispatch()
    assert len(world.tasks_of(run)) == 1 and world.active() == 1


@pytest.mark.filterwarnings("ignore:No application metrics to publish")  # the pass that died emitted none
def test_a_task_launched_by_a_pass_that_died_before_recording_it_is_found_not_launched_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHPOOL_RESUBMIT_GRACE_SECONDS", "0.01")
    aws_lambda.reset_runtime()
    run = world.run()
    submit = ECSProvider.submit

    def dies_after_launch(
        self: ECSProvider, job: dict[str, Any], *, idempotency_key: str, resubmission: bool = False
    ) -> str:
        submit(self, job, idempotency_key=idempotency_key, resubmission=resubmission)
        raise LambdaStopped("the invocation ended between RunTask and recording its task")

    with monkeypatch.context() as patched:
        patched.setattr(ECSProvider, "submit", dies_after_launch)
        with pytest.raises(LambdaStopped):
            dispatch()
    launched = world.tasks_of(run)
    assert len(launched) == 1 and world.get(run).state is StateType.PENDING
    assert world.get(run).infrastructure_id is None

    aws_lambda.reset_runtime()  # the next invocation may land on a fresh instance: no cache survives
    time.sleep(0.05)
    dispatch()
    assert world.tasks_of(run) == launched and world.get(run).infrastructure_id == launched[0]
    dispatch()
    assert world.tasks_of(run) == launched


# -- secrets and logs ----------------------------------------------------------------------------------------


def test_the_callback_secret_comes_from_secrets_manager(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"from-secrets-manager-{uuid.uuid4().hex}"
    arn = _client(world.moto, "secretsmanager").create_secret(
        Name=f"pushpool-{uuid.uuid4().hex[:6]}", SecretString=secret
    )["ARN"]
    monkeypatch.setenv("PUSHPOOL_SECRET", "")  # restored (unset) after the test, whatever load_secret writes
    monkeypatch.setenv("PUSHPOOL_SECRET_ARN", arn)
    aws_lambda.reset_runtime()
    [(run, _)] = _dispatched(world, 1)
    assert os.environ["PUSHPOOL_SECRET"] == secret
    token = run_token(secret.encode(), run.deployment_id, run.id)
    assert http(signed_callback(world.store, run, {"state": "RUNNING"}, token=token))[0] == 200


def test_flow_run_logs_prints_the_cloudwatch_output_of_an_ecs_run(world: World) -> None:
    from typer.testing import CliRunner

    from dispatcher.cli import app

    create_deployment(
        world.store,
        "logged",
        pool=world.pool,
        job_variables={
            "configure_cloudwatch_logs": True,
            "execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole",
            "cloudwatch_logs_prefix": "nightly",
        },
    )
    run = world.run("logged")
    dispatch()
    arn = str(world.get(run).infrastructure_id)
    logs_client = _client(world.moto, "logs")
    stream = f"nightly/pushpool/{arn.rsplit('/', 1)[-1]}"  # as the awslogs driver names it
    with contextlib.suppress(logs_client.exceptions.ResourceAlreadyExistsException):
        logs_client.create_log_group(logGroupName="pushpool")
    logs_client.create_log_stream(logGroupName="pushpool", logStreamName=stream)
    now = int(time.time() * 1000)
    logs_client.put_log_events(
        logGroupName="pushpool",
        logStreamName=stream,
        logEvents=[{"timestamp": now, "message": "loading 42 rows"}, {"timestamp": now + 1, "message": "done"}],
    )

    result = CliRunner().invoke(app, ["--store", world.store_url, "flow-run", "logs", run.id])
    assert result.exit_code == 0, result.output
    assert f"--- output of {arn} ---" in result.output
    assert result.output.endswith("loading 42 rows\ndone\n")


def test_flow_run_logs_says_why_an_ecs_run_without_cloudwatch_logs_shows_no_output(world: World) -> None:
    from typer.testing import CliRunner

    from dispatcher.cli import app

    run = world.run()  # the world's deployment sends no logs to CloudWatch
    dispatch()

    result = CliRunner().invoke(app, ["--store", world.store_url, "flow-run", "logs", run.id])

    assert result.exit_code == 0, result.output
    assert "InfrastructurePending" in result.stdout and "--- output of" not in result.stdout
    assert result.stderr.startswith("No output shown: ") and "configure_cloudwatch_logs" in result.stderr


def test_the_openapi_document_and_its_page_answer_without_a_token(world: World) -> None:
    status, document = http(http_event("GET", "/openapi.json", stage="prod"))
    assert status == 200 and document["openapi"].startswith("3.1") and "/flow_runs" in document["paths"]
    page = aws_lambda.http(http_event("GET", "/docs"), LambdaContext("pushpool-http"))
    assert page["statusCode"] == 200 and page["headers"]["Content-Type"].startswith("text/html")
    assert "openapi.json" in page["body"] and "default-src 'none'" in page["headers"]["Content-Security-Policy"]
    assert http(http_event("GET", "/work_pools"))[0] == 401


# -- wake-ups and the coming minute (issue 16) ------------------------------------------------------------------
DISPATCH_FUNCTION = "pushpool-dispatch"


@pytest.fixture
def lambda_api(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaStub]:
    """Lambda's Invoke API on 127.0.0.1, running the dispatch handler as Lambda runs an Event invocation.

    The http and ecs_events functions reach it through AWS_ENDPOINT_URL_LAMBDA, as boto3 reads it.
    """
    stub = LambdaStub({DISPATCH_FUNCTION: lambda e, c: aws_lambda.dispatch(e, c)}, LambdaContext).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", stub.url)
    monkeypatch.setenv(DISPATCH_FUNCTION_ENV, DISPATCH_FUNCTION)
    aws_lambda.reset_runtime()
    yield stub
    stub.wait_idle()
    aws_lambda.reset_runtime()
    stub.stop()


def wake_event(pool: str | None, reason: str, not_before: float | None = None) -> dict[str, Any]:
    return {"source": WAKE_SOURCE, "pool": pool, "reason": reason, "not_before": not_before or time.time()}


def admitted_at(world: World, run: FlowRun) -> datetime:
    return next(r.time for r in world.get(run).state_history if r.state is StateType.PENDING and r.applied)


def test_a_run_due_inside_the_coming_minute_is_submitted_at_its_time_by_the_same_invocation(world: World) -> None:
    now = datetime.now(UTC)
    soon = world.run_at(now + timedelta(seconds=3))
    later = world.run_at(now + timedelta(minutes=5))

    started = time.monotonic()
    dispatch()  # the tick: nothing due yet; the pass learns when the next run falls due, and waits for it
    took = time.monotonic() - started

    assert world.get(soon).state is StateType.PENDING and world.tasks_of(soon) == [world.get(soon).infrastructure_id]
    assert soon.scheduled_time <= admitted_at(world, soon) <= soon.scheduled_time + timedelta(seconds=1)
    assert took >= 2.5, "the invocation waited for the run instead of leaving it to the next tick"
    assert world.get(later).state is StateType.SCHEDULED, "beyond the minute: the next tick's business"


def test_an_idle_tick_does_not_wait(world: World) -> None:
    world.run_at(datetime.now(UTC) + timedelta(minutes=2))  # beyond the minute: the next ticks' business
    started = time.monotonic()
    dispatch()
    assert time.monotonic() - started < 20, "a waiting tick would hold on for 40 s, its time limit less the reserve"


def test_a_due_time_past_the_invocation_s_limit_is_handed_to_a_new_invocation(
    world: World, lambda_api: LambdaStub
) -> None:
    soon = world.run_at(datetime.now(UTC) + timedelta(seconds=3))
    # One second left to wait in (the rest is kept for a pass): the run falls due after this invocation.
    context = LambdaContext(DISPATCH_FUNCTION, remaining_ms=int((aws_lambda.PASS_RESERVE + 1) * 1000))

    ticked = time.time()
    aws_lambda.dispatch(scheduled_event(), context)
    lambda_api.wait_idle()

    [handed] = lambda_api.of(DISPATCH_FUNCTION, "Event")
    assert handed.payload["pool"] == world.pool and handed.payload["reason"] == aws_lambda.RUN_DUE
    assert handed.error is None and handed.answer["submitted"] == 1, "the new invocation submitted it"
    assert handed.payload["not_before"] == pytest.approx(soon.scheduled_time.timestamp(), abs=0.01)
    # The tick's minute, where the new invocation's ends too: it does not start a minute of its own.
    assert handed.payload["until"] == pytest.approx(ticked + aws_lambda.runtime.lookahead, abs=1)
    assert world.get(soon).state is StateType.PENDING
    assert soon.scheduled_time <= admitted_at(world, soon) <= soon.scheduled_time + timedelta(seconds=1)


def test_a_hand_off_covers_only_the_rest_of_the_minute_that_handed_it_on(world: World) -> None:
    now = time.time()
    due = world.run_at(datetime.now(UTC))
    after = world.run_at(datetime.now(UTC) + timedelta(seconds=2))  # inside a minute of its own, past the handed one
    event = {**wake_event(world.pool, aws_lambda.RUN_DUE, now), "until": now + 0.5}

    answer = aws_lambda.dispatch(event, LambdaContext(DISPATCH_FUNCTION))

    assert answer["submitted"] == 1 and world.get(due).state is StateType.PENDING
    assert world.get(after).state is StateType.SCHEDULED, "a hand-off that covers a new minute chains for ever"


def test_a_wake_event_passes_over_its_pool_and_one_already_covered_costs_nothing(
    world: World, lambda_api: LambdaStub
) -> None:
    other = create_pool(world.store, "other-pool", type="ecs:push", job_variables={"cluster": world.cluster})
    create_deployment(world.store, "elsewhere", pool=other.name, job_variables={"image": IMAGE})
    mine, theirs = world.run(), world.run("elsewhere")
    client = boto3.client("lambda", region_name=REGION, endpoint_url=lambda_api.url)
    raised = time.time() - 1  # both raised before the first pass starts (by more than the clock-skew allowance)
    for _ in range(2):  # the second was raised before the first's pass started: that pass covers it
        answer = client.invoke(
            FunctionName=DISPATCH_FUNCTION,
            InvocationType="Event",
            Payload=json.dumps(wake_event(world.pool, "slot freed", raised)).encode(),
        )
        assert answer["StatusCode"] == 202
    lambda_api.wait_idle()

    first, second = lambda_api.of(DISPATCH_FUNCTION)
    assert first.error is None and first.answer["submitted"] == 1
    assert second.answer == {"covered": True}
    assert world.get(mine).state is StateType.PENDING and world.get(theirs).state is StateType.SCHEDULED


def test_a_wake_event_for_beyond_the_minute_is_refused_rather_than_waited_for(world: World) -> None:
    run = world.run()
    started = time.monotonic()
    event = wake_event(world.pool, aws_lambda.RUN_DUE, time.time() + 3600)
    answer = aws_lambda.dispatch(event, LambdaContext(DISPATCH_FUNCTION))
    assert answer == {"refused": "not_before is beyond the lookahead"}
    assert time.monotonic() - started < 20 and world.get(run).state is StateType.SCHEDULED


@pytest.mark.filterwarnings("ignore:No application metrics to publish")  # refused before any pass
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"not_before": -1}, "not_before"),
        ({"not_before": "soon"}, "not_before"),
        ({"pool": 7}, "pool"),
        ({"reason": ""}, "reason"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_malformed_wake_event_is_refused_in_one_sentence_and_passes_over_nothing(
    world: World, change: dict[str, Any], field: str
) -> None:
    run = world.run()
    with pytest.raises(InvalidInput) as refused:
        aws_lambda.dispatch({**wake_event(world.pool, "run created"), **change}, LambdaContext(DISPATCH_FUNCTION))
    assert f"'{field}'" in str(refused.value) and "\n" not in str(refused.value)
    assert world.get(run).state is StateType.SCHEDULED


def test_lambda_wakeups_send_one_invoke_per_window_and_never_leave_a_wake_uncovered(
    lambda_api: LambdaStub, world: World
) -> None:
    clock = [1_000.0]
    client = boto3.client("lambda", region_name=REGION, endpoint_url=lambda_api.url)
    sent: list[dict[str, Any]] = []
    wakeups = LambdaWakeups("nowhere", window=1.0, client=client, clock=lambda: clock[0])
    wakeups._invoke = lambda payload: sent.append(payload)  # type: ignore[method-assign]  # record, not deliver

    for _ in range(200):  # a burst inside one window: the first invoke's pass starts after all of them
        wakeups.wake("p", "slot freed")
    assert [(p["pool"], p["not_before"]) for p in sent] == [("p", 1_000.0)]
    clock[0] = 1_000.2  # the first pass may have read the store: the next wake gets a pass one window later
    wakeups.wake("p", "slot freed")
    clock[0] = 1_000.9
    wakeups.wake("p", "slot freed")  # covered by the trailing pass, which starts at 1001.0
    wakeups.wake("q", "run created")  # another pool is its own
    clock[0] = 1_005.0
    wakeups.wake("p", "slot freed")  # long after: at once
    wakeups.flush()
    assert [(p["pool"], p["not_before"]) for p in sent] == [
        ("p", 1_000.0),
        ("p", 1_001.0),
        ("q", 1_000.9),
        ("p", 1_005.0),
    ]
    assert (wakeups.invokes, wakeups.coalesced) == (4, 200)


def test_a_wake_needing_more_than_the_pending_invoke_does_is_sent_at_once(lambda_api: LambdaStub, world: World) -> None:
    clock = [1_000.0]
    sent: list[tuple[float, str]] = []
    wakeups = LambdaWakeups("nowhere", window=1.0, client=object(), clock=lambda: clock[0])
    wakeups._invoke = lambda payload: sent.append((payload["not_before"], payload["reason"]))  # type: ignore[method-assign]

    def at(when: float, reason: str) -> None:
        clock[0] = when
        wakeups.wake("p", reason)

    at(1_000.0, "slot freed")  # a look at the due index, at once
    at(1_000.5, "slot freed")  # a trailing look, one window later
    at(1_000.6, "run cancelled")  # a look would not stop the task: a pass, at once
    at(1_000.7, "slot freed")  # the trailing look covers it
    at(1_000.8, "schedule changed")  # a pass that also covers the coming minute: at once
    wakeups.flush()
    assert sent == [
        (1_000.0, "slot freed"),
        (1_001.0, "slot freed"),
        (1_000.6, "run cancelled"),
        (1_000.8, "schedule changed"),
    ]
    assert wakeups.coalesced == 1


def test_runs_created_to_fall_due_later_get_spans_that_never_overlap(lambda_api: LambdaStub, world: World) -> None:
    clock = [1_000.0]
    sent: list[tuple[str | None, float, float | None]] = []
    wakeups = LambdaWakeups("nowhere", window=1.0, lookahead=60.0, client=object(), clock=lambda: clock[0])
    wakeups._invoke = lambda p: sent.append((p["pool"], p["not_before"], p.get("until")))  # type: ignore[method-assign]

    def created(pool: str, due: float) -> None:
        wakeups.wake(pool, "run created", datetime.fromtimestamp(due, UTC))

    created("p", 1_030.0)  # waited for at its time, then the pool's due times to the end of the minute
    created("p", 1_040.0)  # inside that span: covered
    created("p", 1_020.0)  # before it: a span that ends where the pending one starts
    created("p", 1_025.0)  # covered by that one
    created("p", 1_100.0)  # beyond the minute: a tick covers its time, nothing is sent
    created("p", 1_000.0)  # due now: one pass now, no span
    created("q", 1_030.0)  # another pool is its own
    clock[0] = 1_031.0  # the first span's pass has started: it may wait past a new run's time, so covers nothing
    created("p", 1_045.0)
    wakeups.flush()

    assert sent == [
        ("p", 1_030.0, 1_060.0),
        ("p", 1_020.0, 1_030.0),
        ("p", 1_000.0, None),
        ("q", 1_030.0, 1_060.0),
        ("p", 1_045.0, 1_091.0),
    ]
    assert (wakeups.coalesced, wakeups.left_to_ticks) == (2, 1)
    # The spans sent while none had started never overlap: no two invocations pass at one due time. (The last
    # may overlap a started span, which may or may not reach its run: safety first.)
    spans = sorted((start, until) for pool, start, until in sent[:2])
    assert all(until <= following for (_, until), (following, _) in zip(spans, spans[1:], strict=False))


def test_a_run_created_due_now_gets_one_pass_and_its_invocation_does_not_wait(world: World) -> None:
    later = world.run_at(datetime.now(UTC) + timedelta(seconds=3))  # its own wake's span (or a tick) covers it
    due = world.run()

    answer = aws_lambda.dispatch(wake_event(world.pool, "run created"), LambdaContext(DISPATCH_FUNCTION))

    assert answer["submitted"] == 1 and world.get(due).state is StateType.PENDING
    assert world.get(later).state is StateType.SCHEDULED, "the invocation waited on for a run it was not woken for"


def test_a_span_waits_for_its_run_then_follows_the_pool_s_due_times_to_its_end(world: World) -> None:
    now = datetime.now(UTC)
    first = world.run_at(now + timedelta(seconds=1))
    second = world.run_at(now + timedelta(seconds=2.5))
    beyond = world.run_at(now + timedelta(seconds=6))  # past the span: another span's, or a tick's
    event = {**wake_event(world.pool, "run created", first.scheduled_time.timestamp()), "until": now.timestamp() + 4}

    aws_lambda.dispatch(event, LambdaContext(DISPATCH_FUNCTION))

    for run in (first, second):  # passed for by this invocation, at (never before) each run's time
        assert world.get(run).state is StateType.PENDING
        assert admitted_at(world, run) >= run.scheduled_time
    assert world.get(beyond).state is StateType.SCHEDULED


def test_a_wake_pass_does_only_what_its_event_needs_and_the_tick_does_the_rest(world: World) -> None:
    fire = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    schedule = parse_schedule({"interval": 3600, "anchor_date": fire.isoformat()})
    create_deployment(world.store, "hourly", pool=world.pool, schedules=[schedule], job_variables={"image": IMAGE})
    [(run, arn)] = _dispatched(world, 1)
    assert world.store.runs_of_deployment("hourly") != []  # the tick scheduled it
    update_deployment(world.store, "hourly", schedules=[parse_schedule({"interval": 1800})])
    http(http_event("POST", f"/flow_runs/{run.id}/cancel", headers=AUTH))
    before = len(world.store.runs_of_deployment("hourly"))
    context = LambdaContext(DISPATCH_FUNCTION)

    # A run created, a limit raised, a pool resumed: admission alone. No scheduler (no new run of the changed
    # schedule), no reconciler (the cancelled run's task is not stopped).
    for reason in ("run created", "limit raised", "pool resumed"):
        assert "admitted" in aws_lambda.dispatch(wake_event(world.pool, reason, time.time()), context)
    assert len(world.store.runs_of_deployment("hourly")) == before
    assert world.task(arn)["desiredStatus"] != "STOPPED"

    aws_lambda.dispatch(wake_event(world.pool, "run cancelled", time.time()), context)  # the reconciler stops it
    assert world.task(arn)["desiredStatus"] == "STOPPED"
    assert len(world.store.runs_of_deployment("hourly")) == before
    aws_lambda.dispatch(wake_event(world.pool, "schedule changed", time.time()), context)  # the scheduler runs
    assert len(world.store.runs_of_deployment("hourly")) > before


def test_a_look_at_the_due_index_covers_freed_slots_only(world: World) -> None:
    raised = time.time() - 1
    context = LambdaContext(DISPATCH_FUNCTION)
    assert aws_lambda.dispatch(wake_event(world.pool, "slot freed", raised), context) == {"nothing_due": True}
    assert aws_lambda.dispatch(wake_event(world.pool, "slot freed", raised), context) == {"covered": True}
    cancelled = aws_lambda.dispatch(wake_event(world.pool, "run cancelled", raised), context)
    assert "admitted" in cancelled, "a cancel needs the pass that stops its task, whatever was looked at"
    assert aws_lambda.dispatch(wake_event(world.pool, "run cancelled", raised), context) == {"covered": True}
    assert aws_lambda.dispatch(wake_event(world.pool, "run created", raised), context) == {"covered": True}
    scheduled = aws_lambda.dispatch(wake_event(world.pool, "schedule changed", raised), context)
    assert "admitted" in scheduled, "a schedule set needs the coming minute covered too"


def test_lambda_wakeups_never_raise_and_a_refused_invoke_leaves_the_pool_uncovered(
    lambda_api: LambdaStub, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    client = boto3.client(
        "lambda", region_name=REGION, endpoint_url=lambda_api.url, config=Config(retries={"max_attempts": 1})
    )
    wakeups = LambdaWakeups("no-such-function", client=client)
    wakeups.wake("p", "slot freed")
    wakeups.flush()
    assert wakeups.failures == 1 and "Function not found: no-such-function" in caplog.text
    wakeups.wake("p", "slot freed")  # nothing covers the pool: sent again at once
    wakeups.flush()
    assert (wakeups.invokes, wakeups.failures) == (2, 2)
    wakeups.close()


# -- each event source wakes the dispatcher: the tick is a minute away and never runs here ----------------------
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def submitted_soon(world: World, run: FlowRun, stub: LambdaStub, within: float = 15.0) -> FlowRun:
    """The run once a woken pass submitted it (polled; far sooner than the next tick, a minute away)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = world.get(run)
        if found.infrastructure_id is not None:
            stub.wait_idle()
            return found
        time.sleep(0.05)
    raise AssertionError(f"run {run.id} not submitted within {within} s: {world.get(run).state_name}")


def woken_for(stub: LambdaStub, pool: str) -> list[str]:
    """The reasons of the wake events the dispatch function received for `pool`."""
    return [i.payload["reason"] for i in stub.of(DISPATCH_FUNCTION, "Event") if i.payload.get("pool") == pool]


def test_a_run_created_through_the_http_function_is_submitted_by_the_pass_it_wakes(
    world: World, lambda_api: LambdaStub
) -> None:
    status, body = http(http_event("POST", f"/deployments/{world.deployment}/runs", body=b"{}", headers=AUTH))
    assert status == 201

    run = submitted_soon(world, world.get(FlowRun.model_validate(body)), lambda_api)

    assert run.state is StateType.PENDING and world.tasks_of(run) == [run.infrastructure_id]
    assert woken_for(lambda_api, world.pool) == ["run created"]
    [woken] = lambda_api.of(DISPATCH_FUNCTION)
    assert woken.error is None and woken.answer["submitted"] == 1


def test_a_run_created_with_the_cli_on_the_stack_s_store_is_submitted_by_the_pass_it_wakes(
    world: World, lambda_api: LambdaStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = CliRunner()
    monkeypatch.delenv(DISPATCH_FUNCTION_ENV)  # not an AWS stack's CLI: nothing to invoke, the tick takes the run
    unwoken = cli.invoke(cli_app, ["--store", world.store_url, "deployment", "run", world.deployment, "-o", "json"])
    assert unwoken.exit_code == 0, unwoken.stderr
    assert lambda_api.of(DISPATCH_FUNCTION) == []

    monkeypatch.setenv(DISPATCH_FUNCTION_ENV, DISPATCH_FUNCTION)
    result = cli.invoke(cli_app, ["--store", world.store_url, "deployment", "run", world.deployment, "-o", "json"])
    assert result.exit_code == 0, result.stderr

    run = submitted_soon(world, world.get(FlowRun.model_validate(json.loads(result.stdout))), lambda_api)
    assert woken_for(lambda_api, world.pool) == ["run created"]
    assert world.tasks_of(run) == [run.infrastructure_id]


def _one_slot_taken(world: World) -> tuple[FlowRun, str, FlowRun]:
    """A pool of one slot: a run holding it (submitted by a tick), and one due behind it."""
    http(http_event("PATCH", f"/work_pools/{world.pool}", body=b'{"concurrency_limit": 1}', headers=AUTH))
    first = world.run()
    assert dispatch()["submitted"] == 1
    waiting = world.run()  # created in the store, not through the API: nothing wakes for it
    assert dispatch()["waiting"] == 1 and world.get(waiting).state is StateType.SCHEDULED
    return world.get(first), str(world.get(first).infrastructure_id), waiting


def test_a_callback_that_frees_a_slot_gets_the_next_waiting_run_submitted(world: World, lambda_api: LambdaStub) -> None:
    first, _, waiting = _one_slot_taken(world)

    assert http(signed_callback(world.store, first, {"state": "RUNNING"}))[0] == 200
    assert woken_for(lambda_api, world.pool) == [], "a RUNNING report frees nothing"
    assert http(signed_callback(world.store, first, {"state": "COMPLETED", "exit_code": 0}))[0] == 200

    assert submitted_soon(world, waiting, lambda_api).state is StateType.PENDING
    assert woken_for(lambda_api, world.pool) == ["slot freed"]


def test_an_ecs_stopped_event_gets_the_next_waiting_run_submitted(world: World, lambda_api: LambdaStub) -> None:
    first, arn, waiting = _one_slot_taken(world)

    running = stopped(first, arn, last_status="RUNNING", version=2)
    assert ecs_events(running) == {"batchItemFailures": []}
    assert woken_for(lambda_api, world.pool) == []
    assert ecs_events(stopped(first, arn, exit_code=0, version=3)) == {"batchItemFailures": []}

    assert submitted_soon(world, waiting, lambda_api).state is StateType.PENDING
    assert woken_for(lambda_api, world.pool) == ["slot freed"]


def test_resuming_the_pool_through_the_http_function_gets_its_run_submitted(
    world: World, lambda_api: LambdaStub
) -> None:
    assert http(http_event("POST", f"/work_pools/{world.pool}/pause", headers=AUTH))[0] == 200
    run = world.run()
    assert dispatch()["admitted"] == 0

    assert http(http_event("POST", f"/work_pools/{world.pool}/resume", headers=AUTH))[0] == 200

    assert submitted_soon(world, run, lambda_api).state is StateType.PENDING
    assert woken_for(lambda_api, world.pool) == ["pool resumed"]


def test_raising_the_limit_through_the_http_function_gets_the_waiting_run_submitted(
    world: World, lambda_api: LambdaStub
) -> None:
    _, _, waiting = _one_slot_taken(world)

    patch = http_event("PATCH", f"/work_pools/{world.pool}", body=b'{"concurrency_limit": 2}', headers=AUTH)
    assert http(patch)[0] == 200

    assert submitted_soon(world, waiting, lambda_api).state is StateType.PENDING
    assert woken_for(lambda_api, world.pool) == ["limit raised"]


def test_a_burst_of_callbacks_costs_a_few_invokes_and_looks_and_the_last_look_comes_after_the_last_wake(
    world: World, lambda_api: LambdaStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.dispatch import Dispatcher
    from dispatcher.providers.base import Providers
    from dispatcher.providers.fake import FakeProvider

    window = 1.0
    monkeypatch.setenv("PUSHPOOL_WAKE_WINDOW_SECONDS", str(window))
    runtime = aws_lambda.reset_runtime()
    fake = Dispatcher(world.store, providers=Providers({"process": FakeProvider()}), lookahead=timedelta(seconds=60))
    runtime.__dict__["dispatcher"] = fake  # a process pool on the fake provider: 200 launches cost nothing
    create_pool(world.store, "burst", type="process", concurrency_limit=200)
    create_deployment(world.store, "burst-dep", pool="burst", job_variables={"command": "true"})
    runs = [run_deployment(world.store, "burst-dep") for _ in range(200)]
    assert dispatch()["submitted"] == 200
    behind = [run_deployment(world.store, "burst-dep") for _ in range(3)]  # due, waiting for a slot
    callbacks = [signed_callback(world.store, world.get(r), {"state": "COMPLETED", "exit_code": 0}) for r in runs]

    started = time.time()
    for event in callbacks:
        assert http(event)[0] == 200
    last_wake = time.time()
    lambda_api.wait_idle()

    wakeups = runtime.wakeups
    assert wakeups is not None
    assert wakeups.invokes + wakeups.coalesced == 200, "each callback freed a slot and woke its pool once"
    # One invoke per window at most (plus the first): a burst's size does not matter, only its length.
    assert wakeups.invokes <= (last_wake - started) / window + 2
    invocations = lambda_api.of(DISPATCH_FUNCTION)
    assert len(invocations) == wakeups.invokes and all(i.error is None for i in invocations)
    passes = [i for i in invocations if "admitted" in i.answer]
    looks = [i for i in invocations if "admitted" in i.answer or i.answer == {"nothing_due": True}]
    # The first freed slots took the three waiting runs; after that a freed slot found nothing due, cheaply.
    assert sum(i.answer.get("submitted", 0) for i in passes) == 3 and all(
        world.get(r).infrastructure_id for r in behind
    )
    assert 1 <= len(passes) < len(looks) <= wakeups.invokes
    # Every wake is followed by a look at the store: the last one reads after the last callback.
    assert max(max(i.started or 0, i.payload["not_before"]) for i in looks) >= last_wake - aws_lambda.CLOCK_SKEW
