"""Where vLLM keeps its torch.compile cache: on the model volume, one directory per (EC2 instance
type, vLLM image, argv and environment), so a restart, a wake and a replica from the baked image
reuse it, and no cache is ever shared across GPU types, vLLM builds or flags (fleet-pitfalls P23).

vLLM 0.33 writes its compile artifacts under VLLM_CACHE_ROOT (vllm/envs.py: default
~/.cache/vllm; torch_compile_cache/<hash>/rank_i_j/... from vllm/compilation/backends.py, the
hash of its env factors, config and code). Its own hash does not name the GPU, and Inductor's
Triton kernels are built for the GPU that compiled them, so the directory carries the instance
type (one GPU model per type) besides vLLM's hash. VLLM_CACHE_ROOT itself and VLLM_API_KEY are
outside vLLM's env factors (vllm/envs.py compile_factors' ignored list): the path and the key
never change the hash. CUDA graphs are captured again at every start (vLLM keeps no graph
cache on disk); only the compile stage gets faster.

The directory, on any host: ``<the weights' parent>/.vllm-compile-cache/<instance type>--<suffix>``
(on the model volume, beside the weights),
with ``suffix = cache_suffix(vllm_image, argv)``. A single host knows its type at preview
(components/vllm_server.py); a replica reads its own from IMDS at boot (boot.sh joins the same
three parts, from replica.env's VLLM_DEPLOY_COMPILE_CACHE_BASE and _SUFFIX), so the cache the
builder bakes for its type is found by replicas of that type only. download_model.sh removes only
the model directories it marked, never this one. Pure.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re

from serving.vllm_args import CONTAINER_CACHE_ROOT, CONTAINER_ENV

CACHE_DIR_NAME = ".vllm-compile-cache"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_suffix(vllm_image: str, argv: list[str]) -> str:
    """`<image tag or digest>--<sha256 of argv and the container's env, 16 hex>`; path-safe.
    The argv is the single host's `vllm serve` argv (serving.vllm_args.serve_args), the one a
    replica runs too (serving.replica.replica_argv adds nothing when it already carries
    --shutdown-timeout)."""
    image = _UNSAFE.sub("-", vllm_image.rsplit("/", 1)[-1]).strip("-")
    digest = hashlib.sha256(json.dumps({"argv": list(argv), "env": CONTAINER_ENV}, sort_keys=True).encode())
    return f"{image}--{digest.hexdigest()[:16]}"


def cache_base(model_dir: str) -> str:
    """The caches' directory beside the weights' directory `model_dir` (an absolute path on the
    model volume: components.host_setup.model_dir_on_host), so on the same volume."""
    if not model_dir.startswith("/") or model_dir.rstrip("/").count("/") < 2:
        raise ValueError(f"model_dir={model_dir!r} must be an absolute path below the volume's mount point")
    return f"{posixpath.dirname(model_dir.rstrip('/'))}/{CACHE_DIR_NAME}"


def host_cache_dir(model_dir: str, instance_type: str, vllm_image: str, argv: list[str]) -> str:
    """The host directory mounted at CONTAINER_CACHE_ROOT for this type, image and argv: what
    boot.sh builds on a replica from replica.env and IMDS's instance-type."""
    if not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", instance_type):
        raise ValueError(f"instance_type={instance_type!r} is not an EC2 instance type")
    return f"{cache_base(model_dir)}/{instance_type}--{cache_suffix(vllm_image, argv)}"


__all__ = ["CACHE_DIR_NAME", "CONTAINER_CACHE_ROOT", "cache_base", "cache_suffix", "host_cache_dir"]
