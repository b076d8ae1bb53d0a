"""The Ray cluster scripts run for real against Ray from PyPI (the `cluster` tier:
./tools/test-cluster, which .ci/run runs; not part of the quick ./tools/test).

A head and a worker start as two local `ray start --block` processes with ray_node.sh, on
loopback addresses 127.0.0.3 (head) and 127.0.0.2 (worker; Ray swaps 127.0.0.1 for the host's
own address, so neither uses it). A custom Ray resource, `fake_gpu`, stands in for the GPUs the
nodes would bring; wait_for_ray_gpus.sh counts it. Each Ray process tree runs in its own session
and is stopped by process group at the end of its test, and the test checks nothing of it is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.3", "127.0.0.2"
GPUS_PER_NODE = 2


@pytest.fixture(scope="module", autouse=True)
def ray_installed():
    if not (BIN / "ray").exists():
        message = f"Ray is not installed next to {sys.executable}: run ./tools/test-cluster"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def env(**values: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VLLM_DEPLOY_"))}
    out.update(PATH=f"{BIN}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0")
    out.update(values)
    return out


class Cluster:
    """The Ray processes one test starts, each in a session of its own."""

    def __init__(self) -> None:
        self.port = free_port(HEAD_IP)
        self.temp = tempfile.mkdtemp(prefix="vdray")  # short: Ray's socket paths have a length limit
        self.procs: list[subprocess.Popen] = []

    def start(self, role: str, name: str, ip: str, **extra: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(SCRIPTS / "ray_node.sh")],
            env=env(
                VLLM_DEPLOY_RAY_ROLE=role, VLLM_DEPLOY_NODE_NAME=name, VLLM_DEPLOY_NODE_IP=ip,
                VLLM_DEPLOY_RAY_HEAD_IP=HEAD_IP, VLLM_DEPLOY_RAY_PORT=str(self.port),
                VLLM_DEPLOY_RAY_LAUNCH="foreground",
                VLLM_DEPLOY_RAY_RESOURCES=f'{{"fake_gpu": {GPUS_PER_NODE}}}',
                VLLM_DEPLOY_RAY_TEMP_DIR=self.temp, **extra,
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def wait(self, nodes: str, timeout: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPTS / "wait_for_ray_gpus.sh")],
            env=env(
                VLLM_DEPLOY_RAY_ADDRESS=f"{HEAD_IP}:{self.port}", VLLM_DEPLOY_RAY_NODES=nodes,
                VLLM_DEPLOY_GPUS_PER_NODE=str(GPUS_PER_NODE), VLLM_DEPLOY_RAY_RESOURCE="fake_gpu",
                VLLM_DEPLOY_RAY_EXEC="here", VLLM_DEPLOY_TIMEOUT_SECONDS=str(timeout),
                VLLM_DEPLOY_POLL_SECONDS="2",
                VLLM_DEPLOY_RAY_LOG_DIR=str(Path(self.temp) / "session_latest" / "logs"),
            ),
            capture_output=True, text=True, timeout=timeout + 120,
        )

    def stop(self) -> list[str]:
        """Stops every process group this test started; returns what is still alive after."""
        for proc in self.procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p.pid) for p in self.procs):
            time.sleep(0.5)
        for proc in self.procs:
            # Ray's worker processes leave the process group but stay in the session.
            for line in _alive(proc.pid):
                _signal_pid(int(line.split()[0]), signal.SIGKILL)
            proc.wait(timeout=30)
        time.sleep(1)
        left = [line for p in self.procs for line in _alive(p.pid)]
        shutil.rmtree(self.temp, ignore_errors=True)
        return left


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(session: int) -> list[str]:
    """Live (not zombie) processes of this session."""
    out = subprocess.run(["ps", "-s", str(session), "-o", "pid=,stat=,comm="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.split()[1:2] and not line.split()[1].startswith("Z")]


@pytest.fixture
def cluster():
    started = Cluster()
    yield started
    left = started.stop()
    assert not left, f"Ray processes left running: {left}"


def test_a_worker_joins_the_head_and_the_head_waits_for_all_the_gpus(cluster):
    nodes = f"node-0={HEAD_IP} node-1={WORKER_IP}"
    cluster.start("head", "node-0", HEAD_IP)
    cluster.start("worker", "node-1", WORKER_IP)
    done = cluster.wait(nodes, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["NODES_JOINED=2", f"RAY_GPUS={2 * GPUS_PER_NODE}"]
    assert f"Ray reports {2 * GPUS_PER_NODE} fake_gpu on 2 nodes" in done.stderr


def test_a_worker_that_never_joins_fails_the_wait_naming_it(cluster):
    cluster.start("head", "node-0", HEAD_IP)
    nodes = f"node-0={HEAD_IP} node-1={WORKER_IP}"
    done = cluster.wait(nodes, timeout=25)
    assert done.returncode == 1
    assert f"Ray reports {GPUS_PER_NODE} of {2 * GPUS_PER_NODE} fake_gpu; not joined:" in done.stderr
    assert f"node-1 ({WORKER_IP}): 0 of {GPUS_PER_NODE} fake_gpu" in done.stderr
    assert "node-0 (" not in done.stderr.split("not joined:")[1].split("---")[0]  # the head joined
    assert f"{HEAD_IP} {GPUS_PER_NODE}" in done.stderr  # what Ray reported
