"""Tenant mode (issue 29) in a real nginx with the njs module, in front of the fake vLLM: two
tenants' keys checked by nginx, their limits, their token counts in the logs, and a key
rotated by `nginx -s reload` while a stream runs. The fake accepts only the stack's own key,
so a 200 through it proves nginx swapped the tenant's key for that one.

Needs nginx, curl, openssl and libnginx-mod-http-js (tests.fakes.tenant_proxy.require_njs).
"""

from __future__ import annotations

import http.server
import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import openai
import pytest

from serving import tenants
from serving.tenants import TenantLimits
from tests.fakes import (
    FakeVllmProcess, RunningNginx, TestPki, make_prefix_dir, make_test_pki, require_proxy_tools,
    start_fake_vllm, worker_pids,
)
from tests.fakes.tenant_proxy import (
    reload_nginx, require_njs, start_tenant_nginx, tenant_site, write_tenant_files,
)

STACK_KEY = "stack-" + secrets.token_hex(20)
KEYS = {"team-a": "ka-" + secrets.token_hex(20), "team-b": "kb-" + secrets.token_hex(20),
        "flood": "kf-" + secrets.token_hex(20), "single": "ks-" + secrets.token_hex(20)}
LIMITS = (TenantLimits("flood", 1, 8), TenantLimits("single", None, 1), TenantLimits("team-a", None, 8),
          TenantLimits("team-b", None, 8))


@dataclass
class Env:
    pki: TestPki
    fake: FakeVllmProcess
    nginx: RunningNginx
    prefix: Path
    started: list


class _SplitUsage(http.server.BaseHTTPRequestHandler):
    """An upstream whose stream ends with a `usage` object cut across three HTTP chunks."""

    protocol_version = "HTTP/1.1"
    seen_keys: list = []

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen_keys.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        parts = [b'data: {"choices":[{"delta":{"content":"usage"}}],"usage":null}\n\n',
                 b'data: {"choices":[],"usage": {"prompt_', b'tokens": 12, "completion_tok',
                 b'ens": 345, "total_tokens": 357}}\n\n', b"data: [DONE]\n\n"]
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    require_proxy_tools()
    require_njs()
    prefix = make_prefix_dir()
    started: list = []
    try:
        pki = make_test_pki(prefix / "pki")
        fake = start_fake_vllm(api_key=STACK_KEY, chunks=4, chunk_delay_ms=10)
        started.append(fake)
        tenants_dir = prefix / "tenants"
        write_tenant_files(tenants_dir, LIMITS, {n: [k] for n, k in KEYS.items()}, STACK_KEY)
        site = tenant_site(prefix=prefix / "main", upstream_port=fake.port, pki=pki, tenants_dir=tenants_dir)
        nginx = start_tenant_nginx(site, prefix / "main")
        started.append(nginx)
        yield Env(pki, fake, nginx, prefix, started)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(prefix, ignore_errors=True)


def _client(env: Env, running: RunningNginx, key: str) -> openai.OpenAI:
    verify = ssl.create_default_context(cafile=str(env.pki.ca_cert))
    return openai.OpenAI(
        base_url=f"{running.https_url}/v1", api_key=key, max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=verify, trust_env=False, timeout=30),
    )


def _http(env: Env) -> openai.DefaultHttpxClient:
    verify = ssl.create_default_context(cafile=str(env.pki.ca_cert))
    return openai.DefaultHttpxClient(verify=verify, trust_env=False, timeout=30)


def _post(env: Env, headers: dict, body: dict | None = None, running: RunningNginx | None = None):
    running = running or env.nginx
    with _http(env) as client:
        return client.post(f"{running.https_url}/v1/chat/completions", headers=headers,
                           json=body or {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})


