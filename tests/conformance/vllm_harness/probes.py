"""What vLLM 0.33.0 would build from an engine config, built with vLLM's own classes: the KV
cache spec of an attention layer, one decoder layer's linear projections, and the rotary
embedding. Runs in the vLLM venv, after fake_cuda.prepare().
"""

from __future__ import annotations

from typing import Any


def error_text(exc: BaseException) -> str:
    """The error as a `vllm serve` user reads it (pydantic wrappers of vLLM's config classes
    unwrapped to vLLM's own message)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        try:
            parts = []
            for error in errors():
                message = str(error.get("msg", "")).removeprefix("Value error, ")
                where = ".".join(str(x) for x in error.get("loc", ()) if x != "__root__")
                parts.append(f"{where}: {message}" if where else message)
            return f"{getattr(exc, 'title', '')}: " + " | ".join(parts)
        except Exception:  # noqa: BLE001 - fall back to the plain text
            pass
    return f"{type(exc).__name__}: {exc}"


def kv_cache_info(vllm_config) -> dict[str, Any]:
    """KV-cache bytes per token on one GPU, from vLLM's own KV-cache spec classes.

    vLLM sizes the cache from the spec each attention layer returns at model build
    (model_executor/layers/attention/attention.py `Attention.get_kv_cache_spec`:
    FullAttentionSpec / SlidingWindowSpec; mla_attention.py `MLAAttention.get_kv_cache_spec`:
    MLAAttentionSpec). The model is not built here, so the same spec is built from the same
    inputs: num_kv_heads = model_config.get_num_kv_heads(parallel_config) (per TP rank),
    head_size = model_config.get_head_size(), the resolved cache dtype, and the attention layers
    of one pipeline stage; page_size_bytes at block_size 1 is the bytes of one token.
    Sliding-window layers (layer_types "sliding_attention") hold at most a window per request
    (v1/kv_cache_interface.py SlidingWindowSpec), so the bytes that grow with the context are
    the full-attention layers' (`kv_bytes_per_token_per_rank_full_layers`).
    """
    from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec, get_kv_quant_mode

    model = vllm_config.model_config
    parallel = vllm_config.parallel_config
    cache_dtype = vllm_config.cache_config.cache_dtype
    if model.is_attention_free:
        return {"kv_bytes_per_token_per_rank": 0, "kv_note": "attention-free model"}
    quant_mode = get_kv_quant_mode(cache_dtype)
    torch_dtype = kv_cache_dtype_str_to_dtype(cache_dtype, model)
    head_size = model.get_head_size()
    layers = model.get_num_layers_by_block_type(parallel, "attention")
    if model.use_mla:
        spec = MLAAttentionSpec(
            block_size=1, num_kv_heads=1, max_tp_shards=1, head_size=head_size,
            dtype=torch_dtype, kv_quant_mode=quant_mode, cache_dtype_str=cache_dtype,
            state_content_bytes={"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}.get(cache_dtype),
        )
        heads = 1
    else:
        heads = model.get_num_kv_heads(parallel)
        spec = FullAttentionSpec(
            block_size=1, num_kv_heads=heads, head_size=head_size, dtype=torch_dtype,
            kv_quant_mode=quant_mode,
        )
    per_layer = spec.page_size_bytes
    layer_types = list(getattr(model.hf_text_config, "layer_types", None) or [])
    sliding = sum(1 for kind in layer_types if "sliding" in str(kind))
    full = layers - sliding if 0 < sliding < len(layer_types) and parallel.pipeline_parallel_size == 1 else layers
    info = {
        "kv_spec_class": type(spec).__name__,
        "kv_cache_torch_dtype": str(torch_dtype).replace("torch.", ""),
        "kv_num_kv_heads_per_rank": heads,
        "kv_head_size": head_size,
        "kv_attention_layers": layers,
        "kv_full_attention_layers": full,
        "kv_sliding_window_layers": layers - full,
        "kv_bytes_per_token_per_layer_per_rank": per_layer,
        "kv_bytes_per_token_per_rank": per_layer * layers,
        "kv_bytes_per_token_per_rank_full_layers": per_layer * full,
    }
    if quant_mode.name not in ("NONE", "FP8_PER_TENSOR", "NVFP4_DS_MLA"):
        info["kv_note"] = f"{cache_dtype} is packed by the attention backend; bytes are unpacked"
    return info


class _OneRankGroup:
    """get_tp_group() for building layers without torch.distributed: rank 0 of `world_size`."""

    rank_in_group = rank = local_rank = 0

    def __init__(self, world_size: int):
        self.world_size = world_size


def layer_probe(vllm_config) -> dict[str, Any]:
    """One decoder layer's linear projections built with vLLM's layer classes
    (model_executor/layers/linear.py) and the engine's quant config at this TP size, on the meta
    device, and the rotary embedding (model_executor/layers/rotary_embedding get_rope) from the
    model's rope parameters.

    These constructors raise what vLLM only raises while it builds the model in the worker, e.g.
    AWQ's "The input size is not aligned with the quantized weight shape"
    (quantization/auto_awq.py) or get_rope's KeyError for a RoPE type missing a parameter.
    Generic Llama/Qwen2 dense shapes (qkv_proj, o_proj, gate_up_proj, down_proj): MoE experts
    and MLA projections are not built. Each row-parallel layer is also built at TP 1, the
    checkpoint's own shapes, to check that the checkpoint splits into the TP shards vLLM loads
    (`_shard_problem`): weight loading itself is not run.
    """
    import torch

    import vllm.distributed.parallel_state as parallel_state
    import vllm.model_executor.layers.linear as linear
    from vllm.config import set_current_vllm_config

    model = vllm_config.model_config
    text = model.hf_text_config
    tp = vllm_config.parallel_config.tensor_parallel_size
    out: dict[str, Any] = {"tp": tp, "quant_config": repr(vllm_config.quant_config)}
    layers: dict[str, str] = {}
    methods: dict[str, str] = {}
    try:
        hidden = int(text.hidden_size)
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_size = int(model.get_head_size())
        intermediate = getattr(text, "intermediate_size", None)
    except Exception as exc:  # noqa: BLE001 - not a standard decoder config
        out["skipped"] = f"not a standard decoder config: {error_text(exc)}"
        return out
    quant = vllm_config.quant_config
    builds = []  # (name, block, row parallel, build)
    if not model.use_mla:
        builds += [
            ("qkv_proj", "self_attn", False, lambda p: linear.QKVParallelLinear(
                hidden, head_size, heads, kv_heads, bias=False, quant_config=quant, prefix=p)),
            ("o_proj", "self_attn", True, lambda p: linear.RowParallelLinear(
                heads * head_size, hidden, bias=False, quant_config=quant, prefix=p)),
        ]
    if intermediate and not _is_moe(text):
        size = int(intermediate)
        builds += [
            ("gate_up_proj", "mlp", False, lambda p: linear.MergedColumnParallelLinear(
                hidden, [size, size], bias=False, quant_config=quant, prefix=p)),
            ("down_proj", "mlp", True, lambda p: linear.RowParallelLinear(
                size, hidden, bias=False, quant_config=quant, prefix=p)),
        ]
    saved = parallel_state.get_tp_group
    previous_dtype = torch.get_default_dtype()
    try:
        with set_current_vllm_config(vllm_config), torch.device("meta"):
            torch.set_default_dtype(model.dtype)
            for name, block, row_parallel, build in builds:
                prefix = f"model.layers.0.{block}.{name}"
                try:
                    parallel_state.get_tp_group = lambda: _OneRankGroup(tp)
                    layer = build(prefix)
                    methods[name] = _method_label(layer.quant_method)
                    layers[name] = "ok"
                    if row_parallel and tp > 1:
                        parallel_state.get_tp_group = lambda: _OneRankGroup(1)
                        layers[name] = _shard_problem(layer, build(prefix), tp) or "ok"
                except Exception as exc:  # noqa: BLE001 - reported per layer
                    layers[name] = error_text(exc)
            if not model.use_mla:
                layers["rotary_emb"] = _rope_probe(text, head_size, model.dtype)
        with set_current_vllm_config(vllm_config):
            layers["attention"], methods["attention"] = _attention_probe(vllm_config, head_size)
    finally:
        torch.set_default_dtype(previous_dtype)
        parallel_state.get_tp_group = saved
    out["layers"] = layers
    out["quant_methods"] = methods
    return out


def _method_label(method) -> str:
    label = type(method).__name__
    kernel = getattr(method, "kernel", None) or getattr(method, "fp8_linear", None)
    return f"{label} [{type(kernel).__name__}]" if kernel is not None else label


def _shard_problem(sharded, whole, tp: int) -> str:
    """Where a checkpoint tensor of a row-parallel layer does not split into `tp` equal input
    shards: vLLM's weight loader narrows rank r's rows [r*n, (r+1)*n) out of the checkpoint's
    (model_executor/parameter.py `_ColumnvLLMParameter`/`RowvLLMParameter` load_row_parallel_weight),
    with n the sharded parameter's rows, and raises nothing when n*tp misses some rows: those
    (e.g. a quantization group's scales straddling two ranks) load misaligned with the weights.
    `whole` is the same layer built at TP 1, whose parameters have the checkpoint's shapes."""
    full = dict(whole.named_parameters())
    for name, param in sharded.named_parameters():
        dim = getattr(param, "input_dim", None)
        if dim is None or name not in full:
            continue
        rows, total = param.shape[dim], full[name].shape[dim]
        if rows * tp != total:
            return (
                f"{name} has {total} rows in the checkpoint; tensor parallel {tp} loads {rows} per "
                f"GPU ({rows * tp} in all), so rank r's {name} is not the one its weight shard "
                "uses (vLLM loads it without an error; the layer computes with wrong values)"
            )
    return ""


def _attention_probe(vllm_config, head_size: int) -> tuple[str, str]:
    """(status, backend): the attention backend vLLM's selector picks for this GPU, head size,
    dtype and KV-cache dtype (v1/attention/selector.py get_attn_backend, as
    model_executor/layers/attention/attention.py calls it); none fits is an error at model
    build. FlashInfer, which the vllm/vllm-openai image has and this venv does not, is judged
    by its own checks on stand-in modules (_stub_flashinfer); when it is picked the answer is
    FlashInfer with its kernels unverified. Another backend's impl is then built as the layer
    builds it (_impl_problem), which is where Triton attention refuses an fp8 KV cache below
    sm89. A backend skipped for another package missing here leaves the answer unverified
    rather than a refusal a GPU host would not make."""
    import re

    from vllm.v1.attention.selector import get_attn_backend

    model = vllm_config.model_config
    cache_dtype = vllm_config.cache_config.cache_dtype
    stubbed = _stub_flashinfer()
    try:
        backend = get_attn_backend(
            head_size, model.dtype, None if cache_dtype == "auto" else cache_dtype,
            use_mla=model.use_mla, has_sink=model.hf_config.model_type == "gpt_oss",
            has_sliding_window=model.get_sliding_window() is not None,
        )
    except Exception as exc:  # noqa: BLE001 - the error the model build would raise
        missing = re.findall(r"(\w+): \[ModuleNotFoundError: No module named '[\w.]+'\]", str(exc))
        if missing:
            return "ok", f"{missing[0]} (unverified: its package is not installed here)"
        return error_text(exc), ""
    if stubbed and backend.get_name().startswith("FLASHINFER"):
        return "ok", f"{backend.get_name()} (its own checks passed; its kernels are not installed here)"
    if not model.use_mla:
        problem = _impl_problem(backend, vllm_config, head_size, cache_dtype)
        if problem:
            return problem, backend.get_name()
    return "ok", backend.get_name()


_FLASHINFER_MODULES = ("flashinfer", "flashinfer.decode", "flashinfer.prefill", "flashinfer.utils")


def _stub_flashinfer() -> bool:
    """Stand-in `flashinfer` modules when the package is not installed here (the vllm/vllm-openai
    image has it): vLLM's FlashInfer backend module then imports, and the selector judges it
    with its own checks (compute capability, head sizes, KV-cache dtype, sinks) instead of
    skipping it for the import error, as a GPU host never would. Every name the backend imports
    from flashinfer is a placeholder that is never called: nothing runs a kernel here. True when
    the stand-ins were installed (in this forked child only)."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if "flashinfer" in sys.modules or importlib.util.find_spec("flashinfer") is not None:
        return False

    class _Stub(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            placeholder = type(name, (), {"__init__": lambda self, *a, **k: None})
            setattr(self, name, placeholder)
            return placeholder

    for name in _FLASHINFER_MODULES:
        module = _Stub(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name == "flashinfer")
        if name == "flashinfer":
            module.__path__ = []  # a package: its submodules are the stand-ins above
        sys.modules[name] = module
    return True


def _impl_problem(backend, vllm_config, head_size: int, cache_dtype: str) -> str:
    """What the chosen backend's impl raises when the Attention layer builds it
    (model_executor/layers/attention/attention.py: impl_cls(num_heads, head_size, scale,
    num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype, logits_soft_cap, attn_type,
    kv_sharing_target_layer_name)), e.g. TritonAttentionImpl's refusal of an fp8 KV cache below
    sm89. Decoder self-attention of one TP rank; sinks and other per-model arguments are not
    passed, so only the refusals of these common arguments are seen."""
    from vllm.v1.attention.backend import AttentionType

    model = vllm_config.model_config
    parallel = vllm_config.parallel_config
    try:
        backend.get_impl_cls()(
            model.get_num_attention_heads(parallel), head_size, head_size ** -0.5,
            model.get_num_kv_heads(parallel), None, None, cache_dtype, None,
            AttentionType.DECODER, None,
        )
    except (ValueError, NotImplementedError) as exc:  # the impl's own refusals
        return error_text(exc)
    except Exception:  # noqa: BLE001 - an argument this probe does not pass: not a refusal
        return ""
    return ""


def _is_moe(text) -> bool:
    return bool(
        getattr(text, "num_experts", None) or getattr(text, "num_local_experts", None)
        or getattr(text, "n_routed_experts", None)
    )


def _rope_probe(text, head_size: int, dtype) -> str:
    """get_rope as the Llama/Qwen2 attention calls it (models/llama.py, models/qwen2.py);
    rope parameters kept per layer type are built once per layer type."""
    from vllm.model_executor.layers.rotary_embedding import get_rope

    params = getattr(text, "rope_parameters", None)
    if not isinstance(params, dict):
        return "ok"
    nested = params and all(isinstance(v, dict) for v in params.values())
    try:
        for one in (params.values() if nested else [params]):
            get_rope(head_size, max_position=int(text.max_position_embeddings),
                     rope_parameters=dict(one), dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - reported as the layer's error
        return error_text(exc)
    return "ok"
