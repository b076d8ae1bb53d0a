"""Prometheus on the host: its command line, its scrape configuration and its alerting rules.

Pure: the files are strings (YAML written by yaml.safe_dump), uploaded into the container by
components/monitoring.py and checked by the real `promtool` and a real Prometheus in
tests/serving/test_monitoring_live.py. Only options that Prometheus 2.42 (what the tests run)
and 3.14 (the pinned image) read the same way are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import yaml

from serving.monitoring.services import DCGM_EXPORTER, LOOPBACK, NODE_EXPORTER, PROMETHEUS, VLLM_JOB
from serving.monitoring.tenant_usage import USAGE_JOB
from serving.monitoring.tenant_usage import scrape_address as usage_scrape_address

if TYPE_CHECKING:
    from config.settings import StackConfig
    from sizing.plan import SizingPlan

# Where the pinned image keeps things (its Dockerfile: CMD --config.file=/etc/prometheus/
# prometheus.yml, WORKDIR and VOLUME /prometheus, USER nobody).
CONFIG_PATH = "/etc/prometheus/prometheus.yml"
RULES_PATH = "/etc/prometheus/rules/vllm-deploy.yml"
STORAGE_PATH = "/prometheus"

# Every 15 s: Grafana's $__rate_interval is then 1 minute (4 scrape intervals), short enough
# to see a burst. Storage grows with series x samples; monitoringRetentionSizeGib caps it.
SCRAPE_INTERVAL_S = 15
SCRAPE_TIMEOUT_S = 10

# The thresholds; the alert names below say what each one guards.
KV_CACHE_USAGE_ALERT = 0.90  # vllm:kv_cache_usage_perc is a fraction: 1 means 100 percent
DISK_USED_ALERT = 0.85
# A warning margin below the temperature at which a GPU slows its clocks; `nvidia-smi -q`
# prints that one for the instance's GPU as "GPU Slowdown Temp".
GPU_TEMPERATURE_ALERT_C = 85
# Long enough to ride out a burst, short enough to matter: the "for 5 minutes".
SUSTAINED = "5m"
# The filesystems of the root volume; virtual ones (tmpfs, overlay) are never "full" this way.
DISK_FSTYPES = "ext4|xfs"


@dataclass(frozen=True)
class AlertRule:
    """One Prometheus alerting rule; `expr` returns a series exactly while the problem holds."""

    name: str
    expr: str
    for_: str  # how long expr must hold before the alert fires ("0s": at once)
    severity: str  # critical | warning
    summary: str
    description: str  # what it means and what to do; docs/operations.md has more


def alert_rules(requests_waiting: int) -> tuple[AlertRule, ...]:
    """The endpoint's alerts. `requests_waiting`: the queue length that, held for 5 minutes,
    means the endpoint is saturated (config key alertRequestsWaiting, or derived from sizing)."""
    disk = f'fstype=~"{DISK_FSTYPES}"'
    return (
        AlertRule(
            "VllmDown",
            f'up{{job="{VLLM_JOB}"}} == 0',
            "2m",
            "critical",
            "vLLM does not answer on its API port",
            "Prometheus could not read vLLM's /metrics for 2 minutes: the container stopped, "
            "is restarting, or is still loading the model. `docker logs vllm` on the host says which.",
        ),
        AlertRule(
            "VllmKvCacheNearlyFull",
            f"max by (model_name) (vllm:kv_cache_usage_perc) > {KV_CACHE_USAGE_ALERT}",
            SUSTAINED,
            "warning",
            "KV cache above 90% for 5 minutes",
            "New requests wait for cache blocks and running ones get preempted. Lower "
            "maxModelLen or maxNumSeqs, use kvCacheDtype fp8, or move to a larger instanceType.",
        ),
        AlertRule(
            "VllmRequestsQueued",
            f"sum by (model_name) (vllm:num_requests_waiting) > {requests_waiting}",
            SUSTAINED,
            "warning",
            f"more than {requests_waiting} requests waiting for 5 minutes",
            "The endpoint gets more work than it can batch: time to first token grows with the "
            "queue. Add capacity (a larger instanceType, kvCacheDtype fp8) or rate-limit clients.",
        ),
        AlertRule(
            "GpuXidError",
            "max_over_time(DCGM_FI_DEV_XID_ERRORS[10m]) > 0",
            "0s",
            "critical",
            "GPU {{ $labels.gpu }} reported XID {{ $value }}",
            "The driver reported a GPU error (value = the XID code; NVIDIA's XID catalog says "
            "what it means). 48, 63, 64, 74, 79 and 92-95 mean the GPU needs a reset: replace "
            "the instance (pulumi up --replace on the instance).",
        ),
        AlertRule(
            "GpuRowRemapFailure",
            "DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
            "0s",
            "critical",
            "GPU {{ $labels.gpu }} could not remap failing memory rows",
            "The GPU's memory has errors it cannot repair: replace the instance.",
        ),
        AlertRule(
            "GpuOverheating",
            f"DCGM_FI_DEV_GPU_TEMP > {GPU_TEMPERATURE_ALERT_C}",
            SUSTAINED,
            "warning",
            "GPU {{ $labels.gpu }} above " + f"{GPU_TEMPERATURE_ALERT_C} C for 5 minutes",
            "Close to the temperature at which the GPU slows its clocks. On EC2 this is the "
            "host's cooling: stop and start the instance to move it to other hardware.",
        ),
        AlertRule(
            "HostDiskAlmostFull",
            f"1 - node_filesystem_avail_bytes{{{disk}}} / node_filesystem_size_bytes{{{disk}}} "
            f"> {DISK_USED_ALERT}",
            SUSTAINED,
            "warning",
            "{{ $labels.mountpoint }} is more than 85% full",
            "Model weights, images, container logs and metrics share the root volume. Raise "
            "diskSizeGb (the volume grows in place) or lower monitoringRetentionSizeGib.",
        ),
        AlertRule(
            "MonitoringTargetDown",
            f'up{{job=~"{DCGM_EXPORTER.job}|{NODE_EXPORTER.job}"}} == 0',
            SUSTAINED,
            "warning",
            "the {{ $labels.job }} exporter does not answer",
            "GPU or host panels and alerts are blind. `docker logs` of the exporter's container "
            "on the host says why.",
        ),
    )


def rules_yaml(rules: Sequence[AlertRule]) -> str:
    """The rules file (Prometheus rule_files format, one group)."""
    group = {
        "name": "vllm-deploy",
        "rules": [
            {
                "alert": rule.name,
                "expr": rule.expr,
                "for": rule.for_,
                "labels": {"severity": rule.severity},
                "annotations": {"summary": rule.summary, "description": rule.description},
            }
            for rule in rules
        ],
    }
    return yaml.safe_dump({"groups": [group]}, sort_keys=False, width=1000)


def scrape_targets(vllm_port: int, *, tenant_usage: bool = False) -> dict[str, str]:
    """job -> host:port of everything Prometheus scrapes on the host, all on loopback.
    `tenant_usage` (apiKeys set): mtail's per-tenant counters too (serving.monitoring.tenant_usage)."""
    targets = {
        VLLM_JOB: f"{LOOPBACK}:{vllm_port}",
        DCGM_EXPORTER.job: DCGM_EXPORTER.address,
        NODE_EXPORTER.job: NODE_EXPORTER.address,
        PROMETHEUS.job: PROMETHEUS.address,
    }
    if tenant_usage:
        targets[USAGE_JOB] = usage_scrape_address()
    return targets


