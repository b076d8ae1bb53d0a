"""What every deployment shape (one host: components.deployment; a fleet: components.fleet)
makes first under its top component: the tagged AWS provider and, unless the stack sets apiKey,
a generated API key."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.naming import child, default_tags


def tagged_provider(parent: pulumi.Resource, name: str, settings: dict[str, Any]) -> aws.Provider:
    """The stack's own AWS settings, plus our tags on everything it creates (merged with
    any aws:defaultTags the stack sets)."""
    theirs = settings.pop("default_tags", None) or {}
    tags = {**(theirs.get("tags") or {}), **default_tags()}
    return aws.Provider(
        child(name, "aws"),
        **settings,
        default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def generated_api_key(parent: pulumi.Resource, name: str) -> pulumi.Output[str]:
    password = random.RandomPassword(
        child(name, "api-key"),
        length=48,
        special=False,  # safe in an Authorization header and a shell variable
        opts=pulumi.ResourceOptions(parent=parent),
    )
    # Secret here, not only by the provider's schema: nothing downstream may see it plain.
    return pulumi.Output.secret(password.result)
