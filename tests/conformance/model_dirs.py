"""Model directories for the conformance tier: what vLLM 0.33 reads before it loads weights.

Each holds the model's config.json and a tiny tokenizer (tests/fixtures/tiny-tokenizer: 279
byte-level tokens with the usual chat, think and tool-call special tokens; vLLM loads a tokenizer
during create_engine_config for a --reasoning-parser, vllm/config/reasoning.py). A catalog model
gets its published config.json where tests/fixtures/models has one (FIXTURE_CONFIGS), else one
written from its catalog row in the shape its family publishes (`config_json`): the catalog's
numbers, plus the family's own fields the catalog does not carry (softcapping, MoE routing,
Llama 3.1's RoPE block, ...). A local model (`local_model_dir`) also gets weight files, as
`hf download` leaves them, so the program's own check of local directories passes.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

from sizing.models import ModelSpec, from_catalog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

FIXTURE_CONFIGS = {
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b-instruct",
    "Qwen/Qwen2.5-7B-Instruct-AWQ": "qwen2.5-7b-instruct-awq",
    "Qwen/Qwen2.5-14B-Instruct-AWQ": "qwen2.5-14b-instruct-awq",
    "google/gemma-2-9b-it": "gemma-2-9b-it",
    "google/gemma-3-4b-it": "gemma-3-4b-it",
    "deepseek-ai/DeepSeek-V3": "deepseek-v3",
    "deepseek-ai/DeepSeek-R1": "deepseek-v3",  # same architecture and config (catalog)
    "openai/gpt-oss-20b": "gpt-oss-20b",
}


def write_tokenizer(directory: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURES / "tiny-tokenizer" / name, directory / name)


def catalog_model_dir(model_id: str, root: Path) -> Path:
    """A directory vLLM can read `model_id`'s config from (created once under root)."""
    directory = root / model_id.replace("/", "--")
    if directory.is_dir():
        return directory
    directory.mkdir(parents=True)
    fixture = FIXTURE_CONFIGS.get(model_id)
    if fixture:
        shutil.copy(FIXTURES / "models" / fixture / "config.json", directory / "config.json")
    else:
        spec = from_catalog(model_id)
        assert spec is not None, f"{model_id} is not a catalog model"
        (directory / "config.json").write_text(json.dumps(config_json(spec), indent=2))
    write_tokenizer(directory)
    return directory


