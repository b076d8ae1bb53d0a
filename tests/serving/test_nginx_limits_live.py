"""The rendered nginx.conf under load and abuse, in a real nginx: file limits, capacity, one
address's share, clients that stop reading or read slowly.

`tight` is a proxy with tiny limits (4 streams in all, 2 per address, a 1 s send timeout) in
front of the threaded fake vLLM; the file-limit test runs its own nginx in front of the asyncio
stream server (tests/fakes/streams.py), started under a low soft file limit as a container
with Docker's default would start it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

import pytest

from serving.nginx_conf import render
from serving.proxy_limits import ProxyLimits
from tests.fakes import (
    FakeVllmProcess,
    RunningNginx,
    TestPki,
    file_limit,
    local_site,
    make_prefix_dir,
    make_test_pki,
    proxy_workspace,
    require_proxy_tools,
    small_limits,
    start_fake_vllm,
    start_nginx,
    start_stream_server,
    worker_pids,
)
from tests.fakes.clients import (
    access_log_entry,
    connect,
    read_body,
    read_head,
    read_paced,
    request_bytes,
    tls_context,
)
from tests.fakes.streams import raise_file_limit, run_streams

SEND_TIMEOUT_S = 2
RCVBUF = 65536  # fixed, so the client's kernel cannot absorb the whole stream
TIGHT = ProxyLimits(worker_processes=1, worker_connections=256, worker_rlimit_nofile=512,
                    max_streams=4, max_streams_per_client=2)


@dataclass
class Env:
    api_key: str
    pki: TestPki
    fake: FakeVllmProcess
    nginx: RunningNginx

    def running_streams(self) -> int:
        """vLLM's num_requests_running, asked of the fake directly."""
        import urllib.request

        with urllib.request.urlopen(f"{self.fake.base_url}/metrics", timeout=5) as answer:  # noqa: S310
            return int(float(re.search(r"num_requests_running\{[^}]*\} (\S+)", answer.read().decode()).group(1)))


@pytest.fixture(scope="module")
def tight() -> Iterator[Env]:
    with proxy_workspace() as (stack, prefix, api_key, pki):
        fake = start_fake_vllm(api_key=api_key)
        stack.callback(fake.stop)
        site = local_site(prefix=prefix, upstream_port=fake.port, pki=pki, limits=TIGHT,
                          client_send_timeout_s=SEND_TIMEOUT_S)
        nginx = start_nginx(site, prefix)
        stack.callback(nginx.stop)
        yield Env(api_key, pki, fake, nginx)


