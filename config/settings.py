"""The stack configuration: one pydantic model, validated once at the boundary.

Keys are the camelCase names users write in ``Pulumi.<stack>.yaml`` under the
``vllm-deploy:`` namespace; they are the public API of this project, so they never get
renamed. The field descriptions are the README's config reference (tools/config_reference.py).
Each value is checked by config.values (CIDR lists by config.access, the image by config.images),
combinations by config.rules; ``config.validation.parse()`` is the pure entry point, and
``stack.pulumi_config.load()`` feeds it what ``pulumi.Config`` holds.

Secrets (``apiKey``, ``hfToken``, ``modelscopeToken``) are deliberately *not* fields of this model: they stay
``pulumi.Output`` secrets end to end and are read by ``stack.pulumi_config``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from config import rules, values
from config.access import THIS_MACHINE, cidr_list
from config.constants import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_MAX_MODEL_LEN_CAP,
    MAX_DRAIN_SECONDS,
    MAX_NODES,
    MAX_REPLICAS,
    QUANTIZATIONS,
)
from config.images import DEFAULT_VLLM_IMAGE, pinned_image_ref


class StackConfig(BaseModel):
    """Everything a stack can say, with defaults. Field docs are the config reference."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
    )

    # --- the model -----------------------------------------------------------------
    model: str = Field(
        description="Hugging Face or ModelScope id (org/name), or an absolute path to a "
        "model directory on this machine (config.json, weights and tokenizer; it is uploaded to "
        "the host, and its config.json sizes it).",
    )
    model_source: Literal["huggingface", "modelscope"] = Field(
        "huggingface", description="Where the host downloads the weights from."
    )
    model_revision: Optional[str] = Field(
        None, description="Branch, tag or commit of the model repository (default: main)."
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

    # --- the host ------------------------------------------------------------------
    instance_type: str = Field(
        "auto", description="EC2 instance type, or auto for the cheapest that fits."
    )
    spot: bool = Field(False, description="Run as a spot instance (stopped on interruption).")
    max_hourly_price_usd: Optional[float] = Field(
        None, gt=0, description="Refuse instances whose on-demand price is above this."
    )
    disk_size_gb: Optional[int] = Field(
        None,
        ge=30,
        le=16384,
        description="Root volume size in GB: OS, Docker images, logs (default: OS + vLLM image + "
        "headroom). The weights live on the model volume (modelVolumeSizeGb).",
    )
    model_volume_size_gb: Optional[int] = Field(
        None,
        ge=10,
        le=16384,
        description="Model cache volume size in GB, a gp3 volume kept across host replacements "
        "(default: the weights + 10% (at least 10 GB) headroom; larger keeps earlier models on a "
        "model change). It never shrinks.",
    )
    retain_model_volume: bool = Field(
        False,
        description="Keep the model cache volume when the stack is destroyed (it then costs "
        "its gp3 storage until you delete it).",
    )
    idle_stop_minutes: Optional[int] = Field(
        None,
        ge=5,
        le=10080,
        description="Stop the instance after this many minutes without requests (default: off); "
        "`tools/wake` starts it again.",
    )
    replicas: Annotated[int, BeforeValidator(values.replicas)] = Field(1, description=f"Identical hosts behind one load balancer: 1 (one host) or 2 to "
                           f"{MAX_REPLICAS} (an Auto Scaling group from one baked image; README, Replicas).")
    drain_seconds: int = Field(
        DEFAULT_DRAIN_SECONDS, ge=0, le=MAX_DRAIN_SECONDS,
        description="With replicas: how long a retiring replica may finish its requests in flight (the "
        "target group's deregistration delay); the longest stream an update should not cut.",
    )
    ami: str = Field(
        "dlami",
        description="Host image: dlami (AWS Deep Learning Base OSS Nvidia Driver AMI, "
        "drivers preinstalled), ubuntu (plain Ubuntu 22.04), or an AMI id.",
    )
    vpc_id: Optional[str] = Field(None, description="VPC to use (default: the default VPC).")
    subnet_id: Optional[str] = Field(
        None,
        description="Subnet to use: a public one (routed to an internet gateway), in a zone that "
        "offers the type (default: such a subnet of the VPC).",
    )
    ssh_public_key: Optional[str] = Field(
        None,
        description="Your own OpenSSH public key; by default the stack generates a key "
        "pair and keeps the private key as a secret output.",
    )

    # --- access --------------------------------------------------------------------
    allowed_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="Who may reach the HTTPS endpoint (the API key is still required).",
    )
    ssh_allowed_cidrs: list[str] = Field(
        default_factory=lambda: [THIS_MACHINE],
        description="Who may SSH to the host; `auto` = the public IPv4 address pulumi runs "
        "from (provisioning runs over SSH, so it must be included).",
    )
    metrics_allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Who may read Prometheus /metrics through the proxy (default: nobody).",
    )
    domain: Optional[str] = Field(
        None, description="DNS name pointing at the host's Elastic IP (needed for letsencrypt)."
    )
    tls: Literal["self-signed", "letsencrypt"] = Field(
        "self-signed",
        description="self-signed: a stack CA signs the certificate (exported as "
        "caCertificate); letsencrypt: a real certificate for `domain`.",
    )
    letsencrypt_email: Optional[str] = Field(
        None, description="Contact address for Let's Encrypt expiry notices."
    )
    rate_limit_per_minute: Optional[int] = Field(
        None, gt=0, description="Requests per minute per client IP at the proxy (default: off)."
    )
    max_request_body_mb: int = Field(
        64, ge=1, le=1024, description="Largest request body the proxy accepts, in MiB."
    )
    max_concurrent_requests_per_client: Optional[int] = Field(
        None,
        ge=1,
        le=65535,
        description="Requests one client address may have in flight at once through the proxy "
        "(streams included); more get 429 with Retry-After (default: the sequences vLLM "
        "batches at once, maxNumSeqs or vLLM's default for the GPU).",
    )

    # --- monitoring ----------------------------------------------------------------
    monitoring: bool = Field(
        True,
        description="Run Prometheus, the DCGM and node exporters and Grafana on the host "
        "(Grafana at https://<address>/grafana/); on a fleet, CloudWatch (agent, alarms, dashboard).",
    )
    monitoring_retention_days: int = Field(
        15,
        ge=1,
        le=3650,
        description="Days of metrics Prometheus keeps (its --storage.tsdb.retention.time); on a "
        "fleet, days its metrics log group keeps events (rounded up to what CloudWatch Logs accepts).",
    )
    monitoring_retention_size_gib: int = Field(
        10,
        ge=1,
        le=1024,
        description="Most GiB of metrics Prometheus keeps (its --storage.tsdb.retention.size); "
        "the disk is sized for it.",
    )
    grafana_allowed_cidrs: Optional[list[str]] = Field(
        None,
        description="Who may open Grafana at /grafana/ (default: allowedCidrs); each block must "
        "lie inside allowedCidrs, which the security group lets reach port 443.",
    )
    alert_requests_waiting: Optional[int] = Field(
        None,
        ge=1,
        description="More requests than this waiting for 5 minutes raise the VllmRequestsQueued "
        "alert (default: the full-length sequences the KV cache holds, from sizing).",
    )

    # --- validators ----------------------------------------------------------------
    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: Any) -> Any:
        """true/false where a number belongs: pydantic would read them as 1/0 (maxModelLen: true
        would serve 1 token), so they are refused."""
        if isinstance(value, bool):
            annotation = str(cls.model_fields[info.field_name].annotation)
            if ("int" in annotation or "float" in annotation) and "bool" not in annotation:
                raise ValueError("expected a number, got a boolean; write the number itself")
        return value

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

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        return values.instance_type(value)

    @field_validator("ami")
    @classmethod
    def _ami(cls, value: str) -> str:
        return values.ami(value)

    @field_validator("vpc_id")
    @classmethod
    def _vpc(cls, value: Optional[str]) -> Optional[str]:
        return values.vpc_id(value)

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: Optional[str]) -> Optional[str]:
        return values.subnet_id(value)

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh_key(cls, value: Optional[str]) -> Optional[str]:
        return values.ssh_public_key(value)

    @field_validator("allowed_cidrs", "ssh_allowed_cidrs", "metrics_allowed_cidrs", "grafana_allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: Optional[list[str]], info) -> Optional[list[str]]:
        return None if value is None else cidr_list(value, info.field_name)

    @field_validator("letsencrypt_email")
    @classmethod
    def _email(cls, value: Optional[str]) -> Optional[str]:
        return values.email(value)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: Optional[str]) -> Optional[str]:
        return values.domain(value)

    @model_validator(mode="after")
    def _cross_checks(self) -> "StackConfig":
        rules.check_all(self)
        return self

    # --- derived -------------------------------------------------------------------
    @property
    def is_local_model(self) -> bool:
        return self.model.startswith(("/", "./", "~"))

    @property
    def grafana_cidrs(self) -> list[str]:
        """Who nginx lets open /grafana/: grafanaAllowedCidrs, else allowedCidrs."""
        return list(self.allowed_cidrs if self.grafana_allowed_cidrs is None else self.grafana_allowed_cidrs)

    @property
    def served_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return self.model.rstrip("/").rsplit("/", 1)[-1] if self.is_local_model else self.model


KEYS: tuple[str, ...] = tuple(
    field.alias or name for name, field in StackConfig.model_fields.items()
)
