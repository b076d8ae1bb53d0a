"""Thousands of concurrent SSE streams on loopback, cheaply: an asyncio server and client.

The threaded fake vLLM (fake_vllm.py) spends a thread per stream and the old benchmark a
thread per client, so at thousands of streams they measure themselves. Here one event loop
serves every stream and one drives every client, so what is left to measure is the proxy.

Server (run it in its own process: `python -m tests.fakes.streams --port 0`): HTTP/1.1 with
keep-alive; `POST /v1/chat/completions` with a JSON body `{"chunks": N, "delay_ms": D}` answers
an event stream of N content events D ms apart, then `data: [DONE]`; `GET /stats` answers
`{"running", "peak", "finished"}` streams (`GET /stats/reset` answers the same, then starts a new peak). Prints `streams listening on http://HOST:PORT`.

Client: `run_streams()` opens every connection first, then sends every request at once and
reads each stream to its end, recording the time to first token (TTFT, from sending the request
to the first content event) and errors (a status other than 200, a stream that ends before
[DONE], a connection the proxy refused or reset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

READY_LINE = "streams listening on "


def raise_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (thousands of sockets); returns the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- server ---------------------------------------------------------------------------------
class _Stats:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.finished = 0


async def _read_request(reader: asyncio.StreamReader) -> Optional[tuple[str, str, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _serve_stream(writer: asyncio.StreamWriter, body: bytes, stats: _Stats) -> None:
    request = json.loads(body or b"{}")
    chunks, delay_s = int(request.get("chunks", 10)), float(request.get("delay_ms", 0)) / 1000
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    stats.running += 1
    stats.peak = max(stats.peak, stats.running)
    try:
        for index in range(chunks):
            if index:
                await asyncio.sleep(delay_s)
            event = json.dumps({"choices": [{"index": 0, "delta": {"content": f"tok{index} "}}]})
            writer.write(_chunk(f"data: {event}\n\n".encode()))
            await writer.drain()
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        stats.finished += 1
    finally:
        stats.running -= 1


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: _Stats) -> None:
    try:
        while True:
            method, path, body = await _read_request(reader)
            if method == "POST" and path.startswith("/v1/chat/completions"):
                await _serve_stream(writer, body, stats)
            else:
                data = json.dumps({"running": stats.running, "peak": stats.peak, "finished": stats.finished}).encode()
                if path == "/stats/reset":
                    stats.peak = stats.running
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(data), data))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int) -> None:
    stats = _Stats()
    server = await asyncio.start_server(lambda r, w: _handle(r, w, stats), host, port, backlog=8192)
    bound = server.sockets[0].getsockname()
    print(f"{READY_LINE}http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="asyncio SSE stream server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    raise_file_limit()
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


# --- client ---------------------------------------------------------------------------------
@dataclass
class StreamResult:
    error: Optional[str] = None
    sent: float = 0.0
    first: float = 0.0
    last: float = 0.0
    events: int = 0


@dataclass
class StreamsRun:
    """One level: N streams at once."""

    streams: int
    results: list[StreamResult] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def ok(self) -> list[StreamResult]:
        return [r for r in self.results if r.error is None]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if r.error is not None]

    def ttft_ms(self, quantile: float) -> float:
        values = sorted((r.first - r.sent) * 1000 for r in self.ok)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(quantile * (len(values) - 1)))]

    @property
    def events_per_s(self) -> float:
        events = sum(r.events for r in self.ok)
        return events / (self.ended - self.started) if self.ended > self.started else 0.0

    def error_summary(self) -> str:
        counts: dict[str, int] = {}
        for error in self.errors:
            counts[error] = counts.get(error, 0) + 1
        return ", ".join(f"{n}x {e}" for e, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


async def _read_chunked_events(reader: asyncio.StreamReader, result: StreamResult) -> bool:
    """Decodes the chunked body, counting content events; True when [DONE] arrived."""
    pending = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return False
        pending += await reader.readexactly(size)
        await reader.readexactly(2)
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line == b"data: [DONE]":
                while (await reader.readuntil(b"\r\n")) != b"0\r\n":
                    pass
                await reader.readuntil(b"\r\n")
                return True
            if line.startswith(b"data: ") and b'"content"' in line:
                now = time.perf_counter()
                result.first = result.first or now
                result.last = now
                result.events += 1


async def _one_stream(
    host: str, port: int, source: str, tls: Optional[ssl.SSLContext], request: bytes,
    connected: asyncio.Semaphore, go: asyncio.Event, ready: list[int], timeout_s: float,
) -> StreamResult:
    result = StreamResult()
    writer = None
    try:
        async with connected:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=tls, local_addr=(source, 0),
                                        server_hostname=host if tls else None, limit=2**20),
                timeout_s,
            )
        ready[0] += 1
        await go.wait()
        result.sent = time.perf_counter()
        writer.write(request)
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout_s)
        head = status_line + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        status = int(status_line.split()[1])
        if status != 200:
            result.error = f"HTTP {status}"
        elif b"chunked" not in head.lower():
            result.error = "not chunked"
        elif not await asyncio.wait_for(_read_chunked_events(reader, result), timeout_s):
            result.error = "ended before [DONE]"
    except asyncio.TimeoutError:
        result.error = "timeout"
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
        result.error = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    return result


async def run_streams(
    *, host: str, port: int, streams: int, chunks: int, delay_ms: float,
    tls: Optional[ssl.SSLContext] = None, sources: tuple[str, ...] = ("127.0.0.1",),
    api_key: str = "sk-streams", connect_concurrency: int = 256, timeout_s: float = 120.0,
) -> StreamsRun:
    """`streams` concurrent streams to host:port, spread over the `sources` addresses."""
    body = json.dumps({"model": "fake-model", "stream": True, "chunks": chunks, "delay_ms": delay_ms,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    connected, go, ready = asyncio.Semaphore(connect_concurrency), asyncio.Event(), [0]
    tasks = [
        asyncio.create_task(_one_stream(host, port, sources[i % len(sources)], tls, request, connected, go,
                                        ready, timeout_s))
        for i in range(streams)
    ]
    deadline = time.monotonic() + timeout_s
    while ready[0] + sum(t.done() for t in tasks) < streams and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # every connection open (or failed) before any request
    run = StreamsRun(streams=streams, started=time.perf_counter())
    go.set()
    run.results = list(await asyncio.gather(*tasks))
    run.ended = max([r.last for r in run.ok] or [time.perf_counter()])
    return run


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    main()
