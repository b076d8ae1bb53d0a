"""The sizing decision: what `sizing.choice.plan()` derives and the components consume.

Plain frozen dataclasses, no Pulumi: the contract between the pure half of the program
(config/, sizing/, serving/) and the half that creates resources (components/).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from sizing import quantities as q
from sizing.addons import AddOnMemory
from sizing.gpus import GpuInstance
from sizing.rope import RopeOverride


@dataclass(frozen=True)
class MemoryBreakdown:
    """Estimated GPU memory per GPU, in GiB (2**30 bytes)."""

    weights_gib: float
    kv_cache_gib: float  # KV cache for the requested sequences (sizing.quantities.KV_FOR_SEQUENCES)
    activation_gib: float  # profile-run peak at max_num_batched_tokens
    cuda_graphs_gib: float
    runtime_overhead_gib: float  # CUDA context, NCCL/cuBLAS workspaces, allocator slack
    budget_gib: float  # gpu_memory_utilization x the GPU's CUDA total (what vLLM budgets against)
    # LoRA buffers and a speculative draft (sizing.addons): loaded with the weights; the draft's
    # KV share is inside kv_cache_gib.
    addons: AddOnMemory = field(default_factory=AddOnMemory)
    # The KV cache vLLM will allocate ("Available KV cache memory", sizing.quantities.KV_ALLOCATED);
    # None where no startup estimate made it: then the budget less everything but the KV term.
    available_kv_gib: Optional[float] = None

    @property
    def kv_allocated_gib(self) -> float:
        if self.available_kv_gib is not None:
            return self.available_kv_gib
        return self.budget_gib - self.weights_gib - self.addons.loaded_gib - self.overhead_gib

    @property
    def overhead_gib(self) -> float:
        return self.activation_gib + self.cuda_graphs_gib + self.runtime_overhead_gib

    @property
    def required_gib(self) -> float:
        return self.weights_gib + self.addons.loaded_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def headroom_gib(self) -> float:
        return self.budget_gib - self.required_gib

    @property
    def fits(self) -> bool:
        return self.headroom_gib >= 0


@dataclass(frozen=True)
class SizingPlan:
    """The chosen host and how vLLM will use it."""

    model: str
    instance: GpuInstance
    tensor_parallel_size: int
    dtype: str  # resolved: "bfloat16" | "float16"
    quantization: Optional[str]  # None = unquantized or read from the checkpoint
    kv_cache_dtype: str
    max_model_len: int
    max_num_seqs: Optional[int]
    max_num_batched_tokens: int  # what vLLM will run with (sizing.batch), as the estimate assumed
    gpu_memory_utilization: float
    memory: MemoryBreakdown  # per GPU (across nodes: the fullest pipeline stage's GPU)
    kv_cache_capacity_tokens: int  # KV tokens the leftover budget holds, across the replica
    root_volume_gb: int  # OS, Docker images, logs
    model_volume_gb: int  # the model cache volume, sized for one model
    weights_on_disk_gb: float  # the checkpoint's weights as stored (GB, 10**9 bytes)
    hourly_price_usd: Optional[float]  # all nodes together
    notes: tuple[str, ...] = field(default_factory=tuple)  # decisions worth telling the user
    cheaper: tuple[str, ...] = field(default_factory=tuple)  # "at maxModelLen 8192: g6.xlarge, $0.80/h"
    rope_theta: Optional[float] = None  # the model's RoPE base, when its config.json was read
    rope_override: Optional[RopeOverride] = None  # what ropeScaling becomes (--hf-overrides)
    emit_max_num_batched_tokens: bool = False  # pass --max-num-batched-tokens (user's or raised)
    data_parallel_size: int = 1  # replicas set by --data-parallel-size in vllmExtraArgs
    effective_max_num_seqs: Optional[int] = None  # what vLLM will run with (sizing.batch)
    checkpoint_quantization: Optional[str] = None  # the checkpoint's own method (e.g. fbgemm_fp8)
    nodes: int = 1  # identical instances, one pipeline stage each
    stage_layers: tuple[int, ...] = ()  # decoder layers per pipeline stage when nodes > 1
    architecture: str = ""  # config.json architectures[0] (serving.tool_calling picks parsers by it)
    model_type: str = ""  # config.json model_type
    max_loras: int = 0  # --max-loras (0: LoRA off), sized (sizing.addons)
    max_lora_rank: int = 0  # --max-lora-rank: maxLoraRank, or read from the adapters
    min_concurrent_sequences: int = 0  # the full-length requests the KV term holds (0: not said)
    model_volume_throughput_mibps: Optional[int] = None  # modelVolumeThroughputMibps (None: sized)

    @property
    def pipeline_parallel_size(self) -> int:
        """vLLM's --pipeline-parallel-size: one stage per node (sizing.pipeline), so `nodes`."""
        return self.nodes

    @property
    def hourly_price_usd_per_node(self) -> Optional[float]:
        """USD per hour for one node (``hourly_price_usd`` is for all of them)."""
        return None if self.hourly_price_usd is None else self.hourly_price_usd / self.nodes

    @property
    def concurrent_full_length_sequences(self) -> int:
        return self.kv_cache_capacity_tokens // self.max_model_len

    def to_output(self) -> dict[str, Any]:
        """The `sizing` stack output: numbers an operator reads, stable keys."""
        mem = self.memory
        return {
            "instanceType": self.instance.name,
            "gpuModel": self.instance.gpu_model,
            "gpus": self.instance.gpu_count,
            # The CUDA total vLLM budgets against, and the nvidia-smi total the GPU check expects.
            "gpuMemoryGib": round(self.instance.cuda_memory_gib, 2),
            "gpuMemoryNvidiaSmiMib": self.instance.gpu_memory.nvidia_smi_mib,
            "tensorParallelSize": self.tensor_parallel_size,
            "dtype": self.dtype,
            "quantization": self.quantization or "none",
            "maxModelLen": self.max_model_len,
            "perGpu": {
                # Keys from sizing.quantities, one per quantity.
                q.BUDGET.output_key: round(mem.budget_gib, 2),
                q.WEIGHTS.output_key: round(mem.weights_gib, 2),
                q.KV_FOR_SEQUENCES.output_key: round(mem.kv_cache_gib, 2),
                q.KV_ALLOCATED.output_key: round(mem.kv_allocated_gib, 2),
                q.OVERHEAD.output_key: round(mem.overhead_gib, 2),
                q.HEADROOM.output_key: round(mem.headroom_gib, 2),
                # LoRA buffers and the draft (sizing.addons), only on a stack that has them.
                **(mem.addons.as_output() if mem.addons != AddOnMemory() else {}),
            },
            q.KV_TOKENS.output_key: self.kv_cache_capacity_tokens,
            q.MAX_CONCURRENCY.output_key: self.concurrent_full_length_sequences,
            "rootVolumeGb": self.root_volume_gb,
            "modelVolumeGb": self.model_volume_gb,
            "weightsOnDiskGb": round(self.weights_on_disk_gb, 2),
            "hourlyPriceUsd": self.hourly_price_usd,
            "nodes": self.nodes,
            "pipelineParallelSize": self.pipeline_parallel_size,
            "layersPerStage": list(self.stage_layers),
            "hourlyPriceUsdPerNode": self.hourly_price_usd_per_node,
            "notes": list(self.notes),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
