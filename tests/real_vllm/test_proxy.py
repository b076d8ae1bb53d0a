"""The nginx config the program renders (serving.nginx.render, for the installed nginx's
version), run by a real nginx in front of the real vLLM, driven with the `openai` client over
TLS checked against a throwaway CA.

Two proxies share the server: `main` (an 8 MiB body limit, /metrics closed to loopback, at most
2 streams per client) and `limited` (one API request per minute). Each error a client meets is
JSON with OpenAI's shape, whether vLLM or nginx answered it.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterator

import openai
import pytest

from serving.proxy_limits import derive_limits
from tests.fakes import RunningNginx, TestPki, local_site, proxy_workspace, start_nginx

pytestmark = pytest.mark.real_vllm

BODY_LIMIT_MB = 8
STREAMS_PER_CLIENT = 2


@dataclass
class Proxies:
    pki: TestPki
    main: RunningNginx
    limited: RunningNginx


@pytest.fixture(scope="module")
def proxies(vllm_server) -> Iterator[Proxies]:
    with proxy_workspace() as (stack, prefix, _, pki):
        main_site = local_site(
            prefix=prefix / "main", upstream_port=vllm_server.port, pki=pki,
            metrics_allowed_cidrs=["10.0.0.0/8"], client_max_body_size_mb=BODY_LIMIT_MB,
            limits=derive_limits(vcpus=1, memory_gib=1, default_per_client=STREAMS_PER_CLIENT),
        )
        limited_site = local_site(
            prefix=prefix / "limited", upstream_port=vllm_server.port, pki=pki,
            rate_limit_per_minute=1, rate_limit_burst=0,
        )
        started = {}
        for name, site in (("main", main_site), ("limited", limited_site)):
            (prefix / name).mkdir(mode=0o755)
            started[name] = start_nginx(site, prefix / name)
            stack.callback(started[name].stop)
        yield Proxies(pki, started["main"], started["limited"])


def client(proxies: Proxies, server, *, nginx: RunningNginx | None = None, api_key: str | None = None) -> openai.OpenAI:
    verify = ssl.create_default_context(cafile=str(proxies.pki.ca_cert))
    return openai.OpenAI(
        base_url=f"{(nginx or proxies.main).https_url}/v1",
        api_key=api_key or server.api_key,
        http_client=openai.DefaultHttpxClient(verify=verify, trust_env=False, timeout=120),
        max_retries=0,
    )


def error_of(caught: pytest.ExceptionInfo) -> dict:
    """The JSON error object of an openai.APIStatusError (`{"error": {...}}`)."""
    body = caught.value.response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_a_chat_completion_through_the_proxy(proxies, vllm_server):
    with client(proxies, vllm_server) as api:
        answer = api.chat.completions.create(
            model=vllm_server.served_name, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
        )
    assert answer.model == vllm_server.served_name
    assert answer.choices[0].finish_reason in ("length", "stop") and answer.usage.completion_tokens >= 1


def running_on_the_server(server) -> int:
    """vllm:num_requests_running, read from vLLM directly (not through the proxy)."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in server.metrics().splitlines()
        if line.startswith("vllm:num_requests_running{")
    )


