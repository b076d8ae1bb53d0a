"""A Prometheus exporter stand-in in a thread of the test process: GET /metrics answers what
its `render` callable returns at that moment, or `failing_status` while that is set."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

# What prometheus_client and the Go client libraries send (text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FakeExporter(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, render: Callable[[], str], host: str = "127.0.0.1"):
        super().__init__((host, 0), _Handler)
        self.render = render
        self.failing_status: Optional[int] = None
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeExporter

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        status = 404 if self.path.split("?", 1)[0] != "/metrics" else (self.server.failing_status or 200)
        body = self.server.render().encode() if status == 200 else b"unavailable\n"
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
