"""The ``vllm serve`` command line: built from the stack config and the sizing plan, and
checked against the flags the pinned vLLM actually accepts (``serving.flag_reader``).

Everything here runs at ``pulumi preview`` time and reports every problem at once.
"""

from __future__ import annotations

import json
from typing import Any

from config.constants import NAMESPACE
from config.settings import StackConfig
from config.validation import ConfigError
from serving.adapter_args import addon_args, addon_problems
from serving.extra_args import meaning_problems
from serving.flag_reader import Option, FlagReader
from serving.tool_calling import parser_args
from serving.vllm_flags import SECRET_FLAGS, DEPRECATED_QUANTIZATIONS
from sizing.host import host_ram_required_gib
from sizing.plan import SizingPlan
from sizing.rope import RopeOverride
from sizing.vllm_rules import MAX_LEN_KEYS


# Where vLLM listens on the host's loopback (--port), and where the weights appear in its
# container (the model path, first argument of `vllm serve`).
VLLM_PORT = 8000
SERVED_MODEL_PATH = "/models/served"

# Where vLLM's caches live in its container (VLLM_CACHE_ROOT, vllm/envs.py): a directory of the
# model volume is mounted there (serving.compile_cache), so torch.compile's artifacts outlive the
# container, the instance and the bake.
CONTAINER_CACHE_ROOT = "/vllm-cache"

# The vLLM container's environment besides VLLM_API_KEY (a secret, added by whoever starts it):
# the weights are already on disk, never fetched at start; no usage reports; the cache root.
CONTAINER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CACHE_ROOT": CONTAINER_CACHE_ROOT}

# vLLM 0.33's --shutdown-timeout default is 0: SIGTERM aborts every request in flight
# (vllm/engine/arg_utils.py; tests/real_vllm/test_graceful_stop.py records it). Every host gets
# this many seconds to let them finish (a restart, a replaced container, a stop); `docker stop`
# waits above it (DOCKER_STOP_MARGIN_S). A replica's drain uses the same value
# (components/fleet_bake.py), after the load balancer's deregistration delay.
SHUTDOWN_TIMEOUT_S = 30
DOCKER_STOP_MARGIN_S = 30

# --safetensors-load-strategy prefetch (vLLM 0.33 LoadConfig; vllm/model_executor/model_loader/
# weight_utils.py): 8 threads read the checkpoint into the page cache in 16 MiB blocks while the
# workers load, so a gp3 volume is read at its provisioned throughput rather than at mmap's
# page-fault pace (vllm-project/vllm#36012: 1500 s -> 435 s). Only where the whole checkpoint
# fits in 90 % of the RAM left to the page cache (vLLM's own guard; above it prefetched pages
# would be evicted before use) and on one node (the prefetch splits files by global rank, so
# across nodes a node would cache another node's files); not on a spot fleet (one argv for
# every type of its GPU, whatever their RAM).
PREFETCH_RAM_SHARE = 0.90

# One node: inside the container's own network namespace; the host publishes the port on its
# loopback only, so this is not an exposure (nginx is the only way in).
CONTAINER_HOST = "0.0.0.0"
# Across nodes the head's container shares the host's network (Ray and NCCL reach the other
# nodes' private IPs): vLLM then binds the host's loopback itself.
HOST_NETWORK_HOST = "127.0.0.1"

# Flags this module sets from config keys; in vllmExtraArgs they would fight the sizing
# plan (or put a secret on the command line).
_MANAGED: dict[str, str] = {
    "--model": "model",
    "--served-model-name": "servedModelName",
    "--revision": "modelRevision",
    "--dtype": "dtype",
    "--quantization": "quantization",
    "--kv-cache-dtype": "kvCacheDtype",
    "--max-model-len": "maxModelLen",
    "--max-num-seqs": "maxNumSeqs",
    "--max-num-batched-tokens": "maxNumBatchedTokens",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--tensor-parallel-size": "tensorParallelSize",
    "--pipeline-parallel-size": "pipelineParallelSize",
    "--hf-overrides": "ropeScaling",
    "--api-key": "apiKey",
    "--hf-token": "hfToken",
}

