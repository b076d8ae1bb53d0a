"""Pipeline parallelism across nodes: which layers each stage holds, and one GPU's share of them.

Across several identical instances vLLM 0.33 runs tensor parallel inside a node and pipeline
parallel across nodes (one stage per node). Each stage builds only its own decoder layers
(vllm/model_executor/models/utils.py ``make_layers``: the others are ``PPMissingLayer``); the
input embedding lives on the first stage and the LM head on the last (e.g.
vllm/model_executor/models/llama.py and deepseek_v2.py: ``get_pp_group().is_first_rank`` /
``is_last_rank``; with tied embeddings the last stage holds its own copy). Each stage's KV cache
covers its own attention layers only.

The split is ``get_pp_indices`` in vllm/distributed/utils.py (vLLM 0.33.0): ``layers // stages``
each, and the remainder one each to the stages just before the last, counting backwards
(``partitions[-i] += 1`` for i in 2..remainder+1), unless the environment variable
``VLLM_PP_LAYER_PARTITION`` gives the counts (which the deployment never sets).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from config.constants import MAX_NODES
from config.settings import StackConfig
from sizing.calibration import ACCOUNTING_033, Accounting
from sizing.errors import SizingError
from sizing.formats import BYTES_16BIT, WeightFormat
from sizing.memory import weights_per_gpu_bytes
from sizing.models import ModelSpec


def node_counts(config: StackConfig) -> tuple[int, ...]:
    """The node counts (pipeline stages) sizing may choose from: pipelineParallelSize > 1 fixes
    it, nodes=auto allows 1 to MAX_NODES (one node preferred), else exactly `nodes`."""
    if config.pipeline_parallel_size > 1:
        return (config.pipeline_parallel_size,)
    if config.nodes == "auto":
        return tuple(range(1, MAX_NODES + 1))
    return (int(config.nodes),)


@dataclass(frozen=True)
class PipelineStage:
    """One pipeline stage: decoder layers [start, end) of ``of_layers``, on one node."""

    rank: int
    stages: int
    start: int
    end: int
    of_layers: int

    @property
    def layers(self) -> int:
        return self.end - self.start

    @property
    def first(self) -> bool:
        return self.rank == 0

    @property
    def last(self) -> bool:
        return self.rank == self.stages - 1


def layer_partition(num_layers: int, stages: int) -> list[int]:
    """Decoder layers per stage, as vLLM 0.33's ``get_pp_indices`` splits them (env override unset).

    ``layer_partition(61, 2) == [31, 30]``; ``layer_partition(126, 4) == [31, 32, 32, 31]``.
    Raises SizingError when a stage would get no layer (fewer layers than stages): vLLM would
    start a stage that holds nothing but pipeline hops.
    """
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if num_layers < stages:
        raise SizingError(
            f"the model has {num_layers} decoder layers, fewer than {stages} pipeline stages "
            f"(one per node): set nodes to {num_layers} or fewer"
        )
    partitions = [num_layers // stages] * stages
    remaining = num_layers % stages
    for i in range(2, remaining + 2):
        partitions[-i] += 1
    return partitions


def pipeline_stages(num_layers: int, stages: int) -> list[PipelineStage]:
    """Every stage with its layer range (``layer_partition``), rank 0 first."""
    out, start = [], 0
    for rank, count in enumerate(layer_partition(num_layers, stages)):
        out.append(PipelineStage(rank, stages, start, start + count, num_layers))
        start += count
    return out


def _layer_params(spec: ModelSpec, index: int) -> float:
    """Parameters of decoder layer `index`: the dense share, plus the routed experts on an MoE
    layer (layers from ``first_k_dense_replace`` on, DeepSeek-style)."""
    decoder = spec.total_params - spec.embedding_params - spec.lm_head_params
    routed_per_layer = spec.routed_expert_params / spec.moe_layers if spec.moe_layers else 0.0
    dense_share = (decoder - spec.routed_expert_params) / spec.num_layers
    moe = spec.is_moe and index >= spec.first_k_dense_replace
    return dense_share + (routed_per_layer if moe else 0.0)


def stage_weight_fraction(spec: ModelSpec, stage: PipelineStage) -> tuple[float, float, float]:
    """(decoder-layer share, embedding share, LM-head share) of the whole checkpoint's params
    that this stage holds, each a fraction of ``spec.total_params``.

    A decoder layer's params are the model's decoder params (all but embedding and LM head)
    spread evenly over the layers, plus the routed experts on MoE layers; anything the catalog
    counts beyond the decoder layers (DeepSeek's MTP layer, which vLLM does not load without
    speculative decoding) is spread over the layers with them, which errs on the side of more.
    """
    total = spec.total_params
    layers = sum(_layer_params(spec, i) for i in range(stage.start, stage.end))
    embed = spec.embedding_params if stage.first else 0
    if stage.last:
        head = spec.lm_head_params or spec.embedding_params  # tied: the last stage keeps a copy
    else:
        head = 0
    return layers / total, embed / total, head / total


def stage_fraction(spec: ModelSpec, stage: PipelineStage) -> float:
    """Share of ``spec.total_params`` this stage holds (``stage_weight_fraction`` summed)."""
    return sum(stage_weight_fraction(spec, stage))


def stage_spec(spec: ModelSpec, stage: PipelineStage) -> ModelSpec:
    """The model as one stage sees it for its KV cache and CUDA graphs: only its own layers.

    Sliding-window layers are counted in proportion, rounded down (a sliding layer caches less
    than a full one, so rounding down errs on the side of more KV memory); the leading dense
    layers are the ones in the stage's range.
    """
    if stage.stages == 1:
        return spec
    sliding = spec.sliding_window_layers * stage.layers // spec.num_layers
    dense = max(0, min(stage.end, spec.first_k_dense_replace) - stage.start)
    return replace(spec, num_layers=stage.layers, sliding_window_layers=sliding, first_k_dense_replace=dense)


def stage_weights_per_gpu_bytes(
    spec: ModelSpec,
    fmt: WeightFormat,
    tp: int,
    stage: PipelineStage,
    accounting: Accounting = ACCOUNTING_033,
    compute_capability: float = 9.0,
) -> float:
    """One GPU's "Model loading took" on this stage, bytes: the whole model's per-GPU share at
    this TP (``sizing.memory.weights_per_gpu_bytes``) less the embedding and LM head (16-bit
    under every format, split by vocabulary over TP), times the stage's share of the decoder
    layers' params, plus the embedding on the first stage and the LM head on the last."""
    full = weights_per_gpu_bytes(spec, fmt, tp, accounting, compute_capability)
    if stage.stages == 1:
        return full
    embed = spec.embedding_params * BYTES_16BIT / tp
    head = spec.lm_head_params * BYTES_16BIT / tp
    decoder = full - embed - head
    all_layers = sum(_layer_params(spec, i) for i in range(spec.num_layers))
    mine = sum(_layer_params(spec, i) for i in range(stage.start, stage.end))
    out = decoder * mine / all_layers
    if stage.first:
        out += embed
    if stage.last:
        out += head if spec.lm_head_params else embed
    return out
