"""Result files of `vllm bench serve` (vLLM 0.33 shape, tests/fixtures/vllm_bench_serve/) and the
JSON that components/scripts/benchmark_vllm.sh prints from them.

Used by the docker stub that stands in for the tool (tests/scripts/test_benchmark_script.py) and
by the program tests, where the benchmark step's stdout is what the provider would return.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_bench_serve" / "c4.json"


def result_file(concurrency: int, prompts: int, *, input_len: int = 512, output_len: int = 128) -> dict[str, Any]:
    """One level's result: the fixture (measured at concurrency 4) with this level's counts; its
    throughput scaled with concurrency, which is only roughly what a GPU does."""
    result = json.loads(FIXTURE.read_text())
    scale = concurrency / result["max_concurrency"]
    result.update(
        max_concurrency=concurrency,
        num_prompts=prompts,
        completed=prompts,
        total_input_tokens=prompts * input_len,
        total_output_tokens=prompts * output_len,
        output_throughput=result["output_throughput"] * scale,
    )
    return result


def script_stdout(levels=(1, 4, 16), *, per_request: int = 8, input_len: int = 512, output_len: int = 128,
                  seed: int = 0, image: str = "vllm/vllm-openai:v0.33.0") -> str:
    """What benchmark_vllm.sh prints after a run at `levels`."""
    results = [result_file(c, per_request * c, input_len=input_len, output_len=output_len) for c in levels]
    return json.dumps({"image": image, "inputLen": input_len, "outputLen": output_len, "seed": seed,
                       "results": results})
