"""The vLLM conformance tier: every corpus config (tests/conformance/corpus.py) judged by the
program and by vLLM 0.33.0's own startup code (tests/conformance/vllm_harness: the real parser,
ServeSubcommand.validate and the API server's checks, create_engine_config, the worker's start
checks and a build of one decoder layer, on a fake GPU with the planned instance's facts).

It asserts that the program accepts exactly what vLLM accepts (save the `stricter` records,
where the program refuses on purpose), and for each accepted config that vLLM runs what the
plan assumed: context length, dtype, tensor parallel size, batch limits, and the KV-cache bytes
per token on one GPU.

Run: ./tools/test-vllm (builds .vllm-venv once with tools/vllm-venv). `./tools/test` skips it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import vllm_runner
from tests.conformance.corpus import ACCEPT, CASES, REFUSE, Case
from tests.conformance.program import Decision, decide, stack_values, vllm_request

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


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_vllm_decides_as_the_program(case: Case, judged):
    decision, _, result = judged[case.id]
    assert result["stage"] != "harness", f"the harness failed: {result.get('error')}"
    assert (ACCEPT if decision.accepted else REFUSE) == case.program, decision.message
    assert _verdict(result) == case.vllm_decision, (
        f"{case.id} ({case.why}): the program {'accepts' if decision.accepted else 'refuses'} it, "
        f"{_vllm_said(result)}"
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.program == ACCEPT], ids=lambda case: case.id)
def test_vllm_runs_what_the_plan_assumed(case: Case, judged):
    decision, values, result = judged[case.id]
    if not result.get("engine_config_ok"):
        pytest.fail(f"no engine config to compare: {_vllm_said(result)}")
    plan = decision.plan
    per_layer, full_layers = decision.kv_bytes_per_token_per_gpu(values.get("kvCacheDtype", "auto"))
    planned = {
        "max_model_len": plan.max_model_len,
        "dtype": plan.dtype,
        "tensor_parallel_size": plan.tensor_parallel_size,
        "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.effective_max_num_seqs,
        "kv_bytes_per_token_per_layer_per_rank": per_layer,
        "kv_bytes_per_token_per_rank_full_layers": full_layers,
    }
    ran = {key: result.get(key) for key in planned}
    assert ran == planned, f"{case.id}: vLLM runs {ran}, the plan assumed {planned}"
