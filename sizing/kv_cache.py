"""The KV cache as vLLM 0.33 lays it out: blocks, groups, capacity and the startup check.

From "Available KV cache memory" vLLM computes (vllm/v1/core/kv_cache_planning.py,
vllm/v1/core/kv_cache_utils.py, vllm/v1/kv_cache_interface.py):

* **groups**: full-attention and sliding-window layers go into groups of equal size (the
  smaller layer count, or the larger when they are within 1.5x of each other), padding the last
  group of a type; one block id spans one layer of every group slot, so a block costs
  ``group_size x page`` bytes (``KvLayout``);
* **blocks**: ``available // bytes per block`` (16 tokens per block, the default --block-size);
* **concurrency** ("Maximum concurrency for N tokens per request"): blocks / the blocks one
  request of max_model_len takes, summed over groups; a sliding-window group takes
  ``cdiv(min(window - 1 + in-flight tokens, max_model_len), 16) + 1`` blocks, where the in-flight
  tokens are max_num_batched_tokens times the batches in flight (2 with async scheduling);
* **tokens** ("GPU KV cache size: N tokens") = int(concurrency x max_model_len) (before vLLM
  0.21: blocks // groups x 16, which differs only for hybrid models);
* **the startup check**: vLLM refuses to start unless (available - one block) holds one request
  of max_model_len in every layer (``check_enough_kv_cache_memory``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sizing.memory import KV_BLOCK_TOKENS, kv_bytes_per_token_per_layer
from sizing.models import ModelSpec


def cdiv(a: int, b: int) -> int:
    """Ceiling division, as vLLM's ``cdiv``."""
    return -(-a // b)


@dataclass(frozen=True)
class KvGroup:
    sliding_window: int | None  # None = full attention
    layers: int  # real layers in the group (<= the layout's group_size)


@dataclass(frozen=True)
class KvLayout:
    """One GPU's KV cache layout for one model at one KV dtype and TP size."""

    page_bytes: int  # one layer, one block of KV_BLOCK_TOKENS tokens
    group_size: int  # layer slots per group: the tensors one block id spans
    groups: tuple[KvGroup, ...]
    # A speculative draft's layers, which join the full-attention group (sizing.addons): what
    # they add to one block id (all of the draft's layers, one page each).
    draft_page_bytes: int = 0

    @property
    def block_bytes(self) -> int:
        return self.page_bytes * self.group_size + self.draft_page_bytes


def _split(count: int, group_size: int, window: int | None) -> list[KvGroup]:
    groups = cdiv(count, group_size)
    return [KvGroup(window, len(range(i, count, groups))) for i in range(groups)]


def kv_layout(spec: ModelSpec, kv_dtype_bytes: int, tp: int) -> KvLayout:
    """The groups vLLM forms (``_get_kv_cache_groups_uniform_page_size``)."""
    page = KV_BLOCK_TOKENS * kv_bytes_per_token_per_layer(spec, kv_dtype_bytes, tp)
    full, sliding = spec.full_attention_layers, spec.sliding_window_layers
    if not sliding or not spec.sliding_window:
        return KvLayout(page, full, (KvGroup(None, full),))
    smallest, largest = min(full, sliding), max(full, sliding)
    group_size = largest if largest < smallest * 1.5 else smallest
    groups = _split(full, group_size, None) + _split(sliding, group_size, spec.sliding_window)
    return KvLayout(page, group_size, tuple(groups))


def _request_blocks(group: KvGroup, max_model_len: int, in_flight_tokens: int) -> int:
    """Blocks one max_model_len request takes in one layer of this group."""
    if group.sliding_window is None:
        return cdiv(max_model_len, KV_BLOCK_TOKENS)
    tokens = min(group.sliding_window - 1 + in_flight_tokens, max_model_len)
    return cdiv(tokens, KV_BLOCK_TOKENS) + 1


def blocks_per_request(layout: KvLayout, max_model_len: int, in_flight_tokens: int) -> int:
    """Blocks of the shared pool one full-length request takes (all groups)."""
    return sum(_request_blocks(g, max_model_len, in_flight_tokens) for g in layout.groups)


def one_request_bytes(layout: KvLayout, max_model_len: int, in_flight_tokens: int) -> int:
    """KV bytes vLLM's startup check needs for one full-length request (every real layer)."""
    return sum(
        g.layers * _request_blocks(g, max_model_len, in_flight_tokens) * layout.page_bytes
        for g in layout.groups
    ) + cdiv(max_model_len, KV_BLOCK_TOKENS) * layout.draft_page_bytes


@dataclass(frozen=True)
class KvCapacity:
    blocks: int
    max_concurrency: float  # requests of max_model_len at once, as vLLM logs it
    tokens: int  # "GPU KV cache size"
    one_request_bytes: int  # what the startup check needs
    fits_one_request: bool  # vLLM starts (as far as the KV cache goes)


def capacity(
    layout: KvLayout,
    available_bytes: float,
    max_model_len: int,
    in_flight_tokens: int,
    tokens_from_concurrency: bool = True,
) -> KvCapacity:
    """What vLLM derives from the available KV cache memory (see the module docstring).
    `tokens_from_concurrency` False: the token count older releases printed."""
    blocks = max(0, math.floor(available_bytes / layout.block_bytes))
    per_request = blocks_per_request(layout, max_model_len, in_flight_tokens)
    concurrency = blocks / per_request
    if tokens_from_concurrency:
        tokens = int(concurrency * max_model_len)
    else:
        tokens = blocks // len(layout.groups) * KV_BLOCK_TOKENS
    needed = one_request_bytes(layout, max_model_len, in_flight_tokens)
    fits = available_bytes > 0 and available_bytes - layout.block_bytes >= needed
    return KvCapacity(blocks, concurrency, tokens, needed, fits)


def bytes_for_requests(layout: KvLayout, max_model_len: int, in_flight_tokens: int, requests: int) -> int:
    """KV bytes `requests` full-length requests need at once. One request: vLLM's own startup
    check (plus the block it keeps back); more: whole blocks of the shared pool."""
    if requests <= 1:
        return one_request_bytes(layout, max_model_len, in_flight_tokens) + layout.block_bytes
    per_request = blocks_per_request(layout, max_model_len, in_flight_tokens)
    return (requests * per_request + 1) * layout.block_bytes
