"""LoRA adapters and a speculative draft against vLLM 0.33.0's own code (the conformance tier).

The program's argv for stacks with loraAdapters and a speculativeModel goes through vLLM's
parser, ServeSubcommand.validate and create_engine_config (tests/conformance/vllm_harness), with
the container paths pointed at local model directories (the draft's config is read there, as
the container reads the mounted draft). Then the sizing's terms are compared with what vLLM's
own classes allocate (vllm_harness/addon_probe.py): the LoRA buffers of a decoder layer at two
ranks and two TP sizes, and the draft's KV bytes per token.

Run: VLLM_VENV=/work/vllm-venv ./tools/test-vllm -k addons
"""

from __future__ import annotations

import json

import pytest

from tests.conformance import vllm_runner
from tests.conformance.model_dirs import catalog_model_dir
from tests.conformance.program import decide, gpu_facts
from serving.adapter_args import DRAFT_PATH
from sizing.addons import AddOns, draft_kv_page_bytes, lora_buffer_bytes
from sizing.hub import resolve
from sizing.memory import KV_BLOCK_TOKENS

pytestmark = pytest.mark.vllm_conformance

BASE = "Qwen/Qwen2.5-1.5B-Instruct"
DRAFT = "Qwen/Qwen2.5-0.5B-Instruct"  # the same tokenizer and vocabulary (151936)
ADAPTERS = [{"name": "sql", "model": "acme/sql-lora"}, {"name": "chat", "model": "acme/chat-lora"}]

CASES = {
    "addons-rank16-tp1": {"maxLoraRank": 16, "instanceType": "g6.xlarge"},
    "addons-rank64-tp1": {"maxLoraRank": 64, "maxLoras": 4, "instanceType": "g6.xlarge"},
    "addons-rank64-tp2": {"maxLoraRank": 64, "instanceType": "g6.12xlarge", "tensorParallelSize": 2},
}


def _values(extra: dict) -> dict:
    return {
        "model": BASE, "maxModelLen": 4096, "loraAdapters": ADAPTERS,
        "speculativeModel": {"model": DRAFT, "numSpeculativeTokens": 3}, **extra,
    }


def _local_argv(argv: list[str], models) -> list[str]:
    """The argv with the container's model and draft paths pointed at local directories."""
    out = [str(catalog_model_dir(BASE, models)), *argv[1:]]
    index = out.index("--speculative-config") + 1
    speculative = json.loads(out[index])
    assert speculative["model"] == DRAFT_PATH
    speculative["model"] = str(catalog_model_dir(DRAFT, models))
    out[index] = json.dumps(speculative)
    return out


# Not "case"/"judged": tests/conformance/test_vllm_conformance.py reads every selected test's
# "case" parameter as a corpus Case.
@pytest.fixture(scope="module")
def addon_judged(tmp_path_factory):
    problem = vllm_runner.venv_problem()
    if problem:
        pytest.fail(problem)
    models = tmp_path_factory.mktemp("models")
    decisions, requests = {}, []
    for case, extra in CASES.items():
        decision = decide(_values(extra))
        assert decision.accepted, f"{case}: {decision.message}"
        decisions[case] = decision
        tp = decision.plan.tensor_parallel_size
        requests.append({
            "id": case, "argv": _local_argv(decision.argv, models),
            "gpu": gpu_facts(decision.plan.instance, tp), "layer_probe": False,
        })
    results = vllm_runner.run(requests, tmp_path_factory.mktemp("vllm"))
    return {case: (decisions[case], results[case]) for case in CASES}


@pytest.mark.parametrize("addon_case", sorted(CASES))
def test_vllm_starts_the_argv_with_adapters_and_a_draft(addon_judged, addon_case):
    decision, result = addon_judged[addon_case]
    assert result["ok"], f"vLLM refused it at {result['stage']}: {result.get('error')}"
    assert result["lora_probe"]["max_lora_rank"] == decision.plan.max_lora_rank
    assert result["lora_probe"]["max_loras"] == decision.plan.max_loras
    assert result["draft_probe"]["method"] == "draft_model" and result["draft_probe"]["num_speculative_tokens"] == 3


@pytest.mark.parametrize("addon_case", sorted(CASES))
def test_lora_buffers_match_what_vllm_allocates(addon_judged, addon_case):
    decision, result = addon_judged[addon_case]
    probe = result["lora_probe"]
    assert "error" not in probe, probe["error"]
    plan = decision.plan
    addons = AddOns(max_loras=plan.max_loras, max_lora_rank=plan.max_lora_rank)
    ours = lora_buffer_bytes(resolve(BASE), addons, plan.tensor_parallel_size)
    assert probe["lora_dtype"] == plan.dtype
    assert ours == probe["layer_bytes"] * probe["layers"]
    assert plan.memory.addons.lora_buffers_gib * 2**30 == pytest.approx(ours)


@pytest.mark.parametrize("addon_case", sorted(CASES))
def test_the_drafts_kv_bytes_per_token_match_vllms_spec(addon_judged, addon_case):
    decision, result = addon_judged[addon_case]
    probe = result["draft_probe"]
    assert "error" not in probe, probe["error"]
    assert probe["draft_tensor_parallel_size"] == decision.plan.tensor_parallel_size
    draft = AddOns(draft=resolve(DRAFT))
    ours = draft_kv_page_bytes(draft, 2, decision.plan.tensor_parallel_size) // KV_BLOCK_TOKENS
    assert ours == probe["draft_kv_bytes_per_token_per_rank"]
    assert decision.plan.memory.addons.draft_kv_bytes_per_token == ours
