"""The `ecs:push` provider against moto's ECS/EC2 server, with botocore's Stubber where moto falls short.

moto ignores `clientToken`, starts every task RUNNING and advances it one state per DescribeTasks; those
paths (idempotent RunTask, tasks on their way up, ECS errors) are played with Stubber, which checks each
request against the ECS API model.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber
from ecs_fakes import ACCOUNT, AWS_TEST_ENV, AWS_UNSET, REGION, MotoServer, make_vpc, task_arn, task_state_change

from dispatcher import templating
from dispatcher.errors import InvalidInput, ProviderError
from dispatcher.providers.base import JobState, Provider, Providers, provider_logs
from dispatcher.providers.ecs import (
    CANCEL_REASON,
    CONTENT_HASH_TAG,
    LOG_GROUP_ENV,
    ECSJobConfiguration,
    ECSProvider,
    build_run_request,
    build_task_definition,
    client_token,
    content_hash,
    event_to_status,
    make_infrastructure_id,
    split_infrastructure_id,
    started_by,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "ecs-push.json"
PREFECT_VARIABLES = {
    "image",
    "cpu",
    "memory",
    "cluster",
    "launch_type",
    "capacity_provider_strategy",
    "task_definition_arn",
    "family",
    "task_role_arn",
    "execution_role_arn",
    "vpc_id",
    "network_configuration",
    "container_name",
    "configure_cloudwatch_logs",
    "cloudwatch_logs_options",
    "cloudwatch_logs_prefix",
    "env",
    "labels",
    "name",
    "command",
    "task_start_timeout_seconds",
    "auto_deregister_task_definition",
    "match_latest_revision_in_family",
    "aws_credentials",
    "stream_output",
    "task_watch_poll_interval",
}


# -- fixtures and helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_TEST_ENV.items():
            mp.setenv(key, value)
        for key in AWS_UNSET:
            mp.delenv(key, raising=False)
        yield


@pytest.fixture(scope="module")
def moto(aws_env: None) -> Iterator[MotoServer]:
    server = MotoServer().start()
    # One state per DescribeTasks, as moto does by default; set here so another module's setting cannot leak in.
    server.set_transition("ecs::task", {"progression": "manual", "times": 1})
    yield server
    server.unset_transition("ecs::task")
    server.stop()


def _client(moto: MotoServer, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=moto.url, config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def ecs(moto: MotoServer) -> Any:
    return _client(moto, "ecs")


@pytest.fixture(scope="module")
def vpc(moto: MotoServer) -> dict[str, Any]:
    vpc_id, subnets = make_vpc(_client(moto, "ec2"), "10.40.0.0/16", ["10.40.1.0/24", "10.40.2.0/24"])
    return {"vpc_id": vpc_id, "subnets": subnets}


@pytest.fixture
def cluster(ecs: Any) -> str:
    # A cluster per test: moto's backend is shared by the whole session, and ListTasks counts must not mix.
    name = f"pushpool-{uuid.uuid4().hex[:10]}"
    ecs.create_cluster(clusterName=name)
    return name


@pytest.fixture
def provider(moto: MotoServer) -> ECSProvider:
    return ECSProvider(region=REGION, endpoint_url=moto.url)


def _template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return template


def render_job(
    job_variables: dict[str, Any],
    *,
    run_id: str | None = None,
    pool: str = "ecs pool",
    deployment: str = "nightly",
    run_variables: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A job as the dispatcher makes it: template validated, variables resolved, rendered, run context injected."""
    template = _template()
    templating.validate_template(template)
    values = templating.resolve_job_variables(template, None, job_variables, run_variables)
    job = templating.render(template["job_configuration"], values, {})
    run_id = run_id or str(uuid.uuid4())
    return templating.inject_run_context(
        job,
        run_id=run_id,
        deployment=deployment,
        pool=pool,
        queue="default",
        parameters={"day": "2026-03-01"} if parameters is None else parameters,
        callback_url=f"http://127.0.0.1:4300/callbacks/runs/{run_id}",
        callback_token="token-of-the-run",
        run_name="silent-heron",
    )


def _run_id(job: dict[str, Any]) -> str:
    return str(job["env"]["PUSHPOOL_RUN_ID"])


