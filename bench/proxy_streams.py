"""The many-streams mode of bench/proxy_overhead.py (see its docstring): thousands of concurrent
streams through the production nginx limits, against a direct connection in the same run."""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serving.nginx_conf import render
from serving.proxy_limits import ProxyLimits, derive_limits
from sizing.gpus import get as get_instance
from sizing.memory import batch_defaults
from tests.fakes import (
    RunningNginx,
    file_limit,
    local_site,
    make_prefix_dir,
    make_test_pki,
    start_nginx,
    start_stream_server,
    worker_pids,
)
from tests.fakes.streams import StreamsRun, raise_file_limit, run_streams

# Clients spread over 16 loopback addresses, as many clients would be: each address stays under
# the per-client limit, and no single source address runs short of ephemeral ports.
SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 18))
CONTAINER_SOFT_NOFILE = 1024  # Docker's common default soft limit, which the issue measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, nargs="*", default=[],
                        help="many-streams mode: concurrent streams per level, e.g. 1000 4000")
    parser.add_argument("--instance-type", default="g4dn.xlarge",
                        help="whose vCPUs and memory size the nginx limits (many-streams mode)")
    parser.add_argument("--stream-chunks", type=int, default=20, help="content events per stream")
    parser.add_argument("--stream-delay-ms", type=float, default=100.0, help="pause between events")
    parser.add_argument("--without-rlimit", action="store_true",
                        help="also run the last level with worker_rlimit_nofile removed")


@dataclass
class Level:
    streams: int
    direct: StreamsRun
    proxied: StreamsRun
    peak_direct: int
    peak_proxied: int
    rss_per_stream_kib: float


class _RssSampler:
    """Largest resident memory of nginx's workers while a level runs, sampled every 50 ms."""

    def __init__(self, master_pid: int) -> None:
        self._pids = worker_pids(master_pid)  # the workers are running by the time a level starts
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        total = 0
        for pid in self._pids:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            time.sleep(0.05)

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _limits_for(instance_type: str) -> ProxyLimits:
    instance = get_instance(instance_type)
    return derive_limits(vcpus=instance.vcpus, memory_gib=instance.memory_gib,
                         default_per_client=batch_defaults(instance)[1])


def _level(n: int, args: argparse.Namespace, server, nginx: RunningNginx, tls: ssl.SSLContext) -> Level:
    common = dict(streams=n, chunks=args.stream_chunks, delay_ms=args.stream_delay_ms, sources=SOURCES)
    server.stats(reset=True)
    direct = asyncio.run(run_streams(host=server.host, port=server.port, **common))
    peak_direct = server.stats(reset=True)["peak"]
    sampler = _RssSampler(nginx.process.pid)
    idle_kib = sampler.rss_kib()
    with sampler:
        proxied = asyncio.run(run_streams(host=nginx.site.listen_address, port=nginx.site.https_port, tls=tls, **common))
    peak_proxied = server.stats()["peak"]
    per_stream = (sampler.peak_kib - idle_kib) / max(1, peak_proxied)
    return Level(n, direct, proxied, peak_direct, peak_proxied, per_stream)


def _print_levels(levels: list[Level]) -> None:
    header = (f"{'streams':>7} {'path':<7} {'errors':>6} {'peak':>5} {'ttft p50':>9} {'ttft p99':>9} "
              f"{'events/s':>9}  {'nginx RSS/stream':>16}")
    print(header)
    print("-" * len(header))
    for lv in levels:
        for name, run, peak in (("direct", lv.direct, lv.peak_direct), ("nginx", lv.proxied, lv.peak_proxied)):
            extra = f"{lv.rss_per_stream_kib:>13.1f} KiB" if name == "nginx" else ""
            print(f"{lv.streams:>7} {name:<7} {len(run.errors):>6} {peak:>5} {run.ttft_ms(0.5):>9.1f} "
                  f"{run.ttft_ms(0.99):>9.1f} {run.events_per_s:>9.0f}  {extra}")
        print(f"{'':>7} {'ratio':<7} {'':>6} {'':>5} {lv.proxied.ttft_ms(0.5) / lv.direct.ttft_ms(0.5):>9.2f} "
              f"{lv.proxied.ttft_ms(0.99) / lv.direct.ttft_ms(0.99):>9.2f} "
              f"{lv.proxied.events_per_s / lv.direct.events_per_s:>9.2f}")
        for name, run in (("direct", lv.direct), ("nginx", lv.proxied)):
            if run.errors:
                print(f"{'':>7} {name} errors: {run.error_summary()}")


def many_streams(args: argparse.Namespace) -> None:
    own_limit = raise_file_limit()
    limits = _limits_for(args.instance_type)
    api_key = "sk-bench-" + secrets.token_hex(8)
    prefix = make_prefix_dir()
    started = []
    try:
        pki = make_test_pki(prefix / "pki")
        server = start_stream_server()
        started.append(server)
        site = local_site(prefix=prefix, upstream_port=server.port, pki=pki, limits=limits)
        nofile = (CONTAINER_SOFT_NOFILE, limits.container_nofile)
        nginx = start_nginx(site, prefix, nofile=nofile)
        started.append(nginx)
        tls = ssl.create_default_context(cafile=str(pki.ca_cert))
        workers = worker_pids(nginx.process.pid, limits.worker_processes)
        print(f"{args.instance_type}: worker_processes {limits.worker_processes}, worker_connections "
              f"{limits.worker_connections}, worker_rlimit_nofile {limits.worker_rlimit_nofile}, max streams "
              f"{limits.max_streams}, per client {limits.max_streams_per_client}")
        print(f"nginx started with RLIMIT_NOFILE soft {nofile[0]} hard {nofile[1]} (the container's); master "
              f"{file_limit(nginx.process.pid)}, workers {sorted(set(file_limit(p) for p in workers))}; "
              f"client and server soft limit {own_limit}")
        print(f"{args.stream_chunks} events per stream, {args.stream_delay_ms:g} ms apart, from "
              f"{len(SOURCES)} source addresses; key {api_key[:9]}...\n")
        levels = [_level(n, args, server, nginx, tls) for n in args.streams]
        _print_levels(levels)
        if args.without_rlimit:
            nginx.stop()
            started.remove(nginx)
            text = re.sub(r"^worker_rlimit_nofile .*\n", "", render(site), flags=re.M)
            nginx = start_nginx(site, prefix, nofile=nofile, conf_text=text)
            started.append(nginx)
            workers = worker_pids(nginx.process.pid, limits.worker_processes)
            print(f"\nwithout worker_rlimit_nofile (workers {sorted(set(file_limit(p) for p in workers))}):")
            _print_levels([_level(args.streams[-1], args, server, nginx, tls)])
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(prefix, ignore_errors=True)
