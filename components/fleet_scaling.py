"""How a fleet grows, waits and mixes capacity (issue 26): the target-tracking scaling policy on
vLLM's waiting requests, the warm pool, and the mixed-instances (spot) policy. FleetGroup asks
`group_options()` for the Auto Scaling group's extra arguments and `scaling_policy()` for the
policy; a fixed on-demand fleet (no maxReplicas, warmReplicas or spot) gets none of them, so its
group's inputs are exactly issue 25's.

Scaling (fleet-pitfalls P18, P19). The metric is each replica's vLLM 0.33 gauge
`vllm:num_requests_waiting`, scraped by the replica's CloudWatch agent and published as
`vllm_num_requests_waiting` (serving.monitoring.cloudwatch renames `vllm:` to `vllm_` in the
scrape file, so the name never carries a `:`) in the namespace `vllm-deploy/replicas` with the
one dimension AutoScalingGroupName; the policy tracks its Average, so the value is per replica
and falls as replicas are added (P19: a Sum would not). What happens when the metric is missing
(a replica whose agent or vLLM is down sends nothing): "If there is insufficient data for the
specified metric, the target tracking policy does not scale; insufficient data is not
interpreted as low utilization" (AWS, "Target tracking scaling policies", considerations; the
same sentence in the ECS and Application Auto Scaling guides, undated copies): the fleet then
stays at its size, never shrinks on silence; the alarm VllmMetricsMissing says so. A replica
that is still loading sends nothing either (vLLM's /metrics does not answer before the engine
is up), so a starting replica's zero never drags the average down, and the group's default
instance warm-up keeps it out of the metric after it joins (AWS "Set the default instance
warmup", undated copy).

Reaction: target tracking adds capacity as soon as its high alarm holds 3 datapoints of 60 s
(about 3 minutes after the queue forms, plus the start of the replica), and removes capacity
only after 15 datapoints (15 minutes) clearly below the target; scale-in also waits for
instances in warm-up (AWS "Target tracking scaling policies": the alarms the policy creates).
Scale-in never cuts a stream: every replica it removes goes through the target group's
deregistration delay (drainSeconds) and then the termination hook's drain (drain.sh).

Warm pool (P16). `warmReplicas` instances are launched, booted once (boot.sh's warmed path:
reads the model volume once so its blocks are off S3, makes the certificate, completes the
launch hook, starts nothing) and stopped: only their volumes bill. The pool is refilled to
`warmReplicas` after each scale-out (MaxGroupPreparedCapacity = replicas + warmReplicas, so at
the minimum the pool holds exactly warmReplicas). Scaled-in replicas are NOT returned to the
pool (InstanceReusePolicy ReuseOnScaleIn false): an instance going back to the pool passes the
launch hook (Warmed:Pending:Wait), not the termination hook, so the drain that scale-in promises
would not run; a fresh pool instance costs one more launch instead.

Spot (P17). A mixed-instances policy over serving.fleet_types' list (every type that runs the
same vLLM argv on the image's GPU, cheapest first): `onDemandReplicas` on-demand (the base,
`prioritized`: the cheapest type, the builder's), every replica above it spot with the
price-capacity-optimized allocation ("recommended": it picks the pools least likely to be
interrupted at the lowest price, AWS Auto Scaling API InstancesDistribution SpotAllocationStrategy,
undated copy), and Capacity Rebalancing on (the group launches a replacement when EC2 recommends
a rebalance, instead of after the interruption: AWS "Use Capacity Rebalancing", undated copy).
The replica watches the interruption notice itself (lifecycle_watch.sh -> spot_drain.sh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

from components.naming import child
from config.settings import StackConfig
from serving.monitoring import cloudwatch

WAITING_SERIES = "vllm:num_requests_waiting"
SCALING_METRIC = cloudwatch.cloudwatch_name(WAITING_SERIES)  # vllm_num_requests_waiting
SCALING_STATISTIC = "Average"
# AWS "Target tracking scaling policies": the high alarm needs 3 one-minute datapoints, the low
# alarm 15 (the alarms the policy creates; undated copy).
SCALE_OUT_MINUTES = 3
SCALE_IN_MINUTES = 15
SPOT_ALLOCATION = "price-capacity-optimized"
ON_DEMAND_ALLOCATION = "prioritized"  # the overrides' order: cheapest first
WARM_POOL_STATE = "Stopped"
# A spot replica keeps serving its streams this long after the interruption notice (EC2 gives
# two minutes, best effort): spot_drain.sh waits for vLLM's running requests up to this bound
# minus vLLM's --shutdown-timeout, then stops vLLM (its shutdown timeout, plus 15 s before
# docker's SIGKILL), so even the worst case ends before the two minutes are up.
SPOT_STREAM_BOUND_S = 90
SPOT_NOTICE_S = 120


def scales(settings: StackConfig) -> bool:
    """True when the fleet scales itself (maxReplicas above replicas)."""
    return settings.replicas > 1 and (settings.max_replicas or settings.replicas) > settings.replicas


def max_replicas(settings: StackConfig) -> int:
    return max(settings.replicas, settings.max_replicas or settings.replicas)


def warm_pool_args(settings: StackConfig) -> Optional[aws.autoscaling.GroupWarmPoolArgs]:
    """The warm pool (warmReplicas > 0): stopped instances, not reused on scale-in (module doc)."""
    if settings.replicas < 2 or not settings.warm_replicas:
        return None
    return aws.autoscaling.GroupWarmPoolArgs(
        pool_state=WARM_POOL_STATE,
        min_size=settings.warm_replicas,
        max_group_prepared_capacity=settings.replicas + settings.warm_replicas,
        instance_reuse_policy=aws.autoscaling.GroupWarmPoolInstanceReusePolicyArgs(reuse_on_scale_in=False),
    )


def mixed_instances_policy(
    settings: StackConfig, template: aws.ec2.LaunchTemplate, instance_types: list[str]
) -> aws.autoscaling.GroupMixedInstancesPolicyArgs:
    """On-demand base `onDemandReplicas`, spot above it, over `instance_types` (cheapest first)."""
    return aws.autoscaling.GroupMixedInstancesPolicyArgs(
        launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
            launch_template_specification=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                launch_template_id=template.id, version=template.latest_version.apply(str),
            ),
            overrides=[
                aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=name)
                for name in instance_types
            ],
        ),
        instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
            on_demand_base_capacity=settings.on_demand_replicas,
            on_demand_percentage_above_base_capacity=0,
            on_demand_allocation_strategy=ON_DEMAND_ALLOCATION,
            spot_allocation_strategy=SPOT_ALLOCATION,
        ),
    )


def mixed(settings: StackConfig) -> bool:
    """True for a spot fleet: a mixed-instances policy instead of the group's launch template."""
    return settings.replicas > 1 and settings.spot


