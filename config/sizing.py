"""Size the GPU host to the model: memory estimate per GPU, instance choice, sizing report.

How vLLM 0.33 spends GPU memory at startup (shared reference vllm-notes.md section 4, from
vllm/v1/worker/gpu_worker.py, vllm/v1/worker/utils.py, vllm/utils/mem_utils.py):

1. budget = gpu_memory_utilization x total GPU memory, per GPU;
2. the weights are loaded (each GPU holds its tensor-parallel shard);
3. a profile forward pass at ``max_num_batched_tokens`` measures the activation peak and the
   non-torch allocations (NCCL, cuBLAS workspaces);
4. the CUDA-graph memory is estimated and subtracted;
5. what is left is the KV cache; startup fails unless one ``max_model_len`` request fits.

The estimate mirrors those terms. Each is rounded *up*: weights come from exact parameter counts,
the activation/graph/runtime terms are upper-end estimates (not measured on a GPU here), and the
budget uses the EC2-reported GPU memory, which is below what CUDA reports. So the plan never
picks an instance on which vLLM would refuse to start; the price of that is that a model which
would just squeeze onto an instance may be sized one step up.

Tolerance (checked by tests/test_sizing.py and printed by bench/sizing_accuracy.py):
* weights: within +-3% of parameter count x bytes per parameter of the chosen format (the only
  gap is the small per-group quantization scales and replicated tensors, which are counted);
* KV cache: exact per token (2 x layers x KV heads x head dim x bytes), rounded up to whole
  16-token blocks per sequence;
* overall: conservative by design, by roughly 0.5-2 GiB per GPU versus vLLM's own profile.

Calibration (public vLLM logs; no GPU was available here): vllm-project/vllm PR #10511 shows
Llama-3-8B on an H100 with an activation peak of 1.26 GiB, where the formula below gives 2.1 GiB
for the same batch settings; PR #12126 and issue #16570 show 0.16-0.43 GiB of non-torch memory
after the baseline snapshot (TP 1 and TP 4), against 0.75 / 1.5 GiB assumed here; CUDA graph
captures are typically logged at 0.3-1 GiB, against 0.78-1.3 GiB here.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Callable, Optional

from config import instances as instance_catalog
from config.models import ModelResolutionError, ModelSpec, catalog_models, resolve
from config.plan import GpuInstance, MemoryBreakdown, SizingPlan
from config.settings import (
    DEFAULT_MAX_MODEL_LEN_CAP,
    NAMESPACE,
    TENSOR_PARALLEL_SIZES,
    ConfigError,
    StackConfig,
    parse,
)

GIB = 2**30
GB = 10**9

# --- weight formats ---------------------------------------------------------------------------

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
# Minimum compute capability per format. bf16 needs Ampere (8.0); fp8 weights/KV are sized only
# for Ada/Hopper+ (8.9): vLLM 0.33 would fall back to weight-only fp8 kernels below that, which
# this deployer does not offer; mxfp4 and AWQ per vLLM's quantization configs.
MIN_CC_BF16 = 8.0
MIN_CC_FP8 = 8.9
MIN_CC = {"fp8": MIN_CC_FP8, "fbgemm_fp8": MIN_CC_FP8, "mxfp4": 8.0, "awq": 7.5, "gptq": 7.5}

# --- KV cache ---------------------------------------------------------------------------------

KV_BLOCK_TOKENS = 16  # vLLM's default --block-size; each sequence's cache is whole blocks

# --- activations, graphs, runtime (per GPU) ---------------------------------------------------

ACTIVATION_BYTES = 2  # activations run in the 16-bit model dtype
# Hidden-state-sized tensors alive at the peak of one decoder layer (residual, normed input,
# attention output, MLP output, all-reduce buffer, and a spare for torch.compile's fused buffers).
RESIDUAL_STREAM_COPIES = 6
# The sampler's dummy run holds logits for max_num_seqs rows x full vocabulary: the 16-bit
# logits (2 B), their fp32 copy (4 B), probabilities (4 B) and a sorted copy for top-k/top-p (4 B).
LOGITS_BYTES_PER_ENTRY = 14
# MLA prefill decompresses the latent into per-head keys/values (qk_nope + qk_rope + v_head per
# head) for the tokens of the batch, twice over (keys and values are materialized together).
MLA_PREFILL_COPIES = 2
# Allocator fragmentation and small tensors the formula does not name.
ACTIVATION_FLOOR_GIB = 0.5
# CUDA graphs: vLLM captures piecewise graphs for batch sizes up to 512; their private memory
# pools grow with the number of layers. vllm-notes §4 gives 0.5-2 GiB; 0.5 + 0.01/layer lands at
# 0.78 GiB for 28 layers and 1.3 GiB for 80.
CUDA_GRAPH_BASE_GIB = 0.5
CUDA_GRAPH_PER_LAYER_GIB = 0.01
# Non-torch memory allocated after vLLM's baseline snapshot: cuBLAS/cuBLASLt workspaces, Triton
# and torch.compile kernels, the sampler's buffers. The CUDA context itself predates the
# snapshot and lives in the (1 - gpu_memory_utilization) share.
RUNTIME_OVERHEAD_GIB = 0.75
# With TP > 1: NCCL channel buffers plus vLLM's custom all-reduce IPC buffers.
NCCL_OVERHEAD_GIB = 0.75

# vLLM's GPU-dependent defaults (vllm/engine/arg_utils.py get_batch_defaults; vllm-notes §3):
# (min GiB per GPU, excluded GPU, max_num_batched_tokens, max_num_seqs), first match wins.
BATCH_DEFAULTS = ((160.0, None, 16384, 1024), (70.0, "A100", 8192, 1024), (0.0, None, 2048, 256))

# --- host RAM and disk ------------------------------------------------------------------------

# vLLM's safetensors loader reads the checkpoint one tensor at a time through mmap, so weights
# stream through the page cache and need not fit in RAM. What must fit: the OS, Docker and the
# vLLM API server + engine core (HOST_BASE_RAM_GIB), one worker process per GPU with its torch
# and CUDA host allocations (HOST_RAM_PER_GPU_GIB), and one checkpoint shard being read
# (HF's default max_shard_size is 5 GB).
HOST_BASE_RAM_GIB = 6.0
HOST_RAM_PER_GPU_GIB = 2.0
HOST_SHARD_RAM_GIB = 5.0
# Root volume: the pinned vllm/vllm-openai image (~20 GiB unpacked, plus its ~10 GiB compressed
# layers held while `docker pull` extracts them), the host OS (the DLAMI's root snapshot, with
# CUDA toolkits 12.8-13.2 side by side, is taken as 75 GB; an AMI snapshot is a hard floor on
# the root volume), and headroom for logs, the HF cache metadata and a second image on upgrade.
VLLM_IMAGE_DISK_GB = 30
HOST_OS_DISK_GB = 75
DISK_HEADROOM_GB = 10
DISK_HEADROOM_FRACTION = 0.10  # of the weights: partial downloads, tokenizer files, extras
DISK_ROUNDING_GB = 10


class SizingError(ValueError):
    """No instance can serve the model as configured; the message says why and the ways out."""


Resolver = Callable[..., ModelSpec]


# --- the weight format ------------------------------------------------------------------------


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
        return MIN_CC.get(self.method or "", 7.5)

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
    """The weight format vLLM will use, from the checkpoint and the `quantization` key."""
    native = spec.native_quantization
    asked = config.quantization
    if asked == "none" and native in FP8_METHODS and config.dtype != "auto":
        raise SizingError(sixteen_bit_refusal(spec, config))
    if asked == "none":
        return WeightFormat(native, spec.quant_bits, spec.quant_group_size)
    family = _QUANT_FAMILY.get(asked, asked)
    if family == "fp8" and native is None:
        return WeightFormat("fp8", 8, None, online=True, plan_quantization="fp8")
    if family == native:
        return WeightFormat(native, spec.quant_bits, spec.quant_group_size, plan_quantization=asked)
    have = f"a {native} checkpoint" if native else f"a {spec.native_dtype} (unquantized) checkpoint"
    fix = (
        "an fp8 checkpoint, or quantization=fp8 on a 16-bit one"
        if family == "fp8"
        else f"a {family.upper()} checkpoint (e.g. Qwen/Qwen2.5-7B-Instruct-AWQ)"
    )
    raise SizingError(
        f"{NAMESPACE}:quantization={asked!r} does not match model {spec.model_id}, which is {have}. "
        f"vLLM reads the quantization from the checkpoint: set quantization to none, or point "
        f"model at {fix}."
    )


FP8_METHODS = ("fp8", "fbgemm_fp8")


def sixteen_bit_refusal(spec: ModelSpec, config: StackConfig) -> str:
    """Why an explicit 16-bit dtype on an fp8 checkpoint is refused, with both sizings.

    `dtype` is documented as the weight and activation dtype, so dtype=bfloat16 with
    quantization=none reads as "16-bit weights". vLLM cannot give that: it keeps an fp8
    checkpoint's weights in fp8 (and refuses a --quantization that contradicts the checkpoint).
    Rather than silently serve fp8, say so, show what 16-bit would take, and name the fix.
    """
    as_16bit = replace(spec, native_quantization=None, quant_bits=None, checkpoint_bytes=None)
    judged_16bit = candidates(config, spec=as_16bit)
    holds_16bit = [c.instance.name for c in judged_16bit if c.fits]
    auto = config.model_copy(update={"dtype": "auto"})
    fp8_fits = [c for c in candidates(auto, spec=spec) if c.fits]
    lines = [
        f"{NAMESPACE}:dtype={config.dtype} asks for 16-bit weights, but {spec.model_id}'s checkpoint "
        f"is {spec.native_quantization} and vLLM serves it as {spec.native_quantization} whatever "
        "dtype says (dtype then sets only the activations).",
        "At 16-bit: " + nothing_fits_message(config, as_16bit, judged_16bit).split("\n", 1)[1].lstrip(),
    ]
    if holds_16bit:
        lines.append(
            f"  16-bit weights fit on one node only on {', '.join(holds_16bit)}, and only from a "
            "bfloat16 conversion of the checkpoint (set model to such a repository)."
        )
    if fp8_fits:
        best = fp8_fits[0]
        lines.append(
            f"Set dtype to auto to serve the {spec.native_quantization} weights with 16-bit "
            f"activations: the cheapest instance for that is {best.instance.name} "
            f"(${best.price:.2f}/h, {_gpus(best.instance)})."
        )
    return "\n".join(lines)


def weight_bytes(spec: ModelSpec, fmt: WeightFormat) -> int:
    """Bytes of all the weights in GPU memory, every expert included (all must be resident).

    Embeddings and lm_head stay 16-bit under every format (AWQ/GPTQ/fp8 checkpoints keep them so);
    mxfp4 (gpt-oss) quantizes only the MoE experts.
    """
    if spec.checkpoint_bytes and not fmt.online and spec.native_dtype not in ("float32", "float64"):
        if fmt.method == spec.native_quantization:
            return spec.checkpoint_bytes  # measured: the index's total_size, or the file size
    per_param = fmt.bytes_per_quantized_param(spec)
    if fmt.method is None:
        return math.ceil(spec.total_params * BYTES_16BIT)
    if fmt.method == "mxfp4":
        experts = spec.routed_expert_params
        return math.ceil((spec.total_params - experts) * BYTES_16BIT + experts * per_param)
    if fmt.method in ("fp8", "fbgemm_fp8", "awq", "gptq"):
        kept = spec.embedding_params + spec.lm_head_params
        return math.ceil(kept * BYTES_16BIT + (spec.total_params - kept) * per_param)
    raise SizingError(
        f"model {spec.model_id} uses quantization {fmt.method!r}, whose bytes per weight the sizer "
        "does not know, and its checkpoint size is unknown. Use a local model directory with "
        "model.safetensors.index.json (its total_size gives the exact size), or set instanceType."
    )


def _replicated_extra_bytes(spec: ModelSpec, fmt: WeightFormat, tp: int) -> float:
    """Bytes each GPU holds beyond weights/TP: tensors vLLM replicates instead of splitting."""
    if tp == 1:
        return 0.0
    per_param = fmt.bytes_per_quantized_param(spec)
    extra = 0.0
    if not spec.is_mla and spec.num_kv_heads < tp:
        # Each GPU keeps one whole KV head (QKVParallelLinear replicates when kv_heads < TP).
        extra += spec.kv_proj_params * per_param * (1 / spec.num_kv_heads - 1 / tp)
    if spec.is_mla:
        # q_a_proj and kv_a_proj_with_mqa are ReplicatedLinear in vLLM's DeepSeek model.
        low_rank = (spec.q_lora_rank or 0) + spec.kv_lora_rank + (spec.qk_rope_head_dim or 0)
        down = spec.hidden_size * low_rank
        extra += spec.num_layers * down * per_param * (1 - 1 / tp)
    if spec.is_moe:
        router = spec.moe_layers * spec.hidden_size * spec.num_experts
        extra += router * BYTES_16BIT * (1 - 1 / tp)
    return extra


def weights_per_gpu_bytes(spec: ModelSpec, fmt: WeightFormat, tp: int) -> float:
    """One GPU's share. vLLM splits embedding and lm_head by vocabulary across the TP ranks too
    (VocabParallelEmbedding / ParallelLMHead), so everything divides by TP except the replicated
    tensors counted in _replicated_extra_bytes."""
    return weight_bytes(spec, fmt) / tp + _replicated_extra_bytes(spec, fmt, tp)


# --- KV cache ---------------------------------------------------------------------------------


def kv_bytes_per_token_per_layer(spec: ModelSpec, kv_dtype_bytes: int, tp: int) -> int:
    """KV bytes one token costs in one attention layer on one GPU.

    MLA caches one latent (kv_lora_rank + qk_rope_head_dim) per token and layer, the same on
    every GPU (not split by TP). Otherwise K and V per KV head; each GPU holds kv_heads/TP heads,
    at least one (heads are replicated when there are fewer KV heads than GPUs).
    """
    if spec.is_mla:
        return (spec.kv_lora_rank + (spec.qk_rope_head_dim or 0)) * kv_dtype_bytes
    heads_per_gpu = max(1, math.ceil(spec.num_kv_heads / tp))
    return 2 * heads_per_gpu * spec.head_dim * kv_dtype_bytes


def kv_bytes_per_token(spec: ModelSpec, kv_dtype_bytes: int, tp: int = 1) -> int:
    """Per GPU, over the full-attention layers (sliding-window layers cost a fixed window)."""
    return spec.full_attention_layers * kv_bytes_per_token_per_layer(spec, kv_dtype_bytes, tp)


def kv_bytes_for_sequences(
    spec: ModelSpec, kv_dtype_bytes: int, tp: int, max_model_len: int, sequences: int
) -> int:
    """Per GPU, for `sequences` requests of `max_model_len` tokens each."""
    blocks = math.ceil(max_model_len / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS
    per_seq = blocks * kv_bytes_per_token(spec, kv_dtype_bytes, tp)
    if spec.sliding_window_layers:
        window = min(max_model_len, (spec.sliding_window or max_model_len) + KV_BLOCK_TOKENS)
        window = math.ceil(window / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS
        per_layer = kv_bytes_per_token_per_layer(spec, kv_dtype_bytes, tp)
        per_seq += spec.sliding_window_layers * window * per_layer
    return per_seq * sequences


# --- activations, graphs, runtime -------------------------------------------------------------


def batch_defaults(instance: GpuInstance) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks for this GPU when the user sets none."""
    for min_gib, excluded, tokens, seqs in BATCH_DEFAULTS:
        if instance.gpu_memory_gib >= min_gib and not (excluded and excluded in instance.gpu_model):
            return tokens, seqs
    raise AssertionError("BATCH_DEFAULTS ends with a catch-all row")


