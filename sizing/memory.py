"""The per-GPU memory model: one function per term vLLM 0.33 spends GPU memory on at startup.

How vLLM 0.33 sizes the KV cache (vllm/v1/worker/gpu_worker.py ``init_device`` and
``determine_available_memory``, vllm/v1/worker/utils.py ``request_memory``,
vllm/utils/mem_utils.py ``memory_profiling``):

1. after the CUDA context, NCCL and the cuBLAS handles exist, a snapshot is taken and
   ``requested = ceil(gpu_memory_utilization x CUDA total)`` (the budget, ``budget_bytes``);
2. the weights load: "Model loading took X GiB" (``weights_per_gpu_bytes``);
3. ``profile_run`` runs one dummy forward pass of ``max_num_batched_tokens`` tokens with
   attention skipped, then the sampler over ``min(max_num_batched_tokens, max_num_seqs)`` rows of
   logits, twice (the second pass with warm-up sampling parameters). Its transient peak is the
   activation term (``activation_bytes``); what else the pass leaves allocated outside torch
   (cuBLAS workspaces, NCCL/all-reduce buffers with tensor parallelism) is the non-torch term
   (``non_torch_bytes``);
4. ``profile_cudagraph_memory`` captures the CUDA graphs into a throwaway pool and the estimate
   is subtracted too (``cuda_graph_bytes``; since vLLM 0.21);
5. "Available KV cache memory" = requested - weights - non-torch - activation - CUDA graphs;
   ``sizing.kv_cache`` turns it into blocks, tokens and concurrency, and checks that one request
   of ``max_model_len`` fits (else vLLM refuses to start).

Every calibration constant comes from sizing/catalog/memory-calibration.csv (``sizing.calibration``),
where it names the logs it was fitted on; the accuracy against every calibration log is printed
by ``bench/sizing_accuracy.py`` and written up in docs/sizing-accuracy.md. The constants are
fitted to the middle of the logs, not padded: the fit verdict is vLLM's own arithmetic with the
estimated terms.
"""

from __future__ import annotations

import math

from sizing.calibration import ACCOUNTING_033, Accounting, value
from sizing.errors import SizingError
from sizing.formats import BYTES_16BIT, WeightFormat
from sizing.gpus import GpuInstance
from sizing.models import MXFP4_BITS, ModelSpec


GIB = 2**30


# --- KV cache ----------------------------------------------------------------------------------


KV_BLOCK_TOKENS = 16  # vLLM's default --block-size; each sequence's cache is whole blocks


# vLLM's GPU-dependent defaults (vllm/engine/arg_utils.py get_batch_defaults; vllm-notes §3):
# (min GiB per GPU, excluded GPU, max_num_batched_tokens, max_num_seqs), first match wins.
BATCH_DEFAULTS = ((160.0, None, 16384, 1024), (70.0, "A100", 8192, 1024), (0.0, None, 2048, 256))


# --- weights -----------------------------------------------------------------------------------


def weight_bytes(spec: ModelSpec, fmt: WeightFormat) -> int:
    """Bytes of all the weights as stored (every expert included: all must be resident).

    Embeddings and lm_head stay 16-bit under every format (AWQ/GPTQ/fp8 checkpoints keep them so);
    mxfp4 (gpt-oss) quantizes only the MoE experts. What one GPU holds, padding and duplicated
    tensors included, is ``weights_per_gpu_bytes``.
    """
    if spec.checkpoint_bytes and not fmt.online and spec.native_dtype not in ("float32", "float64"):
        if fmt.method == spec.native_quantization and fmt.method != "mxfp4":
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


def mxfp4_alignment(compute_capability: float) -> tuple[str, int, int]:
    """(MoE backend, hidden alignment, per-GPU intermediate alignment) vLLM 0.33 picks for gpt-oss
    MXFP4 experts on this GPU (vllm/model_executor/layers/fused_moe/oracle/mxfp4.py: the gpt-oss
    backend priority and ``mxfp4_round_up_hidden_size_and_intermediate_size``):

    * Hopper (9.x): the OAI Triton kernels (SM90 up to SM12x, experts/gpt_oss_triton_kernels_moe.py),
      intermediate rounded up to 64, hidden kept;
    * data-centre Blackwell (10.x): FlashInfer TRT-LLM, intermediate to 128, hidden to 256;
    * Ampere/Ada and consumer Blackwell (12.x, where Marlin is ranked first): Marlin, the same
      rounding as TRT-LLM.
    """
    if 9.0 <= compute_capability < 10.0:
        return "triton", 1, 64
    if 10.0 <= compute_capability < 11.0:
        return "trtllm", 256, 128
    return "marlin", 256, 128


