"""Whether a quantized checkpoint's weights split over N tensor-parallel GPUs in vLLM 0.33.

A tensor-parallel split cuts row-parallel layers (o_proj, down_proj, a shared expert's down
projection: their *inputs* are sharded) and column-parallel layers (qkv, gate_up, MLA's q_b/kv_b:
their *outputs* are sharded), and the routed experts' intermediate size. Quantized weights carry
one scale per group of input channels, so a shard must not cut a group in two. The rules, from
the vLLM 0.33.0 source:

AWQ / GPTQ (4-bit: 8 values per int32, groups of `group_size` input channels)
* Marlin is the kernel on CUDA when the GPU is sm75+ and the group size is one of -1, 32, 64,
  128 (model_executor/layers/quantization/utils/marlin_utils.py `_check_marlin_supported`,
  MARLIN_SUPPORTED_GROUP_SIZES). It pads thread tiles itself, but "a group straddling TP ranks
  cannot be fixed by padding" (model_executor/kernels/linear/mixed_precision/marlin.py
  `MarlinLinearKernel.can_implement`; auto_awq.py `check_marlin_supports_layer` with
  allow_tile_padding): every row-parallel input shard must be a multiple of the group size.
* AWQ off Marlin falls back to `AutoAWQLinearMethod` (auto_awq.py `BaseAWQLinearMethod.
  create_weights`): "The input size is not aligned with the quantized weight shape" unless
  input shard % group == 0, and "The output size is not aligned" unless output shard % 8 == 0.
* GPTQ has no other kernel path: `AutoGPTQLinearMethod` calls `verify_marlin_supported`
  (auto_gptq.py), so a group size Marlin does not take is refused on every GPU.
* Routed experts (auto_awq.py / auto_gptq.py get_quant_method): Marlin MoE needs hidden % 128 == 0
  and the expert intermediate shard % group == 0 (marlin_utils.py
  `check_moe_marlin_supports_config`); otherwise MoE WNA16 (moe_wna16.py
  `MoeWNA16Method.create_weights`) halves the group until it divides both the shard and the
  hidden size, and asserts it stays >= 32.

fp8 with block scales [block_n, block_k] (model_executor/layers/quantization/utils/fp8_utils.py
`validate_fp8_block_shape` / `validate_fp8_block_shape_moe`): with TP > 1, a row-parallel input
shard % block_k == 0, and each column-parallel output shard % block_n == 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sizing.formats import DEFAULT_QUANT_GROUP, WeightFormat
from sizing.models import ModelSpec

# marlin_utils.py MARLIN_SUPPORTED_GROUP_SIZES; Marlin needs compute capability 7.5
# (query_marlin_supported_quant_types returns nothing below 75).
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)

MIN_CC_MARLIN = 7.5

# auto_awq.py AutoAWQConfig.pack_factor = 32 // weight_bits (4-bit: 8 per int32).
INT32_BITS = 32

# marlin_utils.py check_moe_marlin_supports_config: hidden_size % 128 == 0.
MARLIN_MOE_HIDDEN_MULTIPLE = 128

# moe_wna16.py: `assert group_size >= 32` after halving.
WNA16_MIN_GROUP = 32


@dataclass(frozen=True)
class _Layer:
    name: str
    size: int  # the dimension that is sharded: inputs (row) or outputs (column)
    row_parallel: bool


def _dense_layers(spec: ModelSpec) -> list[_Layer]:
    """The sharded linear layers of one decoder layer, with the dimension TP cuts."""
    layers: list[_Layer] = []
    if spec.is_mla:
        heads = spec.num_attention_heads
        nope, rope, v = spec.qk_nope_head_dim or 0, spec.qk_rope_head_dim or 0, spec.v_head_dim or 0
        layers += [
            _Layer("q_b_proj" if spec.q_lora_rank else "q_proj", heads * (nope + rope), False),
            _Layer("kv_b_proj", heads * (nope + v), False),
            _Layer("o_proj", heads * v, True),
        ]
    else:
        layers += [
            _Layer("qkv_proj", spec.num_attention_heads * spec.head_dim, False),
            _Layer("o_proj", spec.num_attention_heads * spec.head_dim, True),
        ]
    if spec.moe_layers < spec.num_layers:  # dense MLP layers
        layers += [
            _Layer("gate_up_proj", spec.intermediate_size, False),
            _Layer("down_proj", spec.intermediate_size, True),
        ]
    if spec.is_moe and spec.n_shared_experts:
        shared = spec.moe_intermediate_size * spec.n_shared_experts
        layers += [
            _Layer("shared_experts.gate_up_proj", shared, False),
            _Layer("shared_experts.down_proj", shared, True),
        ]
    return layers


def shard_problem(
    spec: ModelSpec, fmt: WeightFormat, tp: int, compute_capability: float, expert_parallel: bool
) -> Optional[str]:
    """Why vLLM 0.33 cannot build this checkpoint's layers at tensor parallel `tp`, or None."""
    if fmt.method in ("awq", "gptq"):
        return _int4_problem(spec, fmt, tp, compute_capability, expert_parallel)
    if fmt.method in ("fp8", "fbgemm_fp8") and spec.weight_block_size and not fmt.online and tp > 1:
        return _fp8_block_problem(spec, tp, expert_parallel)
    return None


