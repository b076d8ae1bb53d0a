"""The benchmark after deploy: a short, bounded load of `vllm bench serve` against vLLM on the
host's loopback, and its result turned into the `benchmark` stack output.

The load (components/scripts/benchmark_vllm.sh runs it, inside the pinned vllm/vllm-openai
image): vLLM's own `random` dataset with fixed input and output lengths and a fixed seed, so every
run sends the same prompts, at a few `--max-concurrency` levels. Field names of the result file
(`--save-result`) are vLLM 0.33's, from vllm/benchmarks/serve.py: `main_async` writes
`max_concurrency`, `num_prompts` and the fields of `benchmark()` (`completed`, `failed`,
`duration`, `output_throughput` in output tokens/s, and per metric `median_<m>_ms` and
`p<P>_<m>_ms` for each `--metric-percentiles` value P, with m in ttft, tpot, itl, e2el).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

# The load. 512 prompt + 128 output tokens is a short chat turn; 8 prompts per concurrent
# stream keeps each level to a few batches (8, 32 and 128 prompts: ~21,500 output tokens in all).
CONCURRENCY_LEVELS = (1, 4, 16)
INPUT_LEN = 512
OUTPUT_LEN = 128
PROMPTS_PER_CONCURRENT_REQUEST = 8
SEED = 0
WARMUP_REQUESTS = 2
# Per level, a ceiling that only a stuck server reaches (a T4 streams ~1,000 tokens in well
# under a minute for the small models it fits).
LEVEL_TIMEOUT_S = 600
PERCENTILES = (50, 99)
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class BenchmarkLoad:
    """What one benchmark run sends (tokens, counts, seconds)."""

    concurrency_levels: tuple[int, ...]
    input_len: int
    output_len: int
    prompts_per_concurrent_request: int = PROMPTS_PER_CONCURRENT_REQUEST
    seed: int = SEED
    warmups: int = WARMUP_REQUESTS
    level_timeout_s: int = LEVEL_TIMEOUT_S

    def prompts(self, concurrency: int) -> int:
        return self.prompts_per_concurrent_request * concurrency

    @property
    def timeout_s(self) -> int:
        return self.level_timeout_s * len(self.concurrency_levels)


def load_for(max_model_len: int, max_num_seqs: Optional[int] = None) -> BenchmarkLoad:
    """The standard load, fitted to a server: requests stay within `max_model_len` tokens, and
    levels above `max_num_seqs` (which would only queue inside vLLM) are dropped."""
    output_len = min(OUTPUT_LEN, max(1, max_model_len // 4))
    input_len = max(1, min(INPUT_LEN, max_model_len - output_len - 8))  # 8: special tokens
    levels = tuple(c for c in CONCURRENCY_LEVELS if max_num_seqs is None or c <= max_num_seqs) or (1,)
    return BenchmarkLoad(concurrency_levels=levels, input_len=input_len, output_len=output_len)


def usd_per_million_output_tokens(usd_per_hour: Optional[float], output_tokens_per_s: float) -> Optional[float]:
    """Dollars per million output tokens at a sustained rate: $/h / (tok/s x 3600 s/h) x 1e6.
    None without a price or without output."""
    if usd_per_hour is None or output_tokens_per_s <= 0:
        return None
    return usd_per_hour / (output_tokens_per_s * SECONDS_PER_HOUR) * 1e6


def _number(result: dict[str, Any], *keys: str) -> Optional[float]:
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def level_summary(result: dict[str, Any], usd_per_hour: Optional[float]) -> dict[str, Any]:
    """One concurrency level of the output, from one `vllm bench serve` result file."""
    throughput = _number(result, "output_throughput") or 0.0
    return {
        "maxConcurrency": result.get("max_concurrency"),
        "prompts": result.get("num_prompts"),
        "completed": result.get("completed"),
        "failed": result.get("failed"),
        "durationS": _round(_number(result, "duration"), 2),
        "ttftP50Ms": _round(_number(result, "p50_ttft_ms", "median_ttft_ms"), 1),
        "ttftP99Ms": _round(_number(result, "p99_ttft_ms"), 1),
        "itlP50Ms": _round(_number(result, "p50_itl_ms", "median_itl_ms"), 2),
        "outputTokensPerS": round(throughput, 1),
        "usdPerMillionOutputTokens": _round(usd_per_million_output_tokens(usd_per_hour, throughput), 4),
    }


def parse_output(stdout: str, usd_per_hour: Optional[float]) -> dict[str, Any]:
    """The `benchmark` stack output from what benchmark_vllm.sh prints (one JSON object: the
    load, the image, and the result file of each level).

    Raises ValueError, naming what is missing, when the text is not that JSON.
    """
    try:
        run = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the benchmark step printed no JSON ({exc}): {stdout[:200]!r}") from None
    if not isinstance(run, dict) or not isinstance(run.get("results"), list) or not run["results"]:
        raise ValueError("the benchmark step's JSON has no `results` list of `vllm bench serve` result files")
    levels = [level_summary(result, usd_per_hour) for result in run["results"]]
    return {
        "tool": "vllm bench serve",
        "image": run.get("image"),
        "endpoint": "/v1/completions on the host's loopback (no proxy, no network)",
        "dataset": {
            "name": "random",
            "inputLen": run.get("inputLen"),
            "outputLen": run.get("outputLen"),
            "seed": run.get("seed"),
        },
        "hourlyPriceUsd": usd_per_hour,
        "levels": levels,
    }