def _stream_request(env: Env, agent: str, **body) -> bytes:
    payload = json.dumps({"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                          **body}).encode()
    return request_bytes("POST", "/v1/chat/completions", {
        "Host": "127.0.0.1", "Authorization": f"Bearer {env.api_key}", "Content-Type": "application/json",
        "User-Agent": agent}, payload)


@contextmanager
def _open_streams(env: Env, sources: list[str], agent: str) -> Iterator[list[tuple[int, dict, bytes]]]:
    """One slow stream from each source address, held open (response heads read) meanwhile."""
    tls = tls_context(env.pki.ca_cert)
    site = env.nginx.site
    with ExitStack() as stack:
        heads = []
        for source in sources:
            sock = stack.enter_context(connect(site.listen_address, site.https_port, tls=tls, source=source))
            sock.sendall(_stream_request(env, agent, max_tokens=100, fake_chunk_delay_ms=100))
            heads.append(read_head(sock))
        yield heads


def _wait_until(condition, timeout_s: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s}s")
        time.sleep(0.05)
    return time.monotonic() - start


# --- file descriptors -----------------------------------------------------------------------
def test_streams_beyond_a_1024_style_soft_file_limit_all_complete():
    """Each stream holds two descriptors in one worker: with Docker's usual soft limit and no
    worker_rlimit_nofile, nginx fails with "Too many open files" (HTTP 500). The rendered
    limit raises the workers' own limit; the same load without it fails."""
    require_proxy_tools()
    raise_file_limit()
    limits, streams, soft = small_limits(max_streams_per_client=64), 300, 256
    sources = tuple(f"127.0.0.{i}" for i in range(2, 10))  # 38 streams each, under 64
    prefix = make_prefix_dir()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, prefix, ignore_errors=True)
        server = start_stream_server()
        stack.callback(server.stop)
        site = local_site(prefix=prefix, upstream_port=server.port, pki=make_test_pki(prefix / "pki"), limits=limits)
        tls = tls_context(prefix / "pki" / "ca.crt")

        def run(conf_text=None):
            nginx = start_nginx(site, prefix, nofile=(soft, limits.container_nofile), conf_text=conf_text)
            try:
                workers = worker_pids(nginx.process.pid, limits.worker_processes)
                result = asyncio.run(run_streams(host=site.listen_address, port=site.https_port, tls=tls,
                                                 streams=streams, chunks=5, delay_ms=100, sources=sources,
                                                 timeout_s=5))
                return [file_limit(p) for p in workers], result
            finally:
                nginx.stop()

        worker_limits, result = run()
        assert worker_limits == [(limits.worker_rlimit_nofile, limits.worker_rlimit_nofile)]
        assert result.errors == [], result.error_summary()
        assert server.stats(reset=True)["peak"] == streams, "the streams really were open at once"

        without = re.sub(r"^worker_rlimit_nofile .*\n", "", render(site), flags=re.M)
        worker_limits, result = run(without)
        assert worker_limits == [(soft, limits.container_nofile)]
        assert len(result.errors) > streams // 10, result.error_summary()
        assert "Too many open files" in (prefix / "error.log").read_text()


# --- capacity and one address's share ----------------------------------------------------------
def test_past_its_capacity_the_proxy_answers_503_json_with_retry_after(tight):
    agent = "capacity-" + secrets.token_hex(4)
    with _open_streams(tight, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"], agent) as heads:
        assert [status for status, _, _ in heads] == [200] * 4
        site = tight.nginx.site
        with connect(site.listen_address, site.https_port, tls=tls_context(tight.pki.ca_cert), source="127.0.0.4") as sock:
            sock.sendall(_stream_request(tight, agent + "-refused"))
            status, headers, body = read_head(sock)
            body = read_body(sock, headers, body)
    assert status == 503 and headers["retry-after"] == "5"
    assert headers["content-type"] == "application/json" and "strict-transport-security" in headers
    error = json.loads(body)["error"]
    assert (error["code"], error["type"]) == (503, "ServiceUnavailableError")
    assert f"limit of {TIGHT.max_streams} concurrent requests" in error["message"]
    entry = access_log_entry(tight.nginx.access_log, lambda e: e["user_agent"] == agent + "-refused")
    assert (entry["status"], entry["ended_by"]) == (503, "proxy")


def test_one_address_gets_429_json_past_its_concurrent_requests(tight):
    agent = "per-client-" + secrets.token_hex(4)
    site = tight.nginx.site
    tls = tls_context(tight.pki.ca_cert)
    with _open_streams(tight, ["127.0.0.5", "127.0.0.5"], agent) as held:
        # The accepting side of the boundary: exactly max_streams_per_client (2) streams run.
        assert [status for status, _, _ in held] == [200] * TIGHT.max_streams_per_client
        with connect(site.listen_address, site.https_port, tls=tls, source="127.0.0.5") as sock:
            sock.sendall(_stream_request(tight, agent))
            status, headers, body = read_head(sock)
            body = read_body(sock, headers, body)
        with connect(site.listen_address, site.https_port, tls=tls, source="127.0.0.6") as other:
            other.sendall(_stream_request(tight, agent, max_tokens=1))
            assert read_head(other)[0] == 200, "another address is not affected"
    assert status == 429 and headers["retry-after"] == "5"
    error = json.loads(body)["error"]
    assert (error["code"], error["type"]) == (429, "RateLimitError")
    assert f"at most {TIGHT.max_streams_per_client} at once" in error["message"]


# --- clients that stop reading, and clients that read slowly ----------------------------------
# ~6 MB as fast as the fake can write: the proxy's writes to a slower reader block at once.
FAST_STREAM = {"max_tokens": 1500, "fake_chunk_bytes": 4000, "fake_chunk_delay_ms": 0}
# ~8 MB over at least 10 s: still being produced when a stalled client is cut.
LONG_STREAM = {"max_tokens": 2000, "fake_chunk_bytes": 4000, "fake_chunk_delay_ms": 5}


def test_a_client_that_stops_reading_is_cut_and_its_stream_freed(tight):
    """The fake would write for 10 s more; the proxy frees the stream (and vLLM's slot) once its
    fixed send buffer is full and send_timeout has passed."""
    agent = "stalled-" + secrets.token_hex(4)
    site = tight.nginx.site
    with connect(site.listen_address, site.https_port, tls=tls_context(tight.pki.ca_cert), rcvbuf=RCVBUF) as sock:
        sock.sendall(_stream_request(tight, agent, **LONG_STREAM))
        assert read_head(sock)[0] == 200
        _wait_until(lambda: tight.running_streams() == 1, 5)
        freed_after = _wait_until(lambda: tight.running_streams() == 0, 8)
    assert freed_after < 4 * SEND_TIMEOUT_S
    entry = access_log_entry(tight.nginx.access_log, lambda e: e["user_agent"] == agent)
    assert (entry["ended_by"], entry["complete"]) == ("client", False)


def test_a_slow_reader_that_keeps_reading_is_never_cut(tight):
    """send_timeout runs between two writes: a reader far slower than the stream, pausing often
    but never for the whole timeout, gets all ~6 MB over several times the timeout."""
    agent = "slow-" + secrets.token_hex(4)
    site = tight.nginx.site
    with connect(site.listen_address, site.https_port, tls=tls_context(tight.pki.ca_cert), rcvbuf=RCVBUF) as sock:
        sock.sendall(_stream_request(tight, agent, **FAST_STREAM))
        status, _, rest = read_head(sock)
        start = time.monotonic()
        data, ended = read_paced(sock, rest, burst=256 * 1024, pause_s=0.25, until=b"X-Stream-End: complete",
                                 timeout_s=60)
        took = time.monotonic() - start
    assert status == 200 and ended, f"cut after {took:.1f}s and {len(data)} bytes"
    assert b"data: [DONE]" in data
    assert took > 3 * SEND_TIMEOUT_S, "the transfer outlasted the send timeout several times over"
    entry = access_log_entry(tight.nginx.access_log, lambda e: e["user_agent"] == agent)
    assert (entry["ended_by"], entry["complete"]) == ("upstream", True)


def test_a_reader_pausing_longer_than_the_send_timeout_is_cut(tight):
    agent = "pausing-" + secrets.token_hex(4)
    site = tight.nginx.site
    with connect(site.listen_address, site.https_port, tls=tls_context(tight.pki.ca_cert), rcvbuf=RCVBUF) as sock:
        sock.sendall(_stream_request(tight, agent, **FAST_STREAM))
        _, _, rest = read_head(sock)
        _, ended = read_paced(sock, rest, burst=256 * 1024, pause_s=2.5 * SEND_TIMEOUT_S,
                              until=b"X-Stream-End: complete", timeout_s=60)
    assert not ended
    entry = access_log_entry(tight.nginx.access_log, lambda e: e["user_agent"] == agent)
    assert (entry["ended_by"], entry["complete"]) == ("client", False)
