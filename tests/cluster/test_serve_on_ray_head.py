"""serve_on_ray_head.sh, node 0's vLLM container entrypoint, runs for real against Ray from PyPI:
it starts the Ray head (ray_node.sh, launch mode daemon), waits for every node's GPUs and only
then becomes `vllm serve` — here a stub `vllm` that records its argv, its environment and the
names vLLM is told to keep from its Ray workers.

Each run of the script is put in a PID namespace of its own (`unshare --pid`), as Docker puts
the container: `ray stop --force` there sees only that "container", and when the process the
script became exits, the namespace goes with every Ray process in it, as a container does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cluster.processes import GPUS_PER_NODE, HEAD_IP, NODES, SCRIPTS, WORKER_IP, Cluster

pytestmark = pytest.mark.cluster

SERVE_ARGS = ["/models/served", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
              "--distributed-executor-backend", "ray", "--served-model-name", "a model"]
API_KEY = "sk-test-never-printed"
RECORDED = ("RAY_ADDRESS", "VLLM_HOST_IP", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


@pytest.fixture(scope="module", autouse=True)
def pid_namespaces():
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace (unshare needs root): {probe.stderr.strip()}")


@pytest.fixture
def stub_vllm(tmp_path: Path) -> Path:
    """A `vllm` that appends {argv, env} as one JSON line to tmp_path/vllm.jsonl and exits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "vllm"
    stub.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        record = {{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in {RECORDED!r}}}}}
        # What vLLM keeps from its Ray workers (vllm/ray/ray_env.py reads this file at start).
        with open(os.path.join(os.environ["VLLM_CONFIG_ROOT"], "ray_non_carry_over_env_vars.json")) as f:
            record["kept_from_ray_workers"] = json.load(f)
        with open("{tmp_path}/vllm.jsonl", "a") as f:
            f.write(json.dumps(record) + "\\n")
        """))
    stub.chmod(0o755)
    return tmp_path


def serve(cluster: Cluster, home: Path, timeout: int, runs: int = 1) -> subprocess.CompletedProcess:
    """Runs serve_on_ray_head.sh `runs` times, one after the other, in one PID namespace (the
    "container"); a later run finds the Ray head of the earlier one still running there."""
    script = str(SCRIPTS / "serve_on_ray_head.sh")
    again = 'bash "$0" "$@"; echo "run exited $?" >&2; ' * (runs - 1)
    proc = cluster.popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         "bash", "-c", again + 'exec bash "$0" "$@"', script, *SERVE_ARGS],
        cluster.node_env(
            PATH=f"{home / 'bin'}:{cluster.node_env()['PATH']}",
            VLLM_DEPLOY_NODE_IP=HEAD_IP, VLLM_DEPLOY_RAY_NODES=NODES,
            VLLM_DEPLOY_GPUS_PER_NODE=str(GPUS_PER_NODE), VLLM_DEPLOY_RAY_RESOURCE="fake_gpu",
            VLLM_DEPLOY_TIMEOUT_SECONDS=str(timeout), VLLM_DEPLOY_POLL_SECONDS="2",
            VLLM_API_KEY=API_KEY, VLLM_CONFIG_ROOT=str(home / "vllm-config"),
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=runs * (timeout + 180))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_worker(cluster: Cluster) -> None:
    """node-1's ray_node.sh as Docker runs it (--restart unless-stopped): started again whenever
    it exits. Ray's raylet gives up on a head that went away after 5 s here (60 s by default)."""
    cluster.popen(
        ["bash", "-c", 'while :; do bash "$0"; sleep 1; done', str(SCRIPTS / "ray_node.sh")],
        cluster.node_env(
            VLLM_DEPLOY_RAY_ROLE="worker", VLLM_DEPLOY_NODE_NAME="node-1", VLLM_DEPLOY_NODE_IP=WORKER_IP,
            VLLM_DEPLOY_RAY_LAUNCH="foreground", RAY_gcs_rpc_server_reconnect_timeout_s="5",
        ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def records(home: Path) -> list[dict]:
    log = home / "vllm.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_vllm_serve_starts_with_its_exact_argv_once_the_worker_joined_and_again_after_a_restart(cluster, stub_vllm):
    start_worker(cluster)
    done = serve(cluster, stub_vllm, timeout=150, runs=2)
    assert done.returncode == 0, done.stderr[-4000:]
    want_env = {"RAY_ADDRESS": f"{HEAD_IP}:{cluster.port}", "VLLM_HOST_IP": HEAD_IP,
                "NCCL_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo"}
    want = {"argv": ["serve", *SERVE_ARGS], "env": want_env,
            "kept_from_ray_workers": ["VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]}
    assert records(stub_vllm) == [want] * 2, done.stderr[-4000:]
    assert "run exited 0" in done.stderr  # the first run's vLLM exited; the second found its Ray head
    assert done.stderr.count(f"Ray reports {2 * GPUS_PER_NODE} fake_gpu on 2 nodes") == 2
    assert API_KEY not in done.stdout + done.stderr


def test_a_worker_that_never_joins_fails_naming_it_and_vllm_never_starts(cluster, stub_vllm):
    done = serve(cluster, stub_vllm, timeout=20)
    assert done.returncode == 1
    assert f"node-1 ({WORKER_IP}): 0 of {GPUS_PER_NODE} fake_gpu" in done.stderr
    assert "not every node joined the Ray cluster" in done.stderr and "vllm serve was not started" in done.stderr
    assert records(stub_vllm) == []
    assert API_KEY not in done.stdout + done.stderr
