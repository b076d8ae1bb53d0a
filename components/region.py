"""What the stack's AWS region offers, asked at preview time."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pulumi
import pulumi_aws as aws

from sizing.gpus import load_instances


def offered_instance_types() -> set[str]:
    """The catalog's instance types that EC2 offers in the configured region."""
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
