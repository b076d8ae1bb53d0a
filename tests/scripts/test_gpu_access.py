"""GPU access in both modes of the NVIDIA Container Toolkit (issue 27).

Toolkit 1.18 switched to CDI mode, where Docker's plain `--gpus all` is refused by the toolkit's
hook; the stub docker replays the message public reports quote (NVIDIA/nvidia-container-toolkit
#1456, dstackai/dstack#2306). The host scripts run for real against the stubs in tests/host_stubs.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.scripts.test_host_scripts import (  # noqa: F401  (fixtures)
    SCRIPTS,
    Host,
    assert_failed,
    assert_ok,
    dlami,
    host,
)

GPU_CHECK = {"VLLM_DEPLOY_EXPECTED_GPUS": "4", "VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB": "23028"}
CDI_REFUSAL = "invoking the NVIDIA Container Runtime Hook directly (e.g. specifying the docker --gpus flag) is not supported"


def _cdi_mode(host: Host) -> Host:
    (host.state / "toolkit_mode").write_text("cdi\n")
    return host


def _gpu_run(run) -> list[str]:
    [call] = [c for c in run.called("docker") if c[0] == "run"]
    return call[2:call.index("ubuntu:22.04")]


def test_in_cdi_mode_plain_gpus_is_refused_as_the_public_report_says(dlami: Host) -> None:
    """The replayed report: the command every guide gives fails on toolkit 1.18's CDI mode."""
    _cdi_mode(dlami)
    proc = subprocess.run(["docker", "run", "--rm", "--gpus", "all", "ubuntu:22.04", "nvidia-smi"],
                          env=dlami.env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and CDI_REFUSAL in proc.stderr


@pytest.mark.parametrize("mode", ["legacy", "cdi"])
def test_a_dlami_host_reaches_its_gpus_in_either_toolkit_mode(dlami: Host, mode: str) -> None:
    (dlami.state / "toolkit_mode").write_text(f"{mode}\n")
    toolkit = dlami.run("install_container_toolkit.sh")
    assert_ok(toolkit)
    check = dlami.run("gpu_smoke_check.sh", **GPU_CHECK)
    assert_ok(check)
    assert check.stdout == 'VLLM_DEPLOY_GPUS=4 name="NVIDIA A10G" memory_mib=23028\n'
    assert _gpu_run(check) == ["--runtime=nvidia", "--gpus", "all"]


def test_cdi_mode_with_an_unregistered_runtime_is_fixed_by_the_toolkit_step(host: Host) -> None:
    """The reported dead end: toolkit 1.18 installed, the runtime not in daemon.json. The toolkit
    step used to find "nothing to do"; now it registers the runtime and writes the CDI spec."""
    host.make_dlami()
    _cdi_mode(host)
    host.daemon_json.write_text("{}\n")
    host.flag("nvidia_runtime_active", present=False)

    refused = host.run("gpu_smoke_check.sh", **GPU_CHECK)
    assert_failed(refused, CDI_REFUSAL, "runs in CDI mode",
                  "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker",
                  "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml")
    assert "re-run" not in refused.stderr

    toolkit = host.run("install_container_toolkit.sh")
    assert_ok(toolkit)
    assert ["restart", "docker"] in toolkit.called("systemctl")
    assert "nothing to do" not in toolkit.stderr
    assert host.cdi_spec.read_text().count("- name:") == 5  # GPUs 0-3 and "all"
    check = host.run("gpu_smoke_check.sh", **GPU_CHECK)
    assert_ok(check)
    assert _gpu_run(check) == ["--runtime=nvidia", "--gpus", "all"]


def test_the_hint_names_commands_that_fix_what_it_names(host: Host) -> None:
    """Following the hint's commands literally (on the stubs) makes the next check pass."""
    host.make_dlami()
    _cdi_mode(host)
    host.daemon_json.write_text("{}\n")
    host.flag("nvidia_runtime_active", present=False)
    refused = host.run("gpu_smoke_check.sh", **GPU_CHECK)
    hint = next(line for line in refused.stderr.splitlines() if ": try: " in line)
    fix = hint[hint.index("(") + 1:hint.index(";")]
    assert fix == "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker"
    for command in fix.split(" && "):
        words = command.split()
        if words[0] == "nvidia-ctk":
            words.append(f"--config={host.daemon_json}")  # the stub host's daemon.json
        subprocess.run(words, env=host.env, check=True, capture_output=True)
    assert_ok(host.run("gpu_smoke_check.sh", **GPU_CHECK))


def test_cdi_only_docker_gets_the_cdi_device_request(dlami: Host) -> None:
    """No nvidia runtime registered, but Docker discovered the CDI spec: --device is used."""
    _cdi_mode(dlami)
    dlami.cdi_spec.parent.mkdir(parents=True)
    subprocess.run(["nvidia-ctk", "cdi", "generate", f"--output={dlami.cdi_spec}"],
                   env=dlami.env, check=True, capture_output=True)
    dlami.flag("nvidia_runtime_active", present=False)
    check = dlami.run("gpu_smoke_check.sh", **GPU_CHECK)
    assert_ok(check)
    assert _gpu_run(check) == ["--device=nvidia.com/gpu=all"]


def test_the_toolkit_step_keeps_going_when_the_cdi_spec_cannot_be_written(dlami: Host) -> None:
    """The spec is a second way in; a failure to write it is said, not fatal, with the runtime up."""
    dlami.fail("nvidia-ctk-cdi")
    run = dlami.run("install_container_toolkit.sh")
    assert_ok(run)
    assert "could not generate the CDI spec" in run.stderr and not dlami.cdi_spec.exists()


def test_every_gpu_container_script_uses_the_detected_request() -> None:
    """No script hard-codes Docker's `--gpus all` (refused in CDI mode) outside lib.sh's detection."""
    offenders = []
    for script in sorted(SCRIPTS.rglob("*.sh")):
        if script.name == "lib.sh":
            continue
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = re.sub(r'"[^"]*"', '""', line.split("#", 1)[0])  # messages may name it
            if "--gpus" in code:
                offenders.append(f"{script.relative_to(SCRIPTS)}:{number}: {line.strip()}")
    assert offenders == []
