"""`vllm serve` startup in vLLM 0.33.0, stage by stage, up to the model build, on a fake GPU.

check(request) runs, in the order `vllm serve` runs them:

  parse          the real CLI parser: FlexibleArgumentParser(prog="vllm") with
                 ServeSubcommand().subparser_init (entrypoints/common/cli_args.py
                 make_arg_parser), parsing ["serve", *argv];
  validate       ServeSubcommand.validate (validate_parsed_serve_args); the raising checks at
                 the top of ServeSubcommand.cmd (entrypoints/cli/serve.py: headless,
                 data-parallel load-balancing modes); what setup_server
                 (entrypoints/launchers/launcher.py) does before binding the port:
                 init_parser_plugin + validate_api_server_args;
  engine_config  AsyncEngineArgs.from_cli_args, propagate_flash_late_interaction,
                 create_engine_config(usage_context=OPENAI_API_SERVER), as
                 build_async_engine_client does;
  renderer       what AsyncLLM.__init__ (v1/engine/async_llm.py) builds before it starts the
                 engine: renderers/registry.py renderer_from_config, which loads the tokenizer
                 (tokenizers/registry.py cached_tokenizer_from_config, e.g. --tokenizer-mode);
                 the model directories hold a tiny tokenizer, so a mode that needs the model's
                 own tokenizer files (mistral's tekken.json) cannot be judged here;
  worker_init    what Worker.init_device (v1/worker/gpu_worker.py) checks before it loads the
                 model, for every worker of every local data-parallel engine: its GPU index
                 exists, current_platform.check_if_supports_dtype, and request_memory
                 (v1/worker/utils.py) against a MemorySnapshot of the GPU's total and free memory;
                 with the Ray executor (across nodes) the GPU index check is skipped, see
                 `_worker_init`;
  layer_build    probes.layer_probe: one decoder layer's linear layers and rotary embedding
                 (at the TP size, which is per node across nodes: the same layer shapes).

Across nodes (`--distributed-executor-backend ray`, world size above the one node's GPU count
the fake platform reports) the engine config is vLLM's own, and Ray must import
(config/parallel.py ParallelConfig._verify_args -> v1/executor/ray_utils.py
assert_ray_available): tools/vllm-venv installs ray. No Ray cluster is started: the checks stop
before RayExecutorV2 would connect to one (v1/executor/ray_utils.py initialize_ray_cluster).

Request: {"argv": [model dir, flags...], "gpu": {name, compute_capability, total_memory_bytes,
count, free_memory_bytes (default: total), ...}, "layer_probe": true}. Result: {"ok", "stage"
(the last stage reached), "error" (vLLM's message), and with an engine config the resolved
values and probes.kv_cache_info}.
"""

from __future__ import annotations

import contextlib
import io
import math
import traceback
from typing import Any

import fake_cuda
from addon_probe import draft_probe, lora_probe
from probes import error_text, kv_cache_info, layer_probe

TOKENIZER_FILES = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json"}


def import_vllm() -> None:
    """Import what the checks use (after fake_cuda.prepare), so forked checks start warm."""
    import vllm.engine.arg_utils  # noqa: F401
    import vllm.entrypoints.cli.serve  # noqa: F401
    import vllm.entrypoints.common.cli_args  # noqa: F401
    import vllm.model_executor.layers.linear  # noqa: F401
    import vllm.model_executor.layers.rotary_embedding  # noqa: F401
    import vllm.renderers  # noqa: F401
    import vllm.usage.usage_lib  # noqa: F401
    import vllm.utils.mem_utils  # noqa: F401
    import vllm.v1.executor.abstract  # noqa: F401
    import vllm.v1.kv_cache_interface  # noqa: F401
    import vllm.v1.worker.utils  # noqa: F401
    # create_engine_config imports ray to ask whether it is initialized (ray/lazy_utils.py)
    import ray  # noqa: F401