def _count_calls(provider: ECSProvider, operation: str) -> list[dict[str, Any]]:
    """Requests of one ECS operation made through the provider's client, recorded by a botocore event hook."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(params)

    provider.client.meta.events.register(f"provide-client-params.ecs.{operation}", record)
    return seen


def _tags(items: list[dict[str, str]]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


def _stubbed(**kwargs: Any) -> tuple[ECSProvider, Stubber]:
    client = boto3.client("ecs", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stubber = Stubber(client)
    stubber.activate()
    return ECSProvider(client, **kwargs), stubber


TD_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/flows:3"
EC2_TASK_DEFINITION = {
    "taskDefinitionArn": TD_ARN,
    "family": "flows",
    "revision": 3,
    "networkMode": "bridge",
    "status": "ACTIVE",
    "containerDefinitions": [{"name": "pushpool", "image": "flows:latest", "memory": 512}],
}


def _existing_definition_job(run_id: str) -> dict[str, Any]:
    return render_job(
        {"task_definition_arn": TD_ARN, "launch_type": "EC2", "cluster": "flows", "command": "python flow.py"},
        run_id=run_id,
    )


# -- the template and the model --------------------------------------------------------------------------------


def test_template_is_valid_and_its_rendered_default_passes_the_model(provider: ECSProvider) -> None:
    template = _template()
    templating.validate_template(template)
    properties = template["variables"]["properties"]
    assert set(properties) == PREFECT_VARIABLES
    assert properties["launch_type"]["enum"] == ["FARGATE", "EC2", "EXTERNAL", "FARGATE_SPOT"]
    assert properties["launch_type"]["default"] == "FARGATE"
    assert "default" not in properties["container_name"], "as Prefect's: the container is named pushpool when blank"

    job = provider.validate(render_job({"image": "flows:latest"}))
    config = ECSJobConfiguration.model_validate(job)
    assert config.container_name == "pushpool"
    assert config.task_run_request.launchType == "FARGATE"
    assert config.task_definition.containerDefinitions[0].image == "flows:latest"
    assert config.labels["pushpool.io/pool"] == "ecs pool"
    assert provider.validate(job) == job, "validate() is idempotent: its output validates to itself"


def test_every_variable_set_renders_into_a_job_the_model_accepts(provider: ECSProvider) -> None:
    job = provider.validate(
        render_job(
            {
                "image": "flows:2",
                "cpu": 512,
                "memory": 1024,
                "cluster": "prod",
                "launch_type": "FARGATE_SPOT",
                "family": "flows",
                "task_role_arn": "arn:aws:iam::123456789012:role/flow",
                "execution_role_arn": "arn:aws:iam::123456789012:role/exec",
                "vpc_id": "vpc-0a1b2c3d",
                "network_configuration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"]},
                "container_name": "flow",
                "configure_cloudwatch_logs": True,
                "cloudwatch_logs_options": {"awslogs-group": "flows"},
                "cloudwatch_logs_prefix": "nightly",
                "env": {"MODE": "full"},
                "labels": {"team": "data"},
                "name": "nightly-load",
                "command": ["python", "-m", "flows.nightly"],
            }
        )
    )
    assert job["task_definition"]["cpu"] == "512" and job["task_definition"]["containerDefinitions"][0]["cpu"] == 512
    assert job["container_name"] == "flow"
    assert job["command"] == ["python", "-m", "flows.nightly"]


def test_the_registry_gives_the_ecs_provider_without_touching_aws() -> None:
    loaded = Providers().get("ecs:push")
    assert isinstance(loaded, ECSProvider)
    assert loaded._client is None, "the client is built on first use, not at construction"
    typed: Provider = loaded  # the protocol, checked by mypy
    assert typed is loaded


def test_only_the_ecs_module_imports_boto3() -> None:
    code = textwrap.dedent(
        """
        import sys
        import dispatcher.dispatch, dispatcher.providers.base
        from dispatcher.providers.base import Providers
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
        assert not loaded, loaded
        import dispatcher.providers.ecs
        assert "boto3" in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({}, "image: is required"),
        (
            {"image": "x", "cloudwatch_logs_options": {"a": "b"}},
            "cloudwatch_logs_options: needs configure_cloudwatch_logs",
        ),
        ({"image": "x", "configure_cloudwatch_logs": True}, "execution_role_arn: is required"),
        ({"image": "x", "labels": {"aws:owner": "me"}}, "reserved by AWS"),
        ({"image": "x", "labels": {f"l{i}": "v" for i in range(48)}}, "at most 50 tags"),
        ({"image": "x", "command": "python 'unclosed"}, "command: cannot be split"),
    ],
)
def test_validate_names_the_field_and_the_rule(provider: ECSProvider, variables: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        provider.validate(render_job(variables))


def test_validate_rejects_what_the_provider_owns_and_what_ecs_would(provider: ECSProvider) -> None:
    job = render_job({"image": "x"})
    with pytest.raises(InvalidInput, match=r"setting of an ecs:push job; allowed: task_definition"):
        provider.validate({**job, "memory_limit": 5})
    with pytest.raises(InvalidInput, match=r"task_run_request: .*startedBy is set by pushpool"):
        provider.validate({**job, "task_run_request": {"startedBy": "me"}})
    with pytest.raises(InvalidInput, match=r"task_run_request.launchType: "):
        provider.validate({**job, "task_run_request": {"launchType": "LAMBDA"}})
    with pytest.raises(InvalidInput, match=r"container_name: .*no container named 'main'"):
        provider.validate({**render_job({"image": "x", "container_name": "flow"}), "container_name": "main"})
    bridge = {**job["task_definition"], "networkMode": "bridge"}
    with pytest.raises(InvalidInput, match=r"networkMode: 'bridge' does not work with launch type FARGATE"):
        provider.validate({**job, "task_definition": bridge})
    tiny = {"containerDefinitions": [{"name": "pushpool", "image": "x", "memory": 2}]}
    with pytest.raises(InvalidInput, match=r"task_definition.containerDefinitions\[0\].memory: "):
        provider.validate({**job, "task_definition": tiny})
    with pytest.raises(InvalidInput, match="an ecs:push job must be a JSON object"):
        provider.validate([])  # type: ignore[arg-type]


def test_a_task_definition_arn_needs_no_image(provider: ECSProvider) -> None:
    job = provider.validate(render_job({"task_definition_arn": TD_ARN}))
    assert job["task_definition_arn"] == TD_ARN
    # No container name: the described definition's container is found at submit (`_container_in`).
    assert "container_name" not in job


# -- pure mapping ----------------------------------------------------------------------------------------------


def test_the_task_definition_carries_resources_logs_and_a_family_per_deployment() -> None:
    job = render_job(
        {
            "image": "flows:1",
            "execution_role_arn": "arn:aws:iam::123456789012:role/exec",
            "configure_cloudwatch_logs": True,
            "cloudwatch_logs_options": {"awslogs-group": "flows"},
        },
        pool="etl pool",
        deployment="nightly/load",
    )
    config = ECSJobConfiguration.model_validate(job)
    definition = build_task_definition(config, region="eu-west-1")
    assert definition["family"] == "pushpool_etl-pool_nightly-load"
    assert (definition["cpu"], definition["memory"]) == ("1024", "2048")
    assert definition["requiresCompatibilities"] == ["FARGATE"] and definition["networkMode"] == "awsvpc"
    container = definition["containerDefinitions"][0]
    assert (container["cpu"], container["memory"]) == (1024, 2048)
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-create-group": "true",
            "awslogs-group": "flows",
            "awslogs-region": "eu-west-1",
            "awslogs-stream-prefix": "pushpool-logs_etl-pool_nightly-load",
        },
    }
    assert "environment" not in container, "the run's env goes in the overrides, so the definition stays shared"


