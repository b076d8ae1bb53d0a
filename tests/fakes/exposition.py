"""Prometheus text exposition of the real metric names, for the fake vLLM and fake exporters.

Names come from serving/monitoring/metrics/ (the lists with sources), written the way each
exporter's client library writes them: vLLM's prometheus_client (`_total` on counters,
`_bucket`/`_sum`/`_count` with `le` on histograms, labels model_name and engine), the DCGM
exporter's template (field names as metric names, labels gpu, UUID, pci_bus_id, device,
modelName, Hostname, DCGM_FI_DRIVER_VERSION) and the node exporter's series names.

Values: gauges take `values[name]` (else a default), counters grow at `rates[name]` per
second since `start`, histograms count one observation per second at `observed[name]`.
"""

from __future__ import annotations

import time
from typing import Mapping, Optional

from serving.monitoring import catalog

BUCKETS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)

# Labels some vLLM families carry besides model_name and engine (vllm/v1/metrics/loggers.py).
VLLM_EXTRA_LABELS = {
    "vllm:num_requests_waiting_by_reason": ("reason", ("capacity", "deferred")),
    "vllm:engine_sleep_state": ("sleep_state", ("awake", "weights_offloaded", "discard_all")),
    "vllm:prompt_tokens_by_source": ("source", ("local_compute", "local_cache_hit", "external_kv_transfer")),
    "vllm:prompt_tokens_cached_by_source": ("source", ("device", "host", "disk", "p2p", "external_unspecified")),
    "vllm:request_success": ("finished_reason", ("stop", "length", "abort", "error", "repetition")),
    # vllm/v1/metrics/loggers.py: one series per ADMISSION_REASONS entry, labels model_name, reason
    "vllm:admission_rejections": ("reason", ("max_num_queued_reqs", "max_num_queued_tokens")),
}
VLLM_GAUGES = {"vllm:kv_cache_usage_perc": 0.35, "vllm:num_requests_running": 3, "vllm:num_requests_waiting": 0}
VLLM_RATES = {"vllm:prompt_tokens": 400.0, "vllm:generation_tokens": 120.0, "vllm:prefix_cache_queries": 400.0,
              "vllm:prefix_cache_hits": 150.0, "vllm:num_preemptions": 0.05, "vllm:request_success": 1.0}
VLLM_OBSERVED = {"vllm:time_to_first_token_seconds": 0.08, "vllm:inter_token_latency_seconds": 0.02,
                 "vllm:e2e_request_latency_seconds": 3.0, "vllm:request_queue_time_seconds": 0.005,
                 "vllm:request_prompt_tokens": 400.0, "vllm:request_generation_tokens": 120.0}


def _labels(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}" if pairs else ""


def _family_lines(family: catalog.MetricFamily, label_sets: list[dict[str, str]], *, elapsed: float,
                  values: Mapping[str, float], rates: Mapping[str, float], observed: Mapping[str, float],
                  gauge_default: float) -> list[str]:
    exposed_type = family.type
    # prometheus_client (vLLM) heads a counter with its sample name, `_total` included, as a
    # real vLLM's /metrics shows (tests/real_vllm/test_metrics.py); the Go exporters' counter
    # names carry it already.
    heading = family.series[0] if family.type == "counter" else family.name
    lines = [f"# HELP {heading} {family.source}", f"# TYPE {heading} {exposed_type}"]
    for labels in label_sets:
        if family.type == "gauge":
            lines.append(f"{family.name}{_labels(labels)} {values.get(family.name, gauge_default)}")
        elif family.type == "counter":
            (series,) = family.series
            lines.append(f"{series}{_labels(labels)} {rates.get(family.name, 1.0) * elapsed}")
        else:
            count = int(elapsed)
            value = observed.get(family.name, 0.5)
            for bound in (*BUCKETS, float("inf")):
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f"{family.name}_bucket{_labels({**labels, 'le': le})} {count if value <= bound else 0}")
            lines.append(f"{family.name}_sum{_labels(labels)} {value * count}")
            lines.append(f"{family.name}_count{_labels(labels)} {count}")
    return lines


