"""The idle-stop watcher (components/scripts/idle_stop.sh) against a real vLLM's /metrics: busy
while a stream runs, idle (and the stop) after it ended.

The host is tests/scripts' simulated one (`systemctl poweroff` and `ss` are stubs, curl is the
real one), with the same shrunk timings (tests/scripts/test_idle_stop.py: a look every 0.1 s,
stopped after 1 s without requests).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.request

import pytest

from tests.scripts.test_host_scripts import Host
from tests.scripts.test_idle_stop import IDLE_SECONDS, Watcher

pytestmark = pytest.mark.real_vllm


@pytest.fixture
def host(tmp_path) -> Host:
    host = Host(tmp_path)
    host.add_command("ss")
    (host.bin / "curl").unlink()
    real_curl = shutil.which("curl")
    assert real_curl, "the tests need curl (apt-get install curl)"
    (host.bin / "curl").symlink_to(real_curl)
    return host


def streams(server, stop: threading.Event, started: threading.Event, finished: list[str]) -> None:
    """Chat streams of 2,000 tokens one after the other until `stop` (ignore_eos: the random model
    must not end them early). One lasts about 3 s on this project's machines: longer than the
    watcher's idle time, so a watcher that ignored the running gauge would stop mid-stream.
    Read raw, not parsed: on a busy machine a slow reader lets vLLM's engine finish long before
    the client has the last event, and the engine's view is what the watcher reads."""
    body = json.dumps({"model": server.served_name, "messages": [{"role": "user", "content": "Count to ten."}],
                       "max_tokens": 2000, "stream": True, "ignore_eos": True}).encode()
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    while not stop.is_set():
        request = urllib.request.Request(f"{server.base_url}/v1/chat/completions", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
            tail = b""
            while data := answer.read1(65536):
                started.set()
                tail = (tail + data)[-4096:]
        finished += re.findall(r'"finish_reason":"(\w+)"', tail.decode(errors="replace"))


def running(server) -> float:
    """vllm:num_requests_running, read from vLLM directly."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in server.metrics().splitlines()
               if line.startswith("vllm:num_requests_running{"))


def test_busy_while_streams_run_then_stops_the_host_after_the_idle_time(host, vllm_server):
    stop, started, finished = threading.Event(), threading.Event(), []
    loops = [threading.Thread(target=streams, args=(vllm_server, stop, started, finished), daemon=True)
             for _ in range(2)]  # two at a time: the engine never waits for one client
    for loop in loops:
        loop.start()
    watcher = Watcher(host, f"{vllm_server.base_url}/metrics")
    try:
        assert started.wait(timeout=60), "no stream started"
        watcher.hold(4 * IDLE_SECONDS)
        stop.set()
        last_seen_running = time.monotonic()
        while any(loop.is_alive() for loop in loops):
            if running(vllm_server) > 0:
                last_seen_running = time.monotonic()
            time.sleep(0.05)
        assert finished and set(finished) == {"length"}, finished  # each ran to its max_tokens
        # Busy for either of the watcher's reasons: vLLM's running gauge, or its finished-requests
        # counter moving (the gauge read 0 while streams ran on a machine after the benchmark).
        assert ("request(s) running, 0 waiting" in watcher.output()
                or "requests finished since the last look" in watcher.output()), watcher.output()
        stopped_at = watcher.wait_for_stop(timeout=IDLE_SECONDS + 30)
        # The engine was still generating at last_seen_running: the idle time starts after it.
        assert stopped_at - last_seen_running >= IDLE_SECONDS
        assert (host.state / "calls.log").read_text().splitlines().count("systemctl poweroff") == 1
    finally:
        stop.set()
        watcher.close()
        for loop in loops:
            loop.join(timeout=120)
