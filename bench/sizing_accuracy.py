"""The memory model against real vLLM startup logs: every term, every row, and the fit verdict.

    .venv/bin/python bench/sizing_accuracy.py            # the calibration rows
    .venv/bin/python bench/sizing_accuracy.py --catalog  # also the instance chosen per catalog model
    .venv/bin/python bench/sizing_accuracy.py --rows other-logs.csv  # rows of your own, same columns

Rows: bench/data/vllm-startup-logs.csv (sources in bench/data/SOURCES.md), every figure as vLLM
printed it. Each row is predicted twice:

* **as its own vLLM**: with the accounting of the release that printed it (``sizing.calibration``:
  v0 before 0.8, v1-early 0.8-0.16, v1 0.17-0.20, v1-cg 0.21-0.24, 0.33 from 0.25). The per-term
  errors and the verdict agreement are measured on this prediction: it checks the terms against
  what vLLM did.
* **as vLLM 0.33**: what the deployer sizes with. Where its verdict differs from the row's
  own, the row is listed with the reason (an older release spent memory differently).

Then: the rows per vLLM version (their own ``vllm_version``), and the median and worst error per
term in sample and held out of the calibration: the constants fitted on the logs are refitted
(bench/calibration_fit.py) without each row's source, or without each model's rows, and the
held-out rows predicted with them (docs/sizing-accuracy.md says what is refitted).

Errors are (predicted - logged) / logged. "GiB" columns: predicted/logged. The verdict: vLLM
starts (the KV cache holds one max_model_len request, and before 0.25 the warm-up after the KV
cache allocation finds memory) against the row's outcome.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibration_fit import RowFacts, fit, held_out, model_of, relative_errors, source_of  # noqa: E402
from sizing.calibration import ACCOUNTING_033, accounting, accounting_for_version, refitted  # noqa: E402
from sizing.errors import SizingError  # noqa: E402
from sizing.formats import WeightFormat  # noqa: E402
from sizing.hub import FetchError, resolve  # noqa: E402
from sizing.models import ModelResolutionError, ModelSpec, from_catalog  # noqa: E402
from sizing.startup import StartupEstimate, estimate  # noqa: E402
from sizing.whatif import find_gpu, gpu_instance  # noqa: E402

ROWS_CSV = Path(__file__).parent / "data" / "vllm-startup-logs.csv"

# (column in the CSV, attribute of StartupEstimate, label)
TERMS = (
    ("weights_gib", "weights_gib", "weights"),
    ("activation_peak_gib", "activation_gib", "activation"),
    ("cuda_graph_estimate_gib", "cuda_graphs_gib", "CUDA graphs"),
    ("non_torch_gib", "non_torch_gib", "non-torch"),
    ("kv_cache_gib", "kv_cache_gib", "KV GiB"),
    ("kv_cache_tokens", "kv_cache_tokens", "KV tokens"),
    ("max_concurrency_at_max_model_len", "max_concurrency", "concurrency"),
)

STARTED = "started"


def load_rows(path: Path = ROWS_CSV) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def model_spec(row: dict[str, str]) -> Optional[ModelSpec]:
    """The row's model: the catalog's, else its config.json (a local directory, or the hub's answer
    cached under ~/.cache/vllm-deploy/models); None when neither is at hand."""
    try:
        return from_catalog(row["sized_as"]) or resolve(row["sized_as"], fetch=_offline)
    except (ModelResolutionError, OSError):
        return None


def _offline(url: str, headers: dict[str, str], timeout: float) -> Optional[bytes]:
    """The bench never goes to the hub (nor caches a miss): only what is cached counts."""
    raise FetchError(f"the bench works offline ({url} is not cached)")


def gpu_facts(row: dict[str, str]) -> tuple[float, float]:
    """(CUDA total GiB, compute capability): as the row gives them, else the catalog GPU's
    (the row's `gpu`, e.g. "L4" or "H100 80GB HBM3")."""
    total, cc = row["gpu_total_gib_as_vllm_prints"], row["compute_capability"]
    if total and cc:
        return float(total), float(cc)
    name = row["gpu"].replace("HBM3", "").strip()
    instance = gpu_instance(name if _known(name) else name.split()[0], 1)
    return float(total or instance.cuda_memory_gib), float(cc or instance.compute_capability)


def _known(name: str) -> bool:
    try:
        find_gpu(name)
    except SizingError:
        return False
    return True


def row_accounting(row: dict[str, str]) -> str:
    """The row's accounting column, else the one its vLLM version follows."""
    return row.get("accounting") or accounting_for_version(row["vllm_version"])


def weight_format(row: dict[str, str]) -> Optional[WeightFormat]:
    """The format the row's checkpoint is sized in: its model's own, or the override."""
    spec = model_spec(row)
    if spec is None:
        return None
    kind = row["weight_format"]
    if not kind:
        return WeightFormat(spec.native_quantization, spec.quant_bits, spec.quant_group_size)
    if kind in ("fp8", "w8a8"):  # one byte per weight: fp8, or int8 W8A8 (compressed-tensors)
        return WeightFormat("fp8", 8)
    if kind == "fp8-online":
        return WeightFormat("fp8", 8, online=True)
    method, bits, group = kind.split(":")
    return WeightFormat(method, float(bits), int(group))


def predict(row: dict[str, str], accounting_key: str) -> Optional[StartupEstimate]:
    """The startup estimate for the row's configuration, or None when it lacks the settings."""
    needed = ("gpu_memory_utilization", "max_model_len", "max_num_batched_tokens", "max_num_seqs")
    spec = model_spec(row)
    if spec is None or any(not row[key] for key in needed):
        return None
    total, cc = gpu_facts(row)
    return estimate(
        spec,
        weight_format(row),
        cuda_total_gib=total,
        compute_capability=cc,
        tensor_parallel_size=int(row["tensor_parallel"]),
        gpu_memory_utilization=float(row["gpu_memory_utilization"]),
        max_model_len=int(row["max_model_len"]),
        max_num_batched_tokens=int(row["max_num_batched_tokens"]),
        max_num_seqs=int(row["max_num_seqs"]),
        kv_dtype_bytes=1 if row["kv_cache_dtype"].startswith("fp8") else 2,
        accounting=accounting(accounting_key),
    )


def weights_only(row: dict[str, str]) -> float:
    """Weights for a row without the settings for a full estimate (the term needs none)."""
    from sizing.memory import GIB, weights_per_gpu_bytes

    spec = model_spec(row)
    tp, own = int(row["tensor_parallel"]), accounting(row_accounting(row))
    return weights_per_gpu_bytes(spec, weight_format(row), tp, own, gpu_facts(row)[1]) / GIB


def predict_terms(row: dict[str, str]) -> dict[str, float]:
    """Term label (TERMS) -> the value predicted for the row as its own vLLM, with the constants in
    force (the file's, or refitted ones inside ``sizing.calibration.refitted``); weights alone
    when the row lacks the settings of a full estimate; {} when its model is unknown offline."""
    if model_spec(row) is None:
        return {}
    own = predict(row, row_accounting(row))
    if own is None:
        return {"weights": weights_only(row)}
    return {label: getattr(own, attribute) for _, attribute, label in TERMS}


FACTS = RowFacts(
    spec=model_spec,
    compute_capability=lambda row: gpu_facts(row)[1],
    weights_gib=lambda row: predict_terms(row)["weights"],
    is_mxfp4=lambda row: weight_format(row).method == "mxfp4",
)


def print_versions(rows: list[dict[str, str]]) -> None:
    """How many rows each vLLM release printed (the rows' own vllm_version), and its accounting."""
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["vllm_version"], row_accounting(row))
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(rows)} logs by the vLLM version that printed them:")
    for (version, own), count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {count:>3}  vLLM {version:<22} (accounting {own})")


