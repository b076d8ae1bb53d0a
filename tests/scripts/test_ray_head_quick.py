"""The Ray scripts' promises that the cluster tier checks with a real Ray, checked in the quick
suite too, with a stub Ray: the API key stays out of what vLLM hands its Ray workers, and the
wait for the nodes' GPUs fails (exit 1, naming the nodes) when its time is up.

The stub is the `ray` Python module (on PYTHONPATH, ahead of any installed Ray) that
wait_for_ray_gpus.sh's query imports, answering ray.nodes() from a JSON file, plus a `ray` CLI
for ray_node.sh's `ray stop` / `ray start`; `vllm` is a stub that records what it was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.scripts.test_ray_scripts import IP_STUB, NODE_IP, SCRIPTS

API_KEY = "sk-test-never-printed-0123"
HF_TOKEN = "hf_never_printed_4567"
WORKER_IP = "10.0.1.12"
GPUS = 8

RAY_MODULE = """\
# A stand-in for Ray's Python API, as far as wait_for_ray_gpus.sh's query uses it.
import json, os

def init(**kwargs):
    pass

def nodes():
    with open(os.environ["STUB_RAY_NODES"]) as f:
        return [{"Alive": True, "NodeManagerAddress": ip, "Resources": {"GPU": float(n)}}
                for ip, n in json.load(f)]

def shutdown():
    pass
"""

VLLM_STUB = """\
#!{python}
import json, os, sys
with open(os.path.join(os.environ["VLLM_CONFIG_ROOT"], "ray_non_carry_over_env_vars.json")) as f:
    kept = json.load(f)
with open("{home}/vllm.json", "w") as f:
    json.dump({{"argv": sys.argv[1:], "kept_from_ray_workers": kept,
               "has_api_key": os.environ.get("VLLM_API_KEY") == "{api_key}",
               "ray_address": os.environ.get("RAY_ADDRESS")}}, f)
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    bin_dir, module_dir = tmp_path / "bin", tmp_path / "pylib" / "ray"
    bin_dir.mkdir()
    module_dir.mkdir(parents=True)
    (module_dir / "__init__.py").write_text(RAY_MODULE)
    (bin_dir / "ip").write_text(IP_STUB)
    (bin_dir / "ray").write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"{tmp_path}/ray-cli.log"\n')
    (bin_dir / "vllm").write_text(VLLM_STUB.format(python=sys.executable, home=tmp_path, api_key=API_KEY))
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return tmp_path


def joined(host: Path, *nodes: tuple[str, int]) -> None:
    (host / "nodes.json").write_text(json.dumps(list(nodes)))


def run(host: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        "PATH": f"{host / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(host / "pylib"),
        "HOME": str(host), "STUB_RAY_NODES": str(host / "nodes.json"),
        "VLLM_DEPLOY_RAY_NODES": f"node-0={NODE_IP} node-1={WORKER_IP}",
        "VLLM_DEPLOY_GPUS_PER_NODE": str(GPUS), "VLLM_DEPLOY_POLL_SECONDS": "0.2",
    }
    return subprocess.run([str(SCRIPTS / script), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def wait(host: Path, timeout: int = 1) -> subprocess.CompletedProcess:
    return run(host, "wait_for_ray_gpus.sh", VLLM_DEPLOY_RAY_ADDRESS=f"{NODE_IP}:6379",
               VLLM_DEPLOY_RAY_EXEC="here", VLLM_DEPLOY_TIMEOUT_SECONDS=str(timeout),
               VLLM_DEPLOY_STEP="ray-wait")


def test_the_wait_succeeds_once_every_node_brings_its_gpus(host):
    joined(host, (NODE_IP, GPUS), (WORKER_IP, GPUS))
    done = wait(host)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NODES_JOINED=2", f"RAY_GPUS={2 * GPUS}"]


@pytest.mark.parametrize("worker", [None, 4], ids=["never joined", "short of GPUs"])
def test_the_wait_fails_after_its_timeout_naming_the_node(host, worker):
    joined(host, (NODE_IP, GPUS), *([(WORKER_IP, worker)] if worker is not None else []))
    done = wait(host, timeout=1)
    assert done.returncode == 1, "a wait that gives up must fail the step, or vLLM starts short of GPUs"
    assert f"node-1 ({WORKER_IP}): {worker or 0} of {GPUS} GPU" in done.stderr
    assert "node-0" not in done.stderr.split("not joined:")[1].split("---")[0]
    assert "NODES_JOINED" not in done.stdout


def test_serve_keeps_the_api_key_and_hub_tokens_from_vllms_ray_workers(host):
    joined(host, (NODE_IP, GPUS), (WORKER_IP, GPUS))
    done = run(host, "serve_on_ray_head.sh", "/models/served", "--pipeline-parallel-size", "2",
               VLLM_DEPLOY_NODE_IP=NODE_IP, VLLM_DEPLOY_RAY_EXEC="here",
               VLLM_CONFIG_ROOT=str(host / "vllm-config"), VLLM_API_KEY=API_KEY, HF_TOKEN=HF_TOKEN)
    assert done.returncode == 0, done.stderr
    seen = json.loads((host / "vllm.json").read_text())
    assert seen["argv"] == ["serve", "/models/served", "--pipeline-parallel-size", "2"]
    assert seen["has_api_key"] and seen["ray_address"] == f"{NODE_IP}:6379", "the driver keeps the key"
    # vLLM 0.33.0 vllm/ray/ray_env.py: these names are not copied into the Ray workers' env.
    assert {"VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} <= set(seen["kept_from_ray_workers"])
    for secret in (API_KEY, HF_TOKEN):
        assert secret not in done.stdout + done.stderr
        assert secret not in (host / "vllm-config" / "ray_non_carry_over_env_vars.json").read_text()
