"""Model facts that size the host: architecture numbers, parameter counts, checkpoint format.

``resolve()`` looks a model up in the catalog (config/catalog/models.csv) first, then in a local
directory's ``config.json``, then fetches ``config.json`` (and ``model.safetensors.index.json`` for the
exact checkpoint size) from the Hugging Face Hub or ModelScope. The network is reached only through
the injectable ``fetch`` callable, and answers are cached on disk so a repeated preview does not
refetch.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

CATALOG_CSV = Path(__file__).parent / "catalog" / "models.csv"

CACHE_DIR_ENV = "VLLM_DEPLOY_MODEL_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/vllm-deploy/models")

# Long enough for a slow link to the Hub, short enough that an offline `pulumi preview` fails fast.
FETCH_TIMEOUT_S = 10.0

HUB_URLS = {
    "huggingface": "https://huggingface.co/{id}/resolve/{rev}/{file}",
    "modelscope": "https://modelscope.cn/models/{id}/resolve/{rev}/{file}",
}
DEFAULT_REVISION = {"huggingface": "main", "modelscope": "master"}

# Bits per weight of natively quantized checkpoints, as the quantized tensors store them.
# mxfp4: 4-bit E2M1 values plus one 8-bit E8M0 scale per block of 32 = 4.25 bits (OCP MX spec).
MXFP4_BITS = 4.25
FP8_BITS = 8

# Fields transformers fills in when a config.json omits them (defaults of the config classes);
# only the families whose published configs rely on such defaults.
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": True,
    },
    "gemma2": {"head_dim": 256, "sliding_window": 4096, "tie_word_embeddings": True},
}

Fetch = Callable[[str, dict[str, str], float], Optional[bytes]]


class ModelResolutionError(ValueError):
    """The model's facts could not be found; the message says which to give and how."""


class FetchError(OSError):
    """The hub could not be reached, or refused (status set for HTTP errors)."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts of one model, enough to estimate weights, KV cache and activations."""

    model_id: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    total_params: int
    native_dtype: str = "bfloat16"
    # None = 16-bit checkpoint; else the vLLM method name (fp8, fbgemm_fp8, mxfp4, awq, gptq, ...)
    native_quantization: Optional[str] = None
    quant_bits: Optional[float] = None
    quant_group_size: Optional[int] = None
    active_params: Optional[int] = None
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    n_shared_experts: int = 0
    first_k_dense_replace: int = 0  # leading dense layers before the MoE layers start
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    # MLA (DeepSeek-V2/V3): the KV cache holds one latent of kv_lora_rank + qk_rope_head_dim per layer
    q_lora_rank: Optional[int] = None
    kv_lora_rank: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    qk_nope_head_dim: Optional[int] = None
    v_head_dim: Optional[int] = None
    sliding_window: Optional[int] = None
    sliding_window_layers: int = 0  # layers that attend only to the last `sliding_window` tokens
    rope_theta: Optional[float] = None  # RoPE base, from config.json (the catalog does not carry it)
    checkpoint_bytes: Optional[int] = None  # exact size of the weights on disk, when known
    modelscope_id: Optional[str] = None
    source: str = "catalog"  # catalog | local | huggingface | modelscope
    params_estimated: bool = False  # True when total_params came from the formula, not a count

    @property
    def is_mla(self) -> bool:
        return bool(self.kv_lora_rank)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def full_attention_layers(self) -> int:
        return self.num_layers - self.sliding_window_layers

    @property
    def moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense_replace if self.is_moe else 0

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def routed_expert_params(self) -> int:
        """Parameters of the routed experts (gate, up, down per expert); all stay resident."""
        per_expert = 3 * self.hidden_size * self.moe_intermediate_size
        return self.moe_layers * self.num_experts * per_expert

    @property
    def kv_proj_params(self) -> int:
        """k_proj + v_proj weights: what vLLM replicates when there are fewer KV heads than GPUs."""
        if self.is_mla:
            return 0
        return self.num_layers * 2 * self.hidden_size * self.num_kv_heads * self.head_dim


