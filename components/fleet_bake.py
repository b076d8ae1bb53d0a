"""What a fleet's baked image holds, and the one call into issue 25's host side.

`bake_files()` is the only place the cloud side calls `serving.replica` (fleet-host's module:
`replica_files`, `ReplicaSettings`, `keepalive_timeouts`, by the names in the fleet contract);
everything else here is ours: the values the replica boots with, the hook names, and
`image_digest()`, the hash that forces a re-bake (components.fleet_image) whenever anything the
image holds changes. Pulumi-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from config.settings import StackConfig
from serving import compile_cache, replica
from serving.monitoring import cloudwatch
from serving.nginx_conf import site_for_stack
from serving.proxy_limits import ProxyLimits
from serving.nginx import NGINX_IMAGE
from serving.vllm_args import SHUTDOWN_TIMEOUT_S as VLLM_SHUTDOWN_TIMEOUT_S, VLLM_PORT
from sizing.plan import SizingPlan

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
# fleet-host's scripts, run on the builder in this order (fleet contract, "Bake").
REPLICA_SCRIPTS_DIR = SCRIPTS_DIR / "replica"
INSTALL_SCRIPT = "install_replica.sh"
CLEANUP_SCRIPT = "bake_cleanup.sh"
CWAGENT_SCRIPT = "install_cloudwatch_agent.sh"  # ours: the CloudWatch agent, monitoring on only
WARM_CACHE_SCRIPT = "warm_compile_cache.sh"  # ours: vLLM started once, its compile cache baked
REPLICA_DIR = "/opt/vllm-deploy/replica"  # where install_replica.sh puts the files (contract)

LAUNCH_HOOK = "vllm-launch"
TERMINATE_HOOK = "vllm-terminate"
# vLLM's --shutdown-timeout on a replica: small, because the ALB has already drained the
# replica for drainSeconds when the terminate hook runs (fleet-pitfalls P7, AWS's order); the
# single host's value (serving.vllm_args), so the replica's argv is the single host's.
SHUTDOWN_TIMEOUT_S = VLLM_SHUTDOWN_TIMEOUT_S
# `docker stop -t` above it (contract: shutdown timeout + 30 s), and time to complete the action.
DOCKER_STOP_MARGIN_S = 30
HOOK_MARGIN_S = 60
# Lifecycle hook heartbeat timeout: 30 to 7200 s (AWS PutLifecycleHook, HeartbeatTimeout).
HOOK_TIMEOUT_RANGE_S = (30, 7200)


def api_key_parameter(stack: str) -> str:
    """The SSM SecureString parameter that holds the API key (fleet contract)."""
    return f"/vllm-deploy/{stack}/api-key"


def tenant_files_parameter(stack: str) -> str:
    """Tenant mode (issue 29): the SSM SecureString parameter that holds the tenants' nginx files."""
    return f"/vllm-deploy/{stack}/proxy-tenants"


def clamp_hook_timeout(seconds: int) -> int:
    low, high = HOOK_TIMEOUT_RANGE_S
    return max(low, min(high, seconds))


def terminate_hook_timeout_s(drain_seconds: int) -> int:
    """The terminate hook's heartbeat timeout (s): AWS runs the hook after the deregistration
    delay, and the replica then stops vLLM (shutdown timeout + docker's margin) and completes;
    the drain time is counted again so a hook that starts early still fits."""
    return clamp_hook_timeout(drain_seconds + SHUTDOWN_TIMEOUT_S + DOCKER_STOP_MARGIN_S + HOOK_MARGIN_S)


def launch_hook_timeout_s(settings: StackConfig) -> int:
    """The launch hook's heartbeat timeout (s): the readiness bound a single host waits for
    vLLM (readinessTimeoutMinutes), within the hook's limit; the replica completes it itself
    once /health answers through nginx (P8)."""
    return clamp_hook_timeout(settings.readiness_timeout_minutes * 60)


