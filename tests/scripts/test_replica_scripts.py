"""A replica's scripts (components/scripts/replica/) run for real under bash, from the files
serving.replica.replica_files renders (what the image carries), with stub `aws`, `docker`,
`systemctl` and an IMDSv2/health `curl` (tests/scripts/replica_host.py); openssl is real."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest

from serving.monitoring import cloudwatch
from serving.nginx import CONTAINER_CONF_PATH, CONTAINER_TLS_DIR
from serving import compile_cache
from serving.replica import fleet_site, replica_files
from serving.nginx_conf import render
from tests.scripts.replica_host import (
    GROUP, INSTANCE_ID, PARAMETER, PRIVATE_IP, REPLICA_STUBS, ReplicaHost, settings_for, single_host,
)
from tests.scripts.test_host_scripts import _shellcheck, assert_failed, assert_ok

API_KEY = "sk-replica-Zq7xv3Jm0aQ2lP9w"


@pytest.fixture
def stack():
    config, argv, site = single_host()
    settings = settings_for(config)
    return config, argv, site, settings


@pytest.fixture
def replica(tmp_path: Path, stack) -> ReplicaHost:
    _, argv, site, settings = stack
    host = ReplicaHost(tmp_path, replica_files(vllm_argv=argv, nginx_site=site, settings=settings))
    host.set_parameter(PARAMETER, API_KEY)
    host.pending("vllm-launch")
    return host


def _docker_run(run, name: str) -> list[str]:
    (args,) = [call for call in run.called("docker") if call[:1] == ["run"] and call[call.index("--name") + 1] == name]
    return args


def _option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]


# --- static -------------------------------------------------------------------------------
def test_replica_scripts_pass_shellcheck_as_baked(replica: ReplicaHost) -> None:
    """Checked where they run: flat in the baked directory, lib.sh beside them."""
    scripts = sorted(p.name for p in replica.dir.glob("*.sh"))
    assert {"boot.sh", "drain.sh", "lifecycle_watch.sh", "install_replica.sh", "bake_cleanup.sh"} <= set(scripts)
    proc = subprocess.run([_shellcheck(), "--external-sources", "--severity=style", *scripts],
                          cwd=replica.dir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stubs = [str(p) for p in REPLICA_STUBS.iterdir() if p.is_file() and not p.name.startswith(".")]
    proc = subprocess.run([_shellcheck(), "--severity=style", *stubs], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for script in replica.dir.glob("*.sh"):
        text = script.read_text()
        assert "set -x" not in text and "xtrace" not in text, script.name
        if script.name not in ("lib.sh", "replica_lib.sh"):
            assert "set -euo pipefail" in text, script.name


# --- boot.sh ------------------------------------------------------------------------------
def test_boot_runs_the_single_hosts_argv_and_nginx_config_and_completes_the_launch(replica, stack) -> None:
    _, argv, site, settings = stack
    run = replica.run("boot.sh")
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_REPLICA=ready\n"

    vllm = _docker_run(run, "vllm")
    image_at = vllm.index(settings.vllm_image)
    assert vllm[image_at + 1:] == argv, "stack.preflight's argv, as a single host runs it"
    assert argv[argv.index("--shutdown-timeout") + 1] == "30"
    assert _option_values(vllm, "--restart") == ["always"] and "--gpus" in vllm
    assert _option_values(vllm, "-p") == ["127.0.0.1:8000:8000"], "vLLM only on loopback, as on a single host"
    assert _option_values(vllm, "--stop-timeout") == ["60"], "P7: above --shutdown-timeout"
    assert _option_values(vllm, "-v") == [f"{replica.models}:/models/served:ro"]
    env_names = (replica.state / "containers" / "vllm.env-names").read_text().split()
    assert sorted(env_names) == ["HF_HUB_OFFLINE", "VLLM_API_KEY", "VLLM_CACHE_ROOT", "VLLM_NO_USAGE_STATS"]

    proxy = _docker_run(run, "vllm-proxy")
    assert proxy[-1] == settings.nginx_image and _option_values(proxy, "--network") == ["host"]
    mounts = dict(m.rsplit(":", 2)[:2] for m in _option_values(proxy, "-v"))
    conf = Path(next(src for src, dst in mounts.items() if dst == CONTAINER_CONF_PATH))
    assert conf.read_text() == render(fleet_site(site, settings)), "the baked config, from the single host's site"
    assert mounts[str(replica.tls_dir)] == CONTAINER_TLS_DIR
    assert mounts[str(replica.run_dir)] == str(replica.run_dir), "the drain flag at the same path inside"
    assert _option_values(proxy, "--ulimit") == [f"nofile={site.limits.container_nofile}:{site.limits.container_nofile}"]

    (health,) = {c[-1] for c in run.called("curl") if c[-1].endswith("/health")}
    assert health == "https://127.0.0.1:443/health", "through nginx, over TLS"
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "CONTINUE")]
    (complete,) = [c for c in run.called("aws") if c[:2] == ["autoscaling", "complete-lifecycle-action"]]
    assert _option_values(complete, "--auto-scaling-group-name") == [GROUP]
    assert _option_values(complete, "--instance-id") == [INSTANCE_ID]


def test_the_key_reaches_only_a_root_only_file_never_argv_or_logs(replica) -> None:
    run = replica.run("boot.sh")
    assert_ok(run)
    key_file = replica.secrets_dir / "api-key.env"
    assert key_file.read_text() == f"VLLM_API_KEY={API_KEY}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(replica.secrets_dir.stat().st_mode) == 0o700
    assert API_KEY not in replica.calls_text(), "no command line carried the key"
    assert API_KEY not in run.stdout + run.stderr
    holders = subprocess.run(["grep", "-rlF", API_KEY, str(replica.root)], capture_output=True, text=True).stdout.split()
    ssm = replica.state / "ssm" / PARAMETER.replace("/", "_")
    assert sorted(holders) == sorted([str(key_file), str(ssm)]), "the env file (tmpfs on a replica) and SSM only"
    vllm = _docker_run(run, "vllm")
    assert _option_values(vllm, "--env-file")[0] == str(key_file)


def test_the_certificate_is_made_once_for_loopback_and_the_private_address(replica) -> None:
    assert_ok(replica.run("boot.sh"))
    cert, key = replica.tls_dir / "server.crt", replica.tls_dir / "server.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and f"IP Address:{PRIVATE_IP}" in text and INSTANCE_ID in text
    before = cert.read_bytes()
    again = replica.run("boot.sh")  # a reboot: no launch action pending any more
    assert_ok(again)
    assert cert.read_bytes() == before, "kept across boots"
    assert "no action pending" in again.stderr
    removed = [c for c in again.called("docker") if c[:2] == ["rm", "-f"]]
    assert sorted(c[2] for c in removed) == ["vllm", "vllm-proxy"], "recreated at every boot (a rotated key)"


def test_a_missing_parameter_fails_naming_it_and_abandons_the_launch(replica) -> None:
    (replica.state / "ssm" / PARAMETER.replace("/", "_")).unlink()
    run = replica.run("boot.sh")
    assert_failed(run, f"the SSM parameter {PARAMETER} does not exist in us-east-1")
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "ABANDON")]
    assert not [c for c in run.called("docker") if c[:1] == ["run"]]
    assert len([c for c in run.called("aws") if c[:2] == ["ssm", "get-parameter"]]) == 1, "not retried"


def test_no_imds_cannot_abandon_so_it_says_the_hook_times_out_into_abandon(replica) -> None:
    """Without IMDS there is no instance id, and complete-lifecycle-action needs one: the trap
    (installed before any check) says so, and the hook's default result (ABANDON, set on the
    group: components/fleet_group.py) ends the launch at its heartbeat timeout."""
    (replica.state / "imds" / "instance-id").unlink()
    run = replica.run("boot.sh")
    assert_failed(run, "the instance metadata service (IMDSv2) did not answer")
    assert "cannot be completed from here" in run.stderr
    assert "heartbeat timeout with its default result ABANDON" in run.stderr
    assert replica.completions() == []
    assert not [c for c in run.called("aws") if c[:2] == ["ssm", "get-parameter"]]
    assert not [c for c in run.called("docker") if c[:1] == ["run"]]


def test_imds_failing_after_the_instance_is_known_abandons_the_launch(replica) -> None:
    (replica.state / "imds" / "local-ipv4").unlink()
    run = replica.run("boot.sh")
    assert_failed(run, "IMDS gave no local-ipv4")
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "ABANDON")]


def test_an_unmounted_model_volume_fails_before_any_container(replica) -> None:
    (replica.models / "config.json").unlink()
    run = replica.run("boot.sh")
    assert_failed(run, f"no model at {replica.models} (no config.json): the model volume is not mounted there")
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "ABANDON")]
    assert not [c for c in run.called("docker") if c[:1] == ["run"]]


def test_throttling_is_retried_then_fails_clearly(replica) -> None:
    replica.fail("ssm-throttle", 2)
    assert_ok(replica.run("boot.sh"))
    replica.fail("ssm-throttle")
    replica.pending("vllm-launch")
    run = replica.run("boot.sh", VLLM_DEPLOY_RETRY_ATTEMPTS="3")
    assert_failed(run, f"reading the SSM parameter {PARAMETER} failed after 3 attempts", "ThrottlingException")
    assert API_KEY not in run.stderr


def test_no_health_through_nginx_abandons_with_heartbeats_meanwhile(replica) -> None:
    replica.fail("health")
    run = replica.run("boot.sh", VLLM_DEPLOY_HEALTH_TIMEOUT_S="1", VLLM_DEPLOY_HEARTBEAT_INTERVAL_S="0")
    assert_failed(run, "no 200 from https://127.0.0.1:443/health within 1s", "stub docker log of vllm")
    assert [c for c in run.called("aws") if c[:2] == ["autoscaling", "record-lifecycle-action-heartbeat"]]
    assert [(h, r) for h, r, _ in replica.completions()] == [("vllm-launch", "ABANDON")]


# --- lifecycle_watch.sh + drain.sh ------------------------------------------------------------
def test_terminated_state_drains_then_completes_the_termination_hook(replica) -> None:
    assert_ok(replica.run("boot.sh"))
    replica.pending("vllm-terminate")
    sleeper = subprocess.Popen(["sleep", "30"])  # stands in for vLLM: exits on SIGTERM
    (replica.state / "containers" / "vllm.pid").write_text(str(sleeper.pid))
    argv, env = replica.command("lifecycle_watch.sh")
    watcher = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert watcher.poll() is None and not (replica.run_dir / "draining").exists(), "InService: nothing"
        (replica.state / "imds" / "autoscaling" / "target-lifecycle-state").write_text("Terminated")
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        sleeper.kill()
        sleeper.wait()
    assert watcher.returncode == 0, err
    assert (replica.run_dir / "draining").exists() and (replica.run_dir / "drained").exists()
    calls = [shlex.split(line) for line in replica.calls_text().splitlines()]
    (stop,) = [c for c in calls if c[:2] == ["docker", "stop"]]
    assert stop == ["docker", "stop", "-t", "60", "vllm"]
    assert (replica.state / "containers" / "vllm.stopped").read_text() == "exited\n"
    assert [(h, r) for h, r, _ in replica.completions()][-1] == ("vllm-terminate", "CONTINUE")
    order = [c[1] if c[0] == "docker" else c[2] for c in calls if c[:2] in (["docker", "stop"], ["aws", "autoscaling"])]
    assert order[-2:] == ["stop", "complete-lifecycle-action"], "CONTINUE only after vLLM stopped"
    again = replica.run("drain.sh")
    assert_ok(again)
    assert "no action pending" in again.stderr, "a second drain is harmless"


# --- install_replica.sh ----------------------------------------------------------------------
def test_install_copies_enables_and_is_idempotent(replica, tmp_path: Path) -> None:
    dest, units, fstab = tmp_path / "installed", tmp_path / "systemd", tmp_path / "fstab"
    units.mkdir()
    # What mount_model_volume.sh wrote on the builder: the volume-id link, which a replica's
    # volume (restored from the image's snapshot, a new id) would not match.
    builder_line = ("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc /opt/models ext4 "
                    "defaults,nofail,x-systemd.device-timeout=30s 0 2 # vllm-deploy model volume")
    fstab.write_text("LABEL=cloudimg-rootfs / ext4 defaults 0 1\n" + builder_line + "\n")
    env = {"VLLM_DEPLOY_REPLICA_DIR": str(dest), "VLLM_DEPLOY_SYSTEMD_DIR": str(units),
           "VLLM_DEPLOY_FSTAB": str(fstab)}
    run = replica.run("install_replica.sh", **env)
    assert_ok(run)
    assert int(run.stdout.strip().split("=")[1]) >= 13
    assert fstab.read_text().splitlines() == [
        "LABEL=cloudimg-rootfs / ext4 defaults 0 1",
        builder_line.replace("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc", "LABEL=vllm-models")]
    for path in replica.dir.rglob("*"):
        if path.is_file():
            installed = dest / path.relative_to(replica.dir)
            assert installed.read_bytes() == path.read_bytes()
            assert os.access(installed, os.X_OK) == path.name.endswith(".sh"), path.name
    boot_unit = (units / "vllm-replica.service").read_text()
    assert f"ExecStart=/bin/bash {dest}/boot.sh" in boot_unit and "@REPLICA_DIR@" not in boot_unit
    assert sorted(c for c in run.called("systemctl") if c[0] == "enable") == [
        ["enable", "vllm-replica-lifecycle.service"], ["enable", "vllm-replica.service"]]
    again = replica.run("install_replica.sh", **env)
    assert_ok(again)
    assert again.stdout == "VLLM_DEPLOY_REPLICA_INSTALLED=0\n"


def test_install_refuses_a_builder_without_the_model_volume_line(replica, tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
    run = replica.run("install_replica.sh", VLLM_DEPLOY_REPLICA_DIR=str(tmp_path / "installed"),
                      VLLM_DEPLOY_SYSTEMD_DIR=str(tmp_path), VLLM_DEPLOY_FSTAB=str(fstab))
    assert run.returncode != 0 and "mount_model_volume.sh" in run.stderr


# --- bake_cleanup.sh ---------------------------------------------------------------------------
def _builder_leftovers(replica: ReplicaHost) -> list[Path]:
    root = replica.root / "rootfs"
    paths = [root / "home/ubuntu/.ssh/authorized_keys", root / "root/.ssh/authorized_keys",
             root / "run/vllm-deploy-secrets/api-key.env", root / "etc/vllm-deploy/tls/server.key",
             root / "home/ubuntu/.cache/huggingface/token"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("ssh-ed25519 AAAA provisioning\n")
    replica.add_container("vllm")
    replica.add_container("vllm-proxy")
    return paths


def test_bake_cleanup_removes_containers_keys_and_secrets(replica) -> None:
    paths = _builder_leftovers(replica)
    run = replica.run("bake_cleanup.sh", VLLM_DEPLOY_ROOTFS=str(replica.root / "rootfs"))
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_BAKE_CLEAN=ok\n"
    assert not [p for p in paths if p.exists()]
    assert not [p for p in (replica.state / "containers").iterdir()]
    assert_ok(replica.run("bake_cleanup.sh", VLLM_DEPLOY_ROOTFS=str(replica.root / "rootfs")))


def test_bake_cleanup_refuses_to_finish_while_a_container_remains(replica) -> None:
    _builder_leftovers(replica)
    replica.fail("docker-rm-vllm")
    run = replica.run("bake_cleanup.sh", VLLM_DEPLOY_ROOTFS=str(replica.root / "rootfs"))
    assert_failed(run, "the builder still holds what must not reach the image: containers: vllm")
    assert "BAKE_CLEAN" not in run.stdout


# --- the CloudWatch agent (a fleet with monitoring on) ----------------------------------------
CWAGENT = Path(__file__).resolve().parents[2] / "components/scripts/replica/install_cloudwatch_agent.sh"


def _with_agent_config(replica: ReplicaHost) -> Path:
    for name, text in cloudwatch.replica_files(stack="dev", group_name=GROUP, vllm_port=8000).items():
        path = replica.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return replica.dir / cloudwatch.AGENT_CONFIG_FILE


def _ctl_stub(tmp_path: Path, status: int = 0) -> tuple[Path, Path]:
    log = tmp_path / "ctl.log"
    ctl = tmp_path / "amazon-cloudwatch-agent-ctl"
    ctl.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >>"{log}"\nexit {status}\n')
    ctl.chmod(0o755)
    return ctl, log


def test_boot_starts_the_cloudwatch_agent_with_the_baked_config(replica, tmp_path: Path) -> None:
    config = _with_agent_config(replica)
    ctl, log = _ctl_stub(tmp_path)
    run = replica.run("boot.sh", VLLM_DEPLOY_CWAGENT_CTL=str(ctl))
    assert_ok(run)
    assert log.read_text() == f"-a fetch-config -m ec2 -s -c file:{config}\n"
    assert API_KEY not in config.read_text()


def test_boot_goes_on_without_metrics_when_the_agent_fails_or_is_not_baked(replica, tmp_path: Path) -> None:
    ctl, log = _ctl_stub(tmp_path)
    assert_ok(replica.run("boot.sh", VLLM_DEPLOY_CWAGENT_CTL=str(ctl)))
    assert not log.exists(), "monitoring off: no agent config, no agent"
    _with_agent_config(replica)
    (tmp_path / "failing").mkdir()
    failing, _ = _ctl_stub(tmp_path / "failing", status=1)
    run = replica.run("boot.sh", VLLM_DEPLOY_CWAGENT_CTL=str(failing))
    assert_ok(run)
    assert "the CloudWatch agent did not start" in run.stderr
    assert [(h, r) for h, r, _ in replica.completions()][-1] == ("vllm-launch", "CONTINUE")


def test_the_agent_installer_refuses_a_package_signed_by_another_key(tmp_path: Path) -> None:
    """Only AWS's key (by fingerprint) is trusted: a package signed by any other key, served
    with that key as `amazon-cloudwatch-agent.gpg`, is refused and never reaches dpkg -i."""
    # As baked: flat in the staging directory, lib.sh beside it (components.fleet_bake).
    stage = tmp_path / "stage"
    stage.mkdir()
    script = stage / CWAGENT.name
    script.write_text(CWAGENT.read_text())
    (stage / "lib.sh").write_text((CWAGENT.parents[1] / "lib.sh").read_text())
    checked = subprocess.run([_shellcheck(), "--external-sources", "--severity=style", script.name],
                             cwd=stage, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    home, served, bin_dir = tmp_path / "gnupg", tmp_path / "served", tmp_path / "bin"
    for d in (home, served / "assets", served / "ubuntu/amd64/latest", bin_dir):
        d.mkdir(parents=True, mode=0o700)
    gpg = {"GNUPGHOME": str(home), "PATH": os.environ["PATH"]}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Not AWS <x@example.com>",
                    "ed25519", "sign", "never"], env=gpg, check=True, capture_output=True)
    subprocess.run(["gpg", "--batch", "--export", "-o", str(served / "assets/amazon-cloudwatch-agent.gpg")],
                   env=gpg, check=True, capture_output=True)
    deb = served / "ubuntu/amd64/latest/amazon-cloudwatch-agent.deb"
    deb.write_bytes(b"not really a package")
    subprocess.run(["gpg", "--batch", "--detach-sign", "-o", f"{deb}.sig", str(deb)], env=gpg, check=True, capture_output=True)
    calls = tmp_path / "calls.log"
    # curl: copies the served file for the URL's path; dpkg: amd64, and records anything else.
    (bin_dir / "curl").write_text(
        f'#!/bin/bash\nout=""; url=""\nwhile (($#)); do case "$1" in -o) out=$2; shift;; --proto|--retry) shift;; '
        f'-*) ;; *) url=$1;; esac; shift; done\ncp "{served}/${{url#*://*/}}" "$out"\n')
    (bin_dir / "dpkg").write_text(
        f'#!/bin/bash\nif [[ "$1" == --print-architecture ]]; then echo amd64; exit 0; fi\necho "dpkg $*" >>"{calls}"\n')
    for stub in ("curl", "dpkg"):
        (bin_dir / stub).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "VLLM_DEPLOY_CWAGENT_URL": "https://stub.invalid", "VLLM_DEPLOY_CWAGENT_CTL": str(tmp_path / "absent")}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not AWS's 937616F3450B7D806CBD9725D58167303B789C72" in proc.stderr, proc.stderr
    assert not calls.exists(), "nothing was installed"
    # An agent already there: nothing is downloaded.
    ctl, _ = _ctl_stub(tmp_path)
    again = subprocess.run(["bash", str(script)], env={**env, "VLLM_DEPLOY_CWAGENT_CTL": str(ctl)},
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "VLLM_DEPLOY_CWAGENT=present\n"


def test_boot_mounts_the_compile_cache_of_its_own_instance_type(tmp_path: Path, stack):
    """The cache the builder baked is found by a replica of the builder's type; a replica of
    another type (a mixed-instances group) gets a directory of its own (fleet-pitfalls P23)."""
    config, argv, site, _ = stack
    suffix = compile_cache.cache_suffix(config.vllm_image, argv)
    settings = settings_for(config, compile_cache_base="/data/models/.vllm-compile-cache", compile_cache_suffix=suffix)
    host = ReplicaHost(tmp_path, replica_files(vllm_argv=argv, nginx_site=site, settings=settings))
    host.set_parameter(PARAMETER, API_KEY)
    (host.state / "imds" / "instance-type").write_text("g6.xlarge")
    base = tmp_path / "data" / "models" / ".vllm-compile-cache"
    run = host.run("boot.sh", VLLM_DEPLOY_COMPILE_CACHE_BASE=str(base))
    assert_ok(run)
    expected = base / f"g6.xlarge--{suffix}"
    assert expected.is_dir()
    assert _option_values(_docker_run(run, "vllm"), "-v") == [f"{host.models}:/models/served:ro", f"{expected}:/vllm-cache"]
    # The single host computes the same directory for the same type, image and argv.
    assert compile_cache.host_cache_dir(str(tmp_path / "data" / "models" / "served"), "g6.xlarge",
                                        config.vllm_image, argv) == str(expected)


# --- warm_compile_cache.sh (bake time) ------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def _warm_host(tmp_path: Path, stack) -> tuple[ReplicaHost, Path, str]:
    config, argv, site, _ = stack
    suffix = compile_cache.cache_suffix(config.vllm_image, argv)
    settings = settings_for(config, compile_cache_base="/data/models/.vllm-compile-cache", compile_cache_suffix=suffix)
    files = replica_files(vllm_argv=argv, nginx_site=site, settings=settings)
    files["warm_compile_cache.sh"] = (REPO / "components" / "scripts" / "replica" / "warm_compile_cache.sh").read_text()
    host = ReplicaHost(tmp_path, files)
    (host.state / "imds" / "instance-type").write_text("g6.xlarge")
    return host, tmp_path / "data" / "models" / ".vllm-compile-cache", suffix


def test_the_bake_starts_vllm_once_as_a_replica_would_and_keeps_its_compile_cache(tmp_path: Path, stack):
    _, argv, _, settings = stack
    host, base, suffix = _warm_host(tmp_path, stack)
    run = host.run("warm_compile_cache.sh", VLLM_DEPLOY_COMPILE_CACHE_BASE=str(base))
    assert_ok(run)
    cache = base / f"g6.xlarge--{suffix}"
    assert run.stdout == f"VLLM_DEPLOY_COMPILE_CACHE={cache}\n" and cache.is_dir()
    assert ["pull", settings.vllm_image] in run.called("docker"), "the builder lacked the image"
    warm = _docker_run(run, "vllm-compile-warmup")
    assert warm[warm.index(settings.vllm_image) + 1:] == argv, "the replica's argv, so the same compile hash"
    assert _option_values(warm, "-v") == [f"{host.models}:/models/served:ro", f"{cache}:/vllm-cache"]
    assert _option_values(warm, "--env-file") == [str(host.dir / "vllm.env")], "no API key file at bake time"
    assert not (host.state / "containers" / "vllm-compile-warmup").exists(), "the warm-up container is removed"
    again = host.run("warm_compile_cache.sh", VLLM_DEPLOY_COMPILE_CACHE_BASE=str(base))
    assert_ok(again)
    assert not [c for c in again.called("docker") if c[:1] == ["pull"]], "idempotent: the image is there"


def test_a_warm_up_that_never_answers_fails_and_leaves_no_container(tmp_path: Path, stack):
    host, base, _ = _warm_host(tmp_path, stack)
    host.fail("health")
    run = host.run("warm_compile_cache.sh", VLLM_DEPLOY_COMPILE_CACHE_BASE=str(base),
                   VLLM_DEPLOY_HEALTH_TIMEOUT_S="1", VLLM_DEPLOY_HEALTH_POLL_S="0.1")
    assert_failed(run, "vLLM did not answer /health within 1s on the builder", "stub docker log of vllm-compile-warmup")
    assert not (host.state / "containers" / "vllm-compile-warmup").exists()


def test_boot_mounts_the_baked_adapters_read_only_and_refuses_an_image_without_them(replica) -> None:
    """VLLM_DEPLOY_ADDON_MOUNTS (replica.env, loraAdapters / speculativeModel): each baked
    directory where the argv names it; one missing from the image stops the boot, naming it."""
    adapter = replica.root / "data" / "models" / "acme--sql-lora--default"
    adapter.mkdir(parents=True)
    run = replica.run("boot.sh", VLLM_DEPLOY_ADDON_MOUNTS=f"{adapter}:/models/adapters/sql")
    assert_ok(run)
    assert _option_values(_docker_run(run, "vllm"), "-v") == [
        f"{replica.models}:/models/served:ro", f"{adapter}:/models/adapters/sql:ro"]
    missing = replica.root / "data" / "models" / "gone"
    failed = replica.run("boot.sh", VLLM_DEPLOY_ADDON_MOUNTS=f"{adapter}:/models/adapters/sql,{missing}:/models/draft")
    assert failed.returncode != 0 and f"no {missing} on this replica" in failed.stderr