def test_a_log_group_the_stack_made_is_used_without_asking_the_execution_role_to_create_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # awslogs-create-group needs logs:CreateLogGroup on the task execution role, which AWS's managed
    # AmazonECSTaskExecutionRolePolicy lacks: with the stack's group (it has a retention) the option is left out.
    variables = {
        "image": "flows:1",
        "configure_cloudwatch_logs": True,
        "execution_role_arn": "arn:aws:iam::123456789012:role/exec",
    }
    config = ECSJobConfiguration.model_validate(render_job(variables))
    definition = build_task_definition(config, region=REGION, log_group="/pushpool/prod/tasks")
    options = definition["containerDefinitions"][0]["logConfiguration"]["options"]
    assert options["awslogs-group"] == "/pushpool/prod/tasks"
    assert "awslogs-create-group" not in options
    monkeypatch.setenv(LOG_GROUP_ENV, "/pushpool/prod/tasks")
    assert ECSProvider(region=REGION)._log_group == "/pushpool/prod/tasks"
    monkeypatch.delenv(LOG_GROUP_ENV)
    assert ECSProvider(region=REGION)._log_group is None


def test_an_ec2_task_definition_gets_container_resources_and_keeps_ecs_network_default() -> None:
    config = ECSJobConfiguration.model_validate(render_job({"image": "flows:1", "launch_type": "EC2", "memory": 512}))
    definition = build_task_definition(config, region=REGION)
    assert definition["requiresCompatibilities"] == ["EC2"]
    assert "networkMode" not in definition and "cpu" not in definition
    assert definition["memory"] == "512"
    container = definition["containerDefinitions"][0]
    assert (container["cpu"], container["memory"]) == (1024, 512)


@pytest.mark.parametrize(
    ("variables", "launch_type", "strategy"),
    [
        ({}, "FARGATE", None),
        ({"launch_type": "EC2"}, "EC2", None),
        ({"launch_type": "FARGATE_SPOT"}, None, [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]),
        (
            {"capacity_provider_strategy": [{"capacityProvider": "spot-asg", "weight": 2, "base": 1}]},
            None,
            [{"capacityProvider": "spot-asg", "weight": 2, "base": 1}],
        ),
    ],
)
def test_run_request_uses_a_launch_type_or_a_capacity_provider_strategy_never_both(
    variables: dict[str, Any], launch_type: str | None, strategy: list[dict[str, Any]] | None
) -> None:
    job = render_job({"image": "x", **variables})
    config = ECSJobConfiguration.model_validate(job)
    request = build_run_request(
        config,
        task_definition_arn=TD_ARN,
        container_name="pushpool",
        network_configuration=None,
        run_id="r",
        idempotency_key="r-1",
    )
    assert request.get("launchType") == launch_type
    assert request.get("capacityProviderStrategy") == strategy


def test_tags_are_sanitised_and_labels_win() -> None:
    job = render_job({"image": "x", "labels": {"Name": "mine", "cost centre": "R&D #4"}}, pool="nightly (eu)")
    config = ECSJobConfiguration.model_validate(job)
    request = build_run_request(
        config,
        task_definition_arn=TD_ARN,
        container_name="pushpool",
        network_configuration=None,
        run_id="r",
        idempotency_key="r-1",
    )
    tags = _tags(request["tags"])
    assert tags["Name"] == "mine"
    assert tags["cost centre"] == "R_D _4"
    assert tags["pushpool.io/pool"] == "nightly _eu_"


def test_started_by_and_client_token_fit_ecs_limits() -> None:
    run_id = str(uuid.uuid4())
    assert started_by(run_id) == run_id
    assert client_token(f"{run_id}-2") == f"{run_id}-2"
    long_id = "deployment/with spaces/" + "x" * 80
    assert len(started_by(long_id)) <= 36 and started_by(long_id) == started_by(long_id)
    token = client_token(f"{long_id}-1")
    assert len(token) == 64 and token != client_token(f"{long_id}-2")


def test_infrastructure_ids_round_trip() -> None:
    long_arn = task_arn("prod", "abc123")
    assert make_infrastructure_id(long_arn, "prod") == long_arn
    assert split_infrastructure_id(long_arn) == ("prod", long_arn)
    short = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/abc123"
    cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"
    assert split_infrastructure_id(make_infrastructure_id(short, cluster_arn)) == (cluster_arn, short)
    with pytest.raises(ValueError, match="not an ECS task ARN"):
        split_infrastructure_id("fake-123")


# -- against moto ----------------------------------------------------------------------------------------------


