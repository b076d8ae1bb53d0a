"""Each memory term against hand arithmetic from the architecture numbers and vLLM 0.33's rules.

The constants come from sizing/catalog/memory-calibration.csv; the arithmetic here restates what
each term means (docs/sizing-accuracy.md), so a term computed differently fails here.
"""

from __future__ import annotations

import math

import pytest

from sizing import calibration
from sizing.formats import WeightFormat
from sizing.memory import (
    GIB,
    activation_bytes,
    budget_bytes,
    capture_sizes,
    cuda_graph_bytes,
    forward_peak_bytes,
    non_torch_bytes,
    profile_tokens,
    sampler_peak_bytes,
    weights_per_gpu_bytes,
)
from sizing.models import from_catalog

QWEN7 = from_catalog("Qwen/Qwen2.5-7B-Instruct")  # hidden 3584, intermediate 18944, vocab 152064, 28 layers
GPT_OSS_20B = from_catalog("openai/gpt-oss-20b")  # 24 layers x 32 experts, hidden = intermediate = 2880
C = calibration.value


def test_budget_is_the_ceiling_of_utilization_times_the_cuda_total():
    """vllm/v1/worker/utils.py request_memory: ceil(total x utilization), in bytes."""
    assert budget_bytes(21.95, 0.92) == math.ceil(21.95 * GIB * 0.92)
    assert budget_bytes(79.19, 0.95) / GIB == pytest.approx(75.23, abs=0.005)  # as the H100 logs print


def test_non_torch_is_one_constant_per_gpu_and_another_with_tensor_parallelism():
    assert non_torch_bytes(1) == C("non_torch_one_gpu") * GIB
    assert non_torch_bytes(2) == non_torch_bytes(8) == C("non_torch_tensor_parallel") * GIB
    assert non_torch_bytes(2) > non_torch_bytes(1)


def test_forward_peak_is_the_widest_mlp_per_token_times_the_batch():
    """Qwen2.5-7B, 2048 tokens, TP 1: (3 x 18944 + 4 x 3584) x 2 B x 2048; TP 2 halves the MLP."""
    per_token = (C("forward_mlp_copies") * 18944 + C("forward_hidden_copies") * 3584) * 2
    assert forward_peak_bytes(QWEN7, 1, 2048) == pytest.approx(2048 * per_token)
    per_token_tp2 = (C("forward_mlp_copies") * 18944 / 2 + C("forward_hidden_copies") * 3584) * 2
    assert forward_peak_bytes(QWEN7, 2, 2048) == pytest.approx(2048 * per_token_tp2)


def test_moe_forward_peak_counts_every_routed_copy():
    """gpt-oss-20b: top-4 routed copies of (3 x 2880 + 2 x 2880) plus 4 x 2880 hidden, 2 B each."""
    per_token = (4 * (C("forward_mlp_copies") * 2880 + C("moe_hidden_copies") * 2880)
                 + C("forward_hidden_copies") * 2880) * 2
    assert forward_peak_bytes(GPT_OSS_20B, 1, 8192) == pytest.approx(8192 * per_token)


def test_sampler_peak_is_rows_times_the_full_vocabulary_on_every_tp_rank():
    rows = 256
    expected = rows * (152064 * C("sampler_bytes_per_logit", "0.33") + 3584 * 2)
    assert sampler_peak_bytes(QWEN7, rows) == pytest.approx(expected)


def test_activation_is_the_larger_of_forward_and_sampler_plus_the_floor():
    # L4 defaults: 2048 batched tokens, 256 sequences -> 256 sampler rows
    forward, sampler = forward_peak_bytes(QWEN7, 1, 2048), sampler_peak_bytes(QWEN7, 256)
    assert activation_bytes(QWEN7, 1, 2048, 256) == pytest.approx(
        max(forward, sampler) + C("activation_floor") * GIB
    )
    # a 32-sequence cap shrinks the sampler below the forward pass, which then decides
    assert activation_bytes(QWEN7, 1, 2048, 32) == pytest.approx(forward + C("activation_floor") * GIB)


def test_activation_does_not_grow_with_the_context_in_vllm_033():
    """Chunked prefill caps the profile batch at max_num_batched_tokens (the V0 engine profiled a
    whole max_model_len prompt below 32k tokens)."""
    assert profile_tokens(2048, 131072) == profile_tokens(2048, 4096) == 2048
    v0 = calibration.accounting("v0")
    assert profile_tokens(2048, 20000, v0) == 20000
    assert profile_tokens(512, 35000, v0) == 512


def test_capture_sizes_follow_vllm_defaults():
    """1, 2, 4, 8..248 step 8, 256..max step 16, max = min(2 x max_num_seqs, 512; 1024 on B200)."""
    assert capture_sizes(256) == 3 + 31 + 17 == 51
    assert capture_sizes(1024, 10.0) == 3 + 31 + 49
    assert capture_sizes(8) == len([1, 2, 4, 8, 16])