def print_held_out(rows: list[dict[str, str]]) -> None:
    """Median and worst |error| per term: in sample (the file's constants, and the fit on every
    row), and held out (leave one source out, leave one model out)."""
    rows = [row for row in rows if model_spec(row) is not None]
    terms = [(column, label) for column, _, label in TERMS]
    with refitted(fit(rows, FACTS)):
        refit_all = {row["id"]: predict_terms(row) for row in rows}
    by_source = held_out(rows, source_of, FACTS, predict_terms)
    other = [row for row in rows if row_accounting(row) != "v1"]  # no refitted constant reads them
    columns = {
        "in sample": relative_errors(rows, {row["id"]: predict_terms(row) for row in rows}, terms),
        "refit, all rows": relative_errors(rows, refit_all, terms),
        "held-out source": relative_errors(rows, by_source, terms),
        "held-out model": relative_errors(rows, held_out(rows, model_of, FACTS, predict_terms), terms),
        "not 0.17-0.20": relative_errors(other, by_source, terms),
    }
    print("median / worst |error| (relative), (rows); in sample: the shipped constants; refit: fitted")
    print("on every row by bench/calibration_fit.py; held-out: refitted without the row's source (its")
    print("log file or issue comment), or without every row of its model, then predicted; not")
    print(f"0.17-0.20: the held-out-source figures of the {len(other)} rows from other releases")
    print(f"{'term':<12} " + " ".join(f"{name:>22}" for name in columns))
    for _, label in terms:
        cells = []
        for errors in columns.values():
            errs = errors[label]
            cells.append(f"{statistics.median(errs):.2%} / {max(errs):.1%} ({len(errs)})" if errs else "-")
        print(f"{label:<12} " + " ".join(f"{c:>22}" for c in cells))
    verdicts = held_out(rows, source_of, FACTS, _verdict)
    known = [row for row in rows if verdicts[row["id"]]]
    agree = sum(verdicts[row["id"]]["starts"] == (row["outcome"] == STARTED) for row in known)
    print(f"fit verdict, held out (leave one source out) vs whether vLLM started: {agree} agree, "
          f"{len(known) - agree} disagree")


