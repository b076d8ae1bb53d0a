"""Tenant mode on a replica (issue 29), its scripts run for real under bash with stub `aws`,
`docker` (its `exec nginx -t` / `nginx -s reload`) and `systemctl` (tests/scripts/replica_host.py):
boot.sh installs the tenants' files from their SSM parameter onto the run directory (tmpfs on a
replica) and mounts them read-only into nginx; tenant_sync.sh (the timer's) reloads nginx only
when the parameter changed, puts the old files back when `nginx -t` refuses new ones, and never
prints the parameter or a file's content."""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from serving.replica import TENANT_UNITS, fleet_site, replica_files
from serving.replica_tenants import parameter_value
from serving.tenants import TENANT_DIR_CONTAINER, TenantLimits, key_hash, tenant_bundle, tenant_files
from tests.scripts.replica_host import PARAMETER, ReplicaHost, settings_for, single_host
from tests.scripts.test_host_scripts import assert_failed, assert_ok

API_KEY = "sk-replica-Zq7xv3Jm0aQ2lP9w"
TENANTS_PARAMETER = "/vllm-deploy/dev/proxy-tenants"
TEAM_A_KEY = "sk-team-a-3Jm0aQ2lP9wZq7xv"
TEAM_B_KEY = "sk-team-b-Hc5tR8yUe2WqPz1o"


def files_for(keys: dict[str, str], rate: int = 60) -> dict[str, str]:
    tenants = [TenantLimits(name, rate, 8) for name in sorted(keys)]
    return tenant_files(tenants, {name: [key_hash(k)] for name, k in keys.items()}, API_KEY)


def value_of(files: dict[str, str]) -> str:
    return parameter_value(tenant_bundle(files))


@pytest.fixture
def tenant_replica(tmp_path: Path) -> ReplicaHost:
    config, argv, site = single_host()
    settings = settings_for(config, tenant_parameter=TENANTS_PARAMETER)
    host = ReplicaHost(tmp_path, replica_files(vllm_argv=argv, nginx_site=site, settings=settings))
    host.set_parameter(PARAMETER, API_KEY)
    host.set_parameter(TENANTS_PARAMETER, value_of(files_for({"team-a": TEAM_A_KEY})))
    host.pending("vllm-launch")
    host.env["VLLM_DEPLOY_TENANT_RUN_DIR"] = str(tmp_path / "run" / "vllm-deploy-tenants")
    return host


def installed(host: ReplicaHost) -> dict[str, str]:
    files = Path(host.env["VLLM_DEPLOY_TENANT_RUN_DIR"]) / "files"
    return {p.name: p.read_text() for p in files.iterdir()}


def reloads(host: ReplicaHost) -> int:
    path = host.state / "containers" / "vllm-proxy.reloads"
    return len(path.read_text().splitlines()) if path.exists() else 0