class _Stream(threading.Thread):
    """A streamed chat completion in a thread; `first` is set once its first bytes arrived (the
    request is in nginx and vLLM's hands), `text`, `status`, `error`, `ended` once it is over."""

    def __init__(self, env: Env, running: RunningNginx, key: str, **body) -> None:
        super().__init__(daemon=True)
        self.env, self.running, self.key = env, running, key
        self.body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "a long one"}], **body}
        self.first = threading.Event()
        self.text, self.status, self.error, self.ended = "", 0, None, 0.0
        self.began = time.monotonic()
        self.start()
        assert self.first.wait(15), "the stream did not begin"

    def run(self) -> None:
        try:
            with _http(self.env) as client, client.stream(
                    "POST", f"{self.running.https_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {self.key}"}, json=self.body) as answer:
                self.status = answer.status_code
                for chunk in answer.iter_text():
                    self.text += chunk
                    self.first.set()
        except Exception as exc:  # noqa: BLE001 - a cut stream shows as a protocol error
            self.error = type(exc).__name__
        finally:
            self.ended = time.monotonic()
            self.first.set()


def _log_lines(path: str | Path) -> list[dict]:
    time.sleep(0.2)  # nginx writes the line as the request ends
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_no_key_in_logs(running: RunningNginx) -> None:
    for text in (running.access_log(), running.error_log(), Path(running.site.usage_log_path).read_text()):
        for key in (*KEYS.values(), STACK_KEY):
            assert key not in text


# --- tests ----------------------------------------------------------------------------
def test_a_tenants_key_reaches_vllm_as_the_stacks_key_and_the_logs_name_the_tenant(env):
    answer = _client(env, env.nginx, KEYS["team-a"]).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content, "the fake answered: it saw the stack's key"
    assert answer.usage.prompt_tokens and answer.usage.completion_tokens == 4
    access = _log_lines(env.nginx.site.access_log_path)[-1]
    assert access["tenant"] == "team-a" and access["status"] == 200 and access["upstream_status"] == "200"
    assert access["prompt_tokens"] == answer.usage.prompt_tokens and access["completion_tokens"] == 4
    usage = _log_lines(env.nginx.site.usage_log_path)[-1]
    assert list(usage) == list(tenants.USAGE_LOG_FIELDS)
    assert usage["tenant"] == "team-a" and usage["completion_tokens"] == 4
    _assert_no_key_in_logs(env.nginx)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_scheme_is_read_regardless_of_case_as_vllm_reads_it(env, scheme):
    """vLLM 0.33 compares the scheme case-insensitively (serve/middleware/authenticate.py): a
    client that worked against vLLM's own check keeps working behind the tenant check."""
    answer = _post(env, {"Authorization": f"{scheme} {KEYS['team-b']}"})
    assert answer.status_code == 200, answer.text
    assert _log_lines(env.nginx.site.access_log_path)[-1]["tenant"] == "team-b"


def test_a_cors_preflight_passes_without_a_key_as_vllm_lets_it(env):
    """OPTIONS carries no credentials (a browser's CORS preflight); vLLM's own check lets it
    through, so nginx does not answer it 401 either: it reaches vLLM, which decides."""
    with _http(env) as client:
        answer = client.request("OPTIONS", f"{env.nginx.https_url}/v1/chat/completions")
    assert answer.status_code != 401
    line = _log_lines(env.nginx.site.access_log_path)[-1]
    assert line["method"] == "OPTIONS" and line["upstream_status"] != "" and line["tenant"] == ""


UNAUTHORIZED = {"missing": None, "unknown": "Bearer wrong-" + "x" * 40, "basic-scheme": f"Basic {KEYS['team-a']}",
                "the-stacks-own-key": f"Bearer {STACK_KEY}"}


