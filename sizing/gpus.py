"""The AWS GPU instance catalog (sizing/catalog/aws-gpu-instances.csv; sources in SOURCES.md).

Every row with GPU facts becomes a ``GpuInstance``, usable or not: rows vLLM 0.33 cannot use stay
in the list and ``unsupported_reason()`` says why, so the candidate table can explain instead of
silently leaving them out. Rows without GPU facts are skipped and listed by ``skipped_rows()``.

GPU memory is three different figures (``GpuMemory``, from sizing/catalog/gpu-memory.csv), and
each use takes its own: the sizing budget the CUDA total, the host's GPU check the nvidia-smi
total, and nothing the EC2 API's figure (it is kept to show where the catalog row came from).
"""

from __future__ import annotations

import csv
import difflib
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional


CATALOG_CSV = Path(__file__).parent / "catalog" / "aws-gpu-instances.csv"

GPU_MEMORY_CSV = Path(__file__).parent / "catalog" / "gpu-memory.csv"

# Where no public CUDA total was found for a GPU, gpu-memory.csv derives it as the nvidia-smi
# total minus the largest gap (nvidia-smi total - CUDA total) measured on any GPU in that file:
# A100 80GB, 81920 MiB - 79.14 GiB = 881 MiB (the others measured 1-729 MiB), floored to
# 0.01 GiB. So a derived figure is below every public observation of the same GPU.
DERIVED_CUDA_GAP_MIB = 881

PRICE_REGION = "us-east-1"

PRICE_DATE = "2026-07-20"

# vLLM 0.33.0's kernel library targets sm_75 and newer (SOURCES.md); CUDA 13 dropped Volta.
MIN_COMPUTE_CAPABILITY = 7.5

# The deployer provisions x86_64 hosts only: the DLAMI lookup, the host scripts and the pinned
# image are exercised on x86_64. The only arm64 GPU rows are g5g (T4G, whose vLLM arm64+CUDA
# support the references could not verify) and p6e-gb200 (no on-demand offer).
SUPPORTED_ARCHES = ("x86_64",)


@dataclass(frozen=True)
class GpuMemory:
    """One GPU's memory as three tools report it (sizing/catalog/gpu-memory.csv; SOURCES.md).

    * ``ec2_api_mib``: what EC2 DescribeInstanceTypes lists (GpuInfo MemoryInfo.SizeInMiB), MiB.
      AWS's catalog figure; it stands for neither of the other two (T4: 16384 MiB).
    * ``nvidia_smi_mib``: ``nvidia-smi --query-gpu=memory.total`` on the host, MiB; what the GPU
      check (components/scripts/gpu_smoke_check.sh) expects (T4: 15360 MiB).
    * ``cuda_total_gib``: the device total CUDA reports to torch (``torch.cuda.mem_get_info()[1]``,
      ``get_device_properties().total_memory``), GiB = 2**30 bytes. vLLM 0.33 budgets
      ``gpu_memory_utilization x`` this figure (vllm/v1/worker/utils.py ``request_memory``;
      shared reference vllm-notes.md section 4), so the sizing budget uses it (T4: 14.58 GiB).

    ``*_derived`` is True where no public figure was found and the value follows a stated rule
    (SOURCES.md); ``sources`` are the SOURCES.md keys.
    """

    ec2_api_mib: int
    nvidia_smi_mib: int
    cuda_total_gib: float
    nvidia_smi_name: str  # a word of the name nvidia-smi prints, e.g. "A10G" in "NVIDIA A10G"
    nvidia_smi_derived: bool = False
    cuda_derived: bool = False
    sources: tuple[str, ...] = ()

    @property
    def ec2_api_gib(self) -> float:
        return self.ec2_api_mib / 1024


