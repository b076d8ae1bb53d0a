"""How long a fleet's replica takes from launch to answering /health, term by term. Pure.

A replica boots from the baked image: both its volumes are made from the image's snapshots, so
every block it reads is fetched from S3 on first touch, at the volume initialization rate the
launch template sets (fleet-pitfalls P12). The terms, in seconds:

    boot        EC2 launch to the boot unit (an allowance, BOOT_S)
    image       the vLLM image's layers read from the root volume's snapshot
    weights     the checkpoint read from the model volume's snapshot (weights_on_disk_gb)
    engine      vLLM's own start after the weights: torch.compile, CUDA graph capture, the
                memory profile (an allowance, ENGINE_INIT_S; less with --enforce-eager)

The fleet's timing keys are derived from the total (components.fleet_group): the Auto Scaling
group's wait for capacity (`pulumi up`), and the instance warm-up of a refresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sizing.host import VLLM_IMAGE_DISK_GB
from sizing.plan import SizingPlan

GB = 10**9
MIB = 2**20

# EBS provisioned volume initialization, at its maximum: 300 MiB/s (AWS EC2 API
# EbsBlockDevice.VolumeInitializationRate, valid range 100-300 MiB/s; fleet-pitfalls P12). The
# launch template sets it on both volumes (components.fleet_group).
SNAPSHOT_INITIALIZATION_MIB_S = 300
# EC2's launch to systemd running the replica's boot unit: an allowance (a GPU instance's
# firmware and the driver's module load take a minute or more), not a measurement.
BOOT_S = 120
# vLLM 0.33's start after the weights are loaded: torch.compile of the model (its compile
# cache is empty on a fresh replica, fleet-pitfalls P23), CUDA graph capture for each batch size
# and the memory profile run: an allowance of minutes, not a measurement. With --enforce-eager
# neither compile nor graphs run.
ENGINE_INIT_S = 180
ENGINE_INIT_EAGER_S = 45
# The capacity wait covers twice the estimate: a launch that lands in a slower zone, a first
# launch that hits insufficient capacity and retries, a hydration below the provisioned rate.
START_SLACK = 2
# The shortest warm-up a refresh uses, whatever the estimate (AWS's own examples use 60 s+).
MIN_WARMUP_S = 60


@dataclass(frozen=True)
class StartEstimate:
    """A replica's expected start, in seconds, term by term (see the module's docstring)."""

    boot_s: int
    image_s: int
    weights_s: int
    engine_s: int

    @property
    def total_s(self) -> int:
        return self.boot_s + self.image_s + self.weights_s + self.engine_s

    @property
    def vllm_restart_s(self) -> int:
        """What one vLLM restart on a running replica takes (docker's restart policy): the
        weights read again (from the now hydrated volume, at least as fast) and the engine's
        start; no boot, no image pull."""
        return self.weights_s + self.engine_s


def read_seconds(gb: float, mib_s: float = SNAPSHOT_INITIALIZATION_MIB_S) -> int:
    """Seconds to read `gb` GB (10**9 bytes) from a snapshot-backed volume at `mib_s` MiB/s."""
    return math.ceil(gb * GB / (mib_s * MIB))


def replica_start(plan: SizingPlan, *, enforce_eager: bool = False) -> StartEstimate:
    """A replica's expected start for `plan` (its instance, its weights on disk)."""
    return StartEstimate(
        boot_s=BOOT_S,
        image_s=read_seconds(VLLM_IMAGE_DISK_GB),
        weights_s=read_seconds(plan.weights_on_disk_gb),
        engine_s=ENGINE_INIT_EAGER_S if enforce_eager else ENGINE_INIT_S,
    )


def capacity_wait_s(estimate: StartEstimate, readiness_timeout_s: int) -> int:
    """How long `pulumi up` waits for the group's healthy replicas (wait_for_capacity_timeout):
    START_SLACK times the expected start, and never less than one replica's launch hook may take
    (readinessTimeoutMinutes, the hook's heartbeat bound) plus the boot before it, so `pulumi up`
    does not give up on a replica AWS still waits for (fleet-pitfalls P8)."""
    return max(START_SLACK * estimate.total_s, readiness_timeout_s + estimate.boot_s)


def instance_warmup_s(estimate: StartEstimate) -> int:
    """A refresh's (and the group's default) instance warm-up: the launch hook already holds a
    replica out of service until /health answers, so what is left to wait for after InService is
    one vLLM restart (a crash on the first real requests, restarted by Docker) coming back before
    the refresh retires the next old replica: vllm_restart_s, at least MIN_WARMUP_S."""
    return max(MIN_WARMUP_S, estimate.vllm_restart_s)
