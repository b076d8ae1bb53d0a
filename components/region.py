"""What the stack's AWS region offers, asked at preview time."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pulumi
import pulumi_aws as aws

from sizing.gpus import load_instances
from sizing.regions import load_regions, other_partition, unknown_region


def offered_instance_types() -> set[str]:
    """The catalog's instance types that EC2 offers in the configured region."""
    check_region()  # a mistyped aws:region fails here, named, before any other question to AWS
    names = sorted({instance.name for instance in load_instances()})
    # The first call to AWS: a failure here is nearly always credentials or the region.
    with lookup_errors(
        "could not ask EC2 which instance types this region offers; check the AWS credentials "
        "(aws sts get-caller-identity, AWS_PROFILE or aws:profile) and aws:region"
    ):
        offerings = aws.ec2.get_instance_type_offerings(
            location_type="region",
            filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=names)],
        )
    return set(offerings.instance_types)


@contextlib.contextmanager
def lookup_errors(meaning: str) -> Iterator[None]:
    """An invoke that finds nothing raises a provider error with a long trace; say what it
    means for this stack instead."""
    try:
        yield
    except pulumi.RunError:
        raise
    except Exception as exc:  # noqa: BLE001 - provider errors have no common type
        raise pulumi.RunError(f"{meaning} (AWS said: {str(exc).splitlines()[0][:300]})") from None


def configured_region() -> str | None:
    """The region the default AWS provider uses: aws:region, else $AWS_REGION, $AWS_DEFAULT_REGION
    (the provider's own order); None when none is set (the provider then says so itself)."""
    return aws.config.region or None


def check_region() -> None:
    """Refuse (pulumi.RunError) an aws:region EC2 does not list among the account's enabled
    Regions (`aws.get_regions`, DescribeRegions), naming the closest valid ones. When EC2 cannot
    be asked at all, a name that is not in the Region catalog (sizing/catalog/aws-regions.csv) is
    refused the same way: the provider was sent to an endpoint that does not exist."""
    region = configured_region()
    if not region:
        return
    elsewhere = other_partition(region)
    if elsewhere:
        raise pulumi.RunError(elsewhere)
    catalog = {r.code for r in load_regions()}
    try:
        enabled = set(aws.get_regions().names)
    except Exception as exc:  # noqa: BLE001 - provider errors have no common type
        if region not in catalog:
            said = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise pulumi.RunError(unknown_region(region, why=f" (EC2 could not be asked: {said})")) from None
        return  # a real region: the offerings lookup below reports credentials problems
    if region in enabled:
        return
    if region in catalog:
        raise pulumi.RunError(
            f"aws:region={region!r} is an AWS Region this account has not enabled (EC2 "
            "DescribeRegions does not list it; Regions launched after March 2019 are opt-in). Fix: "
            f"enable it (aws account enable-region --region-name {region}, or the console's "
            f"Account page), or pick an enabled one: pulumi config set aws:region "
            f"{sorted(enabled)[0] if 'us-east-1' not in enabled else 'us-east-1'}"
        )
    raise pulumi.RunError(unknown_region(region, among=enabled | catalog))
