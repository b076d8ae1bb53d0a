"""The GPU check against what real hosts report.

The program hands scripts/gpu_smoke_check.sh the catalog's nvidia-smi figures for the sized
instance (components.host_setup.gpu_check_env); the stub nvidia-smi here prints what real hosts
print, copied from public outputs (sizing/catalog/SOURCES.md), not from the catalog.
"""

from __future__ import annotations

import pytest

from components.host_setup import gpu_check_env
from sizing import gpus
from tests.scripts.test_host_scripts import Host, assert_failed, assert_ok

# `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`, one line per GPU, on a
# host of each GPU model (public outputs: modal-labs/modal-client#2797, vllm-project/vllm#27508,
# NVIDIA/TensorRT-LLM#10278, akash-network/provider-configs#99, public H200 query outputs).
REAL_NVIDIA_SMI = {
    "g4dn.xlarge": "Tesla T4, 15360",
    "g4dn.12xlarge": "Tesla T4, 15360",
    "g5.xlarge": "NVIDIA A10G, 23028",
    "g5.12xlarge": "NVIDIA A10G, 23028",
    "g6.xlarge": "NVIDIA L4, 23034",
    "g6.48xlarge": "NVIDIA L4, 23034",
    "g6e.xlarge": "NVIDIA L40S, 46068",
    "p4d.24xlarge": "NVIDIA A100-SXM4-40GB, 40960",
    "p4de.24xlarge": "NVIDIA A100-SXM4-80GB, 81920",
    "p5.4xlarge": "NVIDIA H100 80GB HBM3, 81559",
    "p5.48xlarge": "NVIDIA H100 80GB HBM3, 81559",
    "p5en.48xlarge": "NVIDIA H200, 143771",
    "p6-b200.48xlarge": "NVIDIA B200, 183359",
}


def _host_reporting(tmp_path, line: str, count: int) -> Host:
    host = Host(tmp_path / "host")
    host.make_dlami()
    (host.state / "gpus").write_text(f"{line}\n" * count)
    return host


@pytest.mark.parametrize("instance_type", sorted(REAL_NVIDIA_SMI))
def test_a_real_host_of_the_sized_type_passes_its_gpu_check(tmp_path, instance_type):
    instance = gpus.get(instance_type)
    host = _host_reporting(tmp_path, REAL_NVIDIA_SMI[instance_type], instance.gpu_count)
    run = host.run("gpu_smoke_check.sh", **gpu_check_env(instance))
    assert_ok(run)
    assert run.stdout.startswith(f"VLLM_DEPLOY_GPUS={instance.gpu_count} ")


@pytest.mark.parametrize(
    ("planned", "seen"),
    [
        ("g5.xlarge", "Tesla T4, 15360"),  # smaller GPU
        ("p4de.24xlarge", "NVIDIA A100-SXM4-40GB, 40960"),  # same family, half the memory
        ("g6e.xlarge", "NVIDIA L4, 23034"),
        ("p5en.48xlarge", "NVIDIA H100 80GB HBM3, 81559"),
    ],
)
def test_a_smaller_gpu_fails_and_the_message_shows_both_figures(tmp_path, planned, seen):
    instance = gpus.get(planned)
    host = _host_reporting(tmp_path, seen, instance.gpu_count)
    run = host.run("gpu_smoke_check.sh", **gpu_check_env(instance))
    name, seen_mib = seen.rsplit(", ", 1)
    expected_name = instance.gpu_memory.nvidia_smi_name
    if expected_name in name.split("-")[0].split():  # same family (A100 40GB for 80GB): memory tells
        assert_failed(run, f"reports {seen_mib} MiB, expected {instance.gpu_memory.nvidia_smi_mib} MiB")
    else:
        assert_failed(run, f"GPU 0 is '{name}', the plan was sized for {expected_name} GPUs")
    # Without the name check, the memory alone still refuses it, naming both figures.
    env = {**gpu_check_env(instance), "VLLM_DEPLOY_EXPECTED_GPU_NAME": ""}
    run = host.run("gpu_smoke_check.sh", **env)
    assert_failed(run, f"reports {seen_mib} MiB, expected {instance.gpu_memory.nvidia_smi_mib} MiB")


def test_the_check_expects_nvidia_smi_s_figure_not_the_ec2_apis():
    """A T4 is listed by EC2 as 16384 MiB and reports 15360 MiB (issue 11: every T4 host failed)."""
    env = gpu_check_env(gpus.get("g4dn.xlarge"))
    assert env["VLLM_DEPLOY_EXPECTED_GPU_MEMORY_MIB"] == "15360"
    assert env["VLLM_DEPLOY_EXPECTED_GPU_NAME"] == "T4"
