"""The instance choice: the cheapest candidate that serves the model as configured, turned into
the SizingPlan serving/ and components/ consume; an instanceType the user named, checked.

Each instance is judged in ``sizing.candidates``; the refusals that show the arithmetic when
nothing fits are written in ``sizing.refusals``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Callable, Optional

from config.constants import NAMESPACE
from config.settings import StackConfig
from sizing import gpus as instance_catalog
from sizing.candidates import Candidate, Request, batch_limits_for, judge, judge_catalog, resolve_request
from sizing.cheaper import cheaper_options
from sizing.errors import SizingError
from sizing.formats import FP8_METHODS
from sizing.gpus import GpuInstance, gpus_label
from sizing.addons import addon_disk_gb, addon_notes
from sizing.host import model_volume_gb, monitoring_disk_gb, root_volume_gb, stored_weights_gb
from sizing.hub import resolve
from sizing.models import ModelResolutionError, ModelSpec
from sizing.plan import SizingPlan
from sizing.refusals import nothing_fits_message, sixteen_bit_refusal
from sizing.rope import rope_override, with_hub_rope_facts
from sizing.startup_memory import ruled_out_notes


Resolver = Callable[..., ModelSpec]


# --- the request and the candidates ------------------------------------------------------------


def _request(config: StackConfig, spec: ModelSpec) -> Request:
    """``sizing.candidates.resolve_request``, after refusing an explicit 16-bit dtype on an fp8
    checkpoint (``sizing.refusals.sixteen_bit_refusal`` sizes both alternatives)."""
    if (
        config.quantization == "none"
        and spec.native_quantization in FP8_METHODS
        and config.dtype != "auto"
    ):
        raise SizingError(sixteen_bit_refusal(spec, config))
    return resolve_request(config, spec)


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
    return judge(_request(config, spec), config, instance, offered, nodes)


def candidates(
    config: StackConfig,
    *,
    offered: Optional[Collection[str]] = None,
    spec: Optional[ModelSpec] = None,
    resolver: Resolver = resolve,
    node_counts: Optional[Collection[int]] = None,
) -> list[Candidate]:
    """Every catalog instance judged for this config at each node count (default: the ones
    the config allows, ``sizing.pipeline.node_counts``), cheapest first (fitting or not)."""
    if spec is None:
        spec = _resolve_spec(config, resolver)
    return judge_catalog(_request(config, spec), config, offered=offered, node_counts=node_counts)


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
    _idle_stop_on_one_node(config, chosen)
    planned = _to_plan(config, spec, chosen)
    cheaper = cheaper_options(config, spec, planned.max_model_len, chosen.price, _cheapest, offered)
    return replace(planned, notes=ruled_out_notes(config, chosen, judged) + planned.notes, cheaper=cheaper)


def _idle_stop_on_one_node(config: StackConfig, chosen: Candidate) -> None:
    """idleStopMinutes needs a plan on one node. Raises SizingError otherwise: the watcher powers
    off the host it runs on, so across nodes the workers would go on billing behind a stopped
    head, and tools/wake starts one instance."""
    if chosen.nodes > 1 and config.idle_stop_minutes:
        raise SizingError(
            f"{NAMESPACE}:idleStopMinutes={config.idle_stop_minutes} stops one host, and "
            f"{config.model} runs on {chosen.nodes} x {chosen.instance.name}: idle stop works "
            "on one node only. Turn it off (pulumi config rm idleStopMinutes), or choose a "
            "model or quantization that fits one node and set nodes to 1."
        )


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
    limits = batch_limits_for(request, config, chosen.instance)
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
    if config.monitoring and config.replicas > 1:
        notes.append(
            f"each replica's root volume holds {monitoring_disk_gb(config):.0f} GB for the CloudWatch "
            "agent; a fleet's metrics are kept in CloudWatch, not on the replicas "
            "(monitoringRetentionSizeGib applies to a single host's Prometheus only)"
        )
    elif config.monitoring:
        notes.append(
            f"the root volume holds {monitoring_disk_gb(config):.0f} GB for monitoring "
            f"({config.monitoring_retention_size_gib} GiB of metrics kept, and the images)"
        )
    notes += addon_notes(request.addons)
    notes.append(
        f"prices are {instance_catalog.PRICE_REGION} on-demand as of {instance_catalog.PRICE_DATE}"
    )
    return SizingPlan(
        model=config.model,
        instance=chosen.instance,
        tensor_parallel_size=chosen.tensor_parallel_size,
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
        min_concurrent_sequences=config.min_concurrent_sequences,
        model_volume_throughput_mibps=config.model_volume_throughput_mibps,
        memory=chosen.memory,
        kv_cache_capacity_tokens=chosen.kv_capacity_tokens,
        root_volume_gb=root_volume_gb(config),
        model_volume_gb=model_volume_gb(spec, config, addon_disk_gb(spec, request.addons)),
        weights_on_disk_gb=stored_weights_gb(spec),
        hourly_price_usd=chosen.price,
        notes=tuple(notes),
        rope_theta=spec.rope_theta,
        rope_override=rope_override(spec, config),
        checkpoint_quantization=spec.native_quantization,
        architecture=spec.architecture,
        model_type=spec.model_type,
        max_loras=request.addons.max_loras,
        max_lora_rank=request.addons.max_lora_rank,
    )
