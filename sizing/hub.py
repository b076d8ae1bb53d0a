"""``resolve()``: a model's facts from the catalog, a local directory, or the hub.

The catalog (sizing/catalog/models.csv) answers first, then a local directory's ``config.json``,
then ``config.json`` (and ``model.safetensors.index.json`` for the exact checkpoint size) fetched
from the Hugging Face Hub or ModelScope. The network is reached only through the injectable
``fetch`` callable, and answers are cached on disk so a repeated preview does not refetch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from config.constants import NAMESPACE
from sizing.hf_config import spec_from_config
from sizing.models import ModelResolutionError, ModelSpec, did_you_mean, from_catalog


CACHE_DIR_ENV = "VLLM_DEPLOY_MODEL_CACHE"

DEFAULT_CACHE_DIR = Path("~/.cache/vllm-deploy/models")

# Long enough for a slow link to the Hub, short enough that an offline `pulumi preview` fails fast.
FETCH_TIMEOUT_S = 10.0

HUB_URLS = {
    "huggingface": "https://huggingface.co/{id}/resolve/{rev}/{file}",
    "modelscope": "https://modelscope.cn/models/{id}/resolve/{rev}/{file}",
}

DEFAULT_REVISION = {"huggingface": "main", "modelscope": "master"}

Fetch = Callable[[str, dict[str, str], float], Optional[bytes]]


class FetchError(OSError):
    """The hub could not be reached, or refused (status set for HTTP errors)."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


# --- local directories -------------------------------------------------------------------------


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


# What vLLM 0.33 loads from a model directory: weights in safetensors (preferred), else PyTorch
# *.bin / *.pt files (vllm/model_executor/model_loader/default_loader.py, load_format auto), and a
# tokenizer transformers' AutoTokenizer can build (a fast tokenizer.json, a sentencepiece
# tokenizer.model, BPE/WordPiece vocabularies, tiktoken files, or a tokenizer_config.json naming
# its own tokenizer class).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")

WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")


def local_model_problems(directory: Path) -> list[str]:
    """What a model directory lacks for vLLM to serve it ([] when complete): config.json, weights
    (every shard an index lists, non-empty), a tokenizer."""
    problems = []
    if not (directory / "config.json").is_file():
        problems.append("no config.json")
    indexes = [directory / name for name in WEIGHT_INDEXES if (directory / name).is_file()]
    for index in indexes:
        try:
            shards = sorted(set((json.loads(index.read_text()).get("weight_map") or {}).values()))
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            problems.append(f"{index.name} cannot be read ({exc})")
            continue
        if not shards:
            problems.append(f"{index.name} lists no weight files")
        missing = [s for s in shards if not (directory / s).is_file() or not (directory / s).stat().st_size]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            problems.append(f"{index.name} lists weight files that are missing or empty: {shown}")
    if not indexes:
        weights = [
            f for f in directory.iterdir()
            if f.is_file() and f.suffix in WEIGHT_SUFFIXES and f.stat().st_size
        ]
        if not weights:
            problems.append("no weights (*.safetensors, *.bin or *.pt files)")
    has_tokenizer = any((directory / name).is_file() for name in TOKENIZER_FILES) or any(
        directory.glob("*.tiktoken")
    )
    if not has_tokenizer:
        problems.append(f"no tokenizer ({', '.join(TOKENIZER_FILES)} or *.tiktoken)")
    return problems


