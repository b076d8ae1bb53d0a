"""What the host costs running and stopped: the GPU instance, its two gp3 volumes, its public IPv4.

A stopped instance costs nothing for compute, but its EBS volumes and its Elastic IP keep being
billed. Prices are us-east-1 list prices, like the instance catalog's (sizing/catalog/SOURCES.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Amazon EBS pricing, us-east-1, gp3 storage: $0.08 per GB-month; the baseline 3,000 IOPS and
# 125 MiB/s the volumes use are included (https://aws.amazon.com/ebs/pricing/, read 2026-07).
GP3_USD_PER_GB_MONTH = 0.08

# Amazon VPC pricing, public IPv4 addresses: $0.005 per IP-hour, in use or idle, Elastic IPs
# included, since 2024-02-01 (https://aws.amazon.com/vpc/pricing/, "Public IPv4 Address").
PUBLIC_IPV4_USD_PER_HOUR = 0.005

# AWS prices per month assume 730 hours (365 x 24 / 12), as the AWS Pricing Calculator does.
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class HostCost:
    """US dollars per hour for the host, running and stopped (None: the instance has no price)."""

    running_usd_per_hour: Optional[float]
    stopped_usd_per_hour: float

    def to_output(self) -> dict[str, Optional[float]]:
        """The `costUsd` stack output: per hour and per 730-hour month, rounded to cents/hour."""

        def month(per_hour: Optional[float]) -> Optional[float]:
            return None if per_hour is None else round(per_hour * HOURS_PER_MONTH, 2)

        return {
            "runningPerHour": None if self.running_usd_per_hour is None else round(self.running_usd_per_hour, 4),
            "stoppedPerHour": round(self.stopped_usd_per_hour, 4),
            "runningPerMonth": month(self.running_usd_per_hour),
            "stoppedPerMonth": month(self.stopped_usd_per_hour),
        }


def host_cost(instance_usd_per_hour: Optional[float], volumes_gb: int) -> HostCost:
    """Cost of a host whose EBS volumes total `volumes_gb` GB.

    Running: the instance's on-demand price + the volumes + one public IPv4 address.
    Stopped: the volumes + the address (the Elastic IP stays attached to the stopped instance).
    """
    storage = volumes_gb * GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH
    stopped = storage + PUBLIC_IPV4_USD_PER_HOUR
    running = None if instance_usd_per_hour is None else instance_usd_per_hour + stopped
    return HostCost(running_usd_per_hour=running, stopped_usd_per_hour=stopped)
