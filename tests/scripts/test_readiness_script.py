"""wait_for_vllm.sh, run for real with the real curl against the fake vLLM server.

Readiness ends with one short generation: a chat completion when the model directory has a chat
template, else a plain completion (tests/fakes/fake_vllm.py answers both, and fails them on
request with vLLM's error bodies).

Only `docker` is a stub (there is no engine here); a `curl` wrapper first on PATH records
its argv and then runs the real curl, so the tests see whether the key ever reaches a
command line.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes import free_port, start_fake_vllm

SCRIPT = Path(__file__).resolve().parents[2] / "components" / "scripts" / "wait_for_vllm.sh"
KEY = "sk-readiness-5f4e3d2c1b0a"
MODEL = "served-test-model"


@pytest.fixture(scope="module")
def fake_server():
    server = start_fake_vllm(api_key=KEY, model=MODEL)
    yield server
    server.stop()


@pytest.fixture
def host(tmp_path):
    real_curl = shutil.which("curl")
    if real_curl is None:
        if os.environ.get("CI"):
            pytest.fail("curl is missing; .ci/run installs it")
        pytest.skip("curl is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    (bin_dir / "curl").write_text(
        f'#!/usr/bin/env bash\nprintf "curl %s\\n" "$*" >>"{calls}"\nexec {real_curl} "$@"\n'
    )
    (bin_dir / "docker").write_text(
        "#!/usr/bin/env bash\n"
        f'printf "docker %s\\n" "$*" >>"{calls}"\n'
        'case "$1" in\n'
        f'  inspect) cat "{tmp_path}/container_state" 2>/dev/null || exit 1 ;;\n'
        f'  logs) cat "{tmp_path}/container_log" 2>/dev/null ||\n'
        '        echo "torch.OutOfMemoryError: CUDA out of memory (stub log line)" ;;\n'
        "esac\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (tmp_path / "container_state").write_text("running 0\n")
    return tmp_path


def run_script(host, port, *, model=MODEL, key=KEY, timeout=20, model_dir=None, api=None, tool_parser=None, adapters=None):
    env = {
        "PATH": f"{host / 'bin'}:{os.environ['PATH']}",
        "VLLM_DEPLOY_PORT": str(port),
        "VLLM_DEPLOY_CONTAINER": "vllm",
        "VLLM_DEPLOY_SERVED_MODEL": model,
        "VLLM_DEPLOY_TIMEOUT_SECONDS": "3",
        "VLLM_DEPLOY_POLL_SECONDS": "1",
        "VLLM_API_KEY": key,
    }
    if model_dir is not None:
        env["VLLM_DEPLOY_MODEL_DIR"] = str(model_dir)
    if api is not None:
        env["VLLM_DEPLOY_GENERATION_API"] = api
    if tool_parser is not None:
        env["VLLM_DEPLOY_TOOL_CALL_PARSER"] = tool_parser
    if adapters is not None:
        env["VLLM_DEPLOY_LORA_ADAPTERS"] = adapters
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout)


def calls(host) -> str:
    path = host / "calls.log"
    return path.read_text() if path.exists() else ""


def test_ready_when_health_answers_and_the_model_is_listed(host, fake_server):
    result = run_script(host, fake_server.port)
    assert result.returncode == 0, result.stderr
    assert f"serves '{MODEL}'" in result.stderr
    assert KEY not in result.stdout + result.stderr
    assert KEY not in calls(host), "the API key must never be on a command line"
    assert "/v1/models" in calls(host)


def test_wrong_model_fails_with_the_container_log_and_the_usual_causes(host, fake_server):
    result = run_script(host, fake_server.port, model="some-other-model")
    assert result.returncode != 0
    assert "does not list 'some-other-model'" in result.stderr
    assert "CUDA out of memory (stub log line)" in result.stderr
    assert "maxModelLen" in result.stderr and "gpuMemoryUtilization" in result.stderr


def test_wrong_key_is_reported_without_printing_it(host, fake_server):
    result = run_script(host, fake_server.port, key="sk-wrong-0000")
    assert result.returncode != 0
    assert "refused the API key" in result.stderr
    assert "sk-wrong-0000" not in result.stdout + result.stderr


def test_a_crashed_container_fails_fast_instead_of_waiting(host):
    (host / "container_state").write_text("exited 0\n")
    result = run_script(host, free_port())
    assert result.returncode != 0
    assert "container is exited" in result.stderr
    assert "docker logs --tail 80 vllm" in calls(host)


def test_a_container_in_a_restart_loop_fails_fast(host):
    (host / "container_state").write_text("running 5\n")  # restart: always keeps it "running"
    result = run_script(host, free_port())
    assert result.returncode != 0
    assert "after 5 restarts" in result.stderr and "no 200 from /health" not in result.stderr


def test_a_cluster_whose_node_never_joined_fails_fast_naming_the_node(host):
    """Across nodes the container's entrypoint gives up when a node never joins Ray and Docker
    restarts it ("running"): readiness must not wait out its timeout, and must show which node."""
    (host / "container_state").write_text("running 1\n")
    (host / "container_log").write_text(
        "[vllm-deploy] wait_for_ray_gpus: ERROR: after 600s Ray reports 8 of 16 GPU; not joined:\n"
        "  - node-1 (172.31.5.10): 0 of 8 GPU\n"
        "[vllm-deploy] serve_on_ray_head: ERROR: not every node joined the Ray cluster (above: the "
        "nodes missing); vllm serve was not started\n")
    result = run_script(host, free_port(), timeout=60)
    assert result.returncode != 0
    assert "not every node joined" in result.stderr and "node-1 (172.31.5.10)" in result.stderr
    assert "no 200 from /health" not in result.stderr


def test_gives_up_after_the_timeout_when_health_never_answers(host):
    result = run_script(host, free_port())
    assert result.returncode != 0
    assert "no 200 from /health within 3s" in result.stderr
    assert "readinessTimeoutMinutes" in result.stderr


def test_a_key_with_quotes_and_backslashes_still_authenticates(host):
    tricky = 'sk-"quoted"\\back\\slash'
    server = start_fake_vllm(api_key=tricky, model="org/model.v1.5")
    try:
        result = run_script(host, server.port, key=tricky, model="org/model.v1.5")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert tricky not in calls(host)


# --- the first generation --------------------------------------------------------------

CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def model_dir(host, name, files):
    """A downloaded model directory holding `files` ({name: text})."""
    directory = host / name
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "qwen2"}')
    for file, text in files.items():
        (directory / file).write_text(text)
    return directory


def generation_paths(host) -> list[str]:
    return [p for p in ("/v1/chat/completions", "/v1/completions")
            for line in calls(host).splitlines() if line.startswith("curl") and line.endswith(p)]


@pytest.mark.parametrize(
    ("files", "path"),
    [
        ({"tokenizer_config.json": json.dumps({"chat_template": CHATML})}, "/v1/chat/completions"),
        ({"tokenizer_config.json": "{}", "chat_template.jinja": CHATML}, "/v1/chat/completions"),
        ({"tokenizer_config.json": json.dumps({"chat_template": None})}, "/v1/completions"),
        ({"tokenizer_config.json": "{}"}, "/v1/completions"),
        ({"consolidated.safetensors": "", "tekken.json": "{}"}, "/v1/chat/completions"),
    ],
    ids=["tokenizer-config", "jinja-file", "null-template", "base-model", "mistral-common"],
)
def test_the_generation_uses_the_chat_api_only_when_the_model_has_a_chat_template(host, fake_server, files, path):
    directory = model_dir(host, "model", files)
    result = run_script(host, fake_server.port, model_dir=directory)
    assert result.returncode == 0, result.stderr
    assert generation_paths(host) == [path]
    assert f"generated through {path}" in result.stderr
    assert KEY not in calls(host), "the API key must never be on a command line"


def test_a_base_model_without_a_chat_template_is_ready_through_completions(host):
    server = start_fake_vllm(api_key=KEY, model=MODEL, chat_template=False)
    try:
        result = run_script(host, server.port, model_dir=model_dir(host, "base", {"tokenizer_config.json": "{}"}))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert generation_paths(host) == ["/v1/completions"]


def test_a_chat_request_refused_for_a_missing_template_shows_vllms_answer_and_the_fix(host):
    server = start_fake_vllm(api_key=KEY, model=MODEL, chat_template=False)
    try:
        result = run_script(host, server.port, api="chat")  # as with --chat-template in vllmExtraArgs
    finally:
        server.stop()
    assert result.returncode != 0
    assert "the first generation through /v1/chat/completions failed (HTTP 400)" in result.stderr
    assert "default chat template is no longer allowed" in result.stderr, "the response body"
    assert "--chat-template" in result.stderr, "the fix"


@pytest.mark.parametrize(("status", "kind", "files"), [
    (400, "BadRequestError", {"tokenizer_config.json": json.dumps({"chat_template": CHATML})}),
    (500, "InternalServerError", {"tokenizer_config.json": "{}"}),
])
def test_a_failed_generation_shows_the_body_and_the_container_log(host, status, kind, files):
    server = start_fake_vllm(api_key=KEY, model=MODEL, fail_generation=status)
    try:
        result = run_script(host, server.port, model_dir=model_dir(host, "model", files))
    finally:
        server.stop()
    assert result.returncode != 0
    assert f"failed (HTTP {status})" in result.stderr
    assert f"generation failed with {status} (as asked)" in result.stderr and kind in result.stderr
    assert "CUDA out of memory (stub log line)" in result.stderr, "the container's log tail"
    assert KEY not in result.stdout + result.stderr + calls(host)


# --- tool calling: one tool call when toolCalling is on -------------------------------------


@pytest.fixture
def tool_server(request):
    server = start_fake_vllm(api_key=KEY, model=MODEL, tool_calls=request.param)
    yield server
    server.stop()


# --- LoRA adapters (loraAdapters): listed, and one generation through the first --------------


@pytest.fixture(scope="module")
def lora_server():
    server = start_fake_vllm(api_key=KEY, model=MODEL, lora_modules=["sql=/models/adapters/sql", "chat=/models/adapters/chat"])
    yield server
    server.stop()


@pytest.mark.parametrize("tool_server", ["parse"], indirect=True)
def test_with_tool_calling_on_readiness_makes_one_tool_call(host, tool_server):
    result = run_script(host, tool_server.port, tool_parser="hermes")
    assert result.returncode == 0, result.stderr
    assert "tool call through --tool-call-parser hermes: called get_weather" in result.stderr
    assert KEY not in calls(host)


@pytest.mark.parametrize("tool_server", ["off"], indirect=True)
def test_without_tool_calling_readiness_makes_no_tool_call(host, tool_server):
    """The fake answers tools with vLLM's 400, as a server without auto tool choice does."""
    assert run_script(host, tool_server.port).returncode == 0