@pytest.mark.parametrize("case", list(UNAUTHORIZED))  # ids without the random keys (xdist compares them)
def test_a_missing_or_unknown_key_gets_nginxs_json_401_and_never_reaches_vllm(env, case):
    authorization = UNAUTHORIZED[case]
    answer = _post(env, {"Authorization": authorization} if authorization else {})
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == 401 and error["type"] == "AuthenticationError", "nginx's, not vLLM's own body"
    line = _log_lines(env.nginx.site.access_log_path)[-1]
    assert line["status"] == 401 and line["upstream_status"] == "" and line["tenant"] == ""
    # The usage log counts it apart from every tenant (mtail's unauthenticated counter).
    usage = _log_lines(env.nginx.site.usage_log_path)[-1]
    assert usage["status"] == 401 and usage["tenant"] == ""
    # The openai client reads it as what it is.
    with pytest.raises(openai.AuthenticationError):
        _client(env, env.nginx, "sk-unknown-" + "y" * 40).models.list()


def test_health_stays_keyless_in_tenant_mode(env):
    before = len(_log_lines(env.nginx.site.usage_log_path))
    with _http(env) as client:
        assert client.get(f"{env.nginx.https_url}/health").status_code == 200
    assert len(_log_lines(env.nginx.site.usage_log_path)) == before, "a health check is not usage"


def test_a_tenant_over_its_rate_gets_429_json_while_another_is_served(env):
    first = _post(env, {"Authorization": f"Bearer {KEYS['flood']}"})
    assert first.status_code == 200
    for _ in range(3):
        over = _post(env, {"Authorization": f"Bearer {KEYS['flood']}"})
        assert over.status_code == 429
        assert over.headers["retry-after"] == "60"
        assert over.json()["error"]["type"] == "RateLimitError" and "flood" in over.json()["error"]["message"]
        assert _post(env, {"Authorization": f"Bearer {KEYS['team-b']}"}).status_code == 200


def test_a_tenant_at_its_concurrency_limit_gets_429_while_another_is_served(env):
    """`single` may have one request in flight: while its stream runs, its second call is
    refused with Retry-After, and another tenant is served."""
    stream = _Stream(env, env.nginx, KEYS["single"], fake_chunk_delay_ms=300)
    try:
        second = _post(env, {"Authorization": f"Bearer {KEYS['single']}"})
        assert second.status_code == 429 and second.headers["retry-after"] == "5"
        assert "concurrent requests for tenant single (at most 1)" in second.json()["error"]["message"]
        assert _post(env, {"Authorization": f"Bearer {KEYS['team-a']}"}).status_code == 200
    finally:
        stream.join(30)
    assert stream.status == 200 and stream.text.rstrip().endswith("[DONE]")


def test_tokens_of_a_stream_reach_both_logs(env):
    stream = _client(env, env.nginx, KEYS["team-b"]).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "count me"}], stream=True,
        stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    access = _log_lines(env.nginx.site.access_log_path)[-1]
    assert (access["tenant"], access["prompt_tokens"], access["completion_tokens"]) == (
        "team-b", usage.prompt_tokens, usage.completion_tokens)
    line = _log_lines(env.nginx.site.usage_log_path)[-1]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)


def test_an_answer_without_usage_logs_null_tokens(env):
    stream = _client(env, env.nginx, KEYS["team-a"]).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert len(list(stream)) > 1
    line = _log_lines(env.nginx.site.usage_log_path)[-1]
    assert line["tenant"] == "team-a" and line["prompt_tokens"] is None and line["completion_tokens"] is None


