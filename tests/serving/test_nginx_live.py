"""The rendered nginx.conf run by a real nginx in front of the fake vLLM server.

Clients are the real `openai` package and curl, over TLS checked against a throwaway CA.
Two proxies share one fake backend: `main` is the production shape (metrics only from
10.0.0.0/8, so refused to us on 127.0.0.1; an ACME webroot; an 8 MiB body limit),
`open` lets 127.0.0.0/8 read metrics and allows one API request per minute.

Needs nginx, curl and openssl: missing ones fail the run under CI (env CI set), and skip
it elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests.fakes import (
    FakeVllmProcess,
    RunningNginx,
    TestPki,
    check_config,
    local_site,
    make_prefix_dir,
    make_test_pki,
    require_proxy_tools,
    start_fake_vllm,
    start_nginx,
)

BODY_LIMIT_MB = 8
MIB = 2**20
CHUNK_DELAY_S = 0.15
STREAM_CHUNKS = 6


@dataclass
class ProxyEnv:
    api_key: str
    pki: TestPki
    fake: FakeVllmProcess
    main: RunningNginx
    open: RunningNginx
    acme_webroot: Path
    prefix: Path


@pytest.fixture(scope="session")
def proxy() -> Iterator[ProxyEnv]:
    require_proxy_tools()
    prefix = make_prefix_dir()
    api_key = "sk-test-" + secrets.token_hex(16)
    started: list = []
    try:
        pki = make_test_pki(prefix / "pki")
        acme_webroot = prefix / "acme"
        (acme_webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
        fake = start_fake_vllm(api_key=api_key, chunks=4, chunk_delay_ms=10)
        started.append(fake)
        main_site = local_site(
            prefix=prefix / "main",
            upstream_port=fake.port,
            pki=pki,
            metrics_allowed_cidrs=["10.0.0.0/8"],
            acme_webroot=str(acme_webroot),
            client_max_body_size_mb=BODY_LIMIT_MB,
        )
        open_site = local_site(
            prefix=prefix / "open",
            upstream_port=fake.port,
            pki=pki,
            metrics_allowed_cidrs=["127.0.0.0/8"],
            rate_limit_per_minute=1,
            rate_limit_burst=0,
        )
        for site_prefix in ("main", "open"):
            (prefix / site_prefix).mkdir()
            (prefix / site_prefix).chmod(0o755)
        main = start_nginx(main_site, prefix / "main")
        started.append(main)
        open_ = start_nginx(open_site, prefix / "open")
        started.append(open_)
        yield ProxyEnv(api_key, pki, fake, main, open_, acme_webroot, prefix)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(prefix, ignore_errors=True)


# --- clients --------------------------------------------------------------------------
def _openai(proxy: ProxyEnv, api_key: str | None = None, verify_with_ca: bool = True) -> openai.OpenAI:
    verify = ssl.create_default_context(cafile=str(proxy.pki.ca_cert)) if verify_with_ca else True
    http_client = openai.DefaultHttpxClient(verify=verify, trust_env=False, timeout=30)
    return openai.OpenAI(
        base_url=f"{proxy.main.https_url}/v1",
        api_key=api_key or proxy.api_key,
        http_client=http_client,
        max_retries=0,
    )


def _curl(proxy: ProxyEnv, url: str, *args: str, cacert: bool = True) -> subprocess.CompletedProcess:
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "30"]
    if cacert:
        argv += ["--cacert", str(proxy.pki.ca_cert)]
    return subprocess.run([*argv, *args, url], capture_output=True, text=True, check=False)


def _status(proxy: ProxyEnv, url: str, *args: str) -> int:
    result = _curl(proxy, url, "-o", "/dev/null", "-w", "%{http_code}", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def _auth_config(tmp_path: Path, api_key: str) -> str:
    """A curl config file carrying the key, so it is not on a command line."""
    path = tmp_path / "curl-auth.cfg"
    path.write_text(f'header = "Authorization: Bearer {api_key}"\n')
    path.chmod(0o600)
    return str(path)


def _chat_body(**extra) -> dict:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}


def _assert_paced(start: float, arrivals: list[float]) -> None:
    """Chunks reached us about as the backend wrote them, not all at the end."""
    assert len(arrivals) == STREAM_CHUNKS, arrivals
    backend_span = (STREAM_CHUNKS - 1) * CHUNK_DELAY_S
    first, last = arrivals[0] - start, arrivals[-1] - start
    assert last - first >= 0.6 * backend_span, f"bunched: first {first:.3f}s, last {last:.3f}s"
    assert first < last / 2, f"first chunk came late: first {first:.3f}s, last {last:.3f}s"


# --- tests ----------------------------------------------------------------------------
def test_nginx_accepts_both_rendered_configs(proxy):
    for running in (proxy.main, proxy.open):
        checked = check_config(running.conf_path, running.conf_path.parent, running.site.error_log_path)
        assert checked.returncode == 0, checked.stderr


def test_chat_completion_through_the_proxy_with_the_openai_client(proxy):
    with _openai(proxy) as client:
        completion = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hello"}], max_tokens=3
        )
        models = client.models.list()
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    assert [m.id for m in models.data] == ["fake-model"]
    seen = completion.model_extra["fake_request"]["headers"]
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-real-ip"] == seen["x-forwarded-for"] == "127.0.0.1"


def test_a_client_cannot_spoof_its_address_to_vllm(proxy):
    """vLLM's server trusts X-Forwarded-For from 127.0.0.1: nginx must overwrite, not append."""
    with _openai(proxy) as client:
        completion = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=1,
            extra_headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"},
        )
    seen = completion.model_extra["fake_request"]["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"


def test_openai_stream_arrives_at_the_backends_pace(proxy):
    with _openai(proxy) as client:
        start = time.monotonic()
        stream = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "count"}],
            max_tokens=STREAM_CHUNKS,
            stream=True,
            extra_body={"fake_chunk_delay_ms": CHUNK_DELAY_S * 1000},
        )
        arrivals, text = [], ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
                text += chunk.choices[0].delta.content
    assert text == "".join(f"tok{i} " for i in range(STREAM_CHUNKS))
    _assert_paced(start, arrivals)


