"""The idle-stop watcher's bounds on "unknown" (components/scripts/idle_stop.sh), derived from
settings the deployment already has, so that no state keeps a host billing forever:

- metrics missing (vLLM's /metrics not answering, or without request metrics) for longer than
  the readiness timeout (``readinessTimeoutMinutes``: the longest `pulumi up` lets vLLM take to
  load and answer) is a crash loop or a server that never came up, not a start: idle;
- requests in flight with no token prefilled or generated and none finished for longer than the
  proxy's upstream read timeout (serving.nginx.DEFAULT_UPSTREAM_TIMEOUT_S: nginx cuts a client
  off after that long without a byte from vLLM) are stuck "running": idle.

Shapes: seconds, whole numbers, as the script's environment wants them.
"""

from __future__ import annotations

from config.settings import StackConfig
from serving.nginx import DEFAULT_UPSTREAM_TIMEOUT_S


def no_metrics_bound_s(settings: StackConfig) -> int:
    """Seconds of missing metrics after which a look counts as idle: readinessTimeoutMinutes."""
    return settings.readiness_timeout_minutes * 60


def stuck_request_bound_s() -> int:
    """Seconds of requests in flight without progress after which a look counts as idle."""
    return DEFAULT_UPSTREAM_TIMEOUT_S


def idle_stop_bounds(settings: StackConfig) -> dict[str, str]:
    """The watcher's environment for both bounds (install_idle_stop.sh writes them to its file)."""
    return {
        "VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS": str(no_metrics_bound_s(settings)),
        "VLLM_DEPLOY_IDLE_STUCK_SECONDS": str(stuck_request_bound_s()),
    }
