"""A ``ModelSpec`` from a Hugging Face ``config.json`` (the model's own architecture numbers).

Reads the keys transformers and vLLM read (text_config for multimodal models, sliding-window
layouts, quantization_config, MLA and MoE fields), filling in what transformers' config classes
default to when a published config.json omits them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from sizing.models import FP8_BITS, MXFP4_BITS, ModelResolutionError, ModelSpec, estimate_param_count
from sizing.vllm_rules import derived_max_len

# vllm/transformers_utils/config.py `patch_legacy_rope_type`: legacy RoPE type names.
_LEGACY_ROPE_TYPES = {"su": "longrope", "mrope": "default", "telechat3-yarn": "yarn"}

# vllm/transformers_utils/config.py `is_rope_parameters_nested`: rope parameters keyed only by
# these are per layer type (transformers 5.20 configuration_utils.ALLOWED_LAYER_TYPES, plus
# DeepSeek-V4's "main" and "compress").
_ROPE_NESTING_KEYS = {
    "full_attention", "sliding_attention", "chunked_attention", "window_attention",
    "indexed_attention", "compressed_sparse_attention", "heavily_compressed_attention",
    "minimax_m3_sparse", "conv", "moe", "hybrid", "hybrid_sliding",
    "reference_sliding_attention", "linear_attention", "sparse", "dense", "main", "compress",
}


# Fields transformers fills in when a config.json omits them (defaults of the config classes);
# only the families whose published configs rely on such defaults.
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": True,
    },
    "gemma2": {"head_dim": 256, "sliding_window": 4096, "tie_word_embeddings": True},
}


def _first(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def _sliding_layers(text: dict[str, Any], layers: int) -> tuple[Optional[int], int]:
    """(window, number of sliding-window layers) from the config's own description.

    Only hybrid models (some full-attention layers) get a saving: vLLM's hybrid KV manager then
    gives the sliding layers just the window. Models whose every layer slides are sized as full
    attention (an over-estimate).
    """
    window = text.get("sliding_window")
    layer_types = text.get("layer_types")
    if isinstance(layer_types, list) and window:
        sliding = sum(1 for kind in layer_types if kind == "sliding_attention")
        return (window, sliding) if sliding < layers else (window, 0)
    model_type = text.get("model_type", "")
    if model_type == "gemma2" and window:
        return window, (layers + 1) // 2
    pattern = text.get("sliding_window_pattern")
    if model_type.startswith("gemma3") and window and pattern:
        return window, layers - layers // int(pattern)
    return None, 0


def _quantization(config: dict[str, Any]) -> tuple[Optional[str], Optional[float], Optional[int]]:
    """(vLLM method, bits per weight, group size) from a checkpoint's quantization_config."""
    quant = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(quant, dict):
        return None, None, None
    method = str(quant.get("quant_method", "")).lower() or None
    if method in ("awq", "gptq"):
        bits = _first(quant, "bits", "w_bit") or 4
        group = _first(quant, "group_size", "q_group_size") or 128
        return method, float(bits), int(group) if int(group) > 0 else None
    if method in ("fp8", "fbgemm_fp8"):
        return method, float(FP8_BITS), None
    if method == "mxfp4":
        return method, MXFP4_BITS, None
    return method, None, None


