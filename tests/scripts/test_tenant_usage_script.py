"""install_tenant_usage.sh on the simulated host (tests/host_stubs: apt, systemctl), with the
real mtail checking the program it installs. What it writes is run for real (mtail, logrotate)
in tests/serving/test_tenant_usage_live.py."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from serving.monitoring import tenant_usage
from tests.scripts.test_host_scripts import Host, assert_failed, assert_ok

SCRIPT = "install_tenant_usage.sh"


def mtail_binary() -> str:
    found = shutil.which("mtail")
    if not found:
        reason = "needs mtail (apt-get install mtail)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the usage program: {reason}")
        pytest.skip(reason)
    return found


def usage_host(root: Path) -> tuple[Host, dict[str, str]]:
    """A host with the real tools the script needs beside the stubs, and its directories in `root`."""
    host = Host(root)
    for tool in ("base64", "sh"):
        (host.bin / tool).symlink_to(shutil.which(tool))
    (host.bin / "mtail").symlink_to(mtail_binary())
    env = {
        **tenant_usage.install_env(metrics=True, nginx_container="vllm-proxy"),
        "VLLM_DEPLOY_USAGE_LOG_DIR": str(root / "var" / "log" / "proxy-usage"),
        "VLLM_DEPLOY_SYSTEMD_DIR": str(root / "etc" / "systemd" / "system"),
        "VLLM_DEPLOY_ETC_DIR": str(root / "etc" / "vllm-deploy"),
        "VLLM_DEPLOY_LIB_DIR": str(root / "usr" / "local" / "lib" / "vllm-deploy"),
        "VLLM_DEPLOY_STATE_DIR": str(root / "var" / "lib" / "vllm-deploy"),
    }
    return host, env


@pytest.fixture
def usage(tmp_path: Path) -> tuple[Host, dict[str, str]]:
    return usage_host(tmp_path)


def unit(env: dict[str, str], name: str) -> str:
    return (Path(env["VLLM_DEPLOY_SYSTEMD_DIR"]) / name).read_text()


def test_it_installs_mtail_on_loopback_and_the_rotation_and_starts_both(usage):
    host, env = usage
    run = host.run(SCRIPT, **env)
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_TENANT_USAGE=metrics\n"
    assert set(run.installs()) == {"logrotate", "mtail"}
    service = unit(env, tenant_usage.SYSTEMD_SERVICE)
    assert "--address=127.0.0.1 --port=3903" in service and "--emit_prog_label=false" in service
    assert "User=mtail" in service
    log_dir = Path(env["VLLM_DEPLOY_USAGE_LOG_DIR"])
    assert f"--logs={log_dir}/mtail-view/usage.log" in service
    # mtail's view is the live log under a second name.
    assert (log_dir / "usage.log").samefile(log_dir / "mtail-view" / "usage.log")
    program = Path(env["VLLM_DEPLOY_ETC_DIR"]) / "mtail" / "tenant_usage.mtail"
    assert program.read_text() == tenant_usage.program_text()
    rotate = (Path(env["VLLM_DEPLOY_ETC_DIR"]) / "usage-logrotate.conf").read_text()
    assert f"{log_dir}/usage.log {{" in rotate and "size 100M" in rotate and "rotate 5" in rotate
    assert "docker exec vllm-proxy nginx -s reopen" in rotate
    assert "OnUnitActiveSec=10min" in unit(env, "vllm-deploy-usage-logrotate.timer")
    systemctl = [" ".join(c) for c in run.called("systemctl")]
    assert "restart vllm-deploy-usage-logrotate.timer" in systemctl
    assert "restart vllm-deploy-tenant-usage.service" in systemctl
    assert "disable --now mtail.service" in systemctl  # the package's unit: every interface


def test_a_second_run_changes_and_restarts_nothing(usage):
    host, env = usage
    assert_ok(host.run(SCRIPT, **env))
    again = host.run(SCRIPT, **env)
    assert_ok(again)
    assert again.installs() == []
    assert not any(c[0] in ("restart", "daemon-reload") for c in again.called("systemctl"))


def test_a_new_program_restarts_mtail(usage):
    host, env = usage
    assert_ok(host.run(SCRIPT, **env))
    program = tenant_usage.program_text() + "\ncounter vllm_deploy_extra_total\n/x/ {\n  vllm_deploy_extra_total++\n}\n"
    run = host.run(SCRIPT, **{**env, "VLLM_DEPLOY_MTAIL_PROGRAM_B64": base64.b64encode(program.encode()).decode()})
    assert_ok(run)
    assert ["restart", "vllm-deploy-tenant-usage.service"] in run.called("systemctl")


def test_a_program_mtail_refuses_stops_before_any_restart(usage):
    host, env = usage
    broken = base64.b64encode(b"counter x\n/unclosed( {\n  x++\n}\n").decode()
    run = host.run(SCRIPT, **{**env, "VLLM_DEPLOY_MTAIL_PROGRAM_B64": broken})
    assert_failed(run, "mtail cannot compile")
    assert not any(c[0] == "restart" for c in run.called("systemctl"))


def test_a_refused_program_leaves_the_running_one_in_place(usage):
    host, env = usage
    assert_ok(host.run(SCRIPT, **env))
    broken = base64.b64encode(b"counter x\n/unclosed( {\n  x++\n}\n").decode()
    assert_failed(host.run(SCRIPT, **{**env, "VLLM_DEPLOY_MTAIL_PROGRAM_B64": broken}), "mtail cannot compile")
    program = Path(env["VLLM_DEPLOY_ETC_DIR"]) / "mtail" / "tenant_usage.mtail"
    assert program.read_text() == tenant_usage.program_text()


def test_without_monitoring_only_the_rotation_and_a_former_mtail_goes(usage):
    host, env = usage
    assert_ok(host.run(SCRIPT, **env))
    off = {k: v for k, v in env.items() if not k.startswith("VLLM_DEPLOY_MTAIL_")}
    run = host.run(SCRIPT, **{**off, "VLLM_DEPLOY_USAGE_METRICS": "0"})
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_TENANT_USAGE=rotation\n"
    assert ["disable", "--now", "vllm-deploy-tenant-usage.service"] in run.called("systemctl")
    assert not (Path(env["VLLM_DEPLOY_SYSTEMD_DIR"]) / tenant_usage.SYSTEMD_SERVICE).exists()
    assert (Path(env["VLLM_DEPLOY_ETC_DIR"]) / "usage-logrotate.conf").exists()


def test_a_fresh_host_without_monitoring_installs_logrotate_only(usage):
    host, env = usage
    off = {k: v for k, v in env.items() if not k.startswith("VLLM_DEPLOY_MTAIL_")}
    run = host.run(SCRIPT, **{**off, "VLLM_DEPLOY_USAGE_METRICS": "0"})
    assert_ok(run)
    assert run.installs() == ["logrotate"]
    assert not any("tenant-usage" in " ".join(c) for c in run.called("systemctl"))


@pytest.mark.parametrize(
    ("key", "value", "phrase"),
    [
        ("VLLM_DEPLOY_MTAIL_ADDRESS", "0.0.0.0", "must be a loopback address"),
        ("VLLM_DEPLOY_NGINX_CONTAINER", "proxy; rm -rf /", "is not a container name"),
        ("VLLM_DEPLOY_USAGE_METRICS", "yes", "must be 0 or 1"),
        ("VLLM_DEPLOY_USAGE_LOG_MAX_MIB", "1G", "must be a non-negative integer"),
        ("VLLM_DEPLOY_USAGE_LOG_DIR", "relative/dir", "must be an absolute directory"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(usage, key, value, phrase):
    host, env = usage
    run = host.run(SCRIPT, **{**env, key: value})
    assert_failed(run, key, phrase)
    assert not any(c[0] in ("restart", "enable") for c in run.called("systemctl"))
