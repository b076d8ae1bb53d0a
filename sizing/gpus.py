"""The AWS GPU instance catalog (sizing/catalog/aws-gpu-instances.csv; sources in SOURCES.md).

Every row with GPU facts becomes a ``GpuInstance``, usable or not: rows vLLM 0.33 cannot use stay
in the list and ``unsupported_reason()`` says why, so the candidate table can explain instead of
silently leaving them out. Rows without GPU facts are skipped and listed by ``skipped_rows()``.
"""

from __future__ import annotations

import csv
import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


CATALOG_CSV = Path(__file__).parent / "catalog" / "aws-gpu-instances.csv"

PRICE_REGION = "us-east-1"

PRICE_DATE = "2026-07-20"

# vLLM 0.33.0's kernel library targets sm_75 and newer (SOURCES.md); CUDA 13 dropped Volta.
MIN_COMPUTE_CAPABILITY = 7.5

# The deployer provisions x86_64 hosts only: the DLAMI lookup, the host scripts and the pinned
# image are exercised on x86_64. The only arm64 GPU rows are g5g (T4G, whose vLLM arm64+CUDA
# support the references could not verify) and p6e-gb200 (no on-demand offer).
SUPPORTED_ARCHES = ("x86_64",)


@dataclass(frozen=True)
class GpuInstance:
    """One AWS GPU instance type, as the catalog describes it."""

    name: str  # e.g. "g6.xlarge"
    gpu_model: str  # e.g. "NVIDIA L4"
    gpu_count: int
    gpu_memory_gib: float  # per GPU, as EC2 reports it (MiB / 1024)
    compute_capability: float
    vcpus: int
    memory_gib: float  # host RAM
    on_demand_usd_per_hour: Optional[float]  # us-east-1 Linux on-demand; None = not sold on demand
    arch: str  # "x86_64" | "arm64"
    instance_storage_gb: int = 0
    notes: str = ""

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib


class UnknownInstanceType(ValueError):
    """An instance type that is not in the GPU catalog."""


@dataclass(frozen=True)
class SkippedRow:
    name: str
    reason: str


def _float(value: str) -> Optional[float]:
    return float(value) if value.strip() else None


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
        gpu_memory_gib=float(row["gpu_memory_gib_per_gpu"]),
        compute_capability=float(row["compute_capability"]),
        vcpus=int(row["vcpus"]),
        memory_gib=float(row["memory_gib"]),
        on_demand_usd_per_hour=_float(row["on_demand_usd_per_hour_us_east_1"]),
        arch=row["arch"],
        instance_storage_gb=int(float(row["instance_storage_gb"] or 0)),
        notes=notes,
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
    """e.g. "4x A10G 22.35 GiB": GPU count, model without the vendor, memory per GPU."""
    model = instance.gpu_model.removeprefix("NVIDIA ")
    return f"{instance.gpu_count}x {model} {instance.gpu_memory_gib:g} GiB"
