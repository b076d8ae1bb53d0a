"""The idle-stop watcher (components/scripts/idle_stop.sh) run for real, with the real curl,
against a fake vLLM /metrics on loopback whose numbers the test moves or holds still. Only
`systemctl poweroff` (a stub that records the stop) and `ss` (open SSH connections) are stubs.

Timings are shrunk: the watcher looks every 0.1 s and stops after 1 s without requests
(VLLM_DEPLOY_IDLE_STOP_SECONDS stands in for the minutes). Assertions on time are lower bounds
(it must not stop early) with generous upper limits.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest

from tests.scripts.test_host_scripts import SCRIPTS, Host, assert_failed, assert_ok

IDLE_SECONDS = 1
POLL_SECONDS = 0.1
# Twice the idle time: a watcher that ignored what it saw would have stopped by then.
HOLD_SECONDS = 2 * IDLE_SECONDS


class FakeMetrics:
    """vLLM 0.33's /metrics as prometheus_client writes it (names: vllm/v1/metrics/loggers.py):
    the scheduler gauges, the finished-request counter per finished_reason (with its _created
    sample), a look-alike gauge that only a prefix match would confuse, and process metrics."""

    def __init__(self, port: int = 0) -> None:
        self.running = 0
        self.waiting = 0
        self.finished = {"stop": 5, "length": 1}
        self.engine_metrics = True  # False: the API server answers before the engine's loggers exist
        self.generated: Optional[int] = None  # vllm:generation_tokens_total, when set
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                body = metrics.text().encode() if self.path == "/metrics" else b"not found"
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def text(self) -> str:
        labels = 'engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"'
        lines = [
            "# HELP python_gc_objects_collected_total Objects collected during gc",
            "# TYPE python_gc_objects_collected_total counter",
            'python_gc_objects_collected_total{generation="0"} 12345.0',
        ]
        if self.engine_metrics:
            lines += [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{labels}}} {float(self.running)}",
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{{{labels}}} {float(self.waiting)}",
                "# TYPE vllm:num_requests_waiting_by_reason gauge",
                f'vllm:num_requests_waiting_by_reason{{{labels},reason="capacity"}} 7.0',
                "# HELP vllm:request_success_total Count of successfully processed requests.",
                "# TYPE vllm:request_success_total counter",
            ]
            for reason, count in self.finished.items():
                lines.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {float(count)}')
                lines.append(f'vllm:request_success_created{{{labels},finished_reason="{reason}"}} 1.7e+09')
            if self.generated is not None:
                lines += [
                    "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
                    "# TYPE vllm:generation_tokens_total counter",
                    f"vllm:generation_tokens_total{{{labels}}} {float(self.generated)}",
                ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Watcher:
    """idle_stop.sh as systemd would run it, on the simulated host."""

    def __init__(self, host: Host, url: str, **extra: str) -> None:
        self.host = host
        self.log = host.root / "watcher.log"
        env = {
            **host.env,
            "VLLM_DEPLOY_IDLE_STOP_MINUTES": "1",
            "VLLM_DEPLOY_IDLE_STOP_SECONDS": str(IDLE_SECONDS),
            "VLLM_DEPLOY_IDLE_POLL_SECONDS": str(POLL_SECONDS),
            "VLLM_DEPLOY_METRICS_URL": url,
            **extra,
        }
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["bash", str(SCRIPTS / "idle_stop.sh")], env=env, stdout=log, stderr=log)
        self.started = time.monotonic()

    @property
    def stopped(self) -> bool:
        return (self.host.state / "powered_off").exists()

    def hold(self, seconds: float = HOLD_SECONDS) -> None:
        """Let it look for `seconds`; it must neither stop the host nor die."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert not self.stopped, f"stopped while it should not:\n{self.output()}"
            assert self.proc.poll() is None, f"the watcher exited ({self.proc.returncode}):\n{self.output()}"
            time.sleep(0.05)

    def wait_for_stop(self, timeout: float = IDLE_SECONDS + 8) -> float:
        deadline = time.monotonic() + timeout
        while not self.stopped:
            assert time.monotonic() < deadline, f"never stopped:\n{self.output()}"
            time.sleep(0.05)
        stopped_at = time.monotonic()
        assert self.proc.wait(timeout=5) == 0, self.output()
        return stopped_at

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    host = Host(tmp_path)
    host.add_command("ss")
    (host.bin / "curl").unlink()  # the real curl reads the fake server
    real_curl = shutil.which("curl")
    assert real_curl, "the tests need curl (apt-get install curl)"
    (host.bin / "curl").symlink_to(real_curl)
    return host


@pytest.fixture
def cleanup():
    things: list = []
    yield things
    for thing in reversed(things):
        thing.close()


