"""The parallelism flags of vllmExtraArgs (serving.parallel_args), as vLLM 0.33 checks them at
startup and as this one-host stack can run them. Each refused combination was refused by vLLM
0.33.0 itself in the conformance tier (tests/conformance/corpus.py, xa-* cases)."""

from __future__ import annotations

import pytest

from sizing.gpus import GpuInstance
from tests.serving.test_extra_args import only, problems

FOUR_L40S = GpuInstance("g6e.12xlarge", "NVIDIA L40S", 4, 44.7, 8.9, 48, 384.0, 10.49, "x86_64")
MOE = "Qwen/Qwen3-30B-A3B"


def test_eplb_needs_expert_parallelism():
    problem = only(["--enable-eplb"], model=MOE, instance=FOUR_L40S, tensor_parallel_size=4)
    assert "--enable-eplb" in problem and "add --enable-expert-parallel" in problem


def test_eplb_needs_more_than_one_gpu_in_the_expert_parallel_group():
    problem = only(["--enable-expert-parallel", "--enable-eplb"], model=MOE)
    assert "EPLB requires tensor, prefill-context, or data parallelism" in problem
    assert "tensorParallelSize to 2 or more" in problem


@pytest.mark.parametrize("more", [{"tensor_parallel_size": 4}, {"tensor_parallel_size": 2, "data_parallel_size": 2}])
def test_eplb_over_several_gpus_is_accepted(more):
    extra = ["--enable-expert-parallel", "--enable-eplb"]
    if more.get("data_parallel_size"):
        extra += ["--data-parallel-size", "2"]
    assert problems(extra, model=MOE, instance=FOUR_L40S, **more) == []


@pytest.mark.parametrize("redundant", [
    ["--eplb-config", '{"num_redundant_experts": 2}'],
    ["--eplb-config.num_redundant_experts", "2"],
])
def test_redundant_experts_need_eplb(redundant):
    problem = only(["--enable-expert-parallel", *redundant], model=MOE, instance=FOUR_L40S,
                   tensor_parallel_size=4)
    assert "num_redundant_experts=2 needs --enable-eplb" in problem
    assert problems(["--enable-expert-parallel", "--enable-eplb", *redundant], model=MOE,
                    instance=FOUR_L40S, tensor_parallel_size=4) == []


def test_elastic_ep_needs_eplb():
    assert "--enable-elastic-ep needs --enable-eplb" in only(
        ["--enable-expert-parallel", "--enable-elastic-ep"], model=MOE, instance=FOUR_L40S,
        tensor_parallel_size=4,
    )


@pytest.mark.parametrize("extra", [
    ["--data-parallel-size", "2", "--data-parallel-external-lb"],
    ["--data-parallel-size", "2", "--data-parallel-rank", "0"],
    ["--data-parallel-size", "2", "--data-parallel-hybrid-lb"],
    ["--data-parallel-size", "2", "-dpr", "1"],
    ["--data-parallel-size", "2", "--data-parallel-multi-port-external-lb"],
    ["--nnodes", "2"],
    ["--node-rank", "1"],
])
def test_ranks_served_elsewhere_are_refused_on_one_host(extra):
    problem = only(extra, model=MOE, instance=FOUR_L40S, tensor_parallel_size=2, data_parallel_size=2)
    assert "this stack runs one vLLM server on one host" in problem
    assert "--data-parallel-size N alone" in problem


@pytest.mark.parametrize("extra", [["--nnodes", "1"], ["--node-rank", "0"], ["--no-data-parallel-external-lb"]])
def test_single_node_spellings_are_accepted(extra):
    assert problems(extra) == []


@pytest.mark.parametrize("local, dp", [("2", None), ("1", "2")])
def test_data_parallel_size_local_must_be_the_whole_size(local, dp):
    extra = ["--data-parallel-size-local", local] + (["--data-parallel-size", dp] if dp else [])
    problem = only(extra, instance=FOUR_L40S, tensor_parallel_size=2, data_parallel_size=int(dp or 1))
    assert f"--data-parallel-size-local {local} differs from --data-parallel-size {dp or 1}" in problem


def test_data_parallel_size_local_equal_to_the_size_is_accepted():
    assert problems(["-dp", "2", "-dpl", "2"], instance=FOUR_L40S, tensor_parallel_size=2,
                    data_parallel_size=2) == []


@pytest.mark.parametrize("flag, value", [("--numa-bind-nodes", "0"), ("--numa-bind-cpus", "0-3")])
def test_numa_binding_details_need_numa_binding(flag, value):
    assert f"{flag} needs --numa-bind" in only([flag, value])
    assert problems(["--numa-bind", flag, value]) == []


# Two one-GPU nodes, pipeline parallel 2 across them (the conformance corpus's pp-qwen72b-2-nodes shape).
ACROSS_TWO = dict(nodes=2, stage_layers=(14, 14))


@pytest.mark.parametrize("backend", ["mp", "uni", "external_launcher"])
def test_across_nodes_only_the_ray_backend_is_accepted(backend):
    problem = only(["--distributed-executor-backend", backend], **ACROSS_TWO)
    assert f"--distributed-executor-backend {backend} runs every rank on one node" in problem
    assert "spans 2 nodes" in problem
    assert problems(["--distributed-executor-backend", "ray"], **ACROSS_TWO) == []
    assert problems(["--distributed-executor-backend", backend]) == [], "one node: vLLM's choice"


def test_data_parallel_engines_across_nodes_are_refused():
    problem = only(["--data-parallel-size", "2"], instance=FOUR_L40S, tensor_parallel_size=2, data_parallel_size=2,
                   **ACROSS_TWO)
    assert "--data-parallel-size 2 across 2 nodes is not deployed" in problem
