"""Which subnets an ecs:push task gets without `network_configuration` (dispatcher/providers/ecs_network.py).

The pure choice on plain EC2 shapes, then the provider against moto's EC2: a VPC behind a NAT, a public VPC,
a VPC with both, one with no way out, and the default VPC. Every RunTask request is read back as sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from ecs_fakes import AWS_TEST_ENV, AWS_UNSET, REGION, MotoServer, make_vpc, moto_server

from dispatcher import templating
from dispatcher.errors import ProviderError
from dispatcher.pool_types import default_template
from dispatcher.providers.ecs import ECSProvider
from dispatcher.providers.ecs_network import NoRouteOut, choose_subnets, egress, route_table_of


def _table(
    table_id: str, target: dict[str, str] | None, *, subnets: tuple[str, ...] = (), main: bool = False
) -> dict[str, Any]:
    routes = [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}]
    if target:
        routes.append({"DestinationCidrBlock": "0.0.0.0/0", "State": "active", **target})
    associations = [{"SubnetId": s} for s in subnets] + ([{"Main": True}] if main else [])
    return {"RouteTableId": table_id, "Routes": routes, "Associations": associations}


def _subnet(subnet_id: str, *, default: bool = False) -> dict[str, Any]:
    return {"SubnetId": subnet_id, "DefaultForAz": default}


def test_egress_reads_the_default_route() -> None:
    assert egress(_table("rt", {"GatewayId": "igw-1"})) == "public"
    assert egress(_table("rt", {"NatGatewayId": "nat-1"})) == "nat"
    assert egress(_table("rt", {"TransitGatewayId": "tgw-1"})) == "nat"
    assert egress(_table("rt", None)) is None
    blackhole = _table("rt", {"NatGatewayId": "nat-1"})
    blackhole["Routes"][-1]["State"] = "blackhole"
    assert egress(blackhole) is None, "a route to a deleted NAT leads nowhere"


def test_a_subnet_uses_its_own_table_else_the_main_one() -> None:
    tables = [_table("main", None, main=True), _table("own", {"GatewayId": "igw-1"}, subnets=("subnet-a",))]
    assert route_table_of("subnet-a", tables)["RouteTableId"] == "own"  # type: ignore[index]
    assert route_table_of("subnet-b", tables)["RouteTableId"] == "main"  # type: ignore[index]


def test_nat_subnets_win_and_are_never_mixed_with_public_ones() -> None:
    tables = [
        _table("main", {"NatGatewayId": "nat-1"}, main=True),
        _table("public", {"GatewayId": "igw-1"}, subnets=("subnet-pub",)),
        _table("isolated", None, subnets=("subnet-iso",)),
    ]
    subnets = [_subnet("subnet-priv-2"), _subnet("subnet-pub"), _subnet("subnet-iso"), _subnet("subnet-priv-1")]
    choice = choose_subnets(subnets, tables, where="VPC vpc-1", fargate=True, default_vpc=False)
    assert choice.subnets == ["subnet-priv-1", "subnet-priv-2"] and choice.public is False


def test_public_subnets_need_fargate_and_an_isolated_vpc_is_refused_in_words() -> None:
    tables = [_table("main", {"GatewayId": "igw-1"}, main=True)]
    choice = choose_subnets([_subnet("subnet-1")], tables, where="VPC vpc-1", fargate=True, default_vpc=False)
    assert choice.subnets == ["subnet-1"] and choice.public is True
    with pytest.raises(NoRouteOut, match=r"vpc_id: VPC vpc-1 has only public subnets and a task outside Fargate"):
        choose_subnets([_subnet("subnet-1")], tables, where="VPC vpc-1", fargate=False, default_vpc=False)
    isolated = [_table("main", None, main=True)]
    with pytest.raises(NoRouteOut, match=r"none of the 2 subnets of VPC vpc-2 has a route to the internet"):
        choose_subnets([_subnet("a"), _subnet("b")], isolated, where="VPC vpc-2", fargate=True, default_vpc=False)


def test_the_default_vpc_uses_its_default_for_az_subnets_only() -> None:
    tables = [_table("main", {"GatewayId": "igw-1"}, main=True)]
    subnets = [_subnet("subnet-az1", default=True), _subnet("subnet-extra"), _subnet("subnet-az2", default=True)]
    choice = choose_subnets(subnets, tables, where="the default VPC", fargate=True, default_vpc=True)
    assert choice.subnets == ["subnet-az1", "subnet-az2"]


# -- the provider on moto's EC2 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_TEST_ENV.items():
            patch.setenv(name, value)
        for name in AWS_UNSET:
            patch.delenv(name, raising=False)
        with moto_server() as server:
            yield server


@pytest.fixture(scope="module")
def ec2(moto: MotoServer) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto.url, config=Config(retries={"max_attempts": 1}))


def _submitted_network(moto: MotoServer, variables: dict[str, Any]) -> dict[str, Any]:
    """Submit one job with these variables; the awsvpcConfiguration RunTask was sent with."""
    provider = ECSProvider(region=REGION, endpoint_url=moto.url)
    provider.client.create_cluster(clusterName="net")
    sent: list[dict[str, Any]] = []
    provider.client.meta.events.register("provide-client-params.ecs.RunTask", lambda params, **_: sent.append(params))
    template = default_template("ecs:push")
    values = templating.resolve_job_variables(template, {"image": "flows:1", "cluster": "net", **variables}, {}, {})
    job = templating.render(template["job_configuration"], values, {})
    job = templating.inject_run_context(
        job,
        run_id="3f0e8b1c-0000-4000-8000-000000000001",
        deployment="d",
        pool="p",
        queue="default",
        parameters={},
        callback_url="http://127.0.0.1:4300/callbacks/runs/x",
        callback_token="t",
        run_name="net-run",
    )
    provider.submit(provider.validate(job), idempotency_key="3f0e8b1c-0000-4000-8000-000000000001-1")
    [request] = sent
    awsvpc: dict[str, Any] = request["networkConfiguration"]["awsvpcConfiguration"]
    return awsvpc


def test_a_vpc_behind_a_nat_gets_its_private_subnets_and_no_public_ip(moto: MotoServer, ec2: Any) -> None:
    vpc_id, subnets = make_vpc(ec2, "10.71.0.0/16", ["10.71.1.0/24", "10.71.2.0/24"], route="nat")
    awsvpc = _submitted_network(moto, {"vpc_id": vpc_id})
    assert awsvpc["subnets"] == subnets, "the NAT's own public subnet is left out"
    assert awsvpc["assignPublicIp"] == "DISABLED"


def test_a_public_vpc_gets_a_public_ip_on_fargate(moto: MotoServer, ec2: Any) -> None:
    vpc_id, subnets = make_vpc(ec2, "10.72.0.0/16", ["10.72.1.0/24"], route="igw")
    awsvpc = _submitted_network(moto, {"vpc_id": vpc_id})
    assert awsvpc == {"subnets": subnets, "securityGroups": [], "assignPublicIp": "ENABLED"}


def test_a_vpc_with_no_way_out_is_refused_before_any_task_starts(moto: MotoServer, ec2: Any) -> None:
    vpc_id, _ = make_vpc(ec2, "10.73.0.0/16", ["10.73.1.0/24"], route=None)
    with pytest.raises(ProviderError, match=f"vpc_id: none of the 1 subnets of VPC {vpc_id} has a route") as caught:
        _submitted_network(moto, {"vpc_id": vpc_id})
    assert caught.value.transient is False


def test_without_vpc_id_the_default_vpc_s_default_subnets_are_used(moto: MotoServer, ec2: Any) -> None:
    default = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    in_vpc = [{"Name": "vpc-id", "Values": [default]}]
    wanted = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=in_vpc)["Subnets"] if s["DefaultForAz"])
    ec2.create_subnet(VpcId=default, CidrBlock="172.31.200.0/24")  # not default-for-AZ: never chosen
    # AWS gives the default VPC an internet gateway and a default route to it; moto gives neither.
    main = ec2.describe_route_tables(Filters=[*in_vpc, {"Name": "association.main", "Values": ["true"]}])
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=default)
    ec2.create_route(
        RouteTableId=main["RouteTables"][0]["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
    )
    awsvpc = _submitted_network(moto, {})
    assert wanted and awsvpc["subnets"] == wanted and awsvpc["assignPublicIp"] == "ENABLED"