def start(host: Host, cleanup: list, url: str, **extra: str) -> Watcher:
    watcher = Watcher(host, url, **extra)
    cleanup.append(watcher)
    return watcher


def serve(cleanup: list, port: int = 0) -> FakeMetrics:
    metrics = FakeMetrics(port)
    cleanup.append(metrics)
    return metrics


def test_it_stops_the_instance_after_the_idle_time(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    watcher = start(host, cleanup, metrics.url)
    stopped_at = watcher.wait_for_stop()
    assert stopped_at - watcher.started >= IDLE_SECONDS
    calls = (host.state / "calls.log").read_text().splitlines()
    assert calls.count("systemctl poweroff") == 1
    assert "stopping this instance (start it with tools/wake)" in watcher.output()


def test_it_never_stops_while_a_request_runs_or_waits(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    metrics.running = 1  # one long generation: the counter does not move meanwhile
    watcher = start(host, cleanup, metrics.url)
    watcher.hold()
    metrics.running, metrics.waiting = 0, 3  # queued, none running
    watcher.hold()
    metrics.waiting = 0
    metrics.finished["stop"] += 4  # they finished
    released = time.monotonic()
    assert watcher.wait_for_stop() - released >= IDLE_SECONDS
    assert "request(s) running" in watcher.output()


def test_requests_that_come_and_go_between_looks_keep_it_up(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    watcher = start(host, cleanup, metrics.url)
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        metrics.finished["length"] += 1  # gauges read 0 at every look; only the counter moves
        last_request = time.monotonic()
        watcher.hold(3 * POLL_SECONDS)
    assert watcher.wait_for_stop() - last_request >= IDLE_SECONDS


def test_it_never_stops_while_the_server_is_still_starting(host: Host, cleanup: list) -> None:
    port = free_port()
    watcher = start(host, cleanup, f"http://127.0.0.1:{port}/metrics")
    watcher.hold()  # nothing listens: the container is starting or the model loading
    metrics = serve(cleanup, port)
    metrics.engine_metrics = False
    watcher.hold()  # the API server answers, the engine's metrics are not there yet
    metrics.engine_metrics = True
    ready = time.monotonic()
    assert watcher.wait_for_stop() - ready >= IDLE_SECONDS
    output = watcher.output()
    assert "does not answer" in output and "without request metrics yet" in output


def test_it_survives_a_restart_of_the_vllm_container(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    metrics.finished = {"stop": 7}
    port = metrics.port
    watcher = start(host, cleanup, metrics.url)
    watcher.hold(IDLE_SECONDS / 2)  # idle, but not long enough
    metrics.close()  # the container restarts: nothing listens for a while...
    watcher.hold(IDLE_SECONDS)
    metrics = serve(cleanup, port)  # ...then a new server, its counters back at 0
    metrics.finished = {"stop": 0}
    back = time.monotonic()
    # The time idle before the restart does not count, and the reset counter is not a crash.
    assert watcher.wait_for_stop() - back >= IDLE_SECONDS


def test_a_counter_reset_between_two_looks_counts_as_activity(host: Host, cleanup: list) -> None:
    metrics = serve(cleanup)
    metrics.finished = {"stop": 7}
    watcher = start(host, cleanup, metrics.url)
    watcher.hold(IDLE_SECONDS / 2)
    metrics.finished = {"stop": 0}  # restarted and answering again before the next look
    reset = time.monotonic()
    assert watcher.wait_for_stop() - reset >= IDLE_SECONDS


def test_an_open_ssh_connection_keeps_it_up(host: Host, cleanup: list) -> None:
    (host.state / "ssh_connections").write_text("1\n")  # e.g. `pulumi up` downloading a new model
    metrics = serve(cleanup)
    watcher = start(host, cleanup, metrics.url)
    watcher.hold()
    (host.state / "ssh_connections").write_text("0\n")
    closed = time.monotonic()
    assert watcher.wait_for_stop() - closed >= IDLE_SECONDS
    assert "SSH connection(s) open" in watcher.output()


def test_a_failed_poweroff_is_tried_again(host: Host, cleanup: list) -> None:
    host.fail("systemctl-poweroff", times=1)
    metrics = serve(cleanup)
    watcher = start(host, cleanup, metrics.url)
    watcher.wait_for_stop()
    assert "systemctl poweroff failed" in watcher.output()


# --- install_idle_stop.sh --------------------------------------------------------------


def install_env(host: Host, minutes: str, url: Optional[str] = "http://127.0.0.1:8000/metrics") -> dict[str, str]:
    env = {
        "VLLM_DEPLOY_IDLE_STOP_MINUTES": minutes,
        "VLLM_DEPLOY_SYSTEMD_DIR": str(host.root / "etc" / "systemd" / "system"),
        "VLLM_DEPLOY_LIB_DIR": str(host.root / "usr" / "local" / "lib" / "vllm-deploy"),
        "VLLM_DEPLOY_ETC_DIR": str(host.root / "etc" / "vllm-deploy"),
    }
    if url is not None:
        env["VLLM_DEPLOY_METRICS_URL"] = url
    return env


def unit_file(host: Host) -> Path:
    return host.root / "etc" / "systemd" / "system" / "vllm-idle-stop.service"


def test_the_watcher_is_installed_as_a_service_once_and_restarted_only_on_change(host: Host) -> None:
    run = host.run("install_idle_stop.sh", **install_env(host, "30"))
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_IDLE_STOP=30m\n"
    assert run.called("systemctl") == [
        ["daemon-reload"], ["enable", "vllm-idle-stop.service"], ["restart", "vllm-idle-stop.service"],
    ]
    unit = unit_file(host).read_text()
    assert "WantedBy=multi-user.target" in unit and "Restart=on-failure" in unit
    env_file = (host.root / "etc" / "vllm-deploy" / "idle-stop.env").read_text()
    assert "VLLM_DEPLOY_IDLE_STOP_MINUTES=30\n" in env_file

    again = host.run("install_idle_stop.sh", **install_env(host, "30"))
    assert_ok(again)
    assert again.called("systemctl") == [["is-active", "--quiet", "vllm-idle-stop.service"]]

    changed = host.run("install_idle_stop.sh", **install_env(host, "45"))
    assert_ok(changed)
    assert ["restart", "vllm-idle-stop.service"] in changed.called("systemctl")


@pytest.mark.parametrize("first", [None, "30"], ids=["first-install", "a-change"])
def test_a_run_cut_off_before_the_restart_is_finished_by_the_next(host: Host, first) -> None:
    """The files are written before systemd is told: a run killed in between must not leave a
    service that is not enabled, or one still running with the old setting."""
    if first:
        assert_ok(host.run("install_idle_stop.sh", **install_env(host, first)))
    host.fail("systemctl-restart", times=1)  # the run dies between the files and the restart
    cut = host.run("install_idle_stop.sh", **install_env(host, "60"))
    assert cut.returncode != 0
    rerun = host.run("install_idle_stop.sh", **install_env(host, "60"))
    assert_ok(rerun)
    calls = rerun.called("systemctl")
    assert ["enable", "vllm-idle-stop.service"] in calls and ["restart", "vllm-idle-stop.service"] in calls


def test_turning_idle_stop_off_removes_the_service(host: Host) -> None:
    assert_ok(host.run("install_idle_stop.sh", **install_env(host, "30")))
    off = host.run("install_idle_stop.sh", **install_env(host, "0", url=None))
    assert_ok(off)
    assert off.stdout == "VLLM_DEPLOY_IDLE_STOP=off\n"
    assert ["disable", "--now", "vllm-idle-stop.service"] in off.called("systemctl")
    assert not unit_file(host).exists()
    never = host.run("install_idle_stop.sh", **install_env(host, "0", url=None))
    assert_ok(never)
    assert never.called("systemctl") == []


def test_the_installed_service_runs_the_installed_watcher(host: Host, cleanup: list) -> None:
    """What systemd would start: ExecStart with EnvironmentFile, from where they were installed."""
    metrics = serve(cleanup)
    assert_ok(host.run("install_idle_stop.sh", **install_env(host, "1", url=metrics.url)))
    unit = dict(line.split("=", 1) for line in unit_file(host).read_text().splitlines() if "=" in line)
    env_file = Path(unit["EnvironmentFile"])
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env["VLLM_DEPLOY_METRICS_URL"] == metrics.url
    argv = unit["ExecStart"].split()
    assert argv[0] == "/bin/bash"
    log = host.root / "service.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", *argv[1:]], stdout=out, stderr=out, env={
            **host.env, **env, "VLLM_DEPLOY_IDLE_STOP_SECONDS": "1", "VLLM_DEPLOY_IDLE_POLL_SECONDS": "0.2"})
    try:
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (host.state / "powered_off").exists(), log.read_text()


@pytest.mark.parametrize(
    ("env", "message"),
    [({"VLLM_DEPLOY_IDLE_STOP_MINUTES": "soon"}, "must be a non-negative integer"),
     ({"VLLM_DEPLOY_METRICS_URL": "http://203.0.113.9:8000/metrics"}, "must be vLLM's /metrics on loopback")],
)
def test_install_rejects_bad_input(host: Host, env: dict[str, str], message: str) -> None:
    run = host.run("install_idle_stop.sh", **{**install_env(host, "30"), **env})
    assert_failed(run, message)
    assert run.called("systemctl") == []
