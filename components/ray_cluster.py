"""The Ray cluster vLLM 0.33 runs on across nodes (`--distributed-executor-backend ray`).

vLLM's own multi-node recipe (docs/serving/parallelism_scaling.md, examples/online_serving/
run_cluster.sh in vLLM 0.33): the same vLLM image on every node, host network, all GPUs,
ipc=host; `ray start --head` on one node and `ray start --address=HEAD:6379` on the others; then
`vllm serve` on the head, which places its tensor- and pipeline-parallel workers on the cluster's
GPUs. Here:

* every worker node runs RayWorker: the image pulled, then `scripts/ray_node.sh` starts its
  `vllm-ray` container, which waits for the head's port and joins it;
* the head's Ray lives inside the head's vLLM container (VllmServer with `ray_head`): its
  entrypoint `scripts/serve_on_ray_head.sh` starts the Ray head, waits until Ray reports every
  node's GPUs (`scripts/wait_for_ray_gpus.sh`), then execs `vllm serve`. One container on the
  head, so a restart of vLLM restarts the Ray head with it, and the workers (restart policy
  unless-stopped) re-join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_random as random

from components.docker_host import INSTANCE_LABEL
from components.host_handle import HostHandle
from components.naming import child, component_type
from components.script_steps import SCRIPTS_DIR
from serving.cluster_network import EFA_CONTAINER_ULIMITS, efa_device_paths
from serving.vllm_args import SERVED_MODEL_PATH

RAY_PORT = 6379  # Ray's default GCS port (`ray start --head --port`)
HEAD_SCRIPTS_DIR = "/opt/vllm-deploy"  # inside the head's vLLM container
# Ray's token authentication (RAY_AUTH_MODE=token; the token read from the file RAY_AUTH_TOKEN_PATH
# names: ray/_private/authentication and ray/exceptions.py AuthenticationError's help, Ray 2.60). The same path
# in the head's container and in the workers' (ray_node.sh mounts it there).
RAY_AUTH_TOKEN_PATH = "/run/vllm-deploy/ray-auth-token"
# 64 characters, as `ray get-auth-token --generate` makes (secrets.token_hex(32): 256 bits).
RAY_AUTH_TOKEN_LENGTH = 64
HEAD_SCRIPTS = ("lib.sh", "ray_node.sh", "wait_for_ray_gpus.sh", "serve_on_ray_head.sh")
HEAD_ENTRYPOINT = ["bash", f"{HEAD_SCRIPTS_DIR}/serve_on_ray_head.sh"]
# How long the head waits for every node's GPUs once its Ray head is up. The head starts after
# every worker has its image and weights, and a worker joins seconds after the head's port opens.
HEAD_WAIT_SECONDS = 600
CLUSTER_LABEL = "vllm-deploy.cluster-instances"  # every node's instance id, on the head's container


def node_name(index: int) -> str:
    """node-0 is the head (it serves the endpoint), node-1... the workers."""
    return f"node-{index}"


def ray_nodes(private_ips: Sequence[pulumi.Input[str]]) -> pulumi.Output[str]:
    """`node-0=10.0.0.5 node-1=10.0.0.6 ...`, head first: what wait_for_ray_gpus.sh reads."""
    return pulumi.Output.all(*private_ips).apply(
        lambda ips: " ".join(f"{node_name(i)}={ip}" for i, ip in enumerate(ips))
    )


def container_env_pairs(env: dict[str, str]) -> str:
    """VLLM_DEPLOY_CONTAINER_ENV for ray_node.sh: NAME=value pairs, space-separated (the values
    are ours and hold no spaces; a secret never goes here)."""
    for name, value in env.items():
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"container environment {name}={value!r} must be one word")
    return " ".join(f"{k}={v}" for k, v in sorted(env.items()))


def efa_devices(count: int) -> list[docker.ContainerDeviceArgs]:
    """The EFA interfaces' verbs devices (serving.cluster_network.efa_device_paths)."""
    return [docker.ContainerDeviceArgs(host_path=path, container_path=path) for path in efa_device_paths(count)]


def efa_ulimits(count: int) -> Optional[list[docker.ContainerUlimitArgs]]:
    """Unlimited locked memory with EFA (serving.cluster_network.EFA_CONTAINER_ULIMITS)."""
    if not count:
        return None
    return [docker.ContainerUlimitArgs(name=n, soft=s, hard=h) for n, (s, h) in EFA_CONTAINER_ULIMITS.items()]


@dataclass
class RayHead:
    """What turns the head's vLLM container into the Ray head (VllmServerArgs.ray_head)."""

    node_ip: pulumi.Input[str]
    """The head's private IP: Ray's node address and VLLM_HOST_IP."""
    nodes: pulumi.Input[str]
    """ray_nodes(): every node's name and private IP, head first."""
    gpus_per_node: int
    instance_ids: list[pulumi.Input[str]]
    """Every node's instance: a replaced node restarts the whole cluster's vLLM (a Ray cluster
    does not heal a lost worker)."""
    container_env: dict[str, str] = field(default_factory=dict)
    """NCCL's settings (serving.cluster_network.nccl_environment)."""
    efa_interfaces: int = 0
    efa_host_mount: Optional[str] = None
    """The host directory with libfabric and aws-ofi-nccl, mounted read-only (with EFA)."""
    workers_ready: list[pulumi.Resource] = field(default_factory=list)
    """Every worker's image and weights: the head starts only once they are in place."""
    workers_joined: list[pulumi.Resource] = field(default_factory=list)
    """Every worker's join step: the readiness check waits for them."""
    auth_token: Optional[pulumi.Output[str]] = None
    """The cluster's Ray token (secret): RAY_AUTH_MODE=token in the head's container."""


