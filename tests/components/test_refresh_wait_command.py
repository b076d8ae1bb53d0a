"""The refresh waiter's command, run as pulumi-command runs it (`/bin/sh -c`, in the project's
root): it finds the project's .venv (boto3 is there, not in a system python3), and where there is
no .venv it fails saying what to install, not with a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from components.fleet_group import REFRESH_WAIT_COMMAND, WAIT_FOR_REFRESH

ROOT = Path(__file__).resolve().parents[2]


def _project_copy(tmp_path: Path, with_venv: bool) -> Path:
    root = tmp_path / "project"
    target = root / WAIT_FOR_REFRESH.relative_to(ROOT)
    target.parent.mkdir(parents=True)
    shutil.copy(WAIT_FOR_REFRESH, target)
    if with_venv:
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / ".venv" / "bin" / "python").symlink_to(sys.executable)  # this venv has boto3
    return root


def _run(root: Path, python3_dir: Path) -> subprocess.CompletedProcess:
    # A python3 on PATH without boto3: the interpreter's own, run isolated from this venv.
    python3_dir.mkdir()
    shim = python3_dir / "python3"
    shim.write_text(f"#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -I -S \"$@\"\n")
    shim.chmod(0o755)
    env = {"PATH": f"{python3_dir}:/usr/bin:/bin", "GROUP_NAME": "vllm-deploy-test-replicas",
           "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_EC2_METADATA_DISABLED": "true",
           # no route out: a call that got as far as AWS would fail on the endpoint, not on boto3
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run(["/bin/sh", "-c", REFRESH_WAIT_COMMAND], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)


def test_with_the_projects_venv_the_waiter_imports_boto3(tmp_path):
    run = _run(_project_copy(tmp_path, with_venv=True), tmp_path / "bin")
    assert "No module named 'boto3'" not in run.stderr and "boto3 is not installed" not in run.stderr
    assert "127.0.0.1:9" in run.stderr or "Could not connect" in run.stderr, run.stderr[-2000:]


def test_without_a_venv_it_says_what_to_install(tmp_path):
    run = _run(_project_copy(tmp_path, with_venv=False), tmp_path / "bin")
    assert run.returncode == 1
    assert "boto3 is not installed" in run.stderr and "requirements.lock" in run.stderr
    assert "Traceback" not in run.stderr
