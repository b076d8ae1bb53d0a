"""The vLLM release this program is pinned to, and whether a vllmImage is known to be it. Pure."""

from __future__ import annotations

import re

from config.constants import NAMESPACE

# The vLLM release whose flags (serving/vllm-serve-flags.txt) and memory behaviour
# (sizing/memory.py) this program is written against. Changing it means re-checking both.
PINNED_VLLM_VERSION = "0.33.0"
DEFAULT_VLLM_IMAGE = f"vllm/vllm-openai:v{PINNED_VLLM_VERSION}"

_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$")

# An image tag that names the pinned release: "v0.33.0", or a build of it ("v0.33.0-cu126").
_PINNED_TAG = re.compile(rf"^v?{re.escape(PINNED_VLLM_VERSION)}(-[A-Za-z0-9_.]+)?$")

# What this program checks against the pinned vLLM, and so does not know for another version.
UNCHECKED_WITH_ANOTHER_VERSION = (
    "the `vllm serve` flags in vllmExtraArgs and the ones the program writes "
    "(serving/vllm-serve-flags.txt), the memory model that sizes the instance (sizing/memory.py), "
    "and the dtype and model-type rules"
)


def pinned_image_ref(value: str) -> str:
    """`value` if it is an image reference pinned by tag (not :latest) or digest.

    Raises ValueError naming the fix otherwise."""
    if not _IMAGE_REF.match(value):
        raise ValueError("expected an image reference like vllm/vllm-openai:v0.33.0")
    last = value.rsplit("/", 1)[-1]
    if "@sha256:" not in value and (":" not in last or last.endswith(":latest")):
        raise ValueError(
            f"pin a version so redeploys are repeatable, e.g. {DEFAULT_VLLM_IMAGE}"
        )
    return value


def is_pinned_vllm_image(image: str) -> bool:
    """True when the image's tag names the pinned vLLM release (any registry, digest or not).
    A digest alone names no version, so it is not known to be the pinned one."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return ":" in last and bool(_PINNED_TAG.match(last.rsplit(":", 1)[1]))


def unverified_image_message(image: str) -> str:
    """The refusal of a vllmImage not known to be the pinned vLLM: what goes unchecked, both fixes."""
    return (
        f"{NAMESPACE}:vllmImage={image!r} is not known to be vLLM {PINNED_VLLM_VERSION}, which this "
        f"program is written against: with another version, {UNCHECKED_WITH_ANOTHER_VERSION} go "
        f"unchecked and the host may fail where preview passed. Use {DEFAULT_VLLM_IMAGE} (a digest "
        f"pins it further: {DEFAULT_VLLM_IMAGE}@sha256:<digest>), or confirm this image with "
        "`pulumi config set allowUnverifiedVllmImage true`"
    )
