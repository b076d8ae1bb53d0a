"""ray_node.sh's container and its refusals, in the quick suite: `docker` is a stub that records
its argv (there is no engine here); the worker's wait for the head runs against a loopback port
nothing listens on. Ray itself runs for real in the cluster tier (tests/cluster/)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
IMAGE = "vllm/vllm-openai:v0.33.0"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$*" >>"{tmp_path}/docker.log"\n'
        'if [[ "$1" == inspect ]]; then cat "' + str(tmp_path) + '/running" 2>/dev/null || exit 1; fi\n'
    )
    (bin_dir / "docker").chmod(0o755)
    return tmp_path


def run(host: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": f"{host / 'bin'}:{os.environ['PATH']}", "VLLM_DEPLOY_IMAGE": IMAGE}
    return subprocess.run(
        [str(SCRIPTS / "ray_node.sh")], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def docker_runs(host: Path) -> list[str]:
    log = host / "docker.log"
    return [line for line in log.read_text().splitlines() if line.startswith("run ")] if log.exists() else []


def test_the_head_runs_ray_in_the_vllm_image_with_host_network_ipc_and_all_gpus(host):
    done = run(host, VLLM_DEPLOY_RAY_ROLE="head", VLLM_DEPLOY_NODE_IP="10.0.1.10")
    assert done.returncode == 0, done.stderr
    (line,) = docker_runs(host)
    words = line.split()
    for flag in ("--network host", "--ipc host", "--gpus all", "-e VLLM_HOST_IP=10.0.1.10",
                 f"--entrypoint ray {IMAGE} start"):
        assert flag in line
    assert {"--head", "--port=6379", "--node-ip-address=10.0.1.10", "--block"} <= set(words)


def test_a_running_ray_container_is_left_alone(host):
    (host / "running").write_text("true\n")
    done = run(host, VLLM_DEPLOY_RAY_ROLE="head", VLLM_DEPLOY_NODE_IP="10.0.1.10")
    assert done.returncode == 0 and docker_runs(host) == []
    assert "already running" in done.stderr


def test_a_worker_joins_the_heads_private_ip_once_it_answers(host):
    with socket.socket() as head:
        head.bind(("127.0.0.3", 0))
        head.listen()
        port = head.getsockname()[1]
        done = run(
            host, VLLM_DEPLOY_RAY_ROLE="worker", VLLM_DEPLOY_NODE_NAME="node-1",
            VLLM_DEPLOY_NODE_IP="10.0.1.11", VLLM_DEPLOY_RAY_HEAD_IP="127.0.0.3",
            VLLM_DEPLOY_RAY_PORT=str(port),
        )
    assert done.returncode == 0, done.stderr
    (line,) = docker_runs(host)
    assert f"--address=127.0.0.3:{port}" in line.split() and "--head" not in line.split()


def test_a_worker_whose_head_never_answers_fails_naming_itself_and_the_head(host):
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    done = run(
        host, VLLM_DEPLOY_RAY_ROLE="worker", VLLM_DEPLOY_NODE_NAME="node-2",
        VLLM_DEPLOY_NODE_IP="10.0.1.12", VLLM_DEPLOY_RAY_HEAD_IP="127.0.0.3",
        VLLM_DEPLOY_RAY_PORT=str(port), VLLM_DEPLOY_JOIN_TIMEOUT_SECONDS="3",
    )
    assert done.returncode == 1
    assert f"node-2 (10.0.1.12) cannot join the Ray cluster: the head 127.0.0.3:{port} did not answer in 3s" in done.stderr
    assert "security group allows all traffic between the nodes" in done.stderr
    assert docker_runs(host) == []


def test_an_unknown_role_is_refused(host):
    done = run(host, VLLM_DEPLOY_RAY_ROLE="leader", VLLM_DEPLOY_NODE_IP="10.0.1.10")
    assert done.returncode == 1 and "VLLM_DEPLOY_RAY_ROLE=leader is neither head nor worker" in done.stderr