def activation_bytes(spec: ModelSpec, tp: int, batched_tokens: int, max_num_seqs: int) -> float:
    """Peak transient memory of the profile run at `batched_tokens`, per GPU."""
    hidden = RESIDUAL_STREAM_COPIES * spec.hidden_size
    if spec.is_mla:
        per_head = (spec.qk_nope_head_dim or 0) + (spec.qk_rope_head_dim or 0) + (spec.v_head_dim or 0)
        attention = MLA_PREFILL_COPIES * spec.num_attention_heads * per_head / tp
    else:
        attention = (spec.num_attention_heads + 2 * spec.num_kv_heads) * spec.head_dim / tp
    dense_mlp = 3 * spec.intermediate_size / tp  # gate_up output (2I) + activation output (I)
    moe_mlp = 0.0
    if spec.is_moe:
        # fused_moe caches: top-k x (2N gate_up + N activation + hidden down output), N = I/TP
        moe_mlp = spec.experts_per_token * (3 * spec.moe_intermediate_size / tp + spec.hidden_size)
        moe_mlp += 3 * spec.moe_intermediate_size * spec.n_shared_experts / tp
    mlp = max(dense_mlp if spec.moe_layers < spec.num_layers else 0.0, moe_mlp)
    per_token = (hidden + attention + mlp) * ACTIVATION_BYTES
    logits = min(max_num_seqs, batched_tokens) * spec.vocab_size * LOGITS_BYTES_PER_ENTRY
    return batched_tokens * per_token + logits + ACTIVATION_FLOOR_GIB * GIB


