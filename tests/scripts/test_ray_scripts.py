"""ray_node.sh's container, serve_on_ray_head.sh's refusals and the interface lookup, in the quick
suite. `docker` is a stub engine (tests/scripts: there is none here) that records each call and
keeps one container's state (running, its spec label); `ip` is a stub that lists a worker host's
addresses. The worker's wait for the head runs against loopback ports. Ray itself runs for real
in the cluster tier (tests/cluster/)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
IMAGE = "vllm/vllm-openai:v0.33.0"
NODE_IP = "10.0.1.11"

DOCKER_STUB = """\
#!{python}
# A one-container Docker engine: records argv, keeps the container's state in {home}/container.
import json, sys
from pathlib import Path
home = Path("{home}")
state = home / "container"
argv = sys.argv[1:]
with open(home / "docker.jsonl", "a") as log:
    log.write(json.dumps(argv) + "\\n")
if argv[0] == "inspect":
    if argv[1:3] != ["--format", '{{{{.State.Running}}}} {{{{index .Config.Labels "vllm-deploy.spec"}}}}']:
        sys.exit("stub docker: unsupported inspect " + repr(argv))
    if not state.exists():
        sys.exit("Error: No such object: " + argv[-1])
    print(state.read_text())
elif argv[:2] == ["image", "inspect"]:
    image_id = home / "image_id"
    if not image_id.exists():
        sys.exit("Error: No such image: " + argv[-1])
    print(image_id.read_text())
elif argv[0] == "rm":
    state.unlink(missing_ok=True)
elif argv[0] == "run":
    label = next(a for a in argv if a.startswith("vllm-deploy.spec="))
    state.write_text("true " + label.split("=", 1)[1])
    print("0123456789ab")
else:
    sys.exit("stub docker: unsupported " + repr(argv))
"""

# `ip -o -4 addr show` on an EC2 worker (Ubuntu 24.04, ENA interface ens5).
IP_STUB = """\
#!/usr/bin/env bash
[[ "$*" == "-o -4 addr show" ]] || { echo "stub ip: unsupported: $*" >&2; exit 2; }
cat <<'OUT'
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: ens5    inet 10.0.1.11/24 metric 100 brd 10.0.1.255 scope global dynamic ens5\\       valid_lft 3519sec preferred_lft 3519sec
3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever preferred_lft forever
OUT
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER_STUB.format(python=sys.executable, home=tmp_path))
    (bin_dir / "ip").write_text(IP_STUB)
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return tmp_path


def listening(ip: str) -> Iterator[int]:
    with socket.socket() as head:
        head.bind((ip, 0))
        head.listen()
        yield head.getsockname()[1]


@pytest.fixture
def head_port() -> Iterator[int]:
    yield from listening("127.0.0.3")


