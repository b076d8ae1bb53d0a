"""vLLM 0.33's fp8 KV cache rule below compute capability 8.9 (issue 27), as sizing applies it:
FlashInfer (8.0+, head sizes 64/128/256/512, no MLA, no sinks) or nothing. The conformance tier
(tests/conformance/test_vllm_conformance.py, kv-fp8-*) runs vLLM's own selection on it."""

from __future__ import annotations

import pytest

from config.validation import parse
from sizing.choice import evaluate, plan
from sizing.gpus import get
from sizing.models import from_catalog
from sizing.vllm_rules import fp8_kv_cache_refusal


@pytest.mark.parametrize(("gpu", "cc", "refused"), [
    ("T4", 7.5, True), ("A100", 8.0, False), ("A10G", 8.6, False), ("L4", 8.9, False),
    ("L40S", 8.9, False), ("H100", 9.0, False),
])
def test_a_128_wide_head_stores_fp8_from_sm80(gpu, cc, refused):
    assert (fp8_kv_cache_refusal(cc, 128, False, "qwen2") is not None) is refused, gpu


def test_below_sm89_flashinfer_alone_must_take_the_model():
    assert "head sizes are 64/128/256/512 (this model's is 96)" in fp8_kv_cache_refusal(8.6, 96, False, "phi3")
    assert "MLA" in fp8_kv_cache_refusal(8.0, 192, True, "deepseek_v3")
    assert "sinks" in fp8_kv_cache_refusal(8.0, 64, False, "gpt_oss")
    assert fp8_kv_cache_refusal(8.9, 96, True, "gpt_oss") is None


def test_the_cheaper_way_is_not_fp8_on_a_t4():
    """The report's cheaper line and the what-if never offer fp8 KV where vLLM refuses it."""
    settings = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "kvCacheDtype": "fp8"})
    chosen = plan(settings)
    assert chosen.instance.gpu_model != "NVIDIA T4"
    spec = from_catalog("Qwen/Qwen2.5-1.5B-Instruct")
    assert not evaluate(settings, spec, get("g4dn.xlarge")).fits


def test_prefill_context_parallel_needs_an_mla_model():
    """Found by the conformance tier once FlashInfer is judged by its own checks: vLLM 0.33 runs
    PCP only in MLA attention (MLAAttentionImpl.supports_pcp), so -pcp 2 on Qwen2.5 stops at
    model build with no attention backend."""
    from sizing.errors import SizingError

    settings = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "instanceType": "g6.12xlarge",
                      "vllmExtraArgs": ["-pcp", "2"]})
    with pytest.raises(SizingError, match="--prefill-context-parallel-size 2 needs an MLA model"):
        plan(settings)