def cuda_graph_bytes(spec: ModelSpec) -> float:
    return (CUDA_GRAPH_BASE_GIB + CUDA_GRAPH_PER_LAYER_GIB * spec.num_layers) * GIB


def runtime_overhead_bytes(tp: int) -> float:
    return (RUNTIME_OVERHEAD_GIB + (NCCL_OVERHEAD_GIB if tp > 1 else 0.0)) * GIB


def host_ram_required_gib(tp: int) -> float:
    return HOST_BASE_RAM_GIB + HOST_RAM_PER_GPU_GIB * tp + HOST_SHARD_RAM_GIB


# --- context length, dtype, tensor parallelism ------------------------------------------------


def model_context_limit(spec: ModelSpec, config: StackConfig) -> int:
    """The longest max_model_len vLLM accepts for this model (after any rope scaling)."""
    scaling = config.rope_scaling
    if not scaling:
        return spec.max_position_embeddings
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type == "llama3":
        return spec.max_position_embeddings
    original = scaling.get("original_max_position_embeddings") or spec.max_position_embeddings
    return int(original * float(scaling.get("factor", 1)))


def resolve_max_model_len(spec: ModelSpec, config: StackConfig) -> int:
    limit = model_context_limit(spec, config)
    if config.max_model_len is None:
        return min(limit, DEFAULT_MAX_MODEL_LEN_CAP)
    if config.max_model_len > limit:
        hint = (
            f"set ropeScaling (e.g. {{\"rope_type\": \"yarn\", \"factor\": "
            f"{math.ceil(config.max_model_len / spec.max_position_embeddings)}.0, "
            f"\"original_max_position_embeddings\": {spec.max_position_embeddings}}}) if the model "
            "card allows it, or lower maxModelLen"
            if not config.rope_scaling
            else "raise the ropeScaling factor or lower maxModelLen"
        )
        raise SizingError(
            f"{NAMESPACE}:maxModelLen={config.max_model_len} is longer than {spec.model_id}'s "
            f"context of {limit} tokens; vLLM would refuse to start. {hint}"
        )
    return config.max_model_len


