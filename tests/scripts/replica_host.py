"""A simulated replica: serving.replica's files written out as install_replica.sh lays them, and
the scripts run for real under bash with only the AWS/Docker/IMDS boundary stubbed
(tests/scripts/replica_stubs: aws, docker, curl for IMDSv2 and /health; tests/host_stubs:
systemctl). openssl and python3 are the real ones. Shared by tests/scripts/test_replica_scripts.py
and the live drain tests (tests/serving/test_replica_live.py), where `docker stop` stops a real
fake-vLLM process.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from components.proxy import ACME_WEBROOT
from config.settings import StackConfig
from config.validation import parse
from serving.nginx import NGINX_IMAGE, NginxSite
from serving.nginx_conf import site_for_stack
from serving.proxy_limits import stack_limits
from serving.replica import ReplicaSettings
from serving.vllm_args import VLLM_PORT
from sizing.choice import plan as choose_plan
from stack.preflight import vllm_command
from tests.scripts.test_host_scripts import STUBS, Run

REPLICA_STUBS = Path(__file__).resolve().parent / "replica_stubs"
REAL_TOOLS = (
    "bash", "env", "cat", "cp", "mv", "rm", "mkdir", "chmod", "ln", "grep", "sed", "tr", "head",
    "tail", "sleep", "install", "dirname", "basename", "touch", "wc", "awk", "date", "mktemp", "cmp",
    "openssl", "find", "stat",
    "base64", "gzip", "tar", "sha256sum", "cut", "flock",  # issue 29: the tenants' files
)
INSTANCE_ID = "i-0123456789abcdef0"
PRIVATE_IP = "10.0.1.23"
GROUP = "vllm-dev-replicas"
PARAMETER = "/vllm-deploy/dev/api-key"
PUBLIC_IP = "192.0.2.1"  # a documentation address (RFC 5737), as tools/plan shows


def single_host(raw: Optional[dict] = None) -> tuple[StackConfig, list[str], NginxSite]:
    """A stack as the single host serves it: its validated config, the `vllm serve` argv
    stack.preflight computes, and the nginx site components/proxy.py renders."""
    config = parse(raw or {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192,
                           "rateLimitPerMinute": 120, "metricsAllowedCidrs": ["10.20.0.0/16"]})
    plan = choose_plan(config)
    site = site_for_stack(config, stack_limits(config, plan), vllm_port=VLLM_PORT,
                          public_ip=PUBLIC_IP, acme_webroot=ACME_WEBROOT)
    return config, vllm_command(config, plan), site


def without_shutdown_timeout(argv: list[str]) -> list[str]:
    """The program's argv without its --shutdown-timeout pair (serving.vllm_args emits it on
    every host), for a replica rendered with another shutdown_timeout_s."""
    at = argv.index("--shutdown-timeout")
    return [*argv[:at], *argv[at + 2:]]


def settings_for(config: StackConfig, **changes) -> ReplicaSettings:
    values = dict(
        region="us-east-1", api_key_parameter=PARAMETER, vllm_image=config.vllm_image,
        nginx_image=NGINX_IMAGE, served_model_name=config.served_name,
        model_host_dir="/data/models/served", shutdown_timeout_s=30, drain_seconds=300,
        launch_hook_name="vllm-launch", terminate_hook_name="vllm-terminate",
        alb_subnet_cidrs=("10.0.0.0/24", "10.0.1.0/24"), upstream_timeout_s=3600,
    )
    values.update(changes)
    return ReplicaSettings(**values)


class ReplicaHost:
    """One replica's root in a temp dir: the baked files under opt/replica, simulated AWS state."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        self.dir = root / "opt" / "replica"
        self.state = root / "state"
        self.bin = root / "bin"
        for name, text in files.items():
            path = self.dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755 if name.endswith(".sh") else 0o644)
        for directory in (self.state / "imds" / "autoscaling", self.state / "ssm", self.state / "fail",
                          self.state / "lifecycle", self.state / "containers", self.bin):
            directory.mkdir(parents=True, exist_ok=True)
        (self.state / "calls.log").touch()
        (self.state / "imds" / "token").write_text("imds-session-" + secrets.token_hex(4))
        (self.state / "imds" / "instance-id").write_text(INSTANCE_ID)
        (self.state / "imds" / "local-ipv4").write_text(PRIVATE_IP)
        (self.state / "imds" / "autoscaling" / "target-lifecycle-state").write_text("InService")
        (self.state / "asg_group").write_text(GROUP + "\n")
        (self.bin / "systemctl").symlink_to(STUBS / "systemctl")
        for name in ("aws", "docker", "curl"):
            (self.bin / name).symlink_to(REPLICA_STUBS / name)
        # The interpreter itself, not a shim (pyenv's needs its own PATH).
        (self.bin / "python3").symlink_to(os.path.realpath(sys.executable))
        for tool in REAL_TOOLS:
            real = shutil.which(tool)
            assert real, f"test needs the real `{tool}`"
            (self.bin / tool).symlink_to(real)
        self.run_dir = root / "run" / "vllm-deploy"
        self.secrets_dir = root / "run" / "vllm-deploy-secrets"
        self.tls_dir = root / "etc" / "vllm-deploy" / "tls"
        self.models = root / "data" / "models" / "served"  # the model volume, mounted
        self.models.mkdir(parents=True)
        (self.models / "config.json").write_text("{}\n")
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "STUB_STATE": str(self.state),
            "STUB_BIN": str(self.bin),
            "STUB_SRC": str(STUBS),
            "VLLM_DEPLOY_RETRY_DELAY": "0",
            "VLLM_DEPLOY_HEALTH_POLL_S": "0.05",
            "VLLM_DEPLOY_LIFECYCLE_POLL_S": "0.05",
            "VLLM_DEPLOY_RUN_DIR": str(self.run_dir),
            "VLLM_DEPLOY_SECRETS_DIR": str(self.secrets_dir),
            "VLLM_DEPLOY_TLS_DIR": str(self.tls_dir),
            "VLLM_DEPLOY_MODEL_DIR": str(self.models),
        }

    # --- simulated AWS --------------------------------------------------------------------
    def set_parameter(self, name: str, value: str) -> None:
        (self.state / "ssm" / name.replace("/", "_")).write_text(value + "\n")

    def pending(self, hook: str) -> None:
        """The group holds the instance in a lifecycle hook (Pending:Wait / Terminating:Wait)."""
        (self.state / "lifecycle" / hook).touch()

    def completions(self) -> list[tuple[str, str, float]]:
        """(hook, result, time) for each complete-lifecycle-action that found an action."""
        path = self.state / "lifecycle" / "completed"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(hook, result, float(at)) for hook, result, at in (line.split() for line in lines)]

    def fail(self, key: str, times: int | str = "always") -> None:
        (self.state / "fail" / key).write_text(f"{times}\n")

    def add_container(self, name: str, pid: Optional[int] = None) -> None:
        (self.state / "containers" / name).touch()
        if pid is not None:
            (self.state / "containers" / f"{name}.pid").write_text(str(pid))

    def calls_text(self) -> str:
        return (self.state / "calls.log").read_text()

    # --- running --------------------------------------------------------------------------
    def command(self, script: str, **env: str) -> tuple[list[str], dict[str, str]]:
        return ["bash", str(self.dir / script)], {**self.env, **env}

    def run(self, script: str, timeout_s: float = 60, **env: str) -> Run:
        log = self.state / "calls.log"
        before = len(log.read_text().splitlines())
        argv, full_env = self.command(script, **env)
        proc = subprocess.run(argv, env=full_env, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout_s)
        calls = [shlex.split(line) for line in log.read_text().splitlines()[before:]]
        return Run(script, proc.returncode, proc.stdout, proc.stderr, calls)
