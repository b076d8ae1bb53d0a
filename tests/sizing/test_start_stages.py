"""The start-time estimate (sizing.start_stages) and bench/cold_start.py: their invariants, not
their figures (those are arithmetic on sizing/catalog/start-rates.csv, printed by the bench)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from bench import cold_start
from sizing import startup
from sizing.start_stages import (
    RATES_CSV, STAGES, Start, estimate_start, model_volume_performance, rates,
)

GB_7B = 15.232  # Qwen2.5-7B-Instruct's weights as stored (GB)


def test_every_rate_has_a_source_a_kind_and_a_date():
    with RATES_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(r["source"] and r["date"] and r["kind"] in ("published", "allowance") for r in rows)
    assert set(rates()) == {r["name"] for r in rows}


@pytest.mark.parametrize("start", list(Start))
def test_stages_sum_to_the_total_and_run_in_order(start):
    estimate = estimate_start(start, weights_gb=GB_7B, model_volume_mib_s=500)
    assert estimate.total_s == pytest.approx(sum(s.seconds for s in estimate.stages))
    names = [s.name for s in estimate.stages]
    assert names == [n for n in STAGES if n in names]
    assert estimate.biggest.seconds == max(s.seconds for s in estimate.stages)


def test_a_faster_volume_initialization_rate_gives_a_shorter_fleet_cold_start():
    slow = estimate_start(Start.FLEET_COLD, weights_gb=GB_7B, model_volume_mib_s=1000, root_volume_mib_s=1000,
                          volume_initialization_mib_s=100)
    fast = estimate_start(Start.FLEET_COLD, weights_gb=GB_7B, model_volume_mib_s=1000, root_volume_mib_s=1000,
                          volume_initialization_mib_s=300)
    assert fast.total_s < slow.total_s
    # The weights and the image layers are both read through the initialization rate (P12).
    for name in ("weight load", "image layers (root volume read)"):
        assert {s.name: s.seconds for s in fast.stages}[name] < {s.name: s.seconds for s in slow.stages}[name]


def test_the_initialization_rate_is_capped_by_the_volume_throughput():
    capped = estimate_start(Start.FLEET_COLD, weights_gb=GB_7B, model_volume_mib_s=125, volume_initialization_mib_s=300)
    at_125 = estimate_start(Start.FLEET_COLD, weights_gb=GB_7B, model_volume_mib_s=125, volume_initialization_mib_s=125)
    weights = [{s.name: s.seconds for s in e.stages}["weight load"] for e in (capped, at_125)]
    assert weights[0] == pytest.approx(weights[1])


def test_a_volume_initialization_rate_outside_aws_range_is_refused():
    with pytest.raises(ValueError, match="100..300"):
        estimate_start(Start.FLEET_COLD, weights_gb=1, model_volume_mib_s=125, volume_initialization_mib_s=500)


def test_a_warm_pool_start_skips_the_bake_time_and_first_boot_work():
    cold = estimate_start(Start.FLEET_COLD, weights_gb=GB_7B, model_volume_mib_s=500)
    warm = estimate_start(Start.WARM_POOL, weights_gb=GB_7B, model_volume_mib_s=500)
    warm_names = {s.name for s in warm.stages}
    assert {"first-boot work", "image layers (root volume read)", "image pull"}.isdisjoint(warm_names)
    assert warm.total_s < cold.total_s


def test_only_the_first_single_host_start_compiles_from_scratch():
    compile_s = {
        start: {s.name: s.seconds for s in estimate_start(start, weights_gb=1, model_volume_mib_s=125).stages}["torch.compile"]
        for start in Start
    }
    assert compile_s[Start.HOST_COLD] > max(compile_s[s] for s in Start if s is not Start.HOST_COLD)


def test_the_model_volume_throughput_meets_the_target_within_gp3_limits():
    volume = model_volume_performance(GB_7B, target_s=30)
    assert GB_7B * 1e9 / 2**20 / volume.throughput_mib_s <= 30
    assert volume.throughput_mib_s % 25 == 0 and volume.iops >= volume.throughput_mib_s / 0.25
    small = model_volume_performance(1.0, target_s=30)
    assert (small.throughput_mib_s, small.iops, small.usd_per_month) == (125, 3000, 0)
    huge = model_volume_performance(800.0, target_s=30)
    assert huge.throughput_mib_s == 1000 and huge.iops == 4000  # 1000 MiB/s needs 4000 IOPS at 0.25 MiB/s each
    assert huge.usd_per_month > volume.usd_per_month > 0
    with pytest.raises(ValueError, match="125..1000"):
        model_volume_performance(1.0, throughput_mib_s=2000)


def test_the_bench_prints_every_stack_and_start_and_the_prod_goals(capsys):
    assert cold_start.main(["dev", "prod"]) == 0
    out = capsys.readouterr().out
    for start in Start:
        assert start.value in out
    assert out.count("goal ") == 2 and "biggest stage" in out
    faster = cold_start.starts_for("prod", init_rate=300).starts[Start.FLEET_COLD].total_s
    slower = cold_start.starts_for("prod", init_rate=100).starts[Start.FLEET_COLD].total_s
    assert faster < slower


def test_the_bench_runs_as_a_script():
    run = subprocess.run([sys.executable, "bench/cold_start.py", "dev", "--sources"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "volume_initialization_max = 300 MiB/s" in run.stdout


def test_a_readiness_timeout_shorter_than_the_expected_start_is_named_with_a_fix():
    config, plan = cold_start.stack_plan("prod")
    notes, warnings = startup.start_notes(plan, config)
    assert warnings == () and "500 MiB/s" in notes[0] and "+$15.00/month" in notes[0]
    short = config.model_copy(update={"readiness_timeout_minutes": 1})
    _, warnings = startup.start_notes(plan, short)
    (warning,) = warnings
    assert "readinessTimeoutMinutes=1" in warning and "set it to" in warning
    fix = int(warning.rsplit("set it to ", 1)[1].split()[0])
    assert startup.start_notes(plan, config.model_copy(update={"readiness_timeout_minutes": fix}))[1] == ()
