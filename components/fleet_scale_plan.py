"""A scaling or spot fleet's two preview-time answers (issue 26): the instance types a spot
fleet's mixed-instances policy lists (serving.fleet_types, asked of the region's offer), and
the `scaling` output tools/plan prints (the bill at the minimum, at the maximum, and the warm
pool's). A fixed on-demand fleet gets neither.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components import fleet_scaling
from components.region import offered_instance_types
from config.settings import StackConfig
from serving.fleet_types import same_argv_types
from sizing.costs import GP3_USD_PER_GB_MONTH, HOURS_PER_MONTH, fleet_cost
from sizing.errors import SizingError
from sizing.hub import resolve
from sizing.models import ModelResolutionError
from sizing.plan import SizingPlan


def fleet_instance_types(
    settings: StackConfig, plan: SizingPlan, argv: list[str], resource: Optional[pulumi.Resource] = None
) -> list[str]:
    """The spot fleet's types, cheapest first: every type the region offers that runs `argv`
    on the image's GPU (serving.fleet_types). When the model cannot be read again (a gated
    model, the Hub out of reach), the sized type alone, with a warning."""
    try:
        found = same_argv_types(settings, plan, argv, offered=offered_instance_types(), resolver=resolve)
    except (SizingError, ModelResolutionError) as exc:
        pulumi.log.warn(
            f"spot fleet: only {plan.instance.name} in the mixed-instances policy (the other types "
            f"could not be sized: {str(exc).splitlines()[0][:200]}); spot capacity is then one pool "
            "per zone, interrupted more often", resource=resource,
        )
        return [plan.instance.name]
    left = "; ".join(f"{name}: {why}" for name, why in found.left_out.items())
    pulumi.log.info(
        f"spot fleet: {len(found.names)} instance types run the same vLLM argv on the image's "
        f"{plan.instance.gpu_model}: {', '.join(found.names)} (cheapest first)"
        + (f"; left out: {left}" if left else ""), resource=resource,
    )
    return found.names


def warm_pool_usd_per_month(warm: int, replica_volume_gb: int, replica_volume_performance_usd_per_month: float = 0.0) -> float:
    """Stopped instances bill their gp3 volumes only, their provisioned throughput and IOPS
    included (no compute, and the auto-assigned public IPv4 address is released while stopped)."""
    return warm * (replica_volume_gb * GP3_USD_PER_GB_MONTH + replica_volume_performance_usd_per_month)


def scaling_output(
    settings: StackConfig, plan: SizingPlan, *, replica_volume_gb: int, builder_volume_gb: int,
    load_balancer_zones: int, instance_types: list[str],
    replica_volume_performance_usd_per_month: float = 0.0, builder_volume_performance_usd_per_month: float = 0.0,
) -> Optional[dict[str, Any]]:
    """The `scaling` output: None for a fixed on-demand fleet. Per month (730 h), USD, the
    instances at the on-demand list price (a spot fleet's ceiling)."""
    spot = settings.replicas > 1 and settings.spot
    if not (fleet_scaling.scales(settings) or settings.warm_replicas or spot):
        return None

    def month(replicas: int) -> Optional[float]:
        total = fleet_cost(plan.hourly_price_usd, replicas=replicas, replica_volume_gb=replica_volume_gb,
                           builder_volume_gb=builder_volume_gb, load_balancer_zones=load_balancer_zones,
                           replica_volume_performance_usd_per_month=replica_volume_performance_usd_per_month,
                           builder_volume_performance_usd_per_month=builder_volume_performance_usd_per_month)
        monthly = total.total_usd_per_month
        return None if monthly is None else round(monthly, 2)

    warm_month = round(warm_pool_usd_per_month(settings.warm_replicas, replica_volume_gb,
                                               replica_volume_performance_usd_per_month), 2)
    out: dict[str, Any] = {
        **fleet_scaling.summary(settings).to_dict(),
        "scales": fleet_scaling.scales(settings),
        "costAtMinPerMonth": month(settings.replicas),
        "costAtMaxPerMonth": month(fleet_scaling.max_replicas(settings)),
        "warmPoolPerMonth": warm_month,
        "hoursPerMonth": HOURS_PER_MONTH,
    }
    if spot:
        out.update({
            "spot": True, "onDemandReplicas": settings.on_demand_replicas, "instanceTypes": list(instance_types),
            "spotAllocationStrategy": fleet_scaling.SPOT_ALLOCATION,
            "spotStreamBoundSeconds": fleet_scaling.SPOT_STREAM_BOUND_S,
        })
    return out
