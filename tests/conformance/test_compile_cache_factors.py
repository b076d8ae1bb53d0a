"""vLLM 0.33's own compile-cache key for the environments the program gives vLLM (fleet-pitfalls
P23): the builder's warm-up (vllm.env alone, warm_compile_cache.sh) and a replica's or a single
host's start (vllm.env plus the API key) hash the same, so the baked cache is the one a replica
finds; a VLLM_* variable that differs does not. Runs vllm.envs.compile_factors() in the
conformance venv (./tools/test-vllm -k compile_cache)."""

from __future__ import annotations

import json
import subprocess

import pytest

from serving.vllm_args import CONTAINER_ENV
from tests.conformance import vllm_runner

pytestmark = pytest.mark.vllm_conformance

# torchvision's registrations of its CUDA ops fail on a CPU torch (tests/conformance/vllm_harness/
# fake_cuda.py stub_extensions does the same); vllm.envs needs nothing else.
FACTORS = (
    "import sys, types;"
    "[sys.modules.setdefault(m, types.ModuleType(m)) for m in"
    " ('torchvision._meta_registrations', 'torchvision._autograd_registrations')];"
    "import hashlib, json, vllm.envs as e;"
    "print(hashlib.sha256(json.dumps(e.compile_factors(), sort_keys=True, default=str).encode()).hexdigest())"
)


def factors_hash(env: dict[str, str], tmp_path) -> str:
    problem = vllm_runner.venv_problem()
    if problem:
        pytest.skip(problem)
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VLLM_TARGET_DEVICE": "cpu"}
    run = subprocess.run([str(vllm_runner.venv() / "bin" / "python"), "-c", FACTORS], env={**base, **env},
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def test_the_bakes_warm_up_and_a_replicas_start_share_vllms_compile_hash(tmp_path):
    bake = factors_hash(dict(CONTAINER_ENV), tmp_path)
    serve = factors_hash({**CONTAINER_ENV, "VLLM_API_KEY": "sk-any-key"}, tmp_path)
    elsewhere = factors_hash({**CONTAINER_ENV, "VLLM_CACHE_ROOT": "/elsewhere"}, tmp_path)
    assert bake == serve == elsewhere, json.dumps(CONTAINER_ENV)
    other = factors_hash({**CONTAINER_ENV, "VLLM_USE_DEEP_GEMM": "0"}, tmp_path)
    assert other != bake, "a VLLM_* variable that changes compiled code changes vLLM's key"
