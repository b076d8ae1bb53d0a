"""Issue 26 on a replica, run for real under bash (tests/scripts/replica_host.py's stubs for
aws, docker and systemctl):

- boot.sh entering the warm pool (IMDS target-lifecycle-state Warmed:Stopped): reads the model
  volume once, completes the launch hook, reads no key and starts nothing; leaving the pool
  (InService) it boots in full;
- a spot interruption: lifecycle_watch.sh against a fake IMDSv2 on loopback (real curl, tokens
  required) that answers spot/instance-action; spot_drain.sh puts nginx in drain mode at once,
  lets the fake vLLM's streams finish, stops it with its shutdown timeout inside the notice, and a
  termination hook that arrives later is still completed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components import fleet_scaling
from serving.replica import replica_files
from tests.fakes import start_fake_vllm
from tests.scripts.replica_host import INSTANCE_ID, PARAMETER, PRIVATE_IP, ReplicaHost, settings_for, single_host
from tests.scripts.test_host_scripts import assert_ok

API_KEY = "sk-replica-scale-5dQ2mWv8Lx0p"
SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts" / "replica"


@pytest.fixture
def replica(tmp_path: Path) -> ReplicaHost:
    config, argv, site = single_host()
    host = ReplicaHost(tmp_path, replica_files(vllm_argv=argv, nginx_site=site, settings=settings_for(config)))
    host.set_parameter(PARAMETER, API_KEY)
    host.pending("vllm-launch")
    (host.bin / "dd").symlink_to(shutil.which("dd"))
    return host


def _set_state(host: ReplicaHost, state: str) -> None:
    (host.state / "imds" / "autoscaling" / "target-lifecycle-state").write_text(state)


# --- warm pool ---------------------------------------------------------------------------
def test_entering_the_warm_pool_reads_the_weights_once_and_starts_nothing(replica: ReplicaHost) -> None:
    weights = {"model-00001.safetensors": 3_000_000, "model-00002.safetensors": 1_234_567, "tokenizer.json": 4096}
    for name, size in weights.items():
        (replica.models / name).write_bytes(b"\1" * size)
    total = sum(weights.values()) + (replica.models / "config.json").stat().st_size
    _set_state(replica, "Warmed:Stopped")

    run = replica.run("boot.sh")
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_REPLICA=warmed\n"
    assert f"read {total} bytes of the model volume once" in run.stderr
    assert [(hook, result) for hook, result, _ in replica.completions()] == [("vllm-launch", "CONTINUE")]
    assert not run.called("docker") or not any(c[:1] == ["run"] for c in run.called("docker"))
    assert not any(c[:2] == ["ssm", "get-parameter"] for c in run.called("aws"))  # no key while stopped
    assert not (replica.secrets_dir / "api-key.env").exists()
    assert (replica.tls_dir / "server.crt").exists()  # once-only work kept on the root volume

    # Leaving the pool: the instance boots again and the hook's second pause (Pending:Wait) waits
    # for the whole boot: key, containers, /health, CONTINUE.
    _set_state(replica, "InService")
    replica.pending("vllm-launch")
    run = replica.run("boot.sh")
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_REPLICA=ready\n"
    started = {c[c.index("--name") + 1] for c in run.called("docker") if c[:1] == ["run"]}
    assert started == {"vllm", "vllm-proxy"}
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "CONTINUE")] * 2


def test_a_warm_pool_boot_that_cannot_find_the_model_abandons_the_launch(replica: ReplicaHost) -> None:
    (replica.models / "config.json").unlink()
    _set_state(replica, "Warmed:Stopped")
    run = replica.run("boot.sh")
    assert run.returncode != 0 and "model volume is not mounted" in run.stderr
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "ABANDON")]


# --- spot ----------------------------------------------------------------------------------
class FakeImds(ThreadingHTTPServer):
    """IMDSv2 on loopback: PUT /latest/api/token, then GETs with the token (401 without, as with
    http_tokens=required); `meta` maps paths under latest/meta-data/ to answers (404 when absent)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.token = "imds-token-7f3a"
        self.meta = {"instance-id": INSTANCE_ID, "local-ipv4": PRIVATE_IP,
                     "autoscaling/target-lifecycle-state": "InService"}
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _ImdsHandler)