def check(request: dict[str, Any]) -> dict[str, Any]:
    argv = [str(a) for a in request["argv"]]
    gpu = request["gpu"]
    fake_cuda.set_gpu(gpu)
    import vllm.platforms

    platform = vllm.platforms.current_platform
    result: dict[str, Any] = {"ok": False, "stage": "parse", "error": None}

    args, error = _parse(argv)
    if error:
        result["error"] = error
        return result
    result["stage"] = "validate"
    try:
        _validate(args)
    except Exception as exc:  # noqa: BLE001 - vLLM's refusal, reported
        return _failed(result, exc)

    result["stage"] = "engine_config"
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.common.cli_args import propagate_flash_late_interaction
        from vllm.usage.usage_lib import UsageContext

        engine_args = AsyncEngineArgs.from_cli_args(args)
        propagate_flash_late_interaction(args, engine_args)
        config = engine_args.create_engine_config(
            usage_context=UsageContext.OPENAI_API_SERVER, headless=bool(args.headless)
        )
    except Exception as exc:  # noqa: BLE001
        return _failed(result, exc)
    result["engine_config_ok"] = True
    result.update(summarize(config))
    # LoRA buffers and the draft, measured with vLLM's own classes (addon_probe.py).
    if config.lora_config is not None:
        result["lora_probe"] = lora_probe(config)
    if config.speculative_config is not None:
        result["draft_probe"] = draft_probe(config)

    result["stage"] = "renderer"
    try:
        from vllm.renderers import renderer_from_config

        renderer_from_config(config)
    except Exception as exc:  # noqa: BLE001
        return _failed(result, exc)

    result["stage"] = "worker_init"
    try:
        _worker_init(config, platform, gpu, result)
    except Exception as exc:  # noqa: BLE001
        return _failed(result, exc)

    result["stage"] = "layer_build"
    if request.get("layer_probe", True):
        probe = layer_probe(config)
        result["layer_probe"] = probe
        bad = {name: why for name, why in probe.get("layers", {}).items() if why != "ok"}
        if bad:
            name, why = next(iter(bad.items()))
            result["error"] = f"{name}: {why}"
            return result
    result["ok"] = True
    return result


def _failed(result: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    result.update(ok=False, error=error_text(exc), traceback=traceback.format_exc())
    return result


def _parse(argv: list[str]) -> tuple[Any, str]:
    import vllm.entrypoints.cli.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    command = serve.ServeSubcommand()
    command.subparser_init(subparsers).set_defaults(dispatch_function=command.cmd)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(["serve", *argv]), ""
    except SystemExit as exc:
        lines = [line.strip() for line in stderr.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if "error:" in line), max(0, len(lines) - 1))
        said = [line for line in lines[start:] if not line.startswith("For further information")]
        return None, " ".join(said) if said else f"argparse exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - FlexibleArgumentParser raises some itself
        return None, error_text(exc)


def _validate(args) -> None:
    import vllm.entrypoints.cli.serve as serve
    from vllm.entrypoints.common.cli_args import init_parser_plugin, validate_api_server_args

    serve.ServeSubcommand().validate(args)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    _serve_command_checks(args)
    init_parser_plugin(args)
    validate_api_server_args(args)


def _serve_command_checks(args) -> None:
    """The raising checks of ServeSubcommand.cmd (entrypoints/cli/serve.py, 0.33.0), copied:
    cmd itself starts the server."""
    if args.headless and args.api_server_count is not None and args.api_server_count > 0:
        raise ValueError(
            f"--api-server-count={args.api_server_count} cannot be used with --headless (no API "
            "servers are started in headless mode)."
        )
    external = args.data_parallel_external_lb or args.data_parallel_rank is not None
    if not args.data_parallel_hybrid_lb and not args.data_parallel_multi_port_external_lb:
        hybrid, multi_port = args.data_parallel_start_rank is not None, False
    else:
        hybrid, multi_port = args.data_parallel_hybrid_lb, args.data_parallel_multi_port_external_lb
    if sum([multi_port, external, hybrid]) > 1:
        raise ValueError(
            "Cannot use more than one data parallel load balancing mode. Choose one of: "
            "--data-parallel-multi-port-external-lb, --data-parallel-external-lb (or "
            "--data-parallel-rank), --data-parallel-hybrid-lb (or --data-parallel-start-rank)."
        )


# Why the GPU index check does not run under the Ray executor.
RAY_PLACES_WORKERS = (
    "the Ray executor places the workers: RayExecutorV2 gives each worker local_rank = its index "
    "among the workers Ray's placement group put on its node (v1/executor/ray_executor_v2.py "
    "_init_executor), which needs a Ray cluster; the fake platform describes one node"
)


