"""What vLLM will log at startup on one GPU, term by term, and whether it starts.

``estimate()`` puts the terms of ``sizing.memory`` and the KV layout of ``sizing.kv_cache``
together the way vLLM 0.33's ``determine_available_memory`` does, for one GPU of a
tensor-parallel group. The instance choice (``sizing.choice``), the what-if tool
(``tools/size --gpu``) and the accuracy bench (``bench/sizing_accuracy.py``) all use it, so the
figures the bench checks against real logs are the ones the deployer decides with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sizing.addons import NONE, AddOns, draft_kv_page_bytes, draft_weight_bytes, lora_buffer_bytes
from sizing.calibration import ACCOUNTING_033, Accounting, value
from sizing.formats import BYTES_16BIT, WeightFormat
from sizing.kv_cache import KvCapacity, KvLayout, bytes_for_requests, capacity, kv_layout
from sizing.memory import (
    GIB,
    activation_bytes,
    budget_bytes,
    cuda_graph_bytes,
    non_torch_bytes,
    profile_tokens,
    weights_per_gpu_bytes,
)
from sizing.models import ModelSpec
from sizing.pipeline import PipelineStage, stage_spec, stage_weights_per_gpu_bytes


@dataclass(frozen=True)
class StartupEstimate:
    """Per GPU, GiB (2**30 bytes), named after the vLLM log lines they predict."""

    total_gib: float  # the CUDA total vLLM budgets against
    budget_gib: float  # gpu_memory_utilization x total ("Desired GPU memory utilization")
    weights_gib: float  # "Model loading took" (the base model's share; add-ons below)
    activation_gib: float  # the profile run's transient peak
    cuda_graphs_gib: float  # "Estimated CUDA graph memory"
    non_torch_gib: float  # allocations outside torch after the snapshot
    cuda_graphs_in_budget: bool  # vLLM 0.21+: the estimate is subtracted from the budget
    kv_cache_gib: float  # "Available KV cache memory" (negative: nothing left)
    kv: KvCapacity  # blocks, "GPU KV cache size", "Maximum concurrency", the startup check
    layout: KvLayout
    max_model_len: int
    in_flight_tokens: int
    accounting: str
    # Before vLLM 0.25 only: GiB still free when the post-allocation warm-up (CUDA graphs outside
    # the budget before 0.21, an unprofiled sampler pass) has run; negative = out of memory there.
    warmup_margin_gib: float | None = None
    # Inside "Model loading took" too (sizing.addons): LoRA buffers, the draft's weights.
    lora_buffers_gib: float = 0.0
    draft_weights_gib: float = 0.0

    @property
    def kv_cache_tokens(self) -> int:
        return self.kv.tokens

    @property
    def max_concurrency(self) -> float:
        return self.kv.max_concurrency

    @property
    def starts(self) -> bool:
        """vLLM's own verdict: the KV cache holds one request of max_model_len (and, before
        vLLM 0.21, the warm-up after the KV cache is allocated still finds memory)."""
        return self.kv.fits_one_request and (self.warmup_margin_gib is None or self.warmup_margin_gib >= 0)

    def kv_needed_gib(self, requests: int) -> float:
        """KV memory `requests` full-length requests need at once (1 = vLLM's startup check)."""
        return bytes_for_requests(self.layout, self.max_model_len, self.in_flight_tokens, requests) / GIB

    def holds(self, requests: int) -> bool:
        """vLLM starts and its KV cache holds `requests` full-length requests at once."""
        return self.starts and self.kv_cache_gib >= self.kv_needed_gib(requests)


def estimate(
    spec: ModelSpec,
    fmt: WeightFormat,
    *,
    cuda_total_gib: float,
    compute_capability: float,
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    max_model_len: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    kv_dtype_bytes: int = BYTES_16BIT,
    act_bytes: int = BYTES_16BIT,
    accounting: Accounting = ACCOUNTING_033,
    stage: PipelineStage | None = None,
    addons: AddOns = NONE,
) -> StartupEstimate:
    """The startup figures of one GPU serving `spec` in `fmt` at this TP size and these limits.

    `stage`: with pipeline parallelism across nodes, the stage this GPU belongs to: its weights
    are the stage's share (``sizing.pipeline.stage_weights_per_gpu_bytes``) and its KV cache and
    CUDA graphs cover the stage's layers only; None = one node holding every layer.

    `cuda_total_gib` is the CUDA total of one GPU (``GpuMemory.cuda_total_gib``), not the EC2 or
    nvidia-smi figure. `accounting` selects an older vLLM's behaviour (the bench only).
    `addons`: LoRA slots and a speculative draft (sizing.addons): their buffers and weights
    load with the model, the draft's layers join the KV cache's blocks.
    """
    tp = tensor_parallel_size
    budget = budget_bytes(cuda_total_gib, gpu_memory_utilization)
    if stage is None:
        weights = weights_per_gpu_bytes(spec, fmt, tp, accounting, compute_capability)
    else:
        weights = stage_weights_per_gpu_bytes(spec, fmt, tp, stage, accounting, compute_capability)
        spec = stage_spec(spec, stage)
    tokens = profile_tokens(max_num_batched_tokens, max_model_len, accounting)
    activation = activation_bytes(spec, tp, tokens, max_num_seqs, accounting, act_bytes)
    graphs = cuda_graph_bytes(spec, max_num_seqs, compute_capability)
    non_torch = non_torch_bytes(tp)
    lora = lora_buffer_bytes(spec, addons, tp, act_bytes)
    draft = draft_weight_bytes(addons, tp)
    available = budget - weights - lora - draft - non_torch - activation
    if accounting.cuda_graphs_in_budget:
        available -= graphs
    layout = replace(kv_layout(spec, kv_dtype_bytes, tp), draft_page_bytes=draft_kv_page_bytes(addons, kv_dtype_bytes, tp))
    in_flight = accounting.in_flight_batches * max_num_batched_tokens
    margin = None
    if accounting.warmup_extra_bytes_per_logit:
        rows = min(tokens, max_num_seqs)
        margin = _warmup_margin(spec, fmt, accounting, cuda_total_gib, budget, graphs, tp, rows) / GIB
    return StartupEstimate(
        total_gib=cuda_total_gib,
        budget_gib=budget / GIB,
        weights_gib=weights / GIB,
        activation_gib=activation / GIB,
        cuda_graphs_gib=graphs / GIB,
        non_torch_gib=non_torch / GIB,
        cuda_graphs_in_budget=accounting.cuda_graphs_in_budget,
        kv_cache_gib=available / GIB,
        kv=capacity(layout, available, max_model_len, in_flight, accounting.cuda_graphs_in_budget),
        layout=layout,
        max_model_len=max_model_len,
        in_flight_tokens=in_flight,
        accounting=accounting.key,
        warmup_margin_gib=margin,
        lora_buffers_gib=lora / GIB,
        draft_weights_gib=draft / GIB,
    )


def _warmup_margin(
    spec: ModelSpec, fmt: WeightFormat, accounting: Accounting, total_gib: float, budget: float,
    graphs: float, tp: int, rows: int,
) -> float:
    """Bytes left after the warm-up of a release before vLLM 0.25: once the KV cache has filled
    the budget (but for the activation headroom), the CUDA graphs (outside the budget before
    0.21) and the part of the sampler warm-up the profile run did not see must fit in what the
    GPU had free at the snapshot."""
    pre = value("pre_snapshot_tensor_parallel" if tp > 1 else "pre_snapshot_one_gpu") * GIB
    free_at_snapshot = total_gib * GIB - pre
    extra = rows * spec.vocab_size * accounting.warmup_extra_bytes_per_logit
    if fmt.method == "mxfp4":
        extra += accounting.warmup_mxfp4_moe_extra_gib * GIB
    outside = 0.0 if accounting.cuda_graphs_in_budget else graphs
    return free_at_snapshot - budget - outside - extra


def kv_bytes_for_requests(
    spec: ModelSpec,
    kv_dtype_bytes: int,
    tensor_parallel_size: int,
    max_model_len: int,
    requests: int,
    max_num_batched_tokens: int = 2048,
    accounting: Accounting = ACCOUNTING_033,
) -> int:
    """KV bytes per GPU that `requests` full-length requests need at once (vLLM 0.33's blocks)."""
    layout = kv_layout(spec, kv_dtype_bytes, tensor_parallel_size)
    in_flight = accounting.in_flight_batches * max_num_batched_tokens
    return bytes_for_requests(layout, max_model_len, in_flight, requests)


# --- how long a start takes (sizing.start_stages) ---------------------------------------------------

from sizing.start_stages import (  # noqa: E402 - the start-time half, re-exported for callers of this module
    FLEET_ROOT_VOLUME_MIB_S, VOLUME_INITIALIZATION_MIB_S, Start, StartEstimate, VolumePerformance, estimate_start, model_volume_performance,
)


def model_volume_for(plan, config) -> VolumePerformance:
    """The model volume's gp3 throughput and IOPS for `plan` (SizingPlan) and `config`
    (StackConfig): modelVolumeThroughputMibps, or what loads plan.weights_on_disk_gb / nodes
    within sizing.start_stages.WEIGHT_LOAD_TARGET_S."""
    return model_volume_performance(
        plan.weights_on_disk_gb / max(1, plan.nodes), throughput_mib_s=config.model_volume_throughput_mibps
    )


def expected_start(plan, config, start: Start) -> StartEstimate:
    """The expected start of `plan` (SizingPlan) under `config` (StackConfig), stage by stage in
    seconds (StartEstimate.total_s, .stages, .biggest): Start.HOST_COLD (a single host's first
    vLLM start), WAKE (a stopped host started again), FLEET_COLD (a replica from the baked image:
    volumes read through the initialization rate, VOLUME_INITIALIZATION_MIB_S), WARM_POOL (a
    replica from the warm pool). The model volume at model_volume_for(plan, config); the root at
    gp3's baseline on a single host, at FLEET_ROOT_VOLUME_MIB_S on a replica. Pure; for grace periods, hook and readiness timeouts, warm-ups."""
    return estimate_start(
        start,
        weights_gb=plan.weights_on_disk_gb,
        model_volume_mib_s=model_volume_for(plan, config).throughput_mib_s,
        root_volume_mib_s=FLEET_ROOT_VOLUME_MIB_S if start in (Start.FLEET_COLD, Start.WARM_POOL) else 125,
        volume_initialization_mib_s=VOLUME_INITIALIZATION_MIB_S,
        nodes=plan.nodes,
    )


def start_notes(plan, config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(notes, warnings) about the start for the sizing report: the model volume's throughput
    with its cost and the expected starts (sizing.start_stages); a warning naming
    readinessTimeoutMinutes when it is shorter than the slowest expected start (a single host's
    first, or a fleet's cold scale-out with replicas >= 2)."""
    volume = model_volume_for(plan, config)
    starts = [Start.HOST_COLD, Start.WAKE] if config.replicas < 2 else [Start.FLEET_COLD, Start.WARM_POOL]
    estimates = {start: expected_start(plan, config, start) for start in starts}
    cost = f", +${volume.usd_per_month:.2f}/month per volume" if volume.usd_per_month else " (gp3's free baseline)"
    timing = "; ".join(f"{s.value} ~{e.total_s / 60:.1f} min (biggest: {e.biggest.name})" for s, e in estimates.items())
    notes = (f"model volume: {volume.throughput_mib_s} MiB/s, {volume.iops} IOPS{cost}; expected start: {timing} "
             "(bench/cold_start.py)",)
    slowest = max(e.total_s for e in estimates.values())
    warnings: tuple[str, ...] = ()
    # A fleet's own readiness warning (components.fleet_group, sizing.start_time) covers replicas.
    if config.replicas < 2 and config.readiness_timeout_minutes * 60 < slowest:
        need = int(-(-slowest // 60)) + 5
        warnings = (f"vllm-deploy:readinessTimeoutMinutes={config.readiness_timeout_minutes} is shorter than the "
                    f"expected start ({slowest / 60:.1f} min, bench/cold_start.py): set it to {need} or more",)
    return notes, warnings
