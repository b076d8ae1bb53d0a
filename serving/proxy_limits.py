"""How much the nginx proxy admits, derived from the instance it runs on. Pure.

Every stream through the proxy holds two connections in one nginx worker, the client's and
the one to vLLM, and every connection is a file descriptor. nginx has no default that fits a
GPU host: 512 connections per worker, and the container's soft file limit (often 1024) makes
accept() and connect() fail with "Too many open files" long before that (measured: 1000
concurrent streams under a 1024 soft limit gave 131 HTTP 500s). So every limit is written
out, in this order:

1. ``max_streams``: proxied requests in flight, all clients together. Bounded by the memory
   the proxy may use (``PROXY_MEMORY_SHARE`` of the host's RAM at ``STREAM_MEMORY_KIB`` per
   stream) and by the loopback port range (``MAX_STREAMS``). Past it nginx answers 503 with
   Retry-After (the upstream's ``max_conns``) instead of running out of connections.
2. ``worker_connections``: what one worker may hold. Connections are not spread evenly over
   workers, so each worker can hold every stream (two connections each), plus a quarter more
   for connections that are not streams yet (TLS handshakes, clients being refused). Idle
   keep-alive connections need no room of their own: a worker short of connections closes
   them first (ngx_drain_connections, src/core/ngx_connection.c).
3. ``worker_rlimit_nofile``: the workers' file limit, above ``worker_connections`` by the
   descriptors that are not connections. The container's nofile ulimit is set to the same
   value (soft = hard), so nginx can raise its workers' limit to it without privileges.
4. ``worker_processes``: one per vCPU up to ``MAX_WORKER_PROCESSES``.
5. ``max_streams_per_client``: the per-address ``limit_conn``: by default the sequences vLLM
   runs in one batch (``max_num_seqs``), so one address can fill the GPU but not the proxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from sizing.memory import batch_defaults

if TYPE_CHECKING:
    from config.settings import StackConfig
    from sizing.plan import SizingPlan

# Measured with `bench/proxy_overhead.py --streams 1000 4000` (nginx 1.22, OpenSSL 3, TLS 1.3):
# resident memory of the nginx workers with N streams open, minus idle, over N: 55 KiB at 1000
# streams, 37 KiB at 4000 (the TLS state and buffers, the request pool, the upstream buffer).
# Rounded up so the estimate stays on the safe side of the measurement.
STREAM_MEMORY_KIB = 64

# Share of the host's RAM the proxy may use for streams (512 MiB on the smallest GPU hosts, 16
# GiB): vLLM's API server, tokenizers and model loading need the rest.
PROXY_MEMORY_SHARE = 1 / 32

# Every stream's upstream connection takes a local port from 127.0.0.1 to vLLM's port, out of
# Linux's default ip_local_port_range 32768-60999 (28232 ports). Half of it stays free for
# connections in TIME_WAIT after streams end.
MAX_STREAMS = 16384

# A proxy of one GPU server is I/O bound: one worker carries thousands of streams (the bench's
# 4000 streams used a fraction of a core). More workers only take memory from vLLM's host.
MAX_WORKER_PROCESSES = 8

# Idle connections to vLLM each worker keeps for reuse (nginx `keepalive` in the upstream).
UPSTREAM_KEEPALIVE = 32

# Descriptors a worker holds besides connections: listening sockets, log files, epoll and
# eventfd, channels to the master and the other workers (two per worker), a file being served
# to an ACME validator.
NON_CONNECTION_FDS = 64 + 2 * MAX_WORKER_PROCESSES

# OpenAI's rule of thumb for English text: one token is about 4 characters
# (help.openai.com, "What are tokens and how to count them?"). A prompt's JSON body is larger
# still (escapes, structure), so this is a lower bound.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class ProxyLimits:
    """Explicit nginx limits for one host. Counts, not bytes."""

    worker_processes: int
    worker_connections: int  # per worker
    worker_rlimit_nofile: int  # per worker; also the container's nofile ulimit (soft = hard)
    max_streams: int  # proxied requests in flight, all clients (503 past it)
    max_streams_per_client: int  # per client address (429 past it)

    def __post_init__(self) -> None:
        if self.worker_processes < 1:
            raise ValueError(f"worker_processes={self.worker_processes} must be at least 1")
        if not 1 <= self.max_streams_per_client <= self.max_streams:
            raise ValueError(
                f"max_streams_per_client={self.max_streams_per_client} must be between 1 and "
                f"max_streams={self.max_streams}"
            )
        needed = 2 * self.max_streams + UPSTREAM_KEEPALIVE
        if self.worker_connections < needed:
            raise ValueError(
                f"worker_connections={self.worker_connections} cannot hold {self.max_streams} "
                f"streams (two connections each, plus {UPSTREAM_KEEPALIVE} idle to vLLM): "
                f"at least {needed}"
            )
        if self.worker_rlimit_nofile < self.worker_connections + NON_CONNECTION_FDS:
            raise ValueError(
                f"worker_rlimit_nofile={self.worker_rlimit_nofile} must exceed "
                f"worker_connections={self.worker_connections} by {NON_CONNECTION_FDS} "
                f"(listeners, logs, channels)"
            )

    @property
    def container_nofile(self) -> int:
        """The proxy container's nofile ulimit, soft and hard: the workers' own limit."""
        return self.worker_rlimit_nofile


def streams_for_memory(memory_gib: float) -> int:
    """Streams the proxy's memory share holds on a host with `memory_gib` GiB of RAM."""
    by_memory = math.floor(memory_gib * 1024 * 1024 * PROXY_MEMORY_SHARE / STREAM_MEMORY_KIB)
    return max(1, min(MAX_STREAMS, by_memory))


