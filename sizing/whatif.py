"""What-if sizing on any GPU: a catalog GPU by name, or any other by its CUDA total.

``tools/size MODEL --gpu L4`` (or ``--gpu-memory-gib 47.37 --compute-capability 8.9`` for an
on-premises card) answers what vLLM 0.33 will log at startup there and whether it starts, with
the same estimate the instance choice uses (``sizing.startup``); ``result_object`` is the
stable JSON shape of ``tools/size --json``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Optional

from config.settings import StackConfig
from sizing import gpus
from sizing import quantities as q
from sizing.candidates import Candidate, resolve_request, startup_estimate
from sizing.choice import evaluate
from sizing.cheaper import CONTEXT_LADDER
from sizing.errors import SizingError
from sizing.gpus import GpuInstance, GpuMemory
from sizing.models import ModelSpec
from sizing.startup import StartupEstimate

# Blocker kinds that belong to buying an AWS instance, not to whether vLLM starts on the GPU.
NOT_ABOUT_THE_GPU = ("unsold", "filter", "region", "host")

# Names that stand for more than one catalog GPU.
AMBIGUOUS = {"A100": ("A100-40GB", "A100-80GB"), "V100": ("V100-16GB", "V100-32GB")}


def _key(name: str) -> str:
    """"NVIDIA A100 40GB", "a100-40gb", "A100 40G" -> "A10040G"."""
    key = re.sub(r"[^A-Z0-9]", "", name.upper().removeprefix("NVIDIA"))
    return key[:-1] if key.endswith("GB") else key


def _catalog_gpus() -> dict[str, str]:
    """Lookup key -> catalog gpu_model, with the short aliases people type."""
    names: dict[str, str] = {}
    for model in gpus.gpu_memory_facts():
        short = model.removeprefix("NVIDIA ")
        names[_key(short)] = model
        names[_key(short.split(" Blackwell")[0])] = model  # "RTX PRO 6000"
    names[_key("H100 80GB")] = names[_key("H100-SXM")] = "NVIDIA H100"
    return names


def catalog_gpu_names() -> list[str]:
    """The names --gpu accepts, one per catalog GPU (e.g. "A100-40GB")."""
    return [model.removeprefix("NVIDIA ").replace(" ", "-") for model in gpus.gpu_memory_facts()]


def find_gpu(name: str) -> str:
    """The catalog gpu_model `name` means (case-insensitive; "A100-40GB", "l40s", "H100").

    Raises SizingError naming the choices for an ambiguous or unknown name.
    """
    key = _key(name)
    if key in AMBIGUOUS:
        raise SizingError(f"--gpu {name} is ambiguous: say {' or '.join(AMBIGUOUS[key])}")
    found = _catalog_gpus().get(key)
    if found:
        return found
    known = catalog_gpu_names()
    close = difflib.get_close_matches(name.upper(), [k.upper() for k in known], n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise SizingError(
        f"--gpu {name} is not a GPU the catalog knows ({', '.join(known)}).{hint} For another GPU "
        "give its CUDA total and compute capability: --gpu-memory-gib 47.37 --compute-capability 8.9"
    )


def _compute_capability(gpu_model: str) -> float:
    for instance in gpus.load_instances():
        if instance.gpu_model == gpu_model:
            return instance.compute_capability
    raise SizingError(f"no catalog instance carries {gpu_model}, so its compute capability is unknown")


def gpu_instance(
    gpu: Optional[str], gpu_count: int, cuda_total_gib: Optional[float] = None,
    compute_capability: Optional[float] = None,
) -> GpuInstance:
    """`gpu_count` GPUs of one kind as a what-if instance (no price, no host facts).

    Either a catalog GPU (`gpu`), or any GPU by its CUDA total in GiB (what
    torch.cuda.mem_get_info() reports, which vLLM budgets against) and compute capability.
    """
    if gpu:
        model = find_gpu(gpu)
        memory = gpus.gpu_memory_facts()[model]
        cc = _compute_capability(model)
        label = model.removeprefix("NVIDIA ")
    else:
        if cuda_total_gib is None or compute_capability is None:
            raise SizingError("give --gpu NAME, or both --gpu-memory-gib and --compute-capability")
        if cuda_total_gib <= 0 or not 3.0 <= compute_capability < 20:
            raise SizingError(
                f"--gpu-memory-gib {cuda_total_gib:g} / --compute-capability {compute_capability:g}: "
                "give the CUDA total in GiB (> 0) and a compute capability such as 8.9"
            )
        memory = GpuMemory(ec2_api_mib=0, nvidia_smi_mib=0, cuda_total_gib=cuda_total_gib, nvidia_smi_name="")
        cc = compute_capability
        model = label = f"GPU {cuda_total_gib:g} GiB cc {cc:g}"
    return GpuInstance(
        name=f"{gpu_count}x {label}", gpu_model=model, gpu_count=gpu_count, gpu_memory=memory,
        compute_capability=cc, vcpus=0, memory_gib=0.0, on_demand_usd_per_hour=None, arch="x86_64",
    )


@dataclass(frozen=True)
class WhatIf:
    """One GPU's answer: the startup estimate, whether vLLM starts, and why not (plus the ways
    that would make it fit)."""

    instance: GpuInstance
    tensor_parallel_size: int
    estimate: StartupEstimate
    fits: bool
    reasons: tuple[str, ...]
    min_concurrent_sequences: int = 1  # the requests the KV cache for the requested sequences holds


def what_if(config: StackConfig, spec: ModelSpec, instance: GpuInstance) -> WhatIf:
    """Whether vLLM 0.33 starts serving `spec` on `instance`'s GPUs as configured, and why not."""
    judged = evaluate(config, spec, instance)
    blockers = [b for b in judged.blockers if b.kind not in NOT_ABOUT_THE_GPU]
    tp = judged.tensor_parallel_size or _asked_tp(config)
    # evaluate() has made the one refusal resolve_request leaves out (16-bit dtype on fp8 weights).
    est = startup_estimate(resolve_request(config, spec), config, instance, tp)
    reasons = [b.message for b in blockers]
    fits = not reasons
    if not fits and not any(b.kind == "memory" for b in blockers) and not est.holds(config.min_concurrent_sequences):
        reasons.append(_shortfall(est, config))
    if not fits:
        reasons += _ways_to_fit(config, spec, instance, est)
    return WhatIf(instance, tp, est, fits, tuple(reasons), config.min_concurrent_sequences)