# --- the hub -----------------------------------------------------------------------------------


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (huggingface_hub's switch) asks not to reach the Hugging Face Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def http_fetch(url: str, headers: dict[str, str], timeout: float) -> Optional[bytes]:
    """GET url; None on 404. The only function here that touches the network; with
    HF_HUB_OFFLINE set it does not reach huggingface.co.

    The Authorization header is not carried across redirects (the hub may redirect to a CDN
    on another host, which must not see the token).
    """
    host = url.split("/")[2] if "://" in url else ""
    if host == "huggingface.co" and hub_offline():
        raise FetchError(f"cannot reach {host}: HF_HUB_OFFLINE is set")
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
    source: str, model_id: str, revision: str, file: str, fetch: Fetch, token: Optional[str] = None
) -> Optional[bytes]:
    path = _cache_path(source, model_id, revision, file)
    if path.is_file():
        data = path.read_bytes()
        return None if data == _MISSING else data
    headers = {"User-Agent": "vllm-deploy-sizing"}
    token = token or os.environ.get("HF_TOKEN")
    if token and source == "huggingface":
        headers["Authorization"] = f"Bearer {token}"
    url = HUB_URLS[source].format(id=model_id, rev=revision, file=file)
    data = fetch(url, headers, FETCH_TIMEOUT_S)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_MISSING if data is None else data)
    tmp.replace(path)
    return data


def _hub_spec(
    model_id: str, source: str, revision: Optional[str], fetch: Fetch, token: Optional[str] = None
) -> ModelSpec:
    rev = revision or DEFAULT_REVISION[source]
    try:
        raw_config = _fetch_cached(source, model_id, rev, "config.json", fetch, token)
    except FetchError as exc:
        raise ModelResolutionError(_unresolvable(model_id, source, rev, exc)) from None
    if raw_config is None:
        raise ModelResolutionError(
            _unresolvable(model_id, source, rev, FetchError("config.json not found (HTTP 404)", 404))
        )
    try:
        raw_index = _fetch_cached(source, model_id, rev, "model.safetensors.index.json", fetch, token)
    except FetchError:
        raw_index = None  # e.g. a config.json saved into the cache by hand, offline: size estimated
    try:
        config = json.loads(raw_config)
        index = json.loads(raw_index) if raw_index else {}
    except json.JSONDecodeError as exc:
        raise ModelResolutionError(f"{model_id}: the hub's config.json is not JSON ({exc})") from None
    return spec_from_config(config, model_id, source=source, checkpoint_bytes=_index_total_size(index))


def hub_spec(
    model_id: str,
    source: str = "huggingface",
    revision: Optional[str] = None,
    *,
    fetch: Fetch = http_fetch,
    token: Optional[str] = None,
) -> ModelSpec:
    """The hub's own config.json for `model_id`, even when the catalog knows the model
    (for facts the catalog does not carry, such as rope_theta)."""
    return _hub_spec(model_id, source, revision, fetch, token)


CONFIG_PAGES = {
    "huggingface": "https://huggingface.co/{id}/blob/{rev}/config.json",
    "modelscope": "https://modelscope.cn/models/{id}/file/view/{rev}/config.json",
}


# --- chat templates ----------------------------------------------------------------------------