def assert_nothing_secret_printed(run, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in run.stdout + run.stderr


def booted(host: ReplicaHost):
    run = host.run("boot.sh")
    assert_ok(run)
    assert run.stdout.strip().endswith("VLLM_DEPLOY_REPLICA=ready")
    return run


def test_boot_installs_the_files_on_the_run_dir_and_mounts_them_read_only_into_nginx(tenant_replica) -> None:
    host = tenant_replica
    run = booted(host)
    expected = files_for({"team-a": TEAM_A_KEY})
    assert installed(host) == expected
    files_dir = Path(host.env["VLLM_DEPLOY_TENANT_RUN_DIR"]) / "files"
    assert stat.S_IMODE(files_dir.parent.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files_dir.iterdir())
    # Under /run (tmpfs on a replica), never the root volume the image is made from (P9).
    assert files_dir.relative_to(host.root).parts[0] == "run"
    (proxy_run,) = [c for c in run.called("docker") if c[:1] == ["run"] and "vllm-proxy" in c]
    mounts = [proxy_run[i + 1] for i, a in enumerate(proxy_run[:-1]) if a == "-v"]
    assert f"{files_dir}:{TENANT_DIR_CONTAINER}:ro" in mounts
    (vllm_run,) = [c for c in run.called("docker") if c[:1] == ["run"] and "vllm" in c and "vllm-proxy" not in c]
    assert not any(TENANT_DIR_CONTAINER in a for a in vllm_run)  # vLLM never sees the tenants' files
    assert any(c[:2] == ["ssm", "get-parameter"] and TENANTS_PARAMETER in c for c in run.called("aws"))
    assert_nothing_secret_printed(run, value_of(expected), *expected.values(), API_KEY)


def test_boot_without_the_parameter_fails_naming_it_and_abandons(tenant_replica) -> None:
    host = tenant_replica
    (host.state / "ssm" / TENANTS_PARAMETER.replace("/", "_")).unlink()
    run = host.run("boot.sh")
    assert_failed(run, TENANTS_PARAMETER)
    assert [c[0] for c in host.completions()] == ["vllm-launch"] and host.completions()[0][1] == "ABANDON"
    assert not (host.state / "containers" / "vllm-proxy").exists()


def test_a_value_that_is_not_a_bundle_is_refused_at_boot(tenant_replica) -> None:
    host = tenant_replica
    host.set_parameter(TENANTS_PARAMETER, "bm90IGEgdGFyCg==")
    assert_failed(host.run("boot.sh"), "does not hold the tenants' files")


def test_sync_reloads_only_when_the_parameter_changed(tenant_replica) -> None:
    host = tenant_replica
    booted(host)
    same = host.run("tenant_sync.sh")
    assert_ok(same)
    assert same.stdout == "VLLM_DEPLOY_TENANTS=unchanged\n"
    assert not [c for c in same.called("docker") if c[:1] == ["exec"]] and reloads(host) == 0
    # Re-key team-a and add team-b: the new files, nginx -t first, then one reload.
    new = files_for({"team-a": "sk-team-a-rotated-0000000000", "team-b": TEAM_B_KEY})
    host.set_parameter(TENANTS_PARAMETER, value_of(new))
    run = host.run("tenant_sync.sh")
    assert_ok(run)
    assert run.stdout == "VLLM_DEPLOY_TENANTS=reloaded\n"
    assert [c[2:] for c in run.called("docker") if c[:1] == ["exec"]] == [["nginx", "-t"], ["nginx", "-s", "reload"]]
    assert installed(host) == new and reloads(host) == 1
    assert_nothing_secret_printed(run, value_of(new), *new.values(), API_KEY)
    # A removed tenant's file goes too (a smaller set of files is not merged with the old one).
    fewer = dict(sorted(files_for({"team-b": TEAM_B_KEY}).items())[:-1])
    host.set_parameter(TENANTS_PARAMETER, value_of(fewer))
    assert_ok(host.run("tenant_sync.sh"))
    assert installed(host) == fewer and reloads(host) == 2
    assert host.run("tenant_sync.sh").stdout == "VLLM_DEPLOY_TENANTS=unchanged\n" and reloads(host) == 2


def test_sync_keeps_the_old_files_when_nginx_refuses_the_new_ones(tenant_replica) -> None:
    host = tenant_replica
    booted(host)
    before = installed(host)
    bad = files_for({"team-a": TEAM_A_KEY, "team-b": TEAM_B_KEY}, rate=1)
    host.set_parameter(TENANTS_PARAMETER, value_of(bad))
    # nginx names the word it choked on: here a key hash from the new files.
    (host.state / "fail" / "nginx-t").write_text(key_hash(TEAM_B_KEY))
    run = host.run("tenant_sync.sh")
    assert_failed(run, "nginx -t refused the new tenants' files")
    assert installed(host) == before and reloads(host) == 0
    assert_nothing_secret_printed(run, value_of(bad), *bad.values(), key_hash(TEAM_B_KEY), API_KEY)
    # The refused value is not tried again (no nginx -t each minute) until the parameter changes.
    again = host.run("tenant_sync.sh")
    assert again.returncode != 0 and not [c for c in again.called("docker") if c[:1] == ["exec"]]
    (host.state / "fail" / "nginx-t").unlink()
    good = files_for({"team-a": TEAM_A_KEY, "team-b": "sk-team-b-second-try-00000"}, rate=120)
    host.set_parameter(TENANTS_PARAMETER, value_of(good))
    assert host.run("tenant_sync.sh").stdout == "VLLM_DEPLOY_TENANTS=reloaded\n"
    assert installed(host) == good and reloads(host) == 1


def test_sync_retries_a_value_when_docker_not_nginx_failed_the_check(tenant_replica) -> None:
    """A container restarting is not nginx refusing the files: marking the value refused kept a
    revoked key valid on that replica until apiKeys changed again."""
    host = tenant_replica
    booted(host)
    before = installed(host)
    new = files_for({"team-a": TEAM_A_KEY, "team-b": "sk-team-b-rotated-000000000"}, rate=120)
    host.set_parameter(TENANTS_PARAMETER, value_of(new))
    (host.state / "fail" / "docker-exec").write_text("")
    run = host.run("tenant_sync.sh")
    assert_failed(run, "could not run nginx -t")
    assert installed(host) == before and reloads(host) == 0
    (host.state / "fail" / "docker-exec").unlink()
    again = host.run("tenant_sync.sh")
    assert again.stdout == "VLLM_DEPLOY_TENANTS=reloaded\n", again.stderr
    assert installed(host) == new and reloads(host) == 1


def test_sync_keeps_the_files_it_has_when_ssm_fails(tenant_replica) -> None:
    host = tenant_replica
    booted(host)
    before = installed(host)
    host.fail("ssm-throttle")
    run = host.run("tenant_sync.sh")
    assert run.returncode != 0 and TENANTS_PARAMETER in run.stderr
    assert installed(host) == before and reloads(host) == 0


def test_sync_is_a_no_op_without_tenants_or_before_boot_installed_them(tenant_replica, tmp_path: Path) -> None:
    host = tenant_replica
    before_boot = host.run("tenant_sync.sh")  # a warm-pool instance, or boot.sh still running
    assert_ok(before_boot)
    assert before_boot.calls == [] and not (Path(host.env["VLLM_DEPLOY_TENANT_RUN_DIR"]) / "files").exists()
    config, argv, site = single_host()
    plain = ReplicaHost(tmp_path / "plain", replica_files(vllm_argv=argv, nginx_site=site, settings=settings_for(config)))
    run = plain.run("tenant_sync.sh")
    assert_ok(run)
    assert run.calls == [] and "no tenants" in run.stderr


def test_warm_pool_boot_reads_no_tenant_files(tenant_replica) -> None:
    host = tenant_replica
    (host.state / "imds" / "autoscaling" / "target-lifecycle-state").write_text("Warmed:Stopped")
    (host.bin / "dd").symlink_to(shutil.which("dd"))  # the warm pool's one read of the model volume
    run = host.run("boot.sh")
    assert_ok(run)
    assert not any(TENANTS_PARAMETER in c for c in run.called("aws"))
    assert not Path(host.env["VLLM_DEPLOY_TENANT_RUN_DIR"]).exists()


def test_install_enables_the_timer_only_in_tenant_mode(tenant_replica, tmp_path: Path) -> None:
    def install(host: ReplicaHost, where: Path):
        units, fstab = where / "systemd", where / "fstab"
        units.mkdir(parents=True)
        fstab.write_text("/dev/disk/by-id/vol0abc /opt/models ext4 defaults 0 2 # vllm-deploy model volume\n")
        run = host.run("install_replica.sh", VLLM_DEPLOY_REPLICA_DIR=str(where / "installed"),
                       VLLM_DEPLOY_SYSTEMD_DIR=str(units), VLLM_DEPLOY_FSTAB=str(fstab))
        assert_ok(run)
        for unit in TENANT_UNITS:  # baked either way; ExecStart points at the installed script
            assert "@REPLICA_DIR@" not in (units / unit).read_text()
        assert f"ExecStart=/bin/bash {where / 'installed'}/tenant_sync.sh" in (units / TENANT_UNITS[0]).read_text()
        assert os.access(where / "installed" / "tenant_sync.sh", os.X_OK)
        return [c for c in run.called("systemctl") if "vllm-replica-tenants.timer" in c]

    assert install(tenant_replica, tmp_path / "tenants") == [["enable", "vllm-replica-tenants.timer"]]
    config, argv, site = single_host()
    plain = ReplicaHost(tmp_path / "plain", replica_files(vllm_argv=argv, nginx_site=site, settings=settings_for(config)))
    assert install(plain, tmp_path / "plain-install") == [["disable", "vllm-replica-tenants.timer"]]


def test_bake_cleanup_removes_the_tenants_files(tenant_replica) -> None:
    host = tenant_replica
    root = host.root / "rootfs"
    leftovers = [root / "run/vllm-deploy-tenants/files/http.conf", root / "etc/vllm-deploy/proxy-tenants/http.conf"]
    for path in leftovers:
        path.parent.mkdir(parents=True)
        path.write_text(next(iter(files_for({"team-a": TEAM_A_KEY}).values())))
    assert_ok(host.run("bake_cleanup.sh", VLLM_DEPLOY_ROOTFS=str(root)))
    assert not (root / "run/vllm-deploy-tenants").exists() and not (root / "etc/vllm-deploy/proxy-tenants").exists()


def test_the_fleet_site_keeps_every_field_of_the_single_hosts_site() -> None:
    """Whatever the single host's site carries (tenant mode: its tenants directory) the replica's
    nginx.conf carries too: fleet_site changes only its three fleet fields."""
    config, _, site = single_host()
    changed = fleet_site(site, settings_for(config))
    fleet_fields = {"real_ip_from", "client_keepalive_timeout_s", "drain_flag_path"}
    for name in type(site).model_fields:
        if name not in fleet_fields:
            assert getattr(changed, name) == getattr(site, name), name
    assert {n for n in fleet_fields if getattr(changed, n) != getattr(site, n)} == fleet_fields


def test_a_bundle_with_a_link_or_a_path_outside_the_directory_is_refused(tenant_replica) -> None:
    host = tenant_replica
    booted(host)
    before = installed(host)
    for member in (tarfile.TarInfo("../escape.conf"), tarfile.TarInfo("http.conf")):
        if member.name == "http.conf":
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/shadow"
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            tar.addfile(member, io.BytesIO(b""))
        host.set_parameter(TENANTS_PARAMETER, base64.b64encode(gzip.compress(out.getvalue())).decode())
        run = host.run("tenant_sync.sh")
        assert_failed(run, "does not hold the tenants' files")
        assert installed(host) == before and reloads(host) == 0
    assert not (Path(host.env["VLLM_DEPLOY_TENANT_RUN_DIR"]) / "escape.conf").exists()


def test_a_tenant_parameter_name_ssm_would_refuse_is_refused_naming_the_field() -> None:
    config, _, _ = single_host()
    with pytest.raises(ValueError, match="tenant_parameter='proxy tenants'"):
        settings_for(config, tenant_parameter="proxy tenants")
