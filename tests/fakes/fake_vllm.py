"""A stand-in for vLLM's OpenAI-compatible server, so the proxy can be tested without a GPU.

Stdlib only. It mimics what the proxy depends on (vLLM 0.33, see shared reference
vllm-notes.md): `/health` and `/metrics` open, every path under the guarded prefixes
needs `Authorization: Bearer <key>` and gets vLLM's 401 body otherwise, chat completions
plain and streamed as server-sent events, one flushed HTTP chunk per event.

A model without a chat template (`--no-chat-template`) answers chat completions with vLLM's
400 (vllm/renderers/hf.py, safe_apply_chat_template) and still serves plain completions;
`--fail-generation STATUS` makes every generation answer STATUS with vLLM's error body, the way
a broken tokenizer (400) or a CUDA failure on the first batch (500) surfaces.

Each chat answer also carries a `fake_request` object (an extension the real server does
not have) reporting the body size and the headers it received (all but Authorization), so
tests can see what crossed the proxy. Extensions in the request body misbehave on purpose:
`fake_chunk_delay_ms` paces the stream, `fake_chunk_bytes` pads each content chunk,
`fake_header_delay_ms` waits before answering at all, `fake_abort_after` closes the
connection after that many content chunks (a crash mid-stream), `fake_pause_after` /
`fake_pause_ms` go silent mid-stream.
`--lora-modules NAME=PATH ...` serves LoRA adapters as vLLM 0.33 lists and accepts them;
`--fail-lora-generation STATUS` fails every generation through one.

    python -m tests.fakes.fake_vllm --port 8000 --api-key KEY [--chunk-delay-ms 20]
        [--metrics-overrides FILE]

`/metrics` serves every metric family vLLM 0.33 always registers, under its real name
(tests/fakes/exposition.py, from serving/monitoring/metrics/vllm-0.33.0.txt), with the
requests running now. `--metrics-overrides` names a JSON file read at each scrape: gauge
values by family name ({"vllm:kv_cache_usage_perc": 0.95}), and "status" to answer /metrics
with that HTTP status instead (a vLLM that Prometheus cannot scrape).

A chat request with `tools` and tool_choice "auto" is answered as `--tool-calls` says
(TOOL_CALL_MODES): 400 as vLLM without --enable-auto-tool-choice (the default), a parsed call,
a call left unparsed in content (a parser that does not match the model), or a call whose
arguments are not JSON.

`--shutdown-timeout S` (S > 0) gives SIGTERM vLLM 0.33's meaning (vllm/entrypoints/launchers/
launcher.py handle_shutdown; vllm/v1/engine/core.py _reject_add_in_shutdown): requests already
running go on for up to S s, `/health` stays 200, and a new generation is not refused but
finished at once with finish_reason "abort" and no tokens; then the server exits. Without it
SIGTERM ends the process at once (vLLM's default 0 aborts what runs).

The key can come from the VLLM_API_KEY environment variable instead, as with vLLM itself;
helpers use that so the key is not on a command line. Prints one line
`fake-vllm listening on http://HOST:PORT` once it accepts connections (use --port 0 to
let the OS pick a free port).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from tests.fakes.exposition import vllm_text

API_KEY_ENV = "VLLM_API_KEY"
DEFAULT_MODEL = "fake-model"
# vllm/entrypoints/serve/middleware/authenticate.py GUARDED_PREFIX
GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")
FORWARDING_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip")


@dataclass(frozen=True)
class FakeSettings:
    api_key: Optional[str]
    model: str = DEFAULT_MODEL
    chunks: int = 16  # streamed content chunks when the request gives no max_tokens
    chunk_delay_s: float = 0.02
    max_model_len: int = 32768
    metrics_overrides: Optional[str] = None  # JSON file read at each /metrics request
    chat_template: bool = True
    fail_generation: Optional[int] = None  # HTTP status every generation answers with
    shutdown_timeout_s: float = 0  # > 0: SIGTERM drains as vLLM 0.33's --shutdown-timeout
    tool_calls: str = "off"  # off | parse | unparsed | bad-arguments (see TOOL_CALL_MODES)
    lora_modules: tuple[tuple[str, str], ...] = ()  # (name, path) as --lora-modules name=path
    fail_lora_generation: Optional[int] = None  # HTTP status a generation through an adapter answers


# vllm/renderers/hf.py (safe_apply_chat_template) raises this for a tokenizer without a template.
NO_CHAT_TEMPLATE = (
    "As of transformers v4.44, default chat template is no longer allowed, so you must provide "
    "a chat template if the tokenizer does not define one."
)
# Error type names vLLM 0.33 puts in ErrorInfo.type (vllm/entrypoints/serve/engine/protocol.py).
# How a chat request with `tools` and tool_choice "auto" is answered (--tool-calls):
TOOL_CALL_MODES = (
    "off",  # vLLM without --enable-auto-tool-choice: 400 (vllm/renderers/online_renderer.py)
    "parse",  # a matching parser: the call in message.tool_calls, finish_reason "tool_calls"
    "unparsed",  # a parser that does not match the model's format: the call left in content
    "bad-arguments",  # a call whose arguments are not JSON (vllm-project/vllm#22885)
)
AUTO_TOOL_CHOICE_400 = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)

ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.finished = 0
        self.connections = 0  # open client connections, idle keep-alive ones included

    def connection(self, delta: int) -> None:
        with self._lock:
            self.connections += delta

    def start(self) -> None:
        with self._lock:
            self.running += 1

    def finish(self) -> None:
        with self._lock:
            self.running -= 1
            self.finished += 1


class FakeVllmServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes 32 simultaneous connects wait for SYN retries.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], settings: FakeSettings):
        super().__init__(address, FakeVllmHandler)
        self.settings = settings
        self.counters = _Counters()
        self.started = time.monotonic()
        self.shutting_down = threading.Event()

    def drain_and_exit(self) -> None:
        """SIGTERM with --shutdown-timeout: wait for the running requests, then stop serving."""
        self.shutting_down.set()
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while self.counters.running and time.monotonic() < deadline:
            time.sleep(0.02)
        self.shutdown()


class FakeVllmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses, like uvicorn
    # TCP_NODELAY, as asyncio (so uvicorn) sets it: otherwise a body written after its
    # headers waits ~40 ms for a delayed ACK, and every figure would measure that.
    disable_nagle_algorithm = True
    server: FakeVllmServer

    def setup(self) -> None:
        super().setup()
        self.server.counters.connection(+1)

    def finish(self) -> None:
        self.server.counters.connection(-1)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # tests read nginx's access log; this one would only add noise

    # --- routing --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if path.startswith(GUARDED_PREFIXES) and not self._authorized():
            self._send_json(401, {"error": "Unauthorized"})
            return
        route = {
            ("GET", "/health"): lambda: self._send_bytes(200, b"", "application/json"),
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): lambda: self._chat(body),
            ("POST", "/v1/completions"): lambda: self._completions(body),
        }.get((method, path))
        # vLLM 0.33 mounts its metrics app on a regex, not a path: anything starting /metrics
        # (vllm/entrypoints/serve/instrumentator/metrics.py, path_regex "^/metrics(?P<path>.*)$"),
        # and uvicorn hands it the raw path, dot segments and all.
        if route is None and method == "GET" and path.startswith("/metrics"):
            route = self._metrics
        if route is None:
            self._send_json(404, {"detail": "Not Found"})
        else:
            route()

    def _authorized(self) -> bool:
        key = self.server.settings.api_key
        if not key:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    # --- endpoints ------------------------------------------------------------------
    def _metrics(self) -> None:
        settings = self.server.settings
        values: dict[str, Any] = {"vllm:num_requests_running": self.server.counters.running}
        if settings.metrics_overrides and os.path.exists(settings.metrics_overrides):
            with open(settings.metrics_overrides) as handle:
                values.update(json.load(handle))
        status = int(values.pop("status", 200))
        if status != 200:
            self._send_json(status, {"detail": "metrics unavailable (fake)"})
            return
        text = vllm_text(settings.model, start=self.server.started, values=values)
        # Not vLLM's: lets a test see the connections the proxy holds open (idle ones included).
        text += f"# TYPE fake_open_connections gauge\nfake_open_connections {self.server.counters.connections}\n"
        self._send_bytes(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _models(self) -> None:
        settings = self.server.settings
        model = {
            "id": settings.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": settings.model,
            "parent": None,
            "max_model_len": settings.max_model_len,
        }
        # vLLM 0.33 lists each loaded adapter after the base model, its parent
        # (vllm/entrypoints/openai/models/serving.py show_available_models).
        adapters = [
            {**model, "id": name, "root": path, "parent": settings.model, "max_model_len": None}
            for name, path in settings.lora_modules
        ]
        self._send_json(200, {"object": "list", "data": [model, *adapters]})

    def _chat(self, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            self._send_json(400, _error("body must be JSON with a messages list", "BadRequestError", 400))
            return
        settings = self.server.settings
        if self._generation_refused(request):
            return
        if not settings.chat_template:
            self._send_json(400, _error(NO_CHAT_TEMPLATE, "BadRequestError", 400))
            return
        chunks = int(request.get("max_tokens") or settings.chunks)
        if self.server.shutting_down.is_set():
            chunks = 0  # vLLM 0.33 in shutdown: admitted, then finished with "abort", no tokens
        delay_ms = request.get("fake_chunk_delay_ms")
        delay_s = settings.chunk_delay_s if delay_ms is None else float(delay_ms) / 1000
        seen = {
            "body_bytes": len(body),
            "prompt_chars": sum(len(str(m.get("content", ""))) for m in messages),
            "headers": {h: self.headers.get(h) for h in FORWARDING_HEADERS},
            "all_headers": {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"},
        }
        if request.get("tools") and request.get("tool_choice", "auto") == "auto":
            self._tool_call(request, seen)
            return
        time.sleep(float(request.get("fake_header_delay_ms") or 0) / 1000)
        self.server.counters.start()
        try:
            if request.get("stream"):
                self._stream_chat(chunks, delay_s, seen, request)
            else:
                self._send_json(200, _completion(settings.model, chunks, seen))
        finally:
            self.server.counters.finish()

    def _tool_call(self, request: dict, seen: dict) -> None:
        """A chat request with tools and tool_choice "auto", answered as --tool-calls says."""
        mode = self.server.settings.tool_calls
        if mode == "off":
            self._send_json(400, _error(AUTO_TOOL_CHOICE_400, "BadRequestError", 400))
            return
        name = request["tools"][0]["function"]["name"]
        arguments = '{"city": "Paris"}' if mode == "parse" else '{"city": "Paris"'
        answer = _completion(self.server.settings.model, 0, seen)
        message = answer["choices"][0]["message"]
        if mode == "unparsed":
            message["content"] = f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'
        else:
            message.update(content=None, tool_calls=[{
                "id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}", "type": "function",
                "function": {"name": name, "arguments": arguments},
            }])
            answer["choices"][0]["finish_reason"] = "tool_calls"
        self._send_json(200, answer)

    def _generation_refused(self, request: dict) -> bool:
        """Answers (and returns True) when the request names another model or generation fails."""
        settings = self.server.settings
        adapters = [name for name, _ in settings.lora_modules]
        if request.get("model") in adapters and settings.fail_lora_generation is not None:
            status = settings.fail_lora_generation
            kind = ERROR_TYPES.get(status, "InternalServerError")
            self._send_json(status, _error(f"fake-vllm: generation through adapter failed with {status} (as asked)", kind, status))
            return True
        if request.get("model") != settings.model and request.get("model") not in adapters:
            # vllm/entrypoints/serve/engine/serving.py (_check_model): the served names, and
            # param "model", as a real vLLM answers (tests/real_vllm/test_fake_agrees.py).
            message = f"The model `{request.get('model')}` does not exist. Valid aliases: {settings.model}."
            self._send_json(404, _error(message, "NotFoundError", 404, param="model"))
            return True
        status = settings.fail_generation
        if status is not None:
            kind = ERROR_TYPES.get(status, "InternalServerError")
            self._send_json(status, _error(f"fake-vllm: generation failed with {status} (as asked)", kind, status))
            return True
        return False

    def _completions(self, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
            prompt = request["prompt"]
        except (ValueError, KeyError, TypeError):
            self._send_json(400, _error("body must be JSON with a prompt", "BadRequestError", 400))
            return
        if self._generation_refused(request):
            return
        tokens = int(request.get("max_tokens") or self.server.settings.chunks)
        self._send_json(200, _text_completion(self.server.settings.model, tokens, len(str(prompt))))

    def _stream_chat(self, chunks: int, delay_s: float, seen: dict, request: dict) -> None:
        model = self.server.settings.model
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(choices: list, **extra: Any) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        def choice(delta: dict, finish: Optional[str] = None) -> list:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        pad = " " * int(request.get("fake_chunk_bytes") or 0)
        abort_after = request.get("fake_abort_after")
        pause_after, pause_s = request.get("fake_pause_after"), float(request.get("fake_pause_ms") or 0) / 1000
        try:
            self._write_chunk(event(choice({"role": "assistant", "content": ""})))
            for index in range(chunks):
                if index == abort_after:
                    self.close_connection = True
                    return  # no final chunk: the stream ends as if the server died
                if index == pause_after:
                    time.sleep(pause_s)
                if index:
                    time.sleep(delay_s)
                self._write_chunk(event(choice({"content": f"tok{index} {pad}"})))
            finish = "abort" if self.server.shutting_down.is_set() and not chunks else "stop"
            self._write_chunk(event(choice({}, finish), fake_request=seen))
            if (request.get("stream_options") or {}).get("include_usage"):
                self._write_chunk(event([], usage=_usage(seen["prompt_chars"], chunks)))
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream, as clients do

    # --- HTTP plumbing --------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _write_chunk(self, data: bytes) -> None:
        # wfile is unbuffered, so each event leaves in its own write, as vLLM sends it.
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send_json(self, status: int, payload: dict) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json")

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(message: str, kind: str, code: int, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _usage(prompt_chars: int, completion_tokens: int) -> dict:
    prompt_tokens = max(1, prompt_chars // 4)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _completion(model: str, chunks: int, seen: dict) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(f"tok{i} " for i in range(chunks))},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(seen["prompt_chars"], chunks),
        "fake_request": seen,
    }


def _text_completion(model: str, tokens: int, prompt_chars: int) -> dict:
    """A /v1/completions answer (vLLM's CompletionResponse shape)."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "text": "".join(f" tok{i}" for i in range(tokens)), "logprobs": None,
             "finish_reason": "length", "stop_reason": None}
        ],
        "usage": _usage(prompt_chars, tokens),
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"default: ${API_KEY_ENV}; none = open"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--chunks", type=int, default=16, help="streamed chunks without max_tokens")
    parser.add_argument("--chunk-delay-ms", type=float, default=20.0)
    parser.add_argument("--metrics-overrides", help="JSON file of gauge values (and status) for /metrics")
    parser.add_argument("--no-chat-template", action="store_true", help="a model without a chat template")
    parser.add_argument("--fail-generation", type=int, metavar="STATUS", help="every generation answers STATUS")
    parser.add_argument("--tool-calls", choices=TOOL_CALL_MODES, default="off",
                        help='how a request with tools and tool_choice "auto" is answered')
    parser.add_argument("--shutdown-timeout", type=float, default=0,
                        help="> 0: SIGTERM finishes running requests for up to this long (vLLM 0.33)")
    parser.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH",
                        help="LoRA adapters served beside the model (vLLM's name=path form)")
    parser.add_argument("--fail-lora-generation", type=int, metavar="STATUS",
                        help="every generation through an adapter answers STATUS")
    args = parser.parse_args(argv)
    settings = FakeSettings(
        api_key=args.api_key or None,
        model=args.model,
        chunks=args.chunks,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        metrics_overrides=args.metrics_overrides,
        chat_template=not args.no_chat_template,
        fail_generation=args.fail_generation,
        shutdown_timeout_s=args.shutdown_timeout,
        tool_calls=args.tool_calls,
        lora_modules=tuple(tuple(m.split("=", 1)) for m in args.lora_modules),  # type: ignore[misc]
        fail_lora_generation=args.fail_lora_generation,
    )
    server = FakeVllmServer((args.host, args.port), settings)
    if settings.shutdown_timeout_s > 0:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.drain_and_exit, daemon=True).start())
    host, port = server.server_address[:2]
    print(f"fake-vllm listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
