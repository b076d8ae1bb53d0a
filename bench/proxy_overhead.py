"""What the nginx TLS proxy costs a streaming client: direct to the backend vs through nginx.

Two modes.

Many streams (`--streams 1000 4000`): the production limits of an instance type (default
g4dn.xlarge, the smallest GPU host; serving/proxy_limits.py) rendered into a real nginx that
is started the way a container with a 1024 soft file limit would start it (soft 1024, hard =
the container's nofile ulimit), then N concurrent streams straight to an asyncio fake server and
N through nginx over TLS, in the same run, from an asyncio client spread over 16 loopback
source addresses. Per level it prints errors, TTFT p50/p99 (ms), events per second, the
nginx/direct ratios, the most streams the server saw at once, and nginx's resident memory per
open stream. `--without-rlimit` repeats the last level with worker_rlimit_nofile removed, which
reproduces the "Too many open files" failures.

    python bench/proxy_overhead.py --streams 1000 4000

Latency (the default): the threaded fake vLLM and a thread per client, below.

Starts the fake vLLM server and a real nginx rendered from serving.nginx_conf (the same helpers
as tests/serving/test_nginx_live.py), then for each concurrency opens that many simultaneous
streamed chat completions, once straight to the backend over plain HTTP and once through
nginx over HTTPS, and prints per level:

  connect        median time to open the connection (ms): TCP, plus for nginx the TLS
                 handshake (ECDSA P-256, TLS 1.3) a new client pays once
  ttft p50/p95   time from sending the request on the open connection to the first
                 content chunk (ms): the proxy hop itself
  tok/s/stream   median over streams of content chunks per second, first to last chunk
  agg tok/s      all content chunks / wall time of the whole level

The fake emits one token per chunk: with --chunk-delay-ms 0 it sends as fast as it can
(the proxy's throughput ceiling shows); with a delay it paces like a GPU would (the proxy
should then add nothing). Client, fake and nginx share this machine's CPUs, so read the
nginx/direct ratio, not the absolute numbers.

    python bench/proxy_overhead.py [--concurrency 1 8 32] [--chunks 100] [--delays-ms 0 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import shutil
import ssl
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make config/ and tests/ importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakes import (  # noqa: E402
    local_site,
    make_prefix_dir,
    make_test_pki,
    start_fake_vllm,
    start_nginx,
)
from bench.proxy_streams import add_arguments as add_stream_arguments, many_streams  # noqa: E402

Connect = Callable[[], http.client.HTTPConnection]


@dataclass(frozen=True)
class StreamTiming:
    began: float
    sent: float
    first: float
    last: float
    chunks: int

    @property
    def connect_s(self) -> float:
        return self.sent - self.began

    @property
    def ttft_s(self) -> float:
        return self.first - self.sent

    @property
    def tokens_per_s(self) -> float:
        span = self.last - self.first
        return (self.chunks - 1) / span if span > 0 else float("inf")


@dataclass(frozen=True)
class LevelResult:
    connect_p50_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tokens_per_s_stream: float
    tokens_per_s_total: float


def _one_stream(connect: Connect, api_key: str, body: bytes, start: threading.Barrier) -> StreamTiming:
    connection = connect()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    start.wait()
    began = time.perf_counter()
    connection.connect()
    sent = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"stream failed with HTTP {response.status}")
    first = last = 0.0
    chunks = 0
    for line in response:
        if line.startswith(b"data: ") and b'"content": "tok' in line:
            last = time.perf_counter()
            first = first or last
            chunks += 1
    connection.close()
    return StreamTiming(began, sent, first, last, chunks)


def _run_level(connect: Connect, api_key: str, concurrency: int, chunks: int, delay_ms: float) -> LevelResult:
    body = json.dumps({
        "model": "fake-model",
        "messages": [{"role": "user", "content": "benchmark"}],
        "stream": True,
        "max_tokens": chunks,
        "fake_chunk_delay_ms": delay_ms,
    }).encode()
    barrier = threading.Barrier(concurrency)
    timings: list[Optional[StreamTiming]] = [None] * concurrency
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            timings[index] = _one_stream(connect, api_key, body, barrier)
        except BaseException as exc:  # reported after join; a thread cannot raise to us
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {concurrency} streams failed: {errors[0]!r}")
    done = [t for t in timings if t is not None]
    ttfts = sorted(t.ttft_s * 1000 for t in done)
    wall = max(t.last for t in done) - min(t.began for t in done)
    return LevelResult(
        connect_p50_ms=statistics.median(t.connect_s * 1000 for t in done),
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p95_ms=ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))],
        tokens_per_s_stream=statistics.median(t.tokens_per_s for t in done),
        tokens_per_s_total=sum(t.chunks for t in done) / wall,
    )


def _median_of_rounds(rounds: int, measure: Callable[[], LevelResult]) -> LevelResult:
    results = [measure() for _ in range(rounds)]
    return LevelResult(*(statistics.median(getattr(r, f) for r in results) for f in LevelResult.__dataclass_fields__))


def _print_table(rows: list[tuple[float, int, LevelResult, LevelResult]]) -> None:
    header = (
        f"{'delay ms':>8} {'streams':>7} {'path':<7} {'connect':>8} {'ttft p50':>9} {'ttft p95':>9} "
        f"{'tok/s/stream':>13} {'agg tok/s':>10}"
    )
    print(header)
    print("-" * len(header))
    for delay_ms, concurrency, direct, proxied in rows:
        for name, result in (("direct", direct), ("nginx", proxied)):
            print(
                f"{delay_ms:>8g} {concurrency:>7} {name:<7} {result.connect_p50_ms:>8.2f} "
                f"{result.ttft_p50_ms:>9.2f} "
                f"{result.ttft_p95_ms:>9.2f} {result.tokens_per_s_stream:>13.0f} "
                f"{result.tokens_per_s_total:>10.0f}"
            )
        print(
            f"{'':>8} {'':>7} {'ratio':<7} {'':>8} {proxied.ttft_p50_ms / direct.ttft_p50_ms:>9.2f} "
            f"{proxied.ttft_p95_ms / direct.ttft_p95_ms:>9.2f} "
            f"{proxied.tokens_per_s_stream / direct.tokens_per_s_stream:>13.2f} "
            f"{proxied.tokens_per_s_total / direct.tokens_per_s_total:>10.2f}"
        )


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per stream")
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0.0, 10.0],
                        help="backend pause between chunks; 0 = as fast as it can")
    parser.add_argument("--rounds", type=int, default=3, help="repeats per level (median)")
    add_stream_arguments(parser)
    args = parser.parse_args(argv)
    if args.streams:
        many_streams(args)
        return

    api_key = "sk-bench-" + secrets.token_hex(16)
    prefix = make_prefix_dir()
    started = []
    try:
        pki = make_test_pki(prefix / "pki")
        fake = start_fake_vllm(api_key=api_key)
        started.append(fake)
        site = local_site(prefix=prefix, upstream_port=fake.port, pki=pki, upstream_keepalive=64)
        nginx = start_nginx(site, prefix)
        started.append(nginx)
        tls = ssl.create_default_context(cafile=str(pki.ca_cert))

        def direct() -> http.client.HTTPConnection:
            return http.client.HTTPConnection(fake.host, fake.port, timeout=60)

        def proxied() -> http.client.HTTPConnection:
            return http.client.HTTPSConnection(site.listen_address, site.https_port, context=tls, timeout=60)

        print(f"fake vLLM on :{fake.port}, nginx on :{site.https_port}; {args.chunks} chunks "
              f"per stream, median of {args.rounds} rounds\n")
        rows = []
        for delay_ms in args.delays_ms:
            for concurrency in args.concurrency:
                measured = [
                    _median_of_rounds(args.rounds, lambda c=c: _run_level(c, api_key, concurrency, args.chunks, delay_ms))
                    for c in (direct, proxied)
                ]
                rows.append((delay_ms, concurrency, *measured))
        _print_table(rows)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
