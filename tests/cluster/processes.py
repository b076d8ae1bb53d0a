"""The Ray processes a cluster-tier test starts, and how they are stopped.

Nodes run on loopback: head 127.0.0.3, worker 127.0.0.2 (Ray swaps 127.0.0.1 for the host's own
address, so neither uses it). A custom Ray resource, `fake_gpu`, stands in for the GPUs a node
brings. Each process tree runs in a session of its own and is stopped by process group; Ray's
processes are also found by the test's own temp dir, which every one of them names on its
command line, so the test can check that nothing it started is left.
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

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.3", "127.0.0.2"
GPUS_PER_NODE = 2
NODES = f"node-0={HEAD_IP} node-1={WORKER_IP}"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def env(**values: str) -> dict[str, str]:
    """This environment without Ray's and the scripts' own variables, Ray's bin first on PATH."""
    prefixes = ("RAY_", "VLLM_", "NCCL_", "GLOO_")
    out = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    out.update(PATH=f"{BIN}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0")
    out.update(values)
    return out


class Cluster:
    """The Ray processes one test starts, each tree in a session of its own."""

    def __init__(self) -> None:
        self.port = free_port(HEAD_IP)
        self.temp = tempfile.mkdtemp(prefix="vdray")  # short: Ray's socket paths have a length limit
        self.procs: list[subprocess.Popen] = []

    def node_env(self, **extra: str) -> dict[str, str]:
        return env(
            VLLM_DEPLOY_RAY_HEAD_IP=HEAD_IP, VLLM_DEPLOY_RAY_PORT=str(self.port),
            VLLM_DEPLOY_RAY_RESOURCES=f'{{"fake_gpu": {GPUS_PER_NODE}}}',
            VLLM_DEPLOY_RAY_TEMP_DIR=self.temp, **extra,
        )

    def popen(self, argv: list[str], environ: dict[str, str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=environ, start_new_session=True, text=True, **kwargs)
        self.procs.append(proc)
        return proc

    def start(self, role: str, name: str, ip: str, **extra: str) -> subprocess.Popen:
        """ray_node.sh in the foreground (`ray start --block`)."""
        return self.popen(
            [str(SCRIPTS / "ray_node.sh")],
            self.node_env(VLLM_DEPLOY_RAY_ROLE=role, VLLM_DEPLOY_NODE_NAME=name, VLLM_DEPLOY_NODE_IP=ip,
                          VLLM_DEPLOY_RAY_LAUNCH="foreground", **extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

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

    def left(self) -> list[str]:
        """Live processes this test started: in its sessions, or naming its temp dir."""
        out = [line for p in self.procs for line in _alive(p.pid)]
        ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
        me = str(os.getpid())
        for line in ps.splitlines():
            fields = line.split(None, 2)
            if len(fields) == 3 and self.temp in fields[2] and not fields[1].startswith("Z") and fields[0] != me:
                if not fields[2].startswith("ps "):
                    out.append(line)
        return out

    def stop(self) -> list[str]:
        """Stops every process this test started; returns what is still alive after."""
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
        # Ray's daemons started without --block (launch mode daemon) leave the session: by temp dir.
        for line in self.left():
            _signal_pid(int(line.split()[0]), signal.SIGKILL)
        time.sleep(1)
        left = self.left()
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
