"""VllmServer: the vLLM container on the provisioned host, and the wait until it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from config.image_pins import with_digest
from components.docker_host import CONTAINER_SLICE, GPU_RUNTIME, INSTANCE_LABEL
from components.host_handle import HostHandle
from components.naming import child, component_type
from components.ray_cluster import (
    CLUSTER_LABEL,
    HEAD_ENTRYPOINT,
    HEAD_WAIT_SECONDS,
    RAY_PORT,
    RayHead,
    efa_devices,
    efa_ulimits,
    head_uploads,
    ray_auth_env,
    ray_auth_upload,
)
from config.settings import StackConfig
from serving.compile_cache import host_cache_dir
from serving.vllm_args import (
    CONTAINER_CACHE_ROOT, CONTAINER_ENV, DOCKER_STOP_MARGIN_S, SERVED_MODEL_PATH, SHUTDOWN_TIMEOUT_S, VLLM_PORT,
    sets_chat_template,
)
from sizing.plan import SizingPlan

CONTAINER_NAME = "vllm"
# `docker stop` (and the provider's delete) waits this long for vLLM's own drain
# (--shutdown-timeout, serving.vllm_args) before SIGKILL.
DOCKER_STOP_TIMEOUT_S = SHUTDOWN_TIMEOUT_S + DOCKER_STOP_MARGIN_S


def tool_call_parser(serve_args: list[str]) -> Optional[str]:
    """The --tool-call-parser vLLM parses tool calls with, when --enable-auto-tool-choice is on
    (toolCalling, or vllmExtraArgs): the readiness check then makes one tool call."""
    if "--enable-auto-tool-choice" not in serve_args:
        return None
    parser = None
    for index, arg in enumerate(serve_args):
        if arg == "--tool-call-parser" and index + 1 < len(serve_args):
            parser = serve_args[index + 1]
        elif arg.startswith("--tool-call-parser="):
            parser = arg.split("=", 1)[1]
    return parser


def generation_api(serve_args: list[str]) -> str:
    """Which API the readiness check generates through: `chat` when `--chat-template` gives vLLM
    a template, else `auto` (the host script reads the model directory; see wait_for_vllm.sh)."""
    return "chat" if sets_chat_template(serve_args) else "auto"


@dataclass
class VllmServerArgs:
    settings: StackConfig
    """The validated stack config (image, serving flags, readiness timeout)."""
    plan: SizingPlan
    """The sizing decision (TP, dtype, max model len...)."""
    command: list[str]
    """`vllm serve` arguments, checked against the pinned flag list."""
    host: HostHandle
    """The head node's host: SSH, Docker engine, instance, provisioning, the weights' directory."""
    api_key: pulumi.Output[str]
    """Secret key vLLM checks on /v1 (passed as VLLM_API_KEY, never as a flag)."""
    ray_head: Optional[RayHead] = None
    """Across nodes: this container is also the Ray head (components.ray_cluster)."""


class VllmServer(pulumi.ComponentResource):
    """vLLM's OpenAI-compatible server on 127.0.0.1:8000 of the host, ready when this exists."""

    port: int
    container_name: pulumi.Output[str]
    container_id: pulumi.Output[str]
    ready: command.remote.Command
    args: list[str]

    def __init__(self, name: str, args: VllmServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("VllmServer"), name, None, opts)
        self._name = name
        settings = args.settings
        self.port = VLLM_PORT
        self.args = list(args.command)

        host = args.host
        image = docker.RemoteImage(
            child(name, "image"),
            name=with_digest(settings.vllm_image),
            keep_locally=True,  # tens of GB: pull once, keep across container replacements
            # The Elastic IP (so the provider) outlives a replaced instance: pull again there.
            triggers={INSTANCE_LABEL: host.instance_id},
            # After the GPU check, not right after Docker: the toolkit step restarts the
            # engine, which would cut a pull short. It still overlaps the model download.
            opts=host.docker_options(self, [host.runtime_ready]),
        )
        container = self._container(args, image)
        joined = [step.id for step in args.ray_head.workers_joined] if args.ray_head else []
        self.ready = host.steps(self, name).run(
            "ready", "wait_for_vllm.sh", after=container,
            env={
                "VLLM_DEPLOY_PORT": str(VLLM_PORT),
                "VLLM_DEPLOY_CONTAINER": CONTAINER_NAME,
                "VLLM_DEPLOY_SERVED_MODEL": settings.served_name,
                "VLLM_DEPLOY_TIMEOUT_SECONDS": str(settings.readiness_timeout_minutes * 60),
                # The script reads the directory vLLM loads to choose chat or plain completion.
                "VLLM_DEPLOY_MODEL_DIR": host.model_dir,
                "VLLM_DEPLOY_GENERATION_API": generation_api(self.args),
                # Only with tool calling on, so other stacks' step keeps its inputs.
                **({"VLLM_DEPLOY_TOOL_CALL_PARSER": parser} if (parser := tool_call_parser(self.args)) else {}),
                # Only with loraAdapters: each listed by /v1/models, one generation through one.
                **({"VLLM_DEPLOY_LORA_ADAPTERS": " ".join(a.name for a in settings.lora_adapters)}
                   if settings.lora_adapters else {}),
            },
            secret_env={"VLLM_API_KEY": args.api_key},
            # Its failure output (the container log tail) is what a user needs to see;
            # the script never prints the key and vLLM does not log it.
            log_output=True,
            # Across nodes, after every worker joined: a worker that cannot join fails its own
            # step, naming the node, rather than leave this one waiting out its timeout.
            extra_triggers=[container.id, *joined],
            timeout=f"{settings.readiness_timeout_minutes + 5}m",
        )
        self.container_name = container.name
        self.container_id = container.id
        self.register_outputs({"port": self.port, "containerName": self.container_name})

    def _container(self, args: VllmServerArgs, image: docker.RemoteImage) -> docker.Container:
        host = args.host
        envs: list[pulumi.Input[str]] = [
            pulumi.Output.concat("VLLM_API_KEY=", args.api_key),
            *(f"{k}={v}" for k, v in CONTAINER_ENV.items()),  # the same on a replica (serving.replica)
        ]
        mounts = [
            docker.ContainerMountArgs(type="bind", source=host.model_dir, target=SERVED_MODEL_PATH, read_only=True),
            # LoRA adapters and the draft, each where --lora-modules / --speculative-config name it.
            *(
                docker.ContainerMountArgs(type="bind", source=source, target=target, read_only=True)
                for source, target in host.addon_mounts
            ),
        ]
        # vLLM's compile cache on the model volume, one directory per instance type, image and
        # argv (serving.compile_cache): a restart or a wake skips the compile. A volume binding,
        # not a mount: Docker creates the directory the first time.
        cache_dir = host_cache_dir(host.model_dir, args.plan.instance.name, args.settings.vllm_image, self.args)
        labels = [docker.ContainerLabelArgs(label=INSTANCE_LABEL, value=host.instance_id)]
        network: dict = dict(
            ports=[docker.ContainerPortArgs(internal=VLLM_PORT, external=VLLM_PORT, ip="127.0.0.1")]
        )
        after: list[pulumi.Resource] = [host.model_ready, host.runtime_ready]
        head = args.ray_head
        if head is not None:
            envs += [
                pulumi.Output.concat("VLLM_DEPLOY_NODE_IP=", head.node_ip),
                f"VLLM_DEPLOY_RAY_PORT={RAY_PORT}",
                pulumi.Output.concat("VLLM_DEPLOY_RAY_NODES=", head.nodes),
                f"VLLM_DEPLOY_GPUS_PER_NODE={head.gpus_per_node}",
                f"VLLM_DEPLOY_TIMEOUT_SECONDS={HEAD_WAIT_SECONDS}",
                *(f"{k}={v}" for k, v in sorted(head.container_env.items())),
                *(ray_auth_env() if head.auth_token is not None else []),
            ]
            if head.efa_interfaces and head.efa_host_mount:
                mounts.append(
                    docker.ContainerMountArgs(
                        type="bind", source=head.efa_host_mount, target=head.efa_host_mount, read_only=True
                    )
                )
            labels.append(
                docker.ContainerLabelArgs(
                    label=CLUSTER_LABEL, value=pulumi.Output.all(*head.instance_ids).apply(",".join)
                )
            )
            # Ray and NCCL reach the other nodes over the host's private IP; vLLM binds the
            # host's loopback (serving.vllm_args), nginx stays the only way in.
            network = dict(
                # `vllm serve` replaces the entrypoint as PID 1 and would leave the Ray processes
                # it inherits unreaped: Docker's init reaps them.
                init=True,
                network_mode="host",
                entrypoints=HEAD_ENTRYPOINT,
                uploads=[*head_uploads(), *([ray_auth_upload(head.auth_token)] if head.auth_token is not None else [])],
                devices=efa_devices(head.efa_interfaces) or None,
                # EFA registers GPU and host memory with the adapter: unlimited locked memory.
                ulimits=efa_ulimits(head.efa_interfaces),
            )
            after += head.workers_ready
        return docker.Container(
            child(self._name, "container"),
            cgroup_parent=CONTAINER_SLICE,  # no IMDS from the host network (docker_host)
            name=CONTAINER_NAME,
            image=image.image_id,
            command=self.args,
            envs=envs,
            gpus="all",
            # The nvidia runtime, registered explicitly by install_container_toolkit.sh: the GPU
            # request that works in the toolkit's legacy mode and in its CDI mode (1.18+), which
            # refuses a bare `gpus` (NVIDIA/nvidia-container-toolkit#1456).
            runtime=GPU_RUNTIME,
            ipc_mode="host",  # PyTorch shared memory for tensor parallelism
            restart="always",
            must_run=True,
            **network,
            mounts=mounts,
            volumes=[docker.ContainerVolumeArgs(host_path=cache_dir, container_path=CONTAINER_CACHE_ROOT)],
            labels=labels,
            # vLLM's --shutdown-timeout lets requests in flight finish on a stop; Docker waits
            # above it before SIGKILL (its default is 10 s), on a restart, a replacement or a
            # delete alike (fleet-pitfalls P7).
            stop_timeout=DOCKER_STOP_TIMEOUT_S,
            destroy_grace_seconds=DOCKER_STOP_TIMEOUT_S,
            log_driver="json-file",
            log_opts={"max-size": "100m", "max-file": "5"},
            opts=host.docker_options(
                self, after,
                additional_secret_outputs=["envs"],
                # Replace in place rather than run two copies: the GPU holds one at a time.
                delete_before_replace=True,
            ),
        )
