"""benchmark_vllm.sh, run for real with a `docker` stub that stands in for `vllm bench serve`.

The stub answers the way the tool does: it reads the flags the script passes (the result
directory mounted as /results, --result-filename, --max-concurrency, --num-prompts, the
lengths), prints a report on its stdout, and writes a result file of vLLM 0.33's shape
(tests/fakes/bench.py, from tests/fixtures/vllm_bench_serve/). It records its argv, and whether
the API key reached it through the environment, never the key itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.benchmark import parse_output

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "components" / "scripts" / "benchmark_vllm.sh"
KEY = "sk-bench-7e6d5c4b3a29"
IMAGE = "vllm/vllm-openai:v0.33.0"

STUB = f"""#!{sys.executable}
import json, os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.fakes.bench import result_file

state = os.environ["STUB_STATE"]
argv = sys.argv[1:]
with open(os.path.join(state, "calls.log"), "a") as log:
    log.write("docker " + " ".join(argv) + "\\n")
if argv[:1] == ["rm"]:
    sys.exit(0)
assert argv[0] == "run", argv
if "OPENAI_API_KEY" in argv and os.environ.get("OPENAI_API_KEY") == {KEY!r}:
    open(os.path.join(state, "key_by_env"), "a").write("ok\\n")
flag = lambda name: argv[argv.index(name) + 1]
mounts = dict(reversed(flag_value.split(":")[:2]) for i, flag_value in enumerate(argv) if argv[i - 1] == "-v")
mode = os.environ.get("FAKE_BENCH", "ok")
print("============ Serving Benchmark Result ============")  # the tool's report, on stdout
if mode == "fail":
    print("aiohttp.client_exceptions.ClientConnectorError: Cannot connect to host 127.0.0.1:8000", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    time.sleep(30)
if mode != "no-file":
    concurrency, prompts = int(flag("--max-concurrency")), int(flag("--num-prompts"))
    result = result_file(concurrency, prompts, input_len=int(flag("--random-input-len")),
                         output_len=int(flag("--random-output-len")))
    with open(os.path.join(mounts["/results"], flag("--result-filename")), "w") as out:
        json.dump(result, out)
"""


@pytest.fixture
def host(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(STUB)
    docker.chmod(0o755)
    (tmp_path / "state").mkdir()
    model = tmp_path / "models" / "Qwen--Qwen2.5-1.5B-Instruct"
    model.mkdir(parents=True)
    return tmp_path


def run_script(host, *, levels="1 4 16", mode="ok", extra_env=None, timeout=30):
    env = {
        "PATH": f"{host / 'bin'}:{os.environ['PATH']}",
        "STUB_STATE": str(host / "state"),
        "FAKE_BENCH": mode,
        "VLLM_DEPLOY_PORT": "8000",
        "VLLM_DEPLOY_IMAGE": IMAGE,
        "VLLM_DEPLOY_SERVED_MODEL": "Qwen/Qwen2.5-1.5B-Instruct",
        "VLLM_DEPLOY_MODEL_DIR": str(host / "models" / "Qwen--Qwen2.5-1.5B-Instruct"),
        "VLLM_DEPLOY_BENCH_CONCURRENCY": levels,
        "VLLM_DEPLOY_BENCH_INPUT_LEN": "512",
        "VLLM_DEPLOY_BENCH_OUTPUT_LEN": "128",
        "VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY": "8",
        "VLLM_DEPLOY_BENCH_SEED": "0",
        "VLLM_API_KEY": KEY,
        **(extra_env or {}),
    }
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout)


def calls(host) -> list[str]:
    path = host / "state" / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def bench_runs(host) -> list[str]:
    return [c for c in calls(host) if c.startswith("docker run")]


def test_each_level_runs_vllm_bench_serve_in_the_pinned_image_against_loopback(host):
    result = run_script(host)
    assert result.returncode == 0, result.stderr
    runs = bench_runs(host)
    assert len(runs) == 3
    for concurrency, run in zip((1, 4, 16), runs):
        argv = run.split()
        assert argv[argv.index("--entrypoint") + 1] == "vllm" and IMAGE in argv
        assert argv[argv.index(IMAGE) + 1: argv.index(IMAGE) + 3] == ["bench", "serve"]
        assert "--network" in argv and argv[argv.index("--network") + 1] == "host"
        assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "8000"
        assert argv[argv.index("--max-concurrency") + 1] == str(concurrency)
        assert argv[argv.index("--num-prompts") + 1] == str(8 * concurrency)
        assert argv[argv.index("--dataset-name") + 1] == "random" and argv[argv.index("--seed") + 1] == "0"
        assert argv[argv.index("--random-range-ratio") + 1] == "0", "fixed lengths: the same prompts every run"
        assert argv[argv.index("--tokenizer") + 1] == "/models/served"
    assert (host / "state" / "key_by_env").read_text().count("ok") == 3, "the key reaches the tool by environment"
    assert KEY not in "\n".join(calls(host)) + result.stdout + result.stderr, "never on a command line, never printed"


def test_stdout_is_the_combined_result_and_the_tool_report_goes_to_stderr(host):
    result = run_script(host, levels="1 4")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert [r["max_concurrency"] for r in printed["results"]] == [1, 4]
    assert printed["image"] == IMAGE and printed["inputLen"] == 512 and printed["outputLen"] == 128
    assert "Serving Benchmark Result" in result.stderr
    output = parse_output(result.stdout, usd_per_hour=0.526)
    assert [level["maxConcurrency"] for level in output["levels"]] == [1, 4]
    assert output["levels"][1]["prompts"] == 32


def test_a_failing_tool_fails_the_step_with_its_output_and_what_to_do(host):
    result = run_script(host, mode="fail")
    assert result.returncode != 0
    assert "vllm bench serve failed at --max-concurrency 1" in result.stderr
    assert "Cannot connect to host 127.0.0.1:8000" in result.stderr, "the tool's own error"
    assert "benchmarkOnDeploy" in result.stderr
    assert result.stdout == ""
    assert any(c.startswith("docker rm --force vllm-bench") for c in calls(host)[1:]), "no container left behind"


def test_a_level_that_wrote_no_result_file_fails(host):
    result = run_script(host, mode="no-file")
    assert result.returncode != 0 and "wrote no result file" in result.stderr


def test_a_stuck_level_is_stopped_at_its_timeout(host):
    result = run_script(host, mode="hang", extra_env={"VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS": "1"})
    assert result.returncode != 0 and "a run past 1s is stopped" in result.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("VLLM_DEPLOY_BENCH_CONCURRENCY", "1,4"), ("VLLM_DEPLOY_BENCH_INPUT_LEN", "512 tokens"),
])
def test_bad_parameters_are_refused_before_any_load(host, name, value):
    result = run_script(host, extra_env={name: value})
    assert result.returncode != 0 and f"{name} must be" in result.stderr and value in result.stderr
    assert bench_runs(host) == []


def test_what_the_program_sends_runs_the_script(program, host):
    """The recorded step environment, fed to the real script (only the model directory moved)."""
    from tests.harness import reveal

    recorded = program({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192})
    step = recorded.named("vllm-benchmark-run")
    env = {k: str(v) for k, v in reveal(step.inputs["environment"]).items()}
    env["VLLM_DEPLOY_MODEL_DIR"] = str(host / "models" / "Qwen--Qwen2.5-1.5B-Instruct")
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30,
        env={**env, "PATH": f"{host / 'bin'}:{os.environ['PATH']}", "STUB_STATE": str(host / "state")},
    )
    assert result.returncode == 0, result.stderr
    output = parse_output(result.stdout, recorded.exports["hourlyPriceUsd"].value)
    assert [lvl["maxConcurrency"] for lvl in output["levels"]] == [1, 4, 16]
    assert output["dataset"]["inputLen"] == int(env["VLLM_DEPLOY_BENCH_INPUT_LEN"])
    assert all(f"{env['VLLM_DEPLOY_IMAGE']} bench serve" in run for run in bench_runs(host))
