"""How long a start takes, stage by stage, and the model volume's throughput that keeps the weight
load within a target. Pure: no Pulumi; rates from sizing/catalog/start-rates.csv (each with its
source and date, `kind` published or allowance).

Four starts (`Start`):
- HOST_COLD: a single host's first start of vLLM after provisioning: the image is pulled from the
  registry, the weights (downloaded onto the model volume, no snapshot) are read at the volume's
  gp3 throughput, torch.compile runs with an empty cache.
- WAKE: a stopped single host started again (tools/wake): the image is on disk; the page cache is
  empty, so the weights are read again at the volume's throughput; the compile cache on the model
  volume is reused.
- FLEET_COLD: a replica launched from the baked image: both volumes come from snapshots, so every
  block is read through the volume initialization rate, capped by the volume's throughput
  (fleet-pitfalls P12): the image layers on the root volume and the weights on the model volume;
  first-boot work (cloud-init per-instance modules) runs.
- WARM_POOL: a replica started from the warm pool: it booted once (volumes hydrated, first-boot
  work done) and was stopped; a start is a boot plus vLLM's own load at the volume's throughput.

Every duration is in seconds, every byte count in GB (10**9) as the sizing gives it, every rate in
MiB/s (2**20 bytes/s) as EBS states it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Optional

RATES_CSV = Path(__file__).parent / "catalog" / "start-rates.csv"
MIB = 2**20
GIB = 2**30
GB = 10**9

# The weight-load target the model volume's throughput is provisioned for (s): what lets the prod
# model (15 GB, 500 MiB/s) start from a warm pool within issue 26's 3 minutes
# (bench/cold_start.py). modelVolumeThroughputMibps overrides the throughput it derives.
WEIGHT_LOAD_TARGET_S = 30
THROUGHPUT_STEP_MIB_S = 25  # provisioned throughput rounded up to this step
# A fleet's launch template initializes both volumes from their snapshots at EBS's maximum
# rate (components/fleet_group.py uses the same figure; start-rates.csv row
# volume_initialization_max).
VOLUME_INITIALIZATION_MIB_S = 300
# A replica's root volume throughput: the initialization rate, so the image layers hydrate at it
# rather than at gp3's 125 MiB/s baseline ((300 - 125) x $0.04 = $7/month per replica).
FLEET_ROOT_VOLUME_MIB_S = 300
# Stages in the order a start runs them.
STAGES = ("instance boot", "first-boot work", "image pull", "image layers (root volume read)", "weight load",
          "torch.compile", "CUDA graph capture", "readiness")


@dataclass(frozen=True)
class Rate:
    name: str
    value: float
    unit: str
    kind: str  # "published" | "allowance"
    source: str
    date: str


@lru_cache(maxsize=1)
def rates() -> dict[str, Rate]:
    """Every row of start-rates.csv by name. Raises ValueError on a row without a source."""
    with RATES_CSV.open(newline="") as handle:
        rows = [Rate(r["name"], float(r["value"]), r["unit"], r["kind"], r["source"], r["date"])
                for r in csv.DictReader(handle)]
    for row in rows:
        if not row.source or row.kind not in ("published", "allowance"):
            raise ValueError(f"{RATES_CSV.name}: row {row.name} needs a source and kind published|allowance")
    return {row.name: row for row in rows}


def rate(name: str) -> float:
    return rates()[name].value


class Start(Enum):
    HOST_COLD = "single host, cold"
    WAKE = "single host, wake"
    FLEET_COLD = "fleet scale-out, cold"
    WARM_POOL = "fleet scale-out, warm pool"


@dataclass(frozen=True)
class VolumePerformance:
    """A gp3 volume's provisioned performance and what it costs beyond the free baseline."""

    throughput_mib_s: int
    iops: int

    @property
    def usd_per_month(self) -> float:
        """Throughput above 125 MiB/s and IOPS above 3,000 at the us-east-1 prices (start-rates.csv)."""
        extra_mib = max(0.0, self.throughput_mib_s - rate("gp3_baseline_throughput"))
        extra_iops = max(0.0, self.iops - rate("gp3_baseline_iops"))
        return extra_mib * rate("gp3_throughput_usd_per_mib_s_month") + extra_iops * rate("gp3_iops_usd_per_iops_month")


def fleet_root_volume_performance() -> VolumePerformance:
    """A replica's root volume: FLEET_ROOT_VOLUME_MIB_S of throughput (its image layers hydrate at
    the initialization rate, not at gp3's 125 MiB/s baseline) with the free 3,000 IOPS (gp3 allows
    up to 0.25 MiB/s per IOPS: 750 MiB/s at 3,000)."""
    return VolumePerformance(FLEET_ROOT_VOLUME_MIB_S, int(rate("gp3_baseline_iops")))


