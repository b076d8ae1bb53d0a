"""Turns AWS's refusals for the GPU instance (no capacity, quotas, a root volume that cannot
shrink) into what to try next.

Attached to the instance as a Pulumi error hook: the provider's own error still ends the
update, and this adds the advice next to it. Retrying is left to the user (returning False):
a zone short of GPUs rarely recovers within one `pulumi up`.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import pulumi
from pulumi.resource_hooks import ErrorHook, ErrorHookArgs
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import monitor_supports_feature

_CAPACITY = ("InsufficientInstanceCapacity", "InsufficientCapacity", "insufficient capacity")
_QUOTA = ("VcpuLimitExceeded", "You have requested more vCPU capacity")
_SPOT = ("MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow", "InsufficientSpotCapacity")
_ZONE = ("Unsupported", "is not supported in your requested Availability Zone")
_SHRINK = ("cannot be smaller than", "New size cannot be smaller")


def capacity_advice(
    errors: Sequence[str],
    *,
    instance_type: str,
    spot: bool,
    current_volume_gb: Optional[int] = None,
    nodes: int = 1,
) -> Optional[str]:
    """What to try for the AWS error in `errors`, or None when it is not one we know. `nodes`:
    the instances of a cluster, which must all land in one zone (its placement group)."""
    text = "\n".join(errors)

    def says(markers: Sequence[str]) -> bool:
        return any(marker in text for marker in markers)

    if says(_SHRINK):
        size = f" ({current_volume_gb} GB)" if current_volume_gb else ""
        return (
            f"The root volume cannot shrink below its current size{size}. It asks for less when "
            "diskSizeGb was lowered, or on the first update of a stack whose root volume still held "
            "the weights (they now live on the model volume). Set vllm-deploy:diskSizeGb to "
            f"{current_volume_gb or 'the current size'} to keep it, or replace the host to start "
            "small: pulumi up --replace <the instance's URN> (the model volume stays)."
        )

    if says(_QUOTA):
        return (
            f"AWS refused {instance_type}: the account's vCPU quota for this instance family is too "
            "low. Request an increase in Service Quotas (EC2: 'Running On-Demand G and VT instances' "
            "or '... P instances'; for spot, the matching 'Spot Instance Requests' quota), or pick a "
            "smaller type with vllm-deploy:instanceType."
        )
    if spot and says(_SPOT):
        return (
            f"No spot capacity for {instance_type} at the moment: set vllm-deploy:spot to false, or try "
            "another region (aws:region)."
        )
    if (says(_CAPACITY) or says(_ZONE)) and nodes > 1:
        return (
            f"AWS has no {'spot ' if spot else ''}capacity for {nodes} x {instance_type} together in one "
            "cluster placement group in this availability zone right now (all nodes must land in one "
            "zone). Try, in order: `pulumi up` again later (capacity frees up), another zone "
            "(vllm-deploy:subnetId), another region (aws:region), an On-Demand Capacity Reservation or "
            f"a Capacity Block for {nodes} x {instance_type} in that zone, or another plan (list them "
            f"with `tools/size <model> --nodes {nodes} --all`, or fewer nodes with a quantized checkpoint)."
        )
    if says(_CAPACITY) or says(_ZONE):
        tried = "spot " if spot else ""
        return (
            f"AWS has no {tried}capacity for {instance_type} in this availability zone right now. Try, "
            "in order: another zone (vllm-deploy:subnetId = a subnet in another zone), another region "
            "(aws:region), another instance type that fits (vllm-deploy:instanceType; list them with "
            "`tools/size <model> --all`)"
            + (", or spot: false." if spot else ".")
        )
    return None


def error_hooks_supported() -> bool:
    """Error hooks need a recent Pulumi CLI; with an older one the advice is simply absent."""
    return monitor_supports_feature(resource_pb2.RESOURCE_MONITOR_FEATURE_ERROR_HOOKS)


def explain_instance_error(
    args: ErrorHookArgs,
    *,
    instance_type: str,
    spot: bool,
    nodes: int = 1,
    log: Callable[[str], None] = pulumi.log.error,
) -> bool:
    """The error hook's body: log the advice next to AWS's error; never retry."""
    root = (args.old_inputs or {}).get("rootBlockDevice") or {}
    current = root.get("volumeSize") if isinstance(root, dict) else None
    advice = capacity_advice(
        args.errors, instance_type=instance_type, spot=spot,
        current_volume_gb=int(current) if isinstance(current, (int, float)) else None,
        nodes=nodes,
    )
    if advice:
        log(advice)
    return False


def capacity_hook(resource_name: str, instance_type: str, *, spot: bool, nodes: int = 1) -> ErrorHook:
    return ErrorHook(
        f"{resource_name}-capacity-advice",
        functools.partial(explain_instance_error, instance_type=instance_type, spot=spot, nodes=nodes),
    )
