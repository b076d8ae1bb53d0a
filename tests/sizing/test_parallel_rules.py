"""Tensor parallel sizes a quantized checkpoint can be split into, data parallel, expert parallel,
and the memory share vLLM 0.33 can claim at startup."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from config.validation import parse
from sizing.choice import evaluate, plan
from sizing.errors import SizingError
from sizing.formats import WeightFormat
from sizing.gpus import get, load_instances, unsupported_reason
from sizing.hf_config import spec_from_config
from sizing.models import from_catalog
from sizing.quant_shapes import shard_problem
from sizing.startup_memory import cuda_total_gib, max_gpu_memory_utilization, pre_snapshot_gib

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
AWQ14 = "Qwen/Qwen2.5-14B-Instruct-AWQ"


def awq(model: str, group: int = 128, **changes):
    """A catalog model as its AWQ 4-bit checkpoint (the architecture numbers are the same)."""
    base = from_catalog(model.removesuffix("-AWQ"))
    return replace(base, model_id=model, native_quantization="awq", quant_bits=4.0,
                   quant_group_size=group, checkpoint_bytes=None, **changes)


def hand_aligned(inputs: int, tp: int, group: int) -> bool:
    return (inputs // tp) % group == 0


# --- quantization groups across tensor-parallel shards --------------------------------------------


def test_qwen25_14b_awq_on_eight_gpus_gets_tp4_and_the_table_says_why():
    spec = awq(AWQ14)
    assert not hand_aligned(13824, 8, 128) and hand_aligned(13824, 4, 128)  # down_proj inputs
    judged = evaluate(parse({"model": AWQ14}), spec, get("g5.48xlarge"))
    assert judged.tensor_parallel_size == 4
    note = " ".join(judged.notes)
    assert "down_proj" in note and "1728" in note and "group size 128" in note


def test_tp8_asked_for_on_qwen25_14b_awq_is_refused_with_the_sizes_that_work():
    judged = evaluate(parse({"model": AWQ14, "tensorParallelSize": 8}), awq(AWQ14), get("g5.48xlarge"))
    why = " ".join(judged.reasons)
    assert "tensorParallelSize=8" in why and "13824" in why
    assert "set tensorParallelSize to 1 or 2 or 4 or auto" in why


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-14B-Instruct",
                                   "Qwen/Qwen2.5-32B-Instruct", "Qwen/Qwen2.5-72B-Instruct"])
def test_awq_split_is_allowed_exactly_when_every_row_parallel_shard_holds_whole_groups(model, tp):
    spec = awq(model + "-AWQ")
    fmt = WeightFormat("awq", 4.0, 128)
    expected = all(
        hand_aligned(inputs, tp, 128)
        for inputs in (spec.intermediate_size, spec.num_attention_heads * spec.head_dim)
    )
    assert (shard_problem(spec, fmt, tp, 8.6, False) is None) == expected


def test_column_parallel_outputs_must_pack_outside_marlin():
    # 40 heads x 4 = 160 attention channels: 20 per GPU at TP 8, not a multiple of 8 int4 values
    tiny = replace(awq(AWQ14), num_attention_heads=40, num_kv_heads=8, head_dim=4, intermediate_size=2048)
    odd_group = WeightFormat("awq", 4.0, 256)  # not a Marlin group size: AWQ's Triton path
    assert "outputs" in shard_problem(tiny, odd_group, 8, 8.6, False)
    assert shard_problem(tiny, odd_group, 4, 8.6, False) is None  # 40 per GPU packs


def test_gptq_with_a_group_marlin_cannot_take_is_refused_on_every_gpu():
    spec = replace(awq(AWQ14), native_quantization="gptq")
    problem = shard_problem(spec, WeightFormat("gptq", 4.0, 256), 1, 9.0, False)
    assert problem and "Marlin" in problem


def test_moe_expert_shards_must_hold_whole_groups_or_a_32_wide_one():
    moe = replace(from_catalog("Qwen/Qwen3-30B-A3B"), native_quantization="awq", quant_bits=4.0,
                  quant_group_size=128)
    fmt = WeightFormat("awq", 4.0, 128)
    assert shard_problem(moe, fmt, 4, 8.9, False) is None  # 768/4 = 192: WNA16 with group 64
    odd = replace(moe, moe_intermediate_size=8 * 40)  # 320/8 = 40: no group of 32+ divides it
    assert "expert intermediate" in shard_problem(odd, fmt, 8, 8.9, False)
    assert shard_problem(odd, fmt, 8, 8.9, True) is None  # expert parallel: experts not split


def test_fp8_block_checkpoints_split_on_block_boundaries():
    config = json.loads((FIXTURES / "deepseek-v3" / "config.json").read_text())
    spec = spec_from_config(config, "deepseek-ai/DeepSeek-V3", source="local")
    fmt = WeightFormat("fp8", 8.0, None)
    assert shard_problem(spec, fmt, 8, 9.0, False) is None
    bad = replace(spec, moe_intermediate_size=2048 + 64)
    assert "fp8 block" in shard_problem(bad, fmt, 8, 9.0, False)


# --- data parallel and expert parallel from vllmExtraArgs ----------------------------------------


def test_data_parallel_two_on_a_one_gpu_host_is_refused():
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "instanceType": "g4dn.xlarge",
                    "vllmExtraArgs": ["--data-parallel-size", "2"]}))
    message = str(caught.value)
    assert "vllm-deploy:vllmExtraArgs --data-parallel-size 2" in message and "g4dn.xlarge has 1" in message


def test_data_parallel_with_auto_picks_a_host_with_enough_gpus():
    chosen = plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "vllmExtraArgs": ["-dp", "2"]}))
    assert chosen.data_parallel_size == 2
    assert chosen.tensor_parallel_size * 2 <= chosen.instance.gpu_count


def test_expert_parallel_on_a_dense_model_is_refused():
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "vllmExtraArgs": ["--enable-expert-parallel"]}))
    message = str(caught.value)
    assert "vllm-deploy:vllmExtraArgs" in message and "--enable-expert-parallel" in message
    assert "remove --enable-expert-parallel" in message


def test_expert_parallel_on_a_moe_model_is_accepted():
    plan(parse({"model": "Qwen/Qwen3-30B-A3B", "vllmExtraArgs": ["-ep"], "maxModelLen": 8192}))


# --- the memory share vLLM can claim at startup ----------------------------------------------------


def usable():
    return [i for i in load_instances() if not unsupported_reason(i)]


@pytest.mark.parametrize("tp", [1, 2])
def test_bound_is_what_is_free_at_vllms_snapshot(tp):
    for instance in usable():
        total = cuda_total_gib(instance)
        bound = max_gpu_memory_utilization(instance, tp)
        assert bound * total <= total - pre_snapshot_gib(tp) + 1e-9  # vLLM's request fits
        assert (bound + 0.001) * total > total - pre_snapshot_gib(tp) - 0.001 * total  # and is tight


def test_the_default_share_is_granted_on_every_gpu():
    cfg = parse({"model": "Qwen/Qwen2.5-0.5B-Instruct"})
    for instance in usable():
        judged = evaluate(cfg, from_catalog("Qwen/Qwen2.5-0.5B-Instruct"), instance)
        assert not any("gpuMemoryUtilization" in r for r in judged.reasons), instance.name


def test_099_on_a_t4_is_refused_with_the_bound_and_the_fix_works():
    cfg = parse({"model": "Qwen/Qwen2.5-0.5B-Instruct", "gpuMemoryUtilization": 0.99,
                 "instanceType": "g4dn.xlarge"})
    with pytest.raises(SizingError) as caught:
        plan(cfg)
    message = str(caught.value)
    bound = max_gpu_memory_utilization(get("g4dn.xlarge"), 1)
    assert "vllm-deploy:gpuMemoryUtilization=0.99" in message
    assert f"pulumi config set gpuMemoryUtilization {bound:g}" in message
    fixed = cfg.model_copy(update={"gpu_memory_utilization": bound})
    assert plan(fixed).instance.name == "g4dn.xlarge"


def test_a_share_that_rules_out_cheaper_gpus_is_said_in_the_plan():
    chosen = plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "gpuMemoryUtilization": 0.99}))
    assert chosen.notes[0].startswith("gpuMemoryUtilization=0.99 rules out cheaper g4dn.xlarge")
    default = plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct"}))
    assert not any(n.startswith("gpuMemoryUtilization") for n in default.notes)


# --- decode context parallelism -------------------------------------------------------------------


def _dcp(dcp: int, pcp: int = 1):
    from sizing.engine_args import engine_options

    return engine_options(["--decode-context-parallel-size", str(dcp), "-pcp", str(pcp)])


@pytest.mark.parametrize("tp, expected", [
    (1, "tensor parallel 1 is not a multiple of --decode-context-parallel-size 2"),
    (4, "tensor parallel 4 is not above the model's 4 KV heads"),
])
def test_decode_context_parallel_needs_tp_ranks_above_the_kv_heads(tp, expected):
    # vLLM 0.33 refuses both (config/parallel.py, config/model.py); conformance cases xa-dcp-*.
    from sizing.parallel import tp_problem

    spec = from_catalog("Qwen/Qwen2.5-7B-Instruct")  # 28 heads, 4 KV heads
    assert expected in tp_problem(spec, tp, WeightFormat(None), 8.9, _dcp(2))


def test_decode_context_parallel_limits_per_kv_head():
    from sizing.parallel import tp_problem

    spec = replace(from_catalog("Qwen/Qwen2.5-7B-Instruct"), num_kv_heads=2, num_attention_heads=28)
    assert tp_problem(spec, 4, WeightFormat(None), 8.9, _dcp(2)) is None  # 4 // 2 = 2, 14 % 2 == 0
    assert "above tensor parallel 4 // 2 KV heads = 2" in tp_problem(spec, 4, WeightFormat(None), 8.9, _dcp(4))


def test_decode_context_parallel_with_prefill_context_parallel_spans_it():
    from sizing.parallel import tp_problem

    spec = from_catalog("deepseek-ai/DeepSeek-V3")  # MLA: no KV-head rule
    assert tp_problem(spec, 4, WeightFormat(None), 9.0, _dcp(8)) is not None
    assert tp_problem(spec, 8, WeightFormat(None), 9.0, _dcp(8)) is None
    assert tp_problem(spec, 4, WeightFormat(None), 9.0, _dcp(2, pcp=2)) is None
    assert "must be 2 or 8" in tp_problem(spec, 4, WeightFormat(None), 9.0, _dcp(4, pcp=2))


def test_decode_context_parallel_that_no_tp_size_serves_is_refused_before_any_instance():
    with pytest.raises(SizingError, match="decode-context-parallel-size 2"):
        plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "vllmExtraArgs": ["-dcp", "2"]}))
