"""The host's Docker engine as a pulumi-docker provider, reached over SSH.

`ssh://ubuntu@<ip>`: the machine running `pulumi up` or `refresh` needs TCP 22 to the host
(sshAllowedCidrs) and an `ssh` client (`destroy` does not: the Docker resources go with the
host, `on_host`'s deleted_with). A preview needs neither and touches nothing:
pulumi-docker 5.x dials the Docker host only to create, read, delete or refresh a resource
(its provider Configure and Diff open no connection), and pulumi-command's remote commands run
nothing at preview. The stack's generated private key is written to
~/.ssh/vllm-deploy/<stack>.key (mode 0600, where SSH keys live) by every run that is not a
preview (`pulumi up`), before the Docker provider first dials with it; a preview
(`pulumi.runtime.is_dry_run()`) writes no file, so a CI preview leaves no key on its runner.
With your own `sshPublicKey`, your ssh-agent is used and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import pulumi
import pulumi_docker as docker

from components.naming import child


IDENTITY_DIR = ".ssh/vllm-deploy"  # under the home directory of whoever runs pulumi


def identity_file(stack: str) -> Path:
    return Path(os.path.expanduser("~")) / IDENTITY_DIR / f"{stack}.key"


INSTANCE_LABEL = "vllm-deploy.instance"

# The Docker runtime every GPU container names (with `gpus="all"`): the NVIDIA Container Runtime,
# which install_container_toolkit.sh registers in daemon.json (`nvidia-ctk runtime configure
# --runtime=docker`) and the GPU check proves. It reaches the GPUs in the toolkit's legacy mode and
# in the CDI mode of toolkit 1.18+, where Docker's bare GPU request is refused ("invoking the NVIDIA
# Container Runtime Hook directly ... is not supported", NVIDIA/nvidia-container-toolkit#1456).
GPU_RUNTIME = "nvidia"


def on_host(
    parent: pulumi.Resource,
    provider: docker.Provider,
    host: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
    **extra: Any,
) -> pulumi.ResourceOptions:
    """Options for a Docker resource living on `host` (the EC2 instance): gone with it, so
    `pulumi destroy` needs no SSH to a host that is being deleted anyway."""
    return pulumi.ResourceOptions(
        parent=parent, provider=provider, depends_on=list(depends_on), deleted_with=host, **extra
    )


def identity_file_hint(stack: str) -> str:
    """The same path as users type it (machine-independent, unlike the expanded one)."""
    return f"~/{IDENTITY_DIR}/{stack}.key"


def write_identity_file(path: Path, private_key: str) -> str:
    """Write the key with 0600 from creation (never world-readable, not even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private_key)
    os.chmod(path, 0o600)
    return str(path)


def docker_ssh_opts(key_path: Optional[str]) -> list[str]:
    # Host keys are not pinned: the Elastic IP outlives a replaced instance (new host key),
    # and pulumi-command's own SSH connection does not check them either. Authentication
    # of the client is by key only.
    opts = [
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", "ServerAliveInterval=30",
        "-o", "ConnectTimeout=15",
    ]
    if key_path:
        opts += ["-o", "IdentitiesOnly=yes", "-i", key_path]
    return opts


def ssh_identity(stack: str, private_key: str) -> str:
    """Writes the key (not in a preview, which dials nothing: see the module docstring) and
    returns it as `~/...`: ssh expands the tilde itself, so the provider configuration in the
    state is the same on every machine that runs pulumi."""
    if not pulumi.runtime.is_dry_run():
        write_identity_file(identity_file(stack), private_key)
    return identity_file_hint(stack)


def docker_over_ssh(
    name: str,
    *,
    host: pulumi.Input[str],
    user: pulumi.Input[str],
    private_key: Optional[pulumi.Output[str]],
    opts: Optional[pulumi.ResourceOptions] = None,
) -> docker.Provider:
    key_path: pulumi.Input[Optional[str]] = None
    if private_key is not None:
        stack = pulumi.get_stack()
        key_path = private_key.apply(
            lambda key: ssh_identity(stack, key) if key else identity_file_hint(stack)
        )
    return docker.Provider(
        child(name, "docker"),
        host=pulumi.Output.concat("ssh://", user, "@", host),
        ssh_opts=pulumi.Output.from_input(key_path).apply(docker_ssh_opts),
        opts=opts,
    )
