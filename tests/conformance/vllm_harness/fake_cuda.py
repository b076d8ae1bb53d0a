"""A CUDA GPU for vLLM 0.33.0 on a machine without one: vLLM's own CUDA platform class, with
every device query answered from a description of the GPU.

Runs in the vLLM venv (tools/vllm-venv), never in the program's. `prepare(name, capability)`
must run before anything reads `vllm.platforms.current_platform`; the GPU's count and memory
can then change per check (`set_gpu`), in a forked child of the prepared process, because
vLLM reads them at call time. Name and compute capability are fixed per process: some modules
read them once at import (e.g. quantization/utils/w8a8_utils.py CUTLASS_*_SUPPORTED).

What is faked, and why it answers as a CUDA host would:
* every compiled extension of the wheel (vllm/_C_stable_libtorch, _moe_C_stable_libtorch,
  vllm_flash_attn/_vllm_fa2_C, ...) is an empty module: they need libcuda.so.1; on a GPU host
  they import, so vLLM's availability probes see the same "importable" answer. So are
  torchvision's registrations of fake and autograd kernels for its own custom ops
  (torchvision/_meta_registrations.py, _autograd_registrations.py): its PyPI wheel is a CUDA
  build whose ops library does not load beside the CPU torch, and nothing here calls those ops
  (vLLM imports torchvision's image transforms, e.g. for Gemma-3's image processor);
* the four torch.ops._C capability queries vLLM calls at import time are re-implemented from
  csrc/quantization/w8a8/cutlass/scaled_mm_entry.cu for a CUDA >= 12.8 build;
* the model registry inspects model classes in a child process
  (model_executor/models/registry.py `_run_in_subprocess`); it runs in this process instead,
  so the inspection sees the fake platform;
* `vllm.config.vllm.HAS_TRITON` is True: a GPU host has Triton, and vLLM picks its V2 model
  runner only then (config/vllm.py). Triton itself is not installed (1 GB): vLLM's placeholder
  module stands in (triton_utils/importing.py), with a `triton.Config` that keeps its arguments
  as the real one does, since some modules filter autotune configs by them at import
  (model_executor/layers/mamba/ops/ssd_chunk_scan.py `_drop_racy_wgmma_configs`, on sm90).
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

# Before anything from vllm is imported.
_ENVIRONMENT = {
    "VLLM_TARGET_DEVICE": "cpu",  # keeps vLLM's platform auto-detection off
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    # What `vllm` (entrypoints/cli/main.py cli_env_setup) sets before parsing.
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}

# The GPU the platform reports; set_gpu() changes it per check.
GPU: dict[str, Any] = {}


def set_environment() -> None:
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault(
        "VLLM_CACHE_ROOT", os.path.join(os.path.expanduser("~"), ".cache", "vllm-harness")
    )


def stub_extensions() -> list[str]:
    """Register an empty module for every compiled extension the installed wheel ships."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = list(spec.submodule_search_locations)[0]
    names = []
    for dirpath, _dirs, files in os.walk(root):
        for filename in files:
            if not filename.endswith(".so"):
                continue
            relative = os.path.relpath(os.path.join(dirpath, filename), os.path.dirname(root))
            module = relative.split(".", 1)[0].replace(os.sep, ".")
            if module not in sys.modules:
                sys.modules[module] = types.ModuleType(module)
                names.append(module)
    for module in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(module, types.ModuleType(module))
        names.append(module)
    return sorted(names)


def set_gpu(gpu: dict[str, Any]) -> None:
    """The GPU the next check sees: name, compute_capability [major, minor], total_memory_bytes,
    count, and optionally nvlink, multi_processor_count, cuda_runtime_major."""
    GPU.clear()
    GPU.update(gpu)


def prepare(gpu: dict[str, Any]):
    """Install the fake platform as vllm.platforms.current_platform; returns it."""
    import vllm.platforms as platforms

    if platforms._current_platform is not None:
        raise RuntimeError(
            "vllm.platforms.current_platform was resolved before the fake CUDA platform was "
            f"installed: {platforms._current_platform!r}"
        )
    set_gpu(gpu)
    platforms._current_platform = _platform_class()()
    capability = tuple(int(x) for x in gpu["compute_capability"])
    _install_capability_queries(capability, int(gpu.get("cuda_runtime_major", 13)))
    import vllm.triton_utils

    vllm.triton_utils.triton.Config = _TritonConfig
    import vllm.model_executor.models.registry as registry

    registry._run_in_subprocess = lambda fn: fn()
    if gpu.get("triton", True):
        import vllm.config.vllm as vllm_config

        vllm_config.HAS_TRITON = True
    return platforms._current_platform


