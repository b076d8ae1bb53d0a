"""What a local command (run where `pulumi up` runs, with boto3: the host-key reader, the
refresh wait, the image pruner) needs to reach the account and Region pulumi-aws deploys to.

pulumi-aws reads `aws:region` and `aws:profile` from the stack's config; boto3 in a child process
sees neither unless they are passed as AWS_REGION and AWS_PROFILE. Without them it would use the
machine's default credentials, possibly another account's (found by the adversarial review).
Credentials given as `aws:accessKey`/`aws:assumeRole` are not passed: they are secrets, and the
README asks for a profile or the environment's credentials instead.
"""

from __future__ import annotations

from typing import Optional

import pulumi_aws as aws

from components.region import configured_region


def local_aws_environment(region: Optional[str] = None) -> dict[str, str]:
    """{"AWS_REGION": ..., "AWS_PROFILE": ...} as the default provider reads them (its own
    pulumi_aws.config, components.region.configured_region); `region` (already resolved by the
    caller) overrides it."""
    environment: dict[str, str] = {}
    chosen = region or configured_region()
    if chosen:
        environment["AWS_REGION"] = chosen
    if aws.config.profile:
        environment["AWS_PROFILE"] = aws.config.profile
    return environment
