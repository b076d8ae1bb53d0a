"""The one name of each sizing quantity, used by every output that shows it: the sizing report
(logged at preview, printed by ``tools/size`` and ``tools/plan``), the candidate table, the
one-GPU answer of ``tools/size``, the refusals, the ``sizing`` stack output and ``tools/size
--json``.

"KV cache" alone names three different figures, so it is never a label on its own:

* ``KV_FOR_SEQUENCES``: what ``minConcurrentSequences`` requests of ``maxModelLen`` tokens need
  (bytes per token x tokens x sequences), the figure the sizing reserves in its sum;
* ``KV_ALLOCATED``: what vLLM 0.33 allocates at startup, the budget less everything else
  (its log line "Available KV cache memory", vllm/v1/worker/gpu_worker.py
  determine_available_memory);
* ``KV_TOKENS``: that allocation in tokens (its log line "GPU KV cache size",
  vllm/v1/core/kv_cache_utils.py).

Each :class:`Quantity` has its text label, the short column header of the candidate table (the
table's legend spells the label out), its key in the ``sizing`` stack output (``perGpu`` for the
per-GPU figures) and in ``tools/size --json`` (``per_gpu_gib`` for the per-GPU figures), and what
vLLM 0.33 calls it. A key of ``None``: that output does not carry the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Quantity:
    """One sizing quantity: its label in text, the candidate table's column header, its key in
    the ``sizing`` stack output and in ``tools/size --json``, the unit, and vLLM 0.33's name."""

    label: str
    column: Optional[str]
    output_key: Optional[str]
    json_key: Optional[str]
    unit: str
    vllm: str


GPU_TOTAL = Quantity(
    "GPU memory as CUDA sees it", None, None, "total", "GiB",
    "torch.cuda.mem_get_info() total (vllm/utils/mem_utils.py MemorySnapshot)",
)
BUDGET = Quantity(
    "budget", "budget", "budgetGib", "budget", "GiB per GPU",
    "gpu_memory_utilization x total (requested_memory, vllm/v1/worker/gpu_worker.py)",
)
WEIGHTS = Quantity(
    "weights", "weights", "weightsGib", "weights", "GiB per GPU", '"Model loading took"',
)
ACTIVATION_PEAK = Quantity(
    "activation peak", None, None, "activation", "GiB per GPU",
    '"PyTorch activation peak memory" (the profile run at max_num_batched_tokens)',
)
CUDA_GRAPHS = Quantity(
    "CUDA graphs", None, None, "cuda_graphs", "GiB per GPU", '"Estimated CUDA graph memory"',
)
NON_TORCH = Quantity(
    "non-torch memory", None, None, "non_torch", "GiB per GPU",
    '"non_torch_memory" (CUDA context, NCCL and cuBLAS workspaces, allocator slack)',
)
OVERHEAD = Quantity(
    "overhead", "overhead", "overheadGib", None, "GiB per GPU",
    "activation peak + CUDA graphs + non-torch memory",
)
KV_FOR_SEQUENCES = Quantity(
    "KV cache for the requested sequences", "KV seqs", "kvCacheForSequencesGib",
    "kv_cache_for_sequences", "GiB per GPU",
    "minConcurrentSequences x maxModelLen tokens x KV bytes per token (vLLM's own start check is "
    "one such request: vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory)",
)
KV_ALLOCATED = Quantity(
    "KV cache vLLM will allocate", None, "kvCacheAllocatedGib", "kv_cache_allocated", "GiB per GPU",
    '"Available KV cache memory" (the budget less weights, activation peak, CUDA graphs and '
    "non-torch memory)",
)
KV_TOKENS = Quantity(
    "GPU KV cache size", None, "kvCacheCapacityTokens", "kv_cache_tokens", "tokens",
    '"GPU KV cache size: N tokens" (the allocation in tokens, across the replica)',
)
MAX_CONCURRENCY = Quantity(
    "maximum concurrency", None, "concurrentFullLengthSequences", "max_concurrency",
    "full-length requests",
    '"Maximum concurrency for N tokens per request" (GPU KV cache size / maxModelLen)',
)
HEADROOM = Quantity(
    "headroom", "headroom", "headroomGib", None, "GiB per GPU",
    "budget - (weights + KV cache for the requested sequences + overhead): what vLLM adds to the "
    "KV cache beyond the requested sequences",
)

QUANTITIES: tuple[Quantity, ...] = (
    GPU_TOTAL, BUDGET, WEIGHTS, ACTIVATION_PEAK, CUDA_GRAPHS, NON_TORCH, OVERHEAD,
    KV_FOR_SEQUENCES, KV_ALLOCATED, KV_TOKENS, MAX_CONCURRENCY, HEADROOM,
)


def legend() -> str:
    """The candidate table's legend: each short column header with its full label."""
    return "; ".join(
        [f"{q.column} = {q.label}" for q in QUANTITIES if q.column and q.column != q.label]
        + [f"{OVERHEAD.label} = {OVERHEAD.vllm}"]
    )
