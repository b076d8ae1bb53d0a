"""Startup rules vLLM 0.33.0 applies per model type and GPU, kept as data with their source.

Each table or function names the file (and function) of the vllm 0.33.0 wheel it mirrors, so a
new pin is a matter of re-reading those places. Pure: no Pulumi, no vLLM import.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

# --- dtypes ------------------------------------------------------------------------------------

# vllm/config/model.py `_FLOAT16_NOT_SUPPORTED_MODELS` (model_type -> reason), enforced by
# `_check_valid_dtype` for an explicit dtype and skipped by `_resolve_auto_dtype` for auto.
FLOAT16_UNSUPPORTED: dict[str, str] = {
    "gemma2": "Numerical instability. Please use bfloat16 or float32 instead.",
    "gemma3": "Numerical instability. Please use bfloat16 or float32 instead.",
    "gemma3_text": "Numerical instability. Please use bfloat16 or float32 instead.",
    "glm4": "Numerical instability. Please use bfloat16 or float32 instead.",
}

# vllm/platforms/cuda.py `CudaPlatformBase.supported_dtypes`, in vLLM's order of preference:
# (lowest compute capability, dtypes). bfloat16 needs Ampere (8.0); Pascal to Turing run
# float16 and float32.
CUDA_SUPPORTED_DTYPES: tuple[tuple[float, tuple[str, ...]], ...] = (
    (8.0, ("bfloat16", "float16", "float32")),
    (6.0, ("float16", "float32")),
    (0.0, ("float32",)),
)

MIN_CC_BF16 = 8.0

# The activation dtypes this deployer sizes (sizing.memory counts 2 bytes per value).
SIZED_DTYPES = ("bfloat16", "float16")


def supported_dtypes(compute_capability: float) -> tuple[str, ...]:
    """The dtypes vLLM's CUDA platform reports for a GPU, most preferred first."""
    for min_cc, dtypes in CUDA_SUPPORTED_DTYPES:
        if compute_capability >= min_cc:
            return dtypes
    raise AssertionError("CUDA_SUPPORTED_DTYPES ends with a catch-all row")


def float16_refusal(model_type: str) -> Optional[str]:
    """vLLM's reason for refusing float16 on this model type, or None when it runs float16."""
    return FLOAT16_UNSUPPORTED.get(model_type)


def auto_dtype(model_type: str, config_dtype: str, compute_capability: float) -> str:
    """What `--dtype auto` resolves to for a generating model (not a pooling one).

    Mirrors vllm/config/model.py `_resolve_auto_dtype`: the platform's dtypes minus the ones
    the model type refuses; a float32 checkpoint is downcast to the first of them; the
    checkpoint's own dtype is kept when allowed, else the first allowed one. So gemma2 on a T4
    (no bfloat16, float16 refused) resolves to float32.
    """
    allowed = [
        dtype
        for dtype in supported_dtypes(compute_capability)
        if not (dtype == "float16" and float16_refusal(model_type))
    ]
    preferred = allowed[0]
    wanted = preferred if config_dtype == "float32" else config_dtype
    return wanted if wanted in allowed else preferred


# --- quantized weights ---------------------------------------------------------------------------

# The lowest compute capability each checkpoint format runs on: what the quantization configs
# answer in `get_min_capability` (vllm/model_executor/layers/quantization/), which
# `VllmConfig._get_quantization_config` (vllm/config/vllm.py) checks at startup ("The
# quantization method ... is not supported for the current GPU. Minimum capability: ..."):
# fp8.py Fp8Config 75 and online/base.py (--quantization fp8 on a 16-bit checkpoint) 75,
# fbgemm_fp8.py 80, mxfp4.py 80, auto_awq.py 75, auto_gptq.py 60.
QUANT_MIN_CAPABILITY: dict[str, float] = {
    "fp8": 7.5, "fbgemm_fp8": 8.0, "mxfp4": 8.0, "awq": 7.5, "gptq": 6.0,
}

