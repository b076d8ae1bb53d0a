"""The `benchmark` output from `vllm bench serve` result files (vLLM 0.33 shape), and its
dollars-per-million-tokens arithmetic checked by hand."""

import json

import pytest

from serving.benchmark import load_for, parse_output, usd_per_million_output_tokens
from tests.fakes.bench import FIXTURE, script_stdout


def test_dollars_per_million_output_tokens_by_hand():
    # $3.60/h at 1,000 tok/s: 3.6e6 tokens an hour cost $3.60, so one million cost $1.00.
    assert usd_per_million_output_tokens(3.60, 1000.0) == pytest.approx(1.00)
    # g4dn.xlarge $0.526/h at 106.67 tok/s: 106.67 x 3600 = 384,000 tok/h; 0.526 / 0.384 = $1.3698
    assert usd_per_million_output_tokens(0.526, 4096 / 38.4) == pytest.approx(1.36979, abs=1e-5)
    assert usd_per_million_output_tokens(None, 100.0) is None
    assert usd_per_million_output_tokens(0.526, 0.0) is None


def test_a_result_file_of_vllm_0_33_becomes_one_level_of_the_output():
    raw = json.loads(FIXTURE.read_text())  # the tool's own file, field names from its source
    stdout = json.dumps({"image": "vllm/vllm-openai:v0.33.0", "inputLen": 512, "outputLen": 128, "seed": 0,
                         "results": [raw]})
    output = parse_output(stdout, usd_per_hour=0.526)
    (level,) = output["levels"]
    assert level == {
        "maxConcurrency": 4,
        "prompts": 32,
        "completed": 32,
        "failed": 0,
        "durationS": 38.4,
        "ttftP50Ms": pytest.approx(64.9),
        "ttftP99Ms": pytest.approx(131.0, abs=0.11),
        "itlP50Ms": 37.96,
        "outputTokensPerS": 106.7,
        "usdPerMillionOutputTokens": 1.3698,
    }
    assert output["dataset"] == {"name": "random", "inputLen": 512, "outputLen": 128, "seed": 0}
    assert output["hourlyPriceUsd"] == 0.526 and output["image"] == "vllm/vllm-openai:v0.33.0"


def test_every_level_is_reported_in_the_order_run():
    output = parse_output(script_stdout((1, 4, 16)), usd_per_hour=0.8048)
    assert [lvl["maxConcurrency"] for lvl in output["levels"]] == [1, 4, 16]
    assert [lvl["prompts"] for lvl in output["levels"]] == [8, 32, 128]
    cheapest = output["levels"][-1]
    assert cheapest["usdPerMillionOutputTokens"] == pytest.approx(
        0.8048 / (cheapest["outputTokensPerS"] * 3600) * 1e6, rel=1e-3
    )


@pytest.mark.parametrize("stdout", ["", "not json", "{}", '{"results": []}'])
def test_anything_else_is_refused_with_what_was_expected(stdout):
    with pytest.raises(ValueError, match="benchmark step"):
        parse_output(stdout, usd_per_hour=1.0)


@pytest.mark.parametrize(
    ("max_model_len", "max_num_seqs", "levels", "input_len", "output_len"),
    [(8192, None, (1, 4, 16), 512, 128), (512, None, (1, 4, 16), 376, 128), (16384, 8, (1, 4), 512, 128),
     (256, 1, (1,), 184, 64)],
)
def test_the_load_fits_the_server(max_model_len, max_num_seqs, levels, input_len, output_len):
    load = load_for(max_model_len, max_num_seqs)
    assert (load.concurrency_levels, load.input_len, load.output_len) == (levels, input_len, output_len)
    assert load.input_len + load.output_len <= max_model_len