def _int4_problem(
    spec: ModelSpec, fmt: WeightFormat, tp: int, cc: float, expert_parallel: bool
) -> Optional[str]:
    group = fmt.group_size or DEFAULT_QUANT_GROUP
    bits = int(fmt.bits or 4)
    pack = INT32_BITS // bits
    label = f"{fmt.method.upper()} group size {group}"
    marlin = cc >= MIN_CC_MARLIN and group in MARLIN_GROUP_SIZES
    if fmt.method == "gptq" and not marlin:
        return (
            f"{label}: vLLM 0.33 runs GPTQ only with Marlin kernels, which take group sizes "
            f"{', '.join(map(str, MARLIN_GROUP_SIZES))} on compute capability {MIN_CC_MARLIN:g}+"
        )
    for layer in _dense_layers(spec):
        shard = layer.size // tp
        if layer.row_parallel and group > 0 and group < layer.size and shard % group:
            return (
                f"tensor parallel {tp} splits {layer.name}'s {layer.size} inputs into {shard} per "
                f"GPU, not a multiple of the {label} (vLLM 0.33 cannot split a quantization group "
                "across GPUs)"
            )
        if not marlin and not layer.row_parallel and shard % pack:
            return (
                f"tensor parallel {tp} splits {layer.name}'s {layer.size} outputs into {shard} per "
                f"GPU, not a multiple of {pack} (AWQ's int32 packing outside Marlin kernels)"
            )
    if spec.is_moe and spec.moe_intermediate_size:
        return _int4_moe_problem(spec, group, tp, expert_parallel, label)
    return None


def _int4_moe_problem(
    spec: ModelSpec, group: int, tp: int, expert_parallel: bool, label: str
) -> Optional[str]:
    inter = spec.moe_intermediate_size if expert_parallel else spec.moe_intermediate_size // tp
    hidden = spec.hidden_size
    if hidden % MARLIN_MOE_HIDDEN_MULTIPLE == 0 and group in MARLIN_GROUP_SIZES and (
        group <= 0 or inter % group == 0
    ):
        return None
    wna16 = group
    while wna16 > 0 and (inter % wna16 or hidden % wna16):
        wna16 //= 2
    if group <= 0 or wna16 >= WNA16_MIN_GROUP:
        return None
    return (
        f"tensor parallel {tp} leaves {inter} expert intermediate channels per GPU, which no "
        f"group of {WNA16_MIN_GROUP}+ channels divides together with the hidden size {hidden} "
        f"({label}; vLLM 0.33's MoE kernels need that)"
    )


def _fp8_block_problem(spec: ModelSpec, tp: int, expert_parallel: bool) -> Optional[str]:
    assert spec.weight_block_size is not None
    block_n, block_k = spec.weight_block_size
    for layer in _dense_layers(spec):
        shard = layer.size // tp
        grain, side = (block_k, "inputs") if layer.row_parallel else (block_n, "outputs")
        if shard % grain:
            return (
                f"tensor parallel {tp} splits {layer.name}'s {layer.size} {side} into {shard} per "
                f"GPU, not a multiple of the fp8 block size {grain} (vLLM 0.33 "
                "validate_fp8_block_shape)"
            )
    if spec.is_moe and not expert_parallel:
        inter = spec.moe_intermediate_size // tp
        if inter % block_n or inter % block_k:
            return (
                f"tensor parallel {tp} leaves {inter} expert intermediate channels per GPU, not a "
                f"multiple of the fp8 block size {block_n}x{block_k} (vLLM 0.33 "
                "validate_fp8_block_shape_moe)"
            )
    return None
