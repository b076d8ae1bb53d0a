"""What the host needs besides GPU memory: RAM to load the model, and the root volume."""

from __future__ import annotations

import math

from config.settings import NAMESPACE, StackConfig
from sizing.errors import SizingError
from sizing.formats import WeightFormat
from sizing.memory import weight_bytes
from sizing.models import ModelSpec


GB = 10**9

# vLLM's safetensors loader reads the checkpoint one tensor at a time through mmap, so weights
# stream through the page cache and need not fit in RAM. What must fit: the OS, Docker and the
# vLLM API server + engine core (HOST_BASE_RAM_GIB), one worker process per GPU with its torch
# and CUDA host allocations (HOST_RAM_PER_GPU_GIB), and one checkpoint shard being read
# (HF's default max_shard_size is 5 GB).
HOST_BASE_RAM_GIB = 6.0

HOST_RAM_PER_GPU_GIB = 2.0

HOST_SHARD_RAM_GIB = 5.0

# Root volume: the pinned vllm/vllm-openai image (~20 GiB unpacked, plus its ~10 GiB compressed
# layers held while `docker pull` extracts them), the host OS (the DLAMI's root snapshot, with
# CUDA toolkits 12.8-13.2 side by side, is taken as 75 GB; an AMI snapshot is a hard floor on
# the root volume), and headroom for logs, the HF cache metadata and a second image on upgrade.
VLLM_IMAGE_DISK_GB = 30

HOST_OS_DISK_GB = 75

DISK_HEADROOM_GB = 10

DISK_HEADROOM_FRACTION = 0.10  # of the weights: partial downloads, tokenizer files, extras

DISK_ROUNDING_GB = 10

GIB = 2**30

# monitoring: true. Prometheus deletes old blocks to stay under monitoringRetentionSizeGib,
# which it reads in powers of two ("GB" = GiB). Its storage guide asks for that size to be at
# most 80-85% of the space it is given: compactions briefly hold source and result blocks
# side by side, and the WAL and head chunks count too (prometheus/prometheus v3.14.0,
# docs/storage.md, "Right-Sizing Retention Size"). So the volume gets retention / 0.80.
PROMETHEUS_RETENTION_SHARE = 0.80

# The four monitoring images unpacked (Prometheus, Grafana, DCGM exporter, node exporter) plus
# Grafana's database and the exporters' logs: an allowance, not a measurement. The largest,
# the DCGM exporter, carries DCGM and CUDA base libraries; the others are single Go binaries
# (Grafana with its frontend) on small base images.
MONITORING_IMAGES_DISK_GB = 4


def host_ram_required_gib(tp: int) -> float:
    return HOST_BASE_RAM_GIB + HOST_RAM_PER_GPU_GIB * tp + HOST_SHARD_RAM_GIB


def monitoring_disk_gb(config: StackConfig) -> float:
    """GB (10**9 bytes) of root volume the monitoring stack needs: 0 with monitoring off, else
    Prometheus's retention size (GiB) over PROMETHEUS_RETENTION_SHARE plus the images."""
    if not config.monitoring:
        return 0.0
    retention_gb = config.monitoring_retention_size_gib * GIB / GB
    return retention_gb / PROMETHEUS_RETENTION_SHARE + MONITORING_IMAGES_DISK_GB


def disk_size_gb(spec: ModelSpec, config: StackConfig) -> int:
    """Root volume: checkpoint as stored + vLLM image + OS + headroom + monitoring, in whole
    10 GB steps. Raises SizingError when diskSizeGb is set below that."""
    stored = WeightFormat(spec.native_quantization, spec.quant_bits, spec.quant_group_size)
    weights_gb = weight_bytes(spec, stored) / GB
    if spec.native_dtype == "float32" and not spec.checkpoint_bytes:
        weights_gb *= 2  # float32 checkpoints are twice the 16-bit size on disk
    headroom = max(DISK_HEADROOM_GB, DISK_HEADROOM_FRACTION * weights_gb)
    monitoring = monitoring_disk_gb(config)
    raw = weights_gb + VLLM_IMAGE_DISK_GB + HOST_OS_DISK_GB + headroom + monitoring
    needed = int(math.ceil(raw / DISK_ROUNDING_GB) * DISK_ROUNDING_GB)
    if config.disk_size_gb is not None and config.disk_size_gb < needed:
        monitoring_part = (
            f" + monitoring {monitoring:.0f} GB (monitoringRetentionSizeGib "
            f"{config.monitoring_retention_size_gib} GiB + images)"
            if monitoring
            else ""
        )
        raise SizingError(
            f"{NAMESPACE}:diskSizeGb={config.disk_size_gb} is too small: {spec.model_id} needs "
            f"{needed} GB (weights {weights_gb:.0f} GB + vLLM image {VLLM_IMAGE_DISK_GB} GB + OS "
            f"{HOST_OS_DISK_GB} GB + headroom {headroom:.0f} GB{monitoring_part}). Set diskSizeGb "
            f"to {needed} or more, or remove it to use that size"
            + (", or lower monitoringRetentionSizeGib." if monitoring else ".")
        )
    return max(needed, config.disk_size_gb or 0)