class _ImdsHandler(BaseHTTPRequestHandler):
    server: FakeImds

    def log_message(self, *args) -> None:  # noqa: D102 - quiet
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._send(200, self.server.token)
        else:
            self._send(400, "")

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("X-aws-ec2-metadata-token") != self.server.token:
            self._send(401, "")
            return
        path = self.path.removeprefix("/latest/meta-data/")
        self.server.asked.append(path)
        answer = self.server.meta.get(path)
        self._send(200, answer) if answer is not None else self._send(404, "Not Found")


def _stream(port: int, tokens: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"model": "fake-model", "stream": True, "max_tokens": tokens, "messages": [{"role": "user", "content": "hi"}]})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    response = conn.getresponse()
    try:
        text = response.read().decode()
    except http.client.IncompleteRead as cut:  # the server went away mid-stream
        text = cut.partial.decode() + "\n(cut)"
    conn.close()
    return text


def test_a_spot_notice_drains_within_the_two_minutes_and_streams_finish(replica: ReplicaHost) -> None:
    fake = start_fake_vllm(api_key=API_KEY, chunk_delay_ms=50, shutdown_timeout_s=5)
    imds = FakeImds()
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    (replica.bin / "curl").unlink()
    (replica.bin / "curl").symlink_to(shutil.which("curl"))  # the real curl, against the fake IMDS
    replica.add_container("vllm", pid=fake.process.pid)
    watch = None
    try:
        argv, env = replica.command(
            "lifecycle_watch.sh", VLLM_DEPLOY_IMDS_URL=f"http://127.0.0.1:{imds.server_address[1]}",
            VLLM_DEPLOY_VLLM_PORT=str(fake.port), VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S="5",
            VLLM_DEPLOY_SPOT_STREAM_BOUND_S="40", VLLM_DEPLOY_SPOT_POLL_S="0.2", VLLM_DEPLOY_LIFECYCLE_POLL_S="0.2",
        )
        watch = subprocess.Popen(argv, env=env, cwd=replica.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with ThreadPoolExecutor(8) as pool:
            streams = [pool.submit(_stream, fake.port, 200) for _ in range(8)]  # ~10 s each: longer than vLLM's 5 s stop
            time.sleep(1.0)
            assert not (replica.run_dir / "draining").exists()  # 404 so far: nothing to do
            noticed = time.monotonic()
            imds.meta["spot/instance-action"] = json.dumps({"action": "terminate", "time": "2026-12-07T14:30:00Z"})
            deadline = noticed + 5
            while not (replica.run_dir / "draining").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (replica.run_dir / "draining").exists(), "drain mode within a poll of the notice"
            texts = [s.result(timeout=60) for s in streams]
        for text in texts:  # every stream in flight ran to its end (none aborted, none cut)
            assert text.count('"finish_reason": "stop"') + text.count('"finish_reason":"stop"') == 1, text[-300:]
            assert "data: [DONE]" in text
        deadline = noticed + 70
        while not (replica.run_dir / "spot-drained").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        drained_after = time.monotonic() - noticed
        assert (replica.run_dir / "spot-drained").exists()
        assert drained_after < fleet_scaling.SPOT_NOTICE_S
        assert fake.process.wait(timeout=10) is not None  # vLLM stopped
        calls = [line.split() for line in replica.calls_text().splitlines()]
        stops = [c for c in calls if c[:2] == ["docker", "stop"]]
        assert stops and stops[0][2:4] == ["-t", str(5 + 15)], stops  # vLLM's 5 s, then 15 s to exit
        assert (replica.state / "containers" / "vllm.stopped").read_text().strip() == "exited"  # no SIGKILL

        # The group's termination hook arrives afterwards: the watcher completes it and exits.
        replica.pending("vllm-terminate")
        imds.meta["autoscaling/target-lifecycle-state"] = "Terminated"
        assert watch.wait(timeout=30) == 0, watch.stderr.read() if watch.stderr else ""
        assert ("vllm-terminate", "CONTINUE") in [(h, r) for h, r, _ in replica.completions()]
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait()
        imds.shutdown()
        imds.server_close()
        fake.stop()



def slow_vllm_behind(replica: ReplicaHost):
    """A fake vLLM streaming a token every 100 ms with a 2 s shutdown timeout, as the replica's
    vLLM container, reached with the real curl."""
    fake = start_fake_vllm(api_key=API_KEY, chunk_delay_ms=100, shutdown_timeout_s=2)
    (replica.bin / "curl").unlink()
    (replica.bin / "curl").symlink_to(shutil.which("curl"))
    replica.add_container("vllm", pid=fake.process.pid)
    return fake


def test_a_stream_longer_than_the_spot_bound_is_cut_at_the_bound(replica: ReplicaHost) -> None:
    """The README's promise has a limit: what still runs at the bound gets vLLM's shutdown
    timeout and then stops, so the drain ends in time even with a stream that would not."""
    fake = slow_vllm_behind(replica)
    try:
        with ThreadPoolExecutor(1) as pool:
            long_stream = pool.submit(_stream, fake.port, 600)  # a minute of tokens
            time.sleep(0.5)
            started = time.monotonic()
            run = replica.run("spot_drain.sh", timeout_s=60, VLLM_DEPLOY_VLLM_PORT=str(fake.port),
                              VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S="2", VLLM_DEPLOY_SPOT_STREAM_BOUND_S="5",
                              VLLM_DEPLOY_SPOT_POLL_S="0.2")
            took = time.monotonic() - started
            assert_ok(run)
            text = long_stream.result(timeout=30)
        assert '"finish_reason": "stop"' not in text and '"finish_reason":"stop"' not in text  # cut
        assert '"content"' in text  # it had been streaming until then
        assert 3 <= took < 5 + 15, took  # waited for it (bound - shutdown), then vLLM's stop
        assert (replica.state / "containers" / "vllm.stopped").read_text().strip() == "exited"
    finally:
        fake.stop()


def test_the_spot_bound_fits_the_notice_and_the_script_uses_the_plans_value() -> None:
    text = (SCRIPTS / "spot_drain.sh").read_text()
    (default,) = re.findall(r"bound=\$\{VLLM_DEPLOY_SPOT_STREAM_BOUND_S:-(\d+)\}", text)
    assert int(default) == fleet_scaling.SPOT_STREAM_BOUND_S
    from components.fleet_bake import SHUTDOWN_TIMEOUT_S
    worst = (fleet_scaling.SPOT_STREAM_BOUND_S - SHUTDOWN_TIMEOUT_S) + SHUTDOWN_TIMEOUT_S + 15
    assert worst < fleet_scaling.SPOT_NOTICE_S


def test_a_spot_drain_restarted_part_way_keeps_the_bound_from_when_drain_mode_went_on(replica: ReplicaHost) -> None:
    """Killed (or failed) and run again, the drain does not start its bound afresh: drain mode
    went on at the flag's time, so a re-run past the bound stops vLLM at once."""
    fake = slow_vllm_behind(replica)
    replica.run_dir.mkdir(parents=True, exist_ok=True)
    flag = replica.run_dir / "draining"
    flag.touch()
    past = time.time() - 60  # drain mode went on 60 s ago, beyond the 20 s bound
    os.utime(flag, (past, past))
    try:
        with ThreadPoolExecutor(1) as pool:
            long_stream = pool.submit(_stream, fake.port, 600)
            time.sleep(0.5)
            started = time.monotonic()
            run = replica.run("spot_drain.sh", timeout_s=60, VLLM_DEPLOY_VLLM_PORT=str(fake.port),
                              VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S="2", VLLM_DEPLOY_SPOT_STREAM_BOUND_S="20",
                              VLLM_DEPLOY_SPOT_POLL_S="0.2")
            took = time.monotonic() - started
            assert_ok(run)
            long_stream.result(timeout=30)
        assert took < 12, (took, run.stderr)  # not the 18 s wait a fresh bound gives: straight to vLLM's 2 s stop
        assert (replica.state / "containers" / "vllm.stopped").read_text().strip() == "exited"
    finally:
        fake.stop()
