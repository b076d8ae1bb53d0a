"""Tensor parallelism: which sizes split the model evenly, and the one chosen on an instance.

A tensor-parallel size must split the attention heads (vllm/config/model.py
`verify_with_parallel_config`), for quantized checkpoints every sharded weight along the
quantization's own grain (sizing.quant_shapes), and with decode context parallelism in
vllmExtraArgs be a size that parallelism can split (`_dcp_problem`). With data parallelism or
prefill context parallelism in vllmExtraArgs, DP x PCP x TP x PP GPUs are used, which must exist
on the host.
"""

from __future__ import annotations

from typing import Optional

from config.constants import NAMESPACE, TENSOR_PARALLEL_SIZES
from config.settings import StackConfig
from sizing.engine_args import EngineOptions
from sizing.formats import WeightFormat
from sizing.gpus import GpuInstance
from sizing.models import ModelSpec
from sizing.quant_shapes import shard_problem


def tp_divides(spec: ModelSpec, tp: int) -> bool:
    """vLLM splits attention heads evenly; KV heads split evenly or are replicated evenly."""
    if spec.num_attention_heads % tp:
        return False
    kv = spec.num_attention_heads if spec.is_mla else spec.num_kv_heads
    return kv % tp == 0 or tp % kv == 0


def tp_problem(
    spec: ModelSpec, tp: int, fmt: WeightFormat, compute_capability: float, engine: EngineOptions
) -> Optional[str]:
    """Why vLLM 0.33 cannot split this model over `tp` GPUs, or None."""
    if not tp_divides(spec, tp):
        return (
            f"tensor parallel {tp} does not divide the model's {spec.num_attention_heads} "
            f"attention / {spec.num_kv_heads} KV heads"
        )
    return _dcp_problem(spec, tp, engine) or shard_problem(
        spec, fmt, tp, compute_capability, engine.expert_parallel
    )


def _dcp_problem(spec: ModelSpec, tp: int, engine: EngineOptions) -> Optional[str]:
    """Decode context parallelism (--decode-context-parallel-size) reuses the tensor-parallel
    ranks: vllm/config/parallel.py `ParallelConfig._validate_parallel_config` (TP divisible by
    DCP; with prefill context parallelism, DCP is 1, PCP or TP x PCP), and for models without MLA
    vllm/config/model.py `ModelConfig.verify_with_parallel_config` (TP above the KV heads, DCP
    at most TP // KV heads, query heads per KV head divisible by DCP)."""
    dcp, pcp = engine.decode_context_parallel_size, engine.prefill_context_parallel_size
    flag = f"--decode-context-parallel-size {dcp}"
    if dcp <= 1:
        return None
    if pcp == 1 and tp % dcp:
        return f"tensor parallel {tp} is not a multiple of {flag} (it splits the tensor-parallel ranks)"
    if pcp > 1 and dcp not in (pcp, tp * pcp):
        return (
            f"{flag} with --prefill-context-parallel-size {pcp} must be {pcp} or {tp * pcp} at "
            f"tensor parallel {tp}"
        )
    if spec.is_mla:
        return None
    kv, heads = spec.num_kv_heads, spec.num_attention_heads
    if tp <= kv:
        return (
            f"tensor parallel {tp} is not above the model's {kv} KV heads, which {flag} needs "
            "without MLA"
        )
    if dcp > tp // kv:
        return f"{flag} is above tensor parallel {tp} // {kv} KV heads = {tp // kv}"
    if (heads // kv) % dcp:
        return f"the model's {heads // kv} query heads per KV head do not split {dcp} ways ({flag})"
    return None


def working_tp_sizes(
    spec: ModelSpec, fmt: WeightFormat, compute_capability: float, engine: EngineOptions, limit: int
) -> list[int]:
    """The tensor-parallel sizes up to `limit` GPUs that split this model, smallest first."""
    return [
        tp
        for tp in sorted(TENSOR_PARALLEL_SIZES)
        if tp <= limit and tp_problem(spec, tp, fmt, compute_capability, engine) is None
    ]


def choose_tp(
    spec: ModelSpec,
    config: StackConfig,
    instance: GpuInstance,
    fmt: WeightFormat,
    engine: EngineOptions,
) -> tuple[Optional[int], Optional[str]]:
    """(TP, None) or (None, why not).

    auto = every GPU one replica can have (the instance is paid for whole, and more GPUs means
    more KV cache); when that size does not split the model, the largest smaller size that
    does. A TP smaller than the GPUs per replica happens only then, or when the user set it.
    """
    cc = instance.compute_capability
    # Pipeline stages sit on separate nodes (sizing.pipeline), so they take no GPUs of this one.
    replicas = engine.replicas_and_ranks
    per_replica = instance.gpu_count // replicas
    layout = _layout(engine)
    if per_replica < 1:
        return None, (
            f"{NAMESPACE}:vllmExtraArgs {layout} needs at least {replicas} GPUs; "
            f"{instance.name} has {instance.gpu_count} (lower it, or leave instanceType auto to "
            f"get a host with {replicas} or more)"
        )
    if config.tensor_parallel_size != "auto":
        tp = int(config.tensor_parallel_size)
        if tp * replicas > instance.gpu_count:
            return None, (
                f"tensorParallelSize={tp}{' x ' + layout if replicas > 1 else ''} needs "
                f"{tp * replicas} GPUs, {instance.name} has {instance.gpu_count}"
            )
        problem = tp_problem(spec, tp, fmt, cc, engine)
        if problem is None:
            return tp, None
        works = working_tp_sizes(spec, fmt, cc, engine, per_replica)
        way_out = (
            f"; set tensorParallelSize to {' or '.join(map(str, works))} or auto" if works else ""
        )
        return None, f"tensorParallelSize={tp}: {problem}{way_out}"
    rejected = []
    for tp in sorted(TENSOR_PARALLEL_SIZES, reverse=True):
        if tp > per_replica:
            continue
        problem = tp_problem(spec, tp, fmt, cc, engine)
        if problem is None:
            return tp, ("; ".join(rejected) or None) if tp < per_replica else None
        rejected.append(problem)
    return None, "no tensor-parallel size fits: " + "; ".join(rejected)


def _layout(engine: EngineOptions) -> str:
    parts = []
    if engine.data_parallel_size > 1:
        parts.append(f"--data-parallel-size {engine.data_parallel_size}")
    if engine.prefill_context_parallel_size > 1:
        parts.append(f"--prefill-context-parallel-size {engine.prefill_context_parallel_size}")
    return " x ".join(parts) or "one replica"
