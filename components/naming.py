"""Names and tags, each decided in one place."""

from __future__ import annotations

import pulumi

PROJECT = "vllm-deploy"
COMPONENT_PREFIX = "vllm-deploy:index"


def component_type(kind: str) -> str:
    """The type token of one of our components, e.g. vllm-deploy:index:GpuHost."""
    return f"{COMPONENT_PREFIX}:{kind}"


def child(parent_name: str, role: str) -> str:
    """A child resource's logical name: the component's name plus its role, so a component
    can be instantiated twice in one stack without clashes."""
    return f"{parent_name}-{role}"


def default_tags() -> dict[str, str]:
    """Tags every AWS resource carries (applied as provider default tags)."""
    return {
        "project": PROJECT,
        "stack": pulumi.get_stack(),
        "managed-by": "pulumi",
    }
