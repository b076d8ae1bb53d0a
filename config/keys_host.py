"""Stack keys of one concern: the EC2 host (instance type, purchase option, disks, idle stop, image, network, SSH key).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from config import values
from config.keys_base import Keys


class HostKeys(Keys):
    """The EC2 host: instance type and purchase option, disks, idle stop, image, network placement and SSH key."""

    # --- the host ------------------------------------------------------------------
    instance_type: str = Field(
        "auto", description="EC2 instance type, or auto for the cheapest that fits."
    )
    spot: bool = Field(
        False,
        description="Run as a spot instance (stopped on interruption). With replicas >= 2: replicas above "
        "onDemandReplicas are spot, drained within the two-minute notice (README, Scaling, warm pool and spot).",
    )
    max_hourly_price_usd: Optional[float] = Field(
        None, gt=0, description="Refuse instances whose on-demand price is above this."
    )
    disk_size_gb: Optional[int] = Field(
        None,
        ge=30,
        le=16384,
        description="Root volume size in GB: OS, Docker images, logs (default: OS + vLLM image + "
        "headroom). The weights live on the model volume (modelVolumeSizeGb).",
    )
    model_volume_size_gb: Optional[int] = Field(
        None,
        ge=10,
        le=16384,
        description="Model cache volume size in GB, a gp3 volume kept across host replacements "
        "(default: the weights + 10% (at least 10 GB) headroom; larger keeps earlier models on a "
        "model change). It never shrinks.",
    )
    model_volume_throughput_mibps: Optional[int] = Field(
        None,
        ge=125,
        le=1000,
        description="The model volume's gp3 throughput in MiB/s (default: what reads the weights "
        "in 60 s, between gp3's free 125 and its 1,000 MiB/s; IOPS follow at 0.25 MiB/s per IOPS). "
        "Above 125 MiB/s it costs $0.04 per MiB/s-month (us-east-1); the plan shows it.",
    )
    retain_model_volume: bool = Field(
        False,
        description="Keep the model cache volume when the stack is destroyed (it then costs "
        "its gp3 storage until you delete it).",
    )
    idle_stop_minutes: Optional[int] = Field(
        None,
        ge=5,
        le=10080,
        description="Stop the instance after this many minutes without requests (default: off); "
        "`tools/wake` starts it again.",
    )
    replace_stopped_host: bool = Field(
        False,
        description="Let `pulumi up` go on when the host is stopped, to replace it (run it with "
        "`--replace` and the instance's URN, which the preview prints): the way out when AWS will "
        "not start it (an interrupted spot host). Off: `pulumi up` refuses a stopped host and "
        "points to `tools/wake`.",
    )
    ami: str = Field(
        "dlami",
        description="Host image: dlami (AWS Deep Learning Base OSS Nvidia Driver AMI, "
        "drivers preinstalled), ubuntu (plain Ubuntu 22.04), or an AMI id.",
    )
    vpc_id: Optional[str] = Field(None, description="VPC to use (default: the default VPC).")
    subnet_id: Optional[str] = Field(
        None,
        description="Subnet to use: a public one (routed to an internet gateway), in a zone that "
        "offers the type (default: such a subnet of the VPC).",
    )
    ssh_public_key: Optional[str] = Field(
        None,
        description="Your own OpenSSH public key; by default the stack generates a key "
        "pair and keeps the private key as a secret output.",
        json_schema_extra={"x-default": "generated"},
    )

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        return values.instance_type(value)

    @field_validator("ami")
    @classmethod
    def _ami(cls, value: str) -> str:
        return values.ami(value)

    @field_validator("vpc_id")
    @classmethod
    def _vpc(cls, value: Optional[str]) -> Optional[str]:
        return values.vpc_id(value)

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: Optional[str]) -> Optional[str]:
        return values.subnet_id(value)

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh_key(cls, value: Optional[str]) -> Optional[str]:
        return values.ssh_public_key(value)
