"""wait_for_vllm.sh against a real vLLM: /health, /v1/models and the first generation.

Only `docker` is a stub (no engine here): `docker inspect` says the container runs, and
`docker logs` prints the real server's log, as the container's would. A `curl` wrapper records
each command line, so the test sees that the key never reaches one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.real_vllm.server import ROOT

pytestmark = pytest.mark.real_vllm

SCRIPT = ROOT / "components" / "scripts" / "wait_for_vllm.sh"


@pytest.fixture
def host(tmp_path, vllm_server):
    return make_host(tmp_path, vllm_server)


def make_host(tmp_path: Path, server) -> Path:
    """Stub `docker` (the container runs; its log is `server`'s) and a recording `curl`."""
    real_curl = shutil.which("curl")
    assert real_curl, "curl is missing; .ci/run installs it"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    (bin_dir / "curl").write_text(f'#!/usr/bin/env bash\nprintf "curl %s\\n" "$*" >>"{calls}"\nexec {real_curl} "$@"\n')
    (bin_dir / "docker").write_text(
        "#!/usr/bin/env bash\n"
        'case "$1" in\n'
        '  inspect) echo "running 0" ;;\n'
        f'  logs) tail -n 80 "{server.log_path}" ;;\n'
        "esac\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return tmp_path


def run_script(host: Path, server, *, model=None, key=None, api=None, model_dir=None, tool_parser=None, adapters=None):
    env = {
        "PATH": f"{host / 'bin'}:{os.environ['PATH']}",
        "VLLM_DEPLOY_PORT": str(server.port),
        "VLLM_DEPLOY_CONTAINER": "vllm",
        "VLLM_DEPLOY_SERVED_MODEL": model or server.served_name,
        "VLLM_DEPLOY_TIMEOUT_SECONDS": "60",
        "VLLM_DEPLOY_POLL_SECONDS": "1",
        "VLLM_DEPLOY_MODEL_DIR": str(model_dir or server.model_dir),
        "VLLM_API_KEY": key or server.api_key,
    }
    if api is not None:
        env["VLLM_DEPLOY_GENERATION_API"] = api
    if tool_parser is not None:
        env["VLLM_DEPLOY_TOOL_CALL_PARSER"] = tool_parser
    if adapters is not None:  # loraAdapters' names, as components/vllm_server.py passes them
        env["VLLM_DEPLOY_LORA_ADAPTERS"] = adapters
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)


def curl_calls(host: Path) -> str:
    path = host / "calls.log"
    return path.read_text() if path.exists() else ""


def test_ready_through_the_chat_api_which_the_tiny_models_saved_template_selects(host, vllm_server):
    """transformers 5 saves the chat template as chat_template.jinja beside the tokenizer; the
    script finds it there and proves the template works with a real chat completion."""
    result = run_script(host, vllm_server)
    assert result.returncode == 0, result.stderr
    assert "has a chat template file" in result.stderr  # why it chose the chat API
    assert "generated through /v1/chat/completions" in result.stderr
    assert f"serves '{vllm_server.served_name}'" in result.stderr
    assert vllm_server.api_key not in result.stdout + result.stderr + curl_calls(host)


def test_ready_through_the_plain_completion_api(host, vllm_server, tmp_path):
    """A base model (no chat template in its directory) gets a plain completion."""
    base = tmp_path / "base-model"
    shutil.copytree(vllm_server.model_dir, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    result = run_script(host, vllm_server, model_dir=base)
    assert result.returncode == 0, result.stderr
    assert "completion (no chat template in" in result.stderr
    assert "generated through /v1/completions" in result.stderr


def test_a_wrong_key_is_refused_by_vllm_and_never_printed(host, vllm_server):
    result = run_script(host, vllm_server, key="sk-wrong-000000")
    assert result.returncode != 0
    assert "/v1/models refused the API key or failed" in result.stderr
    assert "401" in result.stderr  # curl --fail --show-error names the status vLLM answered
    assert "sk-wrong-000000" not in result.stdout + result.stderr + curl_calls(host)


def test_a_served_name_vllm_does_not_list_fails_with_the_real_log(host, vllm_server):
    # A prefix of the real name: the match must be the whole quoted name, not a substring.
    result = run_script(host, vllm_server, model=vllm_server.served_name.rsplit("-", 1)[0])
    assert result.returncode != 0
    assert "does not list 'tiny/Qwen2-chat'" in result.stderr
    # The container log's tail (the stub's `docker logs` is the real server's log): vLLM's own lines.
    tail = result.stderr.split("--- last 80 lines of 'docker logs vllm' ---\n", 1)[1].split("--- usual causes ---")[0]
    assert tail.strip() and all(line in vllm_server.log() for line in tail.splitlines())

