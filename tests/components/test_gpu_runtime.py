"""Every GPU container the program creates asks for the NVIDIA runtime (issue 27): Docker's bare
GPU request is refused by the container toolkit's CDI mode (1.18+, NVIDIA/nvidia-container-toolkit
#1456); the runtime, registered by install_container_toolkit.sh, works in both modes."""

import pytest

CONTAINER = "docker:index/container:Container"
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
ACROSS_NODES = {"model": "Qwen/Qwen2.5-7B-Instruct", "nodes": "2", "instanceType": "g5.2xlarge"}


@pytest.mark.parametrize("config", [SMALL, ACROSS_NODES], ids=["one-host", "ray-across-nodes"])
def test_every_gpu_container_names_the_nvidia_runtime(program, config):
    run = program(config)
    gpu = {c.plain["name"]: c.plain for c in run.of_type(CONTAINER) if c.plain.get("gpus")}
    # vLLM (or the Ray head running it) and the DCGM exporter: the containers that read the GPUs.
    assert {"vllm-dcgm-exporter"} < set(gpu)
    for name, plain in gpu.items():
        assert plain["gpus"] == "all" and plain.get("runtime") == "nvidia", name
    # Containers that need no GPU keep Docker's default runtime.
    for container in run.of_type(CONTAINER):
        if not container.plain.get("gpus"):
            assert not container.plain.get("runtime"), container.plain["name"]