def resolve_dtype(
    spec: ModelSpec, config: StackConfig, instance: GpuInstance
) -> tuple[Optional[str], Optional[str]]:
    """(dtype vLLM will run, None) or (None, why this GPU cannot run the requested dtype)."""
    bf16_ok = instance.compute_capability >= MIN_CC_BF16
    if config.dtype == "bfloat16":
        if bf16_ok:
            return "bfloat16", None
        return None, (
            f"dtype=bfloat16 needs compute capability {MIN_CC_BF16:g}+, {instance.gpu_model} is "
            f"{instance.compute_capability:g} (set dtype auto or float16)"
        )
    if config.dtype == "float16" or spec.native_dtype == "float16":
        return "float16", None
    return ("bfloat16" if bf16_ok else "float16"), None


def tp_divides(spec: ModelSpec, tp: int) -> bool:
    """vLLM splits attention heads evenly; KV heads split evenly or are replicated evenly."""
    if spec.num_attention_heads % tp:
        return False
    kv = spec.num_attention_heads if spec.is_mla else spec.num_kv_heads
    return kv % tp == 0 or tp % kv == 0


def choose_tp(
    spec: ModelSpec, config: StackConfig, instance: GpuInstance
) -> tuple[Optional[int], Optional[str]]:
    """(TP, None) or (None, why not).

    auto = every GPU of the instance (the instance is paid for whole, and more GPUs means more KV
    cache); when the heads do not divide by the GPU count, the largest power of two below it that
    does. A TP smaller than the GPU count happens only then, or when the user set it.
    """
    heads = f"{spec.num_attention_heads} attention / {spec.num_kv_heads} KV heads"
    if config.tensor_parallel_size != "auto":
        tp = int(config.tensor_parallel_size)
        if tp > instance.gpu_count:
            return None, (
                f"tensorParallelSize={tp} needs {tp} GPUs, {instance.name} has {instance.gpu_count}"
            )
        if not tp_divides(spec, tp):
            return None, f"tensorParallelSize={tp} does not divide the model's {heads}"
        return tp, None
    for tp in sorted(TENSOR_PARALLEL_SIZES, reverse=True):
        if tp <= instance.gpu_count and tp_divides(spec, tp):
            return tp, None
    return None, f"no tensor-parallel size up to {instance.gpu_count} divides the model's {heads}"