def _asked_tp(config: StackConfig) -> int:
    return 1 if config.tensor_parallel_size == "auto" else int(config.tensor_parallel_size)


def _shortfall(est: StartupEstimate, config: StackConfig) -> str:
    need = est.kv_needed_gib(config.min_concurrent_sequences)
    return (
        f"{q.KV_ALLOCATED.label} {est.kv_cache_gib:.2f} GiB (Available KV cache memory) < "
        f"{q.KV_FOR_SEQUENCES.label} {need:.2f} GiB ({config.min_concurrent_sequences} x "
        f"{est.max_model_len} tokens)"
    )


def _ways_to_fit(config: StackConfig, spec: ModelSpec, instance: GpuInstance, est: StartupEstimate) -> list[str]:
    """A shorter context and an fp8 KV cache, where either would let vLLM start here."""
    ways = []
    for length in (n for n in CONTEXT_LADDER if n < est.max_model_len):
        if _fits(config.model_copy(update={"max_model_len": length}), spec, instance):
            ways.append(f"would fit at --max-model-len {length}")
            break
    if config.kv_cache_dtype != "fp8" and _fits(config.model_copy(update={"kv_cache_dtype": "fp8"}), spec, instance):
        ways.append("would fit with --kv-cache-dtype fp8")
    return ways


def _fits(config: StackConfig, spec: ModelSpec, instance: GpuInstance) -> bool:
    try:
        judged: Candidate = evaluate(config, spec, instance)
    except SizingError:
        return False
    return not [b for b in judged.blockers if b.kind not in NOT_ABOUT_THE_GPU]


def result_object(result: WhatIf, **extra: Any) -> dict[str, Any]:
    """The stable JSON shape of ``tools/size --json`` (GiB per GPU, rounded as vLLM logs them)."""
    est = result.estimate
    return {
        "fits": result.fits,
        "tensor_parallel_size": result.tensor_parallel_size,
        "per_gpu_gib": {  # keys from sizing.quantities, one per quantity
            q.GPU_TOTAL.json_key: round(est.total_gib, 2),
            q.BUDGET.json_key: round(est.budget_gib, 2),
            q.WEIGHTS.json_key: round(est.weights_gib, 2),
            q.ACTIVATION_PEAK.json_key: round(est.activation_gib, 2),
            q.CUDA_GRAPHS.json_key: round(est.cuda_graphs_gib, 2),
            q.NON_TORCH.json_key: round(est.non_torch_gib, 2),
            q.KV_ALLOCATED.json_key: round(est.kv_cache_gib, 2),
            q.KV_FOR_SEQUENCES.json_key: round(est.kv_needed_gib(result.min_concurrent_sequences), 2),
            # Only with loraAdapters / a speculative draft (sizing.addons).
            **({"lora_buffers": round(est.lora_buffers_gib, 3)} if est.lora_buffers_gib else {}),
            **({"draft_weights": round(est.draft_weights_gib, 3)} if est.draft_weights_gib else {}),
        },
        q.KV_TOKENS.json_key: est.kv_cache_tokens,
        q.MAX_CONCURRENCY.json_key: round(est.max_concurrency, 2),
        "reasons": list(result.reasons),
        **extra,
    }
