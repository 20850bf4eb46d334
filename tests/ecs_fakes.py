"""Helpers for tests of the `ecs:push` provider and of what builds on it (the ECS task event handler).

- `MotoServer`: moto's ThreadedMotoServer on 127.0.0.1 with a free port, plus moto's state-manager routes,
  so tests can decide how fast a task walks through its states.
- `aws_test_env`: dummy credentials and a region, so nothing can reach a real account.
- `task_state_change`: an EventBridge "ECS Task State Change" event of the real shape (as AWS documents it),
  for a given task, with the fields a test cares about overridden.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
"""Dummy credentials: boto3 signs with them and moto accepts anything."""

AWS_UNSET = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL")


class MotoServer:
    """moto's server on a free local port. `url` is the endpoint for every boto3 client of a test."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> MotoServer:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def set_transition(self, model_name: str, transition: dict[str, Any]) -> None:
        """How moto advances a model's states, e.g. ("ecs::task", {"progression": "manual", "times": 1})."""
        self._post("/moto-api/state-manager/set-transition", {"model_name": model_name, "transition": transition})

    def unset_transition(self, model_name: str) -> None:
        self._post("/moto-api/state-manager/unset-transition", {"model_name": model_name})

    def _post(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


def task_arn(cluster: str = "pushpool", task_id: str | None = None) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task_id or uuid.uuid4().hex}"


def task_state_change(
    *,
    last_status: str = "STOPPED",
    exit_code: int | None = 0,
    stop_code: str | None = "EssentialContainerExited",
    stopped_reason: str | None = "Essential container in task exited",
    container_name: str = "pushpool",
    run_id: str = "3f1c2b9e-0d4e-4b8a-9a51-2f5a1c7d9e10",
    arn: str | None = None,
    version: int = 5,
    started: bool = True,
    **extra_detail: Any,
) -> dict[str, Any]:
    """An "ECS Task State Change" event as EventBridge delivers it, for one task of a pushpool run.

    `exit_code=None` leaves the container without one (as when it never started); `started=False` leaves
    out the times a task only has once it ran. Keys in `extra_detail` are added to (or replace) the detail.
    """
    arn = arn or task_arn()
    cluster = arn.split("/")[1]
    stopped = last_status == "STOPPED"
    container: dict[str, Any] = {
        "containerArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/{cluster}/{uuid.uuid4().hex}/{uuid.uuid4()}",
        "lastStatus": last_status if last_status in ("PENDING", "RUNNING", "STOPPED") else "RUNNING",
        "name": container_name,
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:latest",
        "taskArn": arn,
        "networkInterfaces": [{"attachmentId": str(uuid.uuid4()), "privateIpv4Address": "10.0.1.17"}],
        "cpu": "0",
    }
    if stopped and exit_code is not None:
        container["exitCode"] = exit_code
    detail: dict[str, Any] = {
        "attachments": [
            {
                "id": str(uuid.uuid4()),
                "type": "eni",
                "status": "DELETED" if stopped else "ATTACHED",
                "details": [{"name": "subnetId", "value": "subnet-0123456789abcdef0"}],
            }
        ],
        "attributes": [{"name": "ecs.cpu-architecture", "value": "x86_64"}],
        "availabilityZone": "us-east-1a",
        "clusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}",
        "connectivity": "CONNECTED",
        "containers": [container],
        "cpu": "1024",
        "createdAt": "2026-03-01T10:00:00.000Z",
        "desiredStatus": "STOPPED" if stopped else "RUNNING",
        "enableExecuteCommand": False,
        "group": "family:pushpool_pool_deployment",
        "launchType": "FARGATE",
        "lastStatus": last_status,
        "memory": "2048",
        "overrides": {
            "containerOverrides": [
                {
                    "name": container_name,
                    "command": ["pushpool-run", "--", "python", "flow.py"],
                    "environment": [{"name": "PUSHPOOL_RUN_ID", "value": run_id}],
                }
            ]
        },
        "platformVersion": "1.4.0",
        "startedBy": run_id,
        "tags": [{"key": "pushpool.io/run-id", "value": run_id}],
        "taskArn": arn,
        "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushpool_pool_deployment:1",
        "updatedAt": "2026-03-01T10:05:00.000Z",
        "version": version,
    }
    if started:
        detail.update(
            pullStartedAt="2026-03-01T10:00:05.000Z",
            pullStoppedAt="2026-03-01T10:00:20.000Z",
            startedAt="2026-03-01T10:00:21.000Z",
        )
    if stopped:
        detail.update(stoppingAt="2026-03-01T10:05:00.000Z", stoppedAt="2026-03-01T10:05:10.000Z")
        if stop_code is not None:
            detail["stopCode"] = stop_code
        if stopped_reason is not None:
            detail["stoppedReason"] = stopped_reason
    detail.update(extra_detail)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": ACCOUNT,
        "time": "2026-03-01T10:05:10Z",
        "region": REGION,
        "resources": [arn],
        "detail": detail,
    }


def make_vpc(ec2: Any, cidr: str, subnet_cidrs: list[str], *, route: str | None = "igw") -> tuple[str, list[str]]:
    """A VPC in moto with subnets whose main route table sends 0.0.0.0/0 to an internet gateway (`route="igw"`),
    to a NAT gateway (`"nat"`, the NAT itself in a public subnet of its own), or nowhere (`None`).

    DNS hostnames are on: moto gives an awsvpc task an ENI only in such a VPC (it names the ENI after them).
    """
    vpc_id: str = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnets = sorted(ec2.create_subnet(VpcId=vpc_id, CidrBlock=c)["Subnet"]["SubnetId"] for c in subnet_cidrs)
    if route is None:
        return vpc_id, subnets
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]["RouteTableId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    if route == "igw":
        ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        return vpc_id, subnets
    # A NAT gateway lives in a public subnet with its own route table to the internet gateway.
    base = cidr.split("/")[0].rsplit(".", 2)[0]
    public = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{base}.250.0/24")["Subnet"]["SubnetId"]
    public_table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_table, SubnetId=public)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    return vpc_id, subnets
