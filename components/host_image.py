"""What a GPU host boots: the image (`ami`: the Deep Learning AMI, plain Ubuntu, or an id) and
its cloud-init, which holds only non-secret settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import yaml

# Environment names sshd must accept so remote commands can pass parameters and secrets
# through the SSH session's environment instead of the command line.
ACCEPTED_ENV = ("VLLM_DEPLOY_*", "HF_TOKEN", "MODELSCOPE_API_TOKEN", "VLLM_API_KEY")


@dataclass(frozen=True)
class AmiQuery:
    owner: str
    name_pattern: str
    arch: str


# Owners and name patterns: shared reference ami-notes.md. The DLAMI ships the NVIDIA driver,
# Docker and the container toolkit; plain Ubuntu gets them from the provisioning scripts.
_DLAMI_OWNER = "898082745236"
_CANONICAL_OWNER = "099720109477"


def ami_query(choice: str, arch: str) -> Optional[AmiQuery]:
    """How to look up the image for `ami` = dlami | ubuntu; None for an explicit AMI id."""
    if choice == "dlami":
        family = "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI" if arch == "arm64" else (
            "Deep Learning Base OSS Nvidia Driver GPU AMI"
        )
        return AmiQuery(_DLAMI_OWNER, f"{family} (Ubuntu 22.04) *", arch)
    if choice == "ubuntu":
        ubuntu_arch = "arm64" if arch == "arm64" else "amd64"
        return AmiQuery(
            _CANONICAL_OWNER, f"ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-{ubuntu_arch}-server-*", arch
        )
    return None


def user_data() -> str:
    """cloud-init for the host: only non-secret settings (user data is readable by anyone who
    can describe the instance). Lets sshd accept our environment variables."""
    accept = " ".join(ACCEPTED_ENV)
    doc = {
        "write_files": [
            {
                "path": "/etc/ssh/sshd_config.d/60-vllm-deploy.conf",
                "permissions": "0644",
                "content": f"# vllm-deploy passes step parameters as environment variables\nAcceptEnv {accept}\n",
            }
        ],
    }  # write_files runs in cloud-init's init stage, before sshd starts: no reload needed
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)
