"""The per-tenant usage step on the head node's host (apiKeys set): install_tenant_usage.sh.

It installs the rotation of the proxy's usage log and, with monitoring, mtail reading it as a
systemd service on loopback (serving.monitoring.tenant_usage says what it exports). A step of
its own factory, parented to the calling component: a stack without apiKeys creates nothing
here, so its resources and URNs stay as they were.
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from components.host_handle import HostHandle
from components.naming import child
from components.proxy import PROXY_CONTAINER_NAME
from serving.monitoring.tenant_usage import install_env

STEP_TIMEOUT = "15m"  # apt-get install of logrotate and mtail on a fresh host, with retries


def tenant_usage_step(
    parent: pulumi.Resource, name: str, host: HostHandle, *, metrics: bool
) -> command.remote.Command:
    """Run install_tenant_usage.sh once the host's runtime is ready (and again when the mtail
    program, the rotation settings or the instance change). `metrics`: mtail too, for
    Prometheus; without it only the rotation (the log grows in tenant mode either way).
    Children: `<name>-tenant-usage-workdir`, `-copy-lib`, `-copy-install_tenant_usage`,
    `-install`."""
    steps = host.steps(parent, child(name, "tenant-usage"))
    return steps.run(
        "install", "install_tenant_usage.sh", after=host.runtime_ready,
        env=install_env(metrics=metrics, nginx_container=PROXY_CONTAINER_NAME),
        timeout=STEP_TIMEOUT,
    )