def desired_capacity(settings: StackConfig) -> Optional[int]:
    """`replicas` for a fixed fleet; None (left to the policy) for a scaling one: a desired
    capacity in the program would be reset to the minimum at every `pulumi up`. AWS starts a new
    group at its minimum."""
    return None if scales(settings) else settings.replicas


def group_options(
    settings: StackConfig, template: aws.ec2.LaunchTemplate, instance_types: Optional[list[str]]
) -> dict[str, Any]:
    """The Auto Scaling group's arguments the warm pool and spot add, and only those: all None
    for a fixed on-demand fleet (so its inputs stay exactly issue 25's)."""
    return {
        "warm_pool": warm_pool_args(settings),
        "mixed_instances_policy": (
            mixed_instances_policy(settings, template, instance_types or []) if mixed(settings) else None
        ),
        "capacity_rebalance": True if mixed(settings) else None,
    }


@dataclass(frozen=True)
class ScalingSummary:
    """What the plan and README say about a scaling fleet."""

    minimum: int
    maximum: int
    warm: int
    metric: str
    namespace: str
    target: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "minReplicas": self.minimum, "maxReplicas": self.maximum, "warmReplicas": self.warm,
            "metric": f"{self.namespace} {self.metric} ({SCALING_STATISTIC}, AutoScalingGroupName)",
            "targetWaitingRequestsPerReplica": self.target,
            "scaleOutAfterMinutes": SCALE_OUT_MINUTES, "scaleInAfterMinutes": SCALE_IN_MINUTES,
        }


def summary(settings: StackConfig) -> ScalingSummary:
    return ScalingSummary(settings.replicas, max_replicas(settings), settings.warm_replicas, SCALING_METRIC,
                          cloudwatch.NAMESPACE, settings.scale_on_waiting_requests)


def scaling_policy(
    parent: pulumi.Resource, name: str, settings: StackConfig, group: aws.autoscaling.Group
) -> Optional[aws.autoscaling.Policy]:
    """The target-tracking policy (maxReplicas above replicas): the replicas' average waiting
    requests held at scaleOnWaitingRequests (module doc)."""
    if not scales(settings):
        return None
    return aws.autoscaling.Policy(
        child(name, "scaling"),
        autoscaling_group_name=group.name,
        policy_type="TargetTrackingScaling",
        target_tracking_configuration=aws.autoscaling.PolicyTargetTrackingConfigurationArgs(
            target_value=settings.scale_on_waiting_requests,
            disable_scale_in=False,
            customized_metric_specification=aws.autoscaling.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationArgs(
                metric_name=SCALING_METRIC,
                namespace=cloudwatch.NAMESPACE,
                statistic=SCALING_STATISTIC,
                metric_dimensions=[
                    aws.autoscaling.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricDimensionArgs(
                        name=cloudwatch.GROUP_DIMENSION, value=group.name,
                    )
                ],
            ),
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