# --- one candidate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    kind: str  # unsupported | filter | gpu | memory | host
    message: str


@dataclass(frozen=True)
class Candidate:
    """One instance type judged for one model and config."""

    instance: GpuInstance
    tensor_parallel_size: Optional[int]
    dtype: Optional[str]
    memory: Optional[MemoryBreakdown]  # per GPU; None when the GPU cannot run the model at all
    kv_capacity_tokens: int
    blockers: tuple[Blocker, ...]
    notes: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return not self.blockers

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(b.message for b in self.blockers)

    @property
    def price(self) -> Optional[float]:
        return self.instance.on_demand_usd_per_hour

    @property
    def sort_key(self) -> tuple:
        """Cheapest first; ties: fewer GPUs, then more headroom."""
        headroom = self.memory.headroom_gib if self.memory else -math.inf
        return (self.price is None, self.price or 0.0, self.instance.gpu_count, -headroom)


@dataclass(frozen=True)
class _Request:
    """What the config asks, resolved against the model once for all instances."""

    spec: ModelSpec
    fmt: WeightFormat
    max_model_len: int
    kv_dtype_bytes: int


def _request(config: StackConfig, spec: ModelSpec) -> _Request:
    return _Request(
        spec=spec,
        fmt=weight_format(spec, config),
        max_model_len=resolve_max_model_len(spec, config),
        kv_dtype_bytes=1 if config.kv_cache_dtype == "fp8" else BYTES_16BIT,
    )


