"""FleetImage: a fleet's baked image. A builder host is provisioned with the single host's steps
(components.gpu_host, model_volume, host_setup: driver, Docker, toolkit, GPU check, the model on
its model volume), gets the replica's files and scripts (components.fleet_bake), runs
fleet-host's install and bake-cleanup scripts, is stopped, and an AMI is made from it carrying
the root volume and the model volume's snapshot.

The image's lifecycle (fleet-pitfalls P9, P11; hashicorp/terraform-provider-aws#805):
`aws.ec2.AmiFromInstance` looks at its source instance only when created, and its identity is
that instance: deleting the builder (or replacing the resource) deregisters the image, and a
deregistered image stops the Auto Scaling group from launching or rolling back. So:
- the builder stays in the program, stopped (its disks and address keep billing: in costUsd);
- a re-bake is a forced replacement keyed on `BakeInputs.digest` (the image's name carries it,
  and the builder is rebuilt from scratch when it changes: GpuHostArgs.rebuild_key);
- the replaced image is retained (retain_on_delete), because the group's refresh onto the new
  image, its rollback and any scale-out during it may still launch the old one; once the
  refresh has succeeded, `pulumi up` removes this stack's images older than the previous one
  and their snapshots, and `pulumi destroy` removes them all (components.fleet_image_cleanup);
- create-before-replace (delete_before_replace=False): the new image exists before the launch
  template moves to it.
"""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pulumi_random as random

from components.fleet_bake import (
    CLEANUP_SCRIPT, CWAGENT_SCRIPT, INSTALL_SCRIPT, REPLICA_DIR, WARM_CACHE_SCRIPT, BakeInputs,
)
from components.fleet_image_cleanup import STACK_ID_TAG, destroy_guard
from components.benchmark import VllmBenchmark, VllmBenchmarkArgs
from components.gpu_host import GpuHost, GpuHostArgs
from components.host_handle import HostHandle
from components.host_setup import HostSetup, HostSetupArgs
from components.model_volume import ExistingVolume, ModelVolume, ModelVolumeArgs
from components.naming import child, component_type, default_tags
from components.script_steps import REMOTE_DIR, ScriptSteps
from components.vllm_server import generation_api
from config.settings import StackConfig
from serving.vllm_args import VLLM_PORT
from sizing.plan import SizingPlan
from sizing.startup import VolumePerformance, model_volume_for

STAGE_DIR = f"{REMOTE_DIR}/replica-bake"  # on the builder; removed by the cleanup step
# The first snapshot of a model volume is a full copy: AWS says image creation can take
# "several minutes ... (sometimes up to 24 hours)" (osbuild/osbuild-composer#2961); the
# provider's default is 40 min (terraform-provider-aws docs, ami_from_instance). A minute per
# 10 GB on top of an hour.
IMAGE_CREATE_FLOOR_MINUTES = 60
# The builder's vLLM for the post-deploy benchmark (builder_vllm.sh): stopped before the cleanup.
BUILDER_CONTAINER = "vllm-builder"


def bake_archive(bake: BakeInputs) -> str:
    """base64 of a gzip'd tar of the rendered replica files (serving.replica.replica_files: the
    settings, argv, nginx config, scripts and units, one copy of each): deterministic (fixed
    mtimes, sorted), so it changes only with them."""
    entries = {k: v.encode() for k, v in bake.files.items()}
    buffer = io.BytesIO()
    # gzip's header holds a time stamp (now, unless told): mtime=0, or the archive, which is the
    # upload step's stdin, would differ on every run and re-run the upload on a stopped builder.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(entries):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(entries[name]), 0
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(entries[name]))
    return base64.b64encode(buffer.getvalue()).decode()