def config_yaml(
    targets: Mapping[str, str],
    *,
    rules_path: str = RULES_PATH,
    scrape_interval_s: int = SCRAPE_INTERVAL_S,
    scrape_timeout_s: int = SCRAPE_TIMEOUT_S,
) -> str:
    """prometheus.yml: one static job per target (job -> host:port), rules evaluated at the
    scrape interval. The tests pass their own targets, paths and a faster interval."""
    interval = f"{scrape_interval_s}s"
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": f"{min(scrape_timeout_s, scrape_interval_s)}s",
            "evaluation_interval": interval,
        },
        "rule_files": [rules_path],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def command_args(
    *,
    retention_days: int,
    retention_size_gib: int,
    listen_address: str = PROMETHEUS.address,
    config_path: str = CONFIG_PATH,
    storage_path: str = STORAGE_PATH,
) -> list[str]:
    """Prometheus's flags: whichever retention limit is reached first deletes the oldest
    blocks. Its "GB" is 2**30 bytes (docs/storage.md), so `retention_size_gib` goes as is."""
    return [
        f"--config.file={config_path}",
        f"--storage.tsdb.path={storage_path}",
        f"--storage.tsdb.retention.time={retention_days}d",
        f"--storage.tsdb.retention.size={retention_size_gib}GB",
        f"--web.listen-address={listen_address}",
    ]


def requests_waiting_threshold(config: "StackConfig", plan: "SizingPlan") -> int:
    """alertRequestsWaiting, or sizing's maximum concurrency: the full-length sequences the KV
    cache vLLM will allocate holds (`concurrentFullLengthSequences`): more waiting than that, and a newcomer waits at least
    one whole long request before it starts."""
    if config.alert_requests_waiting is not None:
        return config.alert_requests_waiting
    return max(1, plan.concurrent_full_length_sequences)
