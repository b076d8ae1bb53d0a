"""Sizing figures against numbers found outside the code: public vLLM logs and hand arithmetic.

tests/sizing/test_sizing.py checks the choice of instance; these pin the terms of the memory estimate
itself, so that a term set to zero (or doubled) cannot go unnoticed.
"""

import math

import pytest

from config.settings import parse
from sizing import choice, gpus
from sizing.hub import resolve

GIB = 2**30
QWEN_7B_KV_BYTES_PER_TOKEN = 2 * 28 * 4 * 128 * 2  # 2 (K,V) x layers x KV heads x head dim x 2 bytes


def test_overheads_are_at_least_what_vllm_was_seen_to_use():
    """vllm-project/vllm PR #10511: Llama-3-8B on an H100 at 8192 batched tokens peaked at 1.26 GiB
    of activations; CUDA graphs are logged at 0.3-1 GiB; non-torch memory after the baseline
    snapshot at up to 0.43 GiB (PR #12126, issue #16570). The estimate must not be below them."""
    config = parse({"model": "meta-llama/Llama-3.1-8B-Instruct", "maxModelLen": 8192, "maxNumBatchedTokens": 8192})
    memory = choice.evaluate(config, resolve(config.model), gpus.get("p5.4xlarge")).memory
    assert memory.activation_gib >= 1.26
    assert memory.cuda_graphs_gib >= 0.3
    assert memory.runtime_overhead_gib >= 0.43
    # ...and not absurdly above them: a model should not be pushed two sizes up.
    assert memory.overhead_gib <= 8


def test_kv_capacity_is_what_the_leftover_budget_holds():
    plan = choice.plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192}))
    memory = plan.memory
    leftover = (memory.budget_gib - memory.weights_gib - memory.overhead_gib) * GIB
    capacity = plan.kv_cache_capacity_tokens
    assert capacity * QWEN_7B_KV_BYTES_PER_TOKEN <= leftover < (capacity + 1) * QWEN_7B_KV_BYTES_PER_TOKEN


@pytest.mark.parametrize("max_model_len", [8192, 8190, 8177])
def test_each_sequence_takes_whole_16_token_blocks(max_model_len):
    config = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": max_model_len})
    plan = choice.plan(config)
    tokens = math.ceil(max_model_len / 16) * 16 * config.min_concurrent_sequences
    assert plan.memory.kv_cache_gib * GIB == pytest.approx(tokens * QWEN_7B_KV_BYTES_PER_TOKEN)


def test_disks_hold_the_os_snapshot_the_image_and_the_weights():
    plan = choice.plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192}))
    weights_gb = 7.616e9 * 2 / 1e9  # 7.616B parameters in bfloat16
    # The DLAMI's root snapshot (75 GB, the volume's floor) + the vLLM image (~20 GB unpacked).
    assert plan.root_volume_gb >= 75 + 20
    assert plan.model_volume_gb >= weights_gb
    assert plan.root_volume_gb % 10 == 0 and plan.model_volume_gb % 10 == 0


def test_qwen_7b_choice_follows_from_hand_arithmetic():
    """Qwen2.5-7B in bfloat16 at 8k, two sequences: weights 7.616e9 x 2 B = 14.19 GiB, KV cache
    2 x 8192 x 57,344 B = 0.875 GiB. A T4's budget is 0.92 x 16 GiB = 14.72 GiB < 15.06 GiB even
    before any overhead; an L4 or A10G (0.92 x 22.35 = 20.56 GiB) leaves 5.5 GiB for it. The
    cheapest 22 GiB-class instance is g6.xlarge (L4, $0.8048/h, below g5.xlarge's $1.006)."""
    weights_gib = 7.616e9 * 2 / GIB
    kv_gib = 2 * 8192 * QWEN_7B_KV_BYTES_PER_TOKEN / GIB
    assert weights_gib + kv_gib > 0.92 * 16
    assert 0.92 * 22.35 - weights_gib - kv_gib > 5
    plan = choice.plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192}))
    assert plan.instance.name == "g6.xlarge"
    assert plan.memory.weights_gib == pytest.approx(weights_gib, rel=0.03)
    assert plan.memory.kv_cache_gib == pytest.approx(kv_gib)