# Flags that would break how the container is wired into the host; no config key sets them.
_PROXY_TLS = "the nginx proxy terminates TLS (see the tls key); vLLM serves plain HTTP behind it"

_FIXED_FLAGS: dict[str, str] = {
    "--host": "the container listens on all interfaces of its own network namespace and "
    "the host publishes the port on 127.0.0.1 only; restrict access with allowedCidrs",
    "--port": "the proxy reaches vLLM on a fixed port; nothing to set",
    "--uds": "the proxy reaches vLLM over TCP; a unix socket would cut it off",
    "--ssl-keyfile": _PROXY_TLS,
    "--ssl-certfile": _PROXY_TLS,
    "--ssl-ca-certs": _PROXY_TLS,
    "--config": "the file would have to exist inside the container; list the flags in "
    "vllmExtraArgs instead",
    "--help": "vllm serve would print its help and exit instead of serving",
    "--headless": "vLLM would run the engine without its API server, so nothing would answer "
    "the proxy",
    "--grpc": "vLLM would serve gRPC instead of the OpenAI HTTP API the proxy forwards",
}


# Without log stats vLLM 0.33 builds no StatLoggerManager, so /metrics has no vllm:* series
# (vllm/v1/engine/async_llm.py: the loggers exist only `if self.log_stats:`, and
# log_stats=not engine_args.disable_log_stats).
_NO_METRICS_FLAG = "--disable-log-stats"


def sets_chat_template(argv: list[str]) -> bool:
    """Whether an argv gives vLLM a chat template: `--chat-template` (a Frontend flag,
    vllm/entrypoints/common/cli_args.py), as `--chat-template X` or `--chat-template=X`."""
    return any(a == "--chat-template" or a.startswith("--chat-template=") for a in argv)


def managed_flags() -> dict[str, str]:
    """Flags this stack sets itself, each mapped to the config key (or secret) that sets it."""
    return dict(_MANAGED)


def fixed_flags() -> dict[str, str]:
    """Flags no config key sets because the host wiring depends on them, with the reason."""
    return dict(_FIXED_FLAGS)


# --- building the command line -----------------------------------------------------------------


def serve_args(
    config: StackConfig,
    plan: SizingPlan,
    *,
    model_path: str,
    port: int = VLLM_PORT,
) -> list[str]:
    """The arguments after the image name (the image's entrypoint is `vllm serve`).

    The API key is never an argument: it reaches vLLM as the VLLM_API_KEY environment
    variable, so it shows neither in `ps` nor in `docker inspect`'s Args.
    Raises ConfigError listing every vllmExtraArgs problem; ValueError when the plan itself
    is inconsistent (a bug, not a configuration problem).
    """
    if not model_path or model_path.startswith("-"):
        raise ValueError(f"model_path must be a path inside the container, got {model_path!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    # Each pipeline stage has a node of its own (sizing.pipeline): one stage per node.
    gpus_used = plan.tensor_parallel_size * plan.data_parallel_size
    if gpus_used > plan.instance.gpu_count:
        raise ValueError(
            f"the plan spans {gpus_used} GPUs per node but {plan.instance.name} has "
            f"{plan.instance.gpu_count}"
        )

    # toolCalling / toolCallParser / reasoningParser (serving.tool_calling)
    parser_flags, parser_problems = parser_args(config, plan, model_path)
    problems = _extra_arg_problems(config, plan, model_path) + parser_problems
    if problems:
        raise ConfigError(problems)
    managed = _managed_args(config, plan, port) + addon_args(config, plan) + parser_flags
    internal = FlagReader(managed, "sizing plan").run().problems
    if internal:  # the builder's own output must pass the same check as the user's
        raise ValueError("vllm_args built flags vLLM would reject:\n" + "\n".join(internal))
    return [model_path, *managed, *_start_args(config, plan), *config.vllm_extra_args]


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _start_args(config: StackConfig, plan: SizingPlan) -> list[str]:
    """What makes a start faster and a stop graceful, unless vllmExtraArgs sets it: the weight
    prefetch where it fits (PREFETCH_RAM_SHARE), and --shutdown-timeout SHUTDOWN_TIMEOUT_S (a
    replica's argv then needs nothing more, serving.replica.replica_argv)."""
    extra = list(config.vllm_extra_args)
    args: list[str] = []
    # A spot fleet runs one argv on every type of its GPU (serving.fleet_types), whatever their
    # RAM: no prefetch there, so the argv does not depend on the type's memory.
    spot_fleet = config.replicas > 1 and config.spot
    if not _given(extra, "--safetensors-load-strategy") and not spot_fleet and prefetch_fits(plan):
        args += ["--safetensors-load-strategy", "prefetch"]
    if not _given(extra, "--shutdown-timeout"):
        args += ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)]
    # apiKeys (issue 29): the proxy counts each tenant's tokens from the `usage` vLLM sends; a
    # stream carries it only when asked (stream_options) or with this flag (vLLM 0.33
    # vllm/entrypoints/common/cli_args.py enable_force_include_usage, read by
    # vllm/entrypoints/serve/utils/api_utils.py should_include_usage). Off without tenants.
    if config.tenants_enabled and not any(
        _given(extra, f) for f in ("--enable-force-include-usage", "--disable-force-include-usage")
    ):
        args += ["--enable-force-include-usage"]
    return args


