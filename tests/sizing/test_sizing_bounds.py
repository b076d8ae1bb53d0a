"""Sizing figures against numbers found outside the code: hand arithmetic and real vLLM logs.

tests/sizing/test_sizing.py checks the choice of instance; these pin how the plan's figures follow
from the memory terms and vLLM's block accounting, so a term set to zero (or doubled) cannot go
unnoticed. tests/sizing/test_memory_terms.py checks each term itself.
"""

import math

import pytest

from config.validation import parse
from sizing import choice

GIB = 2**30
QWEN_7B_KV_BYTES_PER_TOKEN = 2 * 28 * 4 * 128 * 2  # 2 (K,V) x layers x KV heads x head dim x 2 bytes
BLOCK = 16  # tokens per KV block (vLLM's default --block-size)


def test_kv_capacity_is_what_the_leftover_budget_holds_in_whole_blocks():
    """vLLM: blocks = available // block bytes; "GPU KV cache size" = blocks / blocks per request
    x max_model_len (vllm/v1/core/kv_cache_utils.py get_kv_cache_capacity)."""
    plan = choice.plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192}))
    memory = plan.memory
    available = (memory.budget_gib - memory.weights_gib - memory.overhead_gib) * GIB
    blocks = math.floor(available / (BLOCK * QWEN_7B_KV_BYTES_PER_TOKEN))
    assert plan.kv_cache_capacity_tokens == int(blocks / (8192 // BLOCK) * 8192)


@pytest.mark.parametrize("max_model_len", [8192, 8190, 8177])
def test_each_sequence_takes_whole_16_token_blocks_and_the_pool_keeps_one_back(max_model_len):
    config = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": max_model_len})
    plan = choice.plan(config)
    blocks = math.ceil(max_model_len / BLOCK) * config.min_concurrent_sequences + 1
    assert plan.memory.kv_cache_gib * GIB == pytest.approx(blocks * BLOCK * QWEN_7B_KV_BYTES_PER_TOKEN)


def test_disks_hold_the_os_snapshot_the_image_and_the_weights():
    plan = choice.plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192}))
    weights_gb = 7.616e9 * 2 / 1e9  # 7.616B parameters in bfloat16
    # The DLAMI's root snapshot (75 GB, the volume's floor) + the vLLM image (~20 GB unpacked).
    assert plan.root_volume_gb >= 75 + 20
    assert plan.model_volume_gb >= weights_gb
    assert plan.root_volume_gb % 10 == 0 and plan.model_volume_gb % 10 == 0


def test_qwen_7b_choice_follows_from_hand_arithmetic():
    """Qwen2.5-7B in bfloat16 at 8k, two sequences: weights 7.616e9 x 2 B = 14.19 GiB, KV cache
    (2 x 512 + 1) blocks x 16 x 57,344 B = 0.876 GiB. A T4's budget is 0.92 x 14.58 GiB (CUDA) =
    13.41 GiB < 14.19 GiB: the weights alone do not fit. An L4 (0.92 x 21.95 = 20.19 GiB) leaves
    5.1 GiB for them and the overheads. The cheapest 22 GiB-class instance is g6.xlarge (L4,
    $0.8048/h, below g5.xlarge's $1.006)."""
    weights_gib = 7.616e9 * 2 / GIB
    kv_gib = (2 * 512 + 1) * BLOCK * QWEN_7B_KV_BYTES_PER_TOKEN / GIB
    assert weights_gib > 0.92 * 14.58
    assert 0.92 * 21.95 - weights_gib - kv_gib > 5
    plan = choice.plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192}))
    assert plan.instance.name == "g6.xlarge"
    assert plan.memory.weights_gib == pytest.approx(weights_gib, rel=0.03)
    assert plan.memory.kv_cache_gib == pytest.approx(kv_gib)
    # the overheads are what the memory terms give for an L4's defaults (2048 tokens, 256 seqs)
    assert plan.memory.overhead_gib == pytest.approx(
        plan.memory.activation_gib + plan.memory.cuda_graphs_gib + plan.memory.runtime_overhead_gib
    )
    assert 0.5 < plan.memory.overhead_gib < 2.0