def _verdict(row: dict[str, str]) -> dict[str, bool]:
    """{"starts": the estimate's verdict as the row's own vLLM}, {} without the settings."""
    own = predict(row, row_accounting(row))
    return {"starts": own.starts} if own else {}


@dataclass
class Errors:
    relative: dict[str, list[float]]
    absolute: dict[str, list[float]]


def _fmt(predicted: float, logged: str, label: str) -> str:
    if label in ("KV tokens",):
        return f"{predicted:,.0f}/{float(logged):,.0f}"
    return f"{predicted:.2f}/{float(logged):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", action="store_true", help="also size every catalog model")
    parser.add_argument("--rows", type=Path, default=ROWS_CSV,
                        help="another file of rows with the same columns (accounting and compute_capability may be empty)")
    args = parser.parse_args()
    rows = load_rows(args.rows)
    errors = Errors({t[2]: [] for t in TERMS}, {t[2]: [] for t in TERMS})
    agree = disagree = 0
    differs: list[str] = []
    header = (
        f"{'id':<4} {'model':<28} {'GPU':<9} {'TP':>2} {'util':>4} {'len':>6} {'vLLM':<6} "
        + " ".join(f"{t[2]:>17}" for t in TERMS)
        + f"  {'logged':<10} {'own':<5} {'0.33':<5} {'KV@0.33':>8}"
    )
    print(f"{len(rows)} calibration rows ({args.rows}); "
          "cells: predicted/logged (GiB, or tokens / x), as the row's own vLLM")
    print(header)
    print("-" * len(header))
    skipped = []
    for row in rows:
        if model_spec(row) is None:
            skipped.append(f"  {row['id']}: {row['sized_as']} is neither in the catalog nor cached (run tools/size on it once)")
            continue
        own = predict(row, row_accounting(row))
        target = predict(row, ACCOUNTING_033.key)
        cells = []
        for column, attribute, label in TERMS:
            logged = row[column]
            if not logged:
                cells.append(f"{'-':>17}")
                continue
            predicted = getattr(own, attribute) if own else (weights_only(row) if label == "weights" else None)
            if predicted is None:
                cells.append(f"{'-':>17}")
                continue
            logged_value = float(logged)
            errors.absolute[label].append(abs(predicted - logged_value))
            if logged_value > 0:
                errors.relative[label].append(abs(predicted - logged_value) / logged_value)
                err = f"{(predicted - logged_value) / logged_value:+.0%}"
            else:
                err = f"{predicted - logged_value:+.1f}"
            cells.append(f"{_fmt(predicted, logged, label) + ' ' + err:>17}")
        verdict_own = ("fits" if own.starts else "no") if own else "-"
        verdict_033 = ("fits" if target.starts else "no") if target else "-"
        if own:
            started = row["outcome"] == STARTED
            if own.starts == started:
                agree += 1
            else:
                disagree += 1
                differs.append(f"  {row['id']}: predicted {verdict_own}, vLLM {row['outcome']}")
            if target.starts != own.starts:
                differs.append(f"  {row['id']}: {row['vllm_version']} {row['outcome']}, vLLM 0.33 would "
                               f"{'start' if target.starts else 'not start'} ({_why(own, target)})")
        model = row["sized_as"].split("/")[-1][:28]
        print(
            f"{row['id']:<4} {model:<28} {_gpu(row):<9} {row['tensor_parallel']:>2} "
            f"{row['gpu_memory_utilization'] or '-':>4} {row['max_model_len'] or '-':>6} "
            f"{row['vllm_version'].split(' ')[0][:6]:<6} " + " ".join(cells)
            + f"  {row['outcome']:<10} {verdict_own:<5} {verdict_033:<5} "
            + (f"{target.kv_cache_gib:>8.2f}" if target else f"{'-':>8}")
        )
    print()
    print(f"{'term':<12} {'rows':>4} {'median |err|':>13} {'max |err|':>10} {'median |GiB|':>13} {'max |GiB|':>10}")
    for _, _, label in TERMS:
        rel, ab = errors.relative[label], errors.absolute[label]
        if not rel:
            continue
        unit = "tokens" if label == "KV tokens" else ("x" if label == "concurrency" else "GiB")
        med_abs = f"{statistics.median(ab):,.2f}" if unit == "GiB" else "-"
        max_abs = f"{max(ab):,.2f}" if unit == "GiB" else "-"
        print(f"{label:<12} {len(rel):>4} {statistics.median(rel):>13.1%} {max(rel):>10.1%} {med_abs:>13} {max_abs:>10}")
    print()
    print(f"fit verdict (as the row's own vLLM) vs whether vLLM started: {agree} agree, {disagree} disagree")
    if skipped:
        print("rows skipped (model unknown offline):")
        print("\n".join(skipped))
    print("rows where the verdict or vLLM 0.33 differs:")
    print("\n".join(differs) if differs else "  none")
    print()
    print_versions(rows)
    print()
    print_held_out(rows)
    if args.catalog:
        print()
        _catalog_table()
    return 0