def derive_limits(
    *, vcpus: int, memory_gib: float, default_per_client: int, per_client: Optional[int] = None
) -> ProxyLimits:
    """Limits for a host with `vcpus` vCPUs and `memory_gib` GiB of RAM.

    `default_per_client` applies when `per_client` is None (the caller passes vLLM's
    max_num_seqs), capped at the host's stream capacity. Raises ValueError when `per_client`
    is above that capacity, which no client could ever reach.
    """
    if vcpus < 1 or memory_gib <= 0:
        raise ValueError(f"an instance needs vCPUs and memory (got {vcpus} vCPUs, {memory_gib} GiB)")
    max_streams = streams_for_memory(memory_gib)
    if per_client is not None and per_client > max_streams:
        raise ValueError(
            f"{per_client} concurrent requests per client is more than the proxy admits from "
            f"all clients together on this host ({max_streams}: {PROXY_MEMORY_SHARE:.4g} of "
            f"{memory_gib:g} GiB at {STREAM_MEMORY_KIB} KiB per stream)"
        )
    connections = 2 * max_streams + max_streams // 4 + UPSTREAM_KEEPALIVE
    return ProxyLimits(
        worker_processes=min(vcpus, MAX_WORKER_PROCESSES),
        worker_connections=connections,
        worker_rlimit_nofile=connections + NON_CONNECTION_FDS,
        max_streams=max_streams,
        max_streams_per_client=per_client if per_client is not None else min(default_per_client, max_streams),
    )


def vllm_max_num_seqs(plan: "SizingPlan") -> int:
    """Sequences vLLM batches at once: --max-num-seqs, else vLLM's default for the GPU."""
    return plan.max_num_seqs or batch_defaults(plan.instance)[1]


def stack_limits(config: "StackConfig", plan: "SizingPlan") -> ProxyLimits:
    """The proxy's limits on the planned instance.

    Raises ConfigError, naming the keys, for settings the proxy could never honour there:
    maxConcurrentRequestsPerClient above what the host admits from all clients together, or
    maxRequestBodyMb too small for a full-length prompt (maxModelLen tokens of ordinary text).
    """
    from config.constants import NAMESPACE
    from config.validation import ConfigError

    problems = []
    limits = None
    try:
        limits = derive_limits(
            vcpus=plan.instance.vcpus,
            memory_gib=plan.instance.memory_gib,
            default_per_client=vllm_max_num_seqs(plan),
            per_client=config.max_concurrent_requests_per_client,
        )
    except ValueError as exc:
        problems.append(
            f"{NAMESPACE}:maxConcurrentRequestsPerClient={config.max_concurrent_requests_per_client} "
            f"can never be reached on {plan.instance.name}: {exc}; lower it, or unset it for the "
            f"default ({vllm_max_num_seqs(plan)}, the sequences vLLM batches at once)"
        )
    prompt_mib = math.ceil(plan.max_model_len * CHARS_PER_TOKEN / 2**20)
    if config.max_request_body_mb < prompt_mib:
        problems.append(
            f"{NAMESPACE}:maxRequestBodyMb={config.max_request_body_mb} is smaller than a "
            f"full-length prompt: maxModelLen {plan.max_model_len} tokens is about {prompt_mib} MiB "
            f"of text at {CHARS_PER_TOKEN} characters per token, which the proxy would refuse "
            f"(413); raise maxRequestBodyMb to at least {prompt_mib}, or lower maxModelLen"
        )
    if problems:
        raise ConfigError(problems)
    assert limits is not None
    return limits
