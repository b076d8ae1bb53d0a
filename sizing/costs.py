"""What a deployment costs per hour and per month, running and stopped: the instance, its gp3
volumes (root and model) and its public IPv4 address. Pure arithmetic on published list prices
(us-east-1, USD). A stopped instance costs nothing for compute, but its EBS volumes and its
Elastic IP keep being billed.

Prices (re-check before quoting; other regions differ):
* gp3 storage: $0.08 per GB-month in US East (N. Virginia), https://aws.amazon.com/ebs/pricing/
  (the 3,000 IOPS and 125 MB/s baseline every gp3 volume has are included; the model volume's
  throughput and IOPS above them: sizing/catalog/start-rates.csv, $0.040 per MiB/s-month and
  $0.005 per IOPS-month).
* public IPv4: $0.005 per address per hour, in use or idle, since 2024-02-01,
  https://aws.amazon.com/vpc/pricing/ ("Public IPv4 address" tab) and the AWS News Blog
  "New – AWS Public IPv4 Address Charge + Public IP Insights" (2023-07-28).
* the instance: the GPU catalog's on-demand price (sizing/catalog/SOURCES.md, 2026-07-20).
* Application Load Balancer (replicas): $0.0225 per ALB-hour in US East (N. Virginia), plus
  $0.008 per LCU-hour, which depends on traffic and is not counted here,
  https://aws.amazon.com/elasticloadbalancing/pricing/ (Application Load Balancer tab); its
  public IPv4 addresses (one per zone) are billed as above.
* a month is 730 hours, the convention of AWS's pricing pages and Pricing Calculator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

GP3_USD_PER_GB_MONTH = 0.08
PUBLIC_IPV4_USD_PER_HOUR = 0.005
ALB_USD_PER_HOUR = 0.0225
HOURS_PER_MONTH = 730
PRICE_SOURCES = (
    "instance: sizing/catalog/aws-gpu-instances.csv (Linux on-demand, us-east-1, 2026-07-20)",
    "gp3 volume: $0.08/GB-month, https://aws.amazon.com/ebs/pricing/ (us-east-1)",
    "public IPv4: $0.005/h per address since 2024-02-01, https://aws.amazon.com/vpc/pricing/",
    "month = 730 hours (AWS Pricing Calculator convention)",
)
ALB_PRICE_SOURCE = (
    "application load balancer: $0.0225/h + $0.008 per LCU-hour (LCUs not counted), "
    "https://aws.amazon.com/elasticloadbalancing/pricing/ (us-east-1)"
)


@dataclass(frozen=True)
class HostCost:
    """The running cost of one deployment, in USD.

    `instance_usd_per_hour` is None when the catalog has no on-demand price for the type.
    """

    instance_usd_per_hour: Optional[float]
    volume_gb: int  # the gp3 volumes together (root + model), in GB as EBS bills it (10**9 bytes)
    public_ipv4_addresses: int = 1
    spot: bool = False
    load_balancers: int = 0  # Application Load Balancers (replicas), their hourly part
    instances: int = 1  # how many instances instance_usd_per_hour pays for (replicas)
    # gp3 throughput above 125 MiB/s and IOPS above 3,000 (sizing.start_stages.VolumePerformance),
    # every volume together; billed whether the instance runs or not.
    volume_performance_usd_per_month: float = 0.0

    @property
    def volume_performance_usd_per_hour(self) -> float:
        return self.volume_performance_usd_per_month / HOURS_PER_MONTH

    @property
    def load_balancer_usd_per_hour(self) -> float:
        return self.load_balancers * ALB_USD_PER_HOUR

    @property
    def volume_usd_per_hour(self) -> float:
        """gp3 storage, plus any throughput and IOPS above the baseline."""
        return self.volume_gb * GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH + self.volume_performance_usd_per_hour

    @property
    def public_ipv4_usd_per_hour(self) -> float:
        return self.public_ipv4_addresses * PUBLIC_IPV4_USD_PER_HOUR

    @property
    def total_usd_per_hour(self) -> Optional[float]:
        if self.instance_usd_per_hour is None:
            return None
        return (
            self.instance_usd_per_hour + self.volume_usd_per_hour + self.public_ipv4_usd_per_hour
            + self.load_balancer_usd_per_hour
        )

    @property
    def stopped_usd_per_hour(self) -> float:
        """What a stopped instance still costs per hour: the volumes and the Elastic IP (and a
        fleet's load balancer, which a fleet never stops)."""
        return self.volume_usd_per_hour + self.public_ipv4_usd_per_hour + self.load_balancer_usd_per_hour

    @property
    def total_usd_per_month(self) -> Optional[float]:
        hourly = self.total_usd_per_hour
        return None if hourly is None else hourly * HOURS_PER_MONTH

    @property
    def stopped_usd_per_month(self) -> float:
        """What a stopped instance still costs: the volume and the Elastic IP."""
        return self.stopped_usd_per_hour * HOURS_PER_MONTH

    def lines(self) -> list[tuple[str, Optional[float], Optional[float]]]:
        """(item, USD per hour, USD per month) rows, the total last."""
        instance = self.instance_usd_per_hour
        label = "instance (on-demand)" if not self.spot else "instance (on-demand: the spot ceiling)"
        if self.instances > 1:
            label = f"instances x{self.instances} (on-demand)"
        rows = [
            (label, instance, None if instance is None else instance * HOURS_PER_MONTH),
            (f"gp3 volumes {self.volume_gb} GB", self.volume_usd_per_hour - self.volume_performance_usd_per_hour,
             self.volume_gb * GP3_USD_PER_GB_MONTH),
            (f"public IPv4 x{self.public_ipv4_addresses}", self.public_ipv4_usd_per_hour,
             self.public_ipv4_usd_per_hour * HOURS_PER_MONTH),
        ]
        if self.volume_performance_usd_per_month:
            rows.append(("gp3 throughput/IOPS above 125 MiB/s, 3,000 IOPS", self.volume_performance_usd_per_hour,
                         self.volume_performance_usd_per_month))
        if self.load_balancers:
            rows.append((f"application load balancer x{self.load_balancers} (LCUs extra)",
                         self.load_balancer_usd_per_hour, self.load_balancer_usd_per_hour * HOURS_PER_MONTH))
        rows.append(("total", self.total_usd_per_hour, self.total_usd_per_month))
        return rows

    def to_dict(self) -> dict[str, Any]:
        fleet = {} if not self.load_balancers else {
            "instances": self.instances,
            "loadBalancers": self.load_balancers,
            "loadBalancerPerHour": self.load_balancer_usd_per_hour,
        }
        return {
            **fleet,
            "currency": "USD",
            "instancePerHour": self.instance_usd_per_hour,
            "spot": self.spot,
            "volumeGb": self.volume_gb,
            "volumePerHour": self.volume_usd_per_hour,
            "volumePerformancePerMonth": self.volume_performance_usd_per_month,
            "publicIpv4Addresses": self.public_ipv4_addresses,
            "publicIpv4PerHour": self.public_ipv4_usd_per_hour,
            "totalPerHour": self.total_usd_per_hour,
            "totalPerMonth": self.total_usd_per_month,
            "stoppedPerMonth": self.stopped_usd_per_month,
            "hoursPerMonth": HOURS_PER_MONTH,
            "sources": list(PRICE_SOURCES) + ([ALB_PRICE_SOURCE] if self.load_balancers else []),
        }

    def to_output(self) -> dict[str, Optional[float]]:
        """The `costUsd` stack output: per hour (4 decimals) and per 730-hour month (cents)."""

        def month(per_hour: Optional[float]) -> Optional[float]:
            return None if per_hour is None else round(per_hour * HOURS_PER_MONTH, 2)

        running = self.total_usd_per_hour
        return {
            "runningPerHour": None if running is None else round(running, 4),
            "stoppedPerHour": round(self.stopped_usd_per_hour, 4),
            "runningPerMonth": month(running),
            "stoppedPerMonth": month(self.stopped_usd_per_hour),
        }


def host_cost(
    instance_usd_per_hour: Optional[float], volumes_gb: int, nodes: int = 1, *,
    volume_performance_usd_per_month: float = 0.0,
) -> HostCost:
    """`nodes` hosts (each with its public IPv4 address: one Elastic IP per node) costing
    `instance_usd_per_hour` together, with `volumes_gb` GB of gp3 volumes in all, and
    `volume_performance_usd_per_month` for their throughput and IOPS above the baseline."""
    return HostCost(instance_usd_per_hour=instance_usd_per_hour, volume_gb=volumes_gb, public_ipv4_addresses=nodes,
                    volume_performance_usd_per_month=volume_performance_usd_per_month)


def fleet_cost(
    instance_usd_per_hour: Optional[float],
    *,
    replicas: int,
    replica_volume_gb: int,
    builder_volume_gb: int,
    load_balancer_zones: int,
    replica_volume_performance_usd_per_month: float = 0.0,
    builder_volume_performance_usd_per_month: float = 0.0,
) -> HostCost:
    """A fleet: `replicas` instances at `instance_usd_per_hour` each, each with its volumes
    (`replica_volume_gb`: root + model) and a public IPv4 address; the stopped builder's volumes
    and Elastic IP (kept for the image, fleet-pitfalls P11); one load balancer with an address
    per zone. The volumes' throughput and IOPS above gp3's baseline: USD per month for one
    replica's volumes and for the builder's."""
    return HostCost(
        instance_usd_per_hour=None if instance_usd_per_hour is None else instance_usd_per_hour * replicas,
        volume_gb=replicas * replica_volume_gb + builder_volume_gb,
        public_ipv4_addresses=replicas + 1 + load_balancer_zones,
        load_balancers=1,
        instances=replicas,
        volume_performance_usd_per_month=replicas * replica_volume_performance_usd_per_month
        + builder_volume_performance_usd_per_month,
    )
