"""Stack keys of one concern: what is served and how vLLM runs it (model, precision, context, batch, parallelism, image, argv, readiness, benchmark).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator

from config import values
from config.constants import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_MODEL_LEN_CAP,
    MAX_NODES,
    QUANTIZATIONS,
)
from config.images import DEFAULT_VLLM_IMAGE, pinned_image_ref
from config.keys_base import Keys


class ModelKeys(Keys):
    """What is served and how vLLM runs it: the model, its precision, context and batch, parallelism, the vLLM image and argv, readiness and the post-deploy benchmark."""

    model: str = Field(
        description="Hugging Face or ModelScope id (org/name), or an absolute path to a "
        "model directory on this machine (config.json, weights and tokenizer; it is uploaded to "
        "the host, and its config.json sizes it).",
    )
    model_source: Literal["huggingface", "modelscope"] = Field(
        "huggingface", description="Where the host downloads the weights from."
    )
    model_revision: Optional[str] = Field(
        None, description="Branch, tag or commit of the model repository (default: main).",
        json_schema_extra={"x-default": "`main`"},
    )
    served_model_name: Optional[str] = Field(
        None, description="Name clients pass as `model` (default: the model id)."
    )
    dtype: Literal["auto", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight and activation dtype; auto = what vLLM 0.33 picks: the checkpoint's "
        "16-bit dtype, float16 on GPUs without bf16 (T4) except for models that refuse float16 "
        "(Gemma-2/3, GLM-4), which need a bf16 GPU.",
    )
    quantization: Literal[QUANTIZATIONS] = Field(  # type: ignore[valid-type]
        "none",
        description="Quantization method of the checkpoint; none = read it from the "
        "checkpoint's own quantization_config.",
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", description="KV cache dtype; fp8 halves KV memory."
    )


    # --- serving -------------------------------------------------------------------
    max_model_len: Optional[int] = Field(
        None,
        # The readiness check's first generation needs a chat-templated prompt plus 8 tokens;
        # 256 leaves room for any catalog model's template.
        ge=256,
        description="Longest request (prompt + output) in tokens (default: the model's "
        f"context, capped at {DEFAULT_MAX_MODEL_LEN_CAP}).",
    )
    max_num_seqs: Optional[int] = Field(
        None,
        gt=0,
        description="Most sequences in one batch (default: vLLM's, by GPU); above vLLM's default "
        "token budget, maxNumBatchedTokens is raised to match.",
    )
    max_num_batched_tokens: Optional[int] = Field(
        None,
        gt=0,
        description="Most tokens in one batch (default: vLLM's, by GPU); at least maxNumSeqs, "
        "and at least maxModelLen when vllmExtraArgs turns chunked prefill off.",
    )
    min_concurrent_sequences: int = Field(
        2,
        ge=1,
        le=1024,
        description="Full-length (maxModelLen) sequences the KV cache must hold at once; "
        "sizing picks a GPU with room for them.",
    )
    gpu_memory_utilization: float = Field(
        DEFAULT_GPU_MEMORY_UTILIZATION,
        gt=0.0,
        le=0.99,
        description="Share of each GPU's memory vLLM may use (0 < x <= 0.99); GPUs that cannot "
        "grant it at startup (CUDA context already taken) are skipped.",
    )
    tensor_parallel_size: Union[Literal["auto"], int] = Field(
        "auto", description="GPUs one model replica spans: auto, or 1, 2, 4, 8."
    )
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        le=MAX_NODES,
        description="Pipeline stages, one per node (tensor parallel inside a node): 1 (follow "
        "nodes), or the same number as nodes.",
    )
    nodes: Union[Literal["auto"], int] = Field(
        1,
        description=f"Identical instances one model spans (pipeline parallel across them): 1 to "
        f"{MAX_NODES}, or auto for one node when one fits, else the cheapest N that fits. "
        "Across nodes: one cluster placement group, a Ray cluster, vLLM and nginx on node 0.",
    )
    rope_scaling: Optional[dict[str, Any]] = Field(
        None,
        description='RoPE scaling object passed via --hf-overrides, e.g. {"rope_type": '
        '"yarn", "factor": 4.0, "original_max_position_embeddings": 32768}; rope_theta comes '
        "from the model's config.",
    )
    vllm_image: str = Field(
        DEFAULT_VLLM_IMAGE, description="vLLM container image, pinned by tag or digest."
    )
    allow_unverified_vllm_image: bool = Field(
        False,
        description="Confirms a vllmImage of another vLLM version than the pinned one; its flags, "
        "memory model and dtype/model rules then go unchecked.",
    )
    vllm_extra_args: list[str] = Field(
        default_factory=list,
        description="Extra `vllm serve` flags, checked as the pinned vLLM reads them: names, "
        "value types and choices, parser names, flags that need each other, files the "
        "container can see.",
    )
    readiness_timeout_minutes: int = Field(
        30,
        ge=1,
        le=240,
        description="How long `pulumi up` waits for vLLM to load and answer /health.",
    )
    benchmark_on_deploy: bool = Field(
        True,
        description="After each new vLLM container, run a short `vllm bench serve` load on the "
        "host and export TTFT, ITL, tokens/s and $ per million output tokens as `benchmark`.",
    )
    benchmark_trigger: Optional[str] = Field(
        None, description="Any value; changing it runs the benchmark again (e.g. today's date)."
    )

    @field_validator("model")
    @classmethod
    def _model_id_or_path(cls, value: str) -> str:
        return values.model_id_or_path(value)

    @field_validator("tensor_parallel_size", mode="before")
    @classmethod
    def _tp(cls, value: Any) -> Any:
        return values.tensor_parallel_size(value)

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, value: Any) -> Any:
        return values.nodes(value)

    @field_validator("rope_scaling")
    @classmethod
    def _rope(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        return values.rope_scaling(value)

    @field_validator("vllm_image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        return pinned_image_ref(value)

    @field_validator("vllm_extra_args")
    @classmethod
    def _extra_args(cls, value: list[str]) -> list[str]:
        return values.extra_args(value)
