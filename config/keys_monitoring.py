"""Stack keys of one concern: Prometheus, Grafana and alerts on a host; CloudWatch on a fleet.

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from config.keys_base import Keys


class MonitoringKeys(Keys):
    """Prometheus, Grafana and alerts on a host; CloudWatch on a fleet."""

    # --- monitoring ----------------------------------------------------------------
    monitoring: bool = Field(
        True,
        description="Run Prometheus, the DCGM and node exporters and Grafana on the host "
        "(Grafana at https://<address>/grafana/); on a fleet, CloudWatch (agent, alarms, dashboard).",
    )
    monitoring_retention_days: int = Field(
        15,
        ge=1,
        le=3650,
        description="Days of metrics Prometheus keeps (its --storage.tsdb.retention.time); on a "
        "fleet, days its metrics log group keeps events (rounded up to what CloudWatch Logs accepts).",
    )
    monitoring_retention_size_gib: int = Field(
        10,
        ge=1,
        le=1024,
        description="Most GiB of metrics Prometheus keeps (its --storage.tsdb.retention.size); "
        "the disk is sized for it.",
    )
    grafana_allowed_cidrs: Optional[list[str]] = Field(
        None,
        description="Who may open Grafana at /grafana/ (default: the operators' networks, "
        "sshAllowedCidrs, where they lie inside allowedCidrs); each block must lie inside "
        "allowedCidrs, which the security group lets reach port 443.",
    )
    alert_requests_waiting: Optional[int] = Field(
        None,
        ge=1,
        description="More requests than this waiting for 5 minutes raise the VllmRequestsQueued "
        "alert (default: sizing's maximum concurrency, the full-length sequences the KV cache vLLM "
        "will allocate holds).",
    )