def memory_breakdown(
    request: _Request, config: StackConfig, instance: GpuInstance, tp: int
) -> tuple[MemoryBreakdown, int]:
    """(per-GPU estimate, KV tokens the leftover budget holds) for this instance at this TP."""
    spec = request.spec
    default_tokens, default_seqs = batch_defaults(instance)
    batched = config.max_num_batched_tokens or default_tokens
    seqs = config.max_num_seqs or default_seqs
    kv_needed = kv_bytes_for_sequences(
        spec, request.kv_dtype_bytes, tp, request.max_model_len, config.min_concurrent_sequences
    )
    memory = MemoryBreakdown(
        weights_gib=weights_per_gpu_bytes(spec, request.fmt, tp) / GIB,
        kv_cache_gib=kv_needed / GIB,
        activation_gib=activation_bytes(spec, tp, batched, seqs) / GIB,
        cuda_graphs_gib=cuda_graph_bytes(spec) / GIB,
        runtime_overhead_gib=runtime_overhead_bytes(tp) / GIB,
        budget_gib=config.gpu_memory_utilization * instance.gpu_memory_gib,
    )
    # Capacity in full-attention tokens, after the fixed windows of the required sequences.
    per_token = kv_bytes_per_token(spec, request.kv_dtype_bytes, tp)
    one_seq = kv_bytes_for_sequences(spec, request.kv_dtype_bytes, tp, request.max_model_len, 1)
    full_seq = math.ceil(request.max_model_len / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS * per_token
    windows = (one_seq - full_seq) * config.min_concurrent_sequences
    free = (memory.budget_gib - memory.weights_gib - memory.overhead_gib) * GIB - windows
    capacity = int(free // per_token) if per_token and free > 0 else 0
    return memory, capacity


def evaluate(
    config: StackConfig,
    spec: ModelSpec,
    instance: GpuInstance,
    *,
    offered: Optional[Collection[str]] = None,
) -> Candidate:
    """Does this instance serve this model as configured? The public per-candidate fit check."""
    return _evaluate(_request(config, spec), config, instance, offered)


def _evaluate(
    request: _Request, config: StackConfig, instance: GpuInstance, offered: Optional[Collection[str]]
) -> Candidate:
    blockers: list[Blocker] = []
    notes: list[str] = []
    unsupported = instance_catalog.unsupported_reason(instance)
    if unsupported:
        return Candidate(instance, None, None, None, 0, (Blocker("unsupported", unsupported),))
    price = instance.on_demand_usd_per_hour
    if price is None:
        blockers.append(Blocker("unsold", "no on-demand price (sold as Capacity Blocks/UltraServer only)"))
    elif config.max_hourly_price_usd is not None and price > config.max_hourly_price_usd:
        blockers.append(
            Blocker("filter", f"${price:.2f}/h is above maxHourlyPriceUsd={config.max_hourly_price_usd:g}")
        )
    if offered is not None and instance.name not in offered:
        blockers.append(Blocker("filter", "not offered in the stack's region"))
    dtype, dtype_problem = resolve_dtype(request.spec, config, instance)
    if dtype_problem:
        blockers.append(Blocker("gpu", dtype_problem))
    elif dtype == "float16" and config.dtype == "auto" and request.spec.native_dtype != "float16":
        notes.append(f"{instance.gpu_model} has no bfloat16: serving in float16 (--dtype float16)")
    cc = instance.compute_capability
    if cc < request.fmt.min_compute_capability:
        blockers.append(
            Blocker("gpu", f"{request.fmt.label} weights need compute capability "
                    f"{request.fmt.min_compute_capability:g}+, {instance.gpu_model} is {cc:g}")
        )
    if config.kv_cache_dtype == "fp8" and cc < MIN_CC_FP8:
        blockers.append(
            Blocker("gpu", f"kvCacheDtype=fp8 needs compute capability {MIN_CC_FP8:g}+, "
                    f"{instance.gpu_model} is {cc:g}")
        )
    tp, tp_problem = choose_tp(request.spec, config, instance)
    if tp is None:
        blockers.append(Blocker("gpu", tp_problem or "no valid tensor-parallel size"))
        return Candidate(instance, None, dtype, None, 0, tuple(blockers), tuple(notes))
    if tp < instance.gpu_count:
        notes.append(f"tensor parallel {tp} uses {tp} of the {instance.gpu_count} GPUs")
    memory, capacity = memory_breakdown(request, config, instance, tp)
    if not memory.fits:
        blockers.append(Blocker("memory", _memory_shortfall(memory, request, config)))
    ram_needed = host_ram_required_gib(tp)
    if instance.memory_gib < ram_needed:
        blockers.append(
            Blocker("host", f"host RAM {instance.memory_gib:g} GiB < {ram_needed:g} GiB needed to load "
                    f"with {tp} GPU worker(s)")
        )
    return Candidate(instance, tp, dtype, memory, capacity, tuple(blockers), tuple(notes))


def _memory_shortfall(memory: MemoryBreakdown, request: _Request, config: StackConfig) -> str:
    if memory.weights_gib > memory.budget_gib:
        what = "the weights alone do not fit"
    elif memory.weights_gib + memory.overhead_gib > memory.budget_gib:
        what = "weights + activations/runtime leave no room for the KV cache"
    else:
        what = (f"KV for {config.min_concurrent_sequences} x {request.max_model_len} tokens "
                "does not fit")
    return (
        f"needs {memory.required_gib:.1f} GiB per GPU (weights {memory.weights_gib:.1f} + KV "
        f"{memory.kv_cache_gib:.1f} + overhead {memory.overhead_gib:.1f}), budget "
        f"{memory.budget_gib:.1f} GiB: {what}"
    )


def candidates(
    config: StackConfig,
    *,
    offered: Optional[Collection[str]] = None,
    spec: Optional[ModelSpec] = None,
    resolver: Resolver = resolve,
) -> list[Candidate]:
    """Every catalog instance judged for this config, cheapest first (fitting or not)."""
    if spec is None:
        spec = _resolve_spec(config, resolver)
    request = _request(config, spec)
    judged = [_evaluate(request, config, i, offered) for i in instance_catalog.load_instances()]
    return sorted(judged, key=lambda c: c.sort_key)


def _resolve_spec(config: StackConfig, resolver: Resolver) -> ModelSpec:
    try:
        return resolver(config.model, config.model_source, config.model_revision)
    except ModelResolutionError as exc:
        raise SizingError(str(exc)) from exc


# --- the plan ---------------------------------------------------------------------------------


def disk_size_gb(spec: ModelSpec, config: StackConfig) -> int:
    """Root volume: checkpoint as stored + vLLM image + OS + headroom, in whole 10 GB steps."""
    stored = WeightFormat(spec.native_quantization, spec.quant_bits, spec.quant_group_size)
    weights_gb = weight_bytes(spec, stored) / GB
    if spec.native_dtype == "float32" and not spec.checkpoint_bytes:
        weights_gb *= 2  # float32 checkpoints are twice the 16-bit size on disk
    headroom = max(DISK_HEADROOM_GB, DISK_HEADROOM_FRACTION * weights_gb)
    raw = weights_gb + VLLM_IMAGE_DISK_GB + HOST_OS_DISK_GB + headroom
    needed = int(math.ceil(raw / DISK_ROUNDING_GB) * DISK_ROUNDING_GB)
    if config.disk_size_gb is not None and config.disk_size_gb < needed:
        raise SizingError(
            f"{NAMESPACE}:diskSizeGb={config.disk_size_gb} is too small: {spec.model_id} needs "
            f"{needed} GB (weights {weights_gb:.0f} GB + vLLM image {VLLM_IMAGE_DISK_GB} GB + OS "
            f"{HOST_OS_DISK_GB} GB + headroom {headroom:.0f} GB). Set diskSizeGb to {needed} or "
            "more, or remove it to use that size."
        )
    return max(needed, config.disk_size_gb or 0)


def plan(
    config: StackConfig,
    *,
    offered: Optional[Collection[str]] = None,
    resolver: Resolver = resolve,
) -> SizingPlan:
    """The cheapest instance that serves the model as configured, and how vLLM will use it.

    `offered`: the instance types AWS offers in the stack's region (None = don't filter).
    Prices are us-east-1 on-demand; `spot` does not change the choice.
    """
    spec = _resolve_spec(config, resolver)
    judged = candidates(config, offered=offered, spec=spec)
    fitting = [c for c in judged if c.fits]
    if config.instance_type != "auto":
        chosen = _user_instance(config, spec, judged, fitting)
    elif fitting:
        chosen = fitting[0]
    else:
        raise SizingError(nothing_fits_message(config, spec, judged))
    return _to_plan(config, spec, chosen)


def _user_instance(
    config: StackConfig, spec: ModelSpec, judged: list[Candidate], fitting: list[Candidate]
) -> Candidate:
    mine = next((c for c in judged if c.instance.name == config.instance_type), None)
    if mine is None:
        try:
            instance_catalog.get(config.instance_type)
        except instance_catalog.UnknownInstanceType as exc:
            raise SizingError(f"{NAMESPACE}:instanceType={config.instance_type!r}: {exc}") from None
    if mine is not None and mine.fits:
        return mine
    cheapest = (
        f"the cheapest that fits is {fitting[0].instance.name} "
        f"(${fitting[0].price:.2f}/h, {_gpus(fitting[0].instance)})"
        if fitting
        else "no catalog instance fits either:\n" + nothing_fits_message(config, spec, judged)
    )
    why = "; ".join(mine.reasons) if mine else "not in the catalog"
    raise SizingError(
        f"{NAMESPACE}:instanceType={config.instance_type} cannot serve {config.model}: {why}. "
        f"{cheapest}. Set instanceType to auto (or to that type), or change the model settings."
    )


def _to_plan(config: StackConfig, spec: ModelSpec, chosen: Candidate) -> SizingPlan:
    request = _request(config, spec)
    assert chosen.memory is not None and chosen.tensor_parallel_size is not None and chosen.dtype
    default_tokens, _ = batch_defaults(chosen.instance)
    notes = list(chosen.notes)
    if spec.source != "catalog" and spec.checkpoint_bytes is None:
        notes.append("weights estimated from the architecture (no checkpoint size found)")
    if request.fmt.online:
        notes.append("fp8 weights are quantized by vLLM while loading the 16-bit checkpoint")
    if config.max_model_len is None and spec.max_position_embeddings > request.max_model_len:
        notes.append(
            f"maxModelLen defaults to {request.max_model_len} (the model allows "
            f"{spec.max_position_embeddings}); set maxModelLen to serve longer requests"
        )
    if config.dtype != "auto" and spec.native_quantization:
        notes.append(
            f"dtype {chosen.dtype} sets the activation dtype; the {spec.native_quantization} "
            "checkpoint's weights stay quantized"
        )
    if spec.native_quantization == "fbgemm_fp8":
        notes.append(
            "fbgemm_fp8 is deprecated in vLLM 0.33: served with --allow-deprecated-quantization"
        )
    if config.spot:
        notes.append("spot: the price shown is on-demand; spot does not change the choice")
    notes.append(
        f"prices are {instance_catalog.PRICE_REGION} on-demand as of {instance_catalog.PRICE_DATE}"
    )
    return SizingPlan(
        model=config.model,
        instance=chosen.instance,
        tensor_parallel_size=chosen.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        dtype=chosen.dtype,
        quantization=request.fmt.plan_quantization,
        kv_cache_dtype=config.kv_cache_dtype,
        max_model_len=request.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens or default_tokens,
        gpu_memory_utilization=config.gpu_memory_utilization,
        memory=chosen.memory,
        kv_cache_capacity_tokens=chosen.kv_capacity_tokens,
        disk_size_gb=disk_size_gb(spec, config),
        hourly_price_usd=chosen.price,
        notes=tuple(notes),
        rope_theta=spec.rope_theta,
        checkpoint_quantization=spec.native_quantization,
    )


def nothing_fits_message(config: StackConfig, spec: ModelSpec, judged: list[Candidate]) -> str:
    request = _request(config, spec)
    total = weight_bytes(spec, request.fmt)
    kv_token = kv_bytes_per_token(spec, request.kv_dtype_bytes, 1)
    kv_total = kv_bytes_for_sequences(
        spec, request.kv_dtype_bytes, 1, request.max_model_len, config.min_concurrent_sequences
    )
    lines = [
        f"no instance can serve {config.model} as configured.",
        f"  weights: {spec.total_params / 1e9:.1f}B parameters as {request.fmt.label} = "
        f"{total / GIB:.1f} GiB in all (split across the GPUs of one instance)",
        f"  KV cache: {kv_token:,} bytes/token x {config.min_concurrent_sequences} sequences x "
        f"{request.max_model_len} tokens = {kv_total / GIB:.1f} GiB"
        + (" (MLA: held in full on every GPU)" if spec.is_mla else " (split across GPUs)"),
    ]
    would_fit = [c for c in judged if c.blockers and all(b.kind == "filter" for b in c.blockers)]
    if would_fit:
        best = would_fit[0]
        lines.append(
            f"  {best.instance.name} (${best.price:.2f}/h) would fit but is excluded: "
            f"{'; '.join(best.reasons)}"
        )
    # The largest instance that fails on its own merits shows the physical limit.
    physical = [c for c in judged if any(b.kind in ("gpu", "memory", "host") for b in c.blockers)]
    if physical:
        largest = max(physical, key=lambda c: (c.instance.total_gpu_memory_gib, -(c.price or math.inf)))
        reasons = "; ".join(b.message for b in largest.blockers if b.kind != "filter")
        lines.append(
            f"  largest candidate: {largest.instance.name} ({_gpus(largest.instance)}, TP "
            f"{largest.tensor_parallel_size or '-'}): {reasons}"
        )
    lines += [
        "  ways out:",
        "    - a quantized checkpoint (AWQ/GPTQ 4-bit is ~1/4 of 16-bit) or quantization=fp8 (1/2);",
        "    - a shorter maxModelLen, or fewer minConcurrentSequences;",
        "    - kvCacheDtype=fp8 (halves the KV cache; needs L4/L40S/H100 or newer);",
        "    - a smaller model. Multi-node serving (pipeline parallel across hosts) is not "
        "supported yet.",
    ]
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------


def _gpus(instance: GpuInstance) -> str:
    model = instance.gpu_model.removeprefix("NVIDIA ")
    return f"{instance.gpu_count}x {model} {instance.gpu_memory_gib:g} GiB"


def format_report(plan: SizingPlan) -> str:
    """What the program logs at preview: the choice, the per-GPU memory arithmetic, the price."""
    mem = plan.memory
    price = f"${plan.hourly_price_usd:.4g}/h" if plan.hourly_price_usd is not None else "no price"
    lines = [
        f"sizing {plan.model}: {plan.instance.name} ({_gpus(plan.instance)}), "
        f"tensor parallel {plan.tensor_parallel_size}, {price} on-demand",
        f"  dtype {plan.dtype}, quantization {plan.quantization or 'from checkpoint'}, "
        f"kv cache {plan.kv_cache_dtype}, max model len {plan.max_model_len}, "
        f"max batched tokens {plan.max_num_batched_tokens}",
        f"  per GPU: weights {mem.weights_gib:.2f} GiB + KV cache {mem.kv_cache_gib:.2f} GiB + "
        f"activations {mem.activation_gib:.2f} GiB + CUDA graphs {mem.cuda_graphs_gib:.2f} GiB + "
        f"runtime {mem.runtime_overhead_gib:.2f} GiB = {mem.required_gib:.2f} GiB",
        f"  budget {mem.budget_gib:.2f} GiB ({plan.gpu_memory_utilization:g} x "
        f"{plan.instance.gpu_memory_gib:g} GiB), headroom {mem.headroom_gib:.2f} GiB",
        f"  KV cache holds ~{plan.kv_cache_capacity_tokens:,} tokens = "
        f"{plan.concurrent_full_length_sequences} full-length sequences",
        f"  root volume {plan.disk_size_gb} GB",
    ]
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def format_table(judged: Sequence[Candidate], *, show_all: bool = False) -> str:
    rows = [c for c in judged if show_all or c.fits]
    header = (
        f"{'instance':<20} {'GPUs':<50} {'TP':>2} {'$/h':>8} {'fit':<3} "
        f"{'weights':>8} {'KV':>7} {'other':>6} {'budget':>7} {'spare':>7}  why not"
    )
    lines = [header, "-" * len(header)]
    for c in rows:
        m = c.memory
        mem = (
            f"{m.weights_gib:>8.1f} {m.kv_cache_gib:>7.1f} {m.overhead_gib:>6.1f} "
            f"{m.budget_gib:>7.1f} {m.headroom_gib:>7.1f}"
            if m
            else f"{'-':>8} {'-':>7} {'-':>6} {'-':>7} {'-':>7}"
        )
        price = f"{c.price:>8.3f}" if c.price is not None else f"{'-':>8}"
        lines.append(
            f"{c.instance.name:<20} {_gpus(c.instance):<50} {c.tensor_parallel_size or '-':>2} "
            f"{price} {'yes' if c.fits else 'no':<3} {mem}  {'; '.join(c.reasons)}"
        )
    lines.append("memory columns are GiB per GPU; other = activations + CUDA graphs + runtime")
    return "\n".join(lines)


# --- CLI ----------------------------------------------------------------------------------------


def _cli_config(args: argparse.Namespace) -> StackConfig:
    raw: dict[str, object] = {"model": args.model}
    for key, value in (
        ("modelSource", args.model_source),
        ("maxModelLen", args.max_model_len),
        ("quantization", args.quantization),
        ("dtype", args.dtype),
        ("kvCacheDtype", args.kv_cache_dtype),
        ("minConcurrentSequences", args.min_concurrent_sequences),
        ("tensorParallelSize", args.tensor_parallel_size),
        ("instanceType", args.instance_type),
        ("maxHourlyPriceUsd", args.max_hourly_price_usd),
        ("gpuMemoryUtilization", args.gpu_memory_utilization),
    ):
        if value is not None:
            raw[key] = value
    return parse(raw)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m config.sizing",
        description="Which AWS GPU instance serves MODEL, and why (no AWS credentials needed).",
    )
    parser.add_argument("model", nargs="?", help="hub id (org/name) or an absolute model directory")
    parser.add_argument("--model-source", choices=("huggingface", "modelscope"))
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--quantization")
    parser.add_argument("--dtype")
    parser.add_argument("--kv-cache-dtype")
    parser.add_argument("--min-concurrent-sequences", type=int)
    parser.add_argument("--tensor-parallel-size")
    parser.add_argument("--instance-type")
    parser.add_argument("--max-hourly-price-usd", type=float)
    parser.add_argument("--gpu-memory-utilization", type=float)
    parser.add_argument(
        "--region", help="label only: offerings per region need AWS (pulumi preview checks them)"
    )
    parser.add_argument(
        "--offered", help="comma-separated instance types to consider (e.g. what a region offers)"
    )
    parser.add_argument("--all", action="store_true", help="list every instance, with why it does not fit")
    parser.add_argument("--list-models", action="store_true", help="list the catalog models and exit")
    args = parser.parse_args(argv)
    if args.list_models:
        print("\n".join(spec.model_id for spec in catalog_models()))
        return 0
    if not args.model:
        parser.error("MODEL is required (or --list-models)")
    try:
        config = _cli_config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    offered = {t.strip() for t in args.offered.split(",") if t.strip()} if args.offered else None
    try:
        spec = _resolve_spec(config, resolve)
        judged = candidates(config, offered=offered, spec=spec)
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(judged, show_all=args.all))
    print()
    if args.region and args.region != instance_catalog.PRICE_REGION:
        print(f"note: prices are {instance_catalog.PRICE_REGION}; offerings in {args.region} are not "
              "checked here (pass --offered, or run pulumi preview)")
    try:
        print(format_report(plan(config, offered=offered, resolver=lambda *_: spec)))
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
