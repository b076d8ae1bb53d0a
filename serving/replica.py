"""STAND-IN for issue 25's host side (branch fleet-host): the contract's entry points, with the
contract's names and shapes only. THE LEAD KEEPS fleet-host's serving/replica.py AT MERGE; this
file exists so the cloud side (components/fleet_bake.py) imports and its tests run.

It renders no scripts or units: `replica_files()` returns only the non-secret settings and the
rendered argv and nginx config, and `STAND_IN` is True, so stack.preflight refuses
`replicas >= 2` ("the fleet is not deployable yet") while this file is in the build. The real
module (which has no STAND_IN) adds install_replica.sh, bake_cleanup.sh, the boot/drain units and
the fleet's nginx options (real_ip, keepalive, drain switch).

Contract (/work/brief/FLEET-CONTRACT.md):
- `keepalive_timeouts(upstream_timeout_s) -> (alb_idle_timeout_s, nginx_keepalive_timeout_s)`:
  the ALB idle timeout is the proxy's upstream timeout capped at the ALB's 4000 s limit, and
  nginx's client keepalive_timeout is 5 s above it (fleet-pitfalls P1).
- `replica_files(*, vllm_argv, nginx_site, settings) -> dict[str, str]`: relative path -> file
  content, installed under /opt/vllm-deploy/replica/; nothing secret in any.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from serving.nginx import NginxSite
from serving.nginx_conf import render

STAND_IN = True

# ALB idle timeout range: 1-4000 s (AWS, "Application Load Balancer attributes", idle_timeout).
ALB_MAX_IDLE_TIMEOUT_S = 4000
NGINX_KEEPALIVE_MARGIN_S = 5


@dataclass(frozen=True)
class ReplicaSettings:
    """The non-secret values a replica boots with (seconds, names, CIDRs)."""

    region: str
    api_key_parameter: str
    vllm_image: str
    nginx_image: str
    served_model_name: str
    model_host_dir: str
    shutdown_timeout_s: int
    drain_seconds: int
    launch_hook_name: str
    terminate_hook_name: str
    alb_subnet_cidrs: tuple[str, ...]
    upstream_timeout_s: int


def keepalive_timeouts(upstream_timeout_s: int) -> tuple[int, int]:
    """(ALB idle timeout, nginx client keepalive_timeout), both in seconds, from one value."""
    alb = max(1, min(upstream_timeout_s, ALB_MAX_IDLE_TIMEOUT_S))
    return alb, alb + NGINX_KEEPALIVE_MARGIN_S


def replica_files(*, vllm_argv: list[str], nginx_site: NginxSite, settings: ReplicaSettings) -> dict[str, str]:
    """The stand-in's files: settings, argv and the single host's nginx config, unchanged."""
    env = {**asdict(settings), "alb_subnet_cidrs": " ".join(settings.alb_subnet_cidrs)}
    return {
        "replica.env": "".join(f"VLLM_DEPLOY_{k.upper()}={v}\n" for k, v in sorted(env.items())),
        "vllm-args.json": json.dumps(vllm_argv, indent=1) + "\n",
        "nginx/nginx.conf": render(nginx_site),
    }
