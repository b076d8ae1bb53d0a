"""The KV layout, capacity and startup check against figures real vLLM logs printed.

The block counts come from the llm-d planner's vLLM 0.19 H100 logs (bench/data/vllm-startup-logs.csv;
"num_gpu_blocks is: N" in the same logs): from them vLLM printed the concurrency checked here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sizing.kv_cache import blocks_per_request, capacity, kv_layout, one_request_bytes
from sizing.models import from_catalog

GEMMA3_12B = from_catalog("google/gemma-3-12b-it")  # 48 layers: 40 sliding (window 1024), 8 full
LLAMA_8B = from_catalog("meta-llama/Llama-3.1-8B-Instruct")  # 32 full layers, 8 KV heads x 128
GPT_OSS_20B = from_catalog("openai/gpt-oss-20b")  # 12 sliding (window 128) + 12 full


def test_full_attention_is_one_group_of_every_layer():
    layout = kv_layout(LLAMA_8B, 2, 1)
    assert layout.page_bytes == 16 * 2 * 8 * 128 * 2
    assert layout.group_size == 32 and len(layout.groups) == 1
    assert layout.block_bytes == 16 * 131072  # 16 tokens x 128 KiB per token


def test_llama_concurrency_is_blocks_over_blocks_per_request():
    """L01/N05: 29,751 blocks; 'GPU KV cache size: 476,016 tokens', 'Maximum concurrency for
    32,768 tokens per request: 14.53x'."""
    layout = kv_layout(LLAMA_8B, 2, 1)
    kv = capacity(layout, 29751 * layout.block_bytes, 32768, in_flight_tokens=8192)
    assert kv.blocks == 29751
    assert round(kv.max_concurrency, 2) == 14.53
    assert kv.tokens == 476016


def test_hybrid_groups_use_the_smaller_layer_count_as_group_size():
    """vllm/v1/core/kv_cache_planning.py: gemma-3 (40 sliding : 8 full) -> groups of 8 layers, five
    sliding and one full; a block id spans 8 layer slots."""
    layout = kv_layout(GEMMA3_12B, 2, 1)
    assert layout.group_size == 8
    assert sorted(g.sliding_window or 0 for g in layout.groups) == [0, 1024, 1024, 1024, 1024, 1024]
    assert layout.block_bytes == 8 * 16 * 2 * 8 * 256 * 2


def test_gemma3_concurrency_matches_the_logged_figure():
    """L20: 48,867 blocks, 'Maximum concurrency for 8,192 tokens per request: 15.88x'. In vLLM 0.19
    (one batch of 8192 tokens in flight) a sliding group still takes the whole 8192 tokens plus a
    block: 512 + 5 x 513 blocks per request."""
    layout = kv_layout(GEMMA3_12B, 2, 1)
    assert blocks_per_request(layout, 8192, 8192) == 512 + 5 * 513
    kv = capacity(layout, 48867 * layout.block_bytes, 8192, in_flight_tokens=8192, tokens_from_concurrency=False)
    assert round(kv.max_concurrency, 2) == 15.88
    assert kv.tokens == 130304  # 'GPU KV cache size: 130,304 tokens': 0.19 printed blocks // groups x 16
    # vLLM 0.33 prints concurrency x max_model_len instead
    assert capacity(layout, 48867 * layout.block_bytes, 8192, 8192).tokens == int(48867 / 3077 * 8192)


def test_near_equal_layer_counts_group_by_the_larger():
    layout = kv_layout(GPT_OSS_20B, 2, 2)
    assert layout.group_size == 12 and len(layout.groups) == 2
    # at 131072 tokens a sliding layer holds the window - 1 plus two batches in flight, plus a block
    assert blocks_per_request(layout, 131072, 2 * 2048) == 8192 + (-(-(127 + 4096) // 16) + 1)


def test_layer_counts_within_one_and_a_half_times_pad_the_smaller_type():
    """vLLM's example: 12 sliding + 13 full layers are grouped by 13 (one padding slot), not by 12
    (which would need a second, mostly empty, full-attention group)."""
    uneven = replace(GPT_OSS_20B, num_layers=25, sliding_window_layers=12)
    layout = kv_layout(uneven, 2, 1)
    assert layout.group_size == 13 and len(layout.groups) == 2


def test_the_startup_check_keeps_one_block_back():
    """vLLM starts when (available - one block) holds one max_model_len request in every layer."""
    layout = kv_layout(LLAMA_8B, 2, 1)
    needed = one_request_bytes(layout, 32768, 4096)
    assert needed == 32 * 2048 * layout.page_bytes  # 4 GiB for 32k tokens of Llama-3.1-8B
    assert capacity(layout, needed + layout.block_bytes, 32768, 4096).fits_one_request
    assert not capacity(layout, needed + layout.block_bytes - 1, 32768, 4096).fits_one_request
    assert not capacity(layout, -1.0, 32768, 4096).fits_one_request


@pytest.mark.parametrize("tp,heads_per_gpu", [(1, 4), (2, 2), (4, 1), (8, 1)])
def test_kv_heads_split_by_tp_and_replicate_below_one(tp, heads_per_gpu):
    qwen7 = from_catalog("Qwen/Qwen2.5-7B-Instruct")  # 4 KV heads
    assert kv_layout(qwen7, 2, tp).page_bytes == 16 * 2 * heads_per_gpu * 128 * 2
