"""The benchmark after deploy, in the whole program: when it runs, what it is given, and the
`benchmark` output built from its step's stdout (what benchmark_vllm.sh prints)."""

import pytest

from tests.components.test_program import API_KEY, SMALL, reaches, vllm_container
from tests.fakes.bench import result_file
from tests.harness import is_secret, plain_text, reveal

STEP = "vllm-benchmark-run"


def test_it_runs_after_the_readiness_check_and_again_whenever_that_runs_again(program):
    run = program(SMALL)
    step, ready = run.named(STEP), run.named("vllm-vllm-ready")
    assert reaches(run, step, ready) and reaches(run, step, vllm_container(run))
    assert ready.urn in step.property_dependencies["triggers"], "a new container re-runs readiness, then this"
    assert not reaches(run, run.named("vllm-proxy-container"), step), "the endpoint never waits for it"


def test_the_benchmark_trigger_key_reruns_it(program):
    before = program(SMALL).named(STEP).plain["triggers"]
    after = program({**SMALL, "benchmarkTrigger": "2026-11-02"}).named(STEP).plain["triggers"]
    assert before != after and "benchmarkTrigger=2026-11-02" in after


def test_the_load_fits_the_served_context_and_the_model_dir_is_the_one_vllm_serves(program):
    run = program({**SMALL, "maxModelLen": 512, "maxNumSeqs": 8})
    env = run.named(STEP).plain["environment"]
    assert int(env["VLLM_DEPLOY_BENCH_INPUT_LEN"]) + int(env["VLLM_DEPLOY_BENCH_OUTPUT_LEN"]) <= 512
    assert env["VLLM_DEPLOY_BENCH_CONCURRENCY"] == "1 4", "no level above maxNumSeqs"
    assert env["VLLM_DEPLOY_MODEL_DIR"] == vllm_container(run).plain["mounts"][0]["source"]
    assert env["VLLM_DEPLOY_IMAGE"] == run.named("vllm-vllm-image").plain["name"], "the pinned image"
    assert env["VLLM_DEPLOY_SERVED_MODEL"] == run.exports["servedModelName"].value


def test_the_api_key_reaches_it_only_as_a_secret_and_its_result_is_plain(program):
    run = program(SMALL, secrets={"apiKey": API_KEY})
    step = run.named(STEP)
    assert API_KEY not in plain_text(step.inputs) and API_KEY not in step.plain["create"]
    assert reveal(step.inputs["environment"])["VLLM_API_KEY"] == API_KEY
    assert is_secret(step.inputs["environment"])
    assert "stderr" in step.additional_secret_outputs, "stderr stays secret"
    assert "stdout" not in step.additional_secret_outputs, "stdout is the result JSON, a plain output"


def test_the_output_carries_each_level_and_its_dollars_per_million_tokens(program):
    run = program(SMALL)
    benchmark = run.exports["benchmark"]
    assert benchmark.known and not benchmark.secret
    price = run.exports["hourlyPriceUsd"].value
    levels = benchmark.value["levels"]
    assert [lvl["maxConcurrency"] for lvl in levels] == [1, 4, 16]
    for lvl in levels:
        for key in ("ttftP50Ms", "ttftP99Ms", "itlP50Ms", "outputTokensPerS"):
            assert lvl[key] > 0, key
        printed = result_file(lvl["maxConcurrency"], lvl["prompts"])["output_throughput"]  # the step's stdout
        assert lvl["usdPerMillionOutputTokens"] == pytest.approx(price / (printed * 3600) * 1e6, abs=1e-4)
    assert benchmark.value["hourlyPriceUsd"] == price


def test_turned_off_there_is_no_step_and_no_output(program):
    run = program({**SMALL, "benchmarkOnDeploy": False})
    assert not [r for r in run.resources if r.name.startswith("vllm-benchmark")]
    assert "benchmark" not in run.exports
