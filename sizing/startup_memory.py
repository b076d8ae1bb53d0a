"""The largest gpuMemoryUtilization vLLM 0.33 can be granted at startup on a GPU.

vLLM takes a memory snapshot once the worker's CUDA context (and, with tensor parallelism,
NCCL) is up, then requests ceil(CUDA total x gpu_memory_utilization) and stops unless that much
is still free: "Free memory on device ... on startup is less than desired GPU memory utilization"
(vllm/v1/worker/gpu_worker.py `Worker.init_device` -> vllm/v1/worker/utils.py
`request_memory`). What is already taken at the snapshot is the CUDA context and NCCL's
buffers, so the share is bounded by (CUDA total - that) / CUDA total.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from config.constants import NAMESPACE
from config.settings import StackConfig
from sizing.gpus import GpuInstance

# GiB already in use on each GPU when vLLM measures free memory, from public vLLM startup logs
# ("Free memory on device (free/total GiB) on startup", gpu_worker.py): one GPU, H100 80GB
# 78.66/79.19 and 78.84/79.25 (0.53 and 0.41 GiB used); tensor parallel, L40S TP 2 43.93/44.42
# (0.49) and a 95 GiB GPU at TP 2 94.05/95.01 (0.96). The largest of each, rounded up.
PRE_SNAPSHOT_GIB_ONE_GPU = 0.55
PRE_SNAPSHOT_GIB_TENSOR_PARALLEL = 1.0


def cuda_total_gib(instance: GpuInstance) -> float:
    """The GPU's total as CUDA reports it (GiB), the figure vLLM's startup check compares with."""
    return instance.cuda_memory_gib


def pre_snapshot_gib(tensor_parallel_size: int) -> float:
    return PRE_SNAPSHOT_GIB_TENSOR_PARALLEL if tensor_parallel_size > 1 else PRE_SNAPSHOT_GIB_ONE_GPU


def max_gpu_memory_utilization(instance: GpuInstance, tensor_parallel_size: int) -> float:
    """The largest share (3 decimals, rounded down) whose request is still free at startup."""
    total = cuda_total_gib(instance)
    share = (total - pre_snapshot_gib(tensor_parallel_size)) / total
    return math.floor(share * 1000) / 1000


def utilization_problem(
    config: StackConfig, instance: GpuInstance, tensor_parallel_size: int
) -> Optional[str]:
    """Why vLLM 0.33 would refuse gpuMemoryUtilization on this GPU at startup, or None."""
    bound = max_gpu_memory_utilization(instance, tensor_parallel_size)
    wanted = config.gpu_memory_utilization
    if wanted <= bound:
        return None
    total = cuda_total_gib(instance)
    taken = pre_snapshot_gib(tensor_parallel_size)
    return (
        f"{NAMESPACE}:gpuMemoryUtilization={wanted:g} asks vLLM for {wanted * total:.2f} GiB of "
        f"the {total:.2f} GiB CUDA reports on each {instance.gpu_model}, but about {taken:g} GiB "
        f"is already taken when vLLM checks free memory at startup (CUDA context"
        f"{', NCCL buffers' if tensor_parallel_size > 1 else ''}); it would stop with \"Free "
        f"memory on device ... is less than desired GPU memory utilization\". Set "
        f"gpuMemoryUtilization to {bound:g} or less (pulumi config set gpuMemoryUtilization {bound:g})"
    )


def ruled_out_notes(config: StackConfig, chosen: Any, judged: Sequence[Any]) -> tuple[str, ...]:
    """A plan note when gpuMemoryUtilization alone ruled out instances cheaper than `chosen`
    (sizing.candidates Candidates: .price, .blockers, .instance)."""
    cheaper = [
        c for c in judged
        if c.price is not None and chosen.price is not None and c.price < chosen.price
        and c.blockers and all("gpuMemoryUtilization" in b.message for b in c.blockers)
    ]
    if not cheaper:
        return ()
    names = ", ".join(c.instance.name for c in cheaper[:3])
    return (
        f"gpuMemoryUtilization={config.gpu_memory_utilization:g} rules out cheaper {names}: vLLM "
        "could not claim that share there at startup (tools/size --all shows the largest share "
        "each takes)",
    )
