"""The benchmark step against a real vLLM: components/scripts/benchmark_vllm.sh runs the real
`vllm bench serve` (the tier's venv, the same vLLM as the server), and serving.benchmark turns
what the script prints into the `benchmark` stack output.

`docker` is a stub that runs what `docker run ... --entrypoint vllm IMAGE ARGS` would run in the
image: the venv's `vllm ARGS`, with the `-v` mounts' container paths in ARGS mapped to their host
paths, the `-e NAME` variables passed from the script's environment and nothing else of it.
The load is the program's for the server (serving.benchmark.load_for: input and output lengths,
concurrency levels, seed), with 2 prompts per concurrent request instead of 8 and 1 warm-up, to
keep the tier short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.benchmark import load_for, parse_output
from tests.real_vllm.server import MAX_MODEL_LEN, ROOT, VLLM

pytestmark = pytest.mark.real_vllm

SCRIPT = ROOT / "components" / "scripts" / "benchmark_vllm.sh"
FIXTURE = ROOT / "tests" / "fixtures" / "vllm_bench_serve" / "c4.json"
IMAGE = "vllm/vllm-openai:v0.33.0"
PROMPTS_PER_CONCURRENCY = 2

DOCKER = f"""#!{sys.executable}
# `docker run` of the vLLM image, as the tier's venv runs it (tests/real_vllm/test_benchmark.py).
import os, sys
argv = sys.argv[1:]
if argv[:1] == ["rm"]:
    sys.exit(0)
assert argv[0] == "run", argv
mounts, env, i = {{}}, {{}}, 1
while argv[i] != {IMAGE!r}:
    if argv[i] == "-v":
        source, target = argv[i + 1].split(":")[:2]
        mounts[target] = source
    if argv[i] == "-e":
        name, _, value = argv[i + 1].partition("=")
        env[name] = value if "=" in argv[i + 1] else os.environ[name]
    i += 2 if argv[i] in ("-v", "-e", "--name", "--network", "--entrypoint") else 1
entrypoint = argv[argv.index("--entrypoint") + 1]
assert entrypoint == "vllm", entrypoint
def host_path(arg):
    for target, source in mounts.items():
        if arg == target or arg.startswith(target + "/"):
            return source + arg[len(target):]
    return arg
args = [host_path(a) for a in argv[i + 1:]]
keep = {{k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}}
os.execve({str(VLLM)!r}, [{str(VLLM)!r}, *args], {{**keep, **env, "VLLM_TARGET_DEVICE": "cpu"}})
"""


@pytest.fixture(scope="module")
def bench_run(vllm_server, tmp_path_factory):
    """The script's run against the real server: (its CompletedProcess, the load it sent)."""
    work = tmp_path_factory.mktemp("bench")
    (work / "bin").mkdir()
    docker = work / "bin" / "docker"
    docker.write_text(DOCKER)
    docker.chmod(0o755)
    load = load_for(MAX_MODEL_LEN)
    env = {
        "PATH": f"{work / 'bin'}:{os.environ['PATH']}",
        "HOME": str(work),
        "TMPDIR": str(work),
        "VLLM_DEPLOY_PORT": str(vllm_server.port),
        "VLLM_DEPLOY_IMAGE": IMAGE,
        "VLLM_DEPLOY_SERVED_MODEL": vllm_server.served_name,
        "VLLM_DEPLOY_MODEL_DIR": str(vllm_server.model_dir),
        "VLLM_DEPLOY_BENCH_CONCURRENCY": " ".join(str(c) for c in load.concurrency_levels),
        "VLLM_DEPLOY_BENCH_INPUT_LEN": str(load.input_len),
        "VLLM_DEPLOY_BENCH_OUTPUT_LEN": str(load.output_len),
        "VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY": str(PROMPTS_PER_CONCURRENCY),
        "VLLM_DEPLOY_BENCH_SEED": str(load.seed),
        "VLLM_DEPLOY_BENCH_WARMUPS": "1",
        "VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS": "300",
        "VLLM_API_KEY": vllm_server.api_key,
    }
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
    return result, load


def test_the_script_runs_the_real_tool_and_prints_its_result_files(bench_run, vllm_server):
    result, load = bench_run
    assert result.returncode == 0, result.stderr[-4000:]
    run = json.loads(result.stdout)
    levels = [level["max_concurrency"] for level in run["results"]]
    assert levels == list(load.concurrency_levels)
    for level in run["results"]:
        assert level["num_prompts"] == PROMPTS_PER_CONCURRENCY * level["max_concurrency"]
        assert level["completed"] == level["num_prompts"] and level["failed"] == 0
        assert level["model_id"] == vllm_server.served_name
    assert vllm_server.api_key not in result.stdout + result.stderr


def test_the_stack_output_has_every_figure_from_the_real_result(bench_run):
    result, load = bench_run
    output = parse_output(result.stdout, usd_per_hour=0.526)
    assert output["dataset"] == {"name": "random", "inputLen": load.input_len,
                                 "outputLen": load.output_len, "seed": load.seed}
    for level in output["levels"]:
        missing = [key for key, value in level.items() if value is None]
        assert missing == [], f"figures parse_output could not find in the real result file: {missing}"
        assert level["outputTokensPerS"] > 0 and level["usdPerMillionOutputTokens"] > 0
        assert level["completed"] == level["prompts"]


def test_the_fixture_result_file_has_the_real_tools_keys(bench_run):
    """tests/fixtures/vllm_bench_serve/c4.json, which the quick suite's fake tool writes, has the
    keys the real tool writes (0.32's keys; 0.33 writes the same, docs/real-vllm-tier.md)."""
    result, _ = bench_run
    real = json.loads(result.stdout)["results"][0]
    fixture = json.loads(FIXTURE.read_text())
    assert sorted(set(fixture) ^ set(real)) == []
