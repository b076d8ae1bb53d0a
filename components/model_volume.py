"""ModelVolume: the model cache, an encrypted gp3 EBS volume that outlives the instance.

The weights live here, not on the root volume, so a new host (another instance type after a
change of maxModelLen, another `ami`) mounts the volume and serves without downloading again.
An EBS volume lives in one availability zone; GpuHost keeps the instance in the volume's zone
when that zone offers the instance type (see `find_model_volume`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.naming import child, component_type, default_tags
from sizing.start_stages import VolumePerformance, rate

GP3_BASELINE_MIB_S = int(rate("gp3_baseline_throughput"))
GP3_BASELINE_IOPS = int(rate("gp3_baseline_iops"))

# Any free name: on Nitro instances (every type the sizing picks) the volume appears as an NVMe
# device whatever this says, and the host finds it by its volume id (mount_model_volume.sh).
DEVICE_NAME = "/dev/sdf"


@dataclass(frozen=True)
class ExistingVolume:
    """The stack's model volume as EC2 describes it now."""

    volume_id: str
    availability_zone: str
    size_gb: int


def volume_name(name: str) -> str:
    """The volume's Name tag (and logical name): the component name plus its role."""
    return child(name, "volume")


def find_model_volume(name: str, opts: Optional[pulumi.InvokeOptions] = None) -> Optional[ExistingVolume]:
    """The model volume this stack created earlier, found by its tags (Name, project, stack), or None.

    Asked at every preview: its zone is where the host should stay, and its size the floor of the
    new size (EBS volumes cannot shrink). One attached to an instance wins over a detached one
    (a volume kept by retainModelVolume after an earlier destroy has the same tags).
    """
    tags = {**default_tags(), "Name": volume_name(name)}
    found: list[str] = []
    for status in ("in-use", "available"):
        found = aws.ebs.get_ebs_volumes(
            tags=tags,
            filters=[aws.ebs.GetEbsVolumesFilterArgs(name="status", values=[status])],
            opts=opts,
        ).ids
        if found:
            break
    if not found:
        return None
    volume = aws.ebs.get_volume(
        most_recent=True,
        filters=[aws.ebs.GetVolumeFilterArgs(name="volume-id", values=sorted(found))],
        opts=opts,
    )
    return ExistingVolume(volume.volume_id, volume.availability_zone, int(volume.size))


@dataclass
class ModelVolumeArgs:
    availability_zone: str
    """Zone of the instance (GpuHost.zone): a volume attaches only within its zone."""
    size_gb: int
    """Size as sized, in GB; EBS reads the number as GiB (7% more bytes: only more room)."""
    instance: aws.ec2.Instance
    """The instance to attach to; a new instance gets a new attachment, the volume stays."""
    retain: bool = False
    """Keep the volume (and the weights) when the stack is destroyed."""
    performance: Optional[VolumePerformance] = None
    """gp3 throughput (MiB/s) and IOPS (sizing.startup.model_volume_for); at or below gp3's free
    baseline (125 MiB/s, 3,000 IOPS) nothing is set, so such a volume's inputs stay as they were."""


def _performance_inputs(performance: Optional[VolumePerformance]) -> dict[str, int]:
    """The volume's throughput / iops inputs above gp3's baseline (EC2 modifies a volume's
    performance in place: no replacement, at most once per 6 hours, AWS ModifyVolume)."""
    if performance is None:
        return {}
    inputs = {}
    if performance.throughput_mib_s > GP3_BASELINE_MIB_S:
        inputs["throughput"] = performance.throughput_mib_s
    if performance.iops > GP3_BASELINE_IOPS:
        inputs["iops"] = performance.iops
    return inputs


class ModelVolume(pulumi.ComponentResource):
    """The model cache volume and its attachment to the current instance."""

    volume_id: pulumi.Output[str]
    size_gb: int
    attachment: aws.ec2.VolumeAttachment

    def __init__(self, name: str, args: ModelVolumeArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("ModelVolume"), name, None, opts)
        volume = aws.ebs.Volume(
            volume_name(name),
            availability_zone=args.availability_zone,
            size=args.size_gb,
            type="gp3",
            encrypted=True,
            **_performance_inputs(args.performance),
            tags={"Name": volume_name(name)},  # project, stack, managed-by: provider default tags
            opts=pulumi.ResourceOptions(
                parent=self,
                retain_on_delete=args.retain,
                # The provider replaces a volume whose zone changes; said here so the preview
                # and the tests show it: a zone move means an empty volume and a new download.
                replace_on_changes=["availabilityZone"],
            ),
        )
        self.attachment = aws.ec2.VolumeAttachment(
            child(name, "attachment"),
            device_name=DEVICE_NAME,
            volume_id=volume.id,
            instance_id=args.instance.id,
            # Detaching a mounted volume from a running instance can hang in "busy" (EC2 user
            # guide, "Detach an Amazon EBS volume"): when the host is replaced (and on destroy),
            # the old instance is stopped first, and the detach completes before the new
            # instance attaches the volume (AttachVolume does not wait for a volume in use).
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.volume_id = volume.id
        self.size_gb = args.size_gb
        self.register_outputs({"volumeId": self.volume_id, "sizeGb": self.size_gb})
