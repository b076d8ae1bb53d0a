"""The calibration rows (bench/data/vllm-startup-logs.csv) and the fit verdict against them.

Each row is a real vLLM startup with a known outcome: the estimate, with the accounting of the
vLLM release that printed the row, must say "starts" exactly where vLLM started. The per-term
accuracy is a benchmark (bench/sizing_accuracy.py prints it), not asserted here.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from sizing.calibration import accounting_for_version
from sizing.models import from_catalog

REPO = Path(__file__).resolve().parents[2]
SHARED_LOGS = REPO.parent / "shared" / "reference" / "vllm-startup-logs.csv"  # beside the clone


def _bench():
    spec = importlib.util.spec_from_file_location("sizing_accuracy", REPO / "bench" / "sizing_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
ROWS = BENCH.load_rows()
BY_ID = {row["id"]: row for row in ROWS}
WITH_OUTCOME = [row for row in ROWS if BENCH.predict(row, row["accounting"]) is not None]


def test_every_row_has_a_source_a_catalog_model_and_its_release_accounting():
    assert len(BY_ID) == len(ROWS), "ids are unique"
    assert len(ROWS) >= 39
    for row in ROWS:
        assert row["source_url"], row["id"]
        assert from_catalog(row["sized_as"]) is not None, row["id"]
        assert row["accounting"] == accounting_for_version(row["vllm_version"].split(" ")[0].rstrip("+")), row["id"]
        assert row["outcome"] in ("started", "failed_kv", "failed_oom"), row["id"]


@pytest.mark.skipif(not SHARED_LOGS.is_file(), reason="the shared reference checkout is not here")
def test_the_shared_rows_are_copied_as_printed():
    with SHARED_LOGS.open(newline="") as handle:
        shared = list(csv.DictReader(handle))
    for row in shared:
        ours = BY_ID[row["id"]]
        assert {key: ours[key] for key in row} == row


@pytest.mark.parametrize("row", WITH_OUTCOME, ids=[row["id"] for row in WITH_OUTCOME])
def test_the_fit_verdict_agrees_with_whether_vllm_started(row):
    estimate = BENCH.predict(row, row["accounting"])
    assert estimate.starts == (row["outcome"] == "started"), (
        f"{row['id']} {row['sized_as']} on {row['gpu']}: predicted KV {estimate.kv_cache_gib:.2f} GiB, "
        f"warm-up margin {estimate.warmup_margin_gib}; vLLM {row['outcome']}"
    )


def test_gpt_oss_120b_on_one_h100_at_131072_tokens_did_not_start_in_its_release():
    """vllm-project/vllm#27508: utilization 0.95, 'Available KV cache memory: 1.71 GiB', too little
    for one 131072-token request (vLLM 0.11)."""
    row = BY_ID["N07"]
    own = BENCH.predict(row, row["accounting"])
    assert not own.starts and own.kv_cache_gib < own.kv_needed_gib(1)


def test_llama_8b_at_20k_tokens_started_on_a_24_gib_card():
    row = BY_ID["N11"]  # vllm-project/vllm#10517, an RTX 3090 (23.58 GiB), utilization 0.90
    assert BENCH.predict(row, row["accounting"]).starts
    assert not BENCH.predict(BY_ID["N12"], "v0").starts  # the same card at 29000 tokens refused


def test_vllm_033_counts_what_0_19_ran_out_of_memory_for():
    """L15: gpt-oss-20b on one H100 at 0.95 passed 0.19's KV check, then ran out of memory in the
    sampler warm-up after the KV cache was allocated. vLLM 0.33 profiles the warm-up pass and
    subtracts the CUDA graphs before sizing the KV cache, so nothing is left to run out of."""
    row = BY_ID["L15"]
    own, target = BENCH.predict(row, "v1"), BENCH.predict(row, "0.33")
    assert own.kv.fits_one_request and not own.starts
    assert target.starts and target.warmup_margin_gib is None
    terms = target.weights_gib + target.activation_gib + target.cuda_graphs_gib + target.non_torch_gib
    assert target.kv_cache_gib == pytest.approx(target.budget_gib - terms)