def mxfp4_expert_bytes_per_gpu(
    spec: ModelSpec, tp: int, accounting: Accounting = ACCOUNTING_033, compute_capability: float = 9.0
) -> float:
    """One GPU's MXFP4 experts as vLLM holds them: E x 3 x hidden x intermediate/TP weights per MoE
    layer, both rounded up to the backend's alignment (``mxfp4_alignment``), at 4.25 bits (4-bit
    E2M1 + one E8M0 scale per 32); before vLLM 0.24 the Triton backend also kept the unswizzled
    scales (``mxfp4_extra_scale_bits``)."""
    backend, hidden_align, inter_align = mxfp4_alignment(compute_capability)
    hidden = math.ceil(spec.hidden_size / hidden_align) * hidden_align
    per_gpu_inter = math.ceil(spec.moe_intermediate_size / tp / inter_align) * inter_align
    weights = spec.moe_layers * spec.num_experts * 3 * hidden * per_gpu_inter
    extra_bits = accounting.mxfp4_extra_scale_bits if backend == "triton" else 0.0
    return weights * (MXFP4_BITS + extra_bits) / 8


def weights_per_gpu_bytes(
    spec: ModelSpec,
    fmt: WeightFormat,
    tp: int,
    accounting: Accounting = ACCOUNTING_033,
    compute_capability: float = 9.0,
) -> float:
    """One GPU's share: what vLLM logs as "Model loading took". vLLM splits embedding and lm_head
    by vocabulary across the TP ranks too (VocabParallelEmbedding / ParallelLMHead), so everything
    divides by TP except the replicated tensors (``_replicated_extra_bytes``). MXFP4 experts are
    sized in vLLM's own layout for the GPU (``mxfp4_expert_bytes_per_gpu``) plus ``mxfp4_load_extra``."""
    if fmt.method == "mxfp4":
        rest = (spec.total_params - spec.routed_expert_params) * BYTES_16BIT / tp
        extra = _replicated_extra_bytes(spec, fmt, tp) + value("mxfp4_load_extra") * GIB
        return rest + mxfp4_expert_bytes_per_gpu(spec, tp, accounting, compute_capability) + extra
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


# --- activations -------------------------------------------------------------------------------