def local_model_dir(fixture: str, root: Path, weights_bytes: int) -> Path:
    """tests/fixtures/models/<fixture> as a complete local model directory: config.json, a
    tokenizer, and a safetensors index whose total_size is the checkpoint's (its shard holds
    no tensors: nothing reads weights before the model is built)."""
    directory = root / f"local-{fixture}"
    if directory.is_dir():
        return directory
    directory.mkdir(parents=True)
    shutil.copy(FIXTURES / "models" / fixture / "config.json", directory / "config.json")
    write_tokenizer(directory)
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    (directory / "model-00001-of-00001.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    index = {"metadata": {"total_size": weights_bytes}, "weight_map": {"lm_head.weight": "model-00001-of-00001.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


# --- config.json for a catalog row ---------------------------------------------------------------


def _quantization_config(spec: ModelSpec) -> dict[str, Any]:
    method = spec.native_quantization
    group = spec.quant_group_size or 128
    if method == "awq":
        return {"bits": int(spec.quant_bits or 4), "group_size": group, "quant_method": "awq",
                "version": "gemm", "zero_point": True, "modules_to_not_convert": None}
    if method == "gptq":
        return {"bits": int(spec.quant_bits or 4), "group_size": group, "quant_method": "gptq",
                "desc_act": False, "sym": True, "damp_percent": 0.01, "static_groups": False,
                "true_sequential": True}
    if method == "fbgemm_fp8":  # meta-llama/Llama-3.1-405B-Instruct-FP8
        return {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                "modules_to_not_convert": ["lm_head"]}
    raise AssertionError(f"no config.json shape for {spec.model_id}'s {method} checkpoint")


def config_json(spec: ModelSpec) -> dict[str, Any]:
    """The config.json `spec`'s family publishes, with the catalog row's numbers."""
    config: dict[str, Any] = {
        "architectures": [spec.architecture],
        "model_type": spec.model_type,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_theta": spec.rope_theta or 10000.0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": spec.native_dtype,
        "hidden_act": "silu",
    }
    family = _FAMILIES.get(spec.model_type)
    assert family is not None, f"no config.json shape for model type {spec.model_type}"
    family(spec, config)
    if spec.native_quantization and "quantization_config" not in config:
        config["quantization_config"] = _quantization_config(spec)
    return config


def _qwen2(spec: ModelSpec, c: dict[str, Any]) -> None:
    del c["head_dim"]  # Qwen2 configs derive it: hidden_size / num_attention_heads
    c.update(sliding_window=131072, use_sliding_window=False, max_window_layers=spec.num_layers)


def _qwen3(spec: ModelSpec, c: dict[str, Any]) -> None:
    c.update(attention_bias=False, sliding_window=None, use_sliding_window=False)


def _qwen3_moe(spec: ModelSpec, c: dict[str, Any]) -> None:
    _qwen3(spec, c)
    c.update(num_experts=spec.num_experts, num_experts_per_tok=spec.experts_per_token,
             moe_intermediate_size=spec.moe_intermediate_size, decoder_sparse_step=1,
             mlp_only_layers=[], norm_topk_prob=True)


def _llama(spec: ModelSpec, c: dict[str, Any]) -> None:
    del c["head_dim"]
    c.update(attention_bias=False, mlp_bias=False, rope_scaling={
        "rope_type": spec.rope_scaling_type or "llama3", "factor": spec.rope_scaling_factor or 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    })


def _mistral(spec: ModelSpec, c: dict[str, Any]) -> None:
    c.update(sliding_window=None)


def _mixtral(spec: ModelSpec, c: dict[str, Any]) -> None:
    del c["head_dim"]
    c.update(sliding_window=None, num_local_experts=spec.num_experts,
             num_experts_per_tok=spec.experts_per_token, router_aux_loss_coef=0.02)


def _gemma2(spec: ModelSpec, c: dict[str, Any]) -> None:
    c.update(hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
             query_pre_attn_scalar=spec.hidden_size // spec.num_attention_heads
             if spec.head_dim != 256 else 256,
             attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
             sliding_window=spec.sliding_window or 4096, cache_implementation="hybrid")


def _gemma3_text(spec: ModelSpec, c: dict[str, Any]) -> None:
    c.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256,
             sliding_window=spec.sliding_window, sliding_window_pattern=6,
             rope_local_base_freq=10000.0, rope_scaling=None, attn_logit_softcapping=None,
             final_logit_softcapping=None)


def _gemma3(spec: ModelSpec, c: dict[str, Any]) -> None:
    """Gemma3ForConditionalGeneration: the decoder under text_config (as the 4B fixture)."""
    text = {k: c.pop(k) for k in list(c) if k not in ("architectures", "model_type", "torch_dtype")}
    text.update(model_type="gemma3_text", sliding_window=spec.sliding_window,
                rope_scaling={"rope_type": "linear", "factor": spec.rope_scaling_factor or 8.0})
    for key in ("hidden_act", "rms_norm_eps", "vocab_size", "max_position_embeddings"):
        text.pop(key)
    c.update(text_config=text, vision_config={
        "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
        "patch_size": 14, "vision_use_head": False,
    }, boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
        mm_tokens_per_image=256)


def _glm4(spec: ModelSpec, c: dict[str, Any]) -> None:
    c.update(attention_bias=True, partial_rotary_factor=spec.partial_rotary_factor or 0.5,
             rms_norm_eps=1.5625e-07, pad_token_id=151329)


def _gpt_oss(spec: ModelSpec, c: dict[str, Any]) -> None:
    c.update(json.loads((FIXTURES / "models" / "gpt-oss-20b" / "config.json").read_text()))
    c.update(num_hidden_layers=spec.num_layers, num_local_experts=spec.num_experts,
             layer_types=["sliding_attention", "full_attention"] * (spec.num_layers // 2))


_FAMILIES = {
    "qwen2": _qwen2, "qwen3": _qwen3, "qwen3_moe": _qwen3_moe, "llama": _llama,
    "mistral": _mistral, "mixtral": _mixtral, "gemma2": _gemma2, "gemma3_text": _gemma3_text,
    "gemma3": _gemma3, "glm4": _glm4, "gpt_oss": _gpt_oss,
}
