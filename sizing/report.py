"""The sizing report (logged at preview) and the candidate table (the CLI)."""

from __future__ import annotations

from collections.abc import Sequence

from sizing import quantities as q
from sizing.candidates import Candidate
from sizing.costs import host_cost
from sizing.gpus import gpus_label
from sizing.plan import SizingPlan
from sizing.start_stages import model_volume_performance


def format_report(plan: SizingPlan) -> str:
    """What the program logs at preview: the choice, the per-GPU memory arithmetic, the price."""
    mem = plan.memory
    price = f"${plan.hourly_price_usd:.4g}/h" if plan.hourly_price_usd is not None else "no price"
    where = plan.instance.name if plan.nodes == 1 else f"{plan.nodes} x {plan.instance.name}"
    each = "" if plan.nodes == 1 else " each"
    pipeline = "" if plan.nodes == 1 else (
        f", pipeline parallel {plan.nodes} (layers {'/'.join(map(str, plan.stage_layers))})"
    )
    if plan.nodes > 1 and plan.hourly_price_usd_per_node is not None:
        price += f" in all (${plan.hourly_price_usd_per_node:.4g}/h per node)"
    lines = [
        f"sizing {plan.model}: {where} ({gpus_label(plan.instance)}{each}), "
        f"tensor parallel {plan.tensor_parallel_size}{pipeline}, {price} on-demand",
        f"  dtype {plan.dtype}, quantization {plan.quantization or 'from checkpoint'}, "
        f"KV cache dtype {plan.kv_cache_dtype}, max model len {plan.max_model_len}, "
        f"max batched tokens {plan.max_num_batched_tokens}",
        f"  per GPU{' (fullest stage)' if plan.nodes > 1 else ''}: {q.WEIGHTS.label} {mem.weights_gib:.2f} GiB + "
        f"{_addons_sum(mem)}{q.KV_FOR_SEQUENCES.label} {mem.kv_cache_gib:.2f} GiB + "
        f"{q.ACTIVATION_PEAK.label} {mem.activation_gib:.2f} GiB + {q.CUDA_GRAPHS.label} {mem.cuda_graphs_gib:.2f} GiB + "
        f"{q.NON_TORCH.label} {mem.runtime_overhead_gib:.2f} GiB = {mem.required_gib:.2f} GiB",
        *([f"    ({q.KV_FOR_SEQUENCES.label}: minConcurrentSequences {plan.min_concurrent_sequences} x "
           f"maxModelLen {plan.max_model_len} tokens)"] if plan.min_concurrent_sequences else []),
        *_addon_lines(plan),
        f"  {q.BUDGET.label} {mem.budget_gib:.2f} GiB ({plan.gpu_memory_utilization:g} x "
        f"{plan.instance.cuda_memory_gib:.2f} GiB {q.GPU_TOTAL.label.removeprefix('GPU memory ')}{_derived(plan)}), "
        f"{q.HEADROOM.label} {mem.headroom_gib:.2f} GiB",
        f"  {q.KV_ALLOCATED.label}: {mem.kv_allocated_gib:.2f} GiB per GPU; {q.KV_TOKENS.label} "
        f"~{plan.kv_cache_capacity_tokens:,} tokens; {q.MAX_CONCURRENCY.label} "
        f"{plan.concurrent_full_length_sequences} full-length sequences",
        f"  {'each node: ' if plan.nodes > 1 else ''}root volume {plan.root_volume_gb} GB, model volume {plan.model_volume_gb} GB "
        f"(weights {plan.weights_on_disk_gb:.1f} GB)",
        f"  {_cost_line(plan)}",
    ]
    lines += [f"  cheaper: {line}" for line in plan.cheaper]
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _addons_sum(mem) -> str:
    """The add-ons' loaded terms in the per-GPU sum (sizing.addons), when there are any."""
    a = mem.addons
    parts = [f"LoRA buffers {a.lora_buffers_gib:.2f} GiB + "] if a.lora_buffers_gib else []
    parts += [f"draft weights {a.draft_weights_gib:.2f} GiB + "] if a.draft_weights_gib else []
    return "".join(parts)