def test_curl_stream_arrives_at_the_backends_pace(proxy, tmp_path):
    body = _chat_body(stream=True, max_tokens=STREAM_CHUNKS, fake_chunk_delay_ms=CHUNK_DELAY_S * 1000)
    argv = [
        "curl", "-sS", "-N", "--noproxy", "*", "--cacert", str(proxy.pki.ca_cert),
        "-K", _auth_config(tmp_path, proxy.api_key), "-H", "Content-Type: application/json",
        "--data-binary", json.dumps(body), f"{proxy.main.https_url}/v1/chat/completions",
    ]
    start = time.monotonic()
    events, arrivals = [], []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as curl:
        for line in curl.stdout:
            if line.startswith("data: "):
                events.append(line[6:].strip())
                if '"content": "tok' in line:
                    arrivals.append(time.monotonic())
    assert curl.returncode == 0
    assert events[-1] == "[DONE]"
    _assert_paced(start, arrivals)


def test_wrong_key_gets_the_backends_401_through_the_proxy(proxy, tmp_path):
    with _openai(proxy, api_key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
    assert caught.value.status_code == 401
    result = _curl(
        proxy, f"{proxy.main.https_url}/v1/models", "-w", "\n%{http_code}",
        "-K", _auth_config(tmp_path, "sk-wrong"),
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert (status, json.loads(body)) == ("401", {"error": "Unauthorized"})


def test_health_is_open_and_carries_hsts(proxy):
    result = _curl(proxy, f"{proxy.main.https_url}/health", "-i")
    assert re.match(r"HTTP/\S+ 200", result.stdout), result.stdout
    assert "strict-transport-security: max-age=31536000" in result.stdout.lower()
    assert re.search(r"^server: nginx$", result.stdout.lower(), re.M), "server_tokens off hides the version"


def test_paths_outside_the_api_are_not_proxied(proxy):
    # /tokenize is served by vLLM without the key; the proxy must not expose it.
    assert _status(proxy, f"{proxy.main.https_url}/tokenize", "-X", "POST") == 404


@pytest.mark.parametrize("path", ["/metrics/../v1/models", "/metrics%2f..%2fv1/models", "/metrics/../health",
                                  "/v1/../metrics", "/x/../health"])
def test_a_path_that_normalizes_into_a_location_but_is_not_its_own_is_not_proxied(proxy, path):
    """nginx routes by the normalized path, vLLM by the raw one (uvicorn keeps dot segments, and
    vLLM's metrics route is a prefix regex): /metrics/../v1/models was /v1/ here and /metrics
    there, past the allow-list and, outside /v1, past vLLM's key check."""
    result = _curl(proxy, f"{proxy.main.https_url}{path}", "--path-as-is", "-w", "\n%{http_code}")
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status in ("403", "404"), (path, status, body[:200])
    assert "vllm:" not in body, "vLLM's metrics reached the client"


def test_metrics_refused_outside_the_allowed_cidrs(proxy):
    assert _status(proxy, f"{proxy.main.https_url}/metrics") == 403


def test_metrics_served_inside_the_allowed_cidrs(proxy):
    result = _curl(proxy, f"{proxy.open.https_url}/metrics", "-w", "\n%{http_code}")
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200"
    assert "vllm:num_requests_running" in body


def test_plain_http_api_calls_get_a_json_refusal_not_a_redirect(proxy, tmp_path):
    """No 301 (a POST would come back as a GET, and the key already crossed in clear text), no
    Location, and the client's Host is never reflected; the key is named, never echoed."""
    result = _curl(
        proxy, f"{proxy.main.http_url}/v1/chat/completions?x=1", "-i", "-H", "Host: evil.example",
        "-K", _auth_config(tmp_path, proxy.api_key), "-H", "Content-Type: application/json",
        "--data-binary", json.dumps(_chat_body()),
    )
    head, body = result.stdout.split("\n\n", 1)
    assert head.startswith("HTTP/1.1 403"), head
    assert "location:" not in head.lower() and "evil.example" not in result.stdout
    assert proxy.api_key not in result.stdout
    error = json.loads(body)["error"]
    assert error["code"] == 403 and error["type"] == "PermissionDeniedError"
    assert f"https://127.0.0.1:{proxy.main.site.https_port}/" in error["message"]
    assert "crossed the network unencrypted" in error["message"]


def test_openai_client_over_plain_http_fails_loudly(proxy):
    """Before: models.list() over http silently worked through a redirect, and a POST turned
    into a misleading 404."""
    client = openai.OpenAI(
        base_url=f"{proxy.main.http_url}/v1", api_key=proxy.api_key, max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False, timeout=30),
    )
    with client:
        with pytest.raises(openai.PermissionDeniedError, match="served over HTTPS only"):
            client.models.list()
        with pytest.raises(openai.PermissionDeniedError, match="served over HTTPS only"):
            client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])


