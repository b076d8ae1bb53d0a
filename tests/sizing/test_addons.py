"""The add-on terms (sizing.addons) and the facts they are read from (sizing.addon_facts).
Their agreement with vLLM 0.33's own allocations is the conformance tier's
(tests/conformance/test_addons_conformance.py); here: how they behave and what is refused."""

from __future__ import annotations

import json

import pytest

from config.validation import parse
from sizing.addon_facts import resolve_addons
from sizing.addons import AddOns, addon_notes, draft_kv_page_bytes, lora_buffer_bytes
from sizing.errors import SizingError
from sizing.hub import resolve
from sizing.kv_cache import capacity, kv_layout
from sizing.memory import GIB
from sizing.startup import estimate
from sizing.formats import WeightFormat

BASE = "Qwen/Qwen2.5-7B-Instruct"
DRAFT = "Qwen/Qwen2.5-0.5B-Instruct"


def adapter_dir(tmp_path, name: str, config: dict):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return str(directory)


def test_lora_buffers_grow_with_slots_and_rank_and_split_across_gpus():
    spec = resolve(BASE)
    one = lora_buffer_bytes(spec, AddOns(max_loras=1, max_lora_rank=16), 1)
    assert lora_buffer_bytes(spec, AddOns(max_loras=4, max_lora_rank=16), 1) == 4 * one
    assert lora_buffer_bytes(spec, AddOns(max_loras=1, max_lora_rank=64), 1) == 4 * one
    # B of qkv/gate_up and A of o/down split by TP; A of qkv/gate_up and B of o/down do not.
    assert one / 2 < lora_buffer_bytes(spec, AddOns(max_loras=1, max_lora_rank=16), 2) < one
    assert lora_buffer_bytes(spec, AddOns(), 1) == 0


def test_lora_on_an_mla_model_is_refused_rather_than_guessed():
    spec = resolve("deepseek-ai/DeepSeek-V3")
    with pytest.raises(SizingError, match="MLA attention"):
        lora_buffer_bytes(spec, AddOns(max_loras=1, max_lora_rank=16), 8)


def test_the_drafts_layers_take_a_share_of_every_kv_block():
    spec, draft = resolve(BASE), resolve(DRAFT)
    addons = AddOns(draft=draft, draft_format=WeightFormat(None, None, None), num_speculative_tokens=4, method="draft_model")
    common = dict(cuda_total_gib=44.42, compute_capability=8.9, tensor_parallel_size=1, gpu_memory_utilization=0.9,
                  max_model_len=8192, max_num_batched_tokens=2048, max_num_seqs=256)
    alone = estimate(spec, WeightFormat(None, None, None), **common)
    with_draft = estimate(spec, WeightFormat(None, None, None), addons=addons, **common)
    assert with_draft.draft_weights_gib == pytest.approx(draft.total_params * 2 / GIB, rel=0.01)
    assert with_draft.kv_cache_gib == pytest.approx(alone.kv_cache_gib - with_draft.draft_weights_gib)
    # Per token: the target's layers plus the draft's (one shared block table).
    target_per_token = kv_layout(spec, 2, 1).block_bytes / 16
    draft_per_token = draft_kv_page_bytes(addons, 2, 1) / 16
    expected = capacity(kv_layout(spec, 2, 1), with_draft.kv_cache_gib * GIB * target_per_token
                        / (target_per_token + draft_per_token), 8192, 4096)
    assert abs(with_draft.kv.blocks - expected.blocks) <= 1


def test_the_smallest_allowed_rank_holding_every_adapter_is_chosen(tmp_path):
    config = parse({"model": BASE, "loraAdapters": [
        {"name": "a", "model": adapter_dir(tmp_path, "a", {"r": 8})},
        {"name": "b", "model": adapter_dir(tmp_path, "b", {"r": 16, "rank_pattern": {"q_proj": 24}})},
    ]})
    addons = resolve_addons(config)
    # vLLM checks max(r, *rank_pattern.values()) against --max-lora-rank; 24 is not a rank it takes.
    assert addons.max_lora_rank == 32 and addons.adapter_ranks == (("a", 8), ("b", 24))
    assert addons.max_loras == 2


def test_an_adapter_above_max_lora_rank_is_refused_with_the_rank_that_works(tmp_path):
    config = parse({"model": BASE, "maxLoraRank": 16,
                    "loraAdapters": [{"name": "big", "model": adapter_dir(tmp_path, "big", {"r": 64})}]})
    with pytest.raises(SizingError, match=r"'big' .* has rank r=64 .* Set maxLoraRank to 64"):
        resolve_addons(config)


def test_an_unreadable_rank_needs_max_lora_rank_named(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_DEPLOY_MODEL_CACHE", str(tmp_path / "cache"))
    config = parse({"model": BASE, "loraAdapters": [{"name": "x", "model": "acme/x-lora"}]})
    with pytest.raises(SizingError, match=r"vllm-deploy:maxLoraRank is needed: the rank of x \(acme/x-lora\)"):
        resolve_addons(config)
    with_rank = parse({"model": BASE, "maxLoraRank": 64, "loraAdapters": [{"name": "x", "model": "acme/x-lora"}]})
    resolved = resolve_addons(with_rank)
    assert resolved.max_lora_rank == 64
    # The plan says the adapter went unchecked, as it says for a model the Hub did not answer for.
    assert any("LoRA adapter(s) x: adapter_config.json could not be read" in n for n in addon_notes(resolved))


@pytest.mark.parametrize("values, message", [
    ({"maxLoraRank": 24, "loraAdapters": [{"name": "a", "model": "acme/a"}]}, "24 is not a rank vLLM 0.33 accepts"),
    ({"maxLoras": 2}, "maxLoras=2 is set but vllm-deploy:loraAdapters is empty"),
    ({"loraAdapters": [{"name": "a", "model": "acme/a"}, {"name": "a", "model": "acme/b"}]}, "'a' is used twice"),
    ({"speculativeModel": {"numSpeculativeTokens": 2}}, "method draft_model needs model"),
    ({"speculativeModel": {"method": "ngram", "model": DRAFT, "numSpeculativeTokens": 2}}, "drafts without a model"),
])
def test_add_on_keys_are_checked_with_the_fix(values, message):
    from config.validation import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse({"model": BASE, **values})


def test_lora_turned_on_in_vllm_extra_args_is_sized_at_its_own_limits():
    """Without loraAdapters, --enable-lora in vllmExtraArgs still allocates the buffers: at
    --max-loras / --max-lora-rank, vLLM's defaults (1, 16) when unset."""
    from sizing.engine_args import engine_options

    config = parse({"model": BASE, "vllmExtraArgs": ["--enable-lora", "--max-lora-rank", "64"]})
    addons = resolve_addons(config, engine_options(config.vllm_extra_args))
    assert (addons.max_loras, addons.max_lora_rank) == (1, 64)
    off = parse({"model": BASE, "vllmExtraArgs": ["--max-lora-rank", "64"]})
    assert not resolve_addons(off, engine_options(off.vllm_extra_args)).lora


@pytest.mark.parametrize("path", ["/nonexistent/adapter", "/etc/passwd", "/tmp"])
def test_a_local_adapter_that_is_not_an_adapter_directory_is_named_before_any_rank_question(path):
    """maxLoraRank cannot fix a missing or wrong directory: the error says what the directory is."""
    config = parse({"model": BASE, "loraAdapters": [{"name": "sql", "model": path}]})
    with pytest.raises(SizingError) as err:
        resolve_addons(config)
    text = str(err.value)
    assert f"adapter 'sql' names the local directory {path}" in text and "maxLoraRank is needed" not in text