@dataclass
class FleetImageArgs:
    settings: StackConfig
    """The validated stack config (model, images, access lists)."""
    plan: SizingPlan
    """The sizing decision: the builder is the replicas' instance type."""
    bake: BakeInputs
    """The replica's files and the image's hash (components.fleet_bake.bake_files)."""
    vllm_command: list[str]
    """The `vllm serve` argv every replica runs (stack.preflight), as the builder serves it."""
    subnet: aws.ec2.AwaitableGetSubnetResult
    """Where the builder runs: a public subnet in a zone offering the type."""
    model_volume: Optional[ExistingVolume] = None
    """The builder's model volume from an earlier run (its weights are kept across re-bakes)."""
    hf_token: Optional[pulumi.Output[str]] = None
    modelscope_token: Optional[pulumi.Output[str]] = None
    region: Optional[str] = None
    api_key: Optional[pulumi.Output[str]] = None
    """The stack's API key: with benchmarkOnDeploy, the builder's vLLM checks it while the
    benchmark runs (components.benchmark); only a secret env of those steps, never in the image."""
    """The stack's region: with it, `pulumi destroy` removes this stack's baked images
    (components.fleet_image_cleanup.destroy_guard)."""


class FleetImage(pulumi.ComponentResource):
    """The baked AMI and the stopped builder it came from."""

    image_id: pulumi.Output[str]
    root_device_name: pulumi.Output[str]
    model_device_name: str
    model_snapshot_id: pulumi.Output[str]
    builder: GpuHost
    volume_gb: int  # the builder's root + model volume, billed while it is stopped (GB)
    model_volume_gb: int  # the model volume's size: each replica's copy from the snapshot (GB)
    model_volume_performance: VolumePerformance  # its gp3 throughput and IOPS, for each copy too

    def __init__(self, name: str, args: FleetImageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("FleetImage"), name, None, opts)
        settings, plan, bake = args.settings, args.plan, args.bake
        self._readiness_minutes = settings.readiness_timeout_minutes
        in_aws = pulumi.ResourceOptions(parent=self)
        # The builder's model volume and each replica's copy of it (the launch template's block
        # device for model_device_name: throughput and iops from here; the snapshot does not
        # carry them): the weights within sizing.start_stages's target.
        self.model_volume_performance = model_volume_for(plan, settings)
        # The builder is on-demand even in a spot fleet (`spot` is the replicas' purchase option):
        # an interrupted builder would stop in the middle of the provisioning the image is made of.
        host = GpuHost(
            child(name, "host"),
            GpuHostArgs(
                settings=settings.model_copy(update={"spot": False}), plan=plan, model_volume=args.model_volume, subnet=args.subnet,
                serves_endpoint=False, rebuild_key=bake.digest,
            ),
            in_aws,
        )
        kept_gb = args.model_volume.size_gb if args.model_volume and args.model_volume.availability_zone == host.zone else 0
        volume = ModelVolume(
            child(name, "models"),
            ModelVolumeArgs(
                availability_zone=host.zone, size_gb=max(plan.model_volume_gb, kept_gb), instance=host.instance,
                performance=self.model_volume_performance,
            ),
            in_aws,
        )
        setup = HostSetup(
            child(name, "setup"),
            HostSetupArgs(
                settings=settings, plan=plan, connection=host.connection, instance_id=host.instance_id,
                volume=volume, stable_connection=host.stable_connection,
                hf_token=args.hf_token, modelscope_token=args.modelscope_token,
            ),
            in_aws,
        )
        self.benchmark: Optional[pulumi.Output[dict]] = None
        cleaned = self._install(name, args, host, setup, after=[setup.runtime_ready, setup.model_ready])
        stopped = aws.ec2transitgateway.InstanceState(
            child(name, "stopped"),
            instance_id=host.instance_id,
            state="stopped",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cleaned]),
        )
        # This stack's images carry a random id made once for the stack: the pruner and the
        # destroy guard touch only those, never another stack of the same project and name in
        # the account (two people's `dev`).
        self.stack_id = random.RandomId(child(name, "stack-id"), byte_length=8, opts=pulumi.ResourceOptions(parent=self)).hex
        # Deleted after the image resource (which depends on it): `pulumi destroy` then removes
        # every image of this stack that the retained resource leaves behind.
        guard = [
            destroy_guard(name, region=args.region, stack=pulumi.get_stack(), stack_id=self.stack_id, parent=self)
        ] if args.region else []
        # A name of its own for each bake: an image name is unique in a Region, and going back to
        # an earlier digest (A, B, A) bakes again while the retained image A still holds its name.
        bake_id = random.RandomId(
            child(name, "bake-id"), byte_length=4, keepers={"digest": bake.digest}, opts=pulumi.ResourceOptions(parent=self),
        )
        image = aws.ec2.AmiFromInstance(
            child(name, "image"),
            source_instance_id=stopped.instance_id,
            name=bake_id.hex.apply(lambda suffix: f"vllm-deploy-{pulumi.get_stack()}-{bake.digest[:16]}-{suffix}"),
            description=f"vllm-deploy {pulumi.get_stack()}: {settings.model} on {plan.instance.name}, "
            f"image digest {bake.digest}",
            # A stopped builder: the snapshot is of a clean, unmounted file system (P11).
            snapshot_without_reboot=False,
            tags={**default_tags(), "Name": child(name, "image"), "vllm-deploy-image-digest": bake.digest,
                  STACK_ID_TAG: self.stack_id},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[stopped, *guard],
                replacement_trigger=bake.digest,
                delete_before_replace=False,
                retain_on_delete=True,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{IMAGE_CREATE_FLOOR_MINUTES + volume.size_gb // 10}m",
                ),
            ),
        )
        self.builder = host
        self.image_id = image.id
        self.root_device_name = image.root_device_name
        self.model_device_name = "/dev/sdf"
        self.model_snapshot_id = image.ebs_block_devices.apply(
            lambda devices: next(
                (d.snapshot_id for d in devices or [] if d.device_name == self.model_device_name), None
            )
        )
        self.model_volume_gb = volume.size_gb
        self.volume_gb = plan.root_volume_gb + volume.size_gb
        self.register_outputs(
            {"imageId": self.image_id, "builderInstanceId": host.instance_id, "digest": bake.digest}
        )

    def _install(
        self, name: str, args: FleetImageArgs, host: GpuHost, setup: HostSetup, after: list[pulumi.Resource]
    ) -> command.remote.Command:
        """Upload the files and scripts, install them, with benchmarkOnDeploy measure one replica
        (self._benchmark), then run the bake cleanup, which removes every container,
        provisioning's SSH keys, secrets and TLS files, and fails if any remain (P9). Each runs
        again on a new builder or a new digest."""
        bake = args.bake
        triggers = [bake.digest, host.instance_id]
        env = {"VLLM_DEPLOY_REPLICA_DIR": REPLICA_DIR}
        sudo = "sudo --preserve-env=VLLM_DEPLOY_REPLICA_DIR bash"

        def step(
            role: str, create: str, depends: list[pulumi.Resource],
            custom_timeouts: Optional[pulumi.CustomTimeouts] = None, **extra,
        ) -> command.remote.Command:
            return command.remote.Command(
                child(name, role), connection=host.connection, create=create, environment=env,
                triggers=triggers, add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends, custom_timeouts=custom_timeouts),
                **extra,
            )

        upload = step(
            "replica-upload",
            f"rm -rf {STAGE_DIR} && mkdir -p {STAGE_DIR} && base64 -d | tar -xzf - -C {STAGE_DIR}",
            after, stdin=bake_archive(bake),
        )
        # install_replica.sh installs the files beside it into REPLICA_DIR; the cleanup then runs
        # from there (its lib.sh beside it) and removes provisioning's SSH keys: the last step.
        before_install: list[pulumi.Resource] = [upload]
        if CWAGENT_SCRIPT in bake.files:  # a fleet with monitoring on: the agent, signature checked
            before_install.append(step("cloudwatch-agent", f"{sudo} {STAGE_DIR}/{CWAGENT_SCRIPT}", [upload]))
        install = step("replica-install", f"{sudo} {STAGE_DIR}/{INSTALL_SCRIPT}", before_install)
        # vLLM once with the replica's argv and env, so the image carries its compile cache for
        # this type (serving.compile_cache): as long as a start may take, and a pull.
        warm_minutes = self._readiness_minutes + 15
        warm = step(
            "compile-cache", f"{sudo} {STAGE_DIR}/{WARM_CACHE_SCRIPT}", [install],
            custom_timeouts=pulumi.CustomTimeouts(create=f"{warm_minutes}m", update=f"{warm_minutes}m"),
        )
        measured = self._benchmark(name, args, host, setup, after=warm)
        return step(
            "bake-cleanup", f"sudo rm -rf {STAGE_DIR} && {sudo} {REPLICA_DIR}/{CLEANUP_SCRIPT}", [measured]
        )

    def _benchmark(
        self, name: str, args: FleetImageArgs, host: GpuHost, setup: HostSetup, after: command.remote.Command
    ) -> command.remote.Command:
        """benchmarkOnDeploy: the post-deploy benchmark against one replica, before the image is
        made. The builder serves the replica's vLLM (its baked argv and environment:
        builder_vllm.sh), waits for it as a single host does (wait_for_vllm.sh), runs the single
        host's benchmark (components.benchmark), then stops and removes the container, so the
        cleanup finds none. Sets self.benchmark (the figures); returns the last step."""
        settings, plan = args.settings, args.plan
        if not settings.benchmark_on_deploy or args.api_key is None:
            return after
        steps = ScriptSteps(self, child(name, "bench"), host.connection, host.instance_id)
        builder_env = {"VLLM_DEPLOY_REPLICA_DIR": REPLICA_DIR, "VLLM_DEPLOY_CONTAINER": BUILDER_CONTAINER}
        key = {"VLLM_API_KEY": args.api_key}
        serve = steps.run(
            "serve", "builder_vllm.sh", after=after, env={**builder_env, "VLLM_DEPLOY_BUILDER_ACTION": "start"},
            secret_env=key, extra_triggers=[args.bake.digest],
        )
        ready = steps.run(
            "ready", "wait_for_vllm.sh", after=serve,
            env={
                "VLLM_DEPLOY_PORT": str(VLLM_PORT), "VLLM_DEPLOY_CONTAINER": BUILDER_CONTAINER,
                "VLLM_DEPLOY_SERVED_MODEL": settings.served_name,
                "VLLM_DEPLOY_TIMEOUT_SECONDS": str(settings.readiness_timeout_minutes * 60),
                "VLLM_DEPLOY_MODEL_DIR": setup.model_dir,
                "VLLM_DEPLOY_GENERATION_API": generation_api(list(args.vllm_command)),
            },
            secret_env=key, log_output=True, timeout=f"{settings.readiness_timeout_minutes + 5}m",
        )
        handle = HostHandle(
            connection=host.connection, docker_provider=None, instance=host.instance,
            instance_id=host.instance_id, runtime_ready=setup.runtime_ready, model_ready=setup.model_ready,
            model_dir=setup.model_dir,
        )
        benchmark = VllmBenchmark(
            child(name, "benchmark"),
            VllmBenchmarkArgs(settings=settings, plan=plan, host=handle, ready=ready, api_key=args.api_key,
                              rerun_on_trigger=False),
            pulumi.ResourceOptions(parent=self),
        )
        self.benchmark = benchmark.result
        return steps.run(
            "stop", "builder_vllm.sh", after=benchmark.step,
            env={**builder_env, "VLLM_DEPLOY_BUILDER_ACTION": "stop"},
        )
