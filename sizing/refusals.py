"""The refusals that show the arithmetic: why no instance serves the model as configured (the
weights and KV cache in GiB, the nearest miss, the ways out), and why an explicit 16-bit dtype on
an fp8 checkpoint is refused (with both sizings).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from config.constants import MAX_NODES, NAMESPACE
from config.settings import StackConfig
from sizing import quantities as q
from sizing.candidates import Candidate, judge_catalog, resolve_request
from sizing.gpus import gpus_label
from sizing.memory import GIB, kv_bytes_per_token, weight_bytes
from sizing.models import ModelSpec
from sizing.pipeline import node_counts
from sizing.startup import kv_bytes_for_requests
from sizing.ways_out import ways_out


def nothing_fits_message(config: StackConfig, spec: ModelSpec, judged: list[Candidate]) -> str:
    """The refusal when no candidate in `judged` (``sizing.candidates.judge_catalog``) fits: the
    ways out first (N nodes among them), then why: the weights and the KV cache for the requested
    sequences in GiB, an instance excluded only by the price cap or the region, and the largest
    that fails on its own merits."""
    request = resolve_request(config, spec)
    total = weight_bytes(spec, request.fmt)
    kv_token = kv_bytes_per_token(spec, request.kv_dtype_bytes, 1)
    kv_total = kv_bytes_for_requests(
        spec, request.kv_dtype_bytes, 1, request.max_model_len, config.min_concurrent_sequences
    )
    across = _across_nodes(config, spec, judged)
    ways = ways_out(config, request.spec, request.fmt, request.max_model_len) + ([across] if across else [])
    lines = [f"no instance can serve {config.model} as configured. Ways out:"]
    lines += [f"    - {way}" for way in ways]
    split = "of one instance" if node_counts(config) == (1,) else "of each node, the layers across the nodes"
    lines += [
        "  why:",
        f"  weights: {spec.total_params / 1e9:.1f}B parameters as {request.fmt.label} = "
        f"{total / GIB:.1f} GiB in all (split across the GPUs {split})",
        f"  {q.KV_FOR_SEQUENCES.label}: {kv_token:,} bytes/token x {config.min_concurrent_sequences} sequences x "
        f"{request.max_model_len} tokens = {kv_total / GIB:.1f} GiB"
        + ((" (MLA: held in full on every GPU" + ("" if node_counts(config) == (1,) else
            " of a node, its layers' share") + ")") if spec.is_mla else " (split across GPUs)"),
    ]
    would_fit = [
        c for c in judged if c.blockers and all(b.kind in ("filter", "region") for b in c.blockers)
    ]
    if would_fit:
        best = would_fit[0]
        lines.append(
            f"  {best.label} (${best.price:.2f}/h) would fit but is excluded: "
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
    return "\n".join(lines)


def _across_nodes(config: StackConfig, spec: ModelSpec, judged: list[Candidate]) -> Optional[str]:
    """The cheapest N identical nodes (pipeline parallel) that would serve the model when the
    config asked for one node, in the region and price cap the single-node search used."""
    if node_counts(config) != (1,):
        return None
    offered = {c.instance.name for c in judged if not any(b.kind == "region" for b in c.blockers)}
    counts = range(2, MAX_NODES + 1)
    judged_across = judge_catalog(resolve_request(config, spec), config, offered=offered, node_counts=counts)
    fitting = [c for c in judged_across if c.fits]
    if not fitting:
        return f"no {MAX_NODES} or fewer identical nodes (pipeline parallel across them) hold it either"
    best = min(fitting, key=lambda c: c.sort_key)  # what nodes=auto then picks: the cheapest
    return (
        f"{best.label} across nodes (pipeline parallel {best.nodes}, tensor parallel "
        f"{best.tensor_parallel_size} in each, ${best.price:.2f}/h in all): set nodes to auto (or "
        f"{best.nodes}) and `pulumi up` deploys them (tools/size MODEL --nodes auto shows the plan)"
    )


def sixteen_bit_refusal(spec: ModelSpec, config: StackConfig) -> str:
    """Why an explicit 16-bit dtype on an fp8 checkpoint is refused, with both sizings.

    `dtype` is documented as the weight and activation dtype, so dtype=bfloat16 with
    quantization=none reads as "16-bit weights". vLLM cannot give that: it keeps an fp8
    checkpoint's weights in fp8 (and refuses a --quantization that contradicts the checkpoint).
    Rather than silently serve fp8, say so, show what 16-bit would take, and name the fix.
    """
    as_16bit = replace(spec, native_quantization=None, quant_bits=None, checkpoint_bytes=None)
    judged_16bit = judge_catalog(resolve_request(config, as_16bit), config)
    holds_16bit = [c.instance.name for c in judged_16bit if c.fits]
    auto = config.model_copy(update={"dtype": "auto"})
    fp8_fits = [c for c in judge_catalog(resolve_request(auto, spec), auto) if c.fits]
    lines = [
        f"{NAMESPACE}:dtype={config.dtype} asks for 16-bit weights, but {spec.model_id}'s checkpoint "
        f"is {spec.native_quantization} and vLLM serves it as {spec.native_quantization} whatever "
        "dtype says (dtype then sets only the activations).",
    ]
    if fp8_fits:
        best = fp8_fits[0]
        lines.append(
            f"Set dtype to auto to serve the {spec.native_quantization} weights with 16-bit "
            f"activations: the cheapest instance for that is {best.instance.name} "
            f"(${best.price:.2f}/h, {gpus_label(best.instance)})."
        )
    if holds_16bit:
        lines.append(
            f"16-bit weights fit on one node only on {', '.join(holds_16bit)}, and only from a "
            "bfloat16 conversion of the checkpoint (set model to such a repository)."
        )
    lines.append("At 16-bit: " + nothing_fits_message(config, as_16bit, judged_16bit))
    return "\n".join(lines)
