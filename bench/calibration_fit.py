"""The fit of the memory model's calibration constants to the startup logs, and its held-out error.

``fit(rows, facts)`` recomputes, from the rows it is given, the constants of
sizing/catalog/memory-calibration.csv that were fitted on the logs, by the rule each constant's
``fitted_on`` column states:

* ``non_torch_one_gpu`` / ``non_torch_tensor_parallel`` ("all"): the median logged non-torch GiB
  of the vLLM 0.17-0.20 rows (accounting ``v1``, the release whose log prints the line) at TP 1 /
  TP > 1;
* ``cuda_graph_base``, ``cuda_graph_per_layer``, ``cuda_graph_per_moe_layer`` ("all"): least
  squares of the logged "Estimated CUDA graph memory" of the ``v1`` rows, gpt-oss and the
  outliers (``GRAPH_OUTLIERS``) left out, on base + (capture sizes / 51) x (a x layers + b x MoE
  layers);
* ``cuda_graph_gpt_oss_extra`` ("all"): the mean excess of the gpt-oss ``v1`` rows over that line;
* ``sampler_bytes_per_logit`` (``v1``, and ``v1-cg``, a copy of it): the median over the
  sampler-bound ``v1`` rows of (activation - activation_floor - hidden states) / (rows x vocab);
* ``mxfp4_load_extra`` ("all"): the median over the one-GPU MXFP4 rows on Hopper's Triton
  backend of the logged weights minus the weights predicted without it.

Not refitted (they come from vLLM's source, from a PR's or report's figures rather than a row, or
from a column the rows do not have): the forward-pass copies, ``moe_hidden_copies``,
``activation_floor``, ``sampler_bytes_per_logit`` for 0.33 (PR #57926's delta) and v1-early
(llm-d's report), ``pre_snapshot_*``, ``warmup_*`` and the accounting flags.

``held_out(rows, group, facts, predict_terms)`` is leave-one-group-out: for each group (the
rows of one source, or of one model), refit on the other rows and predict the group's rows with
those constants (``sizing.calibration.refitted``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from sizing.calibration import refitted, value
from sizing.memory import GIB, REFERENCE_CAPTURE_SIZES, capture_sizes, forward_peak_bytes
from sizing.models import ModelSpec

Row = Mapping[str, str]
Constants = dict[tuple[str, str], float]

# L02 (Llama-3.1-8B at TP 2) logged 1.69 GiB where TP 1 and TP 4 logged 0.84 and 0.57 GiB
# (memory-calibration.csv cuda_graph_base: "L02's 1.69 GiB left out as an outlier").
GRAPH_OUTLIERS = frozenset({"L02"})

# A row is sampler-bound when its forward pass is below this share of the logged peak.
SAMPLER_BOUND_SHARE = 0.9


@dataclass(frozen=True)
class RowFacts:
    """What the fit needs beyond a row's own columns (the bench supplies them)."""

    spec: Callable[[Row], Optional[ModelSpec]]  # the row's model, None when unknown offline
    compute_capability: Callable[[Row], float]
    weights_gib: Callable[[Row], float]  # predicted weights per GPU, with the constants in force
    is_mxfp4: Callable[[Row], bool]


def _logged(row: Row, column: str) -> Optional[float]:
    return float(row[column]) if row.get(column) else None


def _v1(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.get("accounting") == "v1"]


def _median(name: str, values: list[float]) -> float:
    if not values:
        raise ValueError(f"cannot refit {name}: none of the rows given logs it")
    return statistics.median(values)


def fit_non_torch(rows: Iterable[Row]) -> Constants:
    """The two non-torch constants (GiB): medians of the v1 rows at TP 1 and TP > 1."""
    one, many = [], []
    for row in _v1(rows):
        logged = _logged(row, "non_torch_gib")
        if logged is not None:
            (one if int(row["tensor_parallel"]) == 1 else many).append(logged)
    return {
        ("non_torch_one_gpu", "all"): _median("non_torch_one_gpu", one),
        ("non_torch_tensor_parallel", "all"): _median("non_torch_tensor_parallel", many),
    }


