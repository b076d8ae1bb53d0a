"""What the program sends to the host is what the host scripts need.

Program tests see resource inputs; script tests run scripts with an environment the test
writes. These tests join the two: the recorded commands, environments and user data are fed
to the real scripts (with the simulated host of tests/scripts/test_host_scripts.py).
"""

import fnmatch
import os
import re
import shlex
import subprocess
import sys

from components.host_setup import MODELS_DIR, reboot_boot_id
from tests.harness import ROOT, reveal
from tests.scripts.test_gpu_check import REAL_NVIDIA_SMI
from tests.scripts.test_host_scripts import BOOT_ID, Host

SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}


def _env(cmd) -> dict[str, str]:
    return {k: str(v) for k, v in reveal(cmd.inputs.get("environment") or {}).items()}


def test_every_step_runs_its_copied_script_with_what_sshd_and_sudo_let_through(program):
    run = program(SMALL)
    user_data = run.one("aws:ec2/instance:Instance").plain["userData"]
    accepted = re.search(r"AcceptEnv (.*)", user_data).group(1).split()
    copies = {c.plain["remotePath"]: c for c in run.of_type("command:remote:CopyToRemote")}
    steps = [c for c in run.of_type("command:remote:Command") if c.plain["create"].startswith("sudo ")]
    assert len(steps) >= 8
    for cmd in steps:
        argv = shlex.split(cmd.plain["create"])
        preserved = set(argv[1].split("=", 1)[1].split(",")) if argv[1].startswith("--preserve-env=") else set()
        script = argv[-1]
        assert script in copies, f"{cmd.name} runs {script}, which nothing copies there"
        assert copies[script].plain["source"].path.endswith("/" + script.rsplit("/", 1)[1])
        env = set(_env(cmd))
        assert env == preserved, f"{cmd.name}: sudo would drop {env - preserved} or keep {preserved - env}"
        for name in env:
            assert any(fnmatch.fnmatchcase(name, p) for p in accepted), f"sshd refuses {name} ({cmd.name})"


def test_the_recorded_environment_provisions_a_host_like_the_sized_one(program, tmp_path):
    run = program(SMALL)
    sizing = run.exports["sizing"].value
    host = Host(tmp_path / "host")
    host.make_dlami()
    # What nvidia-smi prints on a real host of the sized type (public outputs, not the catalog).
    line = REAL_NVIDIA_SMI[sizing["instanceType"]]
    (host.state / "gpus").write_text(f"{line}\n" * sizing["gpus"])
    # The model volume the program attached, as udev names it on the host.
    volume_id = _env(run.named("vllm-setup-volume"))["VLLM_DEPLOY_VOLUME_ID"]
    by_id = host.root / "dev" / "disk" / "by-id"
    by_id.mkdir(parents=True)
    (host.root / "dev" / "nvme1n1").touch()
    (by_id / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}").symlink_to(host.root / "dev" / "nvme1n1")
    (host.root / "etc" / "fstab").touch()
    # Absolute host paths, re-rooted in the simulated host.
    rooted = ("VLLM_DEPLOY_MODELS_DIR", "VLLM_DEPLOY_UPLOADS_DIR")
    for role in ("wait", "driver", "docker", "toolkit", "gpu-check", "disk", "volume", "idle-stop"):
        cmd = run.named(f"vllm-setup-{role}")
        script = shlex.split(cmd.plain["create"])[-1].rsplit("/", 1)[1]
        env = _env(cmd)
        if role == "disk":
            block = host.root / "sys" / "class" / "block" / "nvme0n1p1"
            block.mkdir(parents=True)
            (block / "partition").write_text("1\n")
            env["VLLM_DEPLOY_SYS_CLASS_BLOCK"] = str(host.root / "sys" / "class" / "block")
        env.update({k: f"{host.root}{v}" for k, v in env.items() if k in rooted})
        env.update({
            "VLLM_DEPLOY_DISK_BY_ID": str(by_id), "VLLM_DEPLOY_FSTAB": str(host.root / "etc" / "fstab"),
            "VLLM_DEPLOY_SYSTEMD_DIR": str(host.root / "etc" / "systemd" / "system"),
            "VLLM_DEPLOY_LIB_DIR": str(host.root / "usr" / "local" / "lib" / "vllm-deploy"),
            "VLLM_DEPLOY_ETC_DIR": str(host.root / "etc" / "vllm-deploy"),
        })
        if role == "idle-stop":
            env["VLLM_DEPLOY_IDLE_STOP_MINUTES"] = "30"  # the dev stack has it off: install it here
        result = host.run(script, **env)
        assert result.returncode == 0, (role, result.stderr)
    assert (host.root / "etc" / "systemd" / "system" / "vllm-idle-stop.service").is_file()


def test_the_drivers_reboot_line_is_what_the_program_parses(tmp_path):
    host = Host(tmp_path / "host")
    host.fail("modprobe")  # the new module does not load until a reboot
    result = host.run("install_nvidia_driver.sh")
    assert result.returncode == 0, result.stderr
    assert reboot_boot_id(result.stdout) == BOOT_ID
    assert reboot_boot_id("") == "" and reboot_boot_id("[vllm-deploy] driver: ok\n") == ""


def test_the_reboot_pause_reads_the_environment_it_is_given(program):
    pause = program(SMALL).named("vllm-setup-reboot-pause").plain
    values = {"BOOT_ID_BEFORE": "boot-1", "HOST": "127.0.0.1"}
    assert set(pause["environment"]) == set(values)
    env = {**os.environ, **values, "PORT": "9", "TIMEOUT_SECONDS": "2", "POLL_SECONDS": "0.1"}
    argv = shlex.split(pause["create"])
    argv[0] = sys.executable
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert "went down" in result.stdout, result.stdout + result.stderr


def test_names_and_ports_agree_across_components(program):
    run = program({**SMALL, "tls": "letsencrypt", "domain": "llm.example.com"})
    vllm = run.named("vllm-vllm-container").plain
    proxy = run.named("vllm-proxy-container").plain
    ready = _env(run.named("vllm-vllm-ready"))
    download = _env(run.named("vllm-setup-model"))
    certificate = _env(run.named("vllm-proxy-certificate"))
    mount = vllm["mounts"][0]
    assert mount["target"] == vllm["command"][0], "vLLM serves the directory that is mounted"
    assert mount["source"] == download["VLLM_DEPLOY_MODEL_DIR"]
    assert download["VLLM_DEPLOY_MODEL_DIR"].startswith(download["VLLM_DEPLOY_MODELS_DIR"] + "/")
    assert download["VLLM_DEPLOY_MODELS_DIR"] == MODELS_DIR
    mount = _env(run.named("vllm-setup-volume"))
    assert mount["VLLM_DEPLOY_MODELS_DIR"] == MODELS_DIR, "the download writes onto the mounted volume"
    assert mount["VLLM_DEPLOY_UPLOADS_DIR"].startswith(MODELS_DIR + "/")
    assert int(ready["VLLM_DEPLOY_PORT"]) == vllm["ports"][0]["external"]
    assert ready["VLLM_DEPLOY_CONTAINER"] == vllm["name"]
    assert certificate["VLLM_DEPLOY_NGINX_CONTAINER"] == proxy["name"]
    assert int(vllm["command"][vllm["command"].index("--port") + 1]) == vllm["ports"][0]["internal"]
