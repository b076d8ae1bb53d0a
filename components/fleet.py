"""VllmFleet: `replicas` identical GPU hosts behind an Application Load Balancer (issue 25).

    FleetImage (builder host -> replica files -> cleanup -> stopped -> AMI)
        -> FleetGroup (API key parameter, instance profile, launch template, Auto Scaling group)
    FleetLoadBalancer (ALB, HTTPS and HTTP listeners, certificate, target group) -> FleetGroup
    FleetMonitoring (monitoring on: log group -> FleetGroup; alarms and dashboard after it)

The replicas' boot, readiness and drain units come from serving/replica.py and
components/scripts/replica/, baked into the image by FleetImage.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_aws as aws

from components import fleet_bake
from components.fleet_bake import bake_files
from components.fleet_group import REFRESH_MAX_HEALTHY_PCT, FleetGroup, FleetGroupArgs, group_name, replica_start
from components.fleet_image import FleetImage, FleetImageArgs
from components.fleet_image_cleanup import prune_after_refresh
from components.fleet_monitoring import FleetMonitoring, FleetMonitoringArgs
from components.fleet_network import fleet_network, public_zone_of
from components.fleet_scale_plan import fleet_instance_types, scaling_output
from components.fleet_tenants import fleet_tenants
from components.host_setup import NVIDIA_DRIVER_BRANCH, addon_dirs, model_dir_on_host
from components.load_balancer import FleetLoadBalancer, FleetLoadBalancerArgs
from components.model_volume import find_model_volume
from components.naming import child, component_type
from components.placement import choose_subnet
from components.deployment import VllmDeploymentArgs
from components.stack_resources import generated_api_key, tagged_provider
from config.settings import StackConfig
from serving.replica_tenants import parameter_tier
from serving.monitoring.prometheus import requests_waiting_threshold
from sizing.costs import fleet_cost
from sizing.start_stages import fleet_root_volume_performance
from sizing.plan import SizingPlan


def refresh_surge(settings: StackConfig, plan: SizingPlan) -> dict[str, int]:
    """What an instance refresh needs on top of the fleet while old and new replicas overlap
    (maximum healthy 200 %: a whole new set before the old one goes): instances, GPUs, vCPUs
    (the account's on-demand vCPU quota for the family counts them, fleet-pitfalls P15)."""
    # At the top of its range a scaling fleet runs, and so refreshes, maxReplicas replicas (issue 26).
    running = max(settings.replicas, settings.max_replicas or 0)
    extra = running * (REFRESH_MAX_HEALTHY_PCT - 100) // 100
    return {
        "extraInstances": extra,
        "extraGpus": extra * plan.instance.gpu_count,
        "extraVcpus": extra * plan.instance.vcpus,
        "peakVcpus": (running + extra) * plan.instance.vcpus,
    }


# A fleet takes exactly what a single host takes (the same preflight: settings, plan, argv,
# proxy limits, secrets, aws:* settings), so one typed Args serves both.
VllmFleetArgs = VllmDeploymentArgs


class VllmFleet(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    api_key: pulumi.Output[str]
    ca_certificate: Optional[pulumi.Output[str]]
    region: str
    image_id: pulumi.Output[str]
    auto_scaling_group_name: pulumi.Output[str]
    cost: dict[str, Optional[float]]

    def __init__(self, name: str, args: VllmFleetArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("VllmFleet"), name, None, opts)
        settings, plan, stack = args.settings, args.plan, pulumi.get_stack()
        self._settings_replicas = settings.replicas
        # Tenant mode: tenants whose nginx files could not fit one SSM parameter are refused here,
        # before any resource (a ValueError naming apiKeys and a fix).
        tenant_tier = parameter_tier(settings, args.proxy_limits) if settings.tenants_enabled else None
        provider = tagged_provider(self, name, dict(args.aws_settings or {}))
        in_aws = pulumi.ResourceOptions(parent=self, providers={"aws": provider})
        lookups = pulumi.InvokeOptions(parent=self, provider=provider)
        api_key = args.api_key if args.api_key is not None else generated_api_key(self, name)
        self.region = aws.get_region(opts=lookups).region
        network = fleet_network(settings, plan.instance.name, lookups)
        # No Prometheus or Grafana on replicas (hosts come and go): with monitoring on, each one's
        # CloudWatch agent sends its metrics to the stack's log group and namespace.
        monitoring = FleetMonitoring(
            child(name, "metrics"),
            FleetMonitoringArgs(stack=stack, region=self.region, retention_days=settings.monitoring_retention_days),
            in_aws,
        ) if settings.monitoring else None

        bake = bake_files(
            settings, plan, vllm_argv=args.vllm_command, limits=args.proxy_limits, region=self.region,
            stack=stack, model_host_dir=model_dir_on_host(settings),
            alb_subnet_cidrs=network.load_balancer_cidrs, driver_branch=NVIDIA_DRIVER_BRANCH,
            metrics_group=group_name(stack) if monitoring else None,
            addon_mounts=tuple((d.host_dir, d.container_path) for d in addon_dirs(settings)),
        )
        # Tenant mode (issue 29): the tenants' keys, and their nginx files for the replicas' parameter.
        tenants = fleet_tenants(self, name, settings, args.proxy_limits, api_key, tenant_tier, args.tenant_keys or {}) if tenant_tier else None
        builder_name = child(name, "builder")
        existing = find_model_volume(child(builder_name, "models"), lookups)
        image = FleetImage(
            builder_name,
            FleetImageArgs(
                settings=settings, plan=plan, bake=bake, vllm_command=list(args.vllm_command),
                subnet=choose_subnet(settings, plan.instance.name, existing, self, provider),
                model_volume=existing, hf_token=args.hf_token, modelscope_token=args.modelscope_token,
                region=self.region, api_key=api_key,
            ),
            in_aws,
        )
        self._warn_if_readiness_is_short(settings, plan)
        zone_id = public_zone_of(settings.domain, lookups)
        if settings.domain and zone_id is None:
            pulumi.log.warn(
                f"vllm-deploy:domain={settings.domain}: no Route 53 public hosted zone for it in this "
                "account (or none this role may list), so nothing points the name at the load "
                "balancer: create a CNAME from it to the stack output loadBalancerDnsName (the "
                "certificate covers both names), or unset domain to use that name itself",
                resource=self,
            )
        balancer = FleetLoadBalancer(
            child(name, "lb"),
            FleetLoadBalancerArgs(
                settings=settings, vpc_id=network.vpc_id, vpc_cidr=network.vpc_cidr,
                subnet_ids=network.load_balancer_subnets, idle_timeout_s=bake.alb_idle_timeout_s,
                route53_zone_id=zone_id,
            ),
            in_aws,
        )
        group = FleetGroup(
            child(name, "replicas"),
            FleetGroupArgs(
                settings=settings, plan=plan, image=image, target_group_arn=balancer.target_group.arn,
                load_balancer_group_id=balancer.security_group.id, vpc_id=network.vpc_id,
                subnet_ids=network.replica_subnets, api_key=api_key, region=self.region,
                account_id=aws.get_caller_identity(opts=lookups).account_id,
                partition=aws.get_partition(opts=lookups).partition,
                metrics_log_group=monitoring.log_group if monitoring else None,
                instance_types=fleet_instance_types(settings, plan, args.vllm_command, self) if settings.spot else None,
                tenants=tenants,
            ),
            in_aws,
        )
        # Once the refresh onto a new image has succeeded: this stack's older images go (P11).
        prune_after_refresh(
            name, region=self.region, stack=stack, stack_id=image.stack_id, image_id=image.image_id,
            refresh_wait=group.refresh_wait, parent=self,
        )
        if monitoring is not None:
            monitoring.watch(
                group_name=group.group_name, load_balancer_suffix=balancer.arn_suffix,
                target_group_suffix=balancer.target_group.arn_suffix, replicas=settings.replicas,
                requests_waiting=requests_waiting_threshold(settings, plan),
            )
        # The endpoint exists once the group has its replicas healthy behind the balancer.
        self.endpoint = pulumi.Output.all(group.group_name, balancer.address).apply(lambda v: f"https://{v[1]}/v1")
        self.api_key = pulumi.Output.secret(api_key)
        self.api_keys = tenants.keys if tenants is not None else None  # secret: tenant -> key
        self.ca_certificate = balancer.ca_certificate
        self.image_id = image.image_id
        self.auto_scaling_group_name = group.group_name
        self.load_balancer_dns_name = balancer.dns_name
        self.builder_instance_id = image.builder.instance_id
        self.ssh_private_key = image.builder.ssh_private_key
        # Each replica's volumes are provisioned above gp3's baseline (components.fleet_group), the
        # builder's model volume like a single host's: their throughput and IOPS bill monthly.
        performance = {
            "replica_volume_performance_usd_per_month": image.model_volume_performance.usd_per_month
            + fleet_root_volume_performance().usd_per_month,
            "builder_volume_performance_usd_per_month": image.model_volume_performance.usd_per_month,
        }
        self.cost_breakdown = fleet_cost(
            plan.hourly_price_usd, replicas=settings.replicas,
            replica_volume_gb=plan.root_volume_gb + image.model_volume_gb,
            builder_volume_gb=image.volume_gb, load_balancer_zones=len(network.load_balancer_subnets),
            **performance,
        )
        self.cost = self.cost_breakdown.to_output()
        # Issue 26: with maxReplicas, warmReplicas or spot, what scaling watches and costs.
        self.scaling = scaling_output(
            settings, plan, replica_volume_gb=plan.root_volume_gb + image.model_volume_gb,
            builder_volume_gb=image.volume_gb, load_balancer_zones=len(network.load_balancer_subnets),
            instance_types=group.instance_types, **performance,
        )
        self.refresh_surge = refresh_surge(settings, plan)
        self.metrics_dashboard_url = monitoring.dashboard_url if monitoring else None
        # benchmarkOnDeploy: `vllm bench serve` figures of one replica (the builder, before the bake).
        self.benchmark = image.benchmark
        self.register_outputs({
            "endpoint": self.endpoint,
            "apiKey": self.api_key,
            "caCertificate": self.ca_certificate,
            "imageId": self.image_id,
            "autoScalingGroupName": self.auto_scaling_group_name,
            "costUsd": self.cost,
            # What tools/plan prints as the bill (sizing.costs.HostCost's fields).
            "costBreakdown": self.cost_breakdown.to_dict(),
            "refreshSurge": self.refresh_surge,
            **({"scaling": self.scaling} if self.scaling else {}),
            # What the replicas run (baked into the image), for tools/plan.
            "vllmImage": settings.vllm_image,
            "vllmCommand": list(args.vllm_command),
        })

    def _warn_if_readiness_is_short(self, settings: StackConfig, plan: SizingPlan) -> None:
        """A replica gives up on /health (ABANDON) after readinessTimeoutMinutes from its boot
        unit's start; below the expected load (sizing.start_time, less the boot) the group would
        replace replicas that were still loading, again and again (fleet-pitfalls P8)."""
        expected = replica_start(settings, plan)
        loading_s = expected.total_s - expected.boot_s
        if settings.readiness_timeout_minutes * 60 < loading_s:
            needed = -(-loading_s // 60)
            pulumi.log.warn(
                f"vllm-deploy:readinessTimeoutMinutes={settings.readiness_timeout_minutes}: a replica is "
                f"expected to need about {needed} min from its boot unit to /health (the image and "
                f"{plan.weights_on_disk_gb:.0f} GB of weights read from the snapshots, then vLLM's start), "
                "and gives up when this runs out, so the group would replace replicas still loading; "
                f"set readinessTimeoutMinutes to {needed + 5} or more",
                resource=self,
            )

    def outputs(self) -> dict[str, Any]:
        """The stack outputs of a fleet (the single host's that apply, and the fleet's own)."""
        return {
            "endpoint": self.endpoint,
            "apiKey": self.api_key,
            **({"apiKeys": self.api_keys} if self.api_keys is not None else {}),
            **({"caCertificate": self.ca_certificate} if self.ca_certificate is not None else {}),
            "replicas": self._settings_replicas,
            "autoScalingGroupName": self.auto_scaling_group_name,
            "imageId": self.image_id,
            # What a domain's DNS record points at when the account has no zone for it.
            "loadBalancerDnsName": self.load_balancer_dns_name,
            "builderInstanceId": self.builder_instance_id,
            **({"sshPrivateKey": self.ssh_private_key} if self.ssh_private_key is not None else {}),
            "region": self.region,
            "costUsd": self.cost,
            "refreshSurge": self.refresh_surge,
            **({"scaling": self.scaling} if self.scaling else {}),
            **({"metricsDashboardUrl": self.metrics_dashboard_url} if self.metrics_dashboard_url is not None else {}),
            **({"benchmark": self.benchmark} if self.benchmark is not None else {}),
        }
