"""``python -m sizing MODEL ...`` (stable entry point: ``tools/size``): which AWS GPU instance
serves MODEL, and why, without AWS credentials."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from config.settings import ConfigError, StackConfig, parse
from sizing import gpus as instance_catalog
from sizing.choice import _resolve_spec, candidates, plan
from sizing.errors import SizingError
from sizing.hub import resolve
from sizing.models import catalog_models
from sizing.report import format_report, format_table


def _cli_config(args: argparse.Namespace) -> StackConfig:
    raw: dict[str, object] = {"model": args.model}
    for key, value in (
        ("modelSource", args.model_source),
        ("maxModelLen", args.max_model_len),
        ("quantization", args.quantization),
        ("dtype", args.dtype),
        ("kvCacheDtype", args.kv_cache_dtype),
        ("minConcurrentSequences", args.min_concurrent_sequences),
        ("tensorParallelSize", args.tensor_parallel_size),
        ("instanceType", args.instance_type),
        ("maxHourlyPriceUsd", args.max_hourly_price_usd),
        ("gpuMemoryUtilization", args.gpu_memory_utilization),
    ):
        if value is not None:
            raw[key] = value
    return parse(raw)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/size",
        description="Which AWS GPU instance serves MODEL, and why (no AWS credentials needed).",
    )
    parser.add_argument("model", nargs="?", help="hub id (org/name) or an absolute model directory")
    parser.add_argument("--model-source", choices=("huggingface", "modelscope"))
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--quantization")
    parser.add_argument("--dtype")
    parser.add_argument("--kv-cache-dtype")
    parser.add_argument("--min-concurrent-sequences", type=int)
    parser.add_argument("--tensor-parallel-size")
    parser.add_argument("--instance-type")
    parser.add_argument("--max-hourly-price-usd", type=float)
    parser.add_argument("--gpu-memory-utilization", type=float)
    parser.add_argument(
        "--region", help="label only: offerings per region need AWS (pulumi preview checks them)"
    )
    parser.add_argument(
        "--offered", help="comma-separated instance types to consider (e.g. what a region offers)"
    )
    parser.add_argument("--all", action="store_true", help="list every instance, with why it does not fit")
    parser.add_argument("--list-models", action="store_true", help="list the catalog models and exit")
    args = parser.parse_args(argv)
    if args.list_models:
        print("\n".join(spec.model_id for spec in catalog_models()))
        return 0
    if not args.model:
        parser.error("MODEL is required (or --list-models)")
    try:
        config = _cli_config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    offered = {t.strip() for t in args.offered.split(",") if t.strip()} if args.offered else None
    try:
        spec = _resolve_spec(config, resolve)
        judged = candidates(config, offered=offered, spec=spec)
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(judged, show_all=args.all))
    print()
    if args.region and args.region != instance_catalog.PRICE_REGION:
        print(f"note: prices are {instance_catalog.PRICE_REGION}; offerings in {args.region} are not "
              "checked here (pass --offered, or run pulumi preview)")
    try:
        print(format_report(plan(config, offered=offered, resolver=lambda *_: spec)))
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
