"""HostSetup: provisions the GPU host over SSH as an explicit chain of scripted steps.

wait -> NVIDIA driver -> (reboot pause, wait again) -> Docker -> container toolkit -> GPU smoke check
                                                   \\-> grow root filesystem
                                                   \\-> mount the model volume -> model download
                                                   \\-> idle-stop watcher
                                                       (in parallel with Docker & co.)

Each step is a host script run by components.script_steps: parameters travel as the SSH
session's environment (secrets only there), and a step re-runs when its script, its parameters
or a step before it changes, and not otherwise. The download is the exception: its work lives on
the model volume, so it re-runs when the model or the volume changes, not with the instance. A
model given as a local directory is uploaded to the volume instead of downloaded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_command as command

from components.gpu_host import SSH_USER
from components.model_volume import ModelVolume
from components.naming import child, component_type
from components.script_steps import ScriptSteps
from config.settings import StackConfig
from serving.adapter_args import DRAFT_PATH, adapter_container_path
from serving.idle_stop import idle_stop_bounds
from serving.vllm_args import VLLM_PORT
from sizing.gpus import GpuInstance
from sizing.hub import download_repo_id
from sizing.plan import SizingPlan

MODELS_DIR = "/data/models"  # the model volume's mount point
LOCAL_MODELS_DIR = f"{MODELS_DIR}/uploads"  # local model directories, owned by the SSH user
NVIDIA_DRIVER_BRANCH = "580"  # CUDA 13 (the vLLM 0.33 image) needs driver >= 580
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WAIT_FOR_REBOOT = PROJECT_ROOT / "components" / "local" / "wait_for_reboot.py"
_REBOOT_MARKER = re.compile(r"^VLLM_DEPLOY_REBOOT=scheduled boot_id=(\S+)$", re.M)


def model_dir_on_host(settings: StackConfig) -> str:
    """Where the weights live on the host; the vLLM container mounts it read-only."""
    if settings.is_local_model:
        # Uploaded as the login user, who can write under its home but not /data. A directory
        # copied to LOCAL_MODELS_DIR lands under its own name there.
        return f"{LOCAL_MODELS_DIR}/{local_model_path(settings).name}"
    revision = settings.model_revision or "default"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", f"{settings.model}@{revision}").strip("-")
    return f"{MODELS_DIR}/{safe}"


@dataclass(frozen=True)
class AddOnDir:
    """A LoRA adapter or the speculative draft on the model volume, and where vLLM sees it."""

    role: str  # the download step's role: adapter-<name> | draft
    kind: str  # adapter | model (what download_model.sh verifies)
    model: str  # hub id or local directory
    revision: Optional[str]
    host_dir: str
    container_path: str  # serving.adapter_args: ADAPTERS_PATH/<name> or DRAFT_PATH

    @property
    def is_local(self) -> bool:
        return self.model.startswith(("/", "./", "~"))


def _host_dir(model: str, revision: Optional[str]) -> str:
    if model.startswith(("/", "./", "~")):
        return f"{LOCAL_MODELS_DIR}/{Path(model).expanduser().resolve().name}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", f"{model}@{revision or 'default'}").strip("-")
    return f"{MODELS_DIR}/{safe}"


def addon_dirs(settings: StackConfig) -> list[AddOnDir]:
    """The draft, then each adapter in loraAdapters' order: their directories on the host
    (beside the base model's, same naming) and in the container."""
    dirs = []
    spec = settings.speculative_model
    if spec is not None and spec.model:
        dirs.append(AddOnDir("draft", "model", spec.model, spec.revision, _host_dir(spec.model, spec.revision), DRAFT_PATH))
    for a in settings.lora_adapters:
        dirs.append(
            AddOnDir(f"adapter-{a.name}", "adapter", a.model, a.revision, _host_dir(a.model, a.revision),
                     adapter_container_path(a.name))
        )
    return dirs


def local_model_path(settings: StackConfig) -> Path:
    return Path(settings.model).expanduser().resolve()


def directory_fingerprint(directory: Path) -> str:
    """Names, sizes and modification times: cheap to compute for tens of GB, and changes
    whenever a file is replaced."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(directory)}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()


# How far a GPU's nvidia-smi memory.total may stray from the catalog's figure, in percent either
# way: one GPU model's total moves by up to ~0.8% between driver/board revisions (V100-SXM2-32GB:
# 32510 or 32768 MiB), while the catalog's other GPU sizes differ by far more (see the script).
GPU_MEMORY_TOLERANCE_PCT = 2


def gpu_check_env(instance: GpuInstance) -> dict[str, str]:
    """What scripts/gpu_smoke_check.sh expects to see on the sized instance: the GPU count, a word
    of the GPU's name and the memory.total nvidia-smi reports for one GPU (MiB; neither the EC2
    API's figure nor the CUDA total)."""
    memory = instance.gpu_memory
    return {
        "VLLM_DEPLOY_EXPECTED_GPUS": str(instance.gpu_count),
        "VLLM_DEPLOY_EXPECTED_GPU_NAME": memory.nvidia_smi_name,
        "VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB": str(memory.nvidia_smi_mib),
        "VLLM_DEPLOY_GPU_MEMORY_TOLERANCE_PCT": str(GPU_MEMORY_TOLERANCE_PCT),
    }


def _download_token(settings: StackConfig, args: "HostSetupArgs") -> Optional[dict[str, pulumi.Output[str]]]:
    """Each hub gets its own token, and only it: a Hugging Face token never goes to ModelScope."""
    if settings.model_source == "modelscope":
        token, name = args.modelscope_token, "MODELSCOPE_API_TOKEN"
    else:
        token, name = args.hf_token, "HF_TOKEN"
    return {name: token} if token is not None else None


def reboot_boot_id(stdout: Optional[str]) -> str:
    """The boot id the driver step printed when it scheduled a reboot ("" when none)."""
    match = _REBOOT_MARKER.search(stdout or "")
    return match.group(1) if match else ""


@dataclass
class HostSetupArgs:
    settings: StackConfig
    """The validated stack config (model, source, revision)."""
    plan: SizingPlan
    """The sizing decision: how many GPUs, of which model and nvidia-smi memory, the GPU check expects."""
    connection: command.remote.ConnectionArgs
    """SSH connection to the host."""
    instance_id: pulumi.Input[str]
    """Re-provision when the instance is replaced."""
    volume: ModelVolume
    """The model cache volume, attached to the instance."""
    stable_connection: command.remote.ConnectionArgs
    """The same host, known at preview even while the instance is replaced (GpuHost)."""
    hf_token: Optional[pulumi.Output[str]] = None
    """Secret token for gated Hugging Face models (sent only when downloading from Hugging Face)."""
    modelscope_token: Optional[pulumi.Output[str]] = None
    """Secret ModelScope token (sent only when downloading from ModelScope)."""
    efa_interfaces: int = 0
    """EFA interfaces attached to the node (a cluster node on an EFA type): their software is
    checked (installed where missing) after the GPU check."""


class HostSetup(pulumi.ComponentResource):
    """The provisioned host: GPU runtime ready and the model on disk."""

    runtime_ready: command.remote.Command  # GPU smoke check passed
    model_ready: pulumi.Resource  # weights downloaded and verified (or uploaded), add-ons too
    model_dir: str
    addon_mounts: tuple[tuple[str, str], ...]  # (host dir, container path) of adapters and draft

    def __init__(self, name: str, args: HostSetupArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("HostSetup"), name, None, opts)
        self._name = name
        self._connection = args.connection
        self._stable_connection = args.stable_connection
        self._steps = ScriptSteps(self, name, args.connection, args.instance_id)
        settings, plan = args.settings, args.plan

        waited = self._steps.run("wait", "wait_for_host.sh", after=None)
        driver = self._steps.run(
            "driver", "install_nvidia_driver.sh", after=waited,
            env={"VLLM_DEPLOY_DRIVER_BRANCH": NVIDIA_DRIVER_BRANCH},
        )
        rebooted = self._after_possible_reboot(driver)
        docker = self._steps.run(
            "docker", "install_docker.sh", after=rebooted, env={"VLLM_DEPLOY_DOCKER_USER": SSH_USER}
        )
        toolkit = self._steps.run("toolkit", "install_container_toolkit.sh", after=docker)
        smoke = self._steps.run(
            "gpu-check", "gpu_smoke_check.sh", after=toolkit,
            env=gpu_check_env(plan.instance),
        )
        # The root volume grows in place when diskSizeGb asks for more; the filesystem follows.
        self._steps.run(
            "disk", "grow_root_filesystem.sh", after=rebooted,
            env={"VLLM_DEPLOY_ROOT_VOLUME_GB": str(plan.root_volume_gb)},
        )
        mounted = self._steps.run(
            "volume", "mount_model_volume.sh", after=rebooted,
            env={
                "VLLM_DEPLOY_VOLUME_ID": args.volume.volume_id,
                "VLLM_DEPLOY_VOLUME_GB": str(args.volume.size_gb),
                "VLLM_DEPLOY_MODELS_DIR": MODELS_DIR,
                "VLLM_DEPLOY_UPLOADS_DIR": LOCAL_MODELS_DIR,
                "VLLM_DEPLOY_UPLOADS_OWNER": SSH_USER,
            },
            # A new attachment (a new instance) mounts again.
            extra_triggers=[args.volume.attachment.id],
        )
        self.model_dir = model_dir_on_host(settings)
        if settings.is_local_model:
            download = self._upload_local_model(settings, after=mounted, volume_id=args.volume.volume_id)
        else:
            download = self._steps.run(
                "model", "download_model.sh", after=mounted,
                env={
                    # The hub's own id: ModelScope names some models differently (catalog).
                    "VLLM_DEPLOY_MODEL": download_repo_id(settings.model, settings.model_source),
                    "VLLM_DEPLOY_MODEL_SOURCE": settings.model_source,
                    "VLLM_DEPLOY_MODEL_REVISION": settings.model_revision or "",
                    "VLLM_DEPLOY_MODELS_DIR": MODELS_DIR,
                    "VLLM_DEPLOY_MODEL_DIR": self.model_dir,
                    # Room to make before downloading: older models go only if it is short.
                    "VLLM_DEPLOY_MODEL_BYTES": str(int(plan.weights_on_disk_gb * 1e9)),
                },
                secret_env=_download_token(settings, args),
                # The weights outlive the instance: a new host finds them on the volume.
                per_instance=False,
                extra_triggers=[args.volume.volume_id],
                connection=args.stable_connection,
                # A minute per GB: hundreds of GB take hours even on fast links.
                timeout=f"{max(60, args.volume.size_gb)}m",
            )
        self._steps.run(
            "idle-stop", "install_idle_stop.sh", after=rebooted, companions=["idle_stop.sh"],
            env={
                "VLLM_DEPLOY_IDLE_STOP_MINUTES": str(settings.idle_stop_minutes or 0),
                "VLLM_DEPLOY_METRICS_URL": f"http://127.0.0.1:{VLLM_PORT}/metrics",
                **idle_stop_bounds(settings),
            },
        )
        self.runtime_ready = smoke
        if args.efa_interfaces:
            self.runtime_ready = self._steps.run(
                "efa", "check_efa.sh", after=smoke,
                env={"VLLM_DEPLOY_EFA_INTERFACES": str(args.efa_interfaces)},
            )
        # LoRA adapters and the draft, one step each after the weights: vLLM starts once all are
        # on disk. A new base download (a new volume, or one that made room) runs them again.
        self.addon_mounts = tuple((d.host_dir, d.container_path) for d in addon_dirs(settings))
        base = download
        for addon in addon_dirs(settings):
            download = self._addon(settings, args, addon, after=download, base=base)
        self.model_ready = download
        self.register_outputs({"modelDir": self.model_dir, "gpuCheck": smoke.stdout})

    def _addon(
        self, settings: StackConfig, args: "HostSetupArgs", addon: AddOnDir, *, after: pulumi.Resource,
        base: pulumi.Resource,
    ) -> pulumi.Resource:
        """One adapter or draft onto the model volume: uploaded as is when local, else
        downloaded and verified by download_model.sh (VLLM_DEPLOY_MODEL_KIND says what to check)
        without removing the models beside it."""
        if addon.is_local:
            source = Path(addon.model).expanduser().resolve()
            return command.remote.CopyToRemote(
                child(self._name, f"{addon.role}-upload"),
                connection=self._stable_connection,
                source=pulumi.FileArchive(str(source)),
                remote_path=LOCAL_MODELS_DIR,
                triggers=[directory_fingerprint(source), args.volume.volume_id],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[after]),
            )
        return self._steps.run(
            addon.role, "download_model.sh", after=after,
            env={
                "VLLM_DEPLOY_MODEL": download_repo_id(addon.model, settings.model_source),
                "VLLM_DEPLOY_MODEL_SOURCE": settings.model_source,
                "VLLM_DEPLOY_MODEL_REVISION": addon.revision or "",
                "VLLM_DEPLOY_MODEL_KIND": addon.kind,
                "VLLM_DEPLOY_MODELS_DIR": MODELS_DIR,
                "VLLM_DEPLOY_MODEL_DIR": addon.host_dir,
                "VLLM_DEPLOY_KEEP_OTHER_MODELS": "1",
            },
            secret_env=_download_token(settings, args),
            per_instance=False,
            extra_triggers=[args.volume.volume_id, base.id],
            connection=args.stable_connection,
            timeout=f"{max(60, args.volume.size_gb)}m",
        )

    def _upload_local_model(
        self, settings: StackConfig, *, after: pulumi.Resource, volume_id: pulumi.Input[str]
    ) -> command.remote.CopyToRemote:
        """A model directory on this machine, copied as is onto the model volume (again when a
        file changes or the volume is new, not when only the instance is)."""
        return command.remote.CopyToRemote(
            child(self._name, "model-upload"),
            connection=self._stable_connection,
            source=pulumi.FileArchive(str(local_model_path(settings))),
            remote_path=LOCAL_MODELS_DIR,
            triggers=[directory_fingerprint(local_model_path(settings)), volume_id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[after]),
        )

    def _after_possible_reboot(self, driver: command.remote.Command) -> command.remote.Command:
        boot_id = driver.stdout.apply(reboot_boot_id)
        # Runs where `pulumi up` runs: a remote sleep would die with the reboot it waits for.
        pause = command.local.Command(
            child(self._name, "reboot-pause"),
            # `python3` from PATH, not this interpreter's path: the command is part of the state,
            # and another machine running pulumi must not see it as changed.
            # Relative: local commands run in the project directory.
            create=f"python3 {WAIT_FOR_REBOOT.relative_to(PROJECT_ROOT)}",
            environment={"BOOT_ID_BEFORE": boot_id, "HOST": self._connection.host},
            triggers=[driver.id],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return self._steps.run(
            "rebooted", "wait_for_host.sh", after=pause, env={"VLLM_DEPLOY_BOOT_ID_BEFORE": boot_id}
        )