def model_volume_performance(
    weights_gb: float, *, target_s: float = WEIGHT_LOAD_TARGET_S, throughput_mib_s: Optional[int] = None
) -> VolumePerformance:
    """The model volume's gp3 throughput (MiB/s) and IOPS: what reads `weights_gb` GB within
    `target_s` seconds, rounded up to 25 MiB/s, between the free 125 and gp3's 1,000 MiB/s; or
    `throughput_mib_s` when given (the stack key). IOPS: the free 3,000, or what the throughput
    needs at gp3's 0.25 MiB/s per IOPS (AWS EBS User Guide, gp3).
    Raises ValueError for a throughput outside 125..1000 or a target <= 0."""
    low, high = int(rate("gp3_baseline_throughput")), int(rate("gp3_max_throughput"))
    if throughput_mib_s is None:
        if target_s <= 0:
            raise ValueError(f"target_s={target_s} must be above 0 seconds")
        needed = weights_gb * GB / MIB / target_s
        throughput_mib_s = int(math.ceil(needed / THROUGHPUT_STEP_MIB_S) * THROUGHPUT_STEP_MIB_S)
        throughput_mib_s = max(low, min(high, throughput_mib_s))
    elif not low <= throughput_mib_s <= high:
        raise ValueError(f"throughput_mib_s={throughput_mib_s} is outside gp3's {low}..{high} MiB/s")
    iops = max(int(rate("gp3_baseline_iops")), int(math.ceil(throughput_mib_s / rate("gp3_throughput_per_iops"))))
    return VolumePerformance(throughput_mib_s, min(iops, int(rate("gp3_max_iops"))))


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    detail: str  # the arithmetic: bytes / rate, or the figure's row


@dataclass(frozen=True)
class StartEstimate:
    start: Start
    stages: tuple[Stage, ...]

    @property
    def total_s(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def biggest(self) -> Stage:
        return max(self.stages, key=lambda stage: stage.seconds)


def read_seconds(gb: float, *rates_mib_s: float) -> float:
    """Seconds to read `gb` GB at the slowest of the given rates (MiB/s)."""
    return gb * GB / MIB / min(rates_mib_s)


def estimate_start(
    start: Start,
    *,
    weights_gb: float,
    model_volume_mib_s: float,
    root_volume_mib_s: float = 125,
    volume_initialization_mib_s: float = 300,
    compile_cached: Optional[bool] = None,
    nodes: int = 1,
) -> StartEstimate:
    """Each stage of `start` in seconds, from the rates in start-rates.csv.

    `weights_gb`: the checkpoint as stored (SizingPlan.weights_on_disk_gb), all nodes together;
    each node reads its pipeline stage's share (weights_gb / nodes), in parallel.
    `model_volume_mib_s` / `root_volume_mib_s`: the volumes' gp3 throughput.
    `volume_initialization_mib_s`: the launch template's rate for volumes from snapshots (used by
    FLEET_COLD only; 100..300, a ValueError outside).
    `compile_cached`: whether vLLM finds its torch.compile cache (default: all but HOST_COLD; a
    fleet's cache is baked on the builder's GPU type, serving.compile_cache).
    The decision (a scale-out, a wake, `pulumi up`) is at 0; the total ends at the first 200 from
    /health through the proxy (a fleet: the load balancer counting the replica healthy).
    """
    low, high = rate("volume_initialization_min"), rate("volume_initialization_max")
    if start is Start.FLEET_COLD and not low <= volume_initialization_mib_s <= high:
        raise ValueError(f"volume_initialization_mib_s={volume_initialization_mib_s} is outside {low:.0f}..{high:.0f} MiB/s")
    if compile_cached is None:
        compile_cached = start is not Start.HOST_COLD
    per_node_gb = weights_gb / max(1, nodes)
    image_gb = rate("vllm_image_unpacked") * GIB / GB
    stages = [Stage(STAGES[0], rate("instance_boot"), "instance_boot (allowance)")]
    weights_rates: tuple[float, ...] = (model_volume_mib_s,)
    if start is Start.FLEET_COLD:
        stages.append(Stage("first-boot work", rate("first_boot_work"), "first_boot_work (allowance)"))
        init = (volume_initialization_mib_s, root_volume_mib_s)
        stages.append(Stage(
            "image layers (root volume read)", read_seconds(image_gb, *init),
            f"{image_gb:.1f} GB at min(initialization {volume_initialization_mib_s:.0f}, gp3 {root_volume_mib_s:.0f}) MiB/s",
        ))
        weights_rates = (volume_initialization_mib_s, model_volume_mib_s)
    if start is Start.HOST_COLD:
        pulled_gb = rate("vllm_image_compressed") * GIB / GB
        stages.append(Stage(
            "image pull", read_seconds(pulled_gb, rate("image_pull_rate"), root_volume_mib_s),
            f"{pulled_gb:.1f} GB at min(pull {rate('image_pull_rate'):.0f}, root gp3 {root_volume_mib_s:.0f}) MiB/s",
        ))
    stages.append(Stage(
        "weight load", read_seconds(per_node_gb, *weights_rates),
        f"{per_node_gb:.1f} GB per node at {min(weights_rates):.0f} MiB/s",
    ))
    compile_row = "torch_compile_cached" if compile_cached else "torch_compile_cold"
    stages.append(Stage("torch.compile", rate(compile_row), compile_row))
    stages.append(Stage("CUDA graph capture", rate("cuda_graph_capture"), "cuda_graph_capture"))
    ready = rate("api_server_ready") + (rate("alb_healthy") if start in (Start.FLEET_COLD, Start.WARM_POOL) else 0)
    stages.append(Stage("readiness", ready, "api_server_ready" + (" + alb_healthy" if ready > rate("api_server_ready") else "")))
    return StartEstimate(start, tuple(stages))
