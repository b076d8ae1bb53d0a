"""FleetGroup: the replicas. A launch template of the baked image and an EC2 Auto Scaling group
of `replicas` identical hosts behind the load balancer's target group, with the API key parameter,
the replicas' security group and instance profile (components.fleet_access).

Boot and readiness (fleet-pitfalls P8): a launch hook `vllm-launch` that each replica completes
itself once /health answers through nginx (the grace period starts only after it), ELB health
checks after a short grace period, and `pulumi up` waits (wait_for_elb_capacity) for a time
derived from the replicas' expected start (sizing.start_time), as is the instance warm-up. Drain (P7): the target group deregisters first (drainSeconds),
then the terminate hook `vllm-terminate` lets the replica stop vLLM and complete the action.
Updates (P14, P15): the group pins the template's version number (never $Latest), so every
template change starts an instance refresh that launches new replicas before retiring old ones
(minimum healthy 100 %, maximum 200 %) and rolls back on failure; `pulumi up` then waits for
that refresh (components/local/wait_for_refresh.py) and fails when it does not succeed. While old
and new overlap the account needs `replicas` more instances of the type (its vCPU quota:
`refreshSurge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import fleet_access, fleet_scaling
from components.fleet_tenants import FleetTenants, tenant_files_ssm_parameter
from components.fleet_bake import (
    LAUNCH_HOOK, TERMINATE_HOOK, api_key_parameter, launch_hook_timeout_s, terminate_hook_timeout_s,
)
from components.deployer_aws import local_aws_environment
from components.fleet_image import FleetImage
from components.host_setup import PROJECT_ROOT
from components.naming import child, component_type, default_tags
from config.settings import StackConfig
from serving.monitoring import cloudwatch
from sizing import start_time
from sizing.plan import SizingPlan
from sizing.start_stages import VolumePerformance, fleet_root_volume_performance

# Volumes made from the image's snapshots are read lazily from S3 (~5 MiB/s on first touch):
# EBS provisioned initialization at its maximum, 300 MiB/s (AWS EC2 API EbsBlockDevice
# VolumeInitializationRate, 100-300 MiB/s; fleet-pitfalls P12), on the root (image layers) and
# the model volume. Billed per launch by the GiB of snapshot data (not in costUsd). The start
# estimate (sizing.start_time) reads at the same rate.
VOLUME_INITIALIZATION_MIB_S = start_time.SNAPSHOT_INITIALIZATION_MIB_S
# After the launch hook (the replica answered /health): two health checks of 15 s pass and
# a minute to spare, before ELB health counts.
HEALTH_CHECK_GRACE_S = 120
REFRESH_MIN_HEALTHY_PCT = 100
REFRESH_MAX_HEALTHY_PCT = 200


WAIT_FOR_REFRESH = PROJECT_ROOT / "components" / "local" / "wait_for_refresh.py"
REFRESH_WAIT_COMMAND = (
    'if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi; '
    f'exec "$py" {WAIT_FOR_REFRESH.relative_to(PROJECT_ROOT)}'
)


def group_name(stack: str) -> str:
    """The group's name, fixed so the instance profile can name it before it exists."""
    return f"vllm-deploy-{stack}-replicas"


def replica_start(settings: StackConfig, plan: SizingPlan) -> start_time.ReplicaStart:
    """The replicas' expected start (sizing.start_time), --enforce-eager read as vLLM reads it."""
    eager = any(a.split("=", 1)[0].replace("_", "-") == "--enforce-eager" for a in settings.vllm_extra_args)
    return start_time.replica_start(plan, settings, enforce_eager=eager)