class _TritonConfig:
    """triton.Config's attributes (triton/runtime/autotuner.py), what vLLM reads of one."""

    def __init__(self, kwargs, num_warps=4, num_stages=3, num_ctas=1, maxnreg=None,
                 pre_hook=None, **extra):
        self.kwargs, self.num_warps, self.num_stages = kwargs, num_warps, num_stages
        self.num_ctas, self.maxnreg, self.pre_hook, self.extra = num_ctas, maxnreg, pre_hook, extra


def _platform_class():
    import vllm.platforms.cuda as cuda
    from vllm.platforms.interface import DeviceCapability

    def capability() -> DeviceCapability:
        major, minor = (int(x) for x in GPU["compute_capability"])
        return DeviceCapability(major=major, minor=minor)

    class FakeCudaPlatform(cuda.NvmlCudaPlatform):
        """vLLM's NVML CUDA platform (platforms/cuda.py) with the device queries answered from
        GPU; everything else (supported_dtypes, check_if_supports_dtype,
        check_and_update_config, ...) is vLLM's own code."""

        @classmethod
        def get_device_capability(cls, device_id: int = 0):
            return capability()

        @classmethod
        def get_device_name(cls, device_id: int = 0) -> str:
            return str(GPU["name"])

        @classmethod
        def _get_physical_device_name(cls, device_id: int = 0) -> str:
            return str(GPU["name"])

        @classmethod
        def get_device_uuid(cls, device_id: int = 0) -> str:
            return f"GPU-00000000-0000-0000-0000-{device_id:012d}"

        @classmethod
        def get_device_total_memory(cls, device_id: int = 0) -> int:
            return int(GPU["total_memory_bytes"])

        @classmethod
        def device_count(cls) -> int:
            return int(GPU.get("count", 1))

        @classmethod
        def device_control_id_to_physical_device_id(cls, device_id: str) -> int:
            return int(device_id)

        @classmethod
        def is_fully_connected(cls, physical_device_ids) -> bool:
            return bool(GPU.get("nvlink", False))

        @classmethod
        def get_device_numa_node(cls, device_id: int = 0):
            return None

        @classmethod
        def get_all_device_numa_nodes(cls):
            return None

        @classmethod
        def get_all_gpu_pci_bus_ids(cls):
            return {i: f"00000000:{i + 1:02X}:00.0" for i in range(cls.device_count())}

        @classmethod
        def log_warnings(cls):
            return None

        @classmethod
        def is_integrated_gpu(cls, device_id: int = 0) -> bool:
            return False

        @classmethod
        def num_compute_units(cls, device_id: int = 0) -> int:
            return int(GPU.get("multi_processor_count", 0)) or 1

        @classmethod
        def get_cuda_runtime_major(cls) -> int:
            return int(GPU.get("cuda_runtime_major", 13))

        def is_cumem_allocator_available(self) -> bool:
            # vllm/cumem_allocator (compiled, stubbed here) loads on a GPU host.
            return True

        @classmethod
        def is_arch_support_pdl(cls) -> bool:
            return capability().major >= 9

    return FakeCudaPlatform


def _install_capability_queries(capability: tuple[int, int], cuda_major: int) -> None:
    """The torch.ops._C queries vLLM calls at import time (e.g. w8a8_utils.py
    CUTLASS_BLOCK_FP8_SUPPORTED), from csrc/quantization/w8a8/cutlass/scaled_mm_entry.cu.
    vLLM 0.33.0's wheels are CUDA 13 builds."""
    import torch

    cuda_version = cuda_major * 1000 + 900

    def supports_fp8(cap: int) -> bool:
        if cap >= 90:
            return cuda_version >= 12000
        return cap >= 89 and cuda_version >= 12040

    def supports_block_fp8(cap: int) -> bool:
        if cap >= 100:
            return cuda_version >= 12080
        return cap >= 90 and cuda_version >= 12000

    def group_gemm_supported(cap: int) -> bool:
        if cap >= 100:
            return cuda_version >= 12080
        return cap >= 90 and cuda_version >= 12030

    def supports_fp4(cap: int) -> bool:
        return cap >= 100 and cuda_version >= 12080

    ops = torch.ops._C
    for name, query in {
        "cutlass_scaled_mm_supports_fp8": supports_fp8,
        "cutlass_scaled_mm_supports_block_fp8": supports_block_fp8,
        "cutlass_group_gemm_supported": group_gemm_supported,
        "cutlass_scaled_mm_supports_fp4": supports_fp4,
    }.items():
        setattr(ops, name, query)
