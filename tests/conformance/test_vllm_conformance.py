"""The vLLM conformance tier: every corpus config (tests/conformance/corpus.py) judged by the
program and by vLLM 0.33.0's own startup code (tests/conformance/vllm_harness: the real parser,
ServeSubcommand.validate and the API server's checks, create_engine_config, the worker's start
checks and a build of one decoder layer, on a fake GPU with the planned instance's facts).

It asserts that the program accepts exactly what vLLM accepts (save the `stricter` records,
where the program refuses on purpose), and for each accepted config that vLLM runs what the
plan assumed: context length, dtype, tensor and pipeline parallel sizes, batch limits, and the
KV-cache bytes per token on one GPU. Across nodes also: the world size (TP x PP, more GPUs than
one node has), the Ray executor, and each pipeline stage's decoder layers and KV bytes per token
(vLLM's get_pp_indices against sizing.pipeline).

Run: ./tools/test-vllm (builds .vllm-venv once with tools/vllm-venv). `./tools/test` skips it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import vllm_runner
from tests.conformance.corpus import ACCEPT, CASES, REFUSE, Case, as_params
from tests.conformance.program import Decision, decide, stack_values, vllm_request
from sizing.gpus import load_instances
from sizing.models import from_catalog
from sizing.vllm_rules import fp8_kv_cache_refusal

pytestmark = pytest.mark.vllm_conformance


@pytest.fixture(scope="session")
def judged(request, tmp_path_factory) -> dict[str, tuple[Decision, dict, dict]]:
    """{case id: (the program's decision, its stack values, vLLM's result)} for the selected
    cases (all, unless -k narrows them), in one vLLM batch."""
    problem = vllm_runner.venv_problem()
    if problem:
        pytest.fail(problem)
    selected = {
        item.callspec.params["case"].id for item in request.session.items
        if hasattr(item, "callspec") and "case" in item.callspec.params
    }
    models = tmp_path_factory.mktemp("models")
    decisions, requests = {}, []
    for case in (c for c in CASES if c.id in selected):
        values = stack_values(case, models)
        decision = decide(values)
        decisions[case.id] = (decision, values)
        requests.append(vllm_request(case, decision, values, models))
    work = tmp_path_factory.mktemp("vllm")
    results = vllm_runner.run(requests, work)
    return {key: (*decisions[key], results[key]) for key in decisions}


def _verdict(result: dict) -> str:
    return ACCEPT if result["ok"] else REFUSE


def _vllm_said(result: dict) -> str:
    if result["ok"]:
        return "vLLM accepted it at every stage"
    return f"vLLM refused it at {result['stage']}: {result.get('error')}"


@pytest.mark.parametrize("case", as_params(CASES))
def test_vllm_decides_as_the_program(case: Case, judged):
    decision, _, result = judged[case.id]
    assert result["stage"] != "harness", f"the harness failed: {result.get('error')}"
    assert (ACCEPT if decision.accepted else REFUSE) == case.program, decision.message
    assert _verdict(result) == case.vllm_decision, (
        f"{case.id} ({case.why}): the program {'accepts' if decision.accepted else 'refuses'} it, "
        f"{_vllm_said(result)}"
    )


@pytest.mark.parametrize("case", as_params([c for c in CASES if c.program == ACCEPT]))
def test_vllm_runs_what_the_plan_assumed(case: Case, judged):
    decision, values, result = judged[case.id]
    if not result.get("engine_config_ok"):
        pytest.fail(f"no engine config to compare: {_vllm_said(result)}")
    plan = decision.plan
    kv_cache_dtype = values.get("kvCacheDtype", "auto")
    per_layer, full_layers = decision.kv_bytes_per_token_per_gpu(kv_cache_dtype)
    planned = {
        "max_model_len": plan.max_model_len,
        "dtype": plan.dtype,
        "tensor_parallel_size": plan.tensor_parallel_size,
        "pipeline_parallel_size": plan.pipeline_parallel_size,
        "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.effective_max_num_seqs,
        "kv_bytes_per_token_per_layer_per_rank": per_layer,
    }
    if plan.nodes == 1:
        planned["kv_bytes_per_token_per_rank_full_layers"] = full_layers
    else:
        # One stage per node, TP inside it: more GPUs than one node has, over Ray.
        planned.update(
            world_size=plan.tensor_parallel_size * plan.nodes,
            distributed_executor_backend="ray",
            executor_uses_ray=True,
            executor_supports_pp=True,
        )
    ran = {key: result.get(key) for key in planned}
    assert ran == planned, f"{case.id}: vLLM runs {ran}, the plan assumed {planned}"
    if plan.nodes > 1:
        _same_pipeline_stages(case, decision, kv_cache_dtype, result)


def _same_pipeline_stages(case: Case, decision: Decision, kv_cache_dtype: str, result: dict) -> None:
    """vLLM's stages (get_pp_indices per PP rank, its attention layers and KV bytes) are the
    plan's. With sliding-window layers the plan's full-attention KV bytes of a stage may be
    above vLLM's, never below (stage_spec counts a stage's sliding layers in proportion, rounded
    down: more KV memory, never less); without them they are the same."""
    planned = decision.pipeline_stages(kv_cache_dtype)
    ran = result.get("pp_stages")
    assert ran is not None, f"{case.id}: vLLM's engine config has no pipeline stages"
    assert [s["layers"][1] - s["layers"][0] for s in ran] == list(decision.plan.stage_layers), (
        f"{case.id}: vLLM splits the layers {ran}, the plan {decision.plan.stage_layers}")
    exact = ("layers", "attention_layers", "kv_bytes_per_token_per_rank")
    assert [{k: s[k] for k in exact} for s in ran] == [{k: s[k] for k in exact} for s in planned], (
        f"{case.id}: vLLM's stages {ran}, the plan's {planned}")
    full = "kv_bytes_per_token_per_rank_full_layers"
    if not decision.spec.sliding_window_layers:  # every layer is a full-attention layer
        assert [s[full] for s in ran] == [s[full] for s in planned], (
            f"{case.id}: vLLM's stages {ran}, the plan's {planned}")
    for rank, (vllm_stage, plan_stage) in enumerate(zip(ran, planned)):
        assert plan_stage[full] >= vllm_stage[full], (
            f"{case.id}: stage {rank} caches {vllm_stage[full]} bytes per token in vLLM's full-"
            f"attention layers, the plan counts {plan_stage[full]}")


# --- fp8 KV cache below compute capability 8.9 (issue 27) --------------------------------------
# vLLM 0.33's own attention selection and layer build on a fake GPU of each kind decide as
# sizing's rule does (sizing/vllm_rules.py fp8_kv_cache_refusal). The public report replayed:
# kvCacheDtype fp8 on a T4, which the docs said needs 8.9+ and sizing accepted.

FP8_KV_CASES = [c for c in CASES if c.config.get("kvCacheDtype") == "fp8" and c.config.get("instanceType")]


def _sizing_says(case) -> tuple[float, str | None]:
    instance = next(i for i in load_instances() if i.name == case.config["instanceType"])
    spec = from_catalog(case.config["model"])
    cc = instance.compute_capability
    return cc, fp8_kv_cache_refusal(cc, spec.head_dim, spec.is_mla, spec.model_type)


def test_the_corpus_has_fp8_kv_cases_vllm_refuses_and_accepts_below_sm89():
    below = [refusal for cc, refusal in map(_sizing_says, FP8_KV_CASES) if cc < 8.9]
    assert {refusal is None for refusal in below} == {True, False}


@pytest.mark.parametrize("case", as_params(FP8_KV_CASES))
def test_vllm_decides_fp8_kv_cache_as_sizing_says(case, judged):
    _, _, result = judged[case.id]
    cc, refusal = _sizing_says(case)
    backend = (result.get("layer_probe") or {}).get("quant_methods", {}).get("attention", "")
    if refusal:
        assert not result["ok"] and result["stage"] == "layer_build", result
        assert "FP8 KV cache is not supported by the Triton attention backend" in str(result.get("error"))
        assert f"compute capability {cc:g}" in str(result.get("error")) or "SM89" in str(result.get("error"))
    else:
        assert result["ok"], result.get("error")
        if cc < 8.9:  # only FlashInfer stores fp8 there
            assert backend.startswith("FLASHINFER"), backend
