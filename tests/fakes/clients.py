"""Clients that misbehave on purpose, on raw sockets: what curl and the openai client will not do
(stop reading, read slowly, send malformed requests, vanish mid-stream, come from another
loopback address). Plus a reader for nginx's JSON access log.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def tls_context(ca_cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    return context


def connect(
    host: str, port: int, *, tls: Optional[ssl.SSLContext] = None, source: Optional[str] = None,
    rcvbuf: Optional[int] = None, timeout_s: float = 15.0,
) -> socket.socket:
    """A connection from `source` (a 127.0.0.x address), with a fixed small receive buffer when
    `rcvbuf` is given (set before connecting, so the window never grows)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        sock.bind((source, 0))
    sock.settimeout(timeout_s)
    sock.connect((host, port))
    return tls.wrap_socket(sock, server_hostname=host) if tls else sock


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    if body and "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, bytes already read past the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the response head: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def read_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    """The rest of a Content-Length body after read_head."""
    body = rest
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return body


def exchange(host: str, port: int, raw: bytes, *, tls: Optional[ssl.SSLContext] = None,
             source: Optional[str] = None, timeout_s: float = 15.0) -> Response:
    """Sends `raw` as is and reads one response (Content-Length, chunked, or until close)."""
    with connect(host, port, tls=tls, source=source, timeout_s=timeout_s) as sock:
        sock.sendall(raw)
        status, headers, body = read_head(sock)
        if "content-length" in headers:
            while len(body) < int(headers["content-length"]):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return Response(status, headers, body)
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionError, ssl.SSLError, socket.timeout):
                break
            if not chunk:
                break
            body += chunk
            if headers.get("transfer-encoding") == "chunked" and b"\r\n0\r\n" in body[-512:] and body.endswith(b"\r\n\r\n"):
                break
        return Response(status, headers, dechunk(body) if headers.get("transfer-encoding") == "chunked" else body)


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (trailers dropped); stops at what is there."""
    out, rest = b"", data
    while b"\r\n" in rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def read_paced(sock: socket.socket, rest: bytes, *, burst: int, pause_s: float,
               until: bytes, timeout_s: float) -> tuple[bytes, bool]:
    """Reads `burst` bytes at a time with `pause_s` between bursts until `until` arrives or the
    connection ends; (everything read, whether `until` arrived)."""
    data, deadline = rest, time.monotonic() + timeout_s
    while until not in data[-4096:] and time.monotonic() < deadline:
        got = 0
        while got < burst and until not in data[-4096:]:
            try:
                chunk = sock.recv(min(65536, burst - got))
            except (ConnectionError, ssl.SSLError, OSError):
                return data, False
            if not chunk:
                return data, False
            data, got = data + chunk, got + len(chunk)
        time.sleep(pause_s)
    return data, until in data[-4096:]


def access_log_entry(read_log: Callable[[], str], match: Callable[[dict], bool], timeout_s: float = 10.0) -> dict:
    """The first JSON access-log entry `match` accepts, waiting for nginx to write it."""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in read_log().splitlines():
            entry = json.loads(line)
            if match(entry):
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching access log entry in:\n{read_log()[-3000:]}")
        time.sleep(0.05)
