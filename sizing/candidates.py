"""One instance judged for one model and config: what vLLM would log at startup on its GPUs,
the per-GPU memory arithmetic, and every reason it cannot serve (price cap, region, GPU, memory,
host RAM); and the whole catalog judged so, cheapest first.

The request is resolved here once for all instances; the refusal of an explicit 16-bit dtype on
an fp8 checkpoint sizes both alternatives, so it is made above this, in ``sizing.choice``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Optional

from config.settings import StackConfig
from sizing import gpus as instance_catalog
from sizing import quantities as q
from sizing.addon_facts import resolve_addons
from sizing.addons import NONE, AddOnMemory, AddOns
from sizing.memory import KV_BLOCK_TOKENS
from sizing.batch import BatchLimits, batch_limits
from sizing.context import resolve_max_model_len
from sizing.engine_args import (
    EngineOptions, engine_options, expert_parallel_refusal, prefill_context_parallel_refusal,
)
from sizing.errors import SizingError
from sizing.formats import BYTES_16BIT, FP8_METHODS, WeightFormat, dtype_refusal, resolve_dtype, weight_format
from sizing.gpus import GpuInstance
from sizing.host import host_ram_required_gib
from sizing.models import ModelSpec
from sizing.parallel import choose_tp
from sizing.pipeline import PipelineStage, layer_partition, pipeline_stages
from sizing.pipeline import node_counts as allowed_node_counts  # judge_catalog names its argument node_counts
from sizing.plan import MemoryBreakdown
from sizing.startup import StartupEstimate, estimate
from sizing.startup_memory import utilization_problem
from sizing.vllm_rules import FP8_TENSOR_CORE_CAPABILITY, fp8_kv_cache_refusal


@dataclass(frozen=True)
class Blocker:
    """One reason an instance cannot serve the model as configured."""

    kind: str  # unsupported | unsold | split (fewer layers than nodes) | filter (price cap) | region | gpu | memory | host
    message: str


@dataclass(frozen=True)
class Candidate:
    """One instance type judged for one model and config."""

    instance: GpuInstance
    tensor_parallel_size: Optional[int]
    dtype: Optional[str]
    memory: Optional[MemoryBreakdown]  # per GPU; None when the GPU cannot run the model at all
    kv_capacity_tokens: int
    blockers: tuple[Blocker, ...]
    notes: tuple[str, ...] = ()
    nodes: int = 1  # identical instances, one pipeline stage each
    stage_layers: tuple[int, ...] = ()  # decoder layers per stage (sizing.pipeline), nodes > 1

    @property
    def fits(self) -> bool:
        return not self.blockers

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(b.message for b in self.blockers)

    @property
    def price(self) -> Optional[float]:
        """USD per hour for all the nodes."""
        each = self.instance.on_demand_usd_per_hour
        return None if each is None else each * self.nodes

    @property
    def label(self) -> str:
        """``p5.48xlarge``, or ``2 x p5.48xlarge`` across nodes."""
        return self.instance.name if self.nodes == 1 else f"{self.nodes} x {self.instance.name}"

    @property
    def sort_key(self) -> tuple:
        """Cheapest first; ties: fewer GPUs, then more headroom."""
        headroom = self.memory.headroom_gib if self.memory else -math.inf
        return (self.price is None, self.price or 0.0, self.nodes, self.instance.gpu_count, -headroom)


@dataclass(frozen=True)
class Request:
    """What the config asks, resolved against the model once for all instances."""

    spec: ModelSpec
    fmt: WeightFormat
    max_model_len: int
    kv_dtype_bytes: int
    engine: EngineOptions
    addons: AddOns = NONE  # LoRA slots and a speculative draft (sizing.addon_facts)


def resolve_request(config: StackConfig, spec: ModelSpec) -> Request:
    """The config's request resolved against the model: weight format, served context, KV
    dtype bytes, engine options. Raises SizingError for a dtype the checkpoint cannot take, an
    expert-parallel setting the model cannot use, a quantization key that contradicts the
    checkpoint, or a maxModelLen the model cannot serve."""
    refusal = dtype_refusal(spec, config)
    if refusal:
        raise SizingError(refusal)
    engine = engine_options(config.vllm_extra_args)
    refusal = expert_parallel_refusal(spec, engine) or prefill_context_parallel_refusal(spec, engine)
    if refusal:
        raise SizingError(refusal)
    return Request(
        spec=spec,
        fmt=weight_format(spec, config),
        max_model_len=resolve_max_model_len(spec, config),
        kv_dtype_bytes=1 if config.kv_cache_dtype == "fp8" else BYTES_16BIT,
        engine=engine,
        addons=resolve_addons(config, engine),
    )


def startup_estimate(
    request: Request, config: StackConfig, instance: GpuInstance, tp: int,
    stage: Optional[PipelineStage] = None,
) -> StartupEstimate:
    """What vLLM 0.33 will log at startup on one GPU of this instance at this TP size, with the
    batch limits it will run with (``sizing.batch``)."""
    limits = batch_limits_for(request, config, instance)
    return estimate(
        request.spec,
        request.fmt,
        cuda_total_gib=instance.cuda_memory_gib,
        compute_capability=instance.compute_capability,
        tensor_parallel_size=tp,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=request.max_model_len,
        max_num_batched_tokens=limits.max_num_batched_tokens,
        max_num_seqs=limits.max_num_seqs,
        kv_dtype_bytes=request.kv_dtype_bytes,
        stage=stage,
        addons=request.addons,
    )


def memory_breakdown(
    request: Request, config: StackConfig, instance: GpuInstance, tp: int, nodes: int = 1
) -> tuple[MemoryBreakdown, int]:
    """(per-GPU estimate, KV tokens vLLM will report) for this instance at this TP size.

    The KV term is what minConcurrentSequences full-length requests need at once (one request:
    vLLM's own startup check), so ``fits`` is vLLM's verdict plus the user's concurrency.
    Across `nodes` (one pipeline stage each) the figures are the stage with the least headroom's,
    and the KV tokens the fewest any stage holds (a request needs KV on every stage).
    """
    if nodes == 1:
        return _stage_breakdown(request, config, instance, tp, None)
    judged = [
        _stage_breakdown(request, config, instance, tp, stage)
        for stage in pipeline_stages(request.spec.num_layers, nodes)
    ]
    worst = min(judged, key=lambda m: m[0].headroom_gib)[0]
    return worst, min(tokens for _, tokens in judged)


def _stage_breakdown(
    request: Request, config: StackConfig, instance: GpuInstance, tp: int,
    stage: Optional[PipelineStage],
) -> tuple[MemoryBreakdown, int]:
    est = startup_estimate(request, config, instance, tp, stage)
    memory = MemoryBreakdown(
        weights_gib=est.weights_gib,
        kv_cache_gib=est.kv_needed_gib(config.min_concurrent_sequences),
        activation_gib=est.activation_gib,
        cuda_graphs_gib=est.cuda_graphs_gib,
        runtime_overhead_gib=est.non_torch_gib,
        budget_gib=est.budget_gib,
        addons=_addon_memory(est, request, config),
        available_kv_gib=est.kv_cache_gib,
    )
    return memory, est.kv_cache_tokens


def _addon_memory(est: StartupEstimate, request: Request, config: StackConfig) -> AddOnMemory:
    """The add-ons' terms as the estimate spent them; the draft's KV share is its part of the
    blocks the required sequences take."""
    if request.addons == NONE:
        return AddOnMemory()
    layout = est.layout
    draft_share = layout.draft_page_bytes / layout.block_bytes if layout.block_bytes else 0.0
    return AddOnMemory(
        lora_buffers_gib=est.lora_buffers_gib,
        draft_weights_gib=est.draft_weights_gib,
        draft_kv_gib=est.kv_needed_gib(config.min_concurrent_sequences) * draft_share,
        draft_kv_bytes_per_token=layout.draft_page_bytes // KV_BLOCK_TOKENS,
    )


def batch_limits_for(request: Request, config: StackConfig, instance: GpuInstance) -> BatchLimits:
    """max_num_batched_tokens / max_num_seqs as vLLM will run this request on this instance
    (``sizing.batch``)."""
    return batch_limits(config, instance, request.max_model_len, request.engine)


def judge(
    request: Request, config: StackConfig, instance: GpuInstance, offered: Optional[Collection[str]],
    nodes: int = 1,
) -> Candidate:
    """Does this instance (`nodes` of it, one pipeline stage each) serve the resolved request?
    `offered`: the instance types the stack's region offers (None = don't filter)."""
    blockers: list[Blocker] = []
    notes: list[str] = []
    unsupported = instance_catalog.unsupported_reason(instance)
    if unsupported:
        return Candidate(instance, None, None, None, 0, (Blocker("unsupported", unsupported),), nodes=nodes)
    split: tuple[int, ...] = ()
    if nodes > 1:
        try:
            split = tuple(layer_partition(request.spec.num_layers, nodes))
        except SizingError as exc:
            return Candidate(instance, None, None, None, 0, (Blocker("split", str(exc)),), nodes=nodes)
    price = None if instance.on_demand_usd_per_hour is None else instance.on_demand_usd_per_hour * nodes
    if price is None:
        blockers.append(Blocker("unsold", "no on-demand price (sold as Capacity Blocks/UltraServer only)"))
    elif config.max_hourly_price_usd is not None and price > config.max_hourly_price_usd:
        blockers.append(
            Blocker("filter", f"${price:.2f}/h{' for all nodes' if nodes > 1 else ''} is above "
                    f"maxHourlyPriceUsd={config.max_hourly_price_usd:g}")
        )
    if offered is not None and instance.name not in offered:
        blockers.append(Blocker("region", "not offered in the stack's region"))
    dtype, dtype_problem = resolve_dtype(request.spec, config, instance)
    if dtype_problem:
        blockers.append(Blocker("gpu", dtype_problem))
    elif dtype == "float16" and config.dtype == "auto" and request.spec.native_dtype != "float16":
        notes.append(f"{instance.gpu_model} has no bfloat16: serving in float16 (--dtype float16)")
    cc = instance.compute_capability
    if cc < request.fmt.min_compute_capability:
        blockers.append(
            Blocker("gpu", f"{request.fmt.label} weights need compute capability "
                    f"{request.fmt.min_compute_capability:g}+, {instance.gpu_model} is {cc:g}")
        )
    elif request.fmt.method in FP8_METHODS and cc < FP8_TENSOR_CORE_CAPABILITY:
        notes.append(
            f"{instance.gpu_model} has no fp8 tensor cores (compute capability {cc:g} < "
            f"{FP8_TENSOR_CORE_CAPABILITY:g}): vLLM runs the fp8 weights weight-only (FP8 Marlin), "
            "as fp8 in memory and 16-bit in the matmuls"
        )
    kv_refusal = config.kv_cache_dtype == "fp8" and fp8_kv_cache_refusal(
        cc, request.spec.head_dim, request.spec.is_mla, request.spec.model_type)
    if kv_refusal:
        blockers.append(Blocker("gpu", f"kvCacheDtype=fp8 on {instance.gpu_model}: {kv_refusal}"))
    tp, tp_why = choose_tp(request.spec, config, instance, request.fmt, request.engine)
    if tp is None:
        blockers.append(Blocker("gpu", tp_why or "no valid tensor-parallel size"))
        return Candidate(instance, None, dtype, None, 0, tuple(blockers), tuple(notes), nodes, split)
    used = tp * request.engine.replicas_and_ranks
    if nodes > 1 and used < instance.gpu_count:
        # vLLM 0.33's Ray executor asks for one single-GPU bundle per worker with strategy PACK
        # (vllm/v1/executor/ray_utils.py initialize_ray_cluster): TP x PP workers land on as
        # few nodes as hold them, so a stage per node needs each node's GPUs all used.
        blockers.append(
            Blocker("gpu", f"across nodes tensor parallel {tp} would use {used} of each node's "
                    f"{instance.gpu_count} GPUs, and vLLM's Ray executor packs the {used * nodes} "
                    "workers onto as few nodes as hold them: some nodes would sit idle, billed "
                    f"(a node with {used} GPU{'s' if used > 1 else ''} fits the split"
                    + (f"; a larger tensor parallel size does not split the model: {tp_why})" if tp_why else ")"))
        )
    elif used < instance.gpu_count:
        notes.append(
            f"tensor parallel {tp} uses {used} of the {instance.gpu_count} GPUs"
            + (f" (a larger size does not split the model: {tp_why})" if tp_why else "")
        )
    elif request.engine.replicas_and_ranks > 1:
        notes.append(
            f"{request.engine.data_parallel_size} data-parallel replica(s) x tensor parallel {tp} "
            f"use all {instance.gpu_count} GPUs"
        )
    too_much = utilization_problem(config, instance, tp)
    if too_much:
        blockers.append(Blocker("gpu", too_much))
    memory, capacity = memory_breakdown(request, config, instance, tp, nodes)
    if not memory.fits:
        blockers.append(Blocker("memory", _memory_shortfall(memory, request, config)))
    ram_needed = host_ram_required_gib(tp)
    if instance.memory_gib < ram_needed:
        blockers.append(
            Blocker("host", f"host RAM {instance.memory_gib:g} GiB < {ram_needed:g} GiB needed to load "
                    f"with {tp} GPU worker(s)")
        )
    return Candidate(instance, tp, dtype, memory, capacity, tuple(blockers), tuple(notes), nodes, split)


def _memory_shortfall(memory: MemoryBreakdown, request: Request, config: StackConfig) -> str:
    loaded = memory.weights_gib + memory.addons.loaded_gib  # LoRA buffers and a draft load too
    if loaded > memory.budget_gib:
        what = "the weights alone do not fit"
    elif loaded + memory.overhead_gib > memory.budget_gib:
        what = f"weights + {q.OVERHEAD.label} leave no room for the KV cache"
    else:
        what = (f"the {q.KV_FOR_SEQUENCES.label} ({config.min_concurrent_sequences} x "
                f"{request.max_model_len} tokens) does not fit")
    return (
        f"needs {memory.required_gib:.1f} GiB per GPU (weights {memory.weights_gib:.1f} + "
        + (f"LoRA/draft {memory.addons.loaded_gib:.1f} + " if memory.addons.loaded_gib else "")
        + f"{q.KV_FOR_SEQUENCES.label} "
        f"{memory.kv_cache_gib:.1f} + {q.OVERHEAD.label} {memory.overhead_gib:.1f}), {q.BUDGET.label} "
        f"{memory.budget_gib:.1f} GiB: {what}"
    )


def judge_catalog(
    request: Request,
    config: StackConfig,
    *,
    offered: Optional[Collection[str]] = None,
    node_counts: Optional[Collection[int]] = None,
) -> list[Candidate]:
    """Every catalog instance judged for the resolved request at each node count (default: the
    ones the config allows, ``sizing.pipeline.node_counts``), cheapest first (fitting or not)."""
    counts = tuple(node_counts) if node_counts is not None else allowed_node_counts(config)
    judged = [
        judge(request, config, i, offered, n)
        for n in counts
        for i in instance_catalog.load_instances()
    ]
    return sorted(judged, key=lambda c: c.sort_key)
