"""Sizing across nodes: vLLM 0.33's layer split, each stage's weights and KV cache, the choice of N
identical nodes and its price. The expected figures are worked out by hand from the catalog's
architecture numbers (sizing/catalog/models.csv), not read back from the code under test."""

from __future__ import annotations

from dataclasses import replace

import pytest

from config.validation import parse
from sizing.choice import candidates, evaluate, plan
from sizing.errors import SizingError
from sizing.gpus import get
from sizing.memory import GIB
from sizing.models import from_catalog
from sizing.pipeline import layer_partition
from sizing.report import format_report

LLAMA_405B = "meta-llama/Llama-3.1-405B-Instruct"
DEEPSEEK_R1 = "deepseek-ai/DeepSeek-R1"


def config(model: str, **keys):
    return parse({"model": model, **keys})


def deepseek_r1_16bit():
    """DeepSeek-R1 as a 16-bit checkpoint (a bf16 conversion has no quantization_config)."""
    return replace(from_catalog(DEEPSEEK_R1), native_quantization=None, quant_bits=None)


@pytest.mark.parametrize(
    "layers, stages, split",
    [
        (61, 2, [31, 30]),  # 61 // 2 = 30, the one left over goes to the stage before the last
        (126, 2, [63, 63]),
        (126, 4, [31, 32, 32, 31]),  # 2 left over: to stages -2 and -3 (the middle ones)
        (80, 3, [27, 27, 26]),  # 2 left over with 3 stages: stages -2 and -3 = 0 and 1
        (5, 4, [1, 1, 2, 1]),
        (32, 1, [32]),
    ],
)
def test_layers_are_split_the_way_vllm_get_pp_indices_splits_them(layers, stages, split):
    assert layer_partition(layers, stages) == split


def test_fewer_layers_than_stages_is_refused_naming_the_counts():
    with pytest.raises(SizingError, match="3 decoder layers, fewer than 4 pipeline stages"):
        layer_partition(3, 4)
    tiny = replace(from_catalog(LLAMA_405B), num_layers=3)
    judged = evaluate(config(LLAMA_405B, nodes=4), tiny, get("p5.48xlarge"), nodes=4)
    assert not judged.fits and "set nodes to 3 or fewer" in " ".join(judged.reasons)


def test_llama_405b_bf16_on_two_nodes_by_hand():
    cfg = config(LLAMA_405B, nodes=2)
    spec = from_catalog(LLAMA_405B)
    assert spec.total_params == 405_853_000_000 and spec.num_layers == 126
    p5 = evaluate(cfg, spec, get("p5.48xlarge"), nodes=2)
    # 126 layers -> 63 + 63; stage 0 adds the embedding, stage 1 the LM head, both
    # 128256 x 16384: each stage holds exactly half of the 405.853B params. At bf16 over TP 8:
    # 405.853e9 x 2 B / 2 / 8 = 50.73e9 B = 47.25 GiB per GPU (8 KV heads over 8 GPUs: nothing
    # replicated). On one node the same GPU would hold 94.5 GiB.
    assert p5.tensor_parallel_size == 8 and p5.stage_layers == (63, 63)
    assert p5.memory.weights_gib == pytest.approx(405.853e9 * 2 / 2 / 8 / GIB, abs=0.01)
    # KV: 1 KV head x 128 dims x K and V x 2 B = 512 B per token per layer, x 63 layers of the
    # stage = 32,256 B/token; two full 32768-token sequences = 1.97 GiB (a few blocks of
    # in-flight tokens on top).
    assert p5.memory.kv_cache_gib == pytest.approx(2 * 32768 * 63 * 512 / GIB, abs=0.05)
    assert p5.fits and p5.price == pytest.approx(2 * 55.04)
    # The cheapest two-node fit: 2 x p4de.24xlarge (8 x A100 80GB), 2 x $27.44705/h.
    chosen = plan(cfg, resolver=lambda *_: spec)
    assert (chosen.nodes, chosen.instance.name, chosen.pipeline_parallel_size) == (2, "p4de.24xlarge", 2)
    assert chosen.hourly_price_usd == pytest.approx(2 * 27.44705)
    assert chosen.hourly_price_usd_per_node == pytest.approx(27.44705)
    out = chosen.to_output()
    assert out["nodes"] == 2 and out["layersPerStage"] == [63, 63]
    report = format_report(chosen)
    assert "2 x p4de.24xlarge" in report and "pipeline parallel 2 (layers 63/63)" in report
    assert "$54.89/h in all ($27.45/h per node)" in report


