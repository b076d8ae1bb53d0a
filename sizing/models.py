"""Model facts that size the host: architecture numbers, parameter counts, checkpoint format.

``ModelSpec`` is what the sizing needs to know about a model. The catalog
(sizing/catalog/models.csv, sources in SOURCES.md) gives it for known models offline;
``sizing.hf_config`` reads it from a config.json, and ``sizing.hub`` finds that config.json in a
local directory or on the hub.
"""

from __future__ import annotations

import csv
import difflib
import functools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional


CATALOG_CSV = Path(__file__).parent / "catalog" / "models.csv"

# RoPE facts of the catalog models, keyed by hf_id (sources in SOURCES.md).
ROPE_CSV = Path(__file__).parent / "catalog" / "model-rope.csv"

# Bits per weight of natively quantized checkpoints, as the quantized tensors store them.
# mxfp4: 4-bit E2M1 values plus one 8-bit E8M0 scale per block of 32 = 4.25 bits (OCP MX spec).
MXFP4_BITS = 4.25

FP8_BITS = 8


class ModelResolutionError(ValueError):
    """The model's facts could not be found; the message says which to give and how."""


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts of one model, enough to estimate weights, KV cache and activations."""

    model_id: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    total_params: int
    native_dtype: str = "bfloat16"
    # None = 16-bit checkpoint; else the vLLM method name (fp8, fbgemm_fp8, mxfp4, awq, gptq, ...)
    native_quantization: Optional[str] = None
    quant_bits: Optional[float] = None
    quant_group_size: Optional[int] = None
    active_params: Optional[int] = None
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    n_shared_experts: int = 0
    first_k_dense_replace: int = 0  # leading dense layers before the MoE layers start
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    # MLA (DeepSeek-V2/V3): the KV cache holds one latent of kv_lora_rank + qk_rope_head_dim per layer
    q_lora_rank: Optional[int] = None
    kv_lora_rank: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    qk_nope_head_dim: Optional[int] = None
    v_head_dim: Optional[int] = None
    sliding_window: Optional[int] = None
    sliding_window_layers: int = 0  # layers that attend only to the last `sliding_window` tokens
    rope_theta: Optional[float] = None  # RoPE base, from config.json (catalog: model-rope.csv)
    # The checkpoint's own RoPE scaling (its config.json rope_scaling / rope_parameters): vLLM
    # multiplies the context limit by the factor for some types (sizing.rope).
    rope_scaling_type: Optional[str] = None
    rope_scaling_factor: Optional[float] = None
    partial_rotary_factor: Optional[float] = None  # part of each head RoPE rotates (GLM-4: 0.5)
    rope_per_layer_type: bool = False  # rope_parameters nested by layer type (transformers 5 Gemma-3)
    # fp8 block quantization [block_n, block_k] of the checkpoint (quantization_config)
    weight_block_size: Optional[tuple[int, int]] = None
    checkpoint_bytes: Optional[int] = None  # exact size of the weights on disk, when known
    modelscope_id: Optional[str] = None
    # Whether the tokenizer ships a chat template (None = not known from this source).
    chat_template: Optional[bool] = None
    source: str = "catalog"  # catalog | local | huggingface | modelscope
    params_estimated: bool = False  # True when total_params came from the formula, not a count

    @property
    def is_mla(self) -> bool:
        return bool(self.kv_lora_rank)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def full_attention_layers(self) -> int:
        return self.num_layers - self.sliding_window_layers

    @property
    def moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense_replace if self.is_moe else 0

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def routed_expert_params(self) -> int:
        """Parameters of the routed experts (gate, up, down per expert); all stay resident."""
        per_expert = 3 * self.hidden_size * self.moe_intermediate_size
        return self.moe_layers * self.num_experts * per_expert

    @property
    def kv_proj_params(self) -> int:
        """k_proj + v_proj weights: what vLLM replicates when there are fewer KV heads than GPUs."""
        if self.is_mla:
            return 0
        return self.num_layers * 2 * self.hidden_size * self.num_kv_heads * self.head_dim


def estimate_param_count(spec: ModelSpec) -> int:
    """Parameters implied by the architecture numbers (decoder only; no vision tower).

    Used when no exact count is known, and by the tests to check the catalog's counts.
    """
    h = spec.hidden_size
    if spec.is_mla:
        rope, nope, v = spec.qk_rope_head_dim or 0, spec.qk_nope_head_dim or 0, spec.v_head_dim or 0
        heads = spec.num_attention_heads
        q = (h * spec.q_lora_rank + spec.q_lora_rank * heads * (nope + rope)) if spec.q_lora_rank else (
            h * heads * (nope + rope)
        )
        kv = h * (spec.kv_lora_rank + rope) + spec.kv_lora_rank * heads * (nope + v)
        attention = q + kv + heads * v * h
    else:
        q_width = spec.num_attention_heads * spec.head_dim
        kv_width = 2 * spec.num_kv_heads * spec.head_dim
        attention = h * (q_width + kv_width) + q_width * h
        if spec.qkv_bias:
            attention += q_width + kv_width
    dense_mlp = 3 * h * spec.intermediate_size
    shared = 3 * h * spec.moe_intermediate_size * spec.n_shared_experts
    router = h * spec.num_experts
    norms = 2 * h
    dense_layers = spec.num_layers - spec.moe_layers
    body = spec.num_layers * (attention + norms) + dense_layers * dense_mlp
    body += spec.moe_layers * (router + shared) + spec.routed_expert_params
    return spec.embedding_params + spec.lm_head_params + body + h


# --- the catalog -------------------------------------------------------------------------------


def _int(value: str) -> Optional[int]:
    return int(value) if value.strip() else None


def _spec_from_row(row: dict[str, str]) -> ModelSpec:
    active = row["active_params_b"].strip()
    return ModelSpec(
        model_id=row["hf_id"],
        modelscope_id=row["modelscope_id"] or None,
        architecture=row["architecture"],
        model_type=row["model_type"],
        num_layers=int(row["num_hidden_layers"]),
        hidden_size=int(row["hidden_size"]),
        intermediate_size=int(row["intermediate_size"]),
        num_attention_heads=int(row["num_attention_heads"]),
        num_kv_heads=int(row["num_key_value_heads"]),
        head_dim=int(row["head_dim"]),
        vocab_size=int(row["vocab_size"]),
        max_position_embeddings=int(row["max_position_embeddings"]),
        total_params=round(float(row["total_params_b"]) * 1e9),
        active_params=round(float(active) * 1e9) if active else None,
        native_dtype=row["torch_dtype"] or "bfloat16",
        native_quantization=row["native_quantization"] or None,
        quant_bits=_float(row.get("quant_bits", "")) or _native_bits(row["native_quantization"]),
        quant_group_size=_int(row.get("quant_group_size", "")),
        num_experts=_int(row["num_experts"]) or 0,
        experts_per_token=_int(row["experts_per_token"]) or 0,
        moe_intermediate_size=_int(row["moe_intermediate_size"]) or 0,
        n_shared_experts=_int(row["n_shared_experts"]) or 0,
        first_k_dense_replace=_int(row["first_k_dense_replace"]) or 0,
        tie_word_embeddings=row["tie_word_embeddings"].strip().lower() == "true",
        qkv_bias=row["model_type"] == "qwen2",
        q_lora_rank=_int(row["q_lora_rank"]),
        kv_lora_rank=_int(row["kv_lora_rank"]),
        qk_rope_head_dim=_int(row["qk_rope_head_dim"]),
        qk_nope_head_dim=_int(row["qk_nope_head_dim"]),
        v_head_dim=_int(row["v_head_dim"]),
        sliding_window=_int(row["sliding_window"]),
        sliding_window_layers=_int(row["sliding_window_layers"]) or 0,
        checkpoint_bytes=_int(row["checkpoint_bytes"]),
        chat_template={"yes": True, "no": False}.get(row["chat_template"].strip()),
        source="catalog",
    )


def _float(value: str) -> Optional[float]:
    return float(value) if value.strip() else None


def _native_bits(method: str) -> Optional[float]:
    return {"fp8": FP8_BITS, "fbgemm_fp8": FP8_BITS, "mxfp4": MXFP4_BITS}.get(method.strip())


@functools.lru_cache(maxsize=1)
def _catalog() -> tuple[tuple[ModelSpec, tuple[str, ...]], ...]:
    with CATALOG_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rope = _rope_facts()
    entries = []
    for row in rows:
        names = [row["hf_id"], row["modelscope_id"], *row["aliases"].split(";")]
        spec = replace(_spec_from_row(row), **rope.get(row["hf_id"], {}))
        entries.append((spec, tuple(n.strip().lower() for n in names if n.strip())))
    return tuple(entries)


def _rope_facts() -> dict[str, dict[str, object]]:
    """hf_id -> the ModelSpec RoPE fields from model-rope.csv (empty cells stay None)."""
    with ROPE_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        row["hf_id"]: {
            "rope_theta": _float(row["rope_theta"]),
            "rope_scaling_type": row["rope_type"].strip() or None,
            "rope_scaling_factor": _float(row["rope_factor"]),
            "partial_rotary_factor": _float(row["partial_rotary_factor"]),
            "rope_per_layer_type": row["rope_per_layer_type"].strip().lower() == "true",
        }
        for row in rows
    }


def catalog_models() -> list[ModelSpec]:
    return [spec for spec, _ in _catalog()]


def from_catalog(model_id: str) -> Optional[ModelSpec]:
    """The catalog entry whose HF id, ModelScope id or alias matches (case-insensitive)."""
    wanted = model_id.strip().lower()
    for spec, names in _catalog():
        if wanted in names:
            return spec
    return None


def quantized_checkpoints(methods: tuple[str, ...], model_id: str = "") -> list[str]:
    """Catalog checkpoints quantized with one of `methods` (vLLM names: awq, gptq, fp8...):
    the ones of `model_id` itself first (its "-AWQ", "-GPTQ-Int4" repositories), then the rest."""
    own = model_id.strip().lower() + "-"
    matching = [spec.model_id for spec, _ in _catalog() if spec.native_quantization in methods]
    return sorted(matching, key=lambda name: not (model_id and name.lower().startswith(own)))


# How alike a mistyped id must be to a catalog id (difflib ratio) to be offered as "did you mean":
# 0.8 admits one wrong or missing part of a version ("Qwen2.5-70B" for "Qwen2.5-72B", "-GPTQ" for
# "-GPTQ-Int4") and keeps different families apart ("Llama-3.1-8B" vs "Qwen3-8B" is about 0.6).
CLOSE_MATCH_CUTOFF = 0.8

# A suggestion whose size is this many times off the size the typed id names is not offered
# ("Qwen2.5-70B" is close in spelling to the 7B, but means the 72B).
SIZE_RATIO_LIMIT = 1.5

_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")

# Tuning suffixes people add or drop ("Qwen3-8B-Instruct" for "Qwen3-8B").
_SUFFIX = re.compile(r"-(instruct|chat|it)$")


def _size_b(model_id: str) -> Optional[float]:
    """The parameter count an id names ("Qwen2.5-70B-Instruct" -> 70.0), in billions."""
    match = _SIZE.search(model_id.rsplit("/", 1)[-1])
    return float(match.group(1)) if match else None


def _likeness(a: str, b: str) -> float:
    plain = difflib.SequenceMatcher(None, a, b).ratio()
    return max(plain, difflib.SequenceMatcher(None, _SUFFIX.sub("", a), _SUFFIX.sub("", b)).ratio())


def close_model_ids(model_id: str, limit: int = 3) -> list[str]:
    """Catalog ids that a mistyped `model_id` probably meant, best first; [] when none is close.

    Spelling (difflib, CLOSE_MATCH_CUTOFF) finds them, on the HF and ModelScope ids and aliases;
    the size the typed id names ranks them and rules out the ones SIZE_RATIO_LIMIT off.
    Suggestions are spelled as HF ids.
    """
    wanted = model_id.strip().lower()
    size = _size_b(model_id)
    scored: dict[str, tuple[float, float]] = {}
    for spec, names in _catalog():
        if wanted in names:
            return []  # not a typo
        theirs = spec.total_params / 1e9
        if size and max(size, theirs) / min(size, theirs) > SIZE_RATIO_LIMIT:
            continue
        likeness = max(_likeness(wanted, name) for name in names)
        if likeness >= CLOSE_MATCH_CUTOFF:
            distance = abs(math.log(size / theirs)) if size else 0.0
            scored[spec.model_id] = (round(distance, 1), -likeness)
    return sorted(scored, key=scored.get)[:limit]


def did_you_mean(model_id: str, source: str = "huggingface") -> str:
    """" Did you mean X?" (or "X? (or Y or Z)") for a mistyped id, else "". With
    source="modelscope" the suggestions are spelled as ModelScope ids."""
    close = close_model_ids(model_id)
    if source == "modelscope":
        spelled = [(from_catalog(name) or None) for name in close]
        close = [spec.modelscope_id for spec in spelled if spec is not None and spec.modelscope_id]
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean {close[0]}?"
    return f" Did you mean {close[0]}? (or {' or '.join(close[1:])})"