def test_submit_starts_one_task_with_the_run_s_overrides_tags_and_network(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    job = provider.validate(
        render_job(
            {
                "image": "flows:1",
                "cluster": cluster,
                "vpc_id": vpc["vpc_id"],
                "command": "python -m flows 'a b'",
                "env": {"MODE": "full"},
                "labels": {"team": "data"},
            },
        )
    )
    run_id = _run_id(job)
    infra_id = provider.submit(job, idempotency_key=f"{run_id}-1")

    assert split_infrastructure_id(infra_id)[0] == cluster
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == [infra_id]
    assert ecs.list_tasks(cluster=cluster, startedBy=run_id)["taskArns"] == [infra_id]
    task = ecs.describe_tasks(cluster=cluster, tasks=[infra_id], include=["TAGS"])["tasks"][0]
    assert task["startedBy"] == run_id
    override = task["overrides"]["containerOverrides"][0]
    assert override["name"] == "pushpool"
    assert override["command"] == ["python", "-m", "flows", "a b"]
    env = {item["name"]: item["value"] for item in override["environment"]}
    assert env["PUSHPOOL_RUN_ID"] == run_id and env["MODE"] == "full"
    assert env["PUSHPOOL_CALLBACK_URL"].endswith(run_id) and json.loads(env["PUSHPOOL_PARAMETERS"]) == {
        "day": "2026-03-01"
    }
    tags = _tags(task["tags"])
    assert tags["pushpool.io/run-id"] == run_id
    assert tags["pushpool.io/pool"] == "ecs pool" and tags["pushpool.io/deployment"] == "nightly"
    assert tags["team"] == "data" and tags["Name"] == "silent-heron"
    subnet = next(d["value"] for d in task["attachments"][0]["details"] if d["name"] == "subnetId")
    assert subnet in vpc["subnets"]

    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"], include=["TAGS"])
    assert definition["taskDefinition"]["family"] == "pushpool_ecs-pool_nightly"
    assert definition["taskDefinition"]["containerDefinitions"][0]["image"] == "flows:1"
    assert CONTENT_HASH_TAG in _tags(definition["tags"])


def test_nothing_of_the_dispatcher_s_environment_reaches_the_task_or_its_definition(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task gets the job's env and its run context only; the dispatcher's secrets stay with the dispatcher."""
    secrets = {"PUSHPOOL_SECRET": "master-secret-value", "PUSHPOOL_API_TOKEN": "api-token-value"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    job = provider.validate(
        render_job({"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"], "env": {"MODE": "full"}})
    )
    infra_id = provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    task = ecs.describe_tasks(cluster=cluster, tasks=[infra_id])["tasks"][0]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    env = {item["name"] for item in task["overrides"]["containerOverrides"][0]["environment"]}
    assert env == set(job["env"])
    assert not any(container.get("environment") for container in definition["containerDefinitions"])
    sent = json.dumps([task, definition])
    for name, value in secrets.items():
        assert name not in sent and value not in sent, name
    assert "AWS_SECRET_ACCESS_KEY" not in sent and "AWS_SESSION_TOKEN" not in sent


def test_a_value_in_the_command_is_one_argument_and_never_shell_syntax(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    """The one command rule (dispatcher.arguments) holds for ECS: what reaches RunTask is the quoted script."""
    template = _template()
    template["job_configuration"]["command"] = "sh -c 'cd /tmp && echo deploying {{ target }}' {{ target }}"
    template["variables"]["properties"]["target"] = {"type": "string"}
    templating.validate_template(template)
    values = templating.resolve_job_variables(
        template,
        None,
        {"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"], "target": "prod; id > X"},
        None,
    )
    job = templating.render(template["job_configuration"], values, {})
    job = provider.validate(
        templating.inject_run_context(
            job,
            run_id=str(uuid.uuid4()),
            deployment="nightly",
            pool="ecs pool",
            queue="default",
            parameters={},
            callback_url="",
            callback_token="t",
            run_name="n",
        )
    )
    infra_id = provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    task = ecs.describe_tasks(cluster=cluster, tasks=[infra_id])["tasks"][0]
    assert task["overrides"]["containerOverrides"][0]["command"] == [
        "sh",
        "-c",
        "cd /tmp && echo deploying 'prod; id > X'",
        "prod; id > X",
    ]


def test_a_repeated_or_crashed_submission_finds_the_first_task(
    moto: MotoServer, provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    job = provider.validate(render_job({"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"]}))
    run_id = _run_id(job)
    lookups = _count_calls(provider, "ListTasks")
    first = provider.submit(job, idempotency_key=f"{run_id}-1")
    assert lookups == []  # a first submission relies on clientToken alone
    run_tasks = _count_calls(provider, "RunTask")

    # The dispatcher repeats an attempt it never recorded as a resubmission: ListTasks finds the task.
    assert provider.submit(job, idempotency_key=f"{run_id}-1", resubmission=True) == first
    assert lookups != []
    # A fresh dispatcher (a new Lambda instance) after a crash between "launched" and "recorded", even one
    # that moved on to the next attempt: ListTasks(startedBy=run id) finds the orphan.
    fresh = ECSProvider(region=REGION, endpoint_url=moto.url)
    fresh_run_tasks = _count_calls(fresh, "RunTask")
    assert fresh.submit(job, idempotency_key=f"{run_id}-2") == first
    assert run_tasks == [] and fresh_run_tasks == []
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == [first]

    # A stopped orphan counts too: the run's one launch has happened, whatever became of it.
    ecs.stop_task(cluster=cluster, task=first, reason="by hand")
    assert fresh.submit(job, idempotency_key=f"{run_id}-3") == first
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == [first]


def test_find_looks_up_a_run_s_task_by_started_by_in_any_cluster(
    moto: MotoServer, provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    job = provider.validate(render_job({"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"]}))
    run_id = _run_id(job)
    assert provider.find(f"{run_id}-1") is None  # nothing launched yet
    launched = provider.submit(job, idempotency_key=f"{run_id}-1")
    assert provider.find(f"{run_id}-1") == launched
    # A fresh dispatcher knows no cluster: it finds the task through ListClusters, and starts nothing.
    fresh = ECSProvider(region=REGION, endpoint_url=moto.url)
    run_tasks = _count_calls(fresh, "RunTask")
    assert fresh.find(f"{run_id}-1") == launched
    ecs.stop_task(cluster=cluster, task=launched, reason="by hand")
    assert fresh.find(f"{run_id}-1") == launched  # a stopped task is still the run's launch
    assert fresh.find(f"{uuid.uuid4()}-1") is None
    assert run_tasks == [] and ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == [launched]


def test_a_task_definition_is_registered_once_per_content_and_found_again_by_a_fresh_provider(
    moto: MotoServer, provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    deployment = f"d-{uuid.uuid4().hex[:8]}"

    def job(image: str) -> dict[str, Any]:
        variables = {"image": image, "cluster": cluster, "vpc_id": vpc["vpc_id"]}
        return provider.validate(render_job(variables, deployment=deployment))

    registrations = _count_calls(provider, "RegisterTaskDefinition")
    ids = [provider.submit(j, idempotency_key=f"{_run_id(j)}-1") for j in (job("flows:1"), job("flows:1"))]
    assert len(registrations) == 1

    fresh = ECSProvider(region=REGION, endpoint_url=moto.url)  # an empty in-process cache: ECS is the memory
    fresh_registrations = _count_calls(fresh, "RegisterTaskDefinition")
    lookups = _count_calls(fresh, "DescribeTaskDefinition")
    j = job("flows:1")
    ids.append(fresh.submit(j, idempotency_key=f"{_run_id(j)}-1"))
    assert fresh_registrations == [] and len(lookups) == 1
    j = job("flows:1")
    ids.append(fresh.submit(j, idempotency_key=f"{_run_id(j)}-1"))
    assert len(lookups) == 1, "a warm provider answers from its cache"

    j = job("flows:2")
    ids.append(fresh.submit(j, idempotency_key=f"{_run_id(j)}-1"))
    assert len(fresh_registrations) == 1
    revisions = [ecs.describe_tasks(cluster=cluster, tasks=[i])["tasks"][0]["taskDefinitionArn"] for i in ids]
    family = f"pushpool_ecs-pool_{deployment}"
    assert revisions == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{n}" for n in (1, 1, 1, 1, 2)]
    assert len(set(ids)) == 5


def test_concurrent_submits_of_new_content_register_it_once(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    jobs = [
        provider.validate(
            render_job({"image": "flows:7", "cluster": cluster, "vpc_id": vpc["vpc_id"]}, deployment=deployment)
        )
        for _ in range(6)
    ]
    registrations = _count_calls(provider, "RegisterTaskDefinition")
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda j: provider.submit(j, idempotency_key=f"{_run_id(j)}-1"), jobs))
    assert len(registrations) == 1
    assert sorted(ecs.list_tasks(cluster=cluster)["taskArns"]) == sorted(ids) and len(set(ids)) == 6


def test_a_given_task_definition_arn_is_used_as_is(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    arn = ecs.register_task_definition(
        family=f"own-{uuid.uuid4().hex[:8]}",
        containerDefinitions=[{"name": "worker", "image": "own:1", "memory": 512}],
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
    )["taskDefinition"]["taskDefinitionArn"]
    variables = {"task_definition_arn": arn, "cluster": cluster, "vpc_id": vpc["vpc_id"], "command": ["run"]}
    job = provider.validate(render_job(variables))
    registrations = _count_calls(provider, "RegisterTaskDefinition")
    infra_id = provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    task = ecs.describe_tasks(cluster=cluster, tasks=[infra_id])["tasks"][0]
    assert task["taskDefinitionArn"] == arn and registrations == []
    # It has no container named like the template's default, so its first container is the flow run's.
    assert task["overrides"]["containerOverrides"][0]["name"] == "worker"
    assert task["overrides"]["containerOverrides"][0]["command"] == ["run"]

    named = provider.validate(render_job({**variables, "container_name": "main"}))
    with pytest.raises(
        ProviderError, match=r"container_name: task definition .* has no container named 'main'"
    ) as caught:
        provider.submit(named, idempotency_key=f"{_run_id(named)}-1")
    assert caught.value.transient is False
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == [infra_id]


def test_status_follows_the_states_moto_walks_and_cancel_stops_the_task(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    def launch() -> str:
        job = provider.validate(render_job({"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"]}))
        return provider.submit(job, idempotency_key=f"{_run_id(job)}-1")

    finishing = launch()
    # moto starts a task RUNNING, then each DescribeTasks moves it on: DEACTIVATING, STOPPING, DEPROVISIONING,
    # STOPPED; its container always reports exit code 0.
    walked = [provider.status(finishing) for _ in range(5)]
    assert [s.state for s in walked] == [JobState.RUNNING] * 3 + [JobState.COMPLETED] * 2
    assert [s.message for s in walked[:3]] == ["task DEACTIVATING", "task STOPPING", "task DEPROVISIONING"]
    assert walked[-1].exit_code == 0

    cancelled = launch()
    provider.cancel(cancelled)
    status = provider.status(cancelled)
    assert status.state is JobState.CANCELLED and status.message == CANCEL_REASON
    stopped = ecs.describe_tasks(cluster=cluster, tasks=[cancelled])["tasks"][0]
    assert stopped["desiredStatus"] == "STOPPED" and stopped["stoppedReason"] == CANCEL_REASON

    unknown = task_arn(cluster)
    many = provider.status_many([finishing, unknown, "not-an-arn"])
    assert many[finishing].state is JobState.COMPLETED
    assert many[unknown].state is JobState.MISSING and many["not-an-arn"].state is JobState.MISSING
    assert provider.status(task_arn("no-such-cluster")).state is JobState.MISSING


# -- with botocore's Stubber -----------------------------------------------------------------------------------


def test_run_task_is_sent_with_the_same_client_token_for_the_same_key() -> None:
    """ECS returns the first task for a repeated clientToken: what saves two dispatchers racing on one run."""
    provider, stubber = _stubbed()
    run_id = str(uuid.uuid4())
    job = provider.validate(_existing_definition_job(run_id))
    arn = task_arn("flows")
    key = f"{run_id}-1"
    run_task_params = {
        "cluster": "flows",
        "launchType": "EC2",
        "taskDefinition": TD_ARN,
        "overrides": ANY,
        "tags": ANY,
        "startedBy": run_id,
        "clientToken": key,
    }
    for call in range(2):
        # Two racers submit the first attempt at once (no orphan lookup on a first submission)...
        if call == 0:
            stubber.add_response(
                "describe_task_definition", {"taskDefinition": EC2_TASK_DEFINITION}, {"taskDefinition": TD_ARN}
            )
        # ...and ECS, seeing the same clientToken, answers with the same task.
        task = {
            "taskArn": arn,
            "clusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/flows",
            "lastStatus": "PROVISIONING",
        }
        stubber.add_response("run_task", {"tasks": [task], "failures": []}, run_task_params)
    assert provider.submit(job, idempotency_key=key) == arn
    assert provider.submit(job, idempotency_key=key) == arn
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("last_status", "state"),
    [
        ("PROVISIONING", JobState.PENDING),
        ("PENDING", JobState.PENDING),
        ("ACTIVATING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
    ],
)
def test_status_of_a_task_on_its_way_up(last_status: str, state: JobState) -> None:
    provider, stubber = _stubbed()
    arn = task_arn("flows")
    task = {"taskArn": arn, "lastStatus": last_status, "desiredStatus": "RUNNING", "containers": [{"name": "pushpool"}]}
    stubber.add_response("describe_tasks", {"tasks": [task], "failures": []}, {"cluster": "flows", "tasks": [arn]})
    assert provider.status(arn).state is state


def test_status_many_asks_for_at_most_100_tasks_per_call_and_reports_ecs_failures() -> None:
    provider, stubber = _stubbed()
    arns = [task_arn("big", f"t{i:03d}") for i in range(150)]
    for batch in (arns[:100], arns[100:]):
        tasks = [{"taskArn": a, "lastStatus": "RUNNING"} for a in batch[:-1]]
        failures = [{"arn": batch[-1], "reason": "MISSING"}]
        stubber.add_response(
            "describe_tasks", {"tasks": tasks, "failures": failures}, {"cluster": "big", "tasks": batch}
        )
    statuses = provider.status_many(arns)
    stubber.assert_no_pending_responses()
    assert sum(s.state is JobState.RUNNING for s in statuses.values()) == 148
    assert statuses[arns[99]].state is JobState.MISSING and "MISSING" in (statuses[arns[99]].message or "")


@pytest.mark.parametrize(
    ("code", "message", "status", "transient"),
    [
        ("ThrottlingException", "Rate exceeded", 400, True),
        ("ServerException", "Service unavailable. Try again later.", 500, True),
        (
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/d is not authorized to perform: ecs:RunTask",
            400,
            False,
        ),
        ("ClientException", "Container.image repository flows:missing not found.", 400, False),
        ("InvalidParameterException", "Network Configuration must be provided", 400, False),
    ],
)
def test_run_task_errors_are_transient_or_permanent_in_ecs_s_words(
    code: str, message: str, status: int, transient: bool
) -> None:
    provider, stubber = _stubbed()
    run_id = str(uuid.uuid4())
    job = provider.validate(_existing_definition_job(run_id))
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_response("describe_task_definition", {"taskDefinition": EC2_TASK_DEFINITION})
    stubber.add_client_error(
        "run_task",
        service_error_code=code,
        service_message=message,
        http_status_code=status,
        response_meta={"RequestId": "req-4711"},
    )
    with pytest.raises(ProviderError) as caught:
        provider.submit(job, idempotency_key=f"{run_id}-1", resubmission=True)
    assert caught.value.transient is transient
    assert message in str(caught.value) and code in str(caught.value) and "req-4711" in str(caught.value)


def test_a_missing_cluster_is_permanent_and_capacity_shortage_transient() -> None:
    provider, stubber = _stubbed()
    run_id = str(uuid.uuid4())
    job = provider.validate(_existing_definition_job(run_id))
    stubber.add_client_error("list_tasks", "ClusterNotFoundException", "Cluster not found.", 400)
    with pytest.raises(ProviderError, match="Cluster not found") as caught:
        provider.submit(job, idempotency_key=f"{run_id}-1", resubmission=True)
    assert caught.value.transient is False

    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_response("describe_task_definition", {"taskDefinition": EC2_TASK_DEFINITION})
    failure = {"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/flows/1", "reason": "RESOURCE:MEMORY"}
    stubber.add_response("run_task", {"tasks": [], "failures": [failure]})
    with pytest.raises(ProviderError, match="RESOURCE:MEMORY") as caught:
        provider.submit(job, idempotency_key=f"{run_id}-1", resubmission=True)
    assert caught.value.transient is True


def test_a_refused_stopped_lookup_still_launches_once_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    # ECS documents startedBy as "the only filter"; should it refuse desiredStatus beside it, the resubmission
    # goes on (clientToken still guards it) instead of failing the run.
    provider, stubber = _stubbed()
    run_id = str(uuid.uuid4())
    job = provider.validate(_existing_definition_job(run_id))
    stubber.add_response("list_tasks", {"taskArns": []}, {"cluster": ANY, "startedBy": ANY})
    stubber.add_client_error(
        "list_tasks",
        "InvalidParameterException",
        "startedBy must be the only filter.",
        400,
        expected_params={"cluster": ANY, "startedBy": ANY, "desiredStatus": "STOPPED"},
    )
    stubber.add_response("describe_task_definition", {"taskDefinition": EC2_TASK_DEFINITION})
    launched = task_arn("flows")
    stubber.add_response("run_task", {"tasks": [{"taskArn": launched}]})
    with caplog.at_level("WARNING", logger="pushpool.providers.ecs"):
        arn = provider.submit(job, idempotency_key=f"{run_id}-2")
    assert arn == launched
    stubber.assert_no_pending_responses()
    assert "startedBy must be the only filter" in caplog.text and "clientToken alone" in caplog.text

    # Any other refusal of the lookup is the submission's error, in ECS's words.
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_client_error("list_tasks", "AccessDeniedException", "not authorized to perform: ecs:ListTasks")
    with pytest.raises(ProviderError, match="not authorized to perform: ecs:ListTasks") as caught:
        provider.submit(job, idempotency_key=f"{run_id}-2")
    assert caught.value.transient is False


def test_registration_errors_are_permanent() -> None:
    provider, stubber = _stubbed()
    job = provider.validate(render_job({"image": "flows:1", "network_configuration": {"subnets": ["subnet-1"]}}))
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_client_error("describe_task_definition", "ClientException", "Unable to describe task definition.")
    stubber.add_client_error(
        "register_task_definition",
        "ClientException",
        "Invalid 'cpu' setting for task.",
        response_meta={"RequestId": "r1"},
    )
    with pytest.raises(ProviderError, match=r"RegisterTaskDefinition failed: Invalid 'cpu' setting") as caught:
        provider.submit(job, idempotency_key=f"{_run_id(job)}-1", resubmission=True)
    assert caught.value.transient is False


def test_an_unreachable_endpoint_is_transient(aws_env: None) -> None:
    client = boto3.client(
        "ecs",
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",  # the discard port: nothing listens there
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    with pytest.raises(ProviderError, match="DescribeTasks failed") as caught:
        ECSProvider(client).status(task_arn("flows"))
    assert caught.value.transient is True


def test_cancel_of_a_task_ecs_no_longer_knows_is_not_an_error() -> None:
    provider, stubber = _stubbed()
    arn = task_arn("flows")
    stubber.add_client_error(
        "stop_task",
        "InvalidParameterException",
        "The referenced task was not found.",
        expected_params={"cluster": "flows", "task": arn, "reason": CANCEL_REASON},
    )
    provider.cancel(arn)
    stubber.add_client_error("stop_task", "AccessDeniedException", "not authorized to perform: ecs:StopTask")
    with pytest.raises(ProviderError, match="not authorized") as caught:
        provider.cancel(arn)
    assert caught.value.transient is False


def test_a_deregistered_cached_revision_is_looked_up_again() -> None:
    provider, stubber = _stubbed(store_hashes={})
    job = provider.validate(render_job({"image": "flows:1", "network_configuration": {"subnets": ["subnet-1"]}}))
    config = ECSJobConfiguration.model_validate(job)
    stale = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushpool_ecs-pool_nightly:1"
    provider._hashes[content_hash(build_task_definition(config, region=REGION))] = stale
    new = stale[:-1] + "2"
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_client_error("run_task", "ClientException", "TaskDefinition is inactive")
    stubber.add_client_error("describe_task_definition", "ClientException", "Unable to describe task definition.")
    stubber.add_response(
        "register_task_definition",
        {"taskDefinition": {"taskDefinitionArn": new}},
        {
            "family": "pushpool_ecs-pool_nightly",
            "containerDefinitions": ANY,
            "cpu": "1024",
            "memory": "2048",
            "requiresCompatibilities": ["FARGATE"],
            "networkMode": "awsvpc",
            "tags": ANY,
        },
    )
    stubber.add_response(
        "run_task",
        {"tasks": [{"taskArn": task_arn("default")}]},
        {
            "launchType": "FARGATE",
            "taskDefinition": new,
            "networkConfiguration": ANY,
            "overrides": ANY,
            "tags": ANY,
            "startedBy": ANY,
            "clientToken": ANY,
        },
    )
    provider.submit(job, idempotency_key=f"{_run_id(job)}-1", resubmission=True)
    stubber.assert_no_pending_responses()


# -- ECS task state change events -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "state", "exit_code"),
    [
        (task_state_change(exit_code=0), JobState.COMPLETED, 0),
        (task_state_change(exit_code=3), JobState.FAILED, 3),
        (
            task_state_change(
                exit_code=None,
                stop_code="TaskFailedToStart",
                stopped_reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)",
                started=False,
            ),
            JobState.CRASHED,
            None,
        ),
        (
            task_state_change(
                exit_code=143, stop_code="SpotInterruption", stopped_reason="Your Spot Task was interrupted."
            ),
            JobState.CRASHED,
            143,
        ),
        (
            task_state_change(
                exit_code=137, stop_code="TerminationNotice", stopped_reason="Task stopped due to TerminationNotice"
            ),
            JobState.CRASHED,
            137,
        ),
        (
            task_state_change(exit_code=1, stopped_reason="Task stopped: InfrastructureHealth check failed"),
            JobState.CRASHED,
            1,
        ),
        (
            task_state_change(exit_code=143, stop_code="UserInitiated", stopped_reason=CANCEL_REASON),
            JobState.CANCELLED,
            143,
        ),
        (
            task_state_change(exit_code=None, stopped_reason="Essential container in task exited"),
            JobState.CRASHED,
            None,
        ),
        (task_state_change(last_status="RUNNING"), JobState.RUNNING, None),
        (task_state_change(last_status="PROVISIONING", started=False), JobState.PENDING, None),
        (task_state_change(last_status="DEPROVISIONING", started=False), JobState.PENDING, None),
        (task_state_change(last_status="STOPPING"), JobState.RUNNING, None),
        (
            task_state_change(
                exit_code=0,
                capacityProviderName="FARGATE_SPOT",
                ephemeralStorage={"sizeInGiB": 20},
                someFieldOf2030={"nested": [1, 2]},
            ),
            JobState.COMPLETED,
            0,
        ),
    ],
    ids=[
        "exit-0",
        "exit-3",
        "failed-to-start",
        "spot",
        "termination-notice",
        "infrastructure-health",
        "our-stop",
        "no-exit-code",
        "running",
        "provisioning",
        "deprovisioning-never-started",
        "stopping-after-running",
        "unknown-fields",
    ],
)
def test_event_to_status_maps_real_event_details(event: dict[str, Any], state: JobState, exit_code: int | None) -> None:
    status = event_to_status(event["detail"])
    assert (status.state, status.exit_code) == (state, exit_code)
    if state is not JobState.COMPLETED:
        assert status.message


def test_the_flow_run_container_decides_not_its_sidecars() -> None:
    event = task_state_change(exit_code=0)
    sidecar = {"name": "log-router", "lastStatus": "STOPPED", "exitCode": 137}
    event["detail"]["containers"].append(sidecar)
    assert event_to_status(event["detail"]).state is JobState.COMPLETED
    event["detail"]["containers"][0]["exitCode"] = 2
    status = event_to_status(event["detail"])
    assert (status.state, status.exit_code) == (JobState.FAILED, 2)
    assert "container pushpool exited with code 2" in (status.message or "")


# -- logs (`pushpool flow-run logs` for ECS runs) ------------------------------------------------------------------

EXEC_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecution"


def _write_log(moto: MotoServer, group: str, stream: str, lines: list[str]) -> None:
    """What the awslogs driver does for a task's container: its output as events of one stream."""
    logs = _client(moto, "logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    start = int(time.time() * 1000)
    events = [{"timestamp": start + i, "message": line} for i, line in enumerate(lines)]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def _launch_logged(provider: ECSProvider, cluster: str, vpc: dict[str, Any], **variables: Any) -> tuple[str, str]:
    job = provider.validate(
        render_job(
            {
                "image": "flows:1",
                "cluster": cluster,
                "vpc_id": vpc["vpc_id"],
                "execution_role_arn": EXEC_ROLE,
                "configure_cloudwatch_logs": True,
                **variables,
            },
            deployment=f"d-{uuid.uuid4().hex[:8]}",
        )
    )
    infra_id = provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    return infra_id, infra_id.rsplit("/", 1)[-1]


def test_logs_reads_the_stream_the_awslogs_driver_writes_for_the_task(
    moto: MotoServer, provider: ECSProvider, cluster: str, vpc: dict[str, Any]
) -> None:
    infra_id, task_id = _launch_logged(provider, cluster, vpc, cloudwatch_logs_prefix="nightly")
    assert provider.logs(infra_id) == "", "nothing written yet: no output, no error"
    _write_log(moto, "pushpool", f"nightly/pushpool/{task_id}", ["starting flow", "rows: 42\n", "done"])
    _write_log(moto, "pushpool", "nightly/pushpool/another-task", ["not this one"])
    assert provider.logs(infra_id) == "starting flow\nrows: 42\ndone\n"


def test_logs_follow_the_group_and_prefix_the_pool_configures_and_read_every_page(
    moto: MotoServer, provider: ECSProvider, cluster: str, vpc: dict[str, Any]
) -> None:
    group = f"flows-{uuid.uuid4().hex[:6]}"
    infra_id, task_id = _launch_logged(
        provider, cluster, vpc, cloudwatch_logs_options={"awslogs-group": group, "awslogs-stream-prefix": "etl"}
    )
    lines = [f"line {i}" for i in range(25)]
    _write_log(moto, group, f"etl/pushpool/{task_id}", lines)
    pages: list[dict[str, Any]] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params.setdefault("limit", 10)
        pages.append(params)

    provider.logs_client().meta.events.register("provide-client-params.cloudwatch-logs.GetLogEvents", small_pages)
    assert provider.logs(infra_id) == "".join(f"{line}\n" for line in lines)
    assert len(pages) == 4, "three pages of 10, 10 and 5 events, then the same token back"


def test_logs_of_a_task_ecs_forgot_are_found_in_the_default_group(
    moto: MotoServer, provider: ECSProvider, cluster: str
) -> None:
    task_id = uuid.uuid4().hex
    _write_log(moto, "pushpool", f"pushpool-logs_etl_nightly/pushpool/{task_id}", ["from an hour ago"])
    assert provider.logs(task_arn(cluster, task_id)) == "from an hour ago\n"
    with pytest.raises(ProviderError, match=r"no longer knows task .* log group pushpool has no recent stream"):
        provider.logs(task_arn(cluster))


def test_logs_of_a_task_without_cloudwatch_logs_say_how_to_get_them(
    provider: ECSProvider, cluster: str, vpc: dict[str, Any]
) -> None:
    job = provider.validate(render_job({"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"]}))
    infra_id = provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    with pytest.raises(ProviderError, match="sends no CloudWatch logs.*configure_cloudwatch_logs") as caught:
        provider.logs(infra_id)
    assert caught.value.transient is False
    with pytest.raises(ProviderError, match="cannot read the logs of 'fake-1'"):
        provider.logs("fake-1")


def test_provider_logs_reaches_ecs_logs_through_the_registry(
    moto: MotoServer, provider: ECSProvider, cluster: str, vpc: dict[str, Any]
) -> None:
    infra_id, task_id = _launch_logged(provider, cluster, vpc, cloudwatch_logs_prefix="cli")
    _write_log(moto, "pushpool", f"cli/pushpool/{task_id}", ["hello from ECS"])
    assert provider_logs("ecs:push", infra_id, Providers({"ecs:push": provider})) == "hello from ECS\n"
    job = provider.validate(render_job({"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"]}))
    unlogged = provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    with pytest.raises(ProviderError, match="sends no CloudWatch logs.*configure_cloudwatch_logs"):
        provider_logs("ecs:push", unlogged, Providers({"ecs:push": provider}))


def test_large_parameters_leave_run_task_s_overrides_far_below_ecs_s_8_kb(
    provider: ECSProvider, ecs: Any, cluster: str, vpc: dict[str, Any]
) -> None:
    # 200 KB of parameters inline would be a permanent RunTask error: ECS caps the overrides at 8,192 characters.
    # They travel by reference instead (PUSHPOOL_PARAMETERS_URL), through moto's RunTask here.
    parameters = {"rows": ["x" * 1000] * 200}
    variables = {"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"], "env": {"MODE": "full"}}
    job = provider.validate(render_job(variables, parameters=parameters))
    sent = _count_calls(provider, "RunTask")
    provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    [request] = sent
    size = len(json.dumps(request["overrides"], separators=(",", ":")))
    print(f"RunTask overrides with {len(json.dumps(parameters)):,} bytes of parameters: {size:,} characters")
    assert size < 2048
    env = {item["name"]: item["value"] for item in request["overrides"]["containerOverrides"][0]["environment"]}
    assert "PUSHPOOL_PARAMETERS" not in env and env["PUSHPOOL_PARAMETERS_URL"].endswith("/parameters")


def test_overrides_over_ecs_s_limit_are_refused_in_words_before_run_task(
    provider: ECSProvider, cluster: str, vpc: dict[str, Any]
) -> None:
    variables = {"image": "flows:1", "cluster": cluster, "vpc_id": vpc["vpc_id"], "env": {"BIG": "y" * 9000}}
    job = provider.validate(render_job(variables))
    sent = _count_calls(provider, "RunTask")
    with pytest.raises(ProviderError, match=r"container overrides are [0-9,]+ characters and ECS takes at most 8,192"):
        provider.submit(job, idempotency_key=f"{_run_id(job)}-1")
    assert sent == []