def _gpu(row: dict[str, str]) -> str:
    for name in ("H100", "A100", "L40S", "L4", "A10G", "T4", "H200", "B200", "3090", "4090"):
        if name in row["gpu"]:
            return name
    return row["gpu"][:9]


def _why(own: StartupEstimate, target: StartupEstimate) -> str:
    reasons = []
    if not own.kv.fits_one_request:
        reasons.append(f"its KV cache ({own.kv_cache_gib:.2f} GiB) did not hold one request; 0.33 leaves "
                       f"{target.kv_cache_gib:.2f} GiB")
    elif own.warmup_margin_gib is not None and own.warmup_margin_gib < 0:
        reasons.append("its post-allocation warm-up ran out of memory; 0.33 profiles the sampler warm-up "
                       "and counts CUDA graphs in the budget")
    if abs(own.weights_gib - target.weights_gib) > 0.05:
        reasons.append(f"weights {own.weights_gib:.2f} -> {target.weights_gib:.2f} GiB (MXFP4 scale copy freed)")
    if abs(own.activation_gib - target.activation_gib) > 0.05:
        reasons.append(f"activation {own.activation_gib:.2f} -> {target.activation_gib:.2f} GiB")
    if target.cuda_graphs_in_budget and not own.cuda_graphs_in_budget:
        reasons.append(f"CUDA graphs {target.cuda_graphs_gib:.2f} GiB counted in the budget")
    return "; ".join(reasons)


def _catalog_table() -> None:
    """The instance each catalog model gets at 4k and at its default context (2 sequences)."""
    from config.validation import parse
    from sizing.choice import plan
    from sizing.errors import SizingError
    from sizing.models import catalog_models

    print(f"{'model':<44} {'chosen at 4096':<28} chosen at the default context")
    for spec in catalog_models():
        picks = []
        for keys in ({"maxModelLen": 4096}, {}):
            try:
                result = plan(parse({"model": spec.model_id, **keys}), resolver=lambda *_, s=spec: s)
                picks.append(f"{result.instance.name} ${result.hourly_price_usd:.2f}/h")
            except SizingError:
                picks.append("refused")
        print(f"{spec.model_id:<44} {picks[0]:<28} {picks[1]}")


if __name__ == "__main__":
    sys.exit(main())