def _addon_lines(plan: SizingPlan) -> list[str]:
    """Where each add-on term comes from in vLLM 0.33 (sizing.addons)."""
    a = plan.memory.addons
    lines = []
    if a.lora_buffers_gib:
        lines.append(
            f"  LoRA buffers {a.lora_buffers_gib:.3f} GiB: max_loras x max_lora_rank x (in + out dims of "
            "every LoRA-wrapped linear layer) x dtype bytes (vllm/lora/layers/*create_lora_weights)"
        )
    if a.draft_weights_gib or a.draft_kv_gib:
        lines.append(
            f"  draft: weights {a.draft_weights_gib:.3f} GiB (loaded with the model), "
            f"{a.draft_kv_gib:.3f} GiB of the {q.KV_FOR_SEQUENCES.label} ({a.draft_kv_bytes_per_token} B per token: its "
            "layers share the target's blocks, vllm/v1/kv_cache_interface.py UniformTypeKVCacheSpecs)"
        )
    return lines


def _derived(plan: SizingPlan) -> str:
    """Says when the CUDA total is a derived figure rather than a published one."""
    return "; derived, see sizing/catalog/SOURCES.md" if plan.instance.gpu_memory.cuda_derived else ""


def _cost_line(plan: SizingPlan) -> str:
    # Across nodes every node has its own volumes and its own Elastic IP (SSH, image pulls), and
    # its model volume's throughput above gp3's baseline (the same figure the stack's costUsd
    # output and tools/plan's cost table count: sizing.startup.model_volume_for).
    performance = model_volume_performance(
        plan.weights_on_disk_gb / max(1, plan.nodes), throughput_mib_s=plan.model_volume_throughput_mibps
    )
    cost = host_cost(
        plan.hourly_price_usd, (plan.root_volume_gb + plan.model_volume_gb) * plan.nodes, plan.nodes,
        volume_performance_usd_per_month=plan.nodes * performance.usd_per_month,
    )
    running = "no price" if cost.total_usd_per_hour is None else f"${cost.total_usd_per_hour:.4g}/h"
    return (
        f"cost: running {running}, stopped ${cost.stopped_usd_per_hour:.4g}/h "
        f"(the volumes and the public IPv4 address{'es' if plan.nodes > 1 else ''})"
    )


def format_table(judged: Sequence[Candidate], *, show_all: bool = False) -> str:
    rows = [c for c in judged if show_all or c.fits]
    cols = (q.WEIGHTS, q.KV_FOR_SEQUENCES, q.OVERHEAD, q.BUDGET, q.HEADROOM)
    header = (
        f"{'instance':<20} {'GPUs':<50} {'TP':>2} {'$/h':>8} {'fit':<3} "
        + " ".join(f"{c.column:>8}" for c in cols) + "  why not"
    )
    lines = [header, "-" * len(header)]
    for c in rows:
        m = c.memory
        figures = (
            (m.weights_gib, m.kv_cache_gib, m.overhead_gib, m.budget_gib, m.headroom_gib) if m else None
        )
        mem = " ".join(f"{v:>8.1f}" for v in figures) if figures else " ".join(f"{'-':>8}" for _ in cols)
        price = f"{c.price:>8.3f}" if c.price is not None else f"{'-':>8}"
        lines.append(
            f"{c.label:<20} {gpus_label(c.instance):<50} {c.tensor_parallel_size or '-':>2} "
            f"{price} {'yes' if c.fits else 'no':<3} {mem}  {'; '.join(c.reasons)}"
        )
    lines.append(
        "memory columns are GiB per GPU; GPUs show the CUDA total (what vLLM budgets against); "
        f"{q.legend()}"
    )
    return "\n".join(lines)
