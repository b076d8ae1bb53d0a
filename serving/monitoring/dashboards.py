"""The three Grafana dashboards (vLLM serving, GPU, host) as data, and their JSON.

Each panel's description says what it shows; docs/operations.md says what to do about it.
Queries name only series the pinned exporters serve (serving.monitoring.catalog): vLLM 0.33's
`vllm:*`, DCGM's `DCGM_FI_DEV_*`, the node exporter's `node_*`, and Prometheus's own `up`,
`ALERTS` and storage gauges. `$__rate_interval` is Grafana's: four scrape intervals at least.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from serving.monitoring.prometheus import (
    DISK_FSTYPES,
    DISK_USED_ALERT,
    GPU_TEMPERATURE_ALERT_C,
    KV_CACHE_USAGE_ALERT,
)
from serving.monitoring.services import VLLM_JOB

DATASOURCE_UID = "prometheus"
RATE = "$__rate_interval"
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | table
    width: int = 12
    height: int = 8
    max: Optional[float] = None
    threshold: Optional[float] = None  # turns red at or above


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]

    def queries(self) -> list[tuple[str, str]]:
        """(panel title, expr) of every query."""
        return [(p.title, q.expr) for p in self.panels for q in p.queries]


def _quantiles(histogram: str, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[{RATE}])))",
            f"p{int(q * 100)}",
        )
        for q in qs
    )


def _rate(series: str, legend: str, selector: str = "") -> Query:
    return Query(f"sum(rate({series}{selector}[{RATE}]))", legend)


VLLM = Dashboard(
    uid="vllm-serving",
    title="vLLM serving",
    description="Load, latency, throughput and KV cache of the vLLM server (vLLM 0.33 metrics).",
    panels=(
        Panel(
            "vLLM up",
            "1 when Prometheus could read vLLM's /metrics at the last scrape, 0 when not "
            "(stopped, restarting, or loading the model).",
            (Query(f'up{{job="{VLLM_JOB}"}}', "up"),),
            kind="stat", width=6, height=4,
        ),
        Panel(
            "Alerts",
            "Alerts pending (condition true, waiting out its `for`) or firing.",
            (Query("sum by (alertname, alertstate) (ALERTS)", "{{alertname}} {{alertstate}}"),),
            kind="table", width=18, height=4,
        ),
        Panel(
            "Requests running and waiting",
            "Running: in the batch on the GPU. Waiting: queued for KV cache space or a batch "
            "slot. A queue that does not drain means more load than the GPU can batch.",
            (
                Query("sum(vllm:num_requests_running)", "running"),
                Query("sum(vllm:num_requests_waiting)", "waiting"),
            ),
        ),
        Panel(
            "KV cache usage",
            "Share of the KV cache blocks in use (1 = full). Near 1, new requests wait and "
            "running ones are preempted.",
            (Query("max(vllm:kv_cache_usage_perc)", "KV cache"),),
            unit="percentunit", max=1, threshold=KV_CACHE_USAGE_ALERT,
        ),
        Panel(
            "Time to first token",
            "From arrival to the first output token: queue time plus prefill of the prompt.",
            _quantiles("vllm:time_to_first_token_seconds"),
            unit="s",
        ),
        Panel(
            "Inter-token latency",
            "Time between two output tokens of a request while it decodes.",
            _quantiles("vllm:inter_token_latency_seconds"),
            unit="s",
        ),
        Panel(
            "End-to-end request latency",
            "From arrival to the last token.",
            _quantiles("vllm:e2e_request_latency_seconds"),
            unit="s",
        ),
        Panel(
            "Queue time",
            "Time requests spent waiting before they were scheduled.",
            _quantiles("vllm:request_queue_time_seconds", (0.5, 0.99)),
            unit="s",
        ),
        Panel(
            "Tokens per second",
            "Prompt tokens prefilled and tokens generated per second, all requests together.",
            (_rate("vllm:prompt_tokens_total", "prompt"), _rate("vllm:generation_tokens_total", "generated")),
        ),
        Panel(
            "Preemptions per second",
            "Running requests evicted from the KV cache to make room; each one recomputes "
            "its prompt later.",
            (_rate("vllm:num_preemptions_total", "preemptions"),),
        ),
        Panel(
            "Prefix cache hit rate",
            "Share of prompt tokens whose KV cache was reused from an earlier request.",
            (
                Query(
                    f"sum(rate(vllm:prefix_cache_hits_total[{RATE}])) / "
                    f"sum(rate(vllm:prefix_cache_queries_total[{RATE}]))",
                    "hit rate",
                ),
            ),
            unit="percentunit", max=1,
        ),
        Panel(
            "Finished requests by reason",
            "stop: a stop token or string; length: max_tokens or maxModelLen reached; abort: "
            "the client went away; error: failed inside vLLM.",
            (Query(f"sum by (finished_reason) (rate(vllm:request_success_total[{RATE}]))", "{{finished_reason}}"),),
            unit="reqps",
        ),
        Panel(
            "Request length",
            "Prompt and generated tokens per request (90th percentile).",
            (
                Query(f"histogram_quantile(0.9, sum by (le) (rate(vllm:request_prompt_tokens_bucket[{RATE}])))", "prompt p90"),
                Query(f"histogram_quantile(0.9, sum by (le) (rate(vllm:request_generation_tokens_bucket[{RATE}])))", "generated p90"),
            ),
        ),
    ),
)

GPU = Dashboard(
    uid="vllm-gpu",
    title="GPU (DCGM)",
    description="Per-GPU utilization, memory, temperature, power and errors from the NVIDIA DCGM exporter.",
    panels=(
        Panel(
            "GPU utilization",
            "Share of time a kernel ran on the GPU.",
            (Query("DCGM_FI_DEV_GPU_UTIL", "GPU {{gpu}}"),),
            unit="percent", max=100,
        ),
        Panel(
            "GPU memory",
            "Framebuffer memory in MiB as nvidia-smi counts it (a T4 shows 15360 MiB, not the "
            "16384 EC2 lists). vLLM takes gpuMemoryUtilization of it at start and keeps it: a "
            "flat line is normal; its KV cache use is on the vLLM dashboard.",
            (
                Query("DCGM_FI_DEV_FB_USED", "used GPU {{gpu}}"),
                Query("DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE + DCGM_FI_DEV_FB_RESERVED", "total GPU {{gpu}}"),
            ),
            unit="mbytes",
        ),
        Panel(
            "Temperature",
            "GPU die and (HBM GPUs only) memory temperature.",
            (
                Query("DCGM_FI_DEV_GPU_TEMP", "GPU {{gpu}}"),
                Query("DCGM_FI_DEV_MEMORY_TEMP", "memory GPU {{gpu}}"),
            ),
            unit="celsius", threshold=GPU_TEMPERATURE_ALERT_C,
        ),
        Panel(
            "Power draw",
            "Board power in watts.",
            (Query("DCGM_FI_DEV_POWER_USAGE", "GPU {{gpu}}"),),
            unit="watt",
        ),
        Panel(
            "Clocks",
            "SM and memory clocks in MHz; SM clocks that drop under load mean power or thermal "
            "throttling.",
            (
                Query("DCGM_FI_DEV_SM_CLOCK", "SM GPU {{gpu}}"),
                Query("DCGM_FI_DEV_MEM_CLOCK", "memory GPU {{gpu}}"),
            ),
            unit="suffix: MHz",
        ),
        Panel(
            "Memory copy utilization",
            "Share of time the GPU memory was being read or written.",
            (Query("DCGM_FI_DEV_MEM_COPY_UTIL", "GPU {{gpu}}"),),
            unit="percent", max=100,
        ),
        Panel(
            "Last XID error",
            "The code of the last XID error the driver reported (0: none).",
            (Query("DCGM_FI_DEV_XID_ERRORS", "GPU {{gpu}}"),),
            kind="stat", width=8, threshold=1,
        ),
        Panel(
            "Remapped memory rows",
            "Rows of GPU memory remapped after errors (Ampere and newer); a remap failure "
            "means the GPU should be replaced.",
            (
                Query("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "uncorrectable GPU {{gpu}}"),
                Query("DCGM_FI_DEV_ROW_REMAP_FAILURE", "remap failed GPU {{gpu}}"),
            ),
            width=8,
        ),
        Panel(
            "PCIe replays per second",
            "PCIe link retries; a steady rate points at a bad link.",
            (Query(f"rate(DCGM_FI_DEV_PCIE_REPLAY_COUNTER[{RATE}])", "GPU {{gpu}}"),),
            width=8,
        ),
    ),
)

_ROOT = 'mountpoint="/"'
_DISKS = f'fstype=~"{DISK_FSTYPES}"'

HOST = Dashboard(
    uid="vllm-host",
    title="Host",
    description="CPU, memory, disk and network of the GPU instance (node exporter).",
    panels=(
        Panel(
            "CPU busy",
            "Share of CPU time not idle, all cores. vLLM's API server and tokenizer run here.",
            (Query(f'1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[{RATE}]))', "busy"),),
            unit="percentunit", max=1,
        ),
        Panel(
            "Load average",
            "Runnable tasks, against the number of CPUs.",
            (
                Query("node_load1", "1m"),
                Query("node_load5", "5m"),
                Query("node_load15", "15m"),
                Query('count(node_cpu_seconds_total{mode="idle"})', "CPUs"),
            ),
        ),
        Panel(
            "Memory",
            "Host RAM in use (total minus available) and the total.",
            (
                Query("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes", "used"),
                Query("node_memory_MemTotal_bytes", "total"),
            ),
            unit="bytes",
        ),
        Panel(
            "Root volume used",
            "Share of the root volume in use: weights, images, logs and metrics.",
            (Query(f"1 - node_filesystem_avail_bytes{{{_ROOT}}} / node_filesystem_size_bytes{{{_ROOT}}}", "/"),),
            unit="percentunit", max=1, threshold=DISK_USED_ALERT,
        ),
        Panel(
            "Disk space available",
            "Bytes free to use on each disk filesystem.",
            (Query(f"node_filesystem_avail_bytes{{{_DISKS}}}", "{{mountpoint}}"),),
            unit="bytes",
        ),
        Panel(
            "Disk I/O",
            "Bytes read and written per second, all disks (model loads read here).",
            (_rate("node_disk_read_bytes_total", "read"), _rate("node_disk_written_bytes_total", "written")),
            unit="Bps",
        ),
        Panel(
            "Network",
            "Bytes received and sent per second, all interfaces but loopback.",
            (
                _rate("node_network_receive_bytes_total", "received", '{device!="lo"}'),
                _rate("node_network_transmit_bytes_total", "sent", '{device!="lo"}'),
            ),
            unit="Bps",
        ),
        Panel(
            "Pressure",
            "Share of time some task waited for memory or for I/O (Linux PSI).",
            (
                Query(f"rate(node_pressure_memory_waiting_seconds_total[{RATE}])", "memory"),
                Query(f"rate(node_pressure_io_waiting_seconds_total[{RATE}])", "I/O"),
            ),
            unit="percentunit",
        ),
        Panel(
            "Metrics storage",
            "Bytes of Prometheus blocks on disk, and the monitoringRetentionSizeGib limit.",
            (
                Query("prometheus_tsdb_storage_blocks_bytes", "stored"),
                Query("prometheus_tsdb_retention_limit_bytes", "limit"),
            ),
            unit="bytes", width=24,
        ),
    ),
)

DASHBOARDS = (VLLM, GPU, HOST)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    datasource = {"type": "prometheus", "uid": DATASOURCE_UID}
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.max is not None:
        defaults["min"], defaults["max"] = 0, panel.max
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if panel.threshold is not None:
        steps.append({"color": "red", "value": panel.threshold})
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": datasource,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": datasource,
                "expr": query.expr,
                "legendFormat": query.legend,
                "instant": panel.kind == "table",
                "range": panel.kind != "table",
            }
            for i, query in enumerate(panel.queries)
        ],
    }
    if panel.kind == "timeseries":
        body["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    if panel.kind == "timeseries" and panel.threshold is not None:
        body["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return body


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """Grafana's dashboard JSON model; panels flow left to right, 24 columns wide."""
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["vllm-deploy"],
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "links": [
            {"type": "dashboards", "tags": ["vllm-deploy"], "asDropdown": False, "title": "vllm-deploy"}
        ],
        "panels": panels,
    }


def dashboard_files() -> dict[str, str]:
    """file name -> JSON text, for Grafana's file provisioning."""
    return {f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n" for d in DASHBOARDS}
