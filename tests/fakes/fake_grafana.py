"""A stand-in for Grafana behind nginx's /grafana/ location, in a thread of the test process.

Every HTTP answer is JSON reporting the path and the headers that reached it (with Grafana's
`"database": "ok"` health field), so tests see
what nginx forwarded. `GET /grafana/api/live/ws` with `Upgrade: websocket` is answered with
101 Switching Protocols, after which the server echoes every byte back (enough to prove nginx
tunnels a WebSocket both ways; no frame parsing needed).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LIVE_PATH = "/grafana/api/live/ws"
ECHOED_HEADERS = ("host", "upgrade", "connection", "x-forwarded-for", "x-forwarded-proto", "x-real-ip")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path == LIVE_PATH and self.headers.get("Upgrade", "").lower() == "websocket":
            self._tunnel()
            return
        # Grafana's /api/health answers {"database": "ok", ...}; the rest is for the tests.
        seen = {"database": "ok", "path": self.path, "headers": {h: self.headers.get(h) for h in ECHOED_HEADERS}}
        body = json.dumps(seen).encode()
        self.send_response(200 if self.path.startswith("/grafana/") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _tunnel(self) -> None:
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            data = self.connection.recv(4096)
            if not data:
                return
            self.connection.sendall(data)


@dataclass
class FakeGrafana:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def address(self) -> str:
        return f"{self.server.server_address[0]}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_fake_grafana(host: str = "127.0.0.1") -> FakeGrafana:
    """Listens on a free port of `host` until stop()."""
    server = ThreadingHTTPServer((host, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return FakeGrafana(server, thread)
