"""The calibration fit (bench/calibration_fit.py) and its leave-one-group-out: constants
refitted from the logs drive the predictions, and a held-out row's prediction never depends on
the row itself. The figures are the bench's (bench/sizing_accuracy.py), not asserted here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from bench.calibration_fit import fit, fit_non_torch, held_out, relative_errors, source_of
from sizing.calibration import refitted, value

REPO = Path(__file__).resolve().parents[2]


def _bench():
    if "sizing_accuracy" in sys.modules:
        return sys.modules["sizing_accuracy"]
    spec = importlib.util.spec_from_file_location("sizing_accuracy", REPO / "bench" / "sizing_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
ROWS = [row for row in BENCH.load_rows() if BENCH.model_spec(row) is not None]
BY_ID = {row["id"]: row for row in ROWS}


def test_a_refitted_constant_changes_the_prediction_only_inside_the_block():
    before = BENCH.predict_terms(BY_ID["L01"])
    with refitted({("non_torch_one_gpu", "all"): value("non_torch_one_gpu") + 1.0}):
        inside = BENCH.predict_terms(BY_ID["L01"])
    assert inside["non-torch"] == pytest.approx(before["non-torch"] + 1.0)
    assert inside["KV GiB"] == pytest.approx(before["KV GiB"] - 1.0, abs=0.01)
    assert BENCH.predict_terms(BY_ID["L01"]) == before


def test_a_misspelt_constant_is_refused():
    with pytest.raises(KeyError, match="non_torch_one_gpus"):
        with refitted({("non_torch_one_gpus", "all"): 0.3}):
            pass


def test_the_fit_on_every_row_gives_back_the_shipped_constants():
    # within 20 %: the shipped CUDA-graph line predates rows N16-N18 (0.0036 per MoE layer then,
    # 0.0031 with them)
    fitted = fit(ROWS, BENCH.FACTS)
    for (name, accounting), got in fitted.items():
        assert got == pytest.approx(value(name, accounting), rel=0.2), name


def test_a_constant_no_row_determines_is_named():
    one_gpu = [row for row in ROWS if row["tensor_parallel"] == "1"]
    with pytest.raises(ValueError, match="non_torch_tensor_parallel"):
        fit_non_torch(one_gpu)


def _with(row_id: str, **columns: str) -> list[dict[str, str]]:
    return [{**row, **columns} if row["id"] == row_id else row for row in ROWS]


def test_a_held_out_row_is_predicted_without_its_own_figures():
    changed = _with("L01", cuda_graph_estimate_gib="9.0")
    assert fit(changed, BENCH.FACTS)[("cuda_graph_base", "all")] != pytest.approx(
        fit(ROWS, BENCH.FACTS)[("cuda_graph_base", "all")], rel=0.01
    ), "the fit reads L01"
    before = held_out(ROWS, source_of, BENCH.FACTS, BENCH.predict_terms)
    after = held_out(changed, source_of, BENCH.FACTS, BENCH.predict_terms)
    assert after["L01"]["CUDA graphs"] == pytest.approx(before["L01"]["CUDA graphs"])
    assert after["L03"]["CUDA graphs"] != pytest.approx(before["L03"]["CUDA graphs"], rel=0.01)


def test_holding_out_the_only_gpt_oss_rows_drops_the_gpt_oss_term():
    gpt_oss = [row for row in ROWS if "gpt-oss" in row["sized_as"]]
    assert gpt_oss
    group = lambda row: "gpt-oss" if "gpt-oss" in row["sized_as"] else row["id"]  # noqa: E731
    predictions = held_out(ROWS, group, BENCH.FACTS, BENCH.predict_terms)
    in_sample = BENCH.predict_terms(BY_ID["L14"])
    assert predictions["L14"]["CUDA graphs"] < in_sample["CUDA graphs"] - 0.3


def test_relative_errors_count_only_rows_that_log_the_term():
    rows = [BY_ID["L01"], {**BY_ID["L02"], "non_torch_gib": ""}]
    predictions = {"L01": {"non-torch": 0.30}, "L02": {"non-torch": 9.0}}
    errors = relative_errors(rows, predictions, [("non_torch_gib", "non-torch")])
    assert errors["non-torch"] == [pytest.approx(abs(0.30 - float(BY_ID["L01"]["non_torch_gib"])) / 0.25, rel=0.05)]
