"""The instance types a spot fleet may run on: every type the sizing finds fitting that runs the
SAME `vllm serve` argv as the chosen one (issue 26). Pure: sizing and the argv renderer, no Pulumi.

A mixed-instances Auto Scaling group launches any type of its list from one launch template, so
one baked image (its driver, its container images, its model volume) and one argv (baked into
the image as vllm-args.json) run on all of them. A type is kept only when

- it fits the model as configured, on one node (sizing.choice.candidates);
- its sizing plan renders exactly the chosen type's argv (serving.vllm_args.serve_args): a type
  whose GPU would change --tensor-parallel-size, --max-num-seqs, --max-model-len or any other
  flag is left out (fleet-pitfalls P22: a flag that fits the builder's type may not fit another);
- it has the chosen type's CPU architecture (the image is one architecture) and GPU model: the
  image's NVIDIA driver branch and CUDA build are checked on the builder's GPU only, and vLLM's
  compiled kernels and CUDA graphs are per GPU (fleet-pitfalls P23), so the list stays within one
  GPU (for example g6.xlarge .. g6.16xlarge: one L4 each, more host vCPUs and memory).

Cheapest first (on-demand price; ties by name): the launch template's overrides take this order,
and the on-demand base uses it as its priority (OnDemandAllocationStrategy "prioritized").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Callable, Optional

from config.settings import StackConfig
from serving.vllm_args import SERVED_MODEL_PATH, VLLM_PORT, serve_args
from sizing import choice
from sizing.errors import SizingError
from sizing.models import ModelSpec
from sizing.plan import SizingPlan


@dataclass(frozen=True)
class FleetType:
    """One instance type of a spot fleet's list."""

    name: str
    on_demand_usd_per_hour: Optional[float]  # us-east-1 list price (the catalog's)
    gpu_model: str


@dataclass(frozen=True)
class FleetTypes:
    """The types kept, cheapest first (the chosen type among them), and why the other types of
    the same GPU that fit were left out (type -> reason)."""

    types: tuple[FleetType, ...]
    left_out: dict[str, str]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.types]


def _flags(argv: list[str]) -> dict[str, str]:
    """`--flag value` / `--flag=value` / bare `--flag` -> {flag: value or ""}."""
    out: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, _, value = arg.partition("=")
        if not value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        out[name] = value
    return out


def argv_difference(ours: list[str], theirs: list[str]) -> str:
    """What another type's argv changes, e.g. `--tensor-parallel-size 4 (not 1)`."""
    a, b = _flags(ours), _flags(theirs)
    parts = [
        f"{flag} {b.get(flag, '(absent)')} (not {a.get(flag, 'absent')})"
        for flag in sorted(set(a) | set(b)) if a.get(flag) != b.get(flag)
    ]
    return "; ".join(parts) or "the same flags in another order"


def _memo(resolver: Callable[..., ModelSpec]) -> Callable[..., ModelSpec]:
    """The model is resolved once for every type (a hub lookup each time otherwise)."""
    seen: dict[tuple, ModelSpec] = {}

    def resolve(*args, **kwargs) -> ModelSpec:
        key = (args, tuple(sorted(kwargs.items())))
        if key not in seen:
            seen[key] = resolver(*args, **kwargs)
        return seen[key]

    return resolve


def same_argv_types(
    config: StackConfig,
    plan: SizingPlan,
    argv: list[str],
    *,
    offered: Optional[Collection[str]] = None,
    resolver: Callable[..., ModelSpec] = choice.resolve,
) -> FleetTypes:
    """Every type in `offered` (None: the whole catalog) that fits with `argv`, the argv of
    `plan` (stack.preflight.vllm_command), cheapest first; `plan.instance` is always first among
    equals and always kept. Raises SizingError when the model cannot be resolved."""
    resolver = _memo(resolver)
    chosen = plan.instance
    judged = choice.candidates(config, offered=offered, resolver=resolver, node_counts=[1])
    kept = {chosen.name: FleetType(chosen.name, chosen.on_demand_usd_per_hour, chosen.gpu_model)}
    left_out: dict[str, str] = {}
    for candidate in judged:
        instance = candidate.instance
        if not candidate.fits or instance.name == chosen.name:
            continue
        if instance.arch != chosen.arch or instance.gpu_model != chosen.gpu_model:
            continue  # another GPU or architecture: not this image's (the module's doc)
        try:
            other = choice.plan(config.model_copy(update={"instance_type": instance.name}),
                                offered=offered, resolver=resolver)
        except SizingError as exc:
            left_out[instance.name] = f"not sized: {str(exc).splitlines()[0][:200]}"
            continue
        other_argv = serve_args(config, other, model_path=SERVED_MODEL_PATH, port=VLLM_PORT)
        if other_argv != list(argv):
            left_out[instance.name] = f"another vLLM argv: {argv_difference(list(argv), other_argv)}"
            continue
        kept[instance.name] = FleetType(instance.name, instance.on_demand_usd_per_hour, instance.gpu_model)

    def order(t: FleetType) -> tuple:
        return (t.on_demand_usd_per_hour is None, t.on_demand_usd_per_hour or 0.0, t.name != chosen.name, t.name)

    return FleetTypes(tuple(sorted(kept.values(), key=order)), left_out)
