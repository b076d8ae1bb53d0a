"""What the stack's AWS region offers, asked at preview time."""

from __future__ import annotations

import pulumi_aws as aws

from config.instances import load_instances


def offered_instance_types() -> set[str]:
    """The catalog's instance types that EC2 offers in the configured region."""
    names = sorted({instance.name for instance in load_instances()})
    offerings = aws.ec2.get_instance_type_offerings(
        location_type="region",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=names)],
    )
    return set(offerings.instance_types)
