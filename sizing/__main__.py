"""``python -m sizing MODEL ...`` (stable entry point: ``tools/size``): what vLLM 0.33 will do with
MODEL on a GPU, or which AWS GPU instance serves it and why, without AWS credentials.

    tools/size MODEL [--gpu NAME | --gpu-memory-gib G --compute-capability C] [--gpu-count N]
        [--tensor-parallel-size T] [--gpu-memory-utilization U] [--max-model-len L]
        [--max-num-batched-tokens B] [--max-num-seqs S] [--dtype D] [--quantization Q]
        [--kv-cache-dtype K] [--min-concurrent-sequences M] [--rope-scaling JSON] [--json]

With a GPU it answers for that GPU (``sizing.whatif``); without, it ranks the catalog's instances.
``--json`` prints one object (``sizing.whatif.result_object``). Every option that names a stack key
defaults to that key's default (``stack_default``), so the answer is the stack's: "fits" means
vLLM starts and its KV cache holds ``minConcurrentSequences`` full-length requests. The figures'
names are ``sizing.quantities``'. Without a GPU the candidate table lists the instances that fit
(``--all``: every instance, with why not). Catalog models need no network; any other model's config.json is asked of the hub once (said on stderr) and
cached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional
from urllib.parse import urlparse

from config.images import PINNED_VLLM_VERSION
from config.settings import StackConfig
from config.validation import ConfigError, parse
from sizing import gpus as instance_catalog
from sizing import quantities as q
from sizing.choice import _resolve_spec, candidates, plan
from sizing.errors import SizingError
from sizing.hub import http_fetch, resolve
from sizing.models import ModelSpec, catalog_models
from sizing.report import format_report, format_table
from sizing.whatif import WhatIf, catalog_gpu_names, gpu_instance, result_object, what_if

# The one option with a default of its own: the stack key it feeds is required (no default to
# take), and README's add-on example leaves it out.
NUM_SPECULATIVE_TOKENS = 4


def stack_default(key: str) -> Any:
    """The stack key's default (config.settings.StackConfig), the one the CLI's option takes:
    an option left out is left out of the config, so parse() applies the same default."""
    return StackConfig.model_fields[key].get_default(call_default_factory=True)


def _cli_config(args: argparse.Namespace) -> StackConfig:
    raw: dict[str, object] = {"model": args.model}
    for key, value in (
        ("modelSource", args.model_source),
        ("maxModelLen", args.max_model_len),
        ("maxNumBatchedTokens", args.max_num_batched_tokens),
        ("maxNumSeqs", args.max_num_seqs),
        ("quantization", args.quantization),
        ("dtype", args.dtype),
        ("kvCacheDtype", args.kv_cache_dtype),
        ("minConcurrentSequences", args.min_concurrent_sequences),
        ("tensorParallelSize", args.tensor_parallel_size),
        ("instanceType", args.instance_type),
        ("maxHourlyPriceUsd", args.max_hourly_price_usd),
        ("gpuMemoryUtilization", args.gpu_memory_utilization),
        ("ropeScaling", args.rope_scaling),
        ("nodes", args.nodes),
    ):
        if value is not None:
            raw[key] = value
    raw.update(_addon_keys(args))
    return parse(raw)


def _addon_keys(args: argparse.Namespace) -> dict[str, object]:
    """--lora-adapter NAME=MODEL[@REVISION] ..., --max-loras, --max-lora-rank,
    --speculative-model MODEL[@REVISION] --num-speculative-tokens N: the add-on stack keys."""
    raw: dict[str, object] = {}
    if args.lora_adapter:
        adapters = []
        for item in args.lora_adapter:
            name, _, model = item.partition("=")
            model, _, revision = model.partition("@")
            adapters.append({"name": name, "model": model, **({"revision": revision} if revision else {})})
        raw["loraAdapters"] = adapters
    for key, value in (("maxLoras", args.max_loras), ("maxLoraRank", args.max_lora_rank)):
        if value is not None:
            raw[key] = value
    if args.speculative_model:
        model, _, revision = args.speculative_model.partition("@")
        method = {"method": model} if model in ("ngram", "suffix") else {"model": model}
        raw["speculativeModel"] = {
            **method, **({"revision": revision} if revision else {}),
            "numSpeculativeTokens": args.num_speculative_tokens,
        }
    return raw


def _rope_scaling(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object is needed, e.g. '{{\"rope_type\": \"yarn\"}}': {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/size",
        description="What vLLM 0.33 will do with MODEL on a GPU, or which AWS GPU instance serves it "
        "(no AWS credentials needed).",
    )
    parser.add_argument("model", nargs="?", help="hub id (org/name) or an absolute model directory")
    gpu = parser.add_argument_group("the GPU (without one, every catalog instance is ranked)")
    gpu.add_argument("--gpu", help=f"a catalog GPU: {', '.join(catalog_gpu_names())} (case-insensitive)")
    gpu.add_argument("--gpu-memory-gib", type=float, help="any other GPU: its CUDA total in GiB (torch.cuda.mem_get_info)")
    gpu.add_argument("--compute-capability", type=float, help="any other GPU: its compute capability, e.g. 8.9")
    gpu.add_argument("--gpu-count", type=int, help="GPUs (default: the tensor-parallel size, else 1)")
    serve = parser.add_argument_group("vLLM settings (the stack keys of the same names)")
    serve.add_argument("--tensor-parallel-size")
    serve.add_argument("--gpu-memory-utilization", type=float)
    serve.add_argument("--max-model-len", type=int)
    serve.add_argument("--max-num-batched-tokens", type=int)
    serve.add_argument("--max-num-seqs", type=int)
    serve.add_argument("--dtype")
    serve.add_argument("--quantization")
    serve.add_argument("--kv-cache-dtype")
    serve.add_argument(
        "--min-concurrent-sequences", type=int,
        help="full-length requests the KV cache must hold at once (default: the stack's, "
        f"{stack_default('min_concurrent_sequences')}; 1 is vLLM's own start check)",
    )
    serve.add_argument("--rope-scaling", type=_rope_scaling, help='JSON, e.g. \'{"rope_type": "yarn", "factor": 4.0}\'')
    addons = parser.add_argument_group("LoRA adapters and speculative decoding (loraAdapters, speculativeModel)")
    addons.add_argument("--lora-adapter", action="append", metavar="NAME=MODEL[@REVISION]",
                        help="an adapter (repeat for more); its rank is read from its adapter_config.json")
    addons.add_argument("--max-loras", type=int)
    addons.add_argument("--max-lora-rank", type=int, help="needed when an adapter's rank cannot be read")
    addons.add_argument("--speculative-model", metavar="MODEL[@REVISION]", help="a draft model, or ngram / suffix")
    addons.add_argument(
        "--num-speculative-tokens", type=int, default=NUM_SPECULATIVE_TOKENS,
        help=f"with --speculative-model (default {NUM_SPECULATIVE_TOKENS} here: the stack key "
        "speculativeModel.numSpeculativeTokens has no default, a stack must set it)",
    )
    parser.add_argument("--model-source", choices=("huggingface", "modelscope"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    ranking = parser.add_argument_group("ranking the catalog's instances")
    ranking.add_argument("--instance-type")
    ranking.add_argument("--nodes", help="identical instances, one pipeline stage each: 1 to 8, or auto")
    ranking.add_argument("--max-hourly-price-usd", type=float)
    ranking.add_argument("--region", help="label only: offerings per region need AWS (pulumi preview checks them)")
    ranking.add_argument("--offered", help="comma-separated instance types to consider (e.g. what a region offers)")
    ranking.add_argument("--all", action="store_true",
                         help="list every instance, with why it does not fit (without it: only the ones that fit)")
    parser.add_argument("--list-models", action="store_true", help="list the catalog models and exit")
    parser.add_argument("--list-gpus", action="store_true", help="list the catalog GPUs and exit")
    return parser


def _announcing_fetch(url: str, headers: dict[str, str], timeout: float) -> Optional[bytes]:
    """The hub fetch, said on stderr (only reached when the answer is not cached)."""
    file = url.rsplit("/", 1)[-1]
    print(f"tools/size: the model is not in the catalog; asking {urlparse(url).netloc} for {file}",
          file=sys.stderr)
    return http_fetch(url, headers, timeout)


def _resolver(model: str, source: str = "huggingface", revision: Optional[str] = None) -> ModelSpec:
    return resolve(model, source, revision, fetch=_announcing_fetch)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list_models:
        print("\n".join(spec.model_id for spec in catalog_models()))
        return 0
    if args.list_gpus:
        print("\n".join(catalog_gpu_names()))
        return 0
    if not args.model:
        parser.error("MODEL is required (or --list-models / --list-gpus)")
    if args.gpu and (args.gpu_memory_gib is not None or args.compute_capability is not None):
        parser.error("give --gpu NAME or --gpu-memory-gib with --compute-capability, not both")
    try:
        config = _cli_config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        spec = _resolve_spec(config, _resolver)
        if args.gpu or args.gpu_memory_gib is not None or args.compute_capability is not None:
            return _on_gpu(args, config, spec)
        return _ranking(args, config, spec)
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _on_gpu(args: argparse.Namespace, config: StackConfig, spec: ModelSpec) -> int:
    asked_tp = None if config.tensor_parallel_size == "auto" else int(config.tensor_parallel_size)
    count = args.gpu_count or asked_tp or 1
    instance = gpu_instance(args.gpu, count, args.gpu_memory_gib, args.compute_capability)
    result = what_if(config, spec, instance)
    extra = {"gpu": instance.gpu_model.removeprefix("NVIDIA "), "gpu_count": count,
             "max_model_len": result.estimate.max_model_len, "vllm": PINNED_VLLM_VERSION}
    if args.json:
        print(json.dumps(result_object(result, **extra)))
    else:
        print(format_what_if(config, result))
    return 0 if result.fits else 1  # as the ranking does: 1 when it does not fit


def _ranking(args: argparse.Namespace, config: StackConfig, spec: ModelSpec) -> int:
    offered = {t.strip() for t in args.offered.split(",") if t.strip()} if args.offered else None
    judged = candidates(config, offered=offered, spec=spec)
    try:
        chosen = plan(config, offered=offered, resolver=lambda *_: spec)
    except SizingError as exc:
        if not args.json:
            # The ways out first (the refusal, on stderr); the long table only with --all.
            if args.all:
                print(format_table(judged, show_all=True))
                print()
                raise
            raise SizingError(
                f"{exc}\n  every candidate ({len(judged)}) and why it does not fit: the same command with --all"
            ) from None
        largest = max(instance_catalog.load_instances(), key=lambda i: (i.gpu_count > 0, i.total_cuda_memory_gib))
        result = what_if(config, spec, largest)
        print(json.dumps(result_object(
            WhatIf(result.instance, result.tensor_parallel_size, result.estimate, False, (str(exc),),
                   config.min_concurrent_sequences),
            instance_type=None, hourly_price_usd=None, vllm=PINNED_VLLM_VERSION,
        )))
        return 0
    if args.json and chosen.nodes > 1:
        # The single-node object's leading keys, and the plan as the stack's `sizing` output has it
        # (per-GPU figures of the fullest stage, nodes, layers per stage, price per node).
        print(json.dumps({
            "fits": True, "instance_type": chosen.instance.name, "nodes": chosen.nodes,
            "hourly_price_usd": chosen.hourly_price_usd, "vllm": PINNED_VLLM_VERSION,
            "sizing": chosen.to_output(),
        }))
        return 0
    if args.json:
        result = what_if(config, spec, chosen.instance)
        print(json.dumps(result_object(
            result, instance_type=chosen.instance.name, hourly_price_usd=chosen.hourly_price_usd,
            gpu=chosen.instance.gpu_model.removeprefix("NVIDIA "), gpu_count=chosen.instance.gpu_count,
            max_model_len=chosen.max_model_len, cheaper=list(chosen.cheaper), vllm=PINNED_VLLM_VERSION,
        )))
        return 0
    print(format_table(judged, show_all=args.all))
    print()
    if args.region and args.region != instance_catalog.PRICE_REGION:
        print(f"note: prices are {instance_catalog.PRICE_REGION}; offerings in {args.region} are not "
              "checked here (pass --offered, or run pulumi preview)")
    print(format_report(chosen))
    return 0


def format_what_if(config: StackConfig, result: WhatIf) -> str:
    """The readable answer for one GPU: vLLM's startup figures, then the verdict and why."""
    est, inst = result.estimate, result.instance
    w = len(q.KV_ALLOCATED.label)  # the widest label below
    lines = [
        f"{config.model} on {inst.gpu_count}x {inst.gpu_model.removeprefix('NVIDIA ')} "
        f"({est.total_gib:.2f} GiB as CUDA sees it, compute capability {inst.compute_capability:.1f}), "
        f"tensor parallel {result.tensor_parallel_size}, vLLM {PINNED_VLLM_VERSION}",
        f"  max model len {est.max_model_len}, gpu memory utilization {config.gpu_memory_utilization:g}, "
        f"KV cache dtype {config.kv_cache_dtype}",
        f"  per GPU, GiB:\n      {q.BUDGET.label:<{w}} {est.budget_gib:6.2f}  "
        f"(= {config.gpu_memory_utilization:g} x {est.total_gib:.2f})",
        f"    - {q.WEIGHTS.label:<{w}} {est.weights_gib:6.2f}  (Model loading took)",
        *([f"    - {'LoRA buffers':<{w}} {est.lora_buffers_gib:6.2f}  (in Model loading took: max_loras x "
           "max_lora_rank x layer dims)"] if est.lora_buffers_gib else []),
        *([f"    - {'draft weights':<{w}} {est.draft_weights_gib:6.2f}  (in Model loading took: the draft's weights)"]
          if est.draft_weights_gib else []),
        f"    - {q.ACTIVATION_PEAK.label:<{w}} {est.activation_gib:6.2f}  (the profile run's peak)",
        f"    - {q.CUDA_GRAPHS.label:<{w}} {est.cuda_graphs_gib:6.2f}  (Estimated CUDA graph memory)",
        f"    - {q.NON_TORCH.label:<{w}} {est.non_torch_gib:6.2f}",
        f"    = {q.KV_ALLOCATED.label:<{w}} {est.kv_cache_gib:6.2f}  (Available KV cache memory)",
        f"  {q.KV_TOKENS.label}: {est.kv_cache_tokens:,} tokens; {q.MAX_CONCURRENCY.label} for "
        f"{est.max_model_len:,} tokens per request: {est.max_concurrency:.2f}x",
    ]
    need = est.kv_needed_gib(config.min_concurrent_sequences)
    lines.append(
        f"  {q.KV_FOR_SEQUENCES.label}: minConcurrentSequences {config.min_concurrent_sequences} x "
        f"{est.max_model_len:,} tokens = {need:.2f} GiB"
    )
    if result.fits:
        lines.append("  fits: yes")
    else:
        lines.append("  fits: no")
        lines += [f"    - {reason}" for reason in result.reasons]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