def test_a_stream_arrives_while_vllm_still_generates_it(proxies, vllm_server):
    """A 2,000-token stream (about 3 s of generation): its first content chunk must reach the
    client through nginx while vLLM is still generating the rest. Two witnesses, either enough:
    vLLM's own gauge at the first chunk, and the chunks' arrival spread (a buffering proxy hands
    every chunk over at once at the end, so the first comes at the end too; a streaming one spreads
    them over most of the request, however slow a busy machine makes it all). The gauge alone read
    0 on a busy machine after `vllm bench serve` had run (docs/real-vllm-tier.md, open)."""
    tries = []
    for _ in range(3):
        reasons, running_at_first_chunk, chunks, usage = [], None, 0, None
        start = first = last = time.monotonic()
        with client(proxies, vllm_server) as api:
            stream = api.chat.completions.create(
                model=vllm_server.served_name, messages=[{"role": "user", "content": "Count."}], max_tokens=2000,
                stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    chunks += 1
                    last = time.monotonic()
                    if running_at_first_chunk is None:
                        first = last
                        running_at_first_chunk = running_on_the_server(vllm_server)
                if chunk.choices and chunk.choices[0].finish_reason:
                    reasons.append(chunk.choices[0].finish_reason)
                usage = chunk.usage or usage
        assert reasons == ["length"] and usage is not None and usage.completion_tokens == 2000
        assert chunks > 10
        spread = (last - first) / max(last - start, 1e-9)
        tries.append((running_at_first_chunk, round(spread, 2)))
        if running_at_first_chunk == 1 or spread > 0.5:
            break
    running, spread = tries[-1]
    assert running == 1 or spread > 0.5, (
        f"every first chunk arrived as vLLM finished (gauge, spread of arrivals: {tries}): the proxy buffered the stream")


def test_a_wrong_key_gets_vllms_401_through_the_proxy(proxies, vllm_server):
    with client(proxies, vllm_server, api_key="sk-wrong-0000") as api, pytest.raises(openai.AuthenticationError) as caught:
        api.models.list()
    assert caught.value.status_code == 401
    assert caught.value.response.json() == {"error": "Unauthorized"}  # vLLM's own body, passed through


def test_an_unknown_model_gets_vllms_json_404(proxies, vllm_server):
    with client(proxies, vllm_server) as api, pytest.raises(openai.NotFoundError) as caught:
        api.completions.create(model="no-such-model", prompt="Hi", max_tokens=2)
    error = error_of(caught)
    assert (error["type"], error["code"]) == ("NotFoundError", 404)
    assert error["message"].startswith("The model `no-such-model` does not exist.")


def test_a_request_past_the_context_gets_vllms_json_400(proxies, vllm_server):
    with client(proxies, vllm_server) as api, pytest.raises(openai.BadRequestError) as caught:
        api.completions.create(model=vllm_server.served_name, prompt="Hi", max_tokens=4096)
    error = error_of(caught)
    assert (error["type"], error["code"]) == ("BadRequestError", 400)
    assert "2048" in error["message"]  # the server's --max-model-len, which the program set


def test_a_body_over_the_limit_gets_nginxs_json_413(proxies, vllm_server):
    with client(proxies, vllm_server) as api, pytest.raises(openai.APIStatusError) as caught:
        api.completions.create(model=vllm_server.served_name, prompt="x" * (BODY_LIMIT_MB * 2**20 + 1), max_tokens=1)
    assert caught.value.status_code == 413
    error = error_of(caught)
    assert error["code"] == 413 and f"{BODY_LIMIT_MB}" in error["message"]


def test_streams_beyond_the_per_client_limit_get_a_json_429(proxies, vllm_server):
    """Two long streams hold the client's two slots; a third request is refused by nginx."""
    holding, stop = threading.Barrier(STREAMS_PER_CLIENT + 1), threading.Event()

    def hold_a_stream():
        with client(proxies, vllm_server) as api:
            stream = api.chat.completions.create(
                model=vllm_server.served_name, messages=[{"role": "user", "content": "Go."}],
                max_tokens=1900, stream=True, extra_body={"ignore_eos": True},
            )
            first = True
            for _ in stream:
                if first:
                    holding.wait(timeout=60)
                    first = False
                if stop.is_set():
                    stream.close()
                    return

    threads = [threading.Thread(target=hold_a_stream, daemon=True) for _ in range(STREAMS_PER_CLIENT)]
    for thread in threads:
        thread.start()
    try:
        holding.wait(timeout=60)
        with client(proxies, vllm_server) as api, pytest.raises(openai.RateLimitError) as caught:
            api.models.list()
        error = error_of(caught)
        assert error["code"] == 429 and f"at most {STREAMS_PER_CLIENT} at once" in error["message"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)


def test_the_rate_limit_answers_a_json_429(proxies, vllm_server):
    with client(proxies, vllm_server, nginx=proxies.limited) as api:
        assert vllm_server.served_name in [m.id for m in api.models.list()]
        with pytest.raises(openai.RateLimitError) as caught:
            api.models.list()
    error = error_of(caught)
    assert (error["code"], error["type"]) == (429, "RateLimitError")


def test_health_is_open_and_metrics_closed_outside_the_allowed_cidrs(proxies, vllm_server):
    context = ssl.create_default_context(cafile=str(proxies.pki.ca_cert))
    with urllib.request.urlopen(f"{proxies.main.https_url}/health", context=context, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{proxies.main.https_url}/metrics", context=context, timeout=10)  # noqa: S310
    assert caught.value.code == 403
    assert json.loads(caught.value.read())["error"]["code"] == 403