@dataclass(frozen=True)
class GpuInstance:
    """One AWS GPU instance type, as the catalog describes it."""

    name: str  # e.g. "g6.xlarge"
    gpu_model: str  # e.g. "NVIDIA L4"
    gpu_count: int
    gpu_memory: GpuMemory  # per GPU, the three figures; the budget uses cuda_total_gib
    compute_capability: float
    vcpus: int
    memory_gib: float  # host RAM
    on_demand_usd_per_hour: Optional[float]  # us-east-1 Linux on-demand; None = not sold on demand
    arch: str  # "x86_64" | "arm64"
    instance_storage_gb: int = 0
    notes: str = ""
    # The most Elastic Fabric Adapter interfaces the type takes (EC2 DescribeInstanceTypes
    # NetworkInfo.EfaInfo.MaximumEfaInterfaces; 0 = no EFA, NetworkInfo.EfaSupported false).
    # At most one EFA per network card, so it is also how many network cards carry one (p5.48xlarge
    # 32, p4d.24xlarge 4, g6e.48xlarge 4, g5.48xlarge 1). Source: catalog column
    # efa_max_interfaces, from Karpenter's generated instance-type reference (SOURCES.md).
    efa_max_interfaces: int = 0

    @property
    def efa_supported(self) -> bool:
        """True when the type takes at least one EFA (EC2 NetworkInfo.EfaSupported)."""
        return self.efa_max_interfaces > 0

    @property
    def cuda_memory_gib(self) -> float:
        """Per GPU, GiB: the total vLLM budgets gpu_memory_utilization against."""
        return self.gpu_memory.cuda_total_gib

    @property
    def total_cuda_memory_gib(self) -> float:
        return self.gpu_count * self.cuda_memory_gib


class UnknownInstanceType(ValueError):
    """An instance type that is not in the GPU catalog."""


@dataclass(frozen=True)
class SkippedRow:
    name: str
    reason: str


def _float(value: str) -> Optional[float]:
    return float(value) if value.strip() else None


@functools.lru_cache(maxsize=1)
def gpu_memory_facts() -> dict[str, GpuMemory]:
    """GPU model (as the instance catalog names it) -> its three memory figures."""
    with GPU_MEMORY_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        row["gpu_model"]: GpuMemory(
            ec2_api_mib=int(row["ec2_api_mib"]),
            nvidia_smi_mib=int(row["nvidia_smi_total_mib"]),
            cuda_total_gib=float(row["cuda_total_gib"]),
            nvidia_smi_name=row["nvidia_smi_name"],
            nvidia_smi_derived=row["nvidia_smi_basis"] == "derived",
            cuda_derived=row["cuda_basis"] == "derived",
            sources=tuple(row["source_refs"].split(";")),
        )
        for row in rows
    }


def _gpu_memory(row: dict[str, str], fraction: float) -> GpuMemory:
    facts = gpu_memory_facts().get(row["gpu_model"])
    if facts is None:
        raise ValueError(
            f"{CATALOG_CSV.name}: {row['instance_type']} has GPU {row['gpu_model']!r}, which "
            f"{GPU_MEMORY_CSV.name} does not describe; add its EC2, nvidia-smi and CUDA totals"
        )
    ec2 = int(row["gpu_memory_mib_per_gpu_ec2_api"] or facts.ec2_api_mib)
    if fraction == 1:
        return replace(facts, ec2_api_mib=ec2)
    # A vGPU slice: the whole GPU's figures scaled (never sized, see unsupported_reason).
    return replace(
        facts,
        ec2_api_mib=ec2,
        nvidia_smi_mib=int(facts.nvidia_smi_mib * fraction),
        cuda_total_gib=facts.cuda_total_gib * fraction,
        nvidia_smi_derived=True,
        cuda_derived=True,
    )


def _efa_max_interfaces(row: dict[str, str]) -> int:
    value = (row.get("efa_max_interfaces") or "").strip()
    if not value.isdigit():
        raise ValueError(
            f"{CATALOG_CSV.name}: {row['instance_type']} has efa_max_interfaces {value!r}; it must be "
            "a whole number (0 = no EFA): EC2 DescribeInstanceTypes "
            "NetworkInfo.EfaInfo.MaximumEfaInterfaces for the type"
        )
    return int(value)