def _worker_init(config, platform, gpu: dict[str, Any], result: dict[str, Any]) -> None:
    """Worker.init_device (v1/worker/gpu_worker.py) for every worker of every local
    data-parallel engine: its GPU index (ParallelConfig.get_local_gpu_index) must exist, the
    GPU must support the dtype, and the requested share of memory must be free.

    With the Ray executor (across nodes) every worker still runs the dtype and memory checks on
    its own GPU, which has the planned GPU's facts on every node; which GPU index each worker
    gets is Ray's placement (RAY_PLACES_WORKERS), not checked here."""
    from vllm.utils.mem_utils import MemorySnapshot
    from vllm.v1.worker.utils import request_memory

    parallel = config.parallel_config
    if parallel.use_ray:
        result["gpu_indices_used"] = None
        result["gpu_index_check_skipped"] = RAY_PLACES_WORKERS
    else:
        indices = [
            parallel.get_local_gpu_index(rank, dp_local_rank=engine)
            for engine in range(parallel.data_parallel_size_local)
            for rank in range(parallel.local_world_size)
        ]
        result["gpu_indices_used"] = indices
        for index in indices:
            assert index < platform.device_count(), (
                f"DP adjusted local rank {index} is out of bounds for {platform.device_count()} devices."
            )
    platform.check_if_supports_dtype(config.model_config.dtype)
    total = int(gpu["total_memory_bytes"])
    free = int(gpu.get("free_memory_bytes", total))
    snapshot = MemorySnapshot(device="cuda:0", auto_measure=False)
    snapshot.total_memory, snapshot.free_memory, snapshot.cuda_memory = total, free, total - free
    requested = request_memory(snapshot, config.cache_config)
    result["requested_memory_bytes"] = requested
    assert requested == math.ceil(total * config.cache_config.gpu_memory_utilization)


def summarize(config) -> dict[str, Any]:
    model, parallel, cache = config.model_config, config.parallel_config, config.cache_config
    scheduler = config.scheduler_config
    summary = {
        "max_model_len": model.max_model_len,
        "dtype": str(model.dtype).replace("torch.", ""),
        "quantization": model.quantization,
        "tensor_parallel_size": parallel.tensor_parallel_size,
        "pipeline_parallel_size": parallel.pipeline_parallel_size,
        "data_parallel_size": parallel.data_parallel_size,
        "world_size": parallel.world_size,
        "enable_expert_parallel": parallel.enable_expert_parallel,
        "gpu_memory_utilization": cache.gpu_memory_utilization,
        "cache_dtype": cache.cache_dtype,
        "enable_prefix_caching": cache.enable_prefix_caching,
        "max_num_seqs": scheduler.max_num_seqs,
        "max_num_batched_tokens": scheduler.max_num_batched_tokens,
        "enable_chunked_prefill": scheduler.enable_chunked_prefill,
        "architecture": model.architecture,
        "model_type": getattr(model.hf_config, "model_type", None),
        "max_position_embeddings": getattr(model.hf_text_config, "max_position_embeddings", None),
        "distributed_executor_backend": str(parallel.distributed_executor_backend),
    }
    summary.update(_executor(config))
    summary.update(kv_cache_info(config))
    if parallel.pipeline_parallel_size > 1:
        summary["pp_stages"] = pipeline_stages(config, summary.get("kv_bytes_per_token_per_layer_per_rank", 0))
    return summary


def _executor(config) -> dict[str, Any]:
    """The executor class vLLM would start (v1/executor/abstract.py Executor.get_class) and
    whether it runs pipeline stages (its supports_pp; checked for PP by
    engine/arg_utils.py _check_feature_supported only for custom executors)."""
    from vllm.v1.executor.abstract import Executor

    executor = Executor.get_class(config)
    return {"executor_class": executor.__name__,
            "executor_supports_pp": bool(getattr(executor, "supports_pp", False)),
            "executor_uses_ray": bool(getattr(executor, "uses_ray", False))}


def pipeline_stages(config, kv_bytes_per_layer: int) -> list[dict[str, Any]]:
    """Each pipeline stage's decoder layers as vLLM 0.33 assigns them to the ranks that run it
    (config/model.py get_layers_start_end_indices -> distributed/utils.py get_pp_indices, for
    a rank of that stage: rank = pp_rank x TP, the DP x PP x TP layout), its attention layers
    (get_num_layers_by_block_type), and the KV bytes one token costs on one of its GPUs: over
    all its attention layers, and over its full-attention ones (the model's layer_types in the
    stage's range; sliding-window layers hold at most a window per request)."""
    import copy

    model, parallel = config.model_config, config.parallel_config
    layer_types = list(getattr(model.hf_text_config, "layer_types", None) or [])
    stages = []
    for pp_rank in range(parallel.pipeline_parallel_size):
        rank_parallel = copy.copy(parallel)
        rank_parallel.rank = pp_rank * parallel.tensor_parallel_size
        start, end = model.get_layers_start_end_indices(rank_parallel)
        attention = model.get_num_layers_by_block_type(rank_parallel, "attention")
        sliding = sum(1 for kind in layer_types[start:end] if "sliding" in str(kind))
        stages.append({
            "layers": [start, end],
            "attention_layers": attention,
            "full_attention_layers": attention - sliding,
            "kv_bytes_per_token_per_rank": kv_bytes_per_layer * attention,
            "kv_bytes_per_token_per_rank_full_layers": kv_bytes_per_layer * (attention - sliding),
        })
    return stages