@dataclass
class RayWorkerArgs:
    index: int
    """The node's index (1..nodes-1)."""
    image: str
    """The vLLM image (the head runs the same one: Ray and vLLM versions must match)."""
    host: HostHandle
    """This worker node's host: SSH, Docker engine, instance, provisioning, the weights (mounted
    where the head's vLLM loads them)."""
    node_ip: pulumi.Input[str]
    head_ip: pulumi.Input[str]
    head_instance_id: pulumi.Input[str]
    """A replaced head: the worker's container is started again to join the new one."""
    head_started: pulumi.Input[str]
    """The head's vLLM container id: the worker joins once the head (its Ray) exists, so its
    wait for the head's port is seconds, whatever the downloads took."""
    container_env: dict[str, str] = field(default_factory=dict)
    efa_interfaces: int = 0
    join_timeout_seconds: int = 600
    auth_token: Optional[pulumi.Output[str]] = None
    """The cluster's Ray token (secret), handed to ray_node.sh in its secret environment."""


class RayWorker(pulumi.ComponentResource):
    """One worker node's part of the Ray cluster: its image, and its Ray container joined to the head."""

    image: docker.RemoteImage
    joined: command.remote.Command

    def __init__(self, name: str, args: RayWorkerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("RayWorker"), name, None, opts)
        host = args.host
        self.image = docker.RemoteImage(
            child(name, "image"),
            name=args.image,
            keep_locally=True,
            triggers={INSTANCE_LABEL: host.instance_id},
            opts=host.docker_options(self, [host.runtime_ready]),
        )
        env = {
            "HF_HUB_OFFLINE": "1",  # as the head's container: the weights are on disk
            "VLLM_NO_USAGE_STATS": "1",
            **args.container_env,
        }
        self.joined = host.steps(self, name).run(
            "ray", "ray_node.sh", after=self.image,
            env={
                "VLLM_DEPLOY_RAY_ROLE": "worker",
                "VLLM_DEPLOY_NODE_NAME": node_name(args.index),
                "VLLM_DEPLOY_NODE_IP": args.node_ip,
                "VLLM_DEPLOY_RAY_HEAD_IP": args.head_ip,
                "VLLM_DEPLOY_RAY_PORT": str(RAY_PORT),
                "VLLM_DEPLOY_IMAGE": args.image,
                "VLLM_DEPLOY_MODEL_DIR": host.model_dir,
                "VLLM_DEPLOY_MODEL_MOUNT": SERVED_MODEL_PATH,
                "VLLM_DEPLOY_CONTAINER_ENV": container_env_pairs(env),
                "VLLM_DEPLOY_EFA_DEVICES": str(args.efa_interfaces),
                "VLLM_DEPLOY_JOIN_TIMEOUT_SECONDS": str(args.join_timeout_seconds),
            },
            # The weights must be there before vLLM's workers here load them; a new head (or
            # a new image) starts this node's container again.
            extra_triggers=[host.model_ready.id, args.head_instance_id, self.image.image_id, args.head_started],
            timeout=f"{args.join_timeout_seconds // 60 + 10}m",
            # The token goes in the step's environment only; ray_node.sh never prints it, so the
            # step's log (its progress) is kept.
            **({"secret_env": {"VLLM_DEPLOY_RAY_AUTH_TOKEN": args.auth_token}, "log_output": True,
                "secret_outputs": []} if args.auth_token is not None else {}),
        )
        self.register_outputs({"imageId": self.image.image_id, "joined": self.joined.stdout})


def ray_auth_token(parent: pulumi.Resource, name: str) -> pulumi.Output[str]:
    """A token for the cluster's Ray (RandomPassword, kept secret in the state)."""
    generated = random.RandomPassword(
        name, length=RAY_AUTH_TOKEN_LENGTH, special=False, opts=pulumi.ResourceOptions(parent=parent)
    )
    return pulumi.Output.secret(generated.result)


def ray_auth_env() -> list[str]:
    """The head container's settings for Ray's token authentication (no secret in them)."""
    return ["RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={RAY_AUTH_TOKEN_PATH}"]


def ray_auth_upload(token: pulumi.Output[str]) -> docker.ContainerUploadArgs:
    """The token as a root-only file in the head's container (never an env value or argv)."""
    return docker.ContainerUploadArgs(file=RAY_AUTH_TOKEN_PATH, content=token, permissions="0600")


def head_uploads() -> list[docker.ContainerUploadArgs]:
    """The scripts the head's entrypoint runs, copied into its container."""
    return [
        docker.ContainerUploadArgs(
            file=f"{HEAD_SCRIPTS_DIR}/{script}",
            content=(SCRIPTS_DIR / script).read_text(),
            executable=True,
        )
        for script in HEAD_SCRIPTS
    ]
