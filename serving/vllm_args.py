"""The ``vllm serve`` command line: built from the stack config and the sizing plan, and
checked against the flags the pinned vLLM actually accepts (``serving.flag_reader``).

Everything here runs at ``pulumi preview`` time and reports every problem at once.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from config.settings import NAMESPACE, ConfigError, StackConfig
from serving.flag_reader import _Option, _Reader
from serving.vllm_flags import _SECRET_FLAGS, DEPRECATED_QUANTIZATIONS
from sizing.plan import SizingPlan


# Inside the container's own network namespace; the host publishes the port on its
# loopback only, so this is not an exposure (nginx is the only way in).
CONTAINER_HOST = "0.0.0.0"

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
}


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
    port: int = 8000,
    rope_theta: Optional[float] = None,
) -> list[str]:
    """The arguments after the image name (the image's entrypoint is `vllm serve`).

    `rope_theta` is the model's RoPE base frequency from its config.json; it is needed only
    when ropeScaling is set and does not carry rope_theta itself (see _hf_overrides).
    The API key is never an argument: it reaches vLLM as the VLLM_API_KEY environment
    variable, so it shows neither in `ps` nor in `docker inspect`'s Args.
    """
    if not model_path or model_path.startswith("-"):
        raise ValueError(f"model_path must be a path inside the container, got {model_path!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    gpus_used = plan.tensor_parallel_size * plan.pipeline_parallel_size
    if gpus_used > plan.instance.gpu_count:
        raise ValueError(
            f"the plan spans {gpus_used} GPUs but {plan.instance.name} has "
            f"{plan.instance.gpu_count}"
        )

    problems = _extra_arg_problems(config)
    managed = _managed_args(config, plan, port, rope_theta, problems)
    if problems:
        raise ConfigError(problems)
    internal = _Reader(managed, "sizing plan").run().problems
    if internal:  # the builder's own output must pass the same check as the user's
        raise ValueError("vllm_args built flags vLLM would reject:\n" + "\n".join(internal))
    return [model_path, *managed, *config.vllm_extra_args]


def _managed_args(
    config: StackConfig,
    plan: SizingPlan,
    port: int,
    rope_theta: Optional[float],
    problems: list[str],
) -> list[str]:
    args = [
        "--served-model-name", config.served_name,
        "--host", CONTAINER_HOST,
        "--port", str(port),
        "--dtype", plan.dtype,
        "--tensor-parallel-size", str(plan.tensor_parallel_size),
    ]
    if plan.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(plan.pipeline_parallel_size)]
    args += [
        "--max-model-len", str(plan.max_model_len),
        "--gpu-memory-utilization", repr(float(plan.gpu_memory_utilization)),
    ]
    if plan.max_num_seqs is not None:
        args += ["--max-num-seqs", str(plan.max_num_seqs)]
    # Only when the user chose it: otherwise vLLM's own per-GPU default applies, which
    # also grows to max_model_len for models that cannot chunk their prefill.
    if config.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(plan.max_num_batched_tokens)]
    if plan.quantization and plan.quantization != "none":
        args += ["--quantization", plan.quantization]
    if plan.checkpoint_quantization in DEPRECATED_QUANTIZATIONS:
        # vLLM 0.33 refuses to load these checkpoints without the opt-in.
        args += ["--allow-deprecated-quantization"]
    if plan.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", plan.kv_cache_dtype]
    if config.rope_scaling:
        overrides = _hf_overrides(config.rope_scaling, rope_theta, problems)
        if overrides is not None:
            args += ["--hf-overrides", overrides]
    return args


def _hf_overrides(
    rope_scaling: dict[str, Any], rope_theta: Optional[float], problems: list[str]
) -> Optional[str]:
    """The --hf-overrides JSON for ropeScaling, for both transformers 4 and 5 configs.

    vLLM applies it with `config.update(...)`. transformers 5 (what the 0.33 parser was
    built with) keeps every RoPE setting in one `rope_parameters` dict and treats
    `rope_scaling` as a deprecated alias that *replaces* that dict, dropping the model's
    rope_theta (checked with transformers 5.23.0 on a Qwen2 config: rope_theta became
    None). So `rope_parameters` is sent complete, rope_theta included, and after
    `rope_scaling`, which transformers 4 and vLLM's v4 path still read.
    No max_position_embeddings override: vLLM derives the context limit from
    original_max_position_embeddings x factor, and --max-model-len states the length
    actually served.
    """
    scaling = {k: v for k, v in rope_scaling.items() if k not in ("rope_theta", "type")}
    scaling.setdefault("rope_type", rope_scaling.get("type"))
    theta = rope_scaling.get("rope_theta", rope_theta)
    if theta is None:
        problems.append(
            f"{NAMESPACE}:ropeScaling needs rope_theta, the model's RoPE base frequency from "
            "its config.json (e.g. 1000000.0 for Qwen2.5): vLLM 0.33 with transformers 5 "
            "replaces the model's whole RoPE block with this object; add "
            '"rope_theta": <value> to ropeScaling'
        )
        return None
    overrides = {
        "rope_scaling": dict(sorted(scaling.items())),
        "rope_parameters": dict(sorted({**scaling, "rope_theta": theta}.items())),
    }
    # Compact and key-sorted inside each object: the string is a container input, so a
    # reordered YAML map must not look like a change that restarts the server.
    return json.dumps(overrides, separators=(",", ":"))


def _extra_arg_problems(config: StackConfig) -> list[str]:
    """Parse problems, plus flags this stack owns; for an owned flag only the latter is
    reported, since "write --max-model-len in full" is moot when it must go anyway."""
    reading = _Reader(config.vllm_extra_args, "vllmExtraArgs").run()
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
    return [message for _, message in sorted(found, key=lambda item: item[0])]


def _ownership_problems(option: _Option, config: StackConfig, where: str) -> list[str]:
    if option.spec is None:
        return []
    name = option.spec.name
    if name in _SECRET_FLAGS:
        key = _SECRET_FLAGS[name]
        return [
            f"{where}: {option.written} puts a secret on the command line (visible in ps "
            f"and docker inspect); remove it and set the {key} secret: "
            f"pulumi config set --secret {key} <value>"
        ]
    if name in _FIXED_FLAGS:
        return [f"{where}: {option.written} is managed by this stack: {_FIXED_FLAGS[name]}"]
    if name == "--hf-overrides":
        return _hf_override_problems(option, config, where)
    if name in _MANAGED:
        key = _MANAGED[name]
        return [
            f"{where}: {option.written} is set by this stack from the {key} config key; "
            f"remove it and use: pulumi config set {key} <value>"
        ]
    return []


def _hf_override_problems(option: _Option, config: StackConfig, where: str) -> list[str]:
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
    return []


def _override_keys(option: _Option) -> set[str]:
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
