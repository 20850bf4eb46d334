"""`pushpool work-pool create NAME --type ecs:push --from-stack STACK` against moto's CloudFormation and ECS.

The stack is made by moto's CloudFormation from the quickstart part of infra/template.yaml itself (its
resources, conditions, parameters and outputs, without SAM's functions), so the outputs read are those a real
deploy prints. The pool's template then holds them as defaults, and a run of a deployment that names only an
image is submitted to moto's ECS in the stack's cluster, network and roles.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import typer.testing
from ecs_fakes import ACCOUNT, AWS_TEST_ENV, AWS_UNSET, REGION, MotoServer
from test_cli import _COMMAND, Cli
from test_deploy_files import QUICKSTART_CONDITIONS, SAM_PATH, load

from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.pool_types import default_template
from dispatcher.providers.base import Providers
from dispatcher.providers.ecs import ECSProvider, split_infrastructure_id
from dispatcher.states import StateType
from dispatcher.store import open_store


def quickstart_template() -> dict[str, Any]:
    """The quickstart part of infra/template.yaml as a plain CloudFormation template (no SAM transform)."""
    sam = load(SAM_PATH)
    resources = {
        name: resource
        for name, resource in sam["Resources"].items()
        if resource.get("Condition") in QUICKSTART_CONDITIONS or name == "TaskLogGroup"
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {
            name: sam["Parameters"][name]
            for name in ("CreateEcsQuickstart", "EcsQuickstartNetwork", "TaskLogRetentionDays")
        },
        "Conditions": {name: sam["Conditions"][name] for name in QUICKSTART_CONDITIONS},
        "Resources": resources,
        "Outputs": {
            name: output for name, output in sam["Outputs"].items() if output.get("Condition") in QUICKSTART_CONDITIONS
        }
        # An output the quickstart does not own, as the real stack has: --from-stack must leave it alone.
        | {"TaskLogGroupName": sam["Outputs"]["TaskLogGroupName"]},
    }


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_TEST_ENV.items():
            mp.setenv(key, value)
        for key in AWS_UNSET:
            mp.delenv(key, raising=False)
        server = MotoServer().start()
        # boto3 sends every client here, the CLI's CloudFormation client included (as AWS_ENDPOINT_URL does for
        # any AWS SDK); the provider gets the URL explicitly.
        mp.setenv("AWS_ENDPOINT_URL", server.url)
        server.set_transition("ecs::task", {"progression": "manual", "times": 1})
        yield server
        server.unset_transition("ecs::task")
        server.stop()


def _client(service: str) -> Any:
    return boto3.session.Session().client(service, region_name=REGION)


def deploy(moto: MotoServer, **parameters: str) -> dict[str, str]:
    """A stack of the quickstart part on moto; its outputs."""
    name = f"pushpool-{uuid.uuid4().hex[:8]}"
    cloudformation = _client("cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(quickstart_template()),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    [stack] = cloudformation.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {"StackName": name} | {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if "VpcId" in outputs:
        # moto's CloudFormation drops the template's EnableDnsHostnames, without which its ECS gives a task no ENI.
        _client("ec2").modify_vpc_attribute(VpcId=outputs["VpcId"], EnableDnsHostnames={"Value": True})
    return outputs


@pytest.fixture(scope="module")
def stack(moto: MotoServer) -> dict[str, str]:
    return deploy(moto, CreateEcsQuickstart="true")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto: MotoServer) -> Cli:
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _COMMAND, raising=False)
    return Cli(f"sqlite:///{tmp_path}/s.db")


def defaults(pool: dict[str, Any]) -> dict[str, Any]:
    properties = pool["base_job_template"]["variables"]["properties"]
    return {name: schema["default"] for name, schema in properties.items() if "default" in schema}


def test_the_pool_defaults_to_the_stack_s_outputs_and_a_run_starts_with_them(
    cli: Cli, stack: dict[str, str], moto: MotoServer
) -> None:
    pool = cli.json("work-pool", "create", "aws", "--type", "ecs:push", "--from-stack", stack["StackName"])
    network = json.loads(stack["NetworkConfiguration"])
    expected = {
        "cluster": stack["Cluster"],
        "execution_role_arn": stack["ExecutionRoleArn"],
        "task_role_arn": stack["TaskRoleArn"],
        "vpc_id": stack["VpcId"],
        "network_configuration": network,
        "configure_cloudwatch_logs": True,
        "cloudwatch_logs_options": {"awslogs-group": f"/pushpool/{stack['StackName']}/tasks"},
    }
    shipped = {
        n: s["default"] for n, s in default_template("ecs:push")["variables"]["properties"].items() if "default" in s
    }
    assert defaults(pool) == shipped | expected
    assert pool["job_variables"] == {}, "defaults of the template, not pool-level values"
    # The network is the stack's: two subnets in two zones, routed to its internet gateway, and a group that lets
    # nothing in.
    ec2 = _client("ec2")
    subnets = ec2.describe_subnets(SubnetIds=network["subnets"])["Subnets"]
    assert {s["VpcId"] for s in subnets} == {stack["VpcId"]} and len({s["AvailabilityZone"] for s in subnets}) == 2
    [group] = ec2.describe_security_groups(GroupIds=network["securityGroups"])["SecurityGroups"]
    assert group["IpPermissions"] == [] and group["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    routes = [
        route
        for table in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [stack["VpcId"]]}])["RouteTables"]
        for route in table["Routes"]
    ]
    assert any(
        r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId", "").startswith("igw-") for r in routes
    )

    # A deployment that names only its image; the run goes to moto's ECS as the stack laid it out.
    cli.ok("deployment", "create", "hello", "--pool", "aws", "--job-variables", '{"image": "python:3.12-slim"}')
    run = cli.json("deployment", "run", "hello")
    store = open_store(cli.url)
    provider = ECSProvider(region=REGION, endpoint_url=moto.url)
    dispatcher = Dispatcher(
        store,
        providers=Providers({"ecs:push": provider}),
        settings=Settings(reconcile_after_seconds=0.0),
        callback_base_url="https://callbacks.example",
    )
    try:
        dispatcher.run_pass()
        submitted = store.get_run(run["id"])
        assert submitted is not None and submitted.infrastructure_id, submitted
        cluster, task_arn = split_infrastructure_id(submitted.infrastructure_id)
        ecs = _client("ecs")
        [task] = ecs.describe_tasks(cluster=stack["Cluster"], tasks=[task_arn])["tasks"]
        assert task["clusterArn"] == stack["Cluster"]
        subnet = next(d["value"] for d in task["attachments"][0]["details"] if d["name"] == "subnetId")
        assert subnet in network["subnets"]
        definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        assert definition["executionRoleArn"] == stack["ExecutionRoleArn"]
        assert definition["taskRoleArn"] == stack["TaskRoleArn"]
        [container] = definition["containerDefinitions"]
        assert container["image"] == "python:3.12-slim"
        assert container["logConfiguration"]["options"]["awslogs-group"] == f"/pushpool/{stack['StackName']}/tasks"
        # The task ends with exit 0 (moto keeps it running until told); the reconciler sees the run COMPLETED.
        finish(stack["Cluster"], task_arn)
        dispatcher.run_pass()
        done = store.get_run(run["id"])
        assert done is not None and done.state == StateType.COMPLETED, done.state_history
    finally:
        dispatcher.close()
        store.close()


def finish(cluster: str, task_arn: str) -> None:
    """End a moto task with exit code 0, as the container's end would (moto's backend lives in this process)."""
    from moto.ecs.models import ecs_backends

    task = ecs_backends[ACCOUNT][REGION].tasks[cluster.rsplit("/", 1)[-1]][task_arn]
    for container in task.containers:
        container.exitCode = 0
        container.last_status = "STOPPED"
    task.stopped_reason = "Essential container in task exited"
    task.desired_status = task.last_status = "STOPPED"


def test_a_stack_on_the_default_vpc_leaves_the_network_to_the_provider(cli: Cli, moto: MotoServer) -> None:
    stack = deploy(moto, CreateEcsQuickstart="true", EcsQuickstartNetwork="default-vpc")
    assert "VpcId" not in stack and "NetworkConfiguration" not in stack
    pool = cli.json("work-pool", "create", "aws", "--from-stack", stack["StackName"], "--region", REGION)
    assert pool["type"] == "ecs:push", "--from-stack alone means an ecs:push pool"
    assert defaults(pool)["cluster"] == stack["Cluster"]
    assert "vpc_id" not in defaults(pool) and "network_configuration" not in defaults(pool)


def test_a_template_of_one_s_own_gets_the_defaults_and_must_declare_each_output(
    cli: Cli, stack: dict[str, str], tmp_path: Path
) -> None:
    template = default_template("ecs:push")
    template["variables"]["properties"]["cpu"]["default"] = 512
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    pool = cli.json(
        "work-pool",
        "create",
        "mine",
        "-t",
        "ecs:push",
        "--from-stack",
        stack["StackName"],
        "--base-job-template",
        str(path),
    )
    assert defaults(pool)["cpu"] == 512 and defaults(pool)["task_role_arn"] == stack["TaskRoleArn"]
    del template["variables"]["properties"]["network_configuration"]
    template["job_configuration"].pop("network_configuration")
    path.write_text(json.dumps(template))
    before = cli.snapshot()
    cli.fails(
        "work-pool",
        "create",
        "other",
        "-t",
        "ecs:push",
        "--from-stack",
        stack["StackName"],
        "--base-job-template",
        str(path),
        says=("declares no variable 'network_configuration'", stack["StackName"]),
    )
    assert cli.snapshot() == before


def test_errors_name_the_problem_and_write_nothing(
    cli: Cli, stack: dict[str, str], moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli.ok("work-pool", "create", "existing")
    before = cli.snapshot()
    # No such stack, in the region asked.
    cli.fails(
        "work-pool",
        "create",
        "a",
        "-t",
        "ecs:push",
        "--from-stack",
        "nope",
        says=("'nope' does not exist in us-east-1",),
        code=3,
    )
    # A stack deployed without the quickstart.
    plain = deploy(moto, CreateEcsQuickstart="false")
    cli.fails(
        "work-pool",
        "create",
        "a",
        "--from-stack",
        plain["StackName"],
        says=("no ECS quickstart outputs", "CreateEcsQuickstart=true"),
    )
    # A stack whose creation has not finished (a change set under review).
    pending = f"pending-{uuid.uuid4().hex[:8]}"
    _client("cloudformation").create_change_set(
        StackName=pending,
        ChangeSetName="first",
        ChangeSetType="CREATE",
        TemplateBody=json.dumps(quickstart_template()),
        Parameters=[{"ParameterKey": "CreateEcsQuickstart", "ParameterValue": "true"}],
        Capabilities=["CAPABILITY_IAM"],
    )
    cli.fails("work-pool", "create", "a", "--from-stack", pending, says=("REVIEW_IN_PROGRESS", "not a complete stack"))
    # --from-stack is for ecs:push pools; --region goes with it.
    cli.fails(
        "work-pool", "create", "a", "-t", "process", "--from-stack", stack["StackName"], says=("--type ecs:push only",)
    )
    cli.fails("work-pool", "create", "a", "-t", "ecs:push", "--region", REGION, says=("--region", "--from-stack"))
    # Prefect's --provision-infra points at the stack.
    cli.fails(
        "work-pool",
        "create",
        "a",
        "-t",
        "ecs:push",
        "--provision-infra",
        says=("CreateEcsQuickstart=true", "--from-stack"),
    )
    # Without the aws extra (boto3 cannot be imported).
    with monkeypatch.context() as without:
        without.setitem(sys.modules, "boto3", None)
        cli.fails("work-pool", "create", "a", "--from-stack", stack["StackName"], says=("pushpool[aws]",))
    # No credentials anywhere boto3 looks.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cli.fails("work-pool", "create", "a", "--from-stack", stack["StackName"], says=("no AWS credentials",))
    # No region either.
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    cli.fails("work-pool", "create", "a", "--from-stack", stack["StackName"], says=("no AWS region", "--region"))
    assert cli.snapshot() == before
