"""HostHandle: what every component working on one node's host needs, in one value.

VllmServer, NginxProxy, Monitoring, VllmBenchmark and RayWorker each run scripts over the
node's SSH connection and Docker resources on its engine, on the same instance, once the same
provisioning (components.host_setup) is done. VllmDeployment builds one handle per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.docker_host import on_host
from components.script_steps import ScriptSteps


@dataclass(frozen=True)
class HostHandle:
    connection: command.remote.ConnectionArgs
    """SSH connection (host scripts, readiness checks)."""
    docker_provider: Optional[docker.Provider]
    """The host's Docker engine (components.docker_host.docker_over_ssh); None on a fleet's
    builder, where only host scripts run (components.fleet_image)."""
    instance: pulumi.Resource
    """The EC2 instance: the Docker resources on it are replaced and deleted with it."""
    instance_id: pulumi.Input[str]
    """Pull, start and check again on a new instance."""
    runtime_ready: pulumi.Resource
    """Docker and the GPU runtime work (the GPU smoke check)."""
    model_ready: pulumi.Resource
    """The weights are on disk."""
    model_dir: str
    """Where the weights are on the host."""
    addon_mounts: tuple[tuple[str, str], ...] = ()
    """(host directory, container path) of each LoRA adapter and the draft (components.host_setup)."""

    def docker_options(
        self, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource] = (), **extra: Any
    ) -> pulumi.ResourceOptions:
        """Options of a Docker resource on this host (components.docker_host.on_host)."""
        if self.docker_provider is None:
            raise ValueError("this host has no Docker provider (a fleet's builder runs host scripts only)")
        return on_host(parent, self.docker_provider, self.instance, depends_on, **extra)

    def steps(self, parent: pulumi.Resource, name: str) -> ScriptSteps:
        """Host script steps named after `name`, parented to `parent`."""
        return ScriptSteps(parent, name, self.connection, self.instance_id)
