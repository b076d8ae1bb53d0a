"""A fleet's replica start, grouped into the terms its Auto Scaling timings need. Pure.

The stages themselves (boot, the image layers and the weights read through the volume
initialization rate, torch.compile, CUDA graph capture, readiness), each with its rate and
source, are sizing.start_stages' (sizing.startup.expected_start, Start.FLEET_COLD); this module
only groups them, in whole seconds:

    boot        EC2 launch to the boot unit, and the boot's own first work
    image       the vLLM image's layers read from the root volume's snapshot
    weights     the checkpoint read from the model volume's snapshot
    engine      vLLM's start after the weights: torch.compile (the baked cache), CUDA graph
                capture, the API server, the load balancer's health checks; with
                --enforce-eager neither compile nor graphs run

The fleet's timing keys are derived from the total (components.fleet_group): the Auto Scaling
group's wait for capacity (`pulumi up`), and the instance warm-up of a refresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sizing.plan import SizingPlan
from sizing.start_stages import VOLUME_INITIALIZATION_MIB_S, Start
from sizing.startup import expected_start

# The launch template's volume initialization rate (sizing.start_stages: its maximum, 300 MiB/s).
SNAPSHOT_INITIALIZATION_MIB_S = VOLUME_INITIALIZATION_MIB_S
# Stages --enforce-eager skips (vLLM 0.33: no torch.compile, no CUDA graphs in eager mode).
EAGER_SKIPS = ("torch.compile", "CUDA graph capture")
_TERMS = {
    "instance boot": "boot", "first-boot work": "boot",
    "image layers (root volume read)": "image", "image pull": "image",
    "weight load": "weights",
}
# The capacity wait covers twice the estimate: a launch that lands in a slower zone, a first
# launch that hits insufficient capacity and retries, a hydration below the provisioned rate.
START_SLACK = 2
# The shortest warm-up a refresh uses, whatever the estimate (AWS's own examples use 60 s+).
MIN_WARMUP_S = 60


@dataclass(frozen=True)
class ReplicaStart:
    """A replica's expected start, in whole seconds, term by term (see the module's docstring)."""

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


def replica_start(plan: SizingPlan, config, *, enforce_eager: bool = False) -> ReplicaStart:
    """A replica's expected start for `plan` (SizingPlan) under `config` (StackConfig: the model
    volume's throughput), from sizing.startup.expected_start(Start.FLEET_COLD)."""
    terms = {"boot": 0.0, "image": 0.0, "weights": 0.0, "engine": 0.0}
    for stage in expected_start(plan, config, Start.FLEET_COLD).stages:
        if enforce_eager and stage.name in EAGER_SKIPS:
            continue
        terms[_TERMS.get(stage.name, "engine")] += stage.seconds
    return ReplicaStart(**{f"{k}_s": math.ceil(v) for k, v in terms.items()})


def capacity_wait_s(estimate: ReplicaStart, readiness_timeout_s: int) -> int:
    """How long `pulumi up` waits for the group's healthy replicas (wait_for_capacity_timeout):
    START_SLACK times the expected start, and never less than one replica's launch hook may take
    (readinessTimeoutMinutes, the hook's heartbeat bound) plus the boot before it, so `pulumi up`
    does not give up on a replica AWS still waits for (fleet-pitfalls P8)."""
    return max(START_SLACK * estimate.total_s, readiness_timeout_s + estimate.boot_s)


def instance_warmup_s(estimate: ReplicaStart) -> int:
    """A refresh's (and the group's default) instance warm-up: the launch hook already holds a
    replica out of service until /health answers, so what is left to wait for after InService is
    one vLLM restart (a crash on the first real requests, restarted by Docker) coming back before
    the refresh retires the next old replica: vllm_restart_s, at least MIN_WARMUP_S."""
    return max(MIN_WARMUP_S, estimate.vllm_restart_s)