def _instance(row: dict[str, str]) -> GpuInstance:
    count = float(row["gpu_count"])
    notes = row["notes"]
    if count != int(count):
        # A fraction of one GPU: no whole GPU to run a TP rank on.
        notes = f"fractional GPU: {count:g} of one {row['gpu_model']}; " + notes
    return GpuInstance(
        name=row["instance_type"],
        gpu_model=row["gpu_model"],
        gpu_count=int(count) if count == int(count) else 0,
        gpu_memory=_gpu_memory(row, count if count < 1 else 1.0),
        compute_capability=float(row["compute_capability"]),
        vcpus=int(row["vcpus"]),
        memory_gib=float(row["memory_gib"]),
        on_demand_usd_per_hour=_float(row["on_demand_usd_per_hour_us_east_1"]),
        arch=row["arch"],
        instance_storage_gb=int(float(row["instance_storage_gb"] or 0)),
        notes=notes,
        efa_max_interfaces=_efa_max_interfaces(row),
    )


@functools.lru_cache(maxsize=1)
def _load() -> tuple[tuple[GpuInstance, ...], tuple[SkippedRow, ...]]:
    with CATALOG_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    instances, skipped = [], []
    for row in rows:
        required = ("gpu_count", "gpu_memory_gib_per_gpu", "vcpus", "memory_gib")
        lacking = [column for column in required if not row[column].strip()]
        if lacking:
            skipped.append(
                SkippedRow(
                    row["instance_type"],
                    f"catalog row has no {', '.join(lacking)} ({row['notes']})",
                )
            )
            continue
        instances.append(_instance(row))
    return tuple(instances), tuple(skipped)


def load_instances() -> list[GpuInstance]:
    """Every catalog instance with GPU facts, usable or not (see unsupported_reason)."""
    return list(_load()[0])


def skipped_rows() -> list[SkippedRow]:
    """Catalog rows that could not become a GpuInstance, with the reason."""
    return list(_load()[1])


def get(name: str) -> GpuInstance:
    for instance in _load()[0]:
        if instance.name == name:
            return instance
    for row in _load()[1]:
        if row.name == name:
            raise UnknownInstanceType(f"{name} cannot be sized: {row.reason}")
    names = [i.name for i in _load()[0]]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownInstanceType(
        f"{name} is not an NVIDIA GPU instance type in the catalog ({CATALOG_CSV.name}){hint}"
    )


def unsupported_reason(instance: GpuInstance) -> Optional[str]:
    """Why vLLM 0.33 on this deployer cannot use the instance at all; None when it can."""
    if instance.gpu_count < 1:
        return (
            f"{instance.gpu_model} slice, not a whole GPU: fractional g6f/gr6f GPUs are vGPU "
            "partitions needing NVIDIA GRID drivers, which this deployer does not install"
        )
    if instance.compute_capability < MIN_COMPUTE_CAPABILITY:
        return (
            f"{instance.gpu_model} is compute capability {instance.compute_capability:.1f}: vLLM 0.33 "
            f"ships no sm_{int(instance.compute_capability * 10)} kernels (needs "
            f"{MIN_COMPUTE_CAPABILITY:g}+; its CUDA 13 build dropped Volta)"
        )
    if instance.arch not in SUPPORTED_ARCHES:
        return (
            f"{instance.arch} host: this deployer provisions x86_64 hosts only "
            "(vLLM on arm64 with this GPU is not verified)"
        )
    return None


def gpus_label(instance: GpuInstance) -> str:
    """e.g. "4x A10G 21.62 GiB": GPU count, model without the vendor, CUDA total per GPU (GiB)."""
    model = instance.gpu_model.removeprefix("NVIDIA ")
    return f"{instance.gpu_count}x {model} {instance.cuda_memory_gib:.2f} GiB"
