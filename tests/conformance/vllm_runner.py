"""Runs vLLM 0.33.0's startup checks (tests/conformance/vllm_harness/run_batch.py) in the vLLM
venv that tools/vllm-venv builds, for a batch of requests at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "vllm_harness"

# The venv: $VLLM_VENV, else .vllm-venv (tools/vllm-venv builds either).
VENV_ENV = "VLLM_VENV"


def venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".vllm-venv")


def venv_problem() -> str:
    """Why the vLLM venv cannot run the checks ("" when it can)."""
    python = venv() / "bin" / "python"
    if not python.exists():
        return f"no vLLM venv at {venv()}: build it with tools/vllm-venv (or run ./tools/test-vllm)"
    if not (venv() / ".conformance.sha256").exists():
        return f"{venv()} was not built by tools/vllm-venv (no stamp); run tools/vllm-venv {venv()}"
    return ""


def run(requests: list[dict[str, Any]], work: Path, timeout_s: float = 1800) -> dict[str, Any]:
    """{request id: stages.check result}; vLLM's logs stay in work/logs/<id>.log."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "requests.json").write_text(json.dumps(requests, indent=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", VENV_ENV))}
    env.setdefault("VLLM_CACHE_ROOT", str(venv() / "cache"))
    completed = subprocess.run(
        [str(venv() / "bin" / "python"), str(HARNESS / "run_batch.py"),
         str(work / "requests.json"), str(work / "results.json"), "--logs", str(work / "logs")],
        cwd=HARNESS, env=env, capture_output=True, text=True, timeout=timeout_s,
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-5000:])
        raise RuntimeError(f"run_batch.py exited {completed.returncode}; see {work}")
    return json.loads((work / "results.json").read_text())