# fp8 tensor cores start with Ada (8.9). Below that vLLM runs fp8 weights through the FP8 Marlin
# kernel, weight-only: dequantized to 16-bit in the matmul
# (vllm/model_executor/kernels/linear/scaled_mm/marlin.py MarlinFP8ScaledMMLinearKernel,
# "FP8 Marlin requires compute capability 7.5 or higher"; the CUDA kernel list of
# kernels/linear/__init__.py tries it after the fp8 GEMMs, which need 8.9).
FP8_TENSOR_CORE_CAPABILITY = 8.9

# --- the fp8 KV cache (kvCacheDtype: fp8, `--kv-cache-dtype fp8`) ------------------------------

# vLLM 0.33 takes the first attention backend that accepts the model and the GPU, in the order of
# vllm/platforms/cuda.py `_get_backend_priorities` (below sm100, not MLA: FLASH_ATTN, FLASHINFER,
# TRITON_ATTN, ...; each judged by v1/attention/backend.py `validate_configuration`):
# * FLASH_ATTN stores fp8 only with FlashAttention 3 on sm90 or 4 on sm100
#   (v1/attention/backends/fa_utils.py `flash_attn_supports_kv_cache_dtype`): not below 8.9.
# * FLASHINFER runs on 8.0 to 12.1 (flashinfer.py `supports_compute_capability`: sm75 is left
#   out while flashinfer-ai/flashinfer#3620 stands), head sizes 64/128/256/512
#   (`get_supported_head_sizes`), fp8 KV included, and attention sinks only on sm90/sm100/sm120
#   (`supports_sink`).
# * TRITON_ATTN takes the rest, and its impl refuses fp8 below 8.9 when the model is built:
#   triton_attn.py TritonAttentionImpl.__init__ "FP8 KV cache is not supported by the Triton
#   attention backend on ... native FP8 (fp8e4nv) requires SM89+".
# MLA models: below sm90 only TRITON_MLA is left, which refuses fp8 the same way
# (v1/attention/backends/mla/triton_mla.py, "(fp8e4nv) requires SM89+").
FP8_KV_NATIVE_CAPABILITY = 8.9
FLASHINFER_MIN_CAPABILITY = 8.0
FLASHINFER_HEAD_SIZES = (64, 128, 256, 512)
# Model types whose attention has sinks (vLLM passes has_sink for them: models/gpt_oss.py).
ATTENTION_SINK_MODEL_TYPES = ("gpt_oss",)


def fp8_kv_cache_refusal(
    compute_capability: float, head_size: int, mla: bool, model_type: str
) -> Optional[str]:
    """Why vLLM 0.33 cannot start with `--kv-cache-dtype fp8` on this GPU and model, or None.
    At 8.9+ every backend stores fp8; below, only FlashInfer does (8.0+, its head sizes, no MLA,
    no attention sinks), and Triton attention, which takes the rest, refuses it."""
    if compute_capability >= FP8_KV_NATIVE_CAPABILITY:
        return None
    native = f"fp8 KV cache needs compute capability {FP8_KV_NATIVE_CAPABILITY:g}+ (native fp8e4nv) or FlashInfer"
    if mla:
        return f"{native}, which serves no MLA model below 9.0: vLLM 0.33's Triton MLA refuses it"
    if compute_capability < FLASHINFER_MIN_CAPABILITY:
        return (f"{native} (8.0+, not on compute capability {compute_capability:g}): vLLM 0.33's "
                "Triton attention refuses it")
    if head_size not in FLASHINFER_HEAD_SIZES:
        return (f"{native}, whose head sizes are {'/'.join(map(str, FLASHINFER_HEAD_SIZES))} "
                f"(this model's is {head_size}): vLLM 0.33's Triton attention refuses it")
    if model_type in ATTENTION_SINK_MODEL_TYPES:
        return (f"{native}, which serves attention sinks ({model_type}) only from 9.0: vLLM "
                "0.33's Triton attention refuses it")
    return None


