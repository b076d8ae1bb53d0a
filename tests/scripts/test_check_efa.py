"""components/scripts/check_efa.sh, run for real under bash against a simulated host.

The host's tools are stubs (tests/host_stubs/ plus tests/scripts/efa_stubs/: curl serving files
from the state directory, gpg with its own keyring, libfabric's fi_info, modprobe efa, and AWS's
efa_installer.sh packed into a real tarball). What they print follows AWS's documented outputs
(EC2 User Guide, "Get started with EFA and NCCL": `fi_info -p efa -t FI_EP_RDM` lists one
"domain: <device>-rdm" per EFA device).
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from serving.cluster_network import efa_interfaces
from sizing import gpus
from tests.scripts.test_host_scripts import Host, assert_failed, assert_ok

EFA_STUBS = Path(__file__).resolve().parent / "efa_stubs"
# The EFA installer key's fingerprint as the EC2 User Guide prints it ("4E90 91BC BB97 A96B 26B1
# 5E59 A054 80B1 DD2D 3CCC"), written out here rather than read from the script.
AWS_EFA_KEY_FINGERPRINT = "4E90 91BC BB97 A96B 26B1 5E59 A054 80B1 DD2D 3CCC".replace(" ", "")
INSTALLER = "aws-efa-installer-latest.tar.gz"


class EfaHost:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.prefix = host.root / "opt" / "amazon"
        self.devices = host.root / "dev" / "infiniband"
        self.work = host.root / "var" / "tmp" / "vllm-deploy-efa"
        self.downloads = host.state / "downloads"
        self.downloads.mkdir()
        for name in ("curl", "gpg", "modprobe"):
            (host.bin / name).unlink(missing_ok=True)
            (host.bin / name).symlink_to(EFA_STUBS / name)
        for tool in ("tar", "gzip"):
            (host.bin / tool).symlink_to(shutil.which(tool))
        self.env = {
            "VLLM_DEPLOY_EFA_PREFIX": str(self.prefix),
            "VLLM_DEPLOY_EFA_DEVICE_DIR": str(self.devices),
            "VLLM_DEPLOY_EFA_WORK_DIR": str(self.work),
            "STUB_EFA": str(EFA_STUBS),
        }

    def hardware(self, devices: int) -> None:
        """The EFA devices the instance was launched with."""
        (self.host.state / "efa_hardware").write_text(f"{devices}\n")

    def make_dlami(self) -> None:
        """The Deep Learning AMI: EFA software under /opt/amazon, the module loaded."""
        (self.prefix / "efa" / "bin").mkdir(parents=True)
        (self.prefix / "efa" / "bin" / "fi_info").symlink_to(EFA_STUBS / "fi_info")
        # EFA installers before 1.44.0 put the plugin in the multiarch directory on Ubuntu.
        plugin_dir = self.prefix / "ofi-nccl" / "lib" / "x86_64-linux-gnu"
        plugin_dir.mkdir(parents=True)
        (plugin_dir / "libnccl-net-ofi.so").touch()
        self.host.flag("efa_module_installed")
        self.host.flag("efa_module_loaded")
        self.devices.mkdir(parents=True)
        count = int((self.host.state / "efa_hardware").read_text())
        for index in range(count):
            (self.devices / f"uverbs{index}").touch()

    def publish_installer(self, fingerprint: str = AWS_EFA_KEY_FINGERPRINT,
                          good_signature: bool = True, signer: str = "") -> None:
        """What efa-installer.amazonaws.com serves: the tarball, its signature, the key."""
        staging = self.host.root / "staging" / "aws-efa-installer"
        staging.mkdir(parents=True)
        shutil.copy(EFA_STUBS / "efa_installer.sh", staging / "efa_installer.sh")
        with tarfile.open(self.downloads / INSTALLER, "w:gz") as tar:
            tar.add(staging, arcname="aws-efa-installer")
        # A key file with a second key in it (signer) signs with that one.
        keys = f"FPR={fingerprint}\n" + (f"FPR={signer}\n" if signer else "")
        (self.downloads / "aws-efa-installer.key").write_text(keys)
        # The stub gpg accepts a signature naming the file it is checked against (the script
        # saves the tarball as aws-efa-installer.tar.gz); another name stands for a tampered file.
        signed = "aws-efa-installer.tar.gz" if good_signature else "another-file.tar.gz"
        (self.downloads / f"{INSTALLER}.sig").write_text(f"good signature of {signed}")

    def run(self, expected: int):
        return self.host.run("check_efa.sh", VLLM_DEPLOY_EFA_INTERFACES=str(expected), **self.env)


@pytest.fixture
def efa(tmp_path: Path) -> EfaHost:
    return EfaHost(Host(tmp_path))


def _expected(instance_type: str) -> int:
    """What the deployment passes: one EFA device per interface it attaches at launch."""
    return len(efa_interfaces(gpus.get(instance_type)))


def test_on_the_dlami_nothing_is_installed_and_the_devices_are_counted(efa: EfaHost) -> None:
    efa.hardware(4)
    efa.make_dlami()
    run = efa.run(_expected("p4d.24xlarge"))
    assert_ok(run)
    assert run.stdout == "EFA_DEVICES=4\n"
    assert run.called("curl") == [] and run.called("efa_installer.sh") == []
    assert "nothing to install" in run.stderr


def test_plain_ubuntu_gets_the_signed_installer_once(efa: EfaHost) -> None:
    efa.hardware(32)
    efa.publish_installer()
    run = efa.run(_expected("p5.48xlarge"))
    assert_ok(run)
    assert run.stdout == "EFA_DEVICES=32\n"
    fetched = [args[-1] for args in run.called("curl")]
    assert fetched == [
        "https://efa-installer.amazonaws.com/aws-efa-installer.key",
        f"https://efa-installer.amazonaws.com/{INSTALLER}",
        f"https://efa-installer.amazonaws.com/{INSTALLER}.sig",
    ]
    verify = [args for args in run.called("gpg") if "--verify" in args]
    assert len(verify) == 1
    assert run.called("efa_installer.sh") == [["-y"]]
    # The download and the unpacked installer are cleaned up.
    assert not (efa.work / "aws-efa-installer").exists()

    again = efa.run(_expected("p5.48xlarge"))
    assert_ok(again)
    assert again.stdout == "EFA_DEVICES=32\n"
    assert again.called("curl") == [] and again.called("efa_installer.sh") == []


def test_fewer_devices_than_interfaces_fails_clearly(efa: EfaHost) -> None:
    efa.hardware(2)
    efa.make_dlami()
    run = efa.run(_expected("p4d.24xlarge"))
    assert_failed(run, "reports 2 EFA device(s)", "launched with 4 EFA interface(s)",
                  "EFA or EFA-only, one per network card")
    assert run.stdout == ""


def test_a_key_that_is_not_aws_is_refused_before_installing(efa: EfaHost) -> None:
    efa.hardware(1)
    efa.publish_installer(fingerprint="0" * 40)
    run = efa.run(1)
    assert_failed(run, "is not AWS's EFA signing key", AWS_EFA_KEY_FINGERPRINT)
    assert run.called("efa_installer.sh") == []


def test_a_tarball_that_fails_its_signature_is_not_installed(efa: EfaHost) -> None:
    efa.hardware(1)
    efa.publish_installer(good_signature=False)
    run = efa.run(1)
    assert_failed(run, "fails its signature check")
    assert run.called("efa_installer.sh") == []


def test_a_module_that_loads_only_after_a_reboot_says_so(efa: EfaHost) -> None:
    efa.hardware(4)
    efa.publish_installer()
    efa.host.flag("efa_needs_reboot")
    # The stub modprobe can load it: simulate a kernel that cannot until reboot.
    efa.host.fail("modprobe")
    run = efa.run(4)
    assert_failed(run, "reports 0 EFA device(s)", "reboot the host")


def test_a_signature_by_another_key_in_the_key_file_is_refused(efa: EfaHost) -> None:
    efa.hardware(1)
    efa.publish_installer(signer="1" * 40)
    run = efa.run(1)
    assert_failed(run, "is not signed by AWS's EFA key")
    assert run.called("efa_installer.sh") == []


def test_no_efa_expected_checks_nothing(efa: EfaHost) -> None:
    run = efa.run(_expected("g4dn.xlarge"))
    assert_ok(run)
    assert run.stdout == "EFA_DEVICES=0\n"
    assert run.calls == []


def test_the_expected_count_must_be_a_number(efa: EfaHost) -> None:
    run = efa.run("four")  # type: ignore[arg-type]
    assert_failed(run, "VLLM_DEPLOY_EFA_INTERFACES must be a non-negative integer, got 'four'")
