"""GPU memory of what is served beside the base model: LoRA buffers and a speculative draft.

Pure arithmetic on ``ModelSpec``s, per GPU of a tensor-parallel group, in bytes; each term
follows vLLM 0.33's own allocation (sources per function). ``sizing.startup.estimate`` adds
them where vLLM spends them:

* the LoRA buffers and the draft's weights are allocated inside ``GPUModelRunner.load_model``
  (vllm/v1/worker/gpu_model_runner.py: ``load_lora_model`` wraps the model, then the drafter
  loads its model), so vLLM's "Model loading took" includes them and they come out of the
  budget before the KV cache;
* the draft's attention layers join the target's in one KV cache group
  (vllm/v1/core/kv_cache_planning.py builds ``UniformTypeKVCacheSpecs`` when every layer is
  full attention; vllm/v1/kv_cache_interface.py ``UniformTypeKVCacheSpecs.page_size_bytes`` =
  the sum of every layer's page): one block id spans the draft's layers too, so a token costs
  the target's and the draft's KV bytes together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sizing.errors import SizingError
from sizing.formats import BYTES_16BIT, WeightFormat
from sizing.memory import GIB, KV_BLOCK_TOKENS, kv_bytes_per_token_per_layer, weights_per_gpu_bytes
from sizing.models import ModelSpec


@dataclass(frozen=True)
class AddOns:
    """What the stack serves beside the base model, resolved (sizing.addon_facts)."""

    max_loras: int = 0  # --max-loras; 0 = LoRA off
    max_lora_rank: int = 0  # --max-lora-rank
    adapter_ranks: tuple[tuple[str, int], ...] = ()  # (name, r from adapter_config.json); r 0 = unread
    draft: Optional[ModelSpec] = None  # the draft model (method draft_model)
    draft_format: Optional[WeightFormat] = None
    num_speculative_tokens: int = 0
    method: Optional[str] = None  # the speculative method, None = no speculative decoding

    @property
    def lora(self) -> bool:
        return self.max_loras > 0


NONE = AddOns()


def lora_buffer_elements_per_layer(spec: ModelSpec, tp: int, layer_is_moe: bool) -> int:
    """Elements of one LoRA slot's buffers (rank 1) in one decoder layer on one GPU.

    vLLM 0.33 wraps every linear layer of the decoder (vllm/lora/utils.py
    ``get_supported_lora_modules``: every ``LinearBase`` and ``MoERunner``; a Qwen2/Llama
    ``ParallelLMHead`` is not one) and allocates, per slice, ``lora_a_stacked`` of
    (max_loras, 1, max_lora_rank, input_size) and ``lora_b_stacked`` of (max_loras, 1,
    output_size, max_lora_rank) in the LoRA dtype (vllm/lora/layers/base_linear.py and
    column_parallel_linear.py ``create_lora_weights``, not fully sharded):

    * qkv_proj (``MergedQKVParallelLinearWithLoRA``): A: 3 x hidden; B: q/tp + 2 x kv per GPU
      (KV heads replicated when fewer than GPUs, as ``QKVParallelLinear`` does);
    * o_proj (``RowParallelLinearWithLoRA``): A: q/tp (input_size_per_partition); B: hidden;
    * gate_up_proj (``MergedColumnParallelLinearWithLoRA``): A: 2 x hidden; B: 2 x I/tp;
    * down_proj (row parallel): A: I/tp; B: hidden;
    * MoE layers (vllm/lora/layers/fused_moe.py ``_create_lora_a_weights`` /
      ``_create_lora_b_weights``): per expert w13 A 2 x hidden, B 2 x I/tp, w2 A I/tp, B
      hidden; the router (``ReplicatedLinear``): A hidden, B experts; shared experts as a
      dense MLP of n_shared x moe_intermediate.
    """
    h = spec.hidden_size
    q = spec.num_attention_heads * spec.head_dim
    kv = max(1, spec.num_kv_heads // tp) * spec.head_dim  # QKVParallelLinear: >= 1 KV head per GPU
    attention = 3 * h + (q // tp + 2 * kv) + q // tp + h
    if not layer_is_moe:
        inter = spec.intermediate_size // tp
        return attention + 2 * h + 2 * inter + inter + h
    moe_inter = spec.moe_intermediate_size // tp
    experts = spec.num_experts * (2 * h + 2 * moe_inter + moe_inter + h)
    router = h + spec.num_experts
    shared = 0
    if spec.n_shared_experts:
        s_inter = spec.n_shared_experts * spec.moe_intermediate_size // tp
        shared = 2 * h + 2 * s_inter + s_inter + h
    return attention + experts + router + shared


def lora_buffer_bytes(spec: ModelSpec, addons: AddOns, tp: int, dtype_bytes: int = BYTES_16BIT) -> int:
    """The LoRA weight buffers on one GPU: max_loras x max_lora_rank x (the per-layer elements
    of ``lora_buffer_elements_per_layer``) x the LoRA dtype's bytes, over every decoder layer.

    The LoRA dtype is the model's (vllm/config/lora.py ``LoRAConfig.verify_with_model_config``:
    lora_dtype "auto" -> model_config.dtype). Adapters beyond max_loras wait in CPU memory
    (max_cpu_loras, default max_loras; vllm/lora/model_manager.py ``LRUCacheLoRAModelManager``),
    which is host RAM, not GPU memory. Raises SizingError for MLA attention (DeepSeek), whose
    LoRA layout this sizer does not model.
    """
    if not addons.lora:
        return 0
    if spec.is_mla:
        raise SizingError(
            f"{spec.model_id} uses MLA attention, whose LoRA buffers this sizer does not model; "
            "serve its adapters merged into the weights instead (drop loraAdapters)"
        )
    dense_layers = spec.num_layers - spec.moe_layers
    elements = dense_layers * lora_buffer_elements_per_layer(spec, tp, False)
    if spec.moe_layers:
        elements += spec.moe_layers * lora_buffer_elements_per_layer(spec, tp, True)
    return addons.max_loras * addons.max_lora_rank * elements * dtype_bytes


def draft_weight_bytes(addons: AddOns, tp: int) -> float:
    """The draft model's weights on one GPU: it runs at the target's TP size
    (vllm/config/speculative.py ``_verify_and_get_draft_tp``: draft_tensor_parallel_size
    defaults to the target's) in the draft checkpoint's own format."""
    if addons.draft is None or addons.draft_format is None:
        return 0.0
    return weights_per_gpu_bytes(addons.draft, addons.draft_format, tp)


def draft_kv_page_bytes(addons: AddOns, kv_dtype_bytes: int, tp: int) -> int:
    """What the draft adds to one KV block id on one GPU: its layers x one layer's page
    (KV_BLOCK_TOKENS tokens), at the target's KV cache dtype (the draft shares the cache
    config). See the module docstring for the shared group."""
    if addons.draft is None:
        return 0
    per_layer = KV_BLOCK_TOKENS * kv_bytes_per_token_per_layer(addons.draft, kv_dtype_bytes, tp)
    return addons.draft.full_attention_layers * per_layer


@dataclass(frozen=True)
class AddOnMemory:
    """The add-ons' share of one GPU's memory, GiB (2**30 bytes)."""

    lora_buffers_gib: float = 0.0  # inside "Model loading took"
    draft_weights_gib: float = 0.0  # inside "Model loading took"
    draft_kv_gib: float = 0.0  # the draft's part of the KV term (the required sequences)
    draft_kv_bytes_per_token: int = 0

    @property
    def loaded_gib(self) -> float:
        """What the add-ons add to the weights vLLM loads."""
        return self.lora_buffers_gib + self.draft_weights_gib

    def as_output(self) -> dict[str, float]:
        return {
            "loraBuffersGib": round(self.lora_buffers_gib, 3),
            "draftWeightsGib": round(self.draft_weights_gib, 3),
            "draftKvCacheGib": round(self.draft_kv_gib, 3),
        }



def addon_disk_gb(spec: ModelSpec, addons: AddOns) -> float:
    """GB (10**9 bytes) the adapters and the draft take on the model volume: each adapter at
    most one rank-r slot of every LoRA-wrapped layer in 16-bit (PEFT saves A and B of each
    targeted module; fewer targets take less), the draft its stored weights."""
    one_gpu = 0
    for _, rank in addons.adapter_ranks:
        one = AddOns(max_loras=1, max_lora_rank=rank or addons.max_lora_rank)
        one_gpu += lora_buffer_bytes(spec, one, 1, BYTES_16BIT)
    draft = 0.0
    if addons.draft is not None and addons.draft_format is not None:
        draft = weights_per_gpu_bytes(addons.draft, addons.draft_format, 1)
    return (one_gpu + draft) / 1e9


def addon_notes(addons: AddOns) -> list[str]:
    """What the sizing of the add-ons assumes, for the plan's notes."""
    notes = []
    if addons.lora:
        notes.append(
            f"LoRA: {len(addons.adapter_ranks)} adapter(s), --max-loras {addons.max_loras}, "
            f"--max-lora-rank {addons.max_lora_rank}; vLLM 0.33 also captures CUDA graphs with and "
            "without LoRA (compilation_config.cudagraph_specialize_lora), which the CUDA graph term "
            "does not double"
        )
    unread = [name for name, rank in addons.adapter_ranks if not rank]
    if unread:
        notes.append(
            f"LoRA adapter(s) {', '.join(unread)}: adapter_config.json could not be read (offline, or the "
            "hub did not answer), so neither the adapter's existence nor its rank nor its base model was "
            f"checked; sized at --max-lora-rank {addons.max_lora_rank}, and the download step fails "
            "`pulumi up` if the adapter is not there"
        )
    if addons.method is not None:
        what = addons.draft.model_id if addons.draft else f"method {addons.method} (no weights)"
        notes.append(
            f"speculative decoding: {what}, {addons.num_speculative_tokens} tokens per step; the "
            "draft's own activation peak and CUDA graphs are not sized separately"
        )
    return notes