def prefetch_fits(plan: SizingPlan) -> bool:
    """Whether the checkpoint (plan.weights_on_disk_gb) fits in PREFETCH_RAM_SHARE of the host RAM
    vLLM's processes leave (sizing.host.host_ram_required_gib), on a one-node plan."""
    if plan.nodes != 1:
        return False
    free_gib = plan.instance.memory_gib - host_ram_required_gib(plan.tensor_parallel_size)
    return plan.weights_on_disk_gb * 1e9 <= PREFETCH_RAM_SHARE * free_gib * 2**30


def _managed_args(config: StackConfig, plan: SizingPlan, port: int) -> list[str]:
    args = [
        "--served-model-name", config.served_name,
        "--host", CONTAINER_HOST if plan.nodes == 1 else HOST_NETWORK_HOST,
        "--port", str(port),
        "--dtype", plan.dtype,
        "--tensor-parallel-size", str(plan.tensor_parallel_size),
    ]
    if plan.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(plan.pipeline_parallel_size)]
    if plan.nodes > 1:
        # More GPUs than this node has: vLLM 0.33 needs the Ray backend named
        # (vllm/config/parallel.py ParallelConfig.distributed_executor_backend and __post_init__).
        args += ["--distributed-executor-backend", "ray"]
    args += [
        "--max-model-len", str(plan.max_model_len),
        "--gpu-memory-utilization", repr(float(plan.gpu_memory_utilization)),
    ]
    if plan.max_num_seqs is not None:
        args += ["--max-num-seqs", str(plan.max_num_seqs)]
    # Only when the user chose it, or the sizing had to raise it (sizing.batch): otherwise
    # vLLM's own per-GPU default applies, the one the sizing assumed.
    if plan.emit_max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(plan.max_num_batched_tokens)]
    if plan.quantization and plan.quantization != "none":
        args += ["--quantization", plan.quantization]
    if plan.checkpoint_quantization in DEPRECATED_QUANTIZATIONS:
        # vLLM 0.33 refuses to load these checkpoints without the opt-in.
        args += ["--allow-deprecated-quantization"]
    if plan.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", plan.kv_cache_dtype]
    if plan.rope_override is not None:
        args += ["--hf-overrides", _hf_overrides(plan.rope_override)]
    return args


def _hf_overrides(override: RopeOverride) -> str:
    """The --hf-overrides JSON for ropeScaling, for both transformers 4 and 5 configs.

    vLLM applies a flat key (max_position_embeddings) with `config.update(...)` before
    transformers standardizes the RoPE parameters, and dict-valued keys with `setattr` after
    it (vllm/config/model.py `_apply_dict_overrides`), in the order they appear here.
    transformers 5 (vLLM 0.33 requires >=5.16.1,<5.21) keeps every RoPE setting in one
    `rope_parameters` dict and treats `rope_scaling` as a deprecated alias whose setter
    *replaces* that dict (transformers/configuration_utils.py `PreTrainedConfig.rope_scaling`),
    dropping the model's rope_theta. So `rope_parameters` is sent complete
    (sizing.rope.rope_override: rope_theta, original_max_position_embeddings,
    partial_rotary_factor), and after `rope_scaling`, which transformers 4 and vLLM's v4 path
    still read. For the types vLLM does not multiply by the factor (yarn, longrope, llama3),
    max_position_embeddings is set to original x factor, the length vLLM then derives.
    """
    scaling = {k: v for k, v in override.rope_parameters.items() if k != "rope_theta"}
    overrides: dict[str, Any] = {}
    if override.max_position_embeddings is not None:
        overrides["max_position_embeddings"] = override.max_position_embeddings
    overrides["rope_scaling"] = dict(sorted(scaling.items()))
    overrides["rope_parameters"] = dict(sorted(override.rope_parameters.items()))
    # Compact and key-sorted inside each object: the string is a container input, so a
    # reordered YAML map must not look like a change that restarts the server.
    return json.dumps(overrides, separators=(",", ":"))