def test_cuda_graphs_grow_with_layers_and_capture_sizes():
    expected = C("cuda_graph_base") + C("cuda_graph_per_layer") * 28
    assert cuda_graph_bytes(QWEN7, 256) == pytest.approx(expected * GIB)
    fewer = C("cuda_graph_base") + C("cuda_graph_per_layer") * 28 * 5 / 51
    assert cuda_graph_bytes(QWEN7, 8) == pytest.approx(fewer * GIB)
    oss = (C("cuda_graph_base") + (C("cuda_graph_per_layer") + C("cuda_graph_per_moe_layer")) * 24
           + C("cuda_graph_gpt_oss_extra"))
    assert cuda_graph_bytes(GPT_OSS_20B, 256) == pytest.approx(oss * GIB)


def test_mxfp4_experts_are_held_at_4_25_bits_in_vllm_033():
    """gpt-oss-20b, TP 1: the 16-bit rest (20.915e9 - 24 x 32 x 3 x 2880^2 params) x 2 B, experts
    at 4.25 bits (E2M1 + an E8M0 scale per 32), plus the measured load-time extra."""
    experts = 24 * 32 * 3 * 2880 * 2880
    rest = (GPT_OSS_20B.total_params - experts) * 2
    fmt = WeightFormat("mxfp4", 4.25)
    expected = rest + experts * 4.25 / 8 + C("mxfp4_load_extra") * GIB
    assert weights_per_gpu_bytes(GPT_OSS_20B, fmt, 1) == pytest.approx(expected)


def test_mxfp4_layout_follows_the_gpus_kernels():
    """Marlin (Ampere/Ada, consumer Blackwell) and TRT-LLM (B200) pad hidden to 256 and the
    intermediate to 128: 2880 x 2880 -> 3072 x 2944 per expert matrix, 9 % more than Hopper's."""
    fmt = WeightFormat("mxfp4", 4.25)
    hopper = weights_per_gpu_bytes(GPT_OSS_20B, fmt, 1, compute_capability=9.0)
    for cc in (8.0, 8.9, 10.0, 12.0):
        padded = weights_per_gpu_bytes(GPT_OSS_20B, fmt, 1, compute_capability=cc)
        assert padded - hopper == pytest.approx(24 * 32 * 3 * (3072 * 2944 - 2880 * 2880) * 4.25 / 8)


def test_mxfp4_before_024_kept_a_scale_copy_and_tp_pads_the_intermediate_to_64():
    fmt = WeightFormat("mxfp4", 4.25)
    v1 = calibration.accounting("v1")
    experts = 24 * 32 * 3 * 2880 * 2880
    gap = weights_per_gpu_bytes(GPT_OSS_20B, fmt, 1, v1) - weights_per_gpu_bytes(GPT_OSS_20B, fmt, 1)
    assert gap == pytest.approx(experts * 0.25 / 8)
    # TP 2: 2880 / 2 = 1440 rounded up to 1472 per GPU
    tp2_experts = 24 * 32 * 3 * 2880 * 1472 * 4.25 / 8
    tp2_rest = (GPT_OSS_20B.total_params - experts) * 2 / 2
    router = 24 * 2880 * 32 * 2 / 2  # replicated, not split
    expected = tp2_rest + tp2_experts + router + C("mxfp4_load_extra") * GIB
    assert weights_per_gpu_bytes(GPT_OSS_20B, fmt, 2) == pytest.approx(expected)


def test_sixteen_bit_weights_are_two_bytes_a_parameter_split_by_tp():
    fmt = WeightFormat(None)
    assert weights_per_gpu_bytes(QWEN7, fmt, 1) == pytest.approx(7.616e9 * 2, rel=1e-3)
    assert weights_per_gpu_bytes(QWEN7, fmt, 2) == pytest.approx(7.616e9, rel=1e-3)


def test_every_constant_names_what_it_was_fitted_on_or_its_source():
    for constant in calibration.constants():
        assert constant.source, constant.name
        assert constant.accounting in calibration.ACCOUNTINGS + ("all",), constant.name


def test_vllm_releases_map_to_their_accounting():
    assert calibration.accounting_for_version("0.33.0") == "0.33"
    assert calibration.accounting_for_version("0.25.1") == "0.33"  # the V2 runner, graphs in the budget
    assert calibration.accounting_for_version("0.21.0") == "v1-cg"
    assert calibration.accounting("v1-cg").cuda_graphs_in_budget
    assert calibration.accounting_for_version("0.19.0") == "v1"
    assert calibration.accounting_for_version("0.11") == "v1-early"
    assert calibration.accounting_for_version("0.6") == "v0"
    assert calibration.ACCOUNTING_033.cuda_graphs_in_budget
    assert not calibration.accounting("v1").cuda_graphs_in_budget