def test_a_usage_object_cut_across_chunks_is_still_counted(env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SplitUsage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    prefix = env.prefix / "split"
    running = None
    try:
        site = tenant_site(prefix=prefix, upstream_port=server.server_address[1], pki=env.pki,
                           tenants_dir=env.prefix / "tenants")
        running = start_tenant_nginx(site, prefix)
        answer = _post(env, {"Authorization": f"Bearer {KEYS['team-a']}"}, running=running)
        assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
        assert '"usage": {"prompt_tokens": 12, "completion_tokens": 345' in answer.text, "passed on unchanged"
        line = _log_lines(site.usage_log_path)[-1]
        assert (line["prompt_tokens"], line["completion_tokens"]) == (12, 345)
        assert _SplitUsage.seen_keys == [f"Bearer {STACK_KEY}"]
    finally:
        if running:
            running.stop()
        server.shutdown()
        server.server_close()


def test_a_key_rotated_by_reload_works_at_once_while_an_older_stream_completes(env):
    """team-a gets a new key and loses the old one; the running stream was admitted by the old
    workers, which finish it (worker_shutdown_timeout bounds how long they may)."""
    prefix = env.prefix / "rotate"
    tenants_dir = env.prefix / "tenants-rotate"
    write_tenant_files(tenants_dir, LIMITS, {n: [k] for n, k in KEYS.items()}, STACK_KEY)
    site = tenant_site(prefix=prefix, upstream_port=env.fake.port, pki=env.pki, tenants_dir=tenants_dir)
    running = start_tenant_nginx(site, prefix)
    try:
        old, new = KEYS["team-a"], "ka2-" + secrets.token_hex(20)
        stream = _Stream(env, running, old, max_tokens=8, fake_chunk_delay_ms=400)
        assert _post(env, {"Authorization": f"Bearer {new}"}, running=running).status_code == 401
        write_tenant_files(tenants_dir, LIMITS, {**{n: [k] for n, k in KEYS.items()}, "team-a": [new]}, STACK_KEY)
        reload_nginx(running)
        reloaded = time.monotonic()
        # Until the old worker has read the signal it may still accept a connection: poll
        # briefly, then the new key is served and the old one refused, every time.
        deadline = time.monotonic() + 5
        while True:
            statuses = [_post(env, {"Authorization": f"Bearer {k}"}, running=running).status_code for k in (new, old)]
            if statuses == [200, 401]:
                break
            assert time.monotonic() < deadline, f"after the reload: new key {statuses[0]}, old key {statuses[1]}"
            time.sleep(0.05)
        for _ in range(5):
            assert _post(env, {"Authorization": f"Bearer {new}"}, running=running).status_code == 200
            assert _post(env, {"Authorization": f"Bearer {old}"}, running=running).status_code == 401
        stream.join(30)
        assert stream.ended > reloaded + 1, "the stream ran on across the reload"
        assert stream.status == 200 and stream.error is None
        events = [line for line in stream.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) >= 10, "all 8 tokens, the finish and [DONE]"
        assert all(key not in running.access_log() for key in (old, new))
    finally:
        running.stop()


def test_past_worker_shutdown_timeout_an_older_stream_is_cut_and_the_old_worker_exits(env):
    """P24 (shared/reference/fleet-pitfalls.md): the bound on how long a reload's old workers
    live. A stream begun before the reload is cut that long after it (the access log says
    "complete": false) and nginx is back to its configured workers, however many reloads."""
    prefix = env.prefix / "shutdown"
    site = tenant_site(prefix=prefix, upstream_port=env.fake.port, pki=env.pki, tenants_dir=env.prefix / "tenants",
                       worker_shutdown_timeout_s=2)
    running = start_tenant_nginx(site, prefix)
    try:
        stream = _Stream(env, running, KEYS["team-b"], max_tokens=30, fake_chunk_delay_ms=300)
        reload_nginx(running)
        reloaded = time.monotonic()
        stream.join(30)
        assert "data: [DONE]" not in stream.text and stream.text.count("data: ") >= 1 and stream.error
        assert 1.5 <= stream.ended - reloaded < 6.0, "cut about 2 s after the reload, long before its 9 s"
        line = _log_lines(site.access_log_path)[-1]
        assert line["tenant"] == "team-b" and line["complete"] is False
        deadline = time.monotonic() + 5
        while len(worker_pids(running.process.pid)) != site.limits.worker_processes:
            assert time.monotonic() < deadline, "the old worker outlived worker_shutdown_timeout"
            time.sleep(0.1)
    finally:
        running.stop()