def _extra_arg_problems(config: StackConfig, plan: SizingPlan, model_path: str) -> list[str]:
    """Parse problems, flags this stack owns, then what the flags mean together
    (serving.extra_args). For an owned flag only the ownership is reported, since "write
    --max-model-len in full" is moot when it must go anyway."""
    reading = FlagReader(config.vllm_extra_args, "vllmExtraArgs").run()
    where = f"{NAMESPACE}:vllmExtraArgs"
    found: list[tuple[int, str]] = []
    owned_options: set[int] = set()
    for option in reading.options:
        owned = _ownership_problems(option, config, where)
        if owned:
            found += [(option.position, message) for message in owned]
            owned_options.add(id(option))
    found += [
        (position, message)
        for position, option, message in reading.findings
        if option is None or id(option) not in owned_options
    ]
    problems = [message for _, message in sorted(found, key=lambda item: item[0])]
    return problems + meaning_problems(reading, config, plan, model_path) + addon_problems(config, model_path, plan)


def _ownership_problems(option: Option, config: StackConfig, where: str) -> list[str]:
    if option.spec is None:
        return []
    name = option.spec.name
    if name in SECRET_FLAGS:
        key = SECRET_FLAGS[name]
        return [
            f"{where}: {option.written} puts a secret on the command line (visible in ps "
            f"and docker inspect); remove it and set the {key} secret: "
            f"pulumi config set --secret {key} (it prompts for the value, which then stays out of your shell history)"
        ]
    if name in _FIXED_FLAGS:
        return [f"{where}: {option.written} is managed by this stack: {_FIXED_FLAGS[name]}"]
    if name == "--hf-overrides":
        return _hf_override_problems(option, config, where)
    if name == _NO_METRICS_FLAG and config.monitoring:
        return [
            f"{where}: {option.written} removes every vllm:* metric that the dashboards and "
            f"alerts of {NAMESPACE}:monitoring read; drop it, or set monitoring to false"
        ]
    if name in _MANAGED:
        key = _MANAGED[name]
        return [
            f"{where}: {option.written} is set by this stack from the {key} config key; "
            f"remove it and use: pulumi config set {key} <value>"
        ]
    return []


def _hf_override_problems(option: Option, config: StackConfig, where: str) -> list[str]:
    if config.rope_scaling:
        return [
            f"{where}: {option.written} cannot be combined with ropeScaling, which this stack "
            "passes as --hf-overrides; put rope settings (rope_theta included) in ropeScaling "
            "and drop this flag"
        ]
    touched = _override_keys(option)
    rope_keys = sorted(touched & {"rope_scaling", "rope_parameters"})
    if rope_keys:
        return [
            f"{where}: {option.written} sets {', '.join(rope_keys)}; use the ropeScaling config "
            "key instead, so the sizing knows the longer context"
        ]
    length_keys = sorted(touched & set(MAX_LEN_KEYS))
    if length_keys:
        return [
            f"{where}: {option.written} sets {', '.join(length_keys)}, which changes the context "
            "length vLLM derives behind the sizing's back; set maxModelLen (and ropeScaling for a "
            "longer context) instead"
        ]
    return []


def _override_keys(option: Option) -> set[str]:
    if option.dotted_key:
        return {option.dotted_key.split(".")[0]}
    keys: set[str] = set()
    for value in option.values:
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            keys |= set(parsed)
    return keys