def batch_defaults(instance: GpuInstance) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks for this GPU when the user sets none.

    vLLM compares the device total it reads from CUDA (GiB) with the thresholds, so the CUDA
    total decides here too.
    """
    for min_gib, excluded, tokens, seqs in BATCH_DEFAULTS:
        if instance.cuda_memory_gib >= min_gib and not (excluded and excluded in instance.gpu_model):
            return tokens, seqs
    raise AssertionError("BATCH_DEFAULTS ends with a catch-all row")


def forward_peak_bytes(spec: ModelSpec, tp: int, tokens: int, act_bytes: int = BYTES_16BIT) -> float:
    """Transient peak of the profile run's dummy forward pass over `tokens` tokens, one GPU.

    vLLM 0.33 skips attention in this pass (``_dummy_run(..., skip_attn=True)``), so the peak
    is the widest MLP: per token ``forward_mlp_copies`` x intermediate/TP (gate_up output and
    activation) plus ``forward_hidden_copies`` x hidden; an MoE layer holds that for each of its
    top-k routed copies (``moe_hidden_copies`` x hidden more each), plus its shared experts.
    Does not vary with max_model_len (chunked prefill caps the batch at max_num_batched_tokens).
    """
    mlp_copies, hidden_copies = value("forward_mlp_copies"), value("forward_hidden_copies")
    h = spec.hidden_size
    dense = mlp_copies * spec.intermediate_size / tp + hidden_copies * h
    per_token = dense if spec.moe_layers < spec.num_layers else 0.0
    if spec.is_moe:
        routed = spec.experts_per_token * (
            mlp_copies * spec.moe_intermediate_size / tp + value("moe_hidden_copies") * h
        )
        shared = mlp_copies * spec.moe_intermediate_size * spec.n_shared_experts / tp
        per_token = max(per_token, routed + shared + hidden_copies * h)
    return tokens * per_token * act_bytes


def sampler_peak_bytes(
    spec: ModelSpec, rows: int, accounting: Accounting = ACCOUNTING_033, act_bytes: int = BYTES_16BIT
) -> float:
    """Peak of the profile run's sampler over `rows` requests of full-vocabulary logits.

    Every TP rank samples over the whole vocabulary (the logits are gathered), so this does not
    divide by TP. ``sampler_bytes_per_logit`` is per (row x vocab entry); the hidden states of the
    rows stay alive meanwhile.
    """
    per_logit = accounting.sampler_bytes_per_logit + (act_bytes - BYTES_16BIT)
    return rows * (spec.vocab_size * per_logit + spec.hidden_size * act_bytes)


def activation_bytes(
    spec: ModelSpec,
    tp: int,
    profile_tokens: int,
    max_num_seqs: int,
    accounting: Accounting = ACCOUNTING_033,
    act_bytes: int = BYTES_16BIT,
) -> float:
    """The profile run's transient peak per GPU (vLLM: peak torch memory minus what stays
    allocated), the larger of the forward pass and the sampler, plus ``activation_floor``.

    `profile_tokens` is max_num_batched_tokens (see ``profile_tokens``); the sampler sees
    min(profile_tokens, max_num_seqs) rows. Large vocabularies make the sampler the peak
    (Gemma's 256k vocabulary at 1024 sequences); wide MLPs at large batches the forward pass.
    """
    rows = min(profile_tokens, max_num_seqs)
    peak = max(
        forward_peak_bytes(spec, tp, profile_tokens, act_bytes),
        sampler_peak_bytes(spec, rows, accounting, act_bytes),
    )
    return peak + value("activation_floor") * GIB


# V0 turned chunked prefill on only above this many tokens (vllm/engine/arg_utils.py before 0.8).
V0_CHUNKED_PREFILL_FROM = 32768


def profile_tokens(max_num_batched_tokens: int, max_model_len: int, accounting: Accounting = ACCOUNTING_033) -> int:
    """Tokens of the profile batch: max_num_batched_tokens; with the V0 engine and no chunked
    prefill (max_model_len up to 32k), a whole max_model_len prompt."""
    if accounting.profile_at_max_model_len and max_model_len <= V0_CHUNKED_PREFILL_FROM:
        return max(max_model_len, max_num_batched_tokens)
    return max_num_batched_tokens


# --- CUDA graphs -------------------------------------------------------------------------------


# Number of capture sizes the calibration logs had (max_cudagraph_capture_size 512): the CUDA-graph
# constants are per that many sizes.
REFERENCE_CAPTURE_SIZES = 51


def capture_sizes(max_num_seqs: int, compute_capability: float = 9.0) -> int:
    """How many batch sizes vLLM 0.33 captures CUDA graphs for by default: 1, 2, 4, then every 8
    up to 256 and every 16 up to min(2 x max_num_seqs, 512), or 1024 on data-centre Blackwell
    (vllm/config/vllm.py ``_set_cudagraph_sizes``)."""
    ceiling = 1024 if 10.0 <= compute_capability < 11.0 else 512
    largest = min(2 * max_num_seqs, ceiling)
    sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += [s for s in range(8, 256, 8) if s <= largest]
    sizes += list(range(256, largest + 1, 16))
    return len(sizes)


def cuda_graph_bytes(spec: ModelSpec, max_num_seqs: int = 256, compute_capability: float = 9.0) -> float:
    """vLLM's estimate of the CUDA graphs' memory (``profile_cudagraph_memory``), per GPU.

    Piecewise graphs are captured per capture size for every decoder layer, so the estimate
    grows with the layers and with the number of capture sizes; MoE layers add more nodes per
    graph; gpt-oss captures two attention groups (sinks, sliding window). Fitted on the
    estimates vLLM 0.19 logged (memory-calibration.csv ``cuda_graph_*``); TP size did not
    change them in the logs.
    """
    scale = capture_sizes(max_num_seqs, compute_capability) / REFERENCE_CAPTURE_SIZES
    per_layers = value("cuda_graph_per_layer") * spec.num_layers
    per_layers += value("cuda_graph_per_moe_layer") * spec.moe_layers
    extra = value("cuda_graph_gpt_oss_extra") if spec.model_type == "gpt_oss" else 0.0
    return (value("cuda_graph_base") + scale * per_layers + extra) * GIB


# --- non-torch, budget -------------------------------------------------------------------------


def non_torch_bytes(tp: int) -> float:
    """Memory allocated outside torch after vLLM's baseline snapshot, per GPU: cuBLAS/Triton
    workspaces on one GPU; with TP > 1 also the NCCL and custom all-reduce buffers the first
    collectives allocate. The CUDA context itself predates the snapshot and lives in the
    (1 - gpu_memory_utilization) share."""
    return value("non_torch_tensor_parallel" if tp > 1 else "non_torch_one_gpu") * GIB


def runtime_overhead_bytes(tp: int) -> float:
    """Alias of ``non_torch_bytes`` (the plan's name for the term)."""
    return non_torch_bytes(tp)


def budget_bytes(cuda_total_gib: float, gpu_memory_utilization: float) -> int:
    """vLLM's request: ceil(CUDA total x gpu_memory_utilization) bytes (vllm/v1/worker/utils.py
    ``request_memory``). The CUDA total, not the EC2 or nvidia-smi figure (sizing.gpus.GpuMemory)."""
    return math.ceil(cuda_total_gib * GIB * gpu_memory_utilization)
