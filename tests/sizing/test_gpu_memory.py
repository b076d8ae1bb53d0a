"""GPU memory as three facts per GPU (sizing/catalog/gpu-memory.csv), and the budget on the right one."""

from __future__ import annotations

import csv
import math

import pytest

from config.validation import parse
from sizing import gpus
from sizing.choice import evaluate, plan
from sizing.models import from_catalog
from sizing.report import format_report


def _rows() -> list[dict[str, str]]:
    with gpus.GPU_MEMORY_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_catalog_gpu_has_its_three_figures_and_sources():
    sources = (gpus.GPU_MEMORY_CSV.parent / "SOURCES.md").read_text()
    for instance in gpus.load_instances():
        memory = instance.gpu_memory
        assert memory.nvidia_smi_name and memory.sources, instance.name
        for key in memory.sources:
            assert f"| {key} |" in sources, f"{instance.name}: source {key} is not in SOURCES.md"


def test_cuda_sees_less_than_nvidia_smi_and_the_ec2_api_list():
    """The EC2 figure is *above* the CUDA total: budgeting against it would over-promise."""
    for instance in gpus.load_instances():
        memory = instance.gpu_memory
        cuda_mib = memory.cuda_total_gib * 1024
        assert cuda_mib < memory.nvidia_smi_mib, instance.name
        assert cuda_mib < memory.ec2_api_mib, instance.name


def test_derived_cuda_totals_follow_the_stated_rule_and_stay_below_every_measured_gap():
    rows = _rows()
    measured_gaps = {
        r["gpu_model"]: int(r["nvidia_smi_total_mib"]) - float(r["cuda_total_gib"]) * 1024
        for r in rows
        if r["cuda_basis"] == "measured" and r["nvidia_smi_basis"] == "measured"
    }
    # The rule's gap is the largest measured one (A100 80GB), so a derived total is conservative.
    assert math.ceil(max(measured_gaps.values())) == gpus.DERIVED_CUDA_GAP_MIB
    assert max(measured_gaps, key=measured_gaps.get) == "NVIDIA A100 80GB"
    derived = [r for r in rows if r["cuda_basis"] == "derived" and r["gpu_model"] != "NVIDIA T4G"]
    assert {r["gpu_model"] for r in derived} >= {"NVIDIA A10G", "NVIDIA H200", "NVIDIA B300"}
    for row in derived:
        rule = math.floor((int(row["nvidia_smi_total_mib"]) - gpus.DERIVED_CUDA_GAP_MIB) / 1024 * 100) / 100
        assert float(row["cuda_total_gib"]) == rule, row["gpu_model"]


def test_the_facts_agree_with_the_instance_catalogs_ec2_column():
    for instance in gpus.load_instances():
        if instance.gpu_count:  # whole GPUs; vGPU slices list their slice
            assert instance.gpu_memory.ec2_api_mib == gpus.gpu_memory_facts()[instance.gpu_model].ec2_api_mib


def test_the_budget_is_utilization_times_the_cuda_total():
    """Hand arithmetic: a T4 as CUDA sees it holds 14.58 GiB (not EC2's 16): 0.92 x 14.58 = 13.41."""
    chosen = plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}))
    assert chosen.instance.gpu_model == "NVIDIA T4"
    assert chosen.memory.budget_gib == pytest.approx(13.4136)
    report = format_report(chosen)
    assert "budget 13.41 GiB (0.92 x 14.58 GiB as CUDA sees it)" in report
    assert chosen.to_output()["gpuMemoryGib"] == 14.58
    assert chosen.to_output()["gpuMemoryNvidiaSmiMib"] == 15360


def test_a_derived_total_says_so_in_the_report():
    chosen = plan(parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 4096,
                         "instanceType": "g5.xlarge"}))
    assert "0.92 x 21.62 GiB as CUDA sees it; derived, see sizing/catalog/SOURCES.md" in format_report(chosen)


def test_an_estimate_between_the_cuda_and_the_ec2_budget_is_refused():
    """Qwen2.5-7B at 30000 tokens x 3 sequences needs about 20.3 GiB per GPU: it fits 0.92 x
    22.35 GiB (EC2, 20.56) but not 0.92 x 21.95 GiB (CUDA, 20.19). An L4 would refuse it at
    startup, so the sizer moves on. The KV part is hand arithmetic: (3 x 1875 + 1) blocks of 16
    tokens x 57,344 B = 4.81 GiB."""
    config = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 30000, "minConcurrentSequences": 3})
    l4 = evaluate(config, from_catalog("Qwen/Qwen2.5-7B-Instruct"), gpus.get("g6.xlarge"))
    assert l4.memory.kv_cache_gib * 2**30 == pytest.approx((3 * 1875 + 1) * 16 * 57344)
    assert 0.92 * 21.95 < l4.memory.required_gib < 0.92 * 22888 / 1024
    assert not l4.fits
    assert plan(config).instance.gpu_model != "NVIDIA L4"
