"""Where the host goes: a subnet in a zone that offers the instance type, the model volume's
zone first (an EBS volume attaches only within its zone)."""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_aws as aws

from components.model_volume import ExistingVolume
from components.region import lookup_errors
from config.settings import StackConfig


def choose_subnet(
    settings: StackConfig,
    instance_type: str,
    volume: Optional[ExistingVolume],
    host: pulumi.Resource,
    provider: Optional[pulumi.ProviderResource] = None,
) -> aws.ec2.AwaitableGetSubnetResult:
    """A public subnet in a zone that offers `instance_type`: subnetId when set, else the first
    (by id, so re-runs agree) in the model volume's zone when it offers the type, else in any
    such zone. Lookups run as children of `host` (through `provider` when given, else the one
    `host` inherits); raises pulumi.RunError naming the key to set."""
    opts = pulumi.InvokeOptions(parent=host, provider=provider)
    offerings = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[instance_type])],
        opts=opts,
    )
    zones = sorted(set(offerings.locations))
    if not zones:
        raise pulumi.RunError(
            f"no availability zone in this region offers {instance_type}; "
            "set aws:region to another region or pick another instanceType"
        )
    if settings.subnet_id:
        with lookup_errors(f"vllm-deploy:subnetId={settings.subnet_id!r} was not found in this region"):
            subnet = aws.ec2.get_subnet(id=settings.subnet_id, opts=opts)
        if subnet.availability_zone not in zones:
            raise pulumi.RunError(
                f"vllm-deploy:subnetId={settings.subnet_id!r} is in {subnet.availability_zone}, "
                f"which does not offer {instance_type}; use a subnet in one of {', '.join(zones)}"
            )
        _say_if_the_model_volume_moves(host, volume, subnet.availability_zone, zones, instance_type, settings)
        return subnet
    where = (
        f"vllm-deploy:vpcId={settings.vpc_id!r} was not found in this region"
        if settings.vpc_id
        else "this region has no default VPC; set vllm-deploy:vpcId and vllm-deploy:subnetId"
    )
    with lookup_errors(where):
        vpc = aws.ec2.get_vpc(
            id=settings.vpc_id, default=None if settings.vpc_id else True, opts=opts
        )
    # The model volume's zone first: staying there keeps the downloaded weights.
    preferred = [volume.availability_zone] if volume and volume.availability_zone in zones else []
    for allowed in (preferred, zones) if preferred else (zones,):
        candidates = aws.ec2.get_subnets(
            filters=[
                aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc.id]),
                aws.ec2.GetSubnetsFilterArgs(name="availability-zone", values=allowed),
            ],
            opts=opts,
        )
        if candidates.ids:
            break
    if not candidates.ids:
        where = f"VPC {vpc.id}" if settings.vpc_id else "the default VPC"
        raise pulumi.RunError(
            f"{where} has no subnet in a zone offering {instance_type} ({', '.join(zones)}); "
            "set vllm-deploy:subnetId, or another aws:region"
        )
    # Sorted so a re-run picks the same subnet (and does not move the instance).
    subnet = aws.ec2.get_subnet(id=sorted(candidates.ids)[0], opts=opts)
    _say_if_the_model_volume_moves(host, volume, subnet.availability_zone, zones, instance_type, settings)
    return subnet


def _say_if_the_model_volume_moves(
    host: pulumi.Resource,
    volume: Optional[ExistingVolume],
    zone: str,
    zones: list[str],
    instance_type: str,
    settings: StackConfig,
) -> None:
    """Shown at preview. The volume is not carried over through a snapshot: snapshotting
    hundreds of GB takes long, and a volume restored from one reads every block lazily from
    S3 on first access, so vLLM's first load would crawl unless paying for fast snapshot
    restore. The download is resumable and verified, and the move is rare (a type the
    volume's zone does not offer, or another subnetId)."""
    if volume is None or volume.availability_zone == zone:
        return
    zone_offers_type = volume.availability_zone in zones
    if settings.subnet_id:
        why = f"vllm-deploy:subnetId is in {zone}"
    elif zone_offers_type:
        why = "the VPC has no subnet there"
    else:
        why = f"{volume.availability_zone} does not offer {instance_type}"
    old = (
        "kept (retainModelVolume) and no longer managed by the stack"
        if settings.retain_model_volume
        else "deleted"
    )
    pulumi.log.warn(
        f"the model volume {volume.volume_id} is in {volume.availability_zone} and {why}: the "
        f"host moves to {zone} with a new, empty model volume there, and the weights are "
        f"downloaded again; the old volume is {old}. To keep it instead, pick an instanceType "
        f"that {volume.availability_zone} offers.",
        resource=host,
    )
