"""Checks of one config value each, called by StackConfig's field validators. Pure.

Each returns the value (normalised where noted) or raises ValueError saying what is expected;
config.validation prefixes the key, the value given and the key's description.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from config.constants import (
    DEFAULT_DRAIN_SECONDS, MAX_DRAIN_SECONDS, MAX_NODES, MAX_REPLICAS, ROPE_TYPES, TENSOR_PARALLEL_SIZES,
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_EC2_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def model_id_or_path(value: str) -> str:
    """A hub id (org/name) or a local path (/, ./ or ~)."""
    if value.startswith(("/", "./", "~")) or _HUB_ID.match(value):
        return value
    raise ValueError(
        "expected a hub id like Qwen/Qwen2.5-7B-Instruct (org/name) or an absolute "
        "path to a local model directory"
    )


def tensor_parallel_size(value: Any) -> Any:
    """auto or one of TENSOR_PARALLEL_SIZES; runs before type checks, so "4" becomes 4."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be auto or one of 1, 2, 4, 8")
    if value not in TENSOR_PARALLEL_SIZES:
        raise ValueError(
            "must be auto or one of 1, 2, 4, 8 (AWS GPU instances have 1, 2, 4 or 8 "
            "GPUs, and vLLM splits attention heads evenly across them)"
        )
    return value


def nodes(value: Any) -> Any:
    """auto or a whole number from 1 to MAX_NODES; runs before type checks, so "2" becomes 2."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NODES:
        raise ValueError(f"must be auto or a whole number from 1 to {MAX_NODES}")
    return value


def replicas(value: Any) -> Any:
    """A whole number from 1 to MAX_REPLICAS; runs before type checks, so "3" becomes 3."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise ValueError(
            f"must be a whole number from 1 to {MAX_REPLICAS}: 1 serves from one host, 2 or more "
            "from that many hosts behind a load balancer; pulumi config set replicas 1"
        )
    return value


def drain_seconds(value: Any) -> Any:
    """Whole seconds from 0 to MAX_DRAIN_SECONDS (the target group's deregistration delay, whose
    range AWS sets at 0-3600 s); runs before type checks, so "600" becomes 600."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DRAIN_SECONDS:
        raise ValueError(
            f"must be whole seconds from 0 to {MAX_DRAIN_SECONDS} (AWS caps the load balancer's "
            "deregistration delay at an hour); set the longest stream an update must not cut, "
            f"e.g. pulumi config set drainSeconds {DEFAULT_DRAIN_SECONDS}"
        )
    return value


def rope_scaling(value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A RoPE scaling object with a rope_type of ROPE_TYPES and, except llama3, a factor > 1."""
    if value is None:
        return value
    rope_type = value.get("rope_type", value.get("type"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(
            f"needs rope_type, one of {', '.join(ROPE_TYPES)} "
            '(e.g. {"rope_type": "yarn", "factor": 4.0, '
            '"original_max_position_embeddings": 32768})'
        )
    factor = value.get("factor")
    if rope_type != "llama3" and (
        not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor) or factor <= 1
    ):
        raise ValueError("needs a numeric factor greater than 1")
    return value


def extra_args(value: list[str]) -> list[str]:
    """A list of non-empty strings (vllmExtraArgs; their flags are checked in serving)."""
    for arg in value:
        if not isinstance(arg, str) or not arg:
            raise ValueError("must be a list of non-empty strings")
    return value


def instance_type(value: str) -> str:
    """auto or an EC2 instance type name (family.size)."""
    if value == "auto" or _EC2_TYPE.match(value):
        return value
    raise ValueError("expected auto or an EC2 instance type such as g6.xlarge")


def ami(value: str) -> str:
    """dlami, ubuntu or an AMI id."""
    if value in ("dlami", "ubuntu") or _AMI_ID.match(value):
        return value
    raise ValueError("expected dlami, ubuntu, or an AMI id such as ami-0abcdef1234567890")


def vpc_id(value: Optional[str]) -> Optional[str]:
    """None or a VPC id."""
    if value is None or re.match(r"^vpc-[0-9a-f]{8,17}$", value):
        return value
    raise ValueError("expected a VPC id such as vpc-0abc1234")


def subnet_id(value: Optional[str]) -> Optional[str]:
    """None or a subnet id."""
    if value is None or re.match(r"^subnet-[0-9a-f]{8,17}$", value):
        return value
    raise ValueError("expected a subnet id such as subnet-0abc1234")


def ssh_public_key(value: Optional[str]) -> Optional[str]:
    """None or an OpenSSH public key line (ed25519, RSA or ECDSA)."""
    if value is None or re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+", value):
        return value
    raise ValueError("expected an OpenSSH public key line (ssh-ed25519 AAAA... or ssh-rsa AAAA...)")


def email(value: Optional[str]) -> Optional[str]:
    """None or an e-mail address."""
    if value is None or re.match(r"^[^\s@]+@[^\s@]+\.[^\s@]+$", value):
        return value
    raise ValueError("expected an e-mail address such as ops@example.com")


def domain(value: Optional[str]) -> Optional[str]:
    """None or a DNS name, lower-cased."""
    if value is None or _HOSTNAME.match(value.lower()):
        return value.lower() if value else value
    raise ValueError("expected a DNS name such as llm.example.com")
