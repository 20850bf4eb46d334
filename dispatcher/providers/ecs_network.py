"""Which subnets an `ecs:push` task runs in when its job names no `network_configuration` (pure).

A task must reach the internet twice before it does any work: to pull its image and to report to the
callback URL. A subnet gives it that either through a NAT (a default route to a NAT gateway, a transit
gateway or a NAT instance: the task needs no public IP) or as a public subnet (a default route to an internet
gateway, and the task gets a public IP, which only Fargate can give an awsvpc task). A subnet with neither
strands the task in PENDING until ECS gives up.

The choice, from the subnets of `vpc_id` (or the default VPC's default-for-AZ subnets, as Prefect's ECS
worker uses them):
1. the subnets routed through a NAT, if there are any (no public IP on the task);
2. else the public subnets, with a public IP, on Fargate;
3. else a refusal naming the VPC and what to set.
Public and NAT subnets are never mixed: a task placed in a public subnet without a public IP, or given one it
cannot use, would hang.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_ANYWHERE = ("0.0.0.0/0", "::/0")
_NAT_TARGETS = ("NatGatewayId", "TransitGatewayId", "InstanceId", "NetworkInterfaceId")


@dataclass(frozen=True)
class SubnetChoice:
    subnets: list[str]
    public: bool
    """True when the subnets reach the internet through an internet gateway: the task needs a public IP."""


class NoRouteOut(ValueError):
    """No subnet of the VPC would let a task pull its image and call back; the message says what to set."""


def egress(route_table: Mapping[str, Any]) -> str | None:
    """How a route table reaches the internet: "public" (internet gateway), "nat", or None."""
    found = None
    for route in route_table.get("Routes") or []:
        if route.get("State", "active") != "active":
            continue
        if (
            route.get("DestinationCidrBlock") not in _ANYWHERE
            and route.get("DestinationIpv6CidrBlock") not in _ANYWHERE
        ):
            continue
        if str(route.get("GatewayId") or "").startswith("igw-"):
            return "public"
        if any(route.get(target) for target in _NAT_TARGETS):
            found = "nat"
    return found


def route_table_of(subnet_id: str, route_tables: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The table a subnet uses: the one associated with it, else the VPC's main table."""
    main = None
    for table in route_tables:
        for association in table.get("Associations") or []:
            if association.get("SubnetId") == subnet_id:
                return table
            if association.get("Main"):
                main = table
    return main


def choose_subnets(
    subnets: Iterable[Mapping[str, Any]],
    route_tables: list[Mapping[str, Any]],
    *,
    where: str,
    fargate: bool,
    default_vpc: bool,
) -> SubnetChoice:
    """The subnets a task runs in (see the module's docstring); raises NoRouteOut saying what to set."""
    candidates = [s for s in subnets if not default_vpc or s.get("DefaultForAz")]
    kinds: dict[str, list[str]] = {"nat": [], "public": []}
    for subnet in candidates:
        table = route_table_of(str(subnet["SubnetId"]), route_tables)
        kind = egress(table) if table is not None else None
        if kind is not None:
            kinds[kind].append(str(subnet["SubnetId"]))
    if kinds["nat"]:
        return SubnetChoice(sorted(kinds["nat"]), public=False)
    if kinds["public"] and fargate:
        return SubnetChoice(sorted(kinds["public"]), public=True)
    fix = "set network_configuration with subnets you know reach the internet (or VPC endpoints), or another vpc_id"
    if kinds["public"]:
        raise NoRouteOut(
            f"vpc_id: {where} has only public subnets and a task outside Fargate gets no public IP there, so it "
            f"could not pull its image or call back; give the VPC a NAT route, or {fix}"
        )
    raise NoRouteOut(
        f"vpc_id: none of the {len(candidates)} subnets of {where} has a route to the internet (through an "
        f"internet gateway or a NAT), so a task could not pull its image or call back; {fix}"
    )