def _solve3(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for a 3 x 3 system; ValueError if singular."""
    m = [row[:] + [rhs] for row, rhs in zip(a, b)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise ValueError("cannot refit the CUDA-graph line: the rows do not determine it")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, 3):
            f = m[r][col] / m[col][col]
            m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    out = [0.0, 0.0, 0.0]
    for r in (2, 1, 0):
        out[r] = (m[r][3] - sum(m[r][c] * out[c] for c in range(r + 1, 3))) / m[r][r]
    return out


def _graph_x(row: Row, spec: ModelSpec, facts: RowFacts) -> list[float]:
    scale = capture_sizes(int(row["max_num_seqs"]), facts.compute_capability(row)) / REFERENCE_CAPTURE_SIZES
    return [1.0, scale * spec.num_layers, scale * spec.moe_layers]


def fit_cuda_graphs(rows: Iterable[Row], facts: RowFacts) -> Constants:
    """base, per layer and per MoE layer (GiB) by least squares, then the gpt-oss excess.

    With no MoE row among those given, the MoE coefficient is 0 (nothing shows one)."""
    points, gpt_oss = [], []
    for row in _v1(rows):
        logged, spec = _logged(row, "cuda_graph_estimate_gib"), facts.spec(row)
        if logged is None or spec is None or not row.get("max_num_seqs") or row["id"] in GRAPH_OUTLIERS:
            continue
        (gpt_oss if spec.model_type == "gpt_oss" else points).append((_graph_x(row, spec, facts), logged, row))
    if len(points) < 3:
        raise ValueError("cannot refit the CUDA-graph line: fewer than 3 rows log an estimate")
    has_moe = any(x[2] for x, _, _ in points)
    ata = [[sum(x[i] * x[j] for x, _, _ in points) for j in range(3)] for i in range(3)]
    aty = [sum(x[i] * y for x, y, _ in points) for i in range(3)]
    if not has_moe:  # fit base and per-layer only
        ata[2] = [0.0, 0.0, 1.0]
        aty[2] = 0.0
        ata[0][2] = ata[1][2] = 0.0
    base, per_layer, per_moe = _solve3(ata, aty)
    excess = [y - (base + per_layer * x[1] + per_moe * x[2]) for x, y, _ in gpt_oss]
    return {
        ("cuda_graph_base", "all"): base,
        ("cuda_graph_per_layer", "all"): per_layer,
        ("cuda_graph_per_moe_layer", "all"): per_moe,
        # no gpt-oss row among those given: nothing shows an extra
        ("cuda_graph_gpt_oss_extra", "all"): statistics.mean(excess) if excess else 0.0,
    }


def fit_sampler(rows: Iterable[Row], facts: RowFacts) -> Constants:
    """sampler_bytes_per_logit of the v1 accounting (B per request x vocab entry), copied to v1-cg."""
    floor = value("activation_floor") * GIB
    per_logit = []
    for row in _v1(rows):
        logged, spec = _logged(row, "activation_peak_gib"), facts.spec(row)
        if logged is None or spec is None or not row.get("max_num_batched_tokens") or not row.get("max_num_seqs"):
            continue
        tokens, seqs = int(row["max_num_batched_tokens"]), int(row["max_num_seqs"])
        peak = logged * GIB - floor
        if forward_peak_bytes(spec, int(row["tensor_parallel"]), tokens) >= SAMPLER_BOUND_SHARE * peak:
            continue  # forward-bound: the sampler is not what the row measured
        rows_sampled = min(tokens, seqs)
        per_logit.append((peak - rows_sampled * spec.hidden_size * 2) / (rows_sampled * spec.vocab_size))
    fitted = _median("sampler_bytes_per_logit", per_logit)
    return {("sampler_bytes_per_logit", "v1"): fitted, ("sampler_bytes_per_logit", "v1-cg"): fitted}


def fit_mxfp4_load_extra(rows: Iterable[Row], facts: RowFacts) -> Constants:
    """mxfp4_load_extra (GiB): logged minus predicted weights of the one-GPU MXFP4 rows that ran
    the Triton backend (Hopper, and no "Marlin" in the row: Marlin's layout of before 0.11 is
    not modelled)."""
    chosen = [row for row in rows if row.get("weights_gib") and int(row["tensor_parallel"]) == 1
              and facts.spec(row) is not None and facts.is_mxfp4(row)
              and 9.0 <= facts.compute_capability(row) < 10.0
              and not any("marlin" in text.lower() for text in row.values() if text)]
    with refitted({("mxfp4_load_extra", "all"): 0.0}):
        excess = [float(row["weights_gib"]) - facts.weights_gib(row) for row in chosen]
    # no MXFP4 row among those given: nothing shows an extra
    return {("mxfp4_load_extra", "all"): statistics.median(excess) if excess else 0.0}


def fit(rows: Iterable[Row], facts: RowFacts) -> Constants:
    """Every refitted constant, (name, accounting) -> value, from these rows only.

    Raises ValueError naming a constant that none of the rows can determine."""
    rows = list(rows)
    return {
        **fit_non_torch(rows),
        **fit_cuda_graphs(rows, facts),
        **fit_sampler(rows, facts),
        **fit_mxfp4_load_extra(rows, facts),
    }


def source_of(row: Row) -> str:
    """The group of leave-one-source-out: the log's address (one file, or one issue comment)."""
    return row["source_url"]


def model_of(row: Row) -> str:
    return row["sized_as"]


def held_out(
    rows: list[Row],
    group: Callable[[Row], str],
    facts: RowFacts,
    predict_terms: Callable[[Row], dict[str, float]],
) -> dict[str, dict[str, float]]:
    """Row id -> {term label: value predicted with constants refitted without the row's group}."""
    out = {}
    for key in dict.fromkeys(group(row) for row in rows):
        inside = [row for row in rows if group(row) == key]
        constants = fit([row for row in rows if group(row) != key], facts)
        with refitted(constants):
            for row in inside:
                out[row["id"]] = predict_terms(row)
    return out


def relative_errors(
    rows: list[Row], predictions: Mapping[str, Mapping[str, float]], terms: Iterable[tuple[str, str]]
) -> dict[str, list[float]]:
    """Term label -> |predicted - logged| / logged over the rows that log the term (logged > 0)
    and have a prediction; `terms` are (CSV column, label) pairs."""
    out: dict[str, list[float]] = {}
    for column, label in terms:
        out[label] = []
        for row in rows:
            logged, predicted = _logged(row, column), predictions.get(row["id"], {}).get(label)
            if logged is not None and logged > 0 and predicted is not None:
                out[label].append(abs(predicted - logged) / logged)
    return out