def estimate_param_count(spec: ModelSpec) -> int:
    """Parameters implied by the architecture numbers (decoder only; no vision tower).

    Used when no exact count is known, and by the tests to check the catalog's counts.
    """
    h = spec.hidden_size
    if spec.is_mla:
        rope, nope, v = spec.qk_rope_head_dim or 0, spec.qk_nope_head_dim or 0, spec.v_head_dim or 0
        heads = spec.num_attention_heads
        q = (h * spec.q_lora_rank + spec.q_lora_rank * heads * (nope + rope)) if spec.q_lora_rank else (
            h * heads * (nope + rope)
        )
        kv = h * (spec.kv_lora_rank + rope) + spec.kv_lora_rank * heads * (nope + v)
        attention = q + kv + heads * v * h
    else:
        q_width = spec.num_attention_heads * spec.head_dim
        kv_width = 2 * spec.num_kv_heads * spec.head_dim
        attention = h * (q_width + kv_width) + q_width * h
        if spec.qkv_bias:
            attention += q_width + kv_width
    dense_mlp = 3 * h * spec.intermediate_size
    shared = 3 * h * spec.moe_intermediate_size * spec.n_shared_experts
    router = h * spec.num_experts
    norms = 2 * h
    dense_layers = spec.num_layers - spec.moe_layers
    body = spec.num_layers * (attention + norms) + dense_layers * dense_mlp
    body += spec.moe_layers * (router + shared) + spec.routed_expert_params
    return spec.embedding_params + spec.lm_head_params + body + h


# --- the catalog -----------------------------------------------------------------------------


def _int(value: str) -> Optional[int]:
    return int(value) if value.strip() else None


def _spec_from_row(row: dict[str, str]) -> ModelSpec:
    active = row["active_params_b"].strip()
    return ModelSpec(
        model_id=row["hf_id"],
        modelscope_id=row["modelscope_id"] or None,
        architecture=row["architecture"],
        model_type=row["model_type"],
        num_layers=int(row["num_hidden_layers"]),
        hidden_size=int(row["hidden_size"]),
        intermediate_size=int(row["intermediate_size"]),
        num_attention_heads=int(row["num_attention_heads"]),
        num_kv_heads=int(row["num_key_value_heads"]),
        head_dim=int(row["head_dim"]),
        vocab_size=int(row["vocab_size"]),
        max_position_embeddings=int(row["max_position_embeddings"]),
        total_params=round(float(row["total_params_b"]) * 1e9),
        active_params=round(float(active) * 1e9) if active else None,
        native_dtype=row["torch_dtype"] or "bfloat16",
        native_quantization=row["native_quantization"] or None,
        quant_bits=_native_bits(row["native_quantization"]),
        num_experts=_int(row["num_experts"]) or 0,
        experts_per_token=_int(row["experts_per_token"]) or 0,
        moe_intermediate_size=_int(row["moe_intermediate_size"]) or 0,
        n_shared_experts=_int(row["n_shared_experts"]) or 0,
        first_k_dense_replace=_int(row["first_k_dense_replace"]) or 0,
        tie_word_embeddings=row["tie_word_embeddings"].strip().lower() == "true",
        qkv_bias=row["model_type"] == "qwen2",
        q_lora_rank=_int(row["q_lora_rank"]),
        kv_lora_rank=_int(row["kv_lora_rank"]),
        qk_rope_head_dim=_int(row["qk_rope_head_dim"]),
        qk_nope_head_dim=_int(row["qk_nope_head_dim"]),
        v_head_dim=_int(row["v_head_dim"]),
        sliding_window=_int(row["sliding_window"]),
        sliding_window_layers=_int(row["sliding_window_layers"]) or 0,
        checkpoint_bytes=_int(row["checkpoint_bytes"]),
        source="catalog",
    )


def _native_bits(method: str) -> Optional[float]:
    return {"fp8": FP8_BITS, "fbgemm_fp8": FP8_BITS, "mxfp4": MXFP4_BITS}.get(method.strip())


@functools.lru_cache(maxsize=1)
def _catalog() -> tuple[tuple[ModelSpec, tuple[str, ...]], ...]:
    with CATALOG_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    entries = []
    for row in rows:
        names = [row["hf_id"], row["modelscope_id"], *row["aliases"].split(";")]
        entries.append((_spec_from_row(row), tuple(n.strip().lower() for n in names if n.strip())))
    return tuple(entries)


def catalog_models() -> list[ModelSpec]:
    return [spec for spec, _ in _catalog()]