def capacity_wait_minutes(settings: StackConfig, plan: SizingPlan) -> int:
    """How long `pulumi up` waits for `replicas` healthy targets (whole minutes, rounded up):
    derived from the expected start, never below the readiness bound plus boot (P8)."""
    wait_s = start_time.capacity_wait_s(replica_start(settings, plan), settings.readiness_timeout_minutes * 60)
    return -(-wait_s // 60)


def instance_warmup_s(settings: StackConfig, plan: SizingPlan) -> int:
    """The group's default instance warm-up and its refresh's: one vLLM restart (sizing.start_time)."""
    return start_time.instance_warmup_s(replica_start(settings, plan))


@dataclass
class FleetGroupArgs:
    settings: StackConfig
    plan: SizingPlan
    image: FleetImage
    """The baked image, its devices and the builder's key pair."""
    target_group_arn: pulumi.Input[str]
    load_balancer_group_id: pulumi.Input[str]
    """The load balancer's security group: the only source of HTTPS to a replica."""
    vpc_id: str
    subnet_ids: list[str]
    """One public subnet per zone that offers the instance type."""
    api_key: pulumi.Output[str]
    region: str
    account_id: str
    partition: str = "aws"
    metrics_log_group: Optional[aws.cloudwatch.LogGroup] = None
    """With monitoring on: the replicas' metrics log group (it exists before any replica)."""
    instance_types: Optional[list[str]] = None
    """With spot: the mixed-instances policy's types, cheapest first (serving.fleet_types)."""
    tenants: Optional[FleetTenants] = None
    """Tenant mode (apiKeys, issue 29): the tenants' files, kept in their own SSM parameter."""


class FleetGroup(pulumi.ComponentResource):
    group_name: pulumi.Output[str]
    launch_template_version: pulumi.Output[int]
    api_key_parameter_name: pulumi.Output[str]
    refresh_wait: command.local.Command  # ends when the refresh onto the newest template succeeded

    def __init__(self, name: str, args: FleetGroupArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("FleetGroup"), name, None, opts)
        settings, plan, stack = args.settings, args.plan, pulumi.get_stack()
        parameter = fleet_access.api_key_parameter(self, name, api_key_parameter(stack), args.api_key)
        asg_name = group_name(stack)
        group_arn = (
            f"arn:{args.partition}:autoscaling:{args.region}:{args.account_id}:autoScalingGroup:*:"
            f"autoScalingGroupName/{asg_name}"
        )
        log_group = args.metrics_log_group
        tenant_files = tenant_files_ssm_parameter(self, name, stack, args.tenants) if args.tenants else None
        profile = fleet_access.replica_instance_profile(
            self, name, parameter_arn=parameter.arn, group_arn=group_arn, region=args.region,
            metrics=(log_group.arn, cloudwatch.NAMESPACE) if log_group is not None else None,
            tenant_parameter_arn=tenant_files.arn if tenant_files is not None else None,
        )
        security_group = fleet_access.replica_security_group(self, name, settings, args.vpc_id, args.load_balancer_group_id)
        template = self._launch_template(name, args, profile, security_group)
        group = aws.autoscaling.Group(
            child(name, "asg"),
            name=asg_name,
            desired_capacity=fleet_scaling.desired_capacity(settings),
            min_size=settings.replicas,
            max_size=fleet_scaling.max_replicas(settings),
            vpc_zone_identifiers=args.subnet_ids,
            target_group_arns=[args.target_group_arn],
            health_check_type="ELB",
            health_check_grace_period=HEALTH_CHECK_GRACE_S,
            default_instance_warmup=instance_warmup_s(settings, plan),
            launch_template=None if fleet_scaling.mixed(settings) else aws.autoscaling.GroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str),
            ),
            instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(
                strategy="Rolling",
                preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(
                    min_healthy_percentage=REFRESH_MIN_HEALTHY_PCT,
                    max_healthy_percentage=REFRESH_MAX_HEALTHY_PCT,
                    auto_rollback=True,
                    instance_warmup=str(instance_warmup_s(settings, plan)),
                ),
            ),
            # Hooks on the group from its creation: a hook added later misses the first replicas.
            initial_lifecycle_hooks=[
                aws.autoscaling.GroupInitialLifecycleHookArgs(
                    name=LAUNCH_HOOK, lifecycle_transition="autoscaling:EC2_INSTANCE_LAUNCHING",
                    default_result="ABANDON", heartbeat_timeout=launch_hook_timeout_s(settings),
                ),
                aws.autoscaling.GroupInitialLifecycleHookArgs(
                    name=TERMINATE_HOOK, lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
                    default_result="CONTINUE", heartbeat_timeout=terminate_hook_timeout_s(settings.drain_seconds),
                ),
            ],
            wait_for_capacity_timeout=f"{capacity_wait_minutes(settings, args.plan)}m",
            wait_for_elb_capacity=settings.replicas,
            # Issue 26: the warm pool, spot's mixed-instances policy (None for a fixed on-demand fleet).
            **fleet_scaling.group_options(settings, template, args.instance_types),
            tags=[
                aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True)
                for k, v in {**default_tags(), "Name": child(name, "replica")}.items()
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[
                parameter, *([log_group] if log_group else []), *([tenant_files] if tenant_files else []),
            ]),
        )
        fleet_scaling.scaling_policy(self, name, settings, group)
        self.refresh_wait = self._wait_for_refresh(name, args, group, template)
        self.group_name = group.name
        self.instance_types = list(args.instance_types or [args.plan.instance.name])
        self.launch_template_version = template.latest_version
        self.api_key_parameter_name = parameter.name
        self.tenant_files_parameter_name = tenant_files.name if tenant_files is not None else None
        self.register_outputs({
            "autoScalingGroupName": self.group_name,
            "launchTemplateVersion": self.launch_template_version,
            "apiKeyParameter": self.api_key_parameter_name,
            **({"tenantFilesParameter": self.tenant_files_parameter_name} if tenant_files is not None else {}),
        })

    def _wait_for_refresh(
        self, name: str, args: FleetGroupArgs, group: aws.autoscaling.Group, template: aws.ec2.LaunchTemplate
    ) -> command.local.Command:
        """`pulumi up` waits for the refresh a new template version starts, and fails when it does
        not succeed (the provider does not wait, P14). It runs again with each new version."""
        settings = args.settings
        timeout_s = capacity_wait_minutes(settings, args.plan) * 60 + settings.drain_seconds + terminate_hook_timeout_s(
            settings.drain_seconds
        )
        return command.local.Command(
            child(name, "refresh-wait"),
            # Relative paths, so the command (part of the state) is the same on any machine; the
            # project's .venv (Pulumi.yaml's virtualenv) when there is one, since the waiter needs
            # boto3, which a system python3 lacks (it says so and how to fix it otherwise).
            create=REFRESH_WAIT_COMMAND,
            environment={"GROUP_NAME": group.name, **local_aws_environment(args.region), "TIMEOUT_SECONDS": str(timeout_s)},
            triggers=[template.latest_version],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[group],
                custom_timeouts=pulumi.CustomTimeouts(create=f"{timeout_s // 60 + 5}m", update=f"{timeout_s // 60 + 5}m"),
            ),
        )

    def _launch_template(
        self, name: str, args: FleetGroupArgs, profile: aws.iam.InstanceProfile, security_group: aws.ec2.SecurityGroup
    ) -> aws.ec2.LaunchTemplate:
        """The baked image on the sized type: IMDSv2 only with hop limit 1 (containers cannot reach
        the role, P10), instance tags in the metadata, both volumes encrypted gp3 from the image's
        snapshots at the fastest initialization rate. No user data: the image's boot unit reads
        everything it needs from its files and the parameter."""
        plan, image = args.plan, args.image

        def volume(
            size_gb: int, performance: VolumePerformance, snapshot: Optional[pulumi.Input[str]] = None,
        ) -> aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs:
            # Throughput and IOPS only above gp3's free baseline (sizing.start_stages): the image
            # layers and weights hydrate at the initialization rate, and the volume must keep up.
            faster = performance.usd_per_month > 0
            return aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                volume_type="gp3", volume_size=size_gb, encrypted="true", delete_on_termination="true",
                snapshot_id=snapshot, volume_initialization_rate=VOLUME_INITIALIZATION_MIB_S,
                throughput=performance.throughput_mib_s if faster else None,
                iops=performance.iops if faster else None,
            )

        return aws.ec2.LaunchTemplate(
            child(name, "template"),
            image_id=image.image_id,
            instance_type=plan.instance.name,
            key_name=image.builder.shared.key_name,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
                instance_metadata_tags="enabled",
            ),
            network_interfaces=[aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                device_index=0, associate_public_ip_address="true", delete_on_termination="true",
                security_groups=[security_group.id],
            )],
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=image.root_device_name, ebs=volume(plan.root_volume_gb, fleet_root_volume_performance())
                ),
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=image.model_device_name, ebs=volume(
                        image.model_volume_gb, image.model_volume_performance, image.model_snapshot_id
                    )
                ),
            ],
            update_default_version=True,
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags={**default_tags(), "Name": child(name, f"replica-{kind}")}
                )
                for kind in ("instance", "volume")
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
