"""Sizing: the memory estimate per GPU and the instance choice, over the real catalogs.

Each choice is checked against a brute force over the instance catalog using the public
per-candidate fit check (`evaluate`), and each estimate against arithmetic done here by hand from
the architecture numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from config.validation import parse
from sizing import __main__ as sizing_cli
from sizing import host
from sizing.choice import candidates, evaluate, plan
from sizing.costs import host_cost
from sizing.errors import SizingError
from sizing.gpus import get, load_instances, skipped_rows
from sizing.hub import resolve
from sizing.memory import GIB, kv_bytes_per_token
from sizing.models import from_catalog
from sizing.report import format_report

REPO = Path(__file__).resolve().parents[2]
AWQ_DIR = REPO / "tests" / "fixtures" / "models" / "qwen2.5-7b-instruct-awq"
WEIGHT_TOLERANCE = 0.03  # documented in sizing/memory.py


def config(model: str, **keys):
    return parse({"model": model, **keys})


def brute_force_cheapest(cfg, spec, offered=None):
    fitting = [c for i in load_instances() if (c := evaluate(cfg, spec, i, offered=offered)).fits]
    assert fitting, "brute force found nothing that fits"
    return min(
        fitting,
        key=lambda c: (c.instance.on_demand_usd_per_hour, c.instance.gpu_count, -c.memory.headroom_gib),
    )


def hand_kv_bytes(layers, kv_heads, head_dim, tp, tokens, kv_bytes=2):
    """2 (K and V) x layers x KV heads on one GPU x head dim x bytes x tokens."""
    return 2 * layers * max(1, kv_heads // tp) * head_dim * kv_bytes * tokens


def hand_kv_for_requests(layers, kv_heads, head_dim, tp, max_len, requests, kv_bytes=2):
    """vLLM's blocks: each request takes ceil(max_len / 16) blocks of 16 tokens, and the pool keeps
    one block back (vllm/v1/core/kv_cache_planning.py check_enough_kv_cache_memory)."""
    blocks = requests * math.ceil(max_len / 16) + 1
    return hand_kv_bytes(layers, kv_heads, head_dim, tp, blocks * 16, kv_bytes)


def hand_params_qwen25_7b():
    vocab, hidden, inter, layers, heads, kv, hd = 152064, 3584, 18944, 28, 28, 4, 128
    attention = hidden * heads * hd + 2 * hidden * kv * hd + heads * hd * hidden + heads * hd + 2 * kv * hd
    mlp = 3 * hidden * inter
    return 2 * vocab * hidden + layers * (attention + mlp + 2 * hidden) + hidden


# --- hand arithmetic --------------------------------------------------------------------------


def test_kv_bytes_per_token_match_hand_arithmetic():
    qwen7 = from_catalog("Qwen/Qwen2.5-7B-Instruct")
    assert kv_bytes_per_token(qwen7, 2) == 2 * 28 * 4 * 128 * 2 == 57344
    assert kv_bytes_per_token(qwen7, 1) == 57344 // 2  # fp8 KV cache
    assert kv_bytes_per_token(qwen7, 2, tp=2) == 2 * 28 * 2 * 128 * 2  # heads split
    assert kv_bytes_per_token(qwen7, 2, tp=8) == 2 * 28 * 1 * 128 * 2  # 4 KV heads < 8 GPUs: replicated
    r1 = from_catalog("deepseek-ai/DeepSeek-R1")
    assert kv_bytes_per_token(r1, 2) == 61 * (512 + 64) * 2 == 70272
    assert kv_bytes_per_token(r1, 2, tp=8) == 70272  # MLA latent is not split by TP


def test_qwen25_7b_weights_are_param_count_times_two_bytes():
    assert from_catalog("Qwen/Qwen2.5-7B-Instruct").total_params == pytest.approx(hand_params_qwen25_7b(), rel=1e-4)
    chosen = plan(config("Qwen/Qwen2.5-7B-Instruct", maxModelLen=4096))
    assert chosen.tensor_parallel_size == 1
    assert chosen.memory.weights_gib * GIB == pytest.approx(2 * hand_params_qwen25_7b(), rel=WEIGHT_TOLERANCE)


# (model, maxModelLen, hand weight bytes from the architecture, (full-attention layers, KV heads,
#  head dim), sliding-window layers x window tokens)
GPT_OSS_120B_EXPERTS = 36 * 128 * 3 * 2880 * 2880
CATALOG_CASES = [
    ("Qwen/Qwen2.5-0.5B-Instruct", None, 0.494e9 * 2, (24, 2, 64), None),
    ("Qwen/Qwen2.5-7B-Instruct", None, 7.616e9 * 2, (28, 4, 128), None),
    ("Qwen/Qwen2.5-14B-Instruct", None, 14.77e9 * 2, (48, 8, 128), None),
    ("Qwen/Qwen2.5-32B-Instruct", None, 32.764e9 * 2, (64, 8, 128), None),
    ("Qwen/Qwen2.5-72B-Instruct", None, 72.706e9 * 2, (80, 8, 128), None),
    ("meta-llama/Llama-3.1-8B-Instruct", 8192, 8.03e9 * 2, (32, 8, 128), None),
    ("meta-llama/Llama-3.1-70B-Instruct", 16384, 70.554e9 * 2, (80, 8, 128), None),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", None, 46.703e9 * 2, (32, 8, 128), None),
    # mxfp4 experts at 4.25 bits in the layout of the GPU's kernels (gpt_oss_weights), rest 16-bit
    ("openai/gpt-oss-120b", None, "gpt-oss", (18, 8, 64), (18, 128)),
]


def gpt_oss_weights(compute_capability):
    """gpt-oss-120b as vLLM 0.33 holds it on one GPU: 16-bit rest + 36 x 128 experts x 3 matrices
    of hidden x intermediate at 4.25 bits. Hopper's Triton kernels keep 2880 x 2880; the Marlin
    and TRT-LLM kernels (Ampere/Ada, Blackwell) pad to 3072 x 2944. Plus 0.26 GiB measured at load."""
    hidden, inter = (2880, 2880) if 9.0 <= compute_capability < 10.0 else (3072, 2944)
    experts = 36 * 128 * 3 * hidden * inter
    return (116.829e9 - GPT_OSS_120B_EXPERTS) * 2 + experts * 4.25 / 8 + 0.26 * GIB


@pytest.mark.parametrize("model,max_len,weights,kv_arch,sliding", CATALOG_CASES, ids=[c[0] for c in CATALOG_CASES])
def test_catalog_model_gets_the_cheapest_instance_that_fits(model, max_len, weights, kv_arch, sliding):
    keys = {"maxModelLen": max_len} if max_len else {}
    cfg = config(model, **keys)
    spec = from_catalog(model)
    chosen = plan(cfg)

    expected = brute_force_cheapest(cfg, spec)
    assert chosen.instance.name == expected.instance.name
    assert chosen.hourly_price_usd == expected.instance.on_demand_usd_per_hour

    tp = chosen.tensor_parallel_size
    assert tp == chosen.instance.gpu_count or chosen.instance.gpu_count % tp == 0
    if weights == "gpt-oss":
        weights = gpt_oss_weights(chosen.instance.compute_capability)
    assert chosen.memory.weights_gib * GIB == pytest.approx(weights / tp, rel=WEIGHT_TOLERANCE)

    tokens = chosen.max_model_len * cfg.min_concurrent_sequences
    requests = cfg.min_concurrent_sequences
    blocks = math.ceil(chosen.max_model_len / 16)  # per request, full-attention layers
    block_bytes = hand_kv_bytes(*kv_arch, tp=tp, tokens=16)
    if sliding:
        # One group of full and one of sliding layers (18 each): a request holds the window - 1
        # plus two batches in flight (async scheduling), in whole blocks plus one.
        layers, window = sliding
        in_flight = 2 * chosen.max_num_batched_tokens
        blocks += math.ceil(min(window - 1 + in_flight, chosen.max_model_len) / 16) + 1
    kv = (requests * blocks + 1) * block_bytes
    assert chosen.memory.kv_cache_gib * GIB == pytest.approx(kv, rel=1e-9)

    assert chosen.memory.fits and chosen.memory.required_gib <= chosen.memory.budget_gib
    assert chosen.kv_cache_capacity_tokens >= tokens  # vLLM's startup check passes
    assert chosen.max_model_len == (max_len or min(spec.max_position_embeddings, 32768))


def test_gpt_oss_120b_lands_on_one_big_gpu():
    chosen = plan(config("openai/gpt-oss-120b"))
    assert chosen.instance.gpu_count == 1 and chosen.instance.cuda_memory_gib >= 79


# --- DeepSeek-R1 ------------------------------------------------------------------------------


def test_deepseek_r1_native_fp8_needs_eight_h200_class_gpus():
    cfg = config("deepseek-ai/DeepSeek-R1")
    spec = from_catalog("deepseek-ai/DeepSeek-R1")
    chosen = plan(cfg)
    assert chosen.instance.name == brute_force_cheapest(cfg, spec).instance.name
    assert chosen.tensor_parallel_size == 8 and chosen.instance.cuda_memory_gib > 80
    h100 = evaluate(cfg, spec, get("p5.48xlarge"))
    assert not h100.fits and "weights alone do not fit" in " ".join(h100.reasons)
    # fp8 weights: (671e9 - 16-bit embeddings/lm_head) x 1 B + those x 2 B, over 8 GPUs
    embed = 129280 * 7168
    hand = ((671e9 - 2 * embed) * 1 + 2 * embed * 2) / 8
    assert chosen.memory.weights_gib * GIB == pytest.approx(hand, rel=WEIGHT_TOLERANCE)


def deepseek_r1_16bit():
    """DeepSeek-R1 as a 16-bit checkpoint (a bf16 conversion has no quantization_config)."""
    return replace(from_catalog("deepseek-ai/DeepSeek-R1"), native_quantization=None, quant_bits=None)


def test_deepseek_r1_at_16bit_is_refused_on_every_h100_h200_b200_node():
    cfg = config("deepseek-ai/DeepSeek-R1")
    spec = deepseek_r1_16bit()
    for name in ("p5.48xlarge", "p5en.48xlarge", "p4de.24xlarge"):
        judged = evaluate(cfg, spec, get(name))
        assert not judged.fits, name
        assert "weights alone do not fit" in " ".join(judged.reasons), name
    # 1342 GB / 8 = 157.9 GiB per B200 fits its 164.7 GiB budget only without activations
    b200 = evaluate(cfg, spec, get("p6-b200.48xlarge"))
    assert "leave no room for the KV cache" in " ".join(b200.reasons)
    # 671e9 x 2 B = 1342 GB: only 8 x B300 (8 x 268.6 GiB) holds it on one node.
    fitting = {c.instance.name for c in candidates(cfg, spec=spec) if c.fits}
    assert fitting == {"p6-b300.48xlarge"}


def test_deepseek_r1_at_16bit_without_b300_is_refused_with_the_arithmetic_and_ways_out():
    cfg = config("deepseek-ai/DeepSeek-R1")
    spec = deepseek_r1_16bit()
    offered = {i.name for i in load_instances()} - {"p6-b300.48xlarge"}
    with pytest.raises(SizingError) as caught:
        plan(cfg, offered=offered, resolver=lambda *_: spec)
    message = str(caught.value)
    assert f"{671e9 * 2 / GIB:.1f} GiB" in message  # the weight arithmetic
    assert "70,272 bytes/token" in message  # the KV arithmetic
    assert "largest candidate in the region: p6-b200.48xlarge" in message and "no room for the KV cache" in message
    for way_out in ("quantiz", "maxModelLen", "minConcurrentSequences", "kvCacheDtype=fp8"):
        assert way_out in message
    # Across nodes: the cheapest is three 8 x A100 80GB nodes, what nodes=auto picks
    # (tests/sizing/test_pipeline.py has the arithmetic).
    assert "3 x p4de.24xlarge across nodes (pipeline parallel 3, tensor parallel 8 in each, $82.34/h" in message
    assert "set nodes to auto" in message


def test_deepseek_r1_with_a_16bit_dtype_is_refused_with_both_sizings():
    # dtype is the weight dtype per the config contract; vLLM keeps fp8 checkpoints in fp8.
    cfg = config("deepseek-ai/DeepSeek-R1", dtype="bfloat16", quantization="none")
    with pytest.raises(SizingError) as caught:
        plan(cfg)
    message = str(caught.value)
    assert "dtype=bfloat16 asks for 16-bit weights" in message
    assert f"{671e9 * 2 / GIB:.1f} GiB" in message and "no room for the KV cache" in message
    fp8_choice = plan(config("deepseek-ai/DeepSeek-R1"))
    assert "Set dtype to auto" in message and fp8_choice.instance.name in message
    # the same explicit dtype is fine where the weights really are 16-bit
    assert plan(config("Qwen/Qwen2.5-7B-Instruct", dtype="bfloat16")).dtype == "bfloat16"


# --- context length, dtype, TP ---------------------------------------------------------------


def test_long_context_pushes_the_model_to_a_bigger_instance():
    spec = from_catalog("meta-llama/Llama-3.1-8B-Instruct")
    short_cfg = config("meta-llama/Llama-3.1-8B-Instruct", maxModelLen=4096)
    long_cfg = config("meta-llama/Llama-3.1-8B-Instruct", maxModelLen=32768)
    short, long = plan(short_cfg), plan(long_cfg)
    assert short.instance.name == brute_force_cheapest(short_cfg, spec).instance.name
    assert long.instance.name == brute_force_cheapest(long_cfg, spec).instance.name
    assert long.hourly_price_usd > short.hourly_price_usd
    refused = evaluate(long_cfg, spec, short.instance)
    assert "the KV cache for the requested sequences (2 x 32768 tokens) does not fit" in " ".join(refused.reasons)
    assert long.memory.kv_cache_gib * GIB == hand_kv_for_requests(32, 8, 128, long.tensor_parallel_size, 32768, 2)


def test_t4_serves_float16_when_dtype_is_auto():
    cfg = config("Qwen/Qwen2.5-0.5B-Instruct", maxModelLen=4096)
    chosen = plan(cfg)
    assert chosen.instance.name == brute_force_cheapest(cfg, from_catalog("Qwen/Qwen2.5-0.5B-Instruct")).instance.name
    assert chosen.instance.gpu_model == "NVIDIA T4"
    assert chosen.dtype == "float16"
    assert any("no bfloat16" in note for note in chosen.notes)


def test_bfloat16_forced_on_t4_is_refused_with_the_reason():
    cfg = config("Qwen/Qwen2.5-0.5B-Instruct", maxModelLen=4096, dtype="bfloat16")
    spec = from_catalog("Qwen/Qwen2.5-0.5B-Instruct")
    t4 = evaluate(cfg, spec, get("g4dn.xlarge"))
    assert not t4.fits and "bfloat16 needs compute capability 8" in " ".join(t4.reasons)
    chosen = plan(cfg)
    assert chosen.dtype == "bfloat16" and chosen.instance.compute_capability >= 8.0
    assert chosen.instance.name == brute_force_cheapest(cfg, spec).instance.name
    with pytest.raises(SizingError, match="instanceType=g4dn.xlarge.*bfloat16"):
        plan(config("Qwen/Qwen2.5-0.5B-Instruct", dtype="bfloat16", instanceType="g4dn.xlarge"))


def test_tensor_parallel_size_that_does_not_divide_the_heads_is_refused():
    # Qwen2.5-0.5B has 14 attention heads: 4 does not divide them.
    cfg = config("Qwen/Qwen2.5-0.5B-Instruct", tensorParallelSize=4)
    assert all(not c.fits for c in candidates(cfg))
    with pytest.raises(SizingError) as caught:
        plan(cfg)
    assert "tensorParallelSize=4: tensor parallel 4 does not divide the model's 14 attention / 2 KV heads" in str(caught.value)
    assert "set tensorParallelSize to 1 or 2 or auto" in str(caught.value)  # the sizes that do


def test_auto_tp_uses_the_largest_size_that_divides_the_heads():
    cfg = config("Qwen/Qwen2.5-0.5B-Instruct")
    four_t4 = evaluate(cfg, from_catalog("Qwen/Qwen2.5-0.5B-Instruct"), get("g4dn.12xlarge"))
    assert four_t4.tensor_parallel_size == 2
    assert any("uses 2 of the 4 GPUs" in note for note in four_t4.notes)
    eight = evaluate(config("Qwen/Qwen2.5-72B-Instruct"), from_catalog("Qwen/Qwen2.5-72B-Instruct"), get("g6e.48xlarge"))
    assert eight.tensor_parallel_size == 8


def test_user_tensor_parallel_size_is_kept_in_the_plan():
    chosen = plan(config("Qwen/Qwen2.5-7B-Instruct", tensorParallelSize=2))
    assert chosen.tensor_parallel_size == 2 and chosen.instance.gpu_count >= 2


def test_max_model_len_beyond_the_context_needs_rope_scaling():
    with pytest.raises(SizingError, match="maxModelLen=131072.*ropeScaling"):
        plan(config("Qwen/Qwen2.5-7B-Instruct", maxModelLen=131072))
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert plan(config("Qwen/Qwen2.5-7B-Instruct", maxModelLen=131072, ropeScaling=yarn)).max_model_len == 131072


# --- quantization -----------------------------------------------------------------------------


def test_awq_model_from_a_local_config_is_sized_at_four_bits():
    cfg = config(str(AWQ_DIR))
    spec = resolve(str(AWQ_DIR))
    chosen = plan(cfg)
    assert chosen.instance.name == brute_force_cheapest(cfg, spec).instance.name
    # 4-bit body with an fp16 scale and a 4-bit zero per 128 weights; embeddings + lm_head 16-bit
    embeddings = 2 * 152064 * 3584
    body = hand_params_qwen25_7b() - embeddings
    hand = body * (0.5 + (2 + 0.5) / 128) + embeddings * 2
    assert chosen.memory.weights_gib * GIB == pytest.approx(hand, rel=WEIGHT_TOLERANCE)
    assert chosen.dtype == "float16"  # the AWQ checkpoint is float16
    assert chosen.quantization is None  # vLLM reads it from the checkpoint
    unquantized = plan(config("Qwen/Qwen2.5-7B-Instruct"))
    assert chosen.hourly_price_usd < unquantized.hourly_price_usd


def test_awq_requested_for_an_unquantized_checkpoint_is_refused():
    with pytest.raises(SizingError, match="quantization='awq' does not match.*set quantization to none"):
        plan(config("Qwen/Qwen2.5-7B-Instruct", quantization="awq"))


def test_online_fp8_halves_the_weights_and_runs_weight_only_below_ada():
    spec = from_catalog("meta-llama/Llama-3.1-70B-Instruct")
    cfg = config("meta-llama/Llama-3.1-70B-Instruct", quantization="fp8")
    chosen = plan(cfg)
    assert chosen.quantization == "fp8"
    assert chosen.instance.name == brute_force_cheapest(cfg, spec).instance.name
    embeddings = 2 * 128256 * 8192
    hand = ((70.554e9 - embeddings) * 1 + embeddings * 2) / chosen.tensor_parallel_size
    assert chosen.memory.weights_gib * GIB == pytest.approx(hand, rel=WEIGHT_TOLERANCE)
    # vLLM 0.33 runs fp8 from compute capability 7.5 (Fp8Config.get_min_capability), through
    # FP8 Marlin below Ada: the A100 is a candidate, with a note that says so.
    a100 = evaluate(cfg, spec, get("p4de.24xlarge"))
    assert a100.fits, a100.reasons
    assert any("weight-only (FP8 Marlin)" in note for note in a100.notes)
    assert not any("FP8 Marlin" in note for note in evaluate(cfg, spec, get("p5.48xlarge")).notes)


def test_fbgemm_fp8_needs_compute_capability_8():
    spec = from_catalog("meta-llama/Llama-3.1-405B-Instruct-FP8")
    cfg = config("meta-llama/Llama-3.1-405B-Instruct-FP8")
    assert evaluate(cfg, spec, get("p4de.24xlarge")).fits  # A100: 8.0, vLLM's minimum
    t4 = evaluate(cfg, spec, get("g4dn.metal"))
    assert "fbgemm_fp8 weights need compute capability 8+, NVIDIA T4 is 7.5" in " ".join(t4.reasons)


def test_fp8_kv_cache_halves_kv_on_the_gpus_that_store_it():
    cfg = config("Qwen/Qwen2.5-7B-Instruct", kvCacheDtype="fp8")
    chosen = plan(cfg)
    assert chosen.memory.kv_cache_gib * GIB == hand_kv_for_requests(28, 4, 128, chosen.tensor_parallel_size, 32768, 2, kv_bytes=1)
    # Below 8.9 only FlashInfer stores fp8 (8.0+, head size 128 here); the T4 (7.5) is left to
    # Triton attention, which refuses it (issue 27; sizing/vllm_rules.py fp8_kv_cache_refusal).
    small = config("Qwen/Qwen2.5-1.5B-Instruct", kvCacheDtype="fp8")
    spec = from_catalog("Qwen/Qwen2.5-1.5B-Instruct")
    t4 = evaluate(small, spec, get("g4dn.xlarge"))
    assert not t4.fits
    assert "kvCacheDtype=fp8 on NVIDIA T4: fp8 KV cache needs compute capability 8.9+" in " ".join(t4.reasons)
    assert evaluate(small, spec, get("g5.xlarge")).fits  # A10G, 8.6: FlashInfer
    assert plan(small).instance.compute_capability >= 8.0


# --- filters and the user's instance ----------------------------------------------------------


def test_max_hourly_price_excludes_and_the_error_names_what_would_fit():
    cheapest = plan(config("Qwen/Qwen2.5-7B-Instruct")).instance
    cfg = config("Qwen/Qwen2.5-7B-Instruct", maxHourlyPriceUsd=round(cheapest.on_demand_usd_per_hour - 0.01, 2))
    with pytest.raises(SizingError) as caught:
        plan(cfg)
    assert f"{cheapest.name} ($" in str(caught.value)
    assert "would fit but is excluded" in str(caught.value) and "maxHourlyPriceUsd" in str(caught.value)


def test_max_hourly_price_allows_instances_at_or_below_it():
    spec = from_catalog("Qwen/Qwen2.5-72B-Instruct")
    cfg = config("Qwen/Qwen2.5-72B-Instruct", maxHourlyPriceUsd=20)
    chosen = plan(cfg)
    assert chosen.hourly_price_usd <= 20
    assert chosen.instance.name == brute_force_cheapest(cfg, spec).instance.name


def test_offered_set_filters_instances():
    spec = from_catalog("Qwen/Qwen2.5-7B-Instruct")
    cfg = config("Qwen/Qwen2.5-7B-Instruct")
    unfiltered = plan(cfg).instance.name
    offered = {i.name for i in load_instances()} - {unfiltered}
    chosen = plan(cfg, offered=offered)
    assert chosen.instance.name != unfiltered
    assert chosen.instance.name == brute_force_cheapest(cfg, spec, offered=offered).instance.name
    skipped = next(c for c in candidates(cfg, offered=offered) if c.instance.name == unfiltered)
    assert skipped.reasons == ("not offered in the stack's region",)


def test_user_instance_that_fits_is_used_even_if_not_the_cheapest():
    chosen = plan(config("Qwen/Qwen2.5-7B-Instruct", instanceType="g6e.xlarge"))
    assert chosen.instance.name == "g6e.xlarge" and chosen.tensor_parallel_size == 1


def test_user_instance_too_small_is_explained_with_the_cheapest_that_fits():
    cfg = config("meta-llama/Llama-3.1-70B-Instruct", instanceType="g6.xlarge")
    spec = from_catalog("meta-llama/Llama-3.1-70B-Instruct")
    expected = brute_force_cheapest(cfg.model_copy(update={"instance_type": "auto"}), spec)
    with pytest.raises(SizingError) as caught:
        plan(cfg)
    message = str(caught.value)
    assert "instanceType=g6.xlarge cannot serve" in message and "weights alone do not fit" in message
    assert f"cheapest that fits is {expected.instance.name}" in message


def test_unknown_user_instance_type_is_named():
    with pytest.raises(SizingError, match="instanceType='m5.large'.*not an NVIDIA GPU instance type"):
        plan(config("Qwen/Qwen2.5-7B-Instruct", instanceType="m5.large"))


def test_spot_does_not_change_the_choice():
    on_demand = plan(config("Qwen/Qwen2.5-14B-Instruct"))
    spot = plan(config("Qwen/Qwen2.5-14B-Instruct", spot=True))
    assert spot.instance == on_demand.instance and spot.hourly_price_usd == on_demand.hourly_price_usd
    assert any("spot" in note for note in spot.notes)


# --- the catalog's unusable rows --------------------------------------------------------------


def test_unusable_instances_stay_listed_with_their_reason():
    judged = {c.instance.name: c for c in candidates(config("Qwen/Qwen2.5-0.5B-Instruct"))}
    assert "sm_70" in judged["p3.2xlarge"].reasons[0]
    assert "vGPU" in judged["g6f.xlarge"].reasons[0]
    assert "x86_64 hosts only" in judged["g5g.xlarge"].reasons[0]
    assert "no on-demand price" in judged["p5e.48xlarge"].reasons[0]
    assert [row.name for row in skipped_rows()] == ["p6e-gb200.36xlarge"]
    # every usable type is judged
    assert len(judged) == len(load_instances()) == 68


def test_candidates_are_cheapest_first():
    judged = candidates(config("Qwen/Qwen2.5-7B-Instruct"))
    prices = [c.price for c in judged if c.price is not None]
    assert prices == sorted(prices)
    assert all(c.price is None for c in judged[len(prices):])


# --- disk, report, outputs --------------------------------------------------------------------


def test_the_root_volume_holds_os_and_image_and_the_model_volume_the_weights():
    chosen = plan(config("Qwen/Qwen2.5-72B-Instruct"))
    weights_gb = 72.706e9 * 2 / 1e9  # 72.706B parameters in bfloat16
    assert chosen.weights_on_disk_gb == pytest.approx(weights_gb)
    # The model volume: weights + 10% headroom (here more than the 10 GB floor), in 10 GB steps.
    assert chosen.model_volume_gb == math.ceil(weights_gb * 1.1 / 10) * 10 == 160
    # The root volume does not grow with the model: OS 75 + image 30 + headroom 10 -> 120, plus
    # with monitoring (the default) 10 GiB of metrics at the 80% rule + 4 GB of images -> 140.
    bare = plan(config("Qwen/Qwen2.5-72B-Instruct", monitoring=False))
    assert bare.root_volume_gb == 120 == plan(config("Qwen/Qwen2.5-0.5B-Instruct", monitoring=False)).root_volume_gb
    monitoring = 10 * 2**30 / 1e9 / 0.80 + host.MONITORING_IMAGES_DISK_GB
    assert chosen.root_volume_gb == math.ceil((120 + monitoring) / 10) * 10 == 140
    small = plan(config("Qwen/Qwen2.5-0.5B-Instruct"))
    assert small.model_volume_gb == 20, "1 GB of weights + the 10 GB floor, rounded up"

    assert plan(config("Qwen/Qwen2.5-72B-Instruct", diskSizeGb=2000)).root_volume_gb == 2000
    assert plan(config("Qwen/Qwen2.5-72B-Instruct", modelVolumeSizeGb=500)).model_volume_gb == 500
    with pytest.raises(SizingError, match="diskSizeGb=100 is too small.*needs 140 GB"):
        plan(config("Qwen/Qwen2.5-72B-Instruct", diskSizeGb=100))
    with pytest.raises(SizingError, match="modelVolumeSizeGb=100 is too small.*needs 160 GB"):
        plan(config("Qwen/Qwen2.5-72B-Instruct", modelVolumeSizeGb=100))


def test_the_host_costs_its_instance_volumes_and_address_running_and_only_the_last_two_stopped():
    """By hand, the dev stack: g4dn.xlarge $0.526/h; 120 + 20 GB of gp3 at $0.08/GB-month over a
    730-hour month = $0.015342/h; one public IPv4 address $0.005/h."""
    cost = host_cost(0.526, 140)
    assert cost.stopped_usd_per_hour == pytest.approx(0.015342 + 0.005, abs=1e-6)
    assert cost.total_usd_per_hour == pytest.approx(0.526 + 0.020342, abs=1e-6)
    output = cost.to_output()
    assert output == {"runningPerHour": 0.5463, "stoppedPerHour": 0.0203,
                      "runningPerMonth": 398.83, "stoppedPerMonth": 14.85}
    assert host_cost(None, 140).to_output()["runningPerHour"] is None, "a type without a price"


def test_prometheus_retention_is_on_the_disk_and_off_it_without_monitoring():
    model = "Qwen/Qwen2.5-7B-Instruct"
    without = plan(config(model, monitoring=False)).root_volume_gb
    default = plan(config(model)).root_volume_gb
    bigger = plan(config(model, monitoringRetentionSizeGib=100)).root_volume_gb
    assert without < default < bigger
    # 100 GiB of retention over the 80% Prometheus asks for, plus the images, within one 10 GB step
    assert bigger - without > 100 * 2**30 / 1e9 / 0.80 + host.MONITORING_IMAGES_DISK_GB - 10
    with pytest.raises(SizingError, match="monitoring [0-9]+ GB.*monitoringRetentionSizeGib"):
        plan(config(model, diskSizeGb=without, monitoringRetentionSizeGib=50))
    assert any("holds 17 GB for monitoring (10 GiB of metrics" in n for n in plan(config(model)).notes)
    assert not any("monitoring" in n for n in plan(config(model, monitoring=False)).notes)


def test_a_fleets_replicas_keep_no_prometheus_disk_their_metrics_go_to_cloudwatch():
    """replicas >= 2: the CloudWatch agent sends the metrics away, so the root volume does not
    grow with monitoringRetentionSizeGib, and the report says where the metrics are."""
    model = "Qwen/Qwen2.5-7B-Instruct"
    without = plan(config(model, monitoring=False, replicas=3)).root_volume_gb
    fleet = plan(config(model, replicas=3))
    assert fleet.root_volume_gb == plan(config(model, replicas=3, monitoringRetentionSizeGib=500)).root_volume_gb
    assert fleet.root_volume_gb < plan(config(model)).root_volume_gb  # the single host's Prometheus
    base = host.VLLM_IMAGE_DISK_GB + host.HOST_OS_DISK_GB + host.ROOT_HEADROOM_GB
    assert without == math.ceil(base / 10) * 10
    assert fleet.root_volume_gb == math.ceil((base + host.CLOUDWATCH_AGENT_DISK_GB) / 10) * 10
    (note,) = [n for n in fleet.notes if "monitoring" in n or "CloudWatch" in n]
    assert "CloudWatch agent" in note and "kept in CloudWatch" in note and "GiB of metrics" not in note


def test_report_shows_the_choice_the_memory_arithmetic_and_the_price():
    chosen = plan(config("Qwen/Qwen2.5-7B-Instruct", maxModelLen=8192))
    report = format_report(chosen)
    assert chosen.instance.name in report
    assert f"weights {chosen.memory.weights_gib:.2f} GiB" in report
    assert f"budget {chosen.memory.budget_gib:.2f} GiB" in report
    assert f"${chosen.hourly_price_usd:.4g}/h" in report
    assert f"root volume {chosen.root_volume_gb} GB, model volume {chosen.model_volume_gb} GB" in report
    assert "cost: running $" in report and ", stopped $" in report
    output = json.loads(json.dumps(chosen.to_output()))
    assert output["instanceType"] == chosen.instance.name and output["maxModelLen"] == 8192


# --- CLI --------------------------------------------------------------------------------------


def test_cli_prints_the_fitting_candidates_cheapest_first(capsys):
    assert sizing_cli.main(["Qwen/Qwen2.5-7B-Instruct", "--max-model-len", "4096"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and get_or_none(line.split()[0])]
    assert rows, out
    first = rows[0]
    assert first[0] == plan(config("Qwen/Qwen2.5-7B-Instruct", maxModelLen=4096)).instance.name
    assert "yes" in first and all("yes" in row for row in rows)
    prices = [float(row[row.index("yes") - 1]) for row in rows]
    assert prices == sorted(prices)
    assert "sizing Qwen/Qwen2.5-7B-Instruct" in out


def get_or_none(name):
    try:
        return get(name)
    except ValueError:
        return None


def test_cli_all_lists_every_instance_with_why_not():
    result = subprocess.run(
        [sys.executable, "-m", "sizing", "meta-llama/Llama-3.1-70B-Instruct", "--all",
         "--quantization", "fp8", "--min-concurrent-sequences", "4", "--region", "eu-west-1"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    by_name = {line.split()[0]: line for line in lines if line.split() and get_or_none(line.split()[0])}
    assert len(by_name) == len(load_instances())
    assert "sm_70" in by_name["p3.2xlarge"] and " no " in by_name["g6.xlarge"]
    assert "weights alone do not fit" in by_name["g6.xlarge"]
    assert "offerings in eu-west-1 are not checked" in result.stdout


def test_cli_reports_config_errors_by_key(capsys):
    assert sizing_cli.main(["Qwen/Qwen2.5-7B-Instruct", "--dtype", "bf16"]) == 2
    assert "vllm-deploy:dtype='bf16' is not allowed" in capsys.readouterr().err
    assert sizing_cli.main(["Qwen/Qwen2.5-7B-Instruct", "--quantization", "gptq"]) == 1
    assert "does not match" in capsys.readouterr().err


def test_host_ram_must_hold_the_loader_and_one_worker_per_gpu():
    spec = from_catalog("Qwen/Qwen2.5-0.5B-Instruct")
    cfg = config("Qwen/Qwen2.5-0.5B-Instruct")
    roomy = evaluate(cfg, spec, get("g6.xlarge"))
    assert roomy.fits
    cramped = evaluate(cfg, spec, replace(get("g6.xlarge"), memory_gib=8.0))
    assert not cramped.fits and "host RAM 8 GiB" in " ".join(cramped.reasons)


def test_user_tensor_parallel_size_larger_than_the_gpu_count_is_refused():
    judged = evaluate(
        config("Qwen/Qwen2.5-7B-Instruct", tensorParallelSize=8),
        from_catalog("Qwen/Qwen2.5-7B-Instruct"),
        get("g6.12xlarge"),
    )
    assert "tensorParallelSize=8 needs 8 GPUs, g6.12xlarge has 4" in judged.reasons
