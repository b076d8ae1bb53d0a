"""The stack configuration: one pydantic model, validated once at the boundary.

Keys are the camelCase names users write in ``Pulumi.<stack>.yaml`` under the
``vllm-deploy:`` namespace; they are the public API of this project, so they never get
renamed. ``parse()`` is pure (no Pulumi), so every rule here is unit-tested directly;
``config.stack.load()`` feeds it what ``pulumi.Config`` holds.

Secrets (``apiKey``, ``hfToken``, ``modelscopeToken``) are deliberately *not* fields of this model: they stay
``pulumi.Output`` secrets end to end and are read by ``config.stack``.
"""

from __future__ import annotations

import difflib
import math
import ipaddress
import re
from typing import Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

NAMESPACE = "vllm-deploy"

# The vLLM release whose flags (serving/vllm-serve-flags.txt) and memory behaviour
# (sizing/memory.py) this program is written against. Changing it means re-checking both.
PINNED_VLLM_VERSION = "0.33.0"
DEFAULT_VLLM_IMAGE = f"vllm/vllm-openai:v{PINNED_VLLM_VERSION}"

# vLLM 0.33 default (vllm/config/cache.py); see shared reference vllm-notes.md section 4.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92

# Without an explicit maxModelLen we serve the model's own context, capped here: a 128k
# context multiplies the KV cache (and so the instance price) for a length few requests use.
DEFAULT_MAX_MODEL_LEN_CAP = 32768

# AWS GPU instances carry 1, 2, 4 or 8 GPUs; tensor parallelism spans the GPUs of one host.
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
MAX_NODES = 8  # most identical instances one model spans (pipeline stages across nodes)

