"""Refusals that used to give wrong advice: each names the key, the value, and a fix that works
(the fix is applied and sized here, not just read)."""

from __future__ import annotations

import pytest

from config.validation import parse
from sizing.choice import plan
from sizing.errors import SizingError
from sizing.gpus import load_instances


def config(model: str, **keys):
    return parse({"model": model, **keys})


def refusal(cfg, **kwargs) -> str:
    with pytest.raises(SizingError) as caught:
        plan(cfg, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize(
    ("method", "suggested"),
    [("gptq", "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"), ("awq", "Qwen/Qwen2.5-7B-Instruct-AWQ")],
)
def test_a_quantization_the_checkpoint_lacks_suggests_a_checkpoint_of_that_method(method, suggested):
    message = refusal(config("Qwen/Qwen2.5-7B-Instruct", quantization=method))
    assert f"vllm-deploy:quantization='{method}' does not match model Qwen/Qwen2.5-7B-Instruct" in message
    assert f"e.g. {suggested})" in message
    other = {"gptq": "AWQ", "awq": "GPTQ"}[method]
    assert other not in message  # the gptq error used to suggest an AWQ model
    # The suggested fix works: that checkpoint with that quantization sizes.
    assert plan(config(suggested, quantization=method)).quantization == method
    # And so does the other fix, quantization=none.
    assert plan(config("Qwen/Qwen2.5-7B-Instruct")).quantization is None


def test_a_tensor_parallel_size_that_divides_no_heads_lists_the_ones_that_do():
    # Qwen2.5-0.5B: 14 attention / 2 KV heads; 1 and 2 divide them, 4 and 8 do not.
    message = refusal(config("Qwen/Qwen2.5-0.5B-Instruct", tensorParallelSize=4))
    assert "tensorParallelSize=4: tensor parallel 4 does not divide the model's 14 attention / 2 KV heads" in message
    assert "tensorParallelSize=auto, or one of 1, 2: the sizes that divide" in message
    for fix in (2, "auto"):
        assert plan(config("Qwen/Qwen2.5-0.5B-Instruct", tensorParallelSize=fix))


def test_an_fp8_checkpoint_is_not_told_to_try_fp8():
    """DeepSeek-R1 is fp8 already; in a region with no GPU larger than an H100 it fits nowhere."""
    offered = {i.name for i in load_instances() if i.cuda_memory_gib < 100}
    message = refusal(config("deepseek-ai/DeepSeek-R1"), offered=offered)
    assert "as fp8 = " in message
    assert "or quantization=fp8 (1/2" not in message
    assert "already fp8, so quantization=fp8 would save nothing" in message
    assert "a 4-bit AWQ/GPTQ checkpoint (about half of these fp8 weights" in message
    # A 16-bit model is still offered both.
    qwen = refusal(config("Qwen/Qwen2.5-72B-Instruct", maxModelLen=32768), offered={"g6.xlarge"})
    assert "or quantization=fp8 (1/2" in qwen and "e.g. model=Qwen/Qwen2.5-72B-Instruct-AWQ" in qwen


def test_a_set_fp8_kv_cache_is_not_suggested_again():
    offered = {"g4dn.xlarge"}
    asked = refusal(config("Qwen/Qwen2.5-14B-Instruct", kvCacheDtype="fp8"), offered=offered)
    assert "kvCacheDtype=fp8 (halves" not in asked
    default = refusal(config("Qwen/Qwen2.5-14B-Instruct"), offered=offered)
    assert "kvCacheDtype=fp8 (halves" in default


def test_the_largest_candidate_shown_is_one_the_region_offers():
    # 32 full 160k-token sequences of MLA cache (held whole on every GPU) fit on no instance at all,
    # so larger instances outside the region fail on their own merits too.
    cfg = config("deepseek-ai/DeepSeek-R1", maxModelLen=163840, minConcurrentSequences=32)
    offered = {i.name for i in load_instances() if i.cuda_memory_gib < 100}
    message = refusal(cfg, offered=offered)
    largest = message.split("largest candidate in the region: ", 1)[1].split(" ", 1)[0]
    assert largest in offered  # it used to be p6-b300.48xlarge, which the region does not offer
    most = max((i for i in load_instances() if i.name in offered and i.gpu_count),
               key=lambda i: i.total_cuda_memory_gib)
    assert largest == most.name


def test_idle_stop_on_a_plan_across_nodes_is_refused_and_the_fix_sizes():
    """The idle watcher powers off the host it runs on: across nodes the workers would go on
    billing behind a stopped head."""
    large = dict(model="meta-llama/Llama-3.1-405B-Instruct", nodes=2, maxModelLen=16384)
    message = refusal(parse({**large, "idleStopMinutes": 30}))
    assert "vllm-deploy:idleStopMinutes=30 stops one host" in message
    assert "runs on 2 x " in message and "idle stop works on one node only" in message
    # Without idle stop the same stack sizes across the two nodes.
    assert plan(parse(large)).nodes == 2
    # One node keeps idle stop.
    assert plan(config("Qwen/Qwen2.5-1.5B-Instruct", idleStopMinutes=30)).nodes == 1
