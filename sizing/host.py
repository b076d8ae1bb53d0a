"""What the host needs besides GPU memory: RAM to load the model, and the root volume."""

from __future__ import annotations

import math

from config.constants import NAMESPACE
from config.settings import StackConfig
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

# Two volumes. The root volume holds the pinned vllm/vllm-openai image (~20 GiB unpacked, plus its
# ~10 GiB compressed layers held while `docker pull` extracts them), the host OS (the DLAMI's root
# snapshot, with CUDA toolkits 12.8-13.2 side by side, is taken as 75 GB; an AMI snapshot is a hard
# floor on the root volume) and headroom for logs and a second image on upgrade. The model cache
# volume holds the weights as stored, plus headroom for tokenizer files, the downloader's metadata
# and partial files. It outlives the instance, so a new host finds the weights there.
VLLM_IMAGE_DISK_GB = 30

HOST_OS_DISK_GB = 75

ROOT_HEADROOM_GB = 10

MODEL_HEADROOM_GB = 10  # at least this much room besides the weights

MODEL_HEADROOM_FRACTION = 0.10  # of the weights: partial downloads, tokenizer files, extras

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

# A fleet (replicas >= 2) keeps no metrics on its replicas: each one's CloudWatch agent sends them
# away (serving/monitoring/cloudwatch.py), so its root volume holds only the agent (its package
# unpacks to a few hundred MB) and the agent's own logs: an allowance, not a measurement.
CLOUDWATCH_AGENT_DISK_GB = 1


def host_ram_required_gib(tp: int) -> float:
    return HOST_BASE_RAM_GIB + HOST_RAM_PER_GPU_GIB * tp + HOST_SHARD_RAM_GIB


def monitoring_disk_gb(config: StackConfig) -> float:
    """GB (10**9 bytes) of root volume the monitoring stack needs: 0 with monitoring off; on a
    fleet's replica the CloudWatch agent only (CLOUDWATCH_AGENT_DISK_GB: its metrics live in
    CloudWatch, not on the host); else Prometheus's retention size (GiB) over
    PROMETHEUS_RETENTION_SHARE plus the images."""
    if not config.monitoring:
        return 0.0
    if config.replicas > 1:
        return float(CLOUDWATCH_AGENT_DISK_GB)
    retention_gb = config.monitoring_retention_size_gib * GIB / GB
    return retention_gb / PROMETHEUS_RETENTION_SHARE + MONITORING_IMAGES_DISK_GB


def _round_up(gb: float) -> int:
    return int(math.ceil(gb / DISK_ROUNDING_GB) * DISK_ROUNDING_GB)


def stored_weights_gb(spec: ModelSpec) -> float:
    """The checkpoint's weights as stored on disk, in GB (10**9 bytes)."""
    stored = WeightFormat(spec.native_quantization, spec.quant_bits, spec.quant_group_size)
    weights_gb = weight_bytes(spec, stored) / GB
    if spec.native_dtype == "float32" and not spec.checkpoint_bytes:
        weights_gb *= 2  # float32 checkpoints are twice the 16-bit size on disk
    return weights_gb


def root_volume_gb(config: StackConfig) -> int:
    """Root volume in GB: OS + vLLM image + headroom + monitoring (Prometheus's retention and
    the images) in whole 10 GB steps, or diskSizeGb.

    Raises SizingError naming diskSizeGb when it is set below that.
    """
    monitoring = monitoring_disk_gb(config)
    needed = _round_up(VLLM_IMAGE_DISK_GB + HOST_OS_DISK_GB + ROOT_HEADROOM_GB + monitoring)
    if config.disk_size_gb is not None and config.disk_size_gb < needed:
        monitoring_part = f" + monitoring {monitoring:.0f} GB" if monitoring else ""
        raise SizingError(
            f"{NAMESPACE}:diskSizeGb={config.disk_size_gb} is too small: the root volume needs "
            f"{needed} GB (vLLM image {VLLM_IMAGE_DISK_GB} GB + OS {HOST_OS_DISK_GB} GB + headroom "
            f"{ROOT_HEADROOM_GB} GB{monitoring_part}; the weights live on the model volume). Set "
            f"diskSizeGb to {needed} or more, or remove it to use that size"
            + (", or lower monitoringRetentionSizeGib." if monitoring and config.replicas == 1 else ".")
        )
    return max(needed, config.disk_size_gb or 0)


def model_volume_gb(spec: ModelSpec, config: StackConfig, addons_gb: float = 0.0) -> int:
    """Model cache volume in GB: the stored weights (and `addons_gb`: LoRA adapters and a
    speculative draft, sizing.addons.addon_disk_gb) + max(10 GB, 10%) in whole 10 GB steps, or
    modelVolumeSizeGb.

    Raises SizingError naming modelVolumeSizeGb when it is set below that.
    """
    weights_gb = stored_weights_gb(spec) + addons_gb
    headroom = max(MODEL_HEADROOM_GB, MODEL_HEADROOM_FRACTION * weights_gb)
    needed = _round_up(weights_gb + headroom)
    if config.model_volume_size_gb is not None and config.model_volume_size_gb < needed:
        raise SizingError(
            f"{NAMESPACE}:modelVolumeSizeGb={config.model_volume_size_gb} is too small: "
            f"{spec.model_id} needs {needed} GB (weights {weights_gb:.0f} GB + headroom "
            f"{headroom:.0f} GB). Set modelVolumeSizeGb to {needed} or more, or remove it to use "
            "that size."
        )
    return max(needed, config.model_volume_size_gb or 0)