def run(host: Path, script: str = "ray_node.sh", args: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": f"{host / 'bin'}:{os.environ['PATH']}", "VLLM_DEPLOY_IMAGE": IMAGE}
    return subprocess.run(
        [str(SCRIPTS / script), *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def worker(host: Path, port: int, **env: str) -> subprocess.CompletedProcess:
    values = dict(VLLM_DEPLOY_RAY_ROLE="worker", VLLM_DEPLOY_NODE_NAME="node-1", VLLM_DEPLOY_NODE_IP=NODE_IP,
                  VLLM_DEPLOY_RAY_HEAD_IP="127.0.0.3", VLLM_DEPLOY_RAY_PORT=str(port))
    return run(host, **{**values, **env})


def docker_calls(host: Path, verb: str | None = None) -> list[list[str]]:
    log = host / "docker.jsonl"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [c for c in calls if verb is None or c[0] == verb]


def options(argv: list[str]) -> list[tuple[str, str]]:
    """docker run's (option, value) pairs before the image."""
    image = argv.index(IMAGE)
    return [(argv[i], argv[i + 1]) for i in range(1, image - 1) if argv[i].startswith("-") and not argv[i + 1].startswith("-")]


def test_the_head_runs_ray_in_the_vllm_image_with_host_network_ipc_and_all_gpus(host):
    done = run(host, VLLM_DEPLOY_RAY_ROLE="head", VLLM_DEPLOY_NODE_IP=NODE_IP)
    assert done.returncode == 0, done.stderr
    (argv,) = docker_calls(host, "run")
    opts = options(argv)
    for pair in [("--network", "host"), ("--ipc", "host"), ("--gpus", "all"), ("--restart", "unless-stopped"),
                 ("-e", f"VLLM_HOST_IP={NODE_IP}"), ("--entrypoint", "ray")]:
        assert pair in opts
    assert argv[argv.index(IMAGE) + 1] == "start"
    assert {"--head", "--port=6379", f"--node-ip-address={NODE_IP}", "--block"} <= set(argv)


def test_a_worker_container_mounts_the_model_read_only_and_carries_the_env_and_interface(host, head_port):
    models = host / "models"
    models.mkdir()
    done = worker(host, head_port, VLLM_DEPLOY_MODEL_DIR=str(models), VLLM_DEPLOY_MODEL_MOUNT="/models/served",
                  VLLM_DEPLOY_CONTAINER_ENV="HF_HUB_OFFLINE=1  VLLM_NO_USAGE_STATS=1 NCCL_DEBUG=WARN")
    assert done.returncode == 0, done.stderr
    (argv,) = docker_calls(host, "run")
    opts = options(argv)
    assert ("-v", f"{models}:/models/served:ro") in opts
    env = [value for option, value in opts if option == "-e"]
    assert env[:3] == [f"VLLM_HOST_IP={NODE_IP}", "NCCL_SOCKET_IFNAME=ens5", "GLOO_SOCKET_IFNAME=ens5"]
    assert env[3:] == ["HF_HUB_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "NCCL_DEBUG=WARN"]
    assert f"--address=127.0.0.3:{head_port}" in argv and "--head" not in argv
    assert not any("infiniband" in a or "memlock" in a or "/opt/amazon" in a for a in argv)  # no EFA asked
    assert re.fullmatch(r"vllm-deploy\.spec=[0-9a-f]{64}", argv[argv.index("--label") + 1])


def efa_host(host: Path, devices: int) -> dict[str, str]:
    dev = host / "infiniband"
    dev.mkdir()
    for i in range(devices):
        (dev / f"uverbs{i}").touch()
    (host / "amazon").mkdir()
    return {"VLLM_DEPLOY_EFA_DEVICE_DIR": str(dev), "VLLM_DEPLOY_EFA_HOST_DIR": str(host / "amazon")}


def test_efa_devices_memlock_and_the_hosts_efa_libraries_reach_the_container(host, head_port):
    done = worker(host, head_port, VLLM_DEPLOY_EFA_DEVICES="2", **efa_host(host, devices=4))
    assert done.returncode == 0, done.stderr
    (argv,) = docker_calls(host, "run")
    opts = options(argv)
    devices = [value for option, value in opts if option == "--device"]
    assert devices == [f"{host}/infiniband/uverbs{i}:/dev/infiniband/uverbs{i}" for i in range(2)]
    assert ("--ulimit", "memlock=-1:-1") in opts
    assert ("-v", f"{host}/amazon:/opt/amazon:ro") in opts


def test_a_missing_efa_device_fails_naming_it_before_anything_runs(host, head_port):
    done = worker(host, head_port, VLLM_DEPLOY_EFA_DEVICES="3", **efa_host(host, devices=2))
    assert done.returncode == 1
    assert f"the EFA device {host}/infiniband/uverbs2 is missing (VLLM_DEPLOY_EFA_DEVICES=3)" in done.stderr
    assert docker_calls(host) == []


def test_a_bad_container_env_entry_fails_naming_it(host):
    done = worker(host, 1, VLLM_DEPLOY_CONTAINER_ENV="HF_HUB_OFFLINE=1 oops NCCL_DEBUG=WARN")
    assert done.returncode == 1
    assert "VLLM_DEPLOY_CONTAINER_ENV entry 'oops' is not NAME=value" in done.stderr
    assert docker_calls(host) == []


def test_a_model_dir_without_its_mount_path_is_refused(host):
    done = worker(host, 1, VLLM_DEPLOY_MODEL_DIR=str(host))
    assert done.returncode == 1 and "VLLM_DEPLOY_MODEL_DIR and VLLM_DEPLOY_MODEL_MOUNT go together" in done.stderr


def test_the_same_spec_is_left_running_and_a_changed_one_replaces_the_container(host, head_port):
    assert worker(host, head_port).returncode == 0
    again = worker(host, head_port)
    assert again.returncode == 0 and "already running with this launch spec" in again.stderr
    assert len(docker_calls(host, "run")) == 1 and docker_calls(host, "rm") == [["rm", "-f", "vllm-ray"]]

    for new_head in listening("127.0.0.4"):  # the head replaced: a new private IP
        moved = worker(host, new_head, VLLM_DEPLOY_RAY_HEAD_IP="127.0.0.4")
    assert moved.returncode == 0, moved.stderr
    assert "replacing the Ray container vllm-ray" in moved.stderr
    runs = docker_calls(host, "run")
    assert len(runs) == 2 and f"--address=127.0.0.4:{new_head}" in runs[1]
    assert docker_calls(host)[-2:] == [["rm", "-f", "vllm-ray"], runs[1]]


def test_a_new_image_replaces_the_container(host, head_port):
    assert worker(host, head_port).returncode == 0
    done = worker(host, head_port, VLLM_DEPLOY_IMAGE="vllm/vllm-openai:v0.34.0")
    assert done.returncode == 0 and "replacing the Ray container vllm-ray" in done.stderr
    assert "vllm/vllm-openai:v0.34.0" in docker_calls(host, "run")[-1]


def test_the_same_tag_pulled_again_as_a_new_image_replaces_the_container(host, head_port):
    """The head's container follows the image id it runs; a worker left on the old image would
    join a Ray of another version (review finding)."""
    (host / "image_id").write_text("sha256:" + "1" * 64)
    assert worker(host, head_port).returncode == 0
    assert "already running" in worker(host, head_port).stderr
    (host / "image_id").write_text("sha256:" + "2" * 64)
    done = worker(host, head_port)
    assert done.returncode == 0 and "replacing the Ray container vllm-ray" in done.stderr
    assert len(docker_calls(host, "run")) == 2


def test_a_stopped_container_is_started_again(host, head_port):
    assert worker(host, head_port).returncode == 0
    state = host / "container"
    state.write_text(state.read_text().replace("true", "false"))
    done = worker(host, head_port)
    assert done.returncode == 0 and len(docker_calls(host, "run")) == 2


def test_a_node_ip_no_interface_holds_is_refused(host, head_port):
    done = worker(host, head_port, VLLM_DEPLOY_NODE_IP="10.0.1.99")
    assert done.returncode == 1
    assert "no network interface of this host holds VLLM_DEPLOY_NODE_IP=10.0.1.99" in done.stderr
    assert docker_calls(host) == []


def test_a_worker_whose_head_never_answers_fails_naming_itself_and_the_head(host):
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    done = worker(host, port, VLLM_DEPLOY_NODE_NAME="node-2", VLLM_DEPLOY_JOIN_TIMEOUT_SECONDS="3")
    assert done.returncode == 1
    assert f"node-2 ({NODE_IP}) cannot join the Ray cluster: the head 127.0.0.3:{port} did not answer in 3s" in done.stderr
    assert "security group allows all traffic between the nodes" in done.stderr
    assert docker_calls(host) == []


def test_an_unknown_role_or_launch_mode_is_refused(host):
    done = run(host, VLLM_DEPLOY_RAY_ROLE="leader", VLLM_DEPLOY_NODE_IP=NODE_IP)
    assert done.returncode == 1 and "VLLM_DEPLOY_RAY_ROLE=leader is neither head nor worker" in done.stderr
    done = run(host, VLLM_DEPLOY_RAY_ROLE="head", VLLM_DEPLOY_NODE_IP=NODE_IP, VLLM_DEPLOY_RAY_LAUNCH="podman")
    assert done.returncode == 1 and "VLLM_DEPLOY_RAY_LAUNCH=podman is not one of docker, daemon, foreground" in done.stderr


def test_daemon_mode_stops_a_stale_ray_then_starts_ray_without_blocking(host):
    ray = host / "bin" / "ray"
    ray.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"{host}/ray.log"\n')
    ray.chmod(0o755)
    done = run(host, VLLM_DEPLOY_RAY_ROLE="head", VLLM_DEPLOY_NODE_IP=NODE_IP, VLLM_DEPLOY_RAY_LAUNCH="daemon")
    assert done.returncode == 0, done.stderr
    stop, start = (host / "ray.log").read_text().splitlines()
    assert stop == "stop --force"
    assert start.startswith("start ") and "--head" in start.split() and "--block" not in start.split()
    assert docker_calls(host) == []


# --- serve_on_ray_head.sh: what it refuses before starting anything --------------------------


def serve(host: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    values = dict(VLLM_DEPLOY_NODE_IP=NODE_IP, VLLM_DEPLOY_RAY_NODES=f"node-0={NODE_IP} node-1=10.0.1.12",
                  VLLM_DEPLOY_GPUS_PER_NODE="8", VLLM_API_KEY="sk-never-printed")
    return run(host, "serve_on_ray_head.sh", args, **{**values, **env})


def test_serve_refuses_a_node_list_that_does_not_start_with_this_head(host):
    done = serve(host, "/models/served", VLLM_DEPLOY_RAY_NODES="node-1=10.0.1.12 node-0=10.0.1.11")
    assert done.returncode == 1
    assert "VLLM_DEPLOY_RAY_NODES must name this head first" in done.stderr and "node-1=10.0.1.12" in done.stderr


def test_serve_refuses_to_start_without_vllm_serve_arguments(host):
    done = serve(host)
    assert done.returncode == 1 and "no vllm serve arguments" in done.stderr
    assert "sk-never-printed" not in done.stderr


# --- lib.sh interface_of_ip ---------------------------------------------------------------


def interface_of(ip: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f'source "{SCRIPTS}/lib.sh"; interface_of_ip "$1"', "lib", ip],
        env={"PATH": path}, capture_output=True, text=True, timeout=30,
    )


def test_interface_of_ip_reads_ip_addr_on_the_host(host):
    path = f"{host / 'bin'}:{os.environ['PATH']}"
    assert interface_of(NODE_IP, path).stdout == "ens5\n"
    assert interface_of("127.0.0.3", path).stdout == "lo\n"  # lo answers for all of 127.0.0.0/8
    missing = interface_of("10.0.1.12", path)  # in ens5's subnet, but not this host's address
    assert missing.returncode == 1 and missing.stdout == ""


def test_interface_of_ip_asks_the_kernel_where_ip_is_not_installed(tmp_path):
    """The vLLM image has python3 but not iproute2: the lookup falls back to ioctls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "basename", "dirname", "head", "awk"):
        (bin_dir / tool).symlink_to(subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip())
    (bin_dir / "python3").symlink_to(sys.executable)
    assert interface_of("127.0.0.3", str(bin_dir)).stdout == "lo\n"
    assert interface_of("203.0.113.9", str(bin_dir)).returncode == 1  # TEST-NET-3: no host holds it