def spec_from_config(
    config: dict[str, Any],
    model_id: str,
    *,
    source: str,
    checkpoint_bytes: Optional[int] = None,
) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json (nested text_config for multimodal models)."""
    text = dict(config.get("text_config") or config)
    text.setdefault("model_type", config.get("model_type", ""))
    for key, value in _CONFIG_DEFAULTS.get(text["model_type"], {}).items():
        text.setdefault(key, value)
    architecture = (config.get("architectures") or ["unknown"])[0]
    layers = _first(text, "num_hidden_layers", "num_layers", "n_layer")
    hidden = _first(text, "hidden_size", "d_model", "n_embd")
    heads = _first(text, "num_attention_heads", "n_head")
    vocab = _first(text, "vocab_size", "padded_vocab_size")
    missing = [
        name
        for name, value in (
            ("num_hidden_layers", layers),
            ("hidden_size", hidden),
            ("num_attention_heads", heads),
            ("vocab_size", vocab),
        )
        if value is None
    ]
    if missing:
        raise ModelResolutionError(
            f"{model_id}: config.json has no {', '.join(missing)} (architecture {architecture}); "
            "this family is not understood by the sizer, so no instance can be checked for it. "
            "Pick a catalog model (tools/size --list-models), or a checkpoint of a family the "
            "sizer reads (its config.json names num_hidden_layers, hidden_size, "
            "num_attention_heads and vocab_size)."
        )
    kv_heads = _first(text, "num_key_value_heads", "multi_query_group_num", "num_kv_heads") or heads
    head_dim = _first(text, "head_dim", "kv_channels") or hidden // heads
    if text.get("kv_lora_rank"):  # MLA: the query/key head is the no-rope part plus the rope part
        head_dim = int(text.get("qk_nope_head_dim") or 0) + int(text.get("qk_rope_head_dim") or 0)
    num_experts = _first(text, "num_local_experts", "num_experts", "n_routed_experts") or 0
    moe_inter = _first(text, "moe_intermediate_size") or (
        _first(text, "intermediate_size") if num_experts else 0
    )
    window, sliding = _sliding_layers(text, layers)
    method, bits, group = _quantization(config)
    dtype = str(_first(text, "torch_dtype", "dtype") or config.get("torch_dtype") or "bfloat16")
    max_pos = derived_max_len(text)
    rope_type, rope_factor, per_layer_type = _rope_scaling(text)
    spec = ModelSpec(
        model_id=model_id,
        architecture=architecture,
        model_type=str(text["model_type"]),
        num_layers=int(layers),
        hidden_size=int(hidden),
        intermediate_size=int(_first(text, "intermediate_size", "ffn_hidden_size") or 4 * hidden),
        num_attention_heads=int(heads),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        vocab_size=int(vocab),
        max_position_embeddings=int(max_pos),
        total_params=0,
        native_dtype=dtype.replace("torch.", ""),
        native_quantization=method,
        quant_bits=bits,
        quant_group_size=group,
        num_experts=int(num_experts),
        experts_per_token=int(_first(text, "num_experts_per_tok", "experts_per_token") or 0),
        moe_intermediate_size=int(moe_inter or 0),
        n_shared_experts=int(text.get("n_shared_experts") or 0),
        first_k_dense_replace=int(text.get("first_k_dense_replace") or 0),
        tie_word_embeddings=bool(_first(config, "tie_word_embeddings") or text.get("tie_word_embeddings")),
        qkv_bias=bool(text.get("attention_bias")) or text["model_type"] == "qwen2",
        q_lora_rank=text.get("q_lora_rank"),
        kv_lora_rank=text.get("kv_lora_rank"),
        qk_rope_head_dim=text.get("qk_rope_head_dim"),
        qk_nope_head_dim=text.get("qk_nope_head_dim"),
        v_head_dim=text.get("v_head_dim"),
        sliding_window=window,
        sliding_window_layers=sliding,
        checkpoint_bytes=checkpoint_bytes,
        source=source,
        params_estimated=True,
        rope_theta=_rope_theta(text),
        rope_scaling_type=rope_type,
        rope_scaling_factor=rope_factor,
        partial_rotary_factor=_partial_rotary_factor(text),
        rope_per_layer_type=per_layer_type,
        weight_block_size=_block_size(config),
    )
    return replace(spec, total_params=estimate_param_count(spec) + _vision_params(config))


def _rope_theta(text: dict[str, Any]) -> Optional[float]:
    """transformers 4 names it rope_theta; transformers 5 moves it into rope_parameters."""
    value = text.get("rope_theta")
    if value is None and isinstance(text.get("rope_parameters"), dict):
        value = text["rope_parameters"].get("rope_theta")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rope_scaling(text: dict[str, Any]) -> tuple[Optional[str], Optional[float], bool]:
    """(scaling type, factor, kept per layer type) from rope_parameters (transformers 5) or
    rope_scaling (transformers 4); "default" / no scaling gives (None, None, ...)."""
    params = text.get("rope_parameters") or text.get("rope_scaling")
    if not isinstance(params, dict) or not params:
        return None, None, False
    nested = set(params) <= _ROPE_NESTING_KEYS
    layers = [p for p in params.values() if isinstance(p, dict)] if nested else [params]
    rope_type, factor = None, None
    for layer in layers:  # vLLM's loop keeps the last factor it reads
        kind = layer.get("rope_type", layer.get("type"))
        kind = _LEGACY_ROPE_TYPES.get(kind, kind)
        if kind and kind != "default":
            rope_type = str(kind)
            factor = float(layer["factor"]) if isinstance(layer.get("factor"), (int, float)) else None
    return rope_type, factor, nested


def _partial_rotary_factor(text: dict[str, Any]) -> Optional[float]:
    value = text.get("partial_rotary_factor")
    params = text.get("rope_parameters")
    if value is None and isinstance(params, dict):
        value = params.get("partial_rotary_factor")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _block_size(config: dict[str, Any]) -> Optional[tuple[int, int]]:
    """fp8 block quantization shape [block_n, block_k] from quantization_config."""
    quant = config.get("quantization_config")
    block = quant.get("weight_block_size") if isinstance(quant, dict) else None
    if isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) for b in block):
        return int(block[0]), int(block[1])
    return None


def _vision_params(config: dict[str, Any]) -> int:
    """A ViT/SigLIP-style vision tower: per layer 4 h^2 (attention) + 2 h x intermediate (MLP).

    Multimodal checkpoints load it too; the decoder formula does not see it.
    """
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return 0
    hidden = int(vision.get("hidden_size") or 0)
    layers = int(vision.get("num_hidden_layers") or vision.get("depth") or 0)
    inter = int(vision.get("intermediate_size") or 4 * hidden)
    return layers * (4 * hidden * hidden + 2 * hidden * inter)