# Where vLLM 0.33 finds a chat template besides the tokenizer_config.json `chat_template` key
# (vllm/renderers/hf.py resolve_chat_template: the processor's, then the tokenizer's).
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def directory_has_chat_template(directory: Path) -> bool:
    """Whether vLLM will find a chat template in a model directory: a template file, a
    `chat_template` in tokenizer_config.json, or a mistral_common tokenizer (tekken.json or
    tokenizer.model.v* beside consolidated*.safetensors, vllm/tokenizers/registry.py), which has
    its own chat format. The same rule as components/scripts/wait_for_vllm.sh on the host."""
    if any((directory / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text()).get("chat_template"):
                return True
        except (OSError, ValueError, AttributeError):
            pass
    mistral_tokenizer = (directory / "tekken.json").is_file() or any(directory.glob("tokenizer.model.v*"))
    return mistral_tokenizer and any(directory.glob("consolidated*.safetensors"))


def has_chat_template(
    model_id_or_path: str,
    source: str = "huggingface",
    revision: Optional[str] = None,
    *,
    fetch: Fetch = http_fetch,
) -> Optional[bool]:
    """True or False when known, None when not: the catalog's chat_template column, a local
    directory's files, or the hub's tokenizer_config.json and template files (cached like
    config.json). None when the hub cannot be reached or has no tokenizer_config.json (a
    mistral_common-only repository): the host decides from the downloaded files anyway."""
    candidate = model_id_or_path.strip()
    if candidate.startswith(("/", "./", "~")):
        directory = Path(candidate).expanduser()
        return directory_has_chat_template(directory) if directory.is_dir() else None
    known = from_catalog(candidate)
    if known is not None:
        return known.chat_template
    if source not in HUB_URLS or not re.match(r"^[\w.-]+/[\w.-]+$", candidate):
        return None
    rev = revision or DEFAULT_REVISION[source]
    try:
        raw = _fetch_cached(source, candidate, rev, "tokenizer_config.json", fetch)
        if raw is None:
            return None
        try:
            if json.loads(raw).get("chat_template"):
                return True
        except (ValueError, AttributeError):
            return None
        return any(_fetch_cached(source, candidate, rev, name, fetch) is not None for name in CHAT_TEMPLATE_FILES)
    except FetchError:
        return None


def _unresolvable(model_id: str, source: str, revision: str, error: FetchError) -> str:
    why = str(error)
    if error.status in (401, 403):
        why += (
            " - the repository is gated or private: request access on its page, then set the "
            "token (hfToken: pulumi config set --secret hfToken; tools/size reads HF_TOKEN)"
        )
    cached = _cache_path(source, model_id, revision, "config.json")
    return (
        f"cannot size model {model_id!r}: it is not in the catalog and its config.json could not be "
        f"read from {source} (revision {revision}): {why}.{did_you_mean(model_id, source)}\n"
        "The sizer needs the model's architecture (layers, hidden size, attention and KV heads, "
        "head dim, vocabulary, context length, experts) and checkpoint format. Ways to give them:\n"
        "  - if the id is mistyped, fix `model` (tools/size --list-models lists the catalog);\n"
        "  - run the preview once where the hub is reachable: the answer is cached in "
        f"{cache_dir()} (or ${CACHE_DIR_ENV});\n"
        f"  - or save the model's config.json ({CONFIG_PAGES[source].format(id=model_id, rev=revision)}, "
        f"or from a copy of the repository) as\n      {cached}\n"
        "    and run the preview again: the sizer reads it from there without the network."
    )


def download_repo_id(model_id: str, source: str) -> str:
    """The repository the host downloads from `source`: the model id itself, except that a
    catalog model asked from ModelScope is fetched under ModelScope's own id (the Hugging Face id
    meta-llama/Llama-3.1-8B-Instruct is LLM-Research/Meta-Llama-3.1-8B-Instruct there).

    Raises ModelResolutionError for a catalog model with no known ModelScope id. Ids the catalog
    does not know are taken as the hub's own (the preview reads their config.json from it).
    """
    if source != "modelscope":
        return model_id
    spec = from_catalog(model_id)
    if spec is None:
        return model_id
    if not spec.modelscope_id:
        raise ModelResolutionError(
            f"{NAMESPACE}:model={model_id!r} with modelSource=modelscope: the catalog knows no "
            "ModelScope id for this model. Set model to its id on modelscope.cn, or set "
            "modelSource to huggingface."
        )
    return spec.modelscope_id


def resolve(
    model_id_or_path: str,
    source: str = "huggingface",
    revision: Optional[str] = None,
    *,
    fetch: Fetch = http_fetch,
    token: Optional[str] = None,
) -> ModelSpec:
    """The model's facts: catalog, else a local directory, else the hub's config.json.

    `token`: a Hugging Face token for gated repositories (else $HF_TOKEN); never sent elsewhere.
    Raises ModelResolutionError saying which facts are missing and how to give them.
    """
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
    return _hub_spec(candidate, source, revision, fetch, token)
