"""Idle stop's bounds on "unknown" (issue 27): a vLLM crash loop (no /metrics) or a request stuck
"running" no longer keeps the host billing forever. The watcher runs for real against the fake
/metrics of test_idle_stop; bounds are shrunk to a second or two, the program's values are checked
under mocks (readinessTimeoutMinutes, the proxy's upstream read timeout)."""

from __future__ import annotations

import time

from serving.nginx import DEFAULT_UPSTREAM_TIMEOUT_S
from tests.scripts.test_idle_stop import (  # noqa: F401  (fixtures)
    IDLE_SECONDS,
    cleanup,
    free_port,
    host,
    install_env,
    serve,
    start,
)
from tests.scripts.test_host_scripts import Host, assert_failed, assert_ok

BOUND_SECONDS = 2  # each bound, shrunk from the program's minutes
BOUNDS = {"VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS": str(BOUND_SECONDS),
          "VLLM_DEPLOY_IDLE_STUCK_SECONDS": str(BOUND_SECONDS)}


def test_a_crash_loop_without_metrics_stops_after_the_bound_and_the_idle_time(host: Host, cleanup: list) -> None:
    watcher = start(host, cleanup, f"http://127.0.0.1:{free_port()}/metrics", **BOUNDS)
    stopped_at = watcher.wait_for_stop(timeout=BOUND_SECONDS + IDLE_SECONDS + 8)
    assert stopped_at - watcher.started >= BOUND_SECONDS + IDLE_SECONDS
    output = watcher.output()
    assert "not idle: vLLM's /metrics does not answer" in output  # first, a start is waited for
    assert f"longer than the {BOUND_SECONDS}s a start may take (a crash loop, or a server that never came up)" in output
    assert "stopping this instance" in output.splitlines()[-1] and "does not answer" in output.splitlines()[-1]


def test_a_server_that_answers_without_request_metrics_is_bounded_too(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    metrics.engine_metrics = False  # the API server up, its engine never ready
    watcher = start(host, cleanup, metrics.url, **BOUNDS)
    assert watcher.wait_for_stop(timeout=BOUND_SECONDS + IDLE_SECONDS + 8) - watcher.started >= BOUND_SECONDS + IDLE_SECONDS
    assert "without request metrics yet for" in watcher.output()


def test_metrics_back_before_the_bound_restart_nothing_early(host: Host, cleanup: list) -> None:
    """A restart shorter than the bound stays a restart: busy, and the idle clock starts after."""
    port = free_port()
    watcher = start(host, cleanup, f"http://127.0.0.1:{port}/metrics", **BOUNDS)
    watcher.hold(BOUND_SECONDS * 0.75)
    serve(cleanup, port)
    back = time.monotonic()
    assert watcher.wait_for_stop() - back >= IDLE_SECONDS
    assert "a start may take" not in watcher.output()


def test_a_request_stuck_running_stops_after_the_bound_and_the_idle_time(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    metrics.running, metrics.generated = 1, 40  # then nothing moves: no token, nothing finishes
    watcher = start(host, cleanup, metrics.url, **BOUNDS)
    stopped_at = watcher.wait_for_stop(timeout=BOUND_SECONDS + IDLE_SECONDS + 8)
    assert stopped_at - watcher.started >= BOUND_SECONDS + IDLE_SECONDS
    output = watcher.output()
    assert "not idle: 1 request(s) running, 0 waiting" in output
    assert f"with no token and no finished request for {BOUND_SECONDS}s, longer than the {BOUND_SECONDS}s bound (stuck requests)" in output


def test_a_long_request_that_generates_tokens_keeps_it_up_past_the_bound(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    metrics.running, metrics.generated = 1, 0
    watcher = start(host, cleanup, metrics.url, **BOUNDS)
    deadline = time.monotonic() + 2 * BOUND_SECONDS + IDLE_SECONDS
    while time.monotonic() < deadline:
        metrics.generated += 1  # a slow, long generation: one token between looks
        watcher.hold(0.3)
    metrics.running = 0
    metrics.finished["stop"] += 1
    done = time.monotonic()
    assert watcher.wait_for_stop() - done >= IDLE_SECONDS
    assert "stuck requests" not in watcher.output()


def test_an_open_ssh_connection_keeps_it_up_past_the_bound(host: Host, cleanup: list) -> None:
    """`pulumi up` downloading a model for hours holds an SSH connection: the bound never applies."""
    (host.state / "ssh_connections").write_text("1\n")
    watcher = start(host, cleanup, f"http://127.0.0.1:{free_port()}/metrics", **BOUNDS)
    watcher.hold(BOUND_SECONDS + 2 * IDLE_SECONDS)
    assert "SSH connection(s) open" in watcher.output()


def test_install_writes_the_bounds_and_rejects_a_bad_one(host: Host) -> None:
    env = {**install_env(host, "30"), "VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS": "2700"}
    assert_ok(host.run("install_idle_stop.sh", **env))
    written = (host.root / "etc" / "vllm-deploy" / "idle-stop.env").read_text().splitlines()
    assert "VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS=2700" in written
    assert "VLLM_DEPLOY_IDLE_STUCK_SECONDS=3600" in written  # the default: the proxy's timeout
    bad = host.run("install_idle_stop.sh", **{**env, "VLLM_DEPLOY_IDLE_STUCK_SECONDS": "1h"})
    assert_failed(bad, "VLLM_DEPLOY_IDLE_STUCK_SECONDS must be a non-negative integer, got '1h'")


def test_the_program_derives_the_bounds_from_its_settings(program) -> None:
    run = program({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192,
                   "idleStopMinutes": "30", "readinessTimeoutMinutes": "45"})
    [step] = [c for c in run.of_type("command:remote:Command") if c.name.endswith("idle-stop")]
    env = step.plain["environment"]
    assert env["VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS"] == str(45 * 60)
    assert env["VLLM_DEPLOY_IDLE_STUCK_SECONDS"] == str(DEFAULT_UPSTREAM_TIMEOUT_S) == "3600"