# --- RoPE and the context length ---------------------------------------------------------------

# vllm/config/model.py `_get_and_verify_max_len`: RoPE types whose max_position_embeddings is
# already the scaled length ("YaRN variants leave max_position_embeddings already scaled"), so
# vLLM does not multiply the derived length by their factor. Every other type with a factor
# (linear, dynamic, ntk, ...) is multiplied.
ROPE_TYPES_NOT_MULTIPLIED = frozenset(
    {"su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"}
)

# Same function: "Gemma3's max_model_len (128K) is already scaled by RoPE scaling, so we skip
# applying the scaling factor again" -- checked as a substring of hf_config.model_type.
ROPE_FACTOR_SKIPPED_MODEL_TYPE = "gemma3"

# vllm/model_executor/layers/rotary_embedding/__init__.py `get_rope`: the keys each RoPE type
# reads with rope_parameters[...] (a missing one is a KeyError while the model is built).
# The override reaches get_rope unchecked: vLLM sets dict-valued --hf-overrides after
# transformers' own standardization (vllm/config/model.py `_apply_dict_overrides`).
ROPE_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "dynamic": ("factor",),  # or "alpha"; ropeScaling always carries a factor
    "yarn": ("factor", "original_max_position_embeddings"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}

# transformers 5.16-5.20 (the range vLLM 0.33.0 requires) keeps these model types' RoPE
# parameters per layer type (models/*/configuration_*.py defaults keyed "full_attention" /
# "sliding_attention"); vLLM's models index them that way (vllm/model_executor/models/gemma3.py
# `config.rope_parameters[layer_type]`), so a flat rope override would break them.
ROPE_PER_LAYER_TYPE_MODEL_TYPES = frozenset(
    {
        "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "gemma4", "gemma4_text",
        "olmo3", "modernbert", "modernbert-decoder", "mimo_v2_flash", "laguna", "mellum",
    }
)

# vllm/transformers_utils/model_arch_config_convertor.py `derive_max_model_len_and_key`:
# the smallest of these keys is the model's length, except that model_max_length, when set,
# wins outright (Command-R / Cohere).
MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len",
)

# _get_and_verify_max_len: "Assuming the model's maximum length is 2048" when no key is set.
DEFAULT_MAX_LEN = 2048


def derived_max_len(config: dict[str, Any]) -> int:
    """The length vLLM derives from a (text) config.json before RoPE scaling."""
    present = [config[key] for key in MAX_LEN_KEYS if isinstance(config.get(key), (int, float))]
    if isinstance(config.get("model_max_length"), (int, float)) and config["model_max_length"]:
        return int(config["model_max_length"])
    return int(min(present)) if present else DEFAULT_MAX_LEN


def rope_multiplies(rope_type: Optional[str]) -> bool:
    """Does vLLM multiply the derived length by this RoPE type's factor?"""
    return rope_type is not None and rope_type not in ROPE_TYPES_NOT_MULTIPLIED


def vllm_context_limit(
    max_position_embeddings: int, model_type: str, rope: Iterable[dict[str, Any]]
) -> int:
    """The derived max_model_len vLLM 0.33 accepts, from `_get_and_verify_max_len`.

    `rope` is the model's rope parameters as vLLM sees them (one dict, or one per layer
    type); the last factor of a multiplying type wins, as in vLLM's loop. The tokenizer's
    model_max_length caps it only for pooling models with absolute position embeddings
    (`ModelConfig.get_and_verify_max_len`), which this deployer does not serve.
    """
    derived = float(max_position_embeddings)
    params = [p for p in rope if p]
    if params and ROPE_FACTOR_SKIPPED_MODEL_TYPE not in model_type:
        factor: Optional[float] = 1.0
        for p in params:
            if p.get("rope_type", "default") not in ROPE_TYPES_NOT_MULTIPLIED:
                factor = p.get("factor", factor)
        derived *= 1.0 if factor is None else float(factor)
    return int(derived)