def launch_heartbeat_interval_s(settings: StackConfig) -> int:
    """Seconds between boot.sh's launch-hook heartbeats: a quarter of the hook's timeout (so a
    late or lost one still leaves time), at most 5 min, at least 10 s (ReplicaSettings' floor)."""
    return max(10, min(300, launch_hook_timeout_s(settings) // 4))


@dataclass(frozen=True)
class BakeInputs:
    """What the bake step uploads, and the hash of everything the image holds."""

    files: dict[str, str]  # relative path under REPLICA_DIR -> content (no secret)
    alb_idle_timeout_s: int
    nginx_keepalive_timeout_s: int
    digest: str  # sha256 hex of what the image holds (image_digest)


def bake_files(
    settings: StackConfig,
    plan: SizingPlan,
    *,
    vllm_argv: list[str],
    limits: ProxyLimits,
    region: str,
    stack: str,
    model_host_dir: str,
    alb_subnet_cidrs: list[str],
    driver_branch: str,
    metrics_group: Optional[str] = None,
    addon_mounts: tuple[tuple[str, str], ...] = (),
) -> BakeInputs:
    """The replica's files from fleet-host's renderer, and the ALB/nginx keep-alive pair derived
    from one value (P1), with the image's hash. With `metrics_group` (the Auto Scaling group's
    name, for a fleet with monitoring on): the CloudWatch agent's config and its installer too."""
    # No Grafana behind a replica's nginx: a fleet's metrics are the CloudWatch side's (issue 25),
    # and a /grafana/ location with nothing behind it would answer 502.
    site = site_for_stack(settings.model_copy(update={"monitoring": False}), limits, vllm_port=VLLM_PORT)
    alb_idle, nginx_keepalive = replica.keepalive_timeouts(site.upstream_read_timeout_s)
    replica_settings = replica.ReplicaSettings(
        region=region,
        api_key_parameter=api_key_parameter(stack),
        vllm_image=settings.vllm_image,
        nginx_image=NGINX_IMAGE,
        served_model_name=settings.served_name,
        model_host_dir=model_host_dir,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        drain_seconds=settings.drain_seconds,
        launch_hook_name=LAUNCH_HOOK,
        terminate_hook_name=TERMINATE_HOOK,
        alb_subnet_cidrs=tuple(alb_subnet_cidrs),
        upstream_timeout_s=site.upstream_read_timeout_s,
        # boot.sh waits for /health as long as a single host waits for vLLM, and heartbeats the
        # launch hook often enough that its timeout never ends a load still in progress (P8).
        health_timeout_s=settings.readiness_timeout_minutes * 60,
        heartbeat_interval_s=launch_heartbeat_interval_s(settings),
        # vLLM's compile cache beside the weights: baked on the builder (its type), reused by
        # replicas of that type (serving.compile_cache).
        compile_cache_base=compile_cache.cache_base(model_host_dir),
        compile_cache_suffix=compile_cache.cache_suffix(settings.vllm_image, list(vllm_argv)),
        addon_mounts=addon_mounts,
        # Tenant mode: the parameter's NAME only; its value (keys' hashes) is read at boot and by
        # the replica's timer, so a tenant change never re-bakes (issue 29).
        tenant_parameter=tenant_files_parameter(stack) if settings.tenants_enabled else "",
    )
    files = replica.replica_files(vllm_argv=list(vllm_argv), nginx_site=site, settings=replica_settings)
    files[WARM_CACHE_SCRIPT] = (REPLICA_SCRIPTS_DIR / WARM_CACHE_SCRIPT).read_text()
    if metrics_group is not None:
        files.update(cloudwatch.replica_files(stack=stack, group_name=metrics_group, vllm_port=VLLM_PORT))
        files[CWAGENT_SCRIPT] = (REPLICA_SCRIPTS_DIR / CWAGENT_SCRIPT).read_text()
    digest = image_digest(settings, plan, files=files, driver_branch=driver_branch)
    return BakeInputs(files, alb_idle, nginx_keepalive, digest)


def script_files() -> dict[str, bytes]:
    """Every host script the builder runs (ours and fleet-host's), by path under scripts/."""
    return {
        str(p.relative_to(SCRIPTS_DIR)): p.read_bytes()
        for p in sorted(SCRIPTS_DIR.rglob("*"))
        if p.is_file()
    }


def image_digest(settings: StackConfig, plan: SizingPlan, *, files: dict[str, str], driver_branch: str) -> str:
    """sha256 of what the baked image holds: the model (id, source, revision), the vLLM and
    nginx images, the driver branch, the base image choice, the instance type and disk sizes
    the builder was provisioned for, every host script and every rendered replica file, and
    whether the builder benchmarks before the bake. Any change makes a new image (P11)."""
    content: dict[str, Any] = {
        "model": settings.model,
        "modelSource": settings.model_source,
        "modelRevision": settings.model_revision,
        "vllmImage": settings.vllm_image,
        "nginxImage": NGINX_IMAGE,
        "driverBranch": driver_branch,
        "ami": settings.ami,
        "instanceType": plan.instance.name,
        "rootVolumeGb": plan.root_volume_gb,
        "modelVolumeGb": plan.model_volume_gb,
        "scripts": {k: hashlib.sha256(v).hexdigest() for k, v in script_files().items()},
        "files": files,
    }
    # LoRA adapters and a draft are part of the image (fleet-pitfalls P20, P22): their ids and
    # revisions too (a moving branch re-bakes only with a new revision). Absent when unset, so
    # the hash of a stack without them stays what it was.
    if settings.lora_adapters:
        content["loraAdapters"] = [[a.name, a.model, a.revision] for a in settings.lora_adapters]
    if settings.speculative_model is not None:
        content["speculativeModel"] = settings.speculative_model.model_dump(mode="json")
    if settings.benchmark_on_deploy:
        # The builder serves and benchmarks before the bake (components.fleet_image): turning it
        # on or off bakes again on a fresh builder (a baked builder is stopped, and a step added
        # to it could not run).
        content["benchmarkOnDeploy"] = True
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