def from_catalog(model_id: str) -> Optional[ModelSpec]:
    """The catalog entry whose HF id, ModelScope id or alias matches (case-insensitive)."""
    wanted = model_id.strip().lower()
    for spec, names in _catalog():
        if wanted in names:
            return spec
    return None


# --- config.json parsing ----------------------------------------------------------------------


def _first(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def _sliding_layers(text: dict[str, Any], layers: int) -> tuple[Optional[int], int]:
    """(window, number of sliding-window layers) from the config's own description.

    Only hybrid models (some full-attention layers) get a saving: vLLM's hybrid KV manager then
    gives the sliding layers just the window. Models whose every layer slides are sized as full
    attention (an over-estimate).
    """
    window = text.get("sliding_window")
    layer_types = text.get("layer_types")
    if isinstance(layer_types, list) and window:
        sliding = sum(1 for kind in layer_types if kind == "sliding_attention")
        return (window, sliding) if sliding < layers else (window, 0)
    model_type = text.get("model_type", "")
    if model_type == "gemma2" and window:
        return window, (layers + 1) // 2
    pattern = text.get("sliding_window_pattern")
    if model_type.startswith("gemma3") and window and pattern:
        return window, layers - layers // int(pattern)
    return None, 0


def _quantization(config: dict[str, Any]) -> tuple[Optional[str], Optional[float], Optional[int]]:
    """(vLLM method, bits per weight, group size) from a checkpoint's quantization_config."""
    quant = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(quant, dict):
        return None, None, None
    method = str(quant.get("quant_method", "")).lower() or None
    if method in ("awq", "gptq"):
        bits = _first(quant, "bits", "w_bit") or 4
        group = _first(quant, "group_size", "q_group_size") or 128
        return method, float(bits), int(group) if int(group) > 0 else None
    if method in ("fp8", "fbgemm_fp8"):
        return method, float(FP8_BITS), None
    if method == "mxfp4":
        return method, MXFP4_BITS, None
    return method, None, None


def spec_from_config(
    config: dict[str, Any],
    model_id: str,
    *,
    source: str,
    checkpoint_bytes: Optional[int] = None,
) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json (nested text_config for multimodal models)."""
    text = dict(config.get("text_config") or config)
    text.setdefault("model_type", config.get("model_type", ""))
    for key, value in _CONFIG_DEFAULTS.get(text["model_type"], {}).items():
        text.setdefault(key, value)
    architecture = (config.get("architectures") or ["unknown"])[0]
    layers = _first(text, "num_hidden_layers", "num_layers", "n_layer")
    hidden = _first(text, "hidden_size", "d_model", "n_embd")
    heads = _first(text, "num_attention_heads", "n_head")
    vocab = _first(text, "vocab_size", "padded_vocab_size")
    missing = [
        name
        for name, value in (
            ("num_hidden_layers", layers),
            ("hidden_size", hidden),
            ("num_attention_heads", heads),
            ("vocab_size", vocab),
        )
        if value is None
    ]
    if missing:
        raise ModelResolutionError(
            f"{model_id}: config.json has no {', '.join(missing)} (architecture {architecture}); "
            "this family is not understood by the sizer. Pick a catalog model "
            "(python -m config.sizing --list-models) or set instanceType explicitly."
        )
    kv_heads = _first(text, "num_key_value_heads", "multi_query_group_num", "num_kv_heads") or heads
    head_dim = _first(text, "head_dim", "kv_channels") or hidden // heads
    if text.get("kv_lora_rank"):  # MLA: the query/key head is the no-rope part plus the rope part
        head_dim = int(text.get("qk_nope_head_dim") or 0) + int(text.get("qk_rope_head_dim") or 0)
    num_experts = _first(text, "num_local_experts", "num_experts", "n_routed_experts") or 0
    moe_inter = _first(text, "moe_intermediate_size") or (
        _first(text, "intermediate_size") if num_experts else 0
    )
    window, sliding = _sliding_layers(text, layers)
    method, bits, group = _quantization(config)
    dtype = str(_first(text, "torch_dtype", "dtype") or config.get("torch_dtype") or "bfloat16")
    max_pos = _first(text, "max_position_embeddings", "seq_length", "n_positions") or 2048
    spec = ModelSpec(
        model_id=model_id,
        architecture=architecture,
        model_type=str(text["model_type"]),
        num_layers=int(layers),
        hidden_size=int(hidden),
        intermediate_size=int(_first(text, "intermediate_size", "ffn_hidden_size") or 4 * hidden),
        num_attention_heads=int(heads),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        vocab_size=int(vocab),
        max_position_embeddings=int(max_pos),
        total_params=0,
        native_dtype=dtype.replace("torch.", ""),
        native_quantization=method,
        quant_bits=bits,
        quant_group_size=group,
        num_experts=int(num_experts),
        experts_per_token=int(_first(text, "num_experts_per_tok", "experts_per_token") or 0),
        moe_intermediate_size=int(moe_inter or 0),
        n_shared_experts=int(text.get("n_shared_experts") or 0),
        first_k_dense_replace=int(text.get("first_k_dense_replace") or 0),
        tie_word_embeddings=bool(_first(config, "tie_word_embeddings") or text.get("tie_word_embeddings")),
        qkv_bias=bool(text.get("attention_bias")) or text["model_type"] == "qwen2",
        q_lora_rank=text.get("q_lora_rank"),
        kv_lora_rank=text.get("kv_lora_rank"),
        qk_rope_head_dim=text.get("qk_rope_head_dim"),
        qk_nope_head_dim=text.get("qk_nope_head_dim"),
        v_head_dim=text.get("v_head_dim"),
        sliding_window=window,
        sliding_window_layers=sliding,
        checkpoint_bytes=checkpoint_bytes,
        source=source,
        params_estimated=True,
        rope_theta=_rope_theta(text),
    )
    return replace(spec, total_params=estimate_param_count(spec) + _vision_params(config))


def _rope_theta(text: dict[str, Any]) -> Optional[float]:
    """transformers 4 names it rope_theta; transformers 5 moves it into rope_parameters."""
    value = text.get("rope_theta")
    if value is None and isinstance(text.get("rope_parameters"), dict):
        value = text["rope_parameters"].get("rope_theta")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _vision_params(config: dict[str, Any]) -> int:
    """A ViT/SigLIP-style vision tower: per layer 4 h^2 (attention) + 2 h x intermediate (MLP).

    Multimodal checkpoints load it too; the decoder formula does not see it.
    """
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return 0
    hidden = int(vision.get("hidden_size") or 0)
    layers = int(vision.get("num_hidden_layers") or vision.get("depth") or 0)
    inter = int(vision.get("intermediate_size") or 4 * hidden)
    return layers * (4 * hidden * hidden + 2 * hidden * inter)


# --- local directories ------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelResolutionError(f"cannot read {path}: {exc}") from None


def _index_total_size(index: dict[str, Any]) -> Optional[int]:
    size = (index.get("metadata") or {}).get("total_size")
    return int(size) if isinstance(size, (int, float)) and size > 0 else None


def _local_spec(directory: Path, model_id: str) -> ModelSpec:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelResolutionError(
            f"{model_id}: {directory} has no config.json. Point `model` at a Hugging Face model "
            "directory (config.json + *.safetensors), or use a hub id."
        )
    checkpoint_bytes = None
    index_path = directory / "model.safetensors.index.json"
    if index_path.is_file():
        checkpoint_bytes = _index_total_size(_read_json(index_path))
    elif (directory / "model.safetensors").is_file():
        checkpoint_bytes = (directory / "model.safetensors").stat().st_size
    return spec_from_config(
        _read_json(config_path), model_id, source="local", checkpoint_bytes=checkpoint_bytes
    )


# --- the hub ----------------------------------------------------------------------------------


def http_fetch(url: str, headers: dict[str, str], timeout: float) -> Optional[bytes]:
    """GET url; None on 404. The only function here that touches the network.

    The Authorization header is not carried across redirects (the hub may redirect to a CDN
    on another host, which must not see the token).
    """
    plain = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    request = urllib.request.Request(url, headers=plain)
    for key, value in headers.items():
        if key.lower() == "authorization":
            request.add_unredirected_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https only)
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise FetchError(f"HTTP {exc.code}", status=exc.code) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot reach {url.split('/')[2]}: {reason}") from None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _cache_path(source: str, model_id: str, revision: str, file: str) -> Path:
    # The revision is hashed into the name so branch names with slashes stay one path segment.
    rev = hashlib.sha256(revision.encode()).hexdigest()[:12]
    return cache_dir() / source / model_id.replace("/", "--") / rev / file


_MISSING = b"\x00missing\x00"  # cached "the hub has no such file" (e.g. single-file checkpoints)


def _fetch_cached(
    source: str, model_id: str, revision: str, file: str, fetch: Fetch
) -> Optional[bytes]:
    path = _cache_path(source, model_id, revision, file)
    if path.is_file():
        data = path.read_bytes()
        return None if data == _MISSING else data
    headers = {"User-Agent": "vllm-deploy-sizing"}
    token = os.environ.get("HF_TOKEN")
    if token and source == "huggingface":
        headers["Authorization"] = f"Bearer {token}"
    url = HUB_URLS[source].format(id=model_id, rev=revision, file=file)
    data = fetch(url, headers, FETCH_TIMEOUT_S)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_MISSING if data is None else data)
    tmp.replace(path)
    return data


def _hub_spec(model_id: str, source: str, revision: Optional[str], fetch: Fetch) -> ModelSpec:
    rev = revision or DEFAULT_REVISION[source]
    try:
        raw_config = _fetch_cached(source, model_id, rev, "config.json", fetch)
        raw_index = (
            _fetch_cached(source, model_id, rev, "model.safetensors.index.json", fetch)
            if raw_config is not None
            else None
        )
    except FetchError as exc:
        raise ModelResolutionError(_unresolvable(model_id, source, rev, exc)) from None
    if raw_config is None:
        raise ModelResolutionError(
            _unresolvable(model_id, source, rev, FetchError("config.json not found (HTTP 404)", 404))
        )
    try:
        config = json.loads(raw_config)
        index = json.loads(raw_index) if raw_index else {}
    except json.JSONDecodeError as exc:
        raise ModelResolutionError(f"{model_id}: the hub's config.json is not JSON ({exc})") from None
    return spec_from_config(config, model_id, source=source, checkpoint_bytes=_index_total_size(index))


def hub_spec(
    model_id: str, source: str = "huggingface", revision: Optional[str] = None, *, fetch: Fetch = http_fetch
) -> ModelSpec:
    """The hub's own config.json for `model_id`, even when the catalog knows the model
    (for facts the catalog does not carry, such as rope_theta)."""
    return _hub_spec(model_id, source, revision, fetch)


def _unresolvable(model_id: str, source: str, revision: str, error: FetchError) -> str:
    why = str(error)
    if error.status in (401, 403):
        why += (
            " - the repository is gated or private: accept its licence on the hub and set HF_TOKEN "
            "in the environment of `pulumi preview` (and the hfToken secret for the host)"
        )
    return (
        f"cannot size model {model_id!r}: it is not in the catalog and its config.json could not be "
        f"read from {source} (revision {revision}): {why}.\n"
        "The sizer needs the model's architecture (layers, hidden size, attention and KV heads, "
        "head dim, vocabulary, context length, experts) and checkpoint format. Ways to give them:\n"
        "  - run where the hub is reachable once (answers are cached in "
        f"{cache_dir()}, or set {CACHE_DIR_ENV});\n"
        "  - download the model's config.json (and model.safetensors.index.json) into a directory "
        "and set `model` to that absolute path;\n"
        "  - pick a catalog model (python -m config.sizing --list-models);\n"
        "  - or set instanceType yourself and check the fit with "
        "`python -m config.sizing <local dir> --all`."
    )


def resolve(
    model_id_or_path: str,
    source: str = "huggingface",
    revision: Optional[str] = None,
    *,
    fetch: Fetch = http_fetch,
) -> ModelSpec:
    """The model's facts: catalog, else a local directory, else the hub's config.json."""
    if source not in HUB_URLS:
        raise ModelResolutionError(f"unknown model source {source!r}; use huggingface or modelscope")
    candidate = model_id_or_path.strip()
    if candidate.startswith(("/", "./", "~")):
        directory = Path(candidate).expanduser()
        if not directory.is_dir():
            raise ModelResolutionError(f"model path {candidate} is not a directory on this machine")
        return _local_spec(directory, candidate)
    known = from_catalog(candidate)
    if known is not None:
        return known
    if not re.match(r"^[\w.-]+/[\w.-]+$", candidate):
        raise ModelResolutionError(
            f"{candidate!r} is neither a hub id (org/name) nor an absolute model directory"
        )
    return _hub_spec(candidate, source, revision, fetch)
