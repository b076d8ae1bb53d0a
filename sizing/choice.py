"""The instance choice: every catalog instance judged for one model and config, the cheapest fit,
and the refusal that shows the arithmetic when nothing fits.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Callable, Optional

from config.settings import MAX_NODES, NAMESPACE, StackConfig
from sizing import gpus as instance_catalog
from sizing.batch import BatchLimits, batch_limits
from sizing.cheaper import cheaper_options
from sizing.context import resolve_max_model_len
from sizing.engine_args import EngineOptions, engine_options, expert_parallel_refusal
from sizing.errors import SizingError
from sizing.formats import (
    BYTES_16BIT,
    FP8_METHODS,
    WeightFormat,
    dtype_refusal,
    resolve_dtype,
    weight_format,
)
from sizing.gpus import GpuInstance, gpus_label
from sizing.host import (
    host_ram_required_gib,
    model_volume_gb,
    monitoring_disk_gb,
    root_volume_gb,
    stored_weights_gb,
)
from sizing.hub import resolve
from sizing.memory import GIB, kv_bytes_per_token, weight_bytes
from sizing.models import ModelResolutionError, ModelSpec
from sizing.parallel import choose_tp
from sizing.pipeline import PipelineStage, layer_partition, pipeline_stages
from sizing.ways_out import ways_out
from sizing.plan import MemoryBreakdown, SizingPlan
from sizing.rope import rope_override, with_hub_rope_facts
from sizing.startup import StartupEstimate, estimate, kv_bytes_for_requests
from sizing.startup_memory import ruled_out_notes, utilization_problem
from sizing.vllm_rules import FP8_TENSOR_CORE_CAPABILITY


Resolver = Callable[..., ModelSpec]


# --- one candidate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    kind: str  # unsupported | unsold | filter (price cap) | region | gpu | memory | host
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
class _Request:
    """What the config asks, resolved against the model once for all instances."""

    spec: ModelSpec
    fmt: WeightFormat
    max_model_len: int
    kv_dtype_bytes: int
    engine: EngineOptions


def _request(config: StackConfig, spec: ModelSpec) -> _Request:
    if (
        config.quantization == "none"
        and spec.native_quantization in FP8_METHODS
        and config.dtype != "auto"
    ):
        raise SizingError(sixteen_bit_refusal(spec, config))
    refusal = dtype_refusal(spec, config)
    if refusal:
        raise SizingError(refusal)
    engine = engine_options(config.vllm_extra_args)
    refusal = expert_parallel_refusal(spec, engine)
    if refusal:
        raise SizingError(refusal)
    return _Request(
        spec=spec,
        fmt=weight_format(spec, config),
        max_model_len=resolve_max_model_len(spec, config),
        kv_dtype_bytes=1 if config.kv_cache_dtype == "fp8" else BYTES_16BIT,
        engine=engine,
    )


def startup_estimate(
    request: _Request, config: StackConfig, instance: GpuInstance, tp: int,
    stage: Optional[PipelineStage] = None,
) -> StartupEstimate:
    """What vLLM 0.33 will log at startup on one GPU of this instance at this TP size, with the
    batch limits it will run with (``sizing.batch``)."""
    limits = _batch(request, config, instance)
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
    )


def memory_breakdown(
    request: _Request, config: StackConfig, instance: GpuInstance, tp: int, nodes: int = 1
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
    request: _Request, config: StackConfig, instance: GpuInstance, tp: int,
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
    )
    return memory, est.kv_cache_tokens


def _batch(request: _Request, config: StackConfig, instance: GpuInstance) -> BatchLimits:
    return batch_limits(config, instance, request.max_model_len, request.engine)


def evaluate(
    config: StackConfig,
    spec: ModelSpec,
    instance: GpuInstance,
    *,
    offered: Optional[Collection[str]] = None,
    nodes: int = 1,
) -> Candidate:
    """Does this instance (`nodes` of it, one pipeline stage each) serve this model as
    configured? The public per-candidate fit check."""
    return _evaluate(_request(config, spec), config, instance, offered, nodes)


def _evaluate(
    request: _Request, config: StackConfig, instance: GpuInstance, offered: Optional[Collection[str]],
    nodes: int = 1,
) -> Candidate:
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


def _memory_shortfall(memory: MemoryBreakdown, request: _Request, config: StackConfig) -> str:
    if memory.weights_gib > memory.budget_gib:
        what = "the weights alone do not fit"
    elif memory.weights_gib + memory.overhead_gib > memory.budget_gib:
        what = "weights + activations/runtime leave no room for the KV cache"
    else:
        what = (f"KV for {config.min_concurrent_sequences} x {request.max_model_len} tokens "
                "does not fit")
    return (
        f"needs {memory.required_gib:.1f} GiB per GPU (weights {memory.weights_gib:.1f} + KV "
        f"{memory.kv_cache_gib:.1f} + overhead {memory.overhead_gib:.1f}), budget "
        f"{memory.budget_gib:.1f} GiB: {what}"
    )


def candidates(
    config: StackConfig,
    *,
    offered: Optional[Collection[str]] = None,
    spec: Optional[ModelSpec] = None,
    resolver: Resolver = resolve,
    node_counts: Optional[Collection[int]] = None,
) -> list[Candidate]:
    """Every catalog instance judged for this config at each node count (default: the ones
    the config allows, ``StackConfig.node_counts``), cheapest first (fitting or not)."""
    if spec is None:
        spec = _resolve_spec(config, resolver)
    request = _request(config, spec)
    counts = tuple(node_counts) if node_counts is not None else config.node_counts
    judged = [
        _evaluate(request, config, i, offered, n)
        for n in counts
        for i in instance_catalog.load_instances()
    ]
    return sorted(judged, key=lambda c: c.sort_key)


def _resolve_spec(config: StackConfig, resolver: Resolver) -> ModelSpec:
    try:
        spec = resolver(config.model, config.model_source, config.model_revision)
    except ModelResolutionError as exc:
        raise SizingError(str(exc)) from exc
    return with_hub_rope_facts(spec, config)


# --- the plan ----------------------------------------------------------------------------------


def plan(
    config: StackConfig,
    *,
    offered: Optional[Collection[str]] = None,
    resolver: Resolver = resolve,
) -> SizingPlan:
    """The cheapest instance that serves the model as configured, and how vLLM will use it.

    `offered`: the instance types AWS offers in the stack's region (None = don't filter).
    Prices are us-east-1 on-demand; `spot` does not change the choice.
    """
    spec = _resolve_spec(config, resolver)
    judged = candidates(config, offered=offered, spec=spec)
    # One node whenever one fits (nodes=auto); else the cheapest fit at any allowed count.
    fitting = sorted((c for c in judged if c.fits), key=lambda c: (c.nodes > 1, c.sort_key))
    if config.instance_type != "auto":
        chosen = _user_instance(config, spec, judged, fitting)
    elif fitting:
        chosen = fitting[0]
    else:
        raise SizingError(nothing_fits_message(config, spec, judged))
    planned = _to_plan(config, spec, chosen)
    cheaper = cheaper_options(config, spec, planned.max_model_len, chosen.price, _cheapest, offered)
    return replace(planned, notes=ruled_out_notes(config, chosen, judged) + planned.notes, cheaper=cheaper)


def _cheapest(
    config: StackConfig, spec: ModelSpec, offered: Optional[Collection[str]]
) -> Optional[tuple[str, float]]:
    fitting = sorted(
        (c for c in candidates(config, offered=offered, spec=spec) if c.fits and c.price is not None),
        key=lambda c: (c.nodes > 1, c.sort_key),  # as plan() chooses: one node whenever one fits
    )
    return (fitting[0].label, fitting[0].price) if fitting else None


def _user_instance(
    config: StackConfig, spec: ModelSpec, judged: list[Candidate], fitting: list[Candidate]
) -> Candidate:
    mine = next((c for c in fitting if c.instance.name == config.instance_type), None) or next(
        (c for c in judged if c.instance.name == config.instance_type), None
    )
    if mine is None:
        try:
            instance_catalog.get(config.instance_type)
        except instance_catalog.UnknownInstanceType as exc:
            raise SizingError(f"{NAMESPACE}:instanceType={config.instance_type!r}: {exc}") from None
    if mine is not None and mine.fits:
        return mine
    cheapest = (
        f"the cheapest that fits is {fitting[0].label} "
        f"(${fitting[0].price:.2f}/h, {gpus_label(fitting[0].instance)}"
        f"{' each' if fitting[0].nodes > 1 else ''})"
        if fitting
        else "no catalog instance fits either:\n" + nothing_fits_message(config, spec, judged)
    )
    why = "; ".join(mine.reasons) if mine else "not in the catalog"
    raise SizingError(
        f"{NAMESPACE}:instanceType={config.instance_type} cannot serve {config.model}: {why}. "
        f"{cheapest}. Set instanceType to auto (or to that type), or change the model settings."
    )


def _to_plan(config: StackConfig, spec: ModelSpec, chosen: Candidate) -> SizingPlan:
    request = _request(config, spec)
    assert chosen.memory is not None and chosen.tensor_parallel_size is not None and chosen.dtype
    limits = _batch(request, config, chosen.instance)
    notes = list(chosen.notes)
    if limits.note:
        notes.append(limits.note)
    if spec.source != "catalog" and spec.checkpoint_bytes is None:
        notes.append("weights estimated from the architecture (no checkpoint size found)")
    if request.fmt.online:
        notes.append("fp8 weights are quantized by vLLM while loading the 16-bit checkpoint")
    if config.max_model_len is None and spec.max_position_embeddings > request.max_model_len:
        notes.append(
            f"maxModelLen defaults to {request.max_model_len} (the model allows "
            f"{spec.max_position_embeddings}); set maxModelLen to serve longer requests"
        )
    if config.dtype != "auto" and spec.native_quantization:
        notes.append(
            f"dtype {chosen.dtype} sets the activation dtype; the {spec.native_quantization} "
            "checkpoint's weights stay quantized"
        )
    if spec.native_quantization == "fbgemm_fp8":
        notes.append(
            "fbgemm_fp8 is deprecated in vLLM 0.33: served with --allow-deprecated-quantization"
        )
    if chosen.nodes > 1:
        notes.append(
            f"{chosen.nodes} nodes of {chosen.instance.name}: tensor parallel "
            f"{chosen.tensor_parallel_size} inside each node, pipeline parallel {chosen.nodes} across "
            f"them, decoder layers split {'/'.join(map(str, chosen.stage_layers))} (vLLM's "
            f"get_pp_indices); per-GPU figures are the fullest stage's; "
            f"${chosen.instance.on_demand_usd_per_hour:.2f}/h per node, "
            f"${chosen.price:.2f}/h in all"
        )
    if config.spot:
        notes.append("spot: the price shown is on-demand; spot does not change the choice")
    if config.monitoring:
        notes.append(
            f"the root volume holds {monitoring_disk_gb(config):.0f} GB for monitoring "
            f"({config.monitoring_retention_size_gib} GiB of metrics kept, and the images)"
        )
    notes.append(
        f"prices are {instance_catalog.PRICE_REGION} on-demand as of {instance_catalog.PRICE_DATE}"
    )
    return SizingPlan(
        model=config.model,
        instance=chosen.instance,
        tensor_parallel_size=chosen.tensor_parallel_size,
        pipeline_parallel_size=chosen.nodes,
        nodes=chosen.nodes,
        stage_layers=chosen.stage_layers,
        dtype=chosen.dtype,
        quantization=request.fmt.plan_quantization,
        kv_cache_dtype=config.kv_cache_dtype,
        max_model_len=request.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=limits.max_num_batched_tokens,
        emit_max_num_batched_tokens=limits.pass_batched_tokens,
        data_parallel_size=request.engine.data_parallel_size,
        effective_max_num_seqs=limits.max_num_seqs,
        gpu_memory_utilization=config.gpu_memory_utilization,
        memory=chosen.memory,
        kv_cache_capacity_tokens=chosen.kv_capacity_tokens,
        root_volume_gb=root_volume_gb(config),
        model_volume_gb=model_volume_gb(spec, config),
        weights_on_disk_gb=stored_weights_gb(spec),
        hourly_price_usd=chosen.price,
        notes=tuple(notes),
        rope_theta=spec.rope_theta,
        rope_override=rope_override(spec, config),
        checkpoint_quantization=spec.native_quantization,
    )


# --- refusals ----------------------------------------------------------------------------------


def nothing_fits_message(config: StackConfig, spec: ModelSpec, judged: list[Candidate]) -> str:
    request = _request(config, spec)
    total = weight_bytes(spec, request.fmt)
    kv_token = kv_bytes_per_token(spec, request.kv_dtype_bytes, 1)
    kv_total = kv_bytes_for_requests(
        spec, request.kv_dtype_bytes, 1, request.max_model_len, config.min_concurrent_sequences
    )
    lines = [
        f"no instance can serve {config.model} as configured.",
        f"  weights: {spec.total_params / 1e9:.1f}B parameters as {request.fmt.label} = "
        f"{total / GIB:.1f} GiB in all (split across the GPUs of one instance)",
        f"  KV cache: {kv_token:,} bytes/token x {config.min_concurrent_sequences} sequences x "
        f"{request.max_model_len} tokens = {kv_total / GIB:.1f} GiB"
        + (" (MLA: held in full on every GPU)" if spec.is_mla else " (split across GPUs)"),
    ]
    would_fit = [
        c for c in judged if c.blockers and all(b.kind in ("filter", "region") for b in c.blockers)
    ]
    if would_fit:
        best = would_fit[0]
        lines.append(
            f"  {best.instance.name} (${best.price:.2f}/h) would fit but is excluded: "
            f"{'; '.join(best.reasons)}"
        )
    # The largest instance the region offers that fails on its own merits shows the physical limit.
    physical = [
        c for c in judged
        if any(b.kind in ("gpu", "memory", "host") for b in c.blockers)
        and not any(b.kind == "region" for b in c.blockers)
    ]
    if physical:
        largest = max(physical, key=lambda c: (c.instance.total_cuda_memory_gib, -(c.price or math.inf)))
        reasons = "; ".join(b.message for b in largest.blockers if b.kind in ("gpu", "memory", "host"))
        lines.append(
            f"  largest candidate in the region: {largest.instance.name} "
            f"({gpus_label(largest.instance)}, TP {largest.tensor_parallel_size or '-'}): {reasons}"
        )
    lines.append("  ways out:")
    lines += [f"    - {way}" for way in ways_out(config, request.spec, request.fmt, request.max_model_len)]
    across = _across_nodes(config, spec, judged)
    if across:
        lines.append(f"    - {across}")
    return "\n".join(lines)


def _across_nodes(config: StackConfig, spec: ModelSpec, judged: list[Candidate]) -> Optional[str]:
    """The cheapest N identical nodes (pipeline parallel) that would serve the model when the
    config asked for one node, in the region and price cap the single-node search used."""
    if config.node_counts != (1,):
        return None
    offered = {c.instance.name for c in judged if not any(b.kind == "region" for b in c.blockers)}
    counts = range(2, MAX_NODES + 1)
    fitting = [c for c in candidates(config, offered=offered, spec=spec, node_counts=counts) if c.fits]
    if not fitting:
        return f"no {MAX_NODES} or fewer identical nodes (pipeline parallel across them) hold it either"
    best = min(fitting, key=lambda c: c.sort_key)  # what nodes=auto then picks: the cheapest
    return (
        f"{best.label} across nodes (pipeline parallel {best.nodes}, tensor parallel "
        f"{best.tensor_parallel_size} in each, ${best.price:.2f}/h in all): set nodes to auto to "
        "size it (tools/size); `pulumi up` deploys one node only yet"
    )


def sixteen_bit_refusal(spec: ModelSpec, config: StackConfig) -> str:
    """Why an explicit 16-bit dtype on an fp8 checkpoint is refused, with both sizings.

    `dtype` is documented as the weight and activation dtype, so dtype=bfloat16 with
    quantization=none reads as "16-bit weights". vLLM cannot give that: it keeps an fp8
    checkpoint's weights in fp8 (and refuses a --quantization that contradicts the checkpoint).
    Rather than silently serve fp8, say so, show what 16-bit would take, and name the fix.
    """
    as_16bit = replace(spec, native_quantization=None, quant_bits=None, checkpoint_bytes=None)
    judged_16bit = candidates(config, spec=as_16bit)
    holds_16bit = [c.instance.name for c in judged_16bit if c.fits]
    auto = config.model_copy(update={"dtype": "auto"})
    fp8_fits = [c for c in candidates(auto, spec=spec) if c.fits]
    lines = [
        f"{NAMESPACE}:dtype={config.dtype} asks for 16-bit weights, but {spec.model_id}'s checkpoint "
        f"is {spec.native_quantization} and vLLM serves it as {spec.native_quantization} whatever "
        "dtype says (dtype then sets only the activations).",
        "At 16-bit: " + nothing_fits_message(config, as_16bit, judged_16bit).split("\n", 1)[1].lstrip(),
    ]
    if holds_16bit:
        lines.append(
            f"  16-bit weights fit on one node only on {', '.join(holds_16bit)}, and only from a "
            "bfloat16 conversion of the checkpoint (set model to such a repository)."
        )
    if fp8_fits:
        best = fp8_fits[0]
        lines.append(
            f"Set dtype to auto to serve the {spec.native_quantization} weights with 16-bit "
            f"activations: the cheapest instance for that is {best.instance.name} "
            f"(${best.price:.2f}/h, {gpus_label(best.instance)})."
        )
    return "\n".join(lines)