def vllm_text(model: str, *, start: float, values: Optional[Mapping[str, float]] = None) -> str:
    """vLLM 0.33's /metrics for one engine serving `model`."""
    elapsed = max(time.monotonic() - start, 0.0)
    gauges = {**VLLM_GAUGES, **(values or {})}
    lines: list[str] = []
    for family in catalog.vllm_families():
        base = {"model_name": model} if family.name == "vllm:admission_rejections" else {"model_name": model, "engine": "0"}
        if family.name in VLLM_EXTRA_LABELS:
            label, choices = VLLM_EXTRA_LABELS[family.name]
            label_sets = [{**base, label: c} for c in choices]
        elif family.name == "vllm:cache_config_info":
            label_sets = [{**base, "block_size": "16", "cache_dtype": "auto", "num_gpu_blocks": "4096"}]
        else:
            label_sets = [base]
        lines += _family_lines(family, label_sets, elapsed=elapsed, values=gauges, rates=VLLM_RATES,
                               observed=VLLM_OBSERVED, gauge_default=1.0 if family.name.endswith("_info") else 0.0)
    return "\n".join(lines) + "\n"


DCGM_GAUGES = {"DCGM_FI_DEV_GPU_TEMP": 55, "DCGM_FI_DEV_MEMORY_TEMP": 60, "DCGM_FI_DEV_GPU_UTIL": 85,
               "DCGM_FI_DEV_FB_USED": 14100, "DCGM_FI_DEV_FB_FREE": 950, "DCGM_FI_DEV_FB_RESERVED": 310,
               "DCGM_FI_DEV_POWER_USAGE": 62.5, "DCGM_FI_DEV_SM_CLOCK": 1590, "DCGM_FI_DEV_MEM_CLOCK": 5000,
               "DCGM_FI_DEV_XID_ERRORS": 0, "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0}


def dcgm_text(gpus: int, *, start: float, values: Optional[Mapping[str, float]] = None) -> str:
    """The DCGM exporter's /metrics for `gpus` T4s with the collectors file's fields."""
    elapsed = max(time.monotonic() - start, 0.0)
    gauges = {**DCGM_GAUGES, **(values or {})}
    label_sets = [
        {"gpu": str(i), "UUID": f"GPU-0000000{i}-fake", "pci_bus_id": f"00000000:00:1{i}.0", "device": f"nvidia{i}",
         "modelName": "Tesla T4", "Hostname": "ip-172-31-5-9", "DCGM_FI_DRIVER_VERSION": "580.95.05"}
        for i in range(gpus)
    ]
    lines: list[str] = []
    for family in catalog.dcgm_families():
        lines += _family_lines(family, label_sets, elapsed=elapsed, values=gauges, rates={}, observed={},
                               gauge_default=0.0)
    return "\n".join(lines) + "\n"


GIB = 2**30
NODE_GAUGES = {"node_load1": 0.8, "node_load5": 0.6, "node_load15": 0.5, "node_memory_MemTotal_bytes": 16 * GIB,
               "node_memory_MemFree_bytes": 2 * GIB, "node_memory_MemAvailable_bytes": 9 * GIB,
               "node_memory_Cached_bytes": 6 * GIB, "node_memory_Buffers_bytes": 0.2 * GIB,
               "node_memory_SwapTotal_bytes": 0, "node_memory_SwapFree_bytes": 0,
               "node_filesystem_size_bytes": 200e9, "node_filesystem_free_bytes": 90e9,
               "node_filesystem_avail_bytes": 80e9, "node_filesystem_readonly": 0,
               "node_boot_time_seconds": 1.79e9}
NODE_LABELS = {
    "node_cpu_seconds_total": [{"cpu": c, "mode": m} for c in ("0", "1") for m in ("idle", "user", "system")],
    "node_filesystem": [{"device": "/dev/nvme0n1p1", "fstype": "ext4", "mountpoint": "/", "device_error": ""}],
    "node_disk": [{"device": "nvme0n1"}],
    "node_network": [{"device": "ens5"}, {"device": "lo"}],
}
NODE_RATES = {"node_cpu_seconds_total": 0.5, "node_disk_read_bytes_total": 5e6, "node_disk_written_bytes_total": 1e6,
              "node_disk_io_time_seconds_total": 0.1, "node_network_receive_bytes_total": 2e5,
              "node_network_transmit_bytes_total": 1e6, "node_pressure_memory_waiting_seconds_total": 0.01,
              "node_pressure_io_waiting_seconds_total": 0.02}


def node_text(*, start: float, values: Optional[Mapping[str, float]] = None) -> str:
    """The node exporter's /metrics for a 2-CPU host with one ext4 root volume."""
    elapsed = max(time.monotonic() - start, 0.0)
    gauges = {**NODE_GAUGES, **(values or {})}
    lines: list[str] = []
    for family in catalog.node_families():
        group = next((k for k in NODE_LABELS if family.name == k or family.name.startswith(k + "_")), None)
        label_sets = NODE_LABELS[group] if group else [{}]
        lines += _family_lines(family, label_sets, elapsed=elapsed, values=gauges, rates=NODE_RATES, observed={},
                               gauge_default=0.0)
    return "\n".join(lines) + "\n"
