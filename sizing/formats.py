"""Weight formats, dtypes and the compute capability each needs.

Which format vLLM 0.33 keeps the weights in (16-bit, fp8, AWQ/GPTQ int4, mxfp4), how many bytes
one quantized weight takes, and which dtype a GPU runs. Pure rules: the byte totals are in
``sizing.memory``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from config.constants import NAMESPACE
from config.settings import StackConfig
from sizing.errors import SizingError
from sizing.gpus import GpuInstance
from sizing.models import ModelSpec, quantized_checkpoints
from sizing.vllm_rules import (
    MIN_CC_BF16,
    QUANT_MIN_CAPABILITY,
    SIZED_DTYPES,
    auto_dtype,
    float16_refusal,
    supported_dtypes,
)


BYTES_16BIT = 2

# fp8 e4m3 weights: 1 byte each, plus one fp32 scale per 128x128 block (DeepSeek-style block
# quantization; per-channel or per-tensor scales, the other fp8 layouts, are smaller).
FP8_BYTES_PER_PARAM = 1 + 4 / (128 * 128)

# AWQ/GPTQ: packed int4 (bits/8 bytes), plus per group of `group_size` input channels one fp16
# scale (2 B) and one packed zero point (bits/8 B). 4-bit, group 128: 0.5 + 2.5/128 = 0.5195 B.
# GPTQ adds an int32 g_idx per input channel (4 B per row, spread over the row's outputs).
QUANT_SCALE_BYTES = 2

GPTQ_GIDX_BYTES = 4

DEFAULT_QUANT_GROUP = 128

# The lowest GPU vLLM 0.33.0 ships kernels for (sizing.gpus.MIN_COMPUTE_CAPABILITY): the floor of
# every format whose own minimum is lower (gptq: 6.0).
MIN_CC_ANY = 7.5

FP8_METHODS = ("fp8", "fbgemm_fp8")


@dataclass(frozen=True)
class WeightFormat:
    """How the weights sit in GPU memory."""

    method: Optional[str]  # None = 16-bit; else fp8 | fbgemm_fp8 | awq | gptq | mxfp4 | other
    bits: Optional[float] = None
    group_size: Optional[int] = None
    online: bool = False  # quantized by vLLM at load time (16-bit checkpoint, --quantization fp8)
    plan_quantization: Optional[str] = None  # what `--quantization` gets (None: read checkpoint)

    @property
    def label(self) -> str:
        if self.method is None:
            return "16-bit"
        if self.method in ("awq", "gptq"):
            return f"{self.method} {self.bits:g}-bit g{self.group_size or '-'}"
        return f"{self.method} (online)" if self.online else self.method

    @property
    def min_compute_capability(self) -> float:
        """vLLM's minimum for the format (sizing.vllm_rules.QUANT_MIN_CAPABILITY)."""
        return max(MIN_CC_ANY, QUANT_MIN_CAPABILITY.get(self.method or "", MIN_CC_ANY))

    def bytes_per_quantized_param(self, spec: ModelSpec) -> float:
        """Bytes of one weight in the layers this format quantizes (2 for 16-bit)."""
        if self.method is None:
            return BYTES_16BIT
        if self.method in ("fp8", "fbgemm_fp8"):
            return FP8_BYTES_PER_PARAM
        if self.method == "mxfp4":
            return (self.bits or 4.25) / 8
        if self.method in ("awq", "gptq"):
            bits = self.bits or 4
            group = self.group_size or DEFAULT_QUANT_GROUP
            per_param = bits / 8 + (QUANT_SCALE_BYTES + bits / 8) / group
            if self.method == "gptq":
                per_param += GPTQ_GIDX_BYTES / spec.hidden_size
            return per_param
        return BYTES_16BIT


_QUANT_FAMILY = {"awq": "awq", "awq_marlin": "awq", "gptq": "gptq", "gptq_marlin": "gptq"}


def weight_format(spec: ModelSpec, config: StackConfig) -> WeightFormat:
    """The weight format vLLM will use, from the checkpoint and the `quantization` key.

    An explicit 16-bit dtype on an fp8 checkpoint is refused before this is called
    (``sizing.refusals.sixteen_bit_refusal``), since the refusal sizes both alternatives.
    Raises SizingError when the `quantization` key contradicts the checkpoint.
    """
    native = spec.native_quantization
    asked = config.quantization
    if asked == "none":
        return WeightFormat(native, spec.quant_bits, spec.quant_group_size)
    family = _QUANT_FAMILY.get(asked, asked)
    if family == "fp8" and native is None:
        return WeightFormat("fp8", 8, None, online=True, plan_quantization="fp8")
    if family == native:
        return WeightFormat(native, spec.quant_bits, spec.quant_group_size, plan_quantization=asked)
    have = f"a {native} checkpoint" if native else f"a {spec.native_dtype} (unquantized) checkpoint"
    if family == "fp8":
        fix = "an fp8 checkpoint, or quantization=fp8 on a 16-bit one"
    else:
        examples = quantized_checkpoints((family,), spec.model_id)
        example = f" (e.g. {examples[0]})" if examples else ""
        fix = f"a {family.upper()} checkpoint{example}"
    raise SizingError(
        f"{NAMESPACE}:quantization={asked!r} does not match model {spec.model_id}, which is {have}. "
        f"vLLM reads the quantization from the checkpoint: set quantization to none, or point "
        f"model at {fix}."
    )


def resolve_dtype(
    spec: ModelSpec, config: StackConfig, instance: GpuInstance
) -> tuple[Optional[str], Optional[str]]:
    """(dtype vLLM will run, None) or (None, why this GPU cannot run the model as configured).

    auto resolves as vllm/config/model.py `_resolve_auto_dtype` does (sizing.vllm_rules).
    When that lands on float32 (a model type that refuses float16 on a GPU without bfloat16,
    e.g. Gemma-2 on a T4), the GPU is skipped: this deployer sizes 16-bit activations only,
    and float32 would double the weights. An explicit float16 on such a model type is refused
    before any GPU is judged (`dtype_refusal`).
    """
    cc = instance.compute_capability
    gpu = f"{instance.gpu_model} (compute capability {cc:g})"
    if config.dtype == "auto":
        dtype = auto_dtype(spec.model_type, spec.native_dtype, cc)
        if dtype in SIZED_DTYPES:
            return dtype, None
        return None, (
            f"{gpu} has no bfloat16 and vLLM 0.33 refuses float16 for model type "
            f"{spec.model_type}, so dtype auto would run float32, which this deployer does not "
            f"size; needs compute capability {MIN_CC_BF16:g}+ for bfloat16"
        )
    if config.dtype in supported_dtypes(cc):
        return config.dtype, None
    return None, (
        f"dtype={config.dtype} needs compute capability {MIN_CC_BF16:g}+, {instance.gpu_model} is "
        f"{cc:g} (set dtype to auto, or float16 where the model allows it)"
    )


def dtype_refusal(spec: ModelSpec, config: StackConfig) -> Optional[str]:
    """Why vLLM 0.33 refuses the explicit `dtype` for this model on every GPU, or None."""
    reason = float16_refusal(spec.model_type) if config.dtype == "float16" else None
    if reason is None:
        return None
    return (
        f"{NAMESPACE}:dtype=float16 is refused by vLLM 0.33 for {spec.model_id} (model type "
        f"{spec.model_type}: \"{reason}\", vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS). "
        "Set dtype to bfloat16 or auto (pulumi config set dtype auto); either needs a GPU with "
        f"compute capability {MIN_CC_BF16:g}+ (A10G, L4, L40S, A100, H100 and newer)."
    )
