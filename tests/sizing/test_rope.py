"""RoPE: the context length vLLM 0.33 derives, and the override that carries ropeScaling."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from config.validation import parse
from sizing.choice import plan
from sizing.context import model_context_limit
from sizing.errors import SizingError
from sizing.hf_config import spec_from_config
from sizing.models import catalog_models, from_catalog
from sizing.rope import rope_override
from sizing.vllm_rules import derived_max_len, vllm_context_limit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
YARN4 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def limit(model: str, **keys) -> int:
    return model_context_limit(from_catalog(model), parse({"model": model, **keys}))


# --- what vLLM derives ---------------------------------------------------------------------------

# (max_position_embeddings, model_type, rope parameters) -> vLLM 0.33's derived max_model_len,
# by hand from vllm/config/model.py _get_and_verify_max_len.
DERIVED = [
    (32768, "qwen2", [], 32768),
    (32768, "qwen2", [{"rope_type": "default"}], 32768),
    (32768, "qwen2", [{"rope_type": "linear", "factor": 2.0}], 65536),
    (32768, "qwen2", [{"rope_type": "dynamic", "factor": 3.0}], 98304),
    (32768, "qwen2", [{"rope_type": "ntk", "factor": 2.0}], 65536),
    (32768, "qwen2", [{"rope_type": "yarn", "factor": 4.0}], 32768),  # yarn: not multiplied
    (4096, "phi3", [{"rope_type": "longrope", "factor": 32.0}], 4096),
    (131072, "llama", [{"rope_type": "llama3", "factor": 8.0}], 131072),
    (163840, "deepseek_v3", [{"rope_type": "deepseek_yarn", "factor": 40}], 163840),
    (131072, "gemma3", [{"rope_type": "linear", "factor": 8.0}], 131072),  # gemma3: skipped
    (32768, "gemma3_text", [{"rope_type": "linear", "factor": 8.0}], 32768),
    # the last multiplying factor wins, as in vLLM's loop over layer types
    (8192, "x", [{"rope_type": "linear", "factor": 2.0}, {"rope_type": "linear", "factor": 4.0}], 32768),
]


@pytest.mark.parametrize("max_pos, model_type, rope, expected", DERIVED)
def test_context_limit_matches_vllms_derivation(max_pos, model_type, rope, expected):
    assert vllm_context_limit(max_pos, model_type, rope) == expected


def test_derived_length_takes_the_smallest_key_and_model_max_length_wins():
    assert derived_max_len({"max_position_embeddings": 8192, "seq_length": 4096}) == 4096
    assert derived_max_len({"max_position_embeddings": 8192, "model_max_length": 16384}) == 16384
    assert derived_max_len({"n_positions": 1024}) == 1024
    assert derived_max_len({}) == 2048  # vLLM's assumption when no key is present


@pytest.mark.parametrize("model", [m.model_id for m in catalog_models()])
def test_catalog_models_without_ropescaling_serve_their_own_length(model):
    spec = from_catalog(model)
    assert limit(model) == spec.max_position_embeddings  # no catalog model multiplies


def test_every_catalog_model_has_its_rope_facts():
    import csv

    from sizing.models import ROPE_CSV

    with ROPE_CSV.open(newline="") as handle:
        rows = {row["hf_id"]: row for row in csv.DictReader(handle)}
    missing = [m.model_id for m in catalog_models() if m.model_id not in rows]
    assert missing == []
    unknown = [hf_id for hf_id, row in rows.items() if not row["rope_theta"]]
    assert all(not rows[hf_id]["verified_by"] for hf_id in unknown)  # unknown says so


# --- ropeScaling ---------------------------------------------------------------------------------


def test_readme_example_unlocks_four_times_the_context_without_rope_theta():
    assert limit(QWEN, ropeScaling=YARN4) == 131072
    override = rope_override(from_catalog(QWEN), parse({"model": QWEN, "ropeScaling": YARN4}))
    assert override.rope_parameters["rope_theta"] == 1000000.0  # the model's own, from the catalog
    assert override.max_position_embeddings == 131072


def test_yarn_x4_at_65536_is_sized_and_passed_with_the_extended_length():
    chosen = plan(parse({"model": QWEN, "ropeScaling": YARN4, "maxModelLen": 65536,
                         "minConcurrentSequences": 1}))
    assert chosen.max_model_len == 65536
    assert chosen.rope_override.max_position_embeddings == 131072


@pytest.mark.parametrize(
    "rope, expected",
    [
        ({"rope_type": "linear", "factor": 2.0}, 65536),
        ({"rope_type": "dynamic", "factor": 2.0}, 65536),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16384}, 32768),
        ({"rope_type": "yarn", "factor": 2.0}, 65536),  # original defaults to max_position_embeddings
        ({"type": "yarn", "factor": 8.0}, 262144),
        ({"rope_type": "longrope", "factor": 4.0, "short_factor": [1.0], "long_factor": [4.0],
          "original_max_position_embeddings": 4096}, 16384),
        ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}, 65536),
    ],
)
def test_every_rope_type_gets_the_length_vllm_will_derive_from_the_override(rope, expected):
    override = rope_override(from_catalog(QWEN), parse({"model": QWEN, "ropeScaling": rope}))
    # what vLLM does with the override: max_position_embeddings (overridden or the model's),
    # times the factor only for the types it multiplies
    max_pos = override.max_position_embeddings or from_catalog(QWEN).max_position_embeddings
    assert vllm_context_limit(max_pos, "qwen2", [override.rope_parameters]) == expected
    assert limit(QWEN, ropeScaling=rope) == expected


def test_longer_than_the_derived_length_is_refused_with_the_arithmetic():
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": QWEN, "ropeScaling": YARN4, "maxModelLen": 262144}))
    assert "vllm-deploy:maxModelLen=262144" in str(caught.value) and "131072" in str(caught.value)


def test_missing_keys_of_the_rope_type_are_refused_by_name():
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": QWEN, "ropeScaling": {"rope_type": "llama3", "factor": 8.0}}))
    message = str(caught.value)
    assert "vllm-deploy:ropeScaling" in message
    assert "low_freq_factor" in message and "high_freq_factor" in message


def test_per_layer_type_rope_models_refuse_ropescaling():
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": "google/gemma-3-4b-it", "ropeScaling": YARN4}))
    assert "vllm-deploy:ropeScaling" in str(caught.value) and "per layer type" in str(caught.value)
    assert "pulumi config rm ropeScaling" in str(caught.value)


def test_unknown_rope_theta_is_asked_for_and_the_fix_works():
    spec = replace(from_catalog(QWEN), rope_theta=None, source="local")
    with pytest.raises(SizingError) as caught:
        rope_override(spec, parse({"model": QWEN, "ropeScaling": YARN4}))
    assert '"rope_theta"' in str(caught.value) and "vllm-deploy:ropeScaling" in str(caught.value)
    fixed = rope_override(spec, parse({"model": QWEN, "ropeScaling": {**YARN4, "rope_theta": 1e6}}))
    assert fixed.rope_parameters["rope_theta"] == 1e6


def test_partial_rotary_factor_rides_along():
    spec = from_catalog("zai-org/GLM-4-9B-0414")
    override = rope_override(spec, parse({"model": spec.model_id, "ropeScaling": YARN4}))
    assert override.rope_parameters["partial_rotary_factor"] == 0.5


# --- the model's own RoPE, read from config.json -----------------------------------------------


def test_config_json_rope_is_read_in_both_transformers_layouts():
    base = {"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
            "vocab_size": 100, "max_position_embeddings": 4096}
    v4 = spec_from_config({**base, "rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 2.0}},
                          "t/v4", source="local")
    v5 = spec_from_config({**base, "rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                        "rope_theta": 1e6, "partial_rotary_factor": 0.5}},
                          "t/v5", source="local")
    for spec in (v4, v5):
        assert (spec.rope_scaling_type, spec.rope_scaling_factor, spec.rope_theta) == ("linear", 2.0, 1e6)
        assert model_context_limit(spec, parse({"model": "t/x"})) == 8192
    assert v5.partial_rotary_factor == 0.5
    nested = spec_from_config({**base, "rope_parameters": {"full_attention": {"rope_type": "default"},
                                                           "sliding_attention": {"rope_type": "default"}}},
                              "t/nested", source="local")
    assert nested.rope_per_layer_type


@pytest.mark.parametrize(
    "fixture, expected_limit",
    [("deepseek-v3", 163840), ("gpt-oss-20b", 131072), ("gemma-3-4b-it", 131072), ("qwen2.5-7b-instruct-awq", 32768)],
)
def test_published_configs_give_the_length_vllm_derives(fixture, expected_limit):
    config = json.loads((FIXTURES / fixture / "config.json").read_text())
    spec = spec_from_config(config, fixture, source="local")
    assert model_context_limit(spec, parse({"model": "t/x"})) == expected_limit


def test_fp8_block_size_is_read_from_the_quantization_config():
    config = json.loads((FIXTURES / "deepseek-v3" / "config.json").read_text())
    assert spec_from_config(config, "ds", source="local").weight_block_size == (128, 128)
