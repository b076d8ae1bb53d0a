"""The idle-stop watcher (components/scripts/idle_stop.sh) against a real vLLM's /metrics: busy
while a stream runs, idle (and the stop) after it ended.

The host is tests/scripts' simulated one (`systemctl poweroff` and `ss` are stubs, curl is the
real one), with the same shrunk timings (tests/scripts/test_idle_stop.py: a look every 0.1 s,
stopped after 1 s without requests).
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from openai import OpenAI

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
    watcher's idle time, so a watcher that ignored the running gauge would stop mid-stream."""
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)
    while not stop.is_set():
        stream = client.chat.completions.create(
            model=server.served_name, messages=[{"role": "user", "content": "Count to ten."}],
            max_tokens=2000, stream=True, extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            started.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                finished.append(chunk.choices[0].finish_reason)


def test_busy_while_streams_run_then_stops_the_host_after_the_idle_time(host, vllm_server):
    stop, started, finished = threading.Event(), threading.Event(), []
    streamer = threading.Thread(target=streams, args=(vllm_server, stop, started, finished), daemon=True)
    streamer.start()
    watcher = Watcher(host, f"{vllm_server.base_url}/metrics")
    try:
        assert started.wait(timeout=60), "no stream started"
        watcher.hold(4 * IDLE_SECONDS)
        stop.set()
        streamer.join(timeout=120)
        assert not streamer.is_alive(), "the last stream did not finish"
        ended = time.monotonic()
        assert finished and set(finished) == {"length"}, finished  # each ran to its max_tokens
        assert "1 request(s) running, 0 waiting" in watcher.output()
        stopped_at = watcher.wait_for_stop(timeout=IDLE_SECONDS + 30)
        assert stopped_at - ended >= IDLE_SECONDS
        assert (host.state / "calls.log").read_text().splitlines().count("systemctl poweroff") == 1
    finally:
        stop.set()
        watcher.close()
