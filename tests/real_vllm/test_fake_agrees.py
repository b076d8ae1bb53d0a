"""The fake vLLM (tests/fakes/fake_vllm.py), which the quick suite's proxy, readiness and
benchmark tests run against, answers what the real one answers, for what those tests rely on:
the status codes, the error bodies, the shape of /v1/models, of a chat completion and of a chat
stream's events. The same requests go to both, each serving the same name with the same key.

Where the real server answers more than the fake (extra fields), the fake's fields must be a
subset with the same values' types; `fake_request` is the fake's own, documented extension.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.fakes import start_fake_vllm

pytestmark = pytest.mark.real_vllm

FAKE_ONLY = {"fake_request"}


@pytest.fixture(scope="module")
def fake(vllm_server):
    server = start_fake_vllm(api_key=vllm_server.api_key, model=vllm_server.served_name)
    yield server
    server.stop()


def call(base_url: str, path: str, key: str | None, body: dict | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            return answer.status, answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def both(vllm_server, fake, path: str, *, key: str | None = "", body: dict | None = None):
    key = vllm_server.api_key if key == "" else key
    return call(vllm_server.base_url, path, key, body), call(fake.base_url, path, key, body)


def shape(value: Any) -> Any:
    """A JSON value's structure: dict keys (and their shapes), list element shapes, type names."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in FAKE_ONLY}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def assert_subset(fake: Any, real: Any, where: str = "") -> None:
    """Every field of the fake's answer is in the real one, with a value of the same type
    (None in the fake stands for any value the real server may give)."""
    if isinstance(fake, dict):
        assert isinstance(real, dict), where
        for key, value in fake.items():
            assert key in real, f"{where}.{key}: the real server has no such field (it has {sorted(real)})"
            assert_subset(value, real[key], f"{where}.{key}")
    elif isinstance(fake, list):
        assert isinstance(real, list) and bool(fake) == bool(real), where
        if fake:
            assert_subset(fake[0], real[0], f"{where}[0]")
    elif fake != "NoneType":
        assert fake == real, f"{where}: the fake gives a {fake}, the real server a {real}"


def test_health(vllm_server, fake):
    real, faked = both(vllm_server, fake, "/health", key=None)
    assert (faked[0], faked[2]) == (real[0], real[2]) == (200, b"")


def test_a_wrong_key(vllm_server, fake):
    real, faked = both(vllm_server, fake, "/v1/models", key="sk-wrong")
    assert real[0] == faked[0] == 401
    assert json.loads(faked[2]) == json.loads(real[2])


def test_a_path_vllm_does_not_serve(vllm_server, fake):
    real, faked = both(vllm_server, fake, "/no-such-path", key=None)
    assert real[0] == faked[0] == 404
    assert json.loads(faked[2]) == json.loads(real[2])


def test_an_unknown_model(vllm_server, fake):
    request = {"model": "no-such-model", "prompt": "Hi", "max_tokens": 2}
    real, faked = both(vllm_server, fake, "/v1/completions", body=request)
    assert real[0] == faked[0] == 404
    assert json.loads(faked[2]) == json.loads(real[2])


def test_the_model_list(vllm_server, fake):
    real, faked = both(vllm_server, fake, "/v1/models")
    assert real[0] == faked[0] == 200
    real_body, fake_body = json.loads(real[2]), json.loads(faked[2])
    assert [m["id"] for m in fake_body["data"]] == [m["id"] for m in real_body["data"]] == [vllm_server.served_name]
    assert_subset(shape(fake_body), shape(real_body), "models")


@pytest.mark.parametrize("path, request_body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/completions", {"prompt": "Hello, my name is"}),
], ids=["chat", "completion"])
def test_a_generation(vllm_server, fake, path, request_body):
    request = {"model": vllm_server.served_name, "max_tokens": 4, **request_body}
    real, faked = both(vllm_server, fake, path, body=request)
    assert real[0] == faked[0] == 200
    assert real[1].split(";")[0] == faked[1].split(";")[0] == "application/json"
    assert_subset(shape(json.loads(faked[2])), shape(json.loads(real[2])), path)


def events(raw: bytes) -> list[Any]:
    """The `data:` payloads of a server-sent event stream ("[DONE]" kept as a string)."""
    found = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: "):]
            found.append(payload if payload == "[DONE]" else json.loads(payload))
    return found


def test_a_chat_stream(vllm_server, fake):
    request = {"model": vllm_server.served_name, "max_tokens": 4, "stream": True,
               "stream_options": {"include_usage": True},
               "messages": [{"role": "user", "content": "Hi"}]}
    real, faked = both(vllm_server, fake, "/v1/chat/completions", body=request)
    assert real[0] == faked[0] == 200
    assert real[1].split(";")[0] == faked[1].split(";")[0] == "text/event-stream"
    real_events, fake_events = events(real[2]), events(faked[2])
    assert real_events[-1] == fake_events[-1] == "[DONE]"
    # The opening event: the assistant's role, no content yet.
    assert fake_events[0]["choices"][0]["delta"] == real_events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # The usage event: no choices, then [DONE].
    assert real_events[-2]["choices"] == fake_events[-2]["choices"] == []
    assert_subset(shape(fake_events[-2]), shape(real_events[-2]), "usage event")
    # A content event and the one that ends the choice.
    assert_subset(shape(fake_events[1]), shape(real_events[1]), "content event")
    real_finish = [e for e in real_events[:-2] if e["choices"][0]["finish_reason"]]
    fake_finish = [e for e in fake_events[:-2] if e["choices"][0]["finish_reason"]]
    assert len(real_finish) == len(fake_finish) == 1
    assert_subset(shape(fake_finish[0]), shape(real_finish[0]), "finish event")
