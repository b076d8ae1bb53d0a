"""How long a start takes, stage by stage, for the dev, prod and large stacks' models on the
instances the sizing picks for them (Pulumi.<stack>.yaml through config.validation and
sizing.choice, nothing hard-coded): a single host cold, a wake, a fleet scale-out cold and from the
warm pool. Arithmetic on published rates and the sizing's byte counts, not a measurement: every
rate is a row of sizing/catalog/start-rates.csv with its source (`--sources` prints them).

    .venv/bin/python bench/cold_start.py                      # dev, prod, large
    .venv/bin/python bench/cold_start.py prod --init-rate 100 # a slower volume initialization
    .venv/bin/python bench/cold_start.py --sources            # each rate's source

Goal (issue 26) for the prod model: decision to serving under 3 min from the warm pool, under
6 min cold (a fleet scale-out from the baked image); printed with the biggest stage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.constants import NAMESPACE  # noqa: E402
from config.validation import parse  # noqa: E402
from sizing.choice import plan as size  # noqa: E402
from sizing.plan import SizingPlan  # noqa: E402
from sizing.start_stages import (  # noqa: E402
    FLEET_ROOT_VOLUME_MIB_S, STAGES, VOLUME_INITIALIZATION_MIB_S, Start, StartEstimate, estimate_start, rates,
)
from sizing.startup import model_volume_for  # noqa: E402

STACKS = ("dev", "prod", "large")
GOAL_STACK = "prod"
GOALS_S = {Start.WARM_POOL: 180, Start.FLEET_COLD: 360}


@dataclass(frozen=True)
class StackStarts:
    stack: str
    plan: SizingPlan
    volume_mib_s: int
    volume_usd_per_month: float
    starts: dict[Start, StartEstimate]


def stack_plan(stack: str, root: Path = ROOT):
    """(StackConfig, SizingPlan) of Pulumi.<stack>.yaml (plain values; secrets are not needed)."""
    raw = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in raw.items()
              if k.startswith(f"{NAMESPACE}:") and not (isinstance(v, dict) and "secure" in v)}
    config = parse(values)
    return config, size(config)


def starts_for(stack: str, *, init_rate: float = VOLUME_INITIALIZATION_MIB_S, throughput: Optional[int] = None,
               fleet_root_mib_s: float = FLEET_ROOT_VOLUME_MIB_S, root: Path = ROOT) -> StackStarts:
    """Every Start of `stack`'s plan: the model volume as the stack sizes it (or `throughput`),
    a single host's root at gp3's 125 MiB/s, a replica's at `fleet_root_mib_s`."""
    config, plan = stack_plan(stack, root)
    if throughput is not None:
        config = config.model_copy(update={"model_volume_throughput_mibps": throughput})
    volume = model_volume_for(plan, config)
    starts = {
        start: estimate_start(
            start, weights_gb=plan.weights_on_disk_gb, model_volume_mib_s=volume.throughput_mib_s,
            root_volume_mib_s=fleet_root_mib_s if start in (Start.FLEET_COLD, Start.WARM_POOL) else 125,
            volume_initialization_mib_s=init_rate, nodes=plan.nodes,
        )
        for start in Start
    }
    return StackStarts(stack, plan, volume.throughput_mib_s, volume.usd_per_month, starts)


def render(results: list[StackStarts], init_rate: float, fleet_root_mib_s: float) -> str:
    lines = [f"Start time, stage by stage (s): volume initialization {init_rate:.0f} MiB/s; root volume gp3 "
             f"125 MiB/s (single host), {fleet_root_mib_s:.0f} MiB/s (replica); arithmetic on "
             "sizing/catalog/start-rates.csv, not a measurement."]
    for result in results:
        plan = result.plan
        lines.append("")
        lines.append(
            f"{result.stack}: {plan.model} on {plan.nodes} x {plan.instance.name} ({plan.instance.gpu_model}), "
            f"{plan.weights_on_disk_gb:.1f} GB of weights, model volume {result.volume_mib_s} MiB/s "
            f"(+${result.volume_usd_per_month:.2f}/month per volume)"
        )
        seen = {stage.name for estimate in result.starts.values() for stage in estimate.stages}
        names = [name for name in STAGES if name in seen]
        width = max(len(n) for n in names) + 2
        head = f"  {'stage':<{width}}" + "".join(f"{s.value:>29}" for s in Start)
        lines.append(head)
        for name in names:
            cells = []
            for start in Start:
                found = [s.seconds for s in result.starts[start].stages if s.name == name]
                cells.append(f"{found[0]:>29.0f}" if found else f"{'-':>29}")
            lines.append(f"  {name:<{width}}" + "".join(cells))
        totals = "".join(f"{e.total_s:>23.0f} ({e.total_s / 60:4.1f}m)" for e in result.starts.values())
        lines.append(f"  {'total':<{width}}" + totals)
        biggest = "".join(f"{e.biggest.name[:28]:>29}" for e in result.starts.values())
        lines.append(f"  {'biggest stage':<{width}}" + biggest)
        if result.stack == GOAL_STACK:
            for start, goal in GOALS_S.items():
                estimate = result.starts[start]
                verdict = "met" if estimate.total_s < goal else "NOT met"
                lines.append(f"  goal {start.value}: under {goal // 60} min -> {estimate.total_s / 60:.1f} min, "
                             f"{verdict}; biggest stage: {estimate.biggest.name} ({estimate.biggest.seconds:.0f} s)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks", nargs="*", default=list(STACKS), help="stacks (Pulumi.<stack>.yaml)")
    parser.add_argument("--init-rate", type=float, default=VOLUME_INITIALIZATION_MIB_S,
                        help="the launch template's volume initialization rate, MiB/s (100-300)")
    parser.add_argument("--throughput", type=int, default=None,
                        help="the model volume's gp3 throughput, MiB/s (default: as the stack sizes it)")
    parser.add_argument("--fleet-root-throughput", type=float, default=FLEET_ROOT_VOLUME_MIB_S,
                        help="a replica's root volume gp3 throughput, MiB/s")
    parser.add_argument("--sources", action="store_true", help="print each rate's source")
    args = parser.parse_args(argv)
    results = [starts_for(s, init_rate=args.init_rate, throughput=args.throughput,
                          fleet_root_mib_s=args.fleet_root_throughput) for s in args.stacks]
    print(render(results, args.init_rate, args.fleet_root_throughput))
    if args.sources:
        print("\nRates (sizing/catalog/start-rates.csv):")
        for row in rates().values():
            print(f"  {row.name} = {row.value:g} {row.unit} [{row.kind}, {row.date}]: {row.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
