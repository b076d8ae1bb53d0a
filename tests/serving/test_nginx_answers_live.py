"""What the rendered nginx.conf answers and records, in a real nginx: nginx's own errors in
JSON, the access log's account of who ended each exchange, the headers vLLM receives, HTTP/2.

`main` fronts the threaded fake vLLM with short timeouts (2 s for vLLM's answer and for a
request body), a 1 MiB body limit and /metrics closed to loopback; `down` points at a port
nothing listens on.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import openai
import pytest

from serving.proxy_policy import CLEARED_HEADERS
from tests.fakes import (
    FakeVllmProcess,
    RunningNginx,
    TestPki,
    free_port,
    local_site,
    proxy_workspace,
    start_fake_vllm,
    start_nginx,
)
from tests.fakes.clients import Response, access_log_entry, connect, exchange, read_head, request_bytes, tls_context

TIMEOUT_S = 2
ACME_TOKEN = "token-" + secrets.token_hex(8)


@dataclass
class Env:
    api_key: str
    pki: TestPki
    fake: FakeVllmProcess
    main: RunningNginx
    down: RunningNginx

    def https(self, raw: bytes, nginx: RunningNginx | None = None, **kwargs) -> Response:
        site = (nginx or self.main).site
        return exchange(site.listen_address, site.https_port, raw, tls=tls_context(self.pki.ca_cert), **kwargs)

    def http(self, raw: bytes) -> Response:
        return exchange(self.main.site.listen_address, self.main.site.http_port, raw)

    def request(self, method: str, path: str, agent: str = "", body: dict | None = None, **headers: str) -> bytes:
        data = json.dumps(body).encode() if body is not None else b""
        base = {"Host": "127.0.0.1", "Authorization": f"Bearer {self.api_key}", "User-Agent": agent or "test",
                **({"Content-Type": "application/json"} if body is not None else {})}
        return request_bytes(method, path, {**base, **headers}, data)

    def chat(self, agent: str, **body) -> bytes:
        return self.request("POST", "/v1/chat/completions", agent,
                            {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **body})

    def logged(self, agent: str, nginx: RunningNginx | None = None) -> dict:
        return access_log_entry((nginx or self.main).access_log, lambda e: e["user_agent"] == agent)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with proxy_workspace() as (stack, prefix, api_key, pki):
        acme = prefix / "acme" / ".well-known" / "acme-challenge"
        acme.mkdir(parents=True)
        (acme / ACME_TOKEN).write_text("proof")
        for path in (acme / ACME_TOKEN, acme, acme.parent, acme.parent.parent):
            path.chmod(0o755)
        fake = start_fake_vllm(api_key=api_key)
        stack.callback(fake.stop)
        sites = {}
        for name, upstream in (("main", fake.port), ("down", free_port())):
            (prefix / name).mkdir(mode=0o755)
            sites[name] = local_site(
                prefix=prefix / name, upstream_port=upstream, pki=pki, acme_webroot=str(prefix / "acme"),
                upstream_read_timeout_s=TIMEOUT_S, client_body_timeout_s=TIMEOUT_S, client_max_body_size_mb=1,
                metrics_allowed_cidrs=["10.0.0.0/8"],
            )
        main = start_nginx(sites["main"], prefix / "main")
        stack.callback(main.stop)
        down = start_nginx(sites["down"], prefix / "down")
        stack.callback(down.stop)
        yield Env(api_key, pki, fake, main, down)


# --- nginx's own errors: JSON in vLLM's shape ---------------------------------------------------
ERROR_CASES: dict[str, tuple[int, Callable[[Env], Response]]] = {
    "malformed request line": (400, lambda e: e.https(b"GARBAGE\r\n\r\n")),
    "metrics from outside its networks": (403, lambda e: e.https(e.request("GET", "/metrics"))),
    "a path vLLM serves but the proxy does not": (404, lambda e: e.https(e.request("POST", "/tokenize"))),
    "a method a file does not take": (405, lambda e: e.http(
        e.request("POST", f"/.well-known/acme-challenge/{ACME_TOKEN}", body={}))),
    "a body over the limit": (413, lambda e: e.https(e.request(
        "POST", "/v1/chat/completions", **{"Content-Type": "application/json", "Content-Length": str(2 * 2**20)}))),
    "a URI over the limit": (414, lambda e: e.https(e.request("GET", "/v1/models?q=" + "a" * 20000))),
    "a header over the limit": (400, lambda e: e.https(e.request("GET", "/v1/models", **{"X-Big": "a" * 20000}))),
    "plain HTTP sent to the TLS port": (400, lambda e: exchange(
        e.main.site.listen_address, e.main.site.https_port, e.request("GET", "/v1/models"))),
    "an unknown transfer encoding": (501, lambda e: e.https(e.request(
        "POST", "/v1/chat/completions", **{"Transfer-Encoding": "gzip"}))),
    "vLLM not listening": (502, lambda e: e.https(e.request("GET", "/v1/models"), nginx=e.down)),
    "vLLM silent past the read timeout": (504, lambda e: e.https(e.chat("silent", fake_header_delay_ms=4000))),
    "an HTTP version nginx does not speak": (505, lambda e: e.https(b"GET /v1/models HTTP/2.0\r\nHost: x\r\n\r\n")),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_every_error_nginx_produces_is_json_in_vllms_shape(env, case):
    status, trigger = ERROR_CASES[case]
    response = trigger(env)
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert error["message"] and error["type"].endswith("Error")
    if "TLS" not in case and case != "a method a file does not take":
        assert "strict-transport-security" in response.headers, "errors over TLS keep HSTS"


def test_errors_reach_the_openai_client_as_its_own_exceptions(env):
    site = env.main.site
    with openai.OpenAI(base_url=f"https://{site.listen_address}:{site.https_port}/v1", api_key=env.api_key,
                       max_retries=0, http_client=openai.DefaultHttpxClient(
                           verify=ssl.create_default_context(cafile=str(env.pki.ca_cert)), trust_env=False,
                           timeout=30)) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x" * 2**21}])
    assert caught.value.status_code == 413 and "1 MiB" in caught.value.message


# --- the access log: who ended each exchange ---------------------------------------------------
def _stream_then(env: Env, agent: str, after_events: int, **body) -> bytes:
    """Starts a stream, reads `after_events` content events, then closes the connection."""
    site = env.main.site
    with connect(site.listen_address, site.https_port, tls=tls_context(env.pki.ca_cert)) as sock:
        sock.sendall(env.chat(agent, stream=True, **body))
        _, _, data = read_head(sock)
        while data.count(b'"content": "tok') < after_events:
            data += sock.recv(65536)
    return data


def _read_to_end(env: Env, agent: str, **body) -> bytes:
    site = env.main.site
    with connect(site.listen_address, site.https_port, tls=tls_context(env.pki.ca_cert)) as sock:
        sock.sendall(env.chat(agent, stream=True, **body))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if data.endswith(b"\r\n\r\n") and b"\r\n0\r\n" in data[-200:]:
                break
    return data


def test_a_finished_stream_is_logged_complete_and_ended_by_vllm(env):
    data = _read_to_end(env, "finished", max_tokens=3)
    assert b"data: [DONE]" in data
    entry = env.logged("finished")
    assert (entry["status"], entry["upstream_status"], entry["ended_by"], entry["complete"]) == (200, "200", "upstream", True)
    assert entry["upstream_bytes"] and entry["request_time"] >= 0 and entry["response_bytes"] > 0


def test_a_client_leaving_mid_stream_is_logged_as_the_client_ending_it(env):
    _stream_then(env, "leaver", after_events=2, max_tokens=50, fake_chunk_delay_ms=100)
    entry = env.logged("leaver")
    assert (entry["status"], entry["ended_by"], entry["complete"]) == (200, "client", False)


def test_vllm_dying_mid_stream_is_logged_incomplete_and_ended_by_vllm(env):
    """The client sees the cut too: the chunked body never ends."""
    data = _read_to_end(env, "crash", max_tokens=10, fake_abort_after=3)
    assert b"data: [DONE]" not in data and not data.endswith(b"0\r\n\r\n")
    entry = env.logged("crash")
    assert (entry["status"], entry["ended_by"], entry["complete"]) == (200, "upstream", False)


def test_vllm_going_silent_mid_stream_is_cut_after_the_read_timeout(env):
    _read_to_end(env, "silent-mid", max_tokens=5, fake_pause_after=2, fake_pause_ms=(TIMEOUT_S + 2) * 1000)
    entry = env.logged("silent-mid")
    assert (entry["ended_by"], entry["complete"]) == ("upstream", False)
    assert TIMEOUT_S <= entry["request_time"] < TIMEOUT_S + 2


def test_a_client_leaving_before_the_answer_is_logged_499(env):
    site = env.main.site
    with connect(site.listen_address, site.https_port, tls=tls_context(env.pki.ca_cert)) as sock:
        sock.sendall(env.chat("impatient", fake_header_delay_ms=1500))
        time.sleep(0.3)
    entry = env.logged("impatient")
    assert (entry["status"], entry["ended_by"], entry["complete"]) == (499, "client", False)


def test_a_client_too_slow_to_send_its_body_is_logged_408(env):
    site = env.main.site
    head = env.request("POST", "/v1/chat/completions", "slow-body",
                       **{"Content-Type": "application/json", "Content-Length": "100"})
    with connect(site.listen_address, site.https_port, tls=tls_context(env.pki.ca_cert)) as sock:
        sock.sendall(head + b'{"model"')
        sock.settimeout(TIMEOUT_S + 5)
        try:
            while sock.recv(65536):
                pass
        except (ConnectionError, OSError):
            pass
    entry = env.logged("slow-body")
    assert (entry["status"], entry["ended_by"], entry["complete"]) == (408, "client", False)


def test_refusals_and_failures_before_an_answer_are_logged_by_who_caused_them(env):
    env.https(env.request("GET", "/nope", "refused"))
    env.https(env.request("GET", "/v1/models", "unreachable"), nginx=env.down)
    refused, unreachable = env.logged("refused"), env.logged("unreachable", env.down)
    assert (refused["status"], refused["upstream_status"], refused["ended_by"]) == (404, "", "proxy")
    assert (unreachable["status"], unreachable["ended_by"]) == (502, "upstream")


# --- headers vLLM receives -----------------------------------------------------------------------
# Written out here, not taken from the list the proxy clears, so a name dropped there fails here.
CLIENT_ADDRESS_HEADERS = ("Client-IP", "True-Client-IP", "X-Client-IP", "X-Cluster-Client-IP", "CF-Connecting-IP",
                          "Fastly-Client-IP", "X-Original-Forwarded-For", "X-Forwarded-Server", "X-Forwarded-Scheme",
                          "X-Forwarded-Ssl", "X-Forwarded-Prefix", "X-Original-URL", "X-Rewrite-URL", "X-Host", "Via",
                          "X-ProxyUser-Ip", "X-Envoy-External-Address", "X-Forwarded-Client-Cert")


def test_no_forwarding_header_a_client_sends_reaches_vllm(env):
    spoofed = {name: "6.6.6.6" for name in (*CLIENT_ADDRESS_HEADERS, *CLEARED_HEADERS)}
    spoofed.update({"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-Proto": "http",
                    "X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "1", "X-Forwarded_For": "6.6.6.6",
                    "Forwarded": "for=6.6.6.6;proto=http;host=evil.example", "Host": "evil.example"})
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    response = env.https(env.request("POST", "/v1/chat/completions", "spoof", body, **spoofed))
    assert response.status == 200, response.body
    seen = response.json()["fake_request"]["all_headers"]
    authority = f"127.0.0.1:{env.main.site.https_port}"
    assert seen["x-forwarded-for"] == seen["x-real-ip"] == "127.0.0.1"
    assert (seen["x-forwarded-proto"], seen["x-forwarded-port"]) == ("https", str(env.main.site.https_port))
    assert seen["host"] == seen["x-forwarded-host"] == authority
    assert seen["forwarded"] == f'for=127.0.0.1;host="{authority}";proto=https'
    assert "6.6.6.6" not in json.dumps(seen) and "evil.example" not in json.dumps(seen)
    assert not {name.lower() for name in (*CLIENT_ADDRESS_HEADERS, *CLEARED_HEADERS)} & set(seen)
    assert "x-forwarded_for" not in seen, "headers with underscores are dropped"


# --- connections to vLLM ----------------------------------------------------------------------
def test_idle_connections_to_vllm_are_closed_by_nginx_before_uvicorn_would(env, tmp_path):
    """uvicorn in vLLM 0.33 drops idle connections after 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE): a
    request nginx sends on one as it closes fails, and a POST is not retried. nginx must let
    go first; here with its timeout at 1 s, measured on the fake's open connections."""
    import urllib.request

    def open_connections() -> int:
        with urllib.request.urlopen(f"{env.fake.base_url}/metrics", timeout=5) as answer:  # noqa: S310
            text = answer.read().decode()
        return int(text.rsplit("fake_open_connections ", 1)[1].split()[0]) - 1  # minus this one

    site = local_site(prefix=tmp_path, upstream_port=env.fake.port, pki=env.pki, upstream_keepalive_timeout_s=1)
    tmp_path.chmod(0o755)
    nginx = start_nginx(site, tmp_path)
    try:
        before = open_connections()
        assert env.https(env.request("GET", "/v1/models"), nginx=nginx).status == 200
        assert open_connections() == before + 1, "nginx keeps the connection to vLLM for reuse"
        time.sleep(2)
        assert open_connections() == before, "and closes it once idle for its keepalive_timeout"
    finally:
        nginx.stop()


# --- HTTP/2 ------------------------------------------------------------------------------------
def test_http2_streams_server_sent_events_as_they_are_written(env, tmp_path):
    config = tmp_path / "auth.cfg"
    config.write_text(f'header = "Authorization: Bearer {env.api_key}"\n')
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 6, "fake_chunk_delay_ms": 150}
    argv = ["curl", "-sS", "-N", "--http2", "--noproxy", "*", "--cacert", str(env.pki.ca_cert), "-K", str(config),
            "-H", "Content-Type: application/json", "--data-binary", json.dumps(body),
            "-w", "\nprotocol=%{http_version}\n", f"{env.main.https_url}/v1/chat/completions"]
    start, arrivals, lines = time.monotonic(), [], []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as curl:
        for line in curl.stdout:
            lines.append(line)
            if '"content": "tok' in line:
                arrivals.append(time.monotonic() - start)
    assert curl.returncode == 0 and "protocol=2\n" in lines
    assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] >= 0.6 * 5 * 0.15, arrivals
    assert any(line.startswith("data: [DONE]") for line in lines)
