"""The per-GPU memory model: one function per term vLLM 0.33 spends GPU memory on at startup.

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
budget is ``gpu_memory_utilization`` x the GPU's CUDA total (``GpuMemory.cuda_total_gib``: the
total torch.cuda.mem_get_info() reports, which vLLM budgets against; the lowest public figure
for that GPU, or a conservatively derived one). The EC2 API's figure is *above* that total
(T4: 16 GiB listed, 14.58 GiB seen by CUDA) and is never budgeted against. So the plan never
picks an instance on which vLLM would refuse to start; the price of that is that a model which
would just squeeze onto an instance may be sized one step up.

Tolerance (checked by tests/sizing/ and printed by bench/sizing_accuracy.py):
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

import math

from sizing.errors import SizingError
from sizing.formats import BYTES_16BIT, WeightFormat
from sizing.gpus import GpuInstance
from sizing.models import ModelSpec


GIB = 2**30


# --- KV cache ----------------------------------------------------------------------------------


KV_BLOCK_TOKENS = 16  # vLLM's default --block-size; each sequence's cache is whole blocks


# --- activations, graphs, runtime (per GPU) ----------------------------------------------------


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


# --- weights -----------------------------------------------------------------------------------


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
        "does not know, and its checkpoint size is unknown (the repository has no "
        "model.safetensors.index.json with metadata.total_size). Pick a checkpoint quantized with "
        "a method the sizer knows (awq, gptq, fp8, fbgemm_fp8, mxfp4), or one whose repository "
        "has that index."
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


# --- KV cache per token ------------------------------------------------------------------------


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


# --- activations, graphs, runtime --------------------------------------------------------------


def batch_defaults(instance: GpuInstance) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks for this GPU when the user sets none.

    vLLM compares the device total it reads from CUDA (GiB) with the thresholds, so the CUDA
    total decides here too.
    """
    for min_gib, excluded, tokens, seqs in BATCH_DEFAULTS:
        if instance.cuda_memory_gib >= min_gib and not (excluded and excluded in instance.gpu_model):
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