@pytest.mark.parametrize("tool_server, expected", [
    ("off", "(HTTP 400)"),
    ("unparsed", "the parser left it in content"),
    ("bad-arguments", "arguments that are not JSON"),
], indirect=["tool_server"])
def test_a_failing_tool_call_fails_the_deploy_with_a_clear_message(host, tool_server, expected):
    result = run_script(host, tool_server.port, tool_parser="hermes")
    assert result.returncode != 0
    assert "vLLM did not become ready: the tool call through /v1/chat/completions" in result.stderr
    assert expected in result.stderr
    if expected == "(HTTP 400)":  # vLLM's own words come with it
        assert "tool choice requires --enable-auto-tool-choice" in result.stderr
    assert "set toolCallParser to the model's" in result.stderr
    assert KEY not in result.stdout + result.stderr
def test_every_adapter_listed_and_one_generation_through_an_adapter_is_ready(host, lora_server):
    result = run_script(host, lora_server.port, adapters="sql chat")
    assert result.returncode == 0, result.stderr
    assert "generating 8 tokens through LoRA adapter 'sql'" in result.stderr


def test_an_adapter_vllm_does_not_list_fails_the_deploy_naming_it(host, lora_server):
    result = run_script(host, lora_server.port, adapters="sql summarize")
    assert result.returncode != 0
    assert "/v1/models does not list the LoRA adapter 'summarize' (loraAdapters)" in result.stderr
    assert "No adapter found" in result.stderr  # where to look in the container log
    assert KEY not in result.stderr + result.stdout


def test_a_failing_generation_through_an_adapter_fails_the_deploy(host):
    server = start_fake_vllm(api_key=KEY, model=MODEL, lora_modules=["sql=/models/adapters/sql"], fail_lora_generation=500)
    try:
        result = run_script(host, server.port, adapters="sql")
    finally:
        server.stop()
    assert result.returncode != 0
    assert "the generation through LoRA adapter 'sql' failed (HTTP 500)" in result.stderr
    assert "generation through adapter failed with 500" in result.stderr  # vLLM's body is shown
