"""dtype per model type and GPU, the way vLLM 0.33 decides it at startup."""

from __future__ import annotations

import pytest

from config.validation import parse
from sizing.choice import candidates, evaluate, plan
from sizing.errors import SizingError
from sizing.gpus import get, load_instances, unsupported_reason
from sizing.models import catalog_models, from_catalog
from sizing.vllm_rules import FLOAT16_UNSUPPORTED, auto_dtype, supported_dtypes

T4, L4, A100 = 7.5, 8.9, 8.0

# (model_type, checkpoint dtype, compute capability) -> what vLLM 0.33's _resolve_auto_dtype
# returns, worked out by hand from vllm/config/model.py and vllm/platforms/cuda.py.
AUTO_CASES = [
    ("qwen2", "bfloat16", L4, "bfloat16"),
    ("qwen2", "bfloat16", T4, "float16"),  # no bf16 below 8.0: the first supported dtype
    ("qwen2", "float16", L4, "float16"),  # a float16 checkpoint stays float16
    ("qwen2", "float32", A100, "bfloat16"),  # float32 is downcast to the preferred dtype
    ("qwen2", "float32", T4, "float16"),
    ("gemma2", "bfloat16", L4, "bfloat16"),
    ("gemma2", "bfloat16", T4, "float32"),  # float16 refused and no bf16: float32
    ("gemma2", "float16", L4, "bfloat16"),  # a float16 checkpoint of a float16-refusing type
    ("gemma3_text", "float32", T4, "float32"),
    ("glm4", "bfloat16", T4, "float32"),
]


@pytest.mark.parametrize("model_type, checkpoint, cc, expected", AUTO_CASES)
def test_auto_dtype_resolves_as_vllm_does(model_type, checkpoint, cc, expected):
    assert auto_dtype(model_type, checkpoint, cc) == expected


def test_bfloat16_needs_ampere():
    assert "bfloat16" not in supported_dtypes(7.5)
    assert supported_dtypes(8.0)[0] == "bfloat16"


def test_the_float16_refusing_types_are_vllms_own_list():
    assert set(FLOAT16_UNSUPPORTED) == {"gemma2", "gemma3", "gemma3_text", "glm4"}


FLOAT16_REFUSING_MODELS = [m.model_id for m in catalog_models() if m.model_type in FLOAT16_UNSUPPORTED]


@pytest.mark.parametrize("model", FLOAT16_REFUSING_MODELS)
def test_models_that_refuse_float16_never_land_on_a_gpu_without_bfloat16(model):
    chosen = plan(parse({"model": model, "maxModelLen": 4096}))
    assert chosen.dtype == "bfloat16"
    assert chosen.instance.compute_capability >= 8.0
    for candidate in candidates(parse({"model": model, "maxModelLen": 4096})):
        if candidate.dtype is not None:
            assert candidate.dtype != "float16", (candidate.instance.name, candidate.dtype)


@pytest.mark.parametrize("model", ["google/gemma-2-2b-it", "google/gemma-3-1b-it"])
def test_t4_is_skipped_for_gemma_and_the_table_says_why(model):
    t4 = evaluate(parse({"model": model}), from_catalog(model), get("g4dn.xlarge"))
    assert not t4.fits
    why = " ".join(t4.reasons)
    assert "no bfloat16" in why and "refuses float16" in why and "float32" in why


@pytest.mark.parametrize("model", FLOAT16_REFUSING_MODELS)
def test_explicit_float16_on_those_models_is_refused_with_key_value_and_fix(model):
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": model, "dtype": "float16"}))
    message = str(caught.value)
    assert "vllm-deploy:dtype=float16" in message
    assert "_FLOAT16_NOT_SUPPORTED_MODELS" in message
    assert "pulumi config set dtype auto" in message
    # the fix works: auto serves it
    assert plan(parse({"model": model, "dtype": "auto", "maxModelLen": 4096})).dtype == "bfloat16"


def test_models_that_run_float16_still_use_the_t4_in_float16():
    chosen = plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 4096}))
    assert chosen.instance.gpu_model == "NVIDIA T4" and chosen.dtype == "float16"


def test_explicit_bfloat16_skips_gpus_without_it():
    cfg = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "dtype": "bfloat16"})
    for instance in load_instances():
        if unsupported_reason(instance):
            continue
        judged = evaluate(cfg, from_catalog("Qwen/Qwen2.5-1.5B-Instruct"), instance)
        if instance.compute_capability < 8.0:
            assert any("bfloat16 needs compute capability 8" in r for r in judged.reasons)
        else:
            assert judged.dtype == "bfloat16"