# Methods we can size (bytes per weight are known for them); vLLM accepts more, but a
# method we cannot size would make the instance choice a guess.
QUANTIZATIONS = ("none", "awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "mxfp4")
ROPE_TYPES = ("yarn", "linear", "dynamic", "longrope", "llama3")

SECRET_KEYS = ("apiKey", "hfToken", "modelscopeToken")

# vLLM 0.33 creates no stat loggers, so no `vllm:` Prometheus metrics, with this flag
# (vllm/v1/engine/async_llm.py: log_stats=not engine_args.disable_log_stats).
DISABLE_LOG_STATS = "--disable-log-stats"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_EC2_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


# An image tag that names the pinned release: "v0.33.0", or a build of it ("v0.33.0-cu126").
_PINNED_TAG = re.compile(rf"^v?{re.escape(PINNED_VLLM_VERSION)}(-[A-Za-z0-9_.]+)?$")

# What this program checks against the pinned vLLM, and so does not know for another version.
UNCHECKED_WITH_ANOTHER_VERSION = (
    "the `vllm serve` flags in vllmExtraArgs and the ones the program writes "
    "(serving/vllm-serve-flags.txt), the memory model that sizes the instance (sizing/memory.py), "
    "and the dtype and model-type rules"
)


def is_pinned_vllm_image(image: str) -> bool:
    """True when the image's tag names the pinned vLLM release (any registry, digest or not).
    A digest alone names no version, so it is not known to be the pinned one."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return ":" in last and bool(_PINNED_TAG.match(last.rsplit(":", 1)[1]))


def unverified_image_message(image: str) -> str:
    """The refusal of a vllmImage not known to be the pinned vLLM: what goes unchecked, both fixes."""
    return (
        f"{NAMESPACE}:vllmImage={image!r} is not known to be vLLM {PINNED_VLLM_VERSION}, which this "
        f"program is written against: with another version, {UNCHECKED_WITH_ANOTHER_VERSION} go "
        f"unchecked and the host may fail where preview passed. Use {DEFAULT_VLLM_IMAGE} (a digest "
        f"pins it further: {DEFAULT_VLLM_IMAGE}@sha256:<digest>), or confirm this image with "
        "`pulumi config set allowUnverifiedVllmImage true`"
    )


class ConfigError(ValueError):
    """Bad stack configuration. Each line names the key, the value given and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


# In sshAllowedCidrs: the public IPv4 address `pulumi` runs from, looked up at preview time.
THIS_MACHINE = "auto"


def _cidr_list(value: list[str], key: str) -> list[str]:
    checked = []
    for raw in value:
        if raw == THIS_MACHINE and key == "ssh_allowed_cidrs":
            checked.append(raw)
            continue
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise ValueError(
                f"{raw!r} is not a CIDR block; write one as 203.0.113.0/24 "
                f"(IPv4 prefix 0-32) or 2001:db8::/32"
            ) from None
        if str(net) != raw and "/" in raw:
            raise ValueError(
                f"{raw!r} has host bits set; did you mean {str(net)!r}?"
            )
        checked.append(str(net) if "/" in raw else f"{raw}/{net.max_prefixlen}")
    return checked


def _inside_any(cidr: str, blocks: list[str]) -> bool:
    """Whether every address of `cidr` lies in one of `blocks` (same IP version)."""
    net = ipaddress.ip_network(cidr)
    for raw in blocks:
        block = ipaddress.ip_network(raw)
        if block.version == net.version and net.subnet_of(block):  # type: ignore[arg-type]
            return True
    return False


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
        "(Grafana at https://<address>/grafana/).",
    )
    monitoring_retention_days: int = Field(
        15,
        ge=1,
        le=3650,
        description="Days of metrics Prometheus keeps (its --storage.tsdb.retention.time).",
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
        if value.startswith(("/", "./", "~")) or _HUB_ID.match(value):
            return value
        raise ValueError(
            "expected a hub id like Qwen/Qwen2.5-7B-Instruct (org/name) or an absolute "
            "path to a local model directory"
        )

    @field_validator("tensor_parallel_size", mode="before")
    @classmethod
    def _tp(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be auto or one of 1, 2, 4, 8")
        if value not in TENSOR_PARALLEL_SIZES:
            raise ValueError(
                "must be auto or one of 1, 2, 4, 8 (AWS GPU instances have 1, 2, 4 or 8 "
                "GPUs, and vLLM splits attention heads evenly across them)"
            )
        return value

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NODES:
            raise ValueError(f"must be auto or a whole number from 1 to {MAX_NODES}")
        return value

    @property
    def node_counts(self) -> tuple[int, ...]:
        """The node counts sizing may choose from: pipelineParallelSize > 1 fixes it, nodes=auto
        allows 1 to MAX_NODES (one node preferred), else exactly `nodes`."""
        if self.pipeline_parallel_size > 1:
            return (self.pipeline_parallel_size,)
        if self.nodes == "auto":
            return tuple(range(1, MAX_NODES + 1))
        return (int(self.nodes),)

    @field_validator("rope_scaling")
    @classmethod
    def _rope(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is None:
            return value
        rope_type = value.get("rope_type", value.get("type"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"needs rope_type, one of {', '.join(ROPE_TYPES)} "
                '(e.g. {"rope_type": "yarn", "factor": 4.0, '
                '"original_max_position_embeddings": 32768})'
            )
        factor = value.get("factor")
        if rope_type != "llama3" and (
            not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor) or factor <= 1
        ):
            raise ValueError("needs a numeric factor greater than 1")
        return value

    @field_validator("vllm_image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        if not _IMAGE_REF.match(value):
            raise ValueError("expected an image reference like vllm/vllm-openai:v0.33.0")
        last = value.rsplit("/", 1)[-1]
        if "@sha256:" not in value and (":" not in last or last.endswith(":latest")):
            raise ValueError(
                f"pin a version so redeploys are repeatable, e.g. {DEFAULT_VLLM_IMAGE}"
            )
        return value

    @field_validator("vllm_extra_args")
    @classmethod
    def _extra_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not isinstance(arg, str) or not arg:
                raise ValueError("must be a list of non-empty strings")
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        if value == "auto" or _EC2_TYPE.match(value):
            return value
        raise ValueError("expected auto or an EC2 instance type such as g6.xlarge")

    @field_validator("ami")
    @classmethod
    def _ami(cls, value: str) -> str:
        if value in ("dlami", "ubuntu") or _AMI_ID.match(value):
            return value
        raise ValueError("expected dlami, ubuntu, or an AMI id such as ami-0abcdef1234567890")

    @field_validator("vpc_id")
    @classmethod
    def _vpc(cls, value: Optional[str]) -> Optional[str]:
        if value is None or re.match(r"^vpc-[0-9a-f]{8,17}$", value):
            return value
        raise ValueError("expected a VPC id such as vpc-0abc1234")

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: Optional[str]) -> Optional[str]:
        if value is None or re.match(r"^subnet-[0-9a-f]{8,17}$", value):
            return value
        raise ValueError("expected a subnet id such as subnet-0abc1234")

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh_key(cls, value: Optional[str]) -> Optional[str]:
        if value is None or re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+", value):
            return value
        raise ValueError("expected an OpenSSH public key line (ssh-ed25519 AAAA... or ssh-rsa AAAA...)")

    @field_validator("allowed_cidrs", "ssh_allowed_cidrs", "metrics_allowed_cidrs", "grafana_allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: Optional[list[str]], info) -> Optional[list[str]]:
        return None if value is None else _cidr_list(value, info.field_name)

    @field_validator("letsencrypt_email")
    @classmethod
    def _email(cls, value: Optional[str]) -> Optional[str]:
        if value is None or re.match(r"^[^\s@]+@[^\s@]+\.[^\s@]+$", value):
            return value
        raise ValueError("expected an e-mail address such as ops@example.com")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: Optional[str]) -> Optional[str]:
        if value is None or _HOSTNAME.match(value.lower()):
            return value.lower() if value else value
        raise ValueError("expected a DNS name such as llm.example.com")

    @model_validator(mode="after")
    def _cross_checks(self) -> "StackConfig":
        if self.tls == "letsencrypt" and not self.domain:
            raise ValueError(
                "tls=letsencrypt needs `domain` (a DNS name pointing at the host); "
                "set domain, or use tls=self-signed"
            )
        if self.model_source == "modelscope" and self.model.startswith(("/", "./", "~")):
            raise ValueError("modelSource=modelscope needs a ModelScope id, not a local path")
        if not self.allow_unverified_vllm_image and not is_pinned_vllm_image(self.vllm_image):
            raise ValueError(unverified_image_message(self.vllm_image))
        if self.monitoring:
            self._check_monitoring()
        if self.pipeline_parallel_size > 1 and self.nodes not in ("auto", self.pipeline_parallel_size):
            raise ValueError(
                f"{NAMESPACE}:pipelineParallelSize={self.pipeline_parallel_size} puts one pipeline "
                f"stage on each node, but nodes={self.nodes}: set nodes to "
                f"{self.pipeline_parallel_size} (or auto), or leave pipelineParallelSize at 1"
            )
        if self.idle_stop_minutes is not None and any(
            # vLLM reads underscores as dashes and takes `--flag=value` (serving.flag_reader).
            arg.split("=", 1)[0].replace("_", "-") == DISABLE_LOG_STATS for arg in self.vllm_extra_args
        ):
            raise ValueError(
                f"{NAMESPACE}:idleStopMinutes={self.idle_stop_minutes} reads vLLM's request metrics, "
                f"which {DISABLE_LOG_STATS} in vllmExtraArgs turns off (the host would never look "
                f"idle); remove {DISABLE_LOG_STATS} from vllmExtraArgs, or unset idleStopMinutes"
            )
        return self

    def _check_monitoring(self) -> None:
        unreachable = [c for c in self.grafana_cidrs if not _inside_any(c, self.allowed_cidrs)]
        if unreachable:
            raise ValueError(
                f"{NAMESPACE}:grafanaAllowedCidrs has {', '.join(unreachable)}, outside every "
                f"block of {NAMESPACE}:allowedCidrs {self.allowed_cidrs}: the security group "
                "lets only allowedCidrs reach port 443, so Grafana could not be reached from "
                "there. Add the block to allowedCidrs, or remove it from grafanaAllowedCidrs"
            )

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


_FIELD_BY_KEY = {field.alias or name: name for name, field in StackConfig.model_fields.items()}


# Keys users put in the project's namespace that belong to the AWS provider's (aws:*).
_AWS_PROVIDER_KEYS = {"region": "region", "profile": "profile", "awsregion": "region", "awsprofile": "profile"}


def _describe_error(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = err.get("loc") or ()
    key = str(loc[0]) if loc else ""
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(key, KEYS + SECRET_KEYS, n=1, cutoff=0.6)
        provider_key = _AWS_PROVIDER_KEYS.get(key.lower())
        hint = f"did you mean {NAMESPACE}:{guess[0]}?" if guess else (
            f"it is the AWS provider's setting: pulumi config set aws:{provider_key} <value>"
            if provider_key else
            f"known keys: {', '.join(KEYS)}"
        )
        return f"{NAMESPACE}:{key} is not a known key; {hint} (pulumi config rm {key})"
    if not key:  # model-level cross-field check
        return msg
    where = f"{NAMESPACE}:{key}" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    given = raw.get(key, "<missing>")
    if "PRIVATE KEY" in str(given):  # a private key pasted by mistake is never echoed
        given = "<a private key, not shown>"
    if kind == "missing":
        return f"{where} is required: set it with `pulumi config set {key} <value>`"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        value = err.get("input")
        options = re.findall(r"'([^']*)'", allowed)
        guess = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"{where}={value!r} is not allowed: expected {allowed}{hint}"
    field = StackConfig.model_fields.get(_FIELD_BY_KEY.get(key, ""))
    about = f" ({field.description})" if field is not None and field.description else ""
    return f"{where}={given!r}: {msg}{about}"


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate the stack's config values (camelCase keys, namespace stripped).

    Raises ConfigError listing every problem at once, so one `pulumi preview` shows them all:
    bad values first, then combinations of good values that leave a feature unreachable.
    """
    secrets = sorted(k for k in raw if k in SECRET_KEYS)
    values = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    if secrets:  # callers pass secrets separately; reaching here is a programming error
        raise ConfigError([f"{NAMESPACE}:{k} must be read as a secret" for k in secrets])
    try:
        config = StackConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError([_describe_error(e, values) for e in exc.errors()]) from None
    from config.reachability import unreachable_features  # it reads StackConfig: imported late

    problems = unreachable_features(config)
    if problems:
        raise ConfigError(problems)
    return config
