"""Cheaper ways to serve the same model: a shorter context or an fp8 KV cache.

The KV cache grows with maxModelLen x minConcurrentSequences; halving either, or storing the
cache in fp8 (half the bytes, vLLM's --kv-cache-dtype fp8 where vLLM 0.33 stores it: compute
capability 8.9+, or 8.0+ through FlashInfer, sizing/vllm_rules.py fp8_kv_cache_refusal), often
moves a model down an instance size. The report names such a choice in one line per change,
e.g. "at maxModelLen 8192: g6.xlarge, $0.80/h"; nothing when no change is cheaper.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Callable, Optional

from config.settings import StackConfig
from sizing.errors import SizingError
from sizing.models import ModelSpec

# The shorter contexts tried, longest first: the common powers of two down to 2048 tokens.
CONTEXT_LADDER = (131072, 65536, 32768, 16384, 8192, 4096, 2048)

# (config, spec, offered) -> the cheapest fitting (instance type, $/h), or None.
Cheapest = Callable[[StackConfig, ModelSpec, Optional[Collection[str]]], Optional[tuple[str, float]]]


def cheaper_options(
    config: StackConfig,
    spec: ModelSpec,
    max_model_len: int,
    price: Optional[float],
    cheapest: Cheapest,
    offered: Optional[Collection[str]] = None,
) -> tuple[str, ...]:
    """One line per change that lands on a cheaper instance than `price` ($/h): the longest
    context of CONTEXT_LADDER below `max_model_len` that does, and an fp8 KV cache (when the
    config does not use one already). Each line names the instance and its price."""
    if price is None:
        return ()
    lines = []
    for length in (n for n in CONTEXT_LADDER if n < max_model_len):
        found = _try(cheapest, config.model_copy(update={"max_model_len": length, "instance_type": "auto"}), spec, offered)
        if found and found[1] < price:
            lines.append(f"at maxModelLen {length}: {found[0]}, ${found[1]:.2f}/h")
            break
    if config.kv_cache_dtype != "fp8":
        fp8 = config.model_copy(update={"kv_cache_dtype": "fp8", "instance_type": "auto"})
        found = _try(cheapest, fp8, spec, offered)
        if found and found[1] < price:
            lines.append(f"with kvCacheDtype fp8: {found[0]}, ${found[1]:.2f}/h")
    return tuple(lines)


def _try(
    cheapest: Cheapest, config: StackConfig, spec: ModelSpec, offered: Optional[Collection[str]]
) -> Optional[tuple[str, float]]:
    try:
        return cheapest(config, spec, offered)
    except SizingError:
        return None