def test_a_browser_opening_the_address_is_sent_to_the_configured_https_site(proxy):
    for host in ("evil.example", "127.0.0.1"):
        result = _curl(proxy, f"{proxy.main.http_url}/", "-o", "/dev/null", "-H", f"Host: {host}",
                       "-w", "%{http_code} %{redirect_url}")
        assert result.stdout == f"301 https://127.0.0.1:{proxy.main.site.https_port}/"
    assert _status(proxy, f"{proxy.main.http_url}/", "-X", "POST") == 403


def test_acme_challenge_served_from_the_webroot_over_http(proxy):
    token = secrets.token_urlsafe(16)
    (proxy.acme_webroot / ".well-known" / "acme-challenge" / token).write_text(f"{token}.thumb")
    (proxy.acme_webroot / ".well-known" / "acme-challenge" / token).chmod(0o644)
    for directory in (proxy.acme_webroot, proxy.acme_webroot / ".well-known",
                      proxy.acme_webroot / ".well-known" / "acme-challenge"):
        directory.chmod(0o755)
    result = _curl(proxy, f"{proxy.main.http_url}/.well-known/acme-challenge/{token}", "-w", "\n%{http_code}")
    assert result.stdout == f"{token}.thumb\n200"


def test_large_prompt_under_the_limit_reaches_the_backend(proxy):
    prompt = "x" * (5 * MIB)
    with _openai(proxy) as client:
        completion = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": prompt}], max_tokens=1
        )
    seen = completion.model_extra["fake_request"]
    assert seen["prompt_chars"] == 5 * MIB
    assert seen["body_bytes"] > 5 * MIB


def test_body_over_the_limit_gets_413(proxy, tmp_path):
    body = tmp_path / "big.json"
    body.write_text(json.dumps(_chat_body(messages=[{"role": "user", "content": "x" * (BODY_LIMIT_MB + 1) * MIB}])))
    status = _status(
        proxy, f"{proxy.main.https_url}/v1/chat/completions", "-K", _auth_config(tmp_path, proxy.api_key),
        "-H", "Content-Type: application/json", "--data-binary", f"@{body}",
    )
    assert status == 413


def test_tls_verifies_against_the_test_ca_and_fails_without_it(proxy):
    assert _curl(proxy, f"{proxy.main.https_url}/health", "-o", "/dev/null").returncode == 0
    assert _curl(proxy, f"{proxy.main.https_url}/health", cacert=False).returncode == 60  # bad cert
    with _openai(proxy, verify_with_ca=False) as client:
        with pytest.raises(openai.APIConnectionError):
            client.models.list()


def test_access_log_records_requests_but_never_the_key(proxy, tmp_path):
    wrong_key = "sk-wrong-" + secrets.token_hex(8)
    with _openai(proxy) as client:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "a"}])
    with _openai(proxy, api_key=wrong_key) as client, pytest.raises(openai.AuthenticationError):
        client.models.list()
    log = proxy.main.access_log()
    entries = [json.loads(line) for line in log.splitlines()]
    assert {"path": "/v1/chat/completions", "status": 200} in [
        {"path": e["path"], "status": e["status"]} for e in entries
    ]
    assert any(e["path"] == "/v1/models" and e["status"] == 401 for e in entries)
    # Booleans first, so a failure does not print the key it found.
    leaked_key = proxy.api_key in log or wrong_key in log
    leaked_scheme = "bearer" in log.lower()
    assert not leaked_key, "an API key reached the access log"
    assert not leaked_scheme, "an Authorization header reached the access log"


def test_rate_limit_answers_429_beyond_the_allowance(proxy, tmp_path):
    auth = _auth_config(tmp_path, proxy.api_key)
    statuses = [_status(proxy, f"{proxy.open.https_url}/v1/models", "-K", auth) for _ in range(2)]
    assert statuses == [200, 429]
    result = _curl(proxy, f"{proxy.open.https_url}/v1/models", "-i", "-K", auth)
    head, body = result.stdout.split("\n\n", 1)
    assert re.match(r"HTTP/\S+ 429", head) and re.search(r"^retry-after: 60$", head, re.M | re.I), head
    error = json.loads(body)["error"]
    assert (error["code"], error["type"]) == (429, "RateLimitError") and "1 requests per minute" in error["message"]
    assert _status(proxy, f"{proxy.open.https_url}/health") == 200, "health is not rate limited"
