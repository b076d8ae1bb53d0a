"""The /grafana/ location of the rendered nginx.conf, run by a real nginx in front of a fake
Grafana: allow-list, the sub-path passed through, forwarding headers, and a WebSocket
(Grafana Live) tunnelled both ways. Needs nginx and openssl, like test_nginx_live.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from typing import Iterator

import pytest

from tests.fakes import (
    RunningNginx,
    TestPki,
    local_site,
    make_prefix_dir,
    make_test_pki,
    nginx_binary,
    openssl_binary,
    start_fake_vllm,
    start_nginx,
)
from tests.fakes.fake_grafana import LIVE_PATH, start_fake_grafana


@dataclass
class GrafanaProxy:
    pki: TestPki
    allowed: RunningNginx  # /grafana/ open to 127.0.0.0/8
    refused: RunningNginx  # /grafana/ open to 10.0.0.0/8 only


@pytest.fixture(scope="module")
def grafana_proxy() -> Iterator[GrafanaProxy]:
    missing = [n for n, found in (("nginx", nginx_binary()), ("openssl", openssl_binary()), ("curl", shutil.which("curl"))) if not found]
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the live proxy tests: {reason}")
        pytest.skip(reason)
    prefix = make_prefix_dir()
    started: list = []
    try:
        pki = make_test_pki(prefix / "pki")
        fake_vllm = start_fake_vllm(api_key="sk-unused")
        started.append(fake_vllm)
        grafana = start_fake_grafana()
        started.append(grafana)
        running = []
        for name, cidrs in (("allowed", ["127.0.0.0/8"]), ("refused", ["10.0.0.0/8"])):
            (prefix / name).mkdir()
            site = local_site(prefix=prefix / name, upstream_port=fake_vllm.port, pki=pki,
                              grafana_upstream_port=grafana.port, grafana_allowed_cidrs=cidrs)
            running.append(start_nginx(site, prefix / name))
            started.append(running[-1])
        yield GrafanaProxy(pki, *running)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(prefix, ignore_errors=True)


def _curl(proxy: GrafanaProxy, url: str, *args: str) -> subprocess.CompletedProcess:
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(proxy.pki.ca_cert)]
    return subprocess.run([*argv, *args, url], capture_output=True, text=True, check=False)


def _localhost(nginx: RunningNginx) -> str:
    return nginx.https_url.replace("127.0.0.1", "localhost")


def test_grafana_gets_its_sub_path_and_the_clients_real_address(grafana_proxy):
    result = _curl(grafana_proxy, f"{_localhost(grafana_proxy.allowed)}/grafana/api/health",
                   "-H", "X-Forwarded-For: 6.6.6.6", "-w", "\n%{http_code}")
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200", result.stderr
    seen = json.loads(body)
    assert seen["path"] == "/grafana/api/health", "serve_from_sub_path needs the prefix kept"
    headers = seen["headers"]
    assert headers["host"] == "localhost", "Grafana checks the origin against the Host it sees"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == headers["x-real-ip"] == "127.0.0.1"
    assert headers["upgrade"] is None and headers["connection"] is None


def test_grafana_is_refused_outside_its_allow_list(grafana_proxy):
    for path in ("/grafana/", "/grafana/api/health", "/grafana/api/live/ws"):
        status = _curl(grafana_proxy, f"{grafana_proxy.refused.https_url}{path}", "-o", "/dev/null", "-w", "%{http_code}")
        assert status.stdout == "403", path


def test_bare_grafana_path_redirects_to_the_sub_path(grafana_proxy):
    result = _curl(grafana_proxy, f"{_localhost(grafana_proxy.allowed)}/grafana", "-o", "/dev/null",
                   "-w", "%{http_code} %{redirect_url}")
    status, location = result.stdout.split(" ", 1)
    assert status == "301" and location.endswith("/grafana/")


def test_grafana_live_websocket_is_tunnelled_both_ways(grafana_proxy):
    context = ssl.create_default_context(cafile=str(grafana_proxy.pki.ca_cert))
    port = grafana_proxy.allowed.site.https_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                (f"GET {LIVE_PATH} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(4096)
                assert chunk, f"connection closed after {head!r}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b"upgrade: websocket" in head.lower()
            tls.sendall(b"ping-through-nginx")
            echoed = b""
            while len(echoed) < len(b"ping-through-nginx"):
                chunk = tls.recv(4096)
                assert chunk, "tunnel closed"
                echoed += chunk
            assert echoed == b"ping-through-nginx"
