"""What vLLM 0.33.0 allocates for LoRA and a speculative draft, measured with vLLM's own classes
(runs in the vLLM venv, after fake_cuda.prepare()):

* the LoRA buffers: one decoder layer's linear projections (qkv_proj, o_proj, gate_up_proj,
  down_proj, built as probes.layer_probe builds them, on the meta device at the engine's TP
  size) wrapped in vLLM's LoRA layer classes (vllm/lora/layers/column_parallel_linear.py,
  row_parallel_linear.py), whose ``create_lora_weights(max_loras, lora_config, model_config)``
  allocates ``lora_a_stacked`` / ``lora_b_stacked``: their bytes are what one layer holds;
* the draft's KV bytes per token on one GPU: vLLM's ``FullAttentionSpec`` for the draft's
  ``ModelConfig`` (``speculative_config.draft_model_config``) at its parallel config, times its
  attention layers (as probes.kv_cache_info does for the target).
"""

from __future__ import annotations

from typing import Any

from probes import _OneRankGroup, error_text


def lora_probe(vllm_config) -> dict[str, Any]:
    """{"layer_bytes": bytes of one decoder layer's LoRA buffers, "layers": decoder layers,
    "max_loras", "max_lora_rank", "lora_dtype"} or {"error": ...}."""
    import torch

    import vllm.distributed.parallel_state as parallel_state
    import vllm.model_executor.layers.linear as linear
    from vllm.config import set_current_vllm_config
    from vllm.lora.layers import (
        MergedColumnParallelLinearWithLoRA,
        MergedQKVParallelLinearWithLoRA,
        RowParallelLinearWithLoRA,
    )

    lora = vllm_config.lora_config
    model = vllm_config.model_config
    text = model.hf_text_config
    tp = vllm_config.parallel_config.tensor_parallel_size
    try:
        hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_size, size = int(model.get_head_size()), int(text.intermediate_size)
    except Exception as exc:  # noqa: BLE001 - not a dense decoder config: not probed
        return {"error": f"not a dense decoder config: {error_text(exc)}"}
    builds = (
        (MergedQKVParallelLinearWithLoRA, lambda: linear.QKVParallelLinear(hidden, head_size, heads, kv_heads, bias=False)),
        (RowParallelLinearWithLoRA, lambda: linear.RowParallelLinear(heads * head_size, hidden, bias=False)),
        (MergedColumnParallelLinearWithLoRA, lambda: linear.MergedColumnParallelLinear(hidden, [size, size], bias=False)),
        (RowParallelLinearWithLoRA, lambda: linear.RowParallelLinear(size, hidden, bias=False)),
    )
    saved = parallel_state.get_tp_group
    previous = torch.get_default_dtype()
    total = 0
    try:
        parallel_state.get_tp_group = lambda: _OneRankGroup(tp)
        with set_current_vllm_config(vllm_config), torch.device("meta"):
            torch.set_default_dtype(model.dtype)
            for wrapper, build in builds:
                layer = wrapper(build())
                layer.create_lora_weights(lora.max_loras, lora, model.hf_config)
                for tensor in (*layer.lora_a_stacked, *layer.lora_b_stacked):
                    total += tensor.numel() * tensor.element_size()
    except Exception as exc:  # noqa: BLE001 - reported, the test shows it
        return {"error": error_text(exc)}
    finally:
        torch.set_default_dtype(previous)
        parallel_state.get_tp_group = saved
    return {
        "layer_bytes": total,
        "layers": model.get_num_layers_by_block_type(vllm_config.parallel_config, "attention"),
        "max_loras": lora.max_loras,
        "max_lora_rank": lora.max_lora_rank,
        "lora_dtype": str(lora.lora_dtype).replace("torch.", ""),
    }


def draft_probe(vllm_config) -> dict[str, Any]:
    """The speculative config vLLM built and the draft's KV bytes per token on one GPU."""
    from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype
    from vllm.v1.kv_cache_interface import FullAttentionSpec, get_kv_quant_mode

    spec = vllm_config.speculative_config
    out: dict[str, Any] = {"method": spec.method, "num_speculative_tokens": spec.num_speculative_tokens}
    draft = spec.draft_model_config
    if draft is None:
        return out
    try:
        parallel = spec.draft_parallel_config
        cache_dtype = vllm_config.cache_config.cache_dtype
        page = FullAttentionSpec(
            block_size=1, num_kv_heads=draft.get_num_kv_heads(parallel), head_size=draft.get_head_size(),
            dtype=kv_cache_dtype_str_to_dtype(cache_dtype, draft), kv_quant_mode=get_kv_quant_mode(cache_dtype),
        ).page_size_bytes
        layers = draft.get_num_layers_by_block_type(parallel, "attention")
    except Exception as exc:  # noqa: BLE001
        out["error"] = error_text(exc)
        return out
    out.update({
        "draft_model": draft.model,
        "draft_tensor_parallel_size": parallel.tensor_parallel_size,
        "draft_layers": layers,
        "draft_kv_bytes_per_token_per_rank": page * layers,
    })
    return out
