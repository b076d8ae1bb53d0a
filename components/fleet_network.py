"""Where a fleet runs, asked at preview: the VPC, one subnet per zone for the load balancer (two
zones at least), the subnets in zones that offer the instance type for the replicas
(fleet-pitfalls P15), and the public Route 53 zone of `domain` when the account has one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.region import lookup_errors
from config.settings import StackConfig


@dataclass(frozen=True)
class FleetNetwork:
    vpc_id: str
    vpc_cidr: str
    load_balancer_subnets: list[str]  # one per zone, sorted by zone
    load_balancer_cidrs: list[str]  # their CIDR blocks: the addresses the ALB's nodes use (P3)
    replica_subnets: list[str]  # those in zones offering the instance type
    replica_zones: list[str]


def fleet_network(settings: StackConfig, instance_type: str, opts: pulumi.InvokeOptions) -> FleetNetwork:
    """Raises pulumi.RunError naming the key to change when the VPC cannot hold a fleet."""
    where = (
        f"vllm-deploy:vpcId={settings.vpc_id!r} was not found in this region"
        if settings.vpc_id
        else "this region has no default VPC; set vllm-deploy:vpcId"
    )
    with lookup_errors(where):
        vpc = aws.ec2.get_vpc(id=settings.vpc_id, default=None if settings.vpc_id else True, opts=opts)
    offering = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[instance_type])],
        opts=opts,
    )
    ids = aws.ec2.get_subnets(
        filters=[aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc.id])], opts=opts
    ).ids
    by_zone: dict[str, aws.ec2.AwaitableGetSubnetResult] = {}
    for subnet_id in sorted(ids):  # sorted: a re-run picks the same subnet in each zone
        subnet = aws.ec2.get_subnet(id=subnet_id, opts=opts)
        by_zone.setdefault(subnet.availability_zone, subnet)
    zones = sorted(by_zone)
    vpc_name = f"VPC {vpc.id}" if settings.vpc_id else "the default VPC"
    if len(zones) < 2:
        raise pulumi.RunError(
            f"vllm-deploy:replicas={settings.replicas} needs subnets in two availability zones at least "
            f"(an Application Load Balancer's rule), and {vpc_name} has them in {len(zones)}; set "
            "vllm-deploy:vpcId to a VPC with public subnets in two zones or more, or replicas to 1"
        )
    replica_zones = [z for z in zones if z in set(offering.locations)]
    if not replica_zones:
        raise pulumi.RunError(
            f"{vpc_name} has no subnet in a zone offering {instance_type} "
            f"({', '.join(sorted(set(offering.locations))) or 'none in this region'}); set "
            "vllm-deploy:vpcId or aws:region, or another instanceType"
        )
    return FleetNetwork(
        vpc_id=vpc.id,
        vpc_cidr=vpc.cidr_block,
        load_balancer_subnets=[by_zone[z].id for z in zones],
        load_balancer_cidrs=[by_zone[z].cidr_block for z in zones],
        replica_subnets=[by_zone[z].id for z in replica_zones],
        replica_zones=replica_zones,
    )


# What the provider's aws_route53_zone lookup calls (terraform-provider-aws, data source
# route53_zone: ListHostedZones, then GetHostedZone and ListTagsForResource on the match).
ROUTE53_ZONE_ACTIONS = ("route53:ListHostedZones", "route53:GetHostedZone", "route53:ListTagsForResource")
_NOT_FOUND = "no matching Route 53 Hosted Zone found"
_DENIED = ("AccessDenied", "not authorized to perform", "UnauthorizedOperation")


def public_zone_of(domain: Optional[str], opts: pulumi.InvokeOptions) -> Optional[str]:
    """The id of the public Route 53 hosted zone that holds `domain` (its closest parent), or
    None when the account has none: the load balancer then imports the stack's certificate.

    Raises pulumi.RunError when Route 53 refuses the lookup (AccessDenied: a missing zone and a
    missing permission must not look alike) or fails for any reason other than "no zone",
    naming the permission the deploy role needs."""
    if not domain:
        return None
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        try:
            return aws.route53.get_zone(name=".".join(labels[start:]), private_zone=False, opts=opts).zone_id
        except Exception as exc:  # noqa: BLE001 - provider errors have no common type
            said = str(exc)
            if _NOT_FOUND in said:
                continue
            raise pulumi.RunError(route53_lookup_error(domain, said)) from None
    return None


def route53_lookup_error(domain: str, said: str) -> str:
    """What to tell the user when the zone lookup for `domain` failed with AWS's text `said`."""
    first = said.strip().splitlines()[0][:300] if said.strip() else "no message"
    if any(mark in said for mark in _DENIED):
        named = re.search(r"perform:\s*(route53:[A-Za-z]+)", said)
        actions = named.group(1) if named else " and ".join(ROUTE53_ZONE_ACTIONS)
        return (
            f"vllm-deploy:domain={domain}: the deploy role may not look up Route 53 hosted zones "
            f"(AccessDenied: it lacks {actions}), so this stack cannot tell whether the account holds "
            f"the zone of {domain}. Allow {', '.join(ROUTE53_ZONE_ACTIONS)} on * to the deploy role "
            "(policies/, docs/operations.md), or unset domain to serve on the load balancer's own "
            f"name. AWS said: {first}"
        )
    return (
        f"vllm-deploy:domain={domain}: the Route 53 lookup of its hosted zone failed ({first}); "
        "check the AWS credentials and aws:region, then run the preview again, or unset domain"
    )
