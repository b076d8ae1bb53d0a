"""The ways out a refusal offers when a model fits no instance: only the ones that apply, each
naming the key to change and what it saves."""

from __future__ import annotations

from config.constants import TENSOR_PARALLEL_SIZES
from config.settings import StackConfig
from sizing.formats import FP8_METHODS, WeightFormat
from sizing.models import ModelSpec, quantized_checkpoints
from sizing.parallel import tp_divides


def ways_out(config: StackConfig, spec: ModelSpec, fmt: WeightFormat, max_model_len: int) -> list[str]:
    """What the user can change so the model fits, each naming the key and what it does; only
    the ones that apply (an fp8 checkpoint is not told to try fp8, a set kvCacheDtype=fp8 is not
    suggested again, a tensorParallelSize that divides no heads gets the ones that do)."""
    ways: list[str] = []
    own_4bit = [
        name for name in quantized_checkpoints(("awq", "gptq"), spec.model_id)
        if name.lower().startswith(spec.model_id.lower() + "-")
    ]
    example = f", e.g. model={own_4bit[0]}" if own_4bit else ""
    if fmt.method is None:
        ways.append(
            f"a 4-bit AWQ/GPTQ checkpoint of the model (about 1/4 of the 16-bit weights{example}), or "
            "quantization=fp8 (1/2: vLLM quantizes the 16-bit weights while loading; needs "
            "L4/L40S/H100 or newer)"
        )
    elif fmt.method in FP8_METHODS:
        ways.append(
            f"a 4-bit AWQ/GPTQ checkpoint (about half of these {fmt.method} weights{example}); the "
            f"checkpoint is already {fmt.method}, so quantization=fp8 would save nothing"
        )
    ways.append(
        f"a shorter maxModelLen (now {max_model_len}), or fewer minConcurrentSequences "
        f"(now {config.min_concurrent_sequences})"
    )
    if config.kv_cache_dtype != "fp8":
        ways.append(  # vLLM 0.33's rule: sizing/vllm_rules.py fp8_kv_cache_refusal
            "kvCacheDtype=fp8 (halves the KV cache; needs compute capability 8.9+: L4, L40S, "
            "H100; or 8.0+ with head sizes 64/128/256/512 and no MLA: A10G, A100)"
        )
    if config.tensor_parallel_size != "auto" and not tp_divides(spec, int(config.tensor_parallel_size)):
        valid = [str(tp) for tp in TENSOR_PARALLEL_SIZES if tp_divides(spec, tp)]
        ways.append(
            f"tensorParallelSize=auto, or one of {', '.join(valid)}: the sizes that divide the "
            f"model's {spec.num_attention_heads} attention / {spec.num_kv_heads} KV heads "
            f"(not {config.tensor_parallel_size})"
        )
    ways.append("a smaller model")
    return ways