def test_deepseek_r1_bf16_on_two_nodes_by_hand():
    cfg = config(DEEPSEEK_R1, nodes=2)
    spec = deepseek_r1_16bit()
    # 61 layers -> 31 + 30. The first 3 are dense, the other 58 MoE with 256 experts of
    # 3 x 7168 x 2048 params: 11,274,289,152 routed params per MoE layer.
    routed_layer = 256 * 3 * 7168 * 2048
    embed = 129280 * 7168  # embedding, and the (untied) LM head
    decoder = 671e9 - 2 * embed
    dense_share = (decoder - 58 * routed_layer) / 61  # per layer, all but the routed experts
    stage1_layers = 30 * (dense_share + routed_layer)  # layers 31..60: all MoE
    stage0_layers = 31 * dense_share + 28 * routed_layer
    assert stage0_layers + stage1_layers == pytest.approx(decoder)
    # Replicated per GPU at TP 8 (vLLM's DeepSeek model): q_a_proj + kv_a_proj_with_mqa,
    # 7168 x (1536 + 512 + 64) per layer, and the routers, 7168 x 256 per MoE layer, 2 B each,
    # 7/8 of them beyond an even split.
    replicated = (61 * 7168 * (1536 + 512 + 64) + 58 * 7168 * 256) * 2 * 7 / 8
    per_gpu_all = 671e9 * 2 / 8 + replicated  # one GPU's share of the whole model at TP 8
    head = embed * 2 / 8
    stage1 = (per_gpu_all - 2 * head) * stage1_layers / decoder + head  # the fuller stage
    h200 = evaluate(cfg, spec, get("p5en.48xlarge"), nodes=2)
    assert h200.stage_layers == (31, 30) and h200.tensor_parallel_size == 8
    assert h200.memory.weights_gib == pytest.approx(stage1 / GIB, abs=0.01)
    assert 81.5 < stage1 / GIB < 81.7
    # MLA caches one 512 + 64 latent per token and layer on every GPU: 1152 B x 30 layers.
    assert h200.memory.kv_cache_gib == pytest.approx(2 * 32768 * 30 * 1152 / GIB, abs=0.05)
    assert h200.fits and h200.price == pytest.approx(2 * 63.296)
    # 81.6 GiB of weights per GPU do not fit an H100's 0.92 x 79.2 GiB budget.
    h100 = evaluate(cfg, spec, get("p5.48xlarge"), nodes=2)
    assert not h100.fits and "the weights alone do not fit" in " ".join(h100.reasons)
    chosen = plan(cfg, resolver=lambda *_: spec)
    assert (chosen.nodes, chosen.instance.name) == (2, "p5en.48xlarge")
    assert chosen.hourly_price_usd == pytest.approx(126.592)


def test_nodes_auto_prefers_one_node_and_goes_across_nodes_only_when_none_fits():
    spec = deepseek_r1_16bit()
    one = plan(config(LLAMA_405B, nodes="auto"), resolver=lambda *_: from_catalog(LLAMA_405B))
    assert one.nodes == 1 and one.pipeline_parallel_size == 1
    without_b300 = {c.instance.name for c in candidates(config(DEEPSEEK_R1), spec=spec)} - {"p6-b300.48xlarge"}
    across = plan(config(DEEPSEEK_R1, nodes="auto"), offered=without_b300, resolver=lambda *_: spec)
    # The cheapest count wins: 3 x p4de.24xlarge ($82.34/h, 61 layers as 20/21/20, about 54 GiB
    # of weights per A100 80GB) undercuts 2 x p5en.48xlarge ($126.59/h).
    assert (across.nodes, across.instance.name, across.stage_layers) == (3, "p4de.24xlarge", (20, 21, 20))
    assert across.hourly_price_usd == pytest.approx(3 * 27.44705)
    # pipelineParallelSize fixes the count (61 layers: 15 each, the one left over to stage 2).
    four = plan(config(DEEPSEEK_R1, pipelineParallelSize=4, nodes="auto"), resolver=lambda *_: spec)
    assert four.nodes == 4 and four.stage_layers == (15, 15, 16, 15)


def test_the_price_cap_applies_to_all_the_nodes_together():
    spec = from_catalog(LLAMA_405B)
    with pytest.raises(SizingError) as caught:
        plan(config(LLAMA_405B, nodes=2, maxHourlyPriceUsd=50), resolver=lambda *_: spec)
    assert "$54.89/h for all nodes is above maxHourlyPriceUsd=50" in str(caught.value)




def test_the_cheaper_lines_of_a_plan_across_nodes_name_the_node_count():
    spec = from_catalog(LLAMA_405B)
    cfg = config(LLAMA_405B, nodes=2, maxModelLen=131072, minConcurrentSequences=8)
    chosen = plan(cfg, resolver=lambda *_: spec)
    # 8 sequences of 131072 tokens need 2 x g7e.48xlarge ($66.29/h); at 65536 tokens the
    # 2 x p4de.24xlarge of the default context hold them again.
    assert (chosen.nodes, chosen.instance.name) == (2, "g7e.48xlarge")
    # An fp8 KV cache (which vLLM 0.33 stores on the A100 too) holds them as well.
    assert chosen.cheaper == ("at maxModelLen 65536: 2 x p4de.24xlarge, $54.89/h",
                              "with kvCacheDtype fp8: 2 x p4de.24xlarge, $54.89/h")
