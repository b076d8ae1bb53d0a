"""components/scripts/block_container_imds.sh under bash with stub system tools (the harness of
test_host_scripts.py): the host-network containers' slice loses IMDS, at once and at each boot."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.scripts.test_host_scripts import SCRIPTS, Host, _shellcheck, assert_failed, assert_ok, dlami, host  # noqa: F401

SLICE = "vllm-containers.slice"


def guard(host: Host):
    return host.run(
        "block_container_imds.sh",
        VLLM_DEPLOY_SYSTEMD_DIR=str(host.root / "etc" / "systemd" / "system"),
        VLLM_DEPLOY_ETC_DIR=str(host.root / "etc" / "vllm-deploy"),
    )


def test_rejects_imds_from_the_containers_slice_now_and_at_boot(dlami: Host) -> None:
    run = guard(dlami)
    assert_ok(run)
    assert run.stdout == f"VLLM_DEPLOY_IMDS_BLOCKED={SLICE}\n"
    assert "nftables" in run.installs()  # a host without nft gets it
    loaded = (dlami.state / "nft_ruleset").read_text()
    rules = re.findall(r"^\s*(socket cgroupv2 .*)$", loaded, re.M)
    assert rules == [
        f'socket cgroupv2 level 1 "{SLICE}" ip daddr 169.254.169.254 counter reject',
        f'socket cgroupv2 level 1 "{SLICE}" ip6 daddr fd00:ec2::254 counter reject',
    ]
    assert "hook output" in loaded and "policy accept" in loaded  # the host itself keeps IMDS
    # The slice exists before the rule is loaded (nft resolves its cgroup then).
    calls = [" ".join(c) for c in run.calls]
    assert calls.index(f"systemctl start {SLICE}") < next(i for i, c in enumerate(calls) if c.startswith("nft -f"))
    # At boot: a service that holds the slice loads the same file before Docker starts.
    unit = (dlami.root / "etc" / "systemd" / "system" / "vllm-imds-guard.service").read_text()
    assert f"Requires={SLICE}" in unit and "Before=docker.service" in unit
    assert re.search(r"ExecStart=\S*nft -f \S*/etc/vllm-deploy/imds-guard.nft", unit)
    assert "systemctl enable vllm-imds-guard.service" in calls


def test_is_idempotent(dlami: Host) -> None:
    assert_ok(guard(dlami))
    again = guard(dlami)
    assert_ok(again)
    assert "systemctl daemon-reload" not in [" ".join(c) for c in again.calls]  # nothing rewritten
    assert again.installs() == []


def test_refuses_a_docker_whose_cgroups_are_not_systemd_v2(dlami: Host) -> None:
    (dlami.state / "docker_cgroups").write_text("cgroupfs 1\n")
    run = guard(dlami)
    assert_failed(run, "cgroupfs 1", "systemd 2")
    assert not (dlami.state / "nft_ruleset").exists()


def test_a_rule_that_does_not_load_fails_the_step(dlami: Host) -> None:
    dlami.add_command("nft")
    dlami.fail("nft")
    assert_failed(guard(dlami), "could not load the IMDS rules", "nft -c -f")


def test_the_script_and_the_nft_stub_pass_shellcheck() -> None:
    stubs = Path(__file__).resolve().parents[1] / "host_stubs"
    result = subprocess.run([_shellcheck(), "-x", str(SCRIPTS / "block_container_imds.sh"), str(stubs / "nft")],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout


def test_the_real_nft_accepts_the_ruleset(dlami: Host) -> None:
    """nftables (and the kernel, through `nft -c`) accept the rules the script writes, in a
    network and mount namespace of this test's own, where a tmpfs stands in for the cgroup v2
    tree so the slice's path resolves (as the slice unit makes it resolve on the host)."""
    import os
    import shutil

    import pytest

    nft, unshare = shutil.which("nft") or "/usr/sbin/nft", shutil.which("unshare")
    if os.geteuid() != 0 or not Path(nft).exists() or not unshare:
        pytest.skip("needs root, nft (apt-get install nftables) and unshare: the ruleset is then checked by nftables")
    assert_ok(guard(dlami))
    rules = dlami.root / "etc" / "vllm-deploy" / "imds-guard.nft"
    script = (f"mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/{SLICE} && "
              f"{nft} -c -f {rules}")
    result = subprocess.run([unshare, "-m", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
