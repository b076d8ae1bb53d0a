"""The program's side of the conformance corpus, in the quick suite: every config gets the
decision the corpus records, and every refused config's natural run is one the program would
otherwise accept. tests/conformance/test_vllm_conformance.py checks the same records against
vLLM 0.33.0 itself (the vllm_conformance tier)."""

from __future__ import annotations

import pytest

from tests.conformance.corpus import ACCEPT, CASES, REFUSE, Case, as_params
from tests.conformance.program import decide, stack_values


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def test_the_corpus_covers_what_issue_11_names():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    configs = [case.config for case in CASES]
    models = {str(c.get("model")) for c in configs}
    for family_model in (
        "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-8B", "Qwen/Qwen3-30B-A3B",
        "meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3",
        "mistralai/Mixtral-8x7B-Instruct-v0.1", "deepseek-ai/DeepSeek-V3", "openai/gpt-oss-20b",
        "google/gemma-2-2b-it", "google/gemma-3-1b-it", "google/gemma-3-4b-it",
        "zai-org/GLM-4-9B-0414", "Qwen/Qwen2.5-14B-Instruct-AWQ",
    ):
        assert family_model in models, family_model
    rope_types = {c["ropeScaling"].get("rope_type", c["ropeScaling"].get("type"))
                  for c in configs if "ropeScaling" in c}
    assert rope_types >= {"yarn", "linear", "dynamic", "longrope", "llama3"}
    assert {c.get("tensorParallelSize") for c in configs} >= {4, 8}
    assert any(c.get("maxNumSeqs") == 4096 for c in configs)
    assert any(c.get("gpuMemoryUtilization") == 0.99 for c in configs)
    # issue 15: across nodes, by nodes and by pipelineParallelSize, and a split refused
    assert {"meta-llama/Llama-3.1-405B-Instruct", "deepseek-ai/DeepSeek-R1"} <= {
        str(c.get("model")) for c in configs if c.get("nodes", 1) != 1}
    assert any(c.get("pipelineParallelSize", 1) > 1 and case.program == ACCEPT
               for case, c in zip(CASES, configs))
    assert any(c.get("pipelineParallelSize", 1) > 1 and case.program == REFUSE
               for case, c in zip(CASES, configs))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_the_records_are_consistent(case: Case):
    assert case.program in (ACCEPT, REFUSE) and case.vllm_decision in (ACCEPT, REFUSE)
    assert case.why, "every case says in one line what it pins"
    # The program may be stricter than vLLM (with a reason), never more lenient.
    assert not (case.program == ACCEPT and case.vllm_decision == REFUSE)
    assert bool(case.stricter) == (case.program != case.vllm_decision)
    assert (case.natural is not None) == (case.program == REFUSE)


@pytest.mark.parametrize("case", as_params(CASES))
def test_the_program_decides_as_recorded(case: Case, models):
    values = stack_values(case, models)
    decision = decide(values)
    assert (ACCEPT if decision.accepted else REFUSE) == case.program, decision.message
    if case.program == REFUSE:
        assert decision.message.strip()
        base = {k: v for k, v in values.items() if k not in case.natural.drop}
        base.update(case.natural.set)
        natural = decide(base)
        assert natural.accepted, (
            f"{case.id}: without {case.natural.drop} the program should accept it: {natural.message}"
        )


def test_the_readme_and_docs_state_the_corpus_size():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for page, says in (("README.md", f"{len(CASES)} stack configs"), ("docs/testing.md", f"{len(CASES)} stack configs"),
                       ("docs/preview-checks.md", f"replays {len(CASES)} configs")):
        assert says in (root / page).read_text(), f"{page} should say {says!r}"
