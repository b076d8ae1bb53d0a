"""Tensor parallelism: which sizes split the model evenly, and the one chosen on an instance."""

from __future__ import annotations

from typing import Optional

from config.settings import TENSOR_PARALLEL_SIZES, StackConfig
from sizing.gpus import GpuInstance
from sizing.models import ModelSpec


def tp_divides(spec: ModelSpec, tp: int) -> bool:
    """vLLM splits attention heads evenly; KV heads split evenly or are replicated evenly."""
    if spec.num_attention_heads % tp:
        return False
    kv = spec.num_attention_heads if spec.is_mla else spec.num_kv_heads
    return kv % tp == 0 or tp % kv == 0


def choose_tp(
    spec: ModelSpec, config: StackConfig, instance: GpuInstance
) -> tuple[Optional[int], Optional[str]]:
    """(TP, None) or (None, why not).

    auto = every GPU of the instance (the instance is paid for whole, and more GPUs means more KV
    cache); when the heads do not divide by the GPU count, the largest power of two below it that
    does. A TP smaller than the GPU count happens only then, or when the user set it.
    """
    heads = f"{spec.num_attention_heads} attention / {spec.num_kv_heads} KV heads"
    if config.tensor_parallel_size != "auto":
        tp = int(config.tensor_parallel_size)
        if tp > instance.gpu_count:
            return None, (
                f"tensorParallelSize={tp} needs {tp} GPUs, {instance.name} has {instance.gpu_count}"
            )
        if not tp_divides(spec, tp):
            return None, f"tensorParallelSize={tp} does not divide the model's {heads}"
        return tp, None
    for tp in sorted(TENSOR_PARALLEL_SIZES, reverse=True):
        if tp <= instance.gpu_count and tp_divides(spec, tp):
            return tp, None
    return None, f"no tensor-parallel size up to {instance.gpu_count} divides the model's {heads}"
