"""A fleet's metrics in CloudWatch: the CloudWatch agent's configuration for a replica, the alarms
that stand for the single host's Prometheus alerts, and the dashboard. Pure: strings and data.

Replicas come and go, so nothing on them keeps metrics: each one runs the CloudWatch agent (on
the host, not in a container: IMDSv2 hop limit 1, fleet-pitfalls P10), which
- scrapes vLLM's /metrics on loopback (`logs.metrics_collected.prometheus`, a Prometheus scrape
  file) and sends the series it keeps as embedded metric format (EMF) log events to the stack's
  log group, from which CloudWatch extracts the declared metrics;
- collects the host's CPU, memory and root-disk use and the GPUs' (nvidia-smi) through its own
  inputs (`metrics.metrics_collected`). The single host's DCGM and node exporters do not run on a
  replica: the agent's own inputs give the panels and alerts that need them, except two (below).

What the agent cannot carry (aws/amazon-cloudwatch-agent at ab55b8da, plugins/inputs/prometheus):
- histograms, their `_sum` and `_count` included: metrics_type_handler.go looks the type up by
  the sample's name before relabelling with `_sum`/`_count`/`_bucket` trimmed, so a histogram's
  `_sum` is typed `histogram` and metrics_filter.go drops it (only gauge, counter and summary
  pass). vLLM's latencies (TTFT, inter-token, e2e) are histograms: on a fleet, latency is the
  load balancer's `TargetResponseTime` (p50/p90/p99); see `LATENCY_NOTE`.
- `up`: utils.go isInternalMetric lets it through untyped, and the filter then drops it. "vLLM
  down" is the target group's HealthyHostCount below `replicas` instead.
- counters arrive as the delta since the previous scrape (calculator.go): the Sum over a period
  is the count in that period.

Metric names: CloudWatch dimension names may not start with `:` and the P18 notes leave open
whether a metric name with `:` survives EMF, so the scrape file renames `vllm:x` to `vllm_x`
(metric_relabel_configs). The agent types a sample by its name *before* relabelling
(metrics_type_handler.go, `metricNameBeforeRelabel`), so the rename keeps the type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from serving.monitoring.catalog import MetricFamily, vllm_families
from serving.monitoring.prometheus import DISK_USED_ALERT, GPU_TEMPERATURE_ALERT_C, KV_CACHE_USAGE_ALERT
from serving.monitoring.services import LOOPBACK, VLLM_JOB
from serving.replica import REPLICA_DIR

NAMESPACE = "vllm-deploy/replicas"
GROUP_DIMENSION = "AutoScalingGroupName"
# One scrape and one host sample a minute: CloudWatch's standard resolution, one EMF event per
# replica a minute (log ingestion is billed by the byte).
INTERVAL_S = 60
ALARM_PERIOD_S = 60
SUSTAINED_PERIODS = 5  # the single host's `for: 5m`

# Where the replica keeps the files, relative to its directory (serving.replica.REPLICA_DIR):
# boot.sh starts the agent with cloudwatch/agent.json when it is there.
AGENT_CONFIG_FILE = "cloudwatch/agent.json"
SCRAPE_CONFIG_FILE = "cloudwatch/prometheus.yaml"
CONFIG_DIR = f"{REPLICA_DIR}/cloudwatch"

# vLLM 0.33 families a fleet publishes (serving/monitoring/metrics/vllm-0.33.0.txt): what the
# alarms and the dashboard read, nothing else (P18: a keep-list keeps the log events small).
VLLM_PUBLISHED = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    "vllm:num_preemptions",
)

# The agent's own inputs: section -> measurements. CloudWatch names them `<measurement prefix>_
# <measurement>`: cpu_usage_active, mem_used_percent, disk_used_percent, and nvidia_smi_* for the
# `nvidia_gpu` section (translator/translate/metrics/metrics_collect/gpu/nvidiaSmi.go: SectionKey
# nvidia_gpu, SectionMappedKey nvidia_smi).
HOST_MEASUREMENTS = {
    "cpu": ("usage_active",),
    "mem": ("used_percent",),
    "disk": ("used_percent",),
    "nvidia_gpu": ("utilization_gpu", "temperature_gpu", "memory_used", "memory_total", "power_draw"),
}
_MEASUREMENT_PREFIX = {"nvidia_gpu": "nvidia_smi"}

LATENCY_NOTE = (
    "Latency on a fleet: vLLM's latencies are Prometheus histograms, which the CloudWatch agent "
    "drops (with their _sum and _count). The load balancer's TargetResponseTime is the time until "
    "a replica's response starts: the whole request for a non-streaming call, the time to the "
    "response headers (not the first token) for a streaming one. Per-token latency: the single "
    "host's Prometheus, or the benchmark (tools/bench) against one replica."
)
# Alerts of the single host with no honest CloudWatch form on a replica, and why.
NOT_ON_A_FLEET = {
    "GpuXidError": "XID codes come from DCGM; the agent's nvidia-smi input does not read them. A GPU "
    "that fails takes vLLM down, and the group replaces the replica (ELB health checks).",
    "GpuRowRemapFailure": "row-remap state comes from DCGM; same as GpuXidError.",
    "MonitoringTargetDown": "no exporter to be down: the alarm VllmMetricsMissing covers the agent.",
}


def cloudwatch_name(series: str) -> str:
    """The name CloudWatch gets for a scraped series: `:` becomes `_` (the scrape file's rename)."""
    return series.replace(":", "_")


def log_group_name(stack: str) -> str:
    """The stack's log group for the replicas' EMF events (and the instance profile's scope)."""
    return f"/vllm-deploy/{stack}/replica-metrics"


def replica_files(*, stack: str, group_name: str, vllm_port: int) -> dict[str, str]:
    """The agent's two files on a replica, by path relative to its directory (no secret)."""
    config = agent_config(log_group_name=log_group_name(stack), scrape_config_path=f"{REPLICA_DIR}/{SCRAPE_CONFIG_FILE}")
    return {
        AGENT_CONFIG_FILE: json.dumps(config, indent=1, sort_keys=True) + "\n",
        SCRAPE_CONFIG_FILE: scrape_config_yaml(group_name, vllm_port=vllm_port),
    }


def published_vllm_series() -> dict[str, MetricFamily]:
    """Exposed series name (`vllm:prompt_tokens_total`) -> family, for VLLM_PUBLISHED. Raises
    ValueError for a name not in vLLM 0.33's catalog or a histogram (the agent drops those)."""
    families = {f.name: f for f in vllm_families()}
    out = {}
    for name in VLLM_PUBLISHED:
        family = families.get(name)
        if family is None:
            raise ValueError(f"{name} is not a vLLM 0.33 metric (serving/monitoring/metrics/vllm-0.33.0.txt)")
        if family.type == "histogram":
            raise ValueError(f"{name} is a histogram: the CloudWatch agent drops histograms (P18)")
        (series,) = family.series
        out[series] = family
    return out


def scrape_config_yaml(group_name: str, *, vllm_port: int, interval_s: int = INTERVAL_S) -> str:
    """The agent's Prometheus scrape file: vLLM's /metrics on loopback (not behind the API key:
    the single host's Prometheus scrapes it the same way, serving/monitoring/services.py), the
    group's name as a label (the metrics' AutoScalingGroupName dimension), only the published
    series kept, `vllm:` renamed `vllm_`."""
    keep = "|".join(re.escape(s) for s in published_vllm_series())
    config = {
        "global": {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{min(10, interval_s)}s"},
        "scrape_configs": [{
            "job_name": VLLM_JOB,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [f"{LOOPBACK}:{vllm_port}"], "labels": {GROUP_DIMENSION: group_name}}],
            "metric_relabel_configs": [
                {"source_labels": ["__name__"], "regex": f"({keep})", "action": "keep"},
                {"source_labels": ["__name__"], "regex": "vllm:(.*)", "target_label": "__name__",
                 "replacement": "vllm_${1}", "action": "replace"},
            ],
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)


def agent_config(*, log_group_name: str, scrape_config_path: str) -> dict[str, Any]:
    """The agent's JSON configuration (its schema: translator/config/schema.json). The EMF
    declaration publishes every kept vLLM series with the dimension AutoScalingGroupName only
    (P19: a per-group metric, the one target tracking could use); the host's inputs get the
    group and the instance appended and are aggregated per group as well."""
    selectors = [f"^{re.escape(cloudwatch_name(s))}$" for s in published_vllm_series()]
    host: dict[str, Any] = {
        section: {"measurement": list(measurements), "metrics_collection_interval": INTERVAL_S}
        for section, measurements in HOST_MEASUREMENTS.items()
    }
    host["cpu"]["totalcpu"] = True
    host["disk"]["resources"] = ["/"]
    return {
        "agent": {"metrics_collection_interval": INTERVAL_S, "run_as_user": "root"},
        "metrics": {
            "namespace": NAMESPACE,
            "append_dimensions": {GROUP_DIMENSION: "${aws:AutoScalingGroupName}", "InstanceId": "${aws:InstanceId}"},
            "aggregation_dimensions": [[GROUP_DIMENSION]],
            "metrics_collected": host,
        },
        "logs": {
            "metrics_collected": {
                "prometheus": {
                    "log_group_name": log_group_name,
                    "prometheus_config_path": scrape_config_path,
                    "emf_processor": {
                        "metric_namespace": NAMESPACE,
                        "metric_declaration": [{
                            "source_labels": ["job"],
                            "label_matcher": f"^{VLLM_JOB}$",
                            "dimensions": [[GROUP_DIMENSION]],
                            "metric_selectors": selectors,
                        }],
                    },
                },
            },
        },
    }


def published_metrics(config: dict[str, Any]) -> set[str]:
    """The metric names an agent configuration publishes in NAMESPACE: the host inputs'
    `<prefix>_<measurement>` and each kept vLLM series that an EMF selector matches."""
    names = {
        f"{_MEASUREMENT_PREFIX.get(section, section)}_{m}"
        for section, body in config["metrics"]["metrics_collected"].items()
        for m in body["measurement"]
    }
    emf = config["logs"]["metrics_collected"]["prometheus"]["emf_processor"]
    for declaration in emf["metric_declaration"]:
        for series in published_vllm_series():
            if any(re.search(sel, cloudwatch_name(series)) for sel in declaration["metric_selectors"]):
                names.add(cloudwatch_name(series))
    return names


@dataclass(frozen=True)
class Alarm:
    """A CloudWatch alarm standing for a single-host alert (same name, same meaning).
    `scope`: "group" (NAMESPACE, dimension AutoScalingGroupName) or "targets" (AWS/ApplicationELB,
    dimensions TargetGroup and LoadBalancer)."""

    name: str
    metric: str
    statistic: str
    comparison: str
    threshold: float
    periods: int
    description: str
    scope: str = "group"
    treat_missing_data: str = "missing"
    period_s: int = ALARM_PERIOD_S

    @property
    def namespace(self) -> str:
        return NAMESPACE if self.scope == "group" else "AWS/ApplicationELB"


def alarms(*, replicas: int, requests_waiting: int) -> tuple[Alarm, ...]:
    """The single host's alerts (serving.monitoring.prometheus.alert_rules) that CloudWatch can
    hold honestly, for `replicas` replicas; `requests_waiting` is the per-host threshold."""
    vllm = cloudwatch_name
    return (
        Alarm("VllmDown", "HealthyHostCount", "Minimum", "LessThanThreshold", replicas, 2,
              f"Fewer than {replicas} replicas pass the load balancer's /health check for 2 minutes: "
              "vLLM stopped, is restarting or is still loading on one of them. The group replaces a "
              "replica that stays unhealthy.", scope="targets", treat_missing_data="breaching"),
        Alarm("VllmKvCacheNearlyFull", vllm("vllm:kv_cache_usage_perc"), "Maximum", "GreaterThanThreshold",
              KV_CACHE_USAGE_ALERT, SUSTAINED_PERIODS,
              "A replica's KV cache above 90% for 5 minutes: new requests wait and running ones get "
              "preempted. Lower maxModelLen or maxNumSeqs, kvCacheDtype fp8, or more replicas."),
        Alarm("VllmRequestsQueued", vllm("vllm:num_requests_waiting"), "Average", "GreaterThanThreshold",
              requests_waiting, SUSTAINED_PERIODS,
              f"More than {requests_waiting} requests waiting per replica (average) for 5 minutes: "
              "add replicas or rate-limit clients."),
        Alarm("GpuOverheating", "nvidia_smi_temperature_gpu", "Maximum", "GreaterThanThreshold",
              GPU_TEMPERATURE_ALERT_C, SUSTAINED_PERIODS,
              f"A replica's GPU above {GPU_TEMPERATURE_ALERT_C} C for 5 minutes: terminate that "
              "instance (the group launches a new one on other hardware)."),
        Alarm("HostDiskAlmostFull", "disk_used_percent", "Maximum", "GreaterThanThreshold",
              DISK_USED_ALERT * 100, SUSTAINED_PERIODS,
              "A replica's root volume more than 85% full (container logs, images): raise diskSizeGb."),
        Alarm("VllmMetricsMissing", vllm("vllm:num_requests_running"), "SampleCount", "LessThanThreshold",
              1, SUSTAINED_PERIODS,
              "No replica has sent vLLM's metrics for 5 minutes: the CloudWatch agent is stopped or "
              "cannot write to its log group (journalctl -u amazon-cloudwatch-agent on a replica).",
              treat_missing_data="breaching"),
    )


def _widget(title: str, metrics: list[list[Any]], *, region: str, x: int, y: int, stat: str = "Average",
            yaxis_max: Optional[float] = None, width: int = 12) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "title": title, "region": region, "view": "timeSeries", "stacked": False,
        "period": ALARM_PERIOD_S, "stat": stat, "metrics": metrics,
    }
    if yaxis_max is not None:
        properties["yAxis"] = {"left": {"min": 0, "max": yaxis_max}}
    return {"type": "metric", "x": x, "y": y, "width": width, "height": 6, "properties": properties}


def dashboard_body(*, region: str, group_name: str, load_balancer: str, target_group: str) -> str:
    """The dashboard's JSON (CloudWatch dashboard body structure): load, KV cache, tokens,
    latency from the load balancer, GPU and host, per group. `load_balancer` and `target_group`
    are the ARN suffixes the AWS/ApplicationELB dimensions take."""
    g = [GROUP_DIMENSION, group_name]
    elb = ["AWS/ApplicationELB"]
    lb = ["LoadBalancer", load_balancer]
    tg = ["TargetGroup", target_group, *lb]
    n, v = NAMESPACE, cloudwatch_name
    panels = [
        ("Requests running and waiting (average per replica)",
         [[n, v("vllm:num_requests_running"), *g], [n, v("vllm:num_requests_waiting"), *g]], "Average", None),
        ("KV cache usage (highest replica, 1 = full)", [[n, v("vllm:kv_cache_usage_perc"), *g]], "Maximum", 1),
        ("Tokens per minute (all replicas)",
         [[n, v("vllm:prompt_tokens_total"), *g], [n, v("vllm:generation_tokens_total"), *g]], "Sum", None),
        ("Requests finished and preemptions per minute",
         [[n, v("vllm:request_success_total"), *g], [n, v("vllm:num_preemptions_total"), *g]], "Sum", None),
        ("Response time at the load balancer (p50, p90, p99); see the note",
         [[*elb, "TargetResponseTime", *lb, {"stat": s, "label": s}] for s in ("p50", "p90", "p99")], "p50", None),
        ("Healthy and unhealthy replicas",
         [[*elb, "HealthyHostCount", *tg], [*elb, "UnHealthyHostCount", *tg]], "Minimum", None),
        ("Load balancer requests and 5xx per minute",
         [[*elb, "RequestCount", *lb], [*elb, "HTTPCode_Target_5XX_Count", *lb], [*elb, "HTTPCode_ELB_5XX_Count", *lb]],
         "Sum", None),
        ("GPU utilization and temperature (highest replica)",
         [[n, "nvidia_smi_utilization_gpu", *g], [n, "nvidia_smi_temperature_gpu", *g]], "Maximum", None),
        ("GPU memory used (MiB, highest replica)",
         [[n, "nvidia_smi_memory_used", *g], [n, "nvidia_smi_memory_total", *g]], "Maximum", None),
        ("Host CPU, memory, root disk (% , highest replica)",
         [[n, "cpu_usage_active", *g], [n, "mem_used_percent", *g], [n, "disk_used_percent", *g]], "Maximum", 100),
    ]
    widgets = [{"type": "text", "x": 0, "y": 0, "width": 24, "height": 2, "properties": {"markdown": LATENCY_NOTE}}]
    for i, (title, metrics, stat, top) in enumerate(panels):
        widgets.append(_widget(title, metrics, region=region, x=(i % 2) * 12, y=2 + (i // 2) * 6, stat=stat, yaxis_max=top))
    return json.dumps({"widgets": widgets}, sort_keys=True)


def dashboard_metrics(body: str) -> set[tuple[str, str]]:
    """(namespace, metric name) of every metric a dashboard body reads."""
    out = set()
    for widget in json.loads(body)["widgets"]:
        for row in widget.get("properties", {}).get("metrics", []):
            out.add((row[0], row[1]))
    return out
