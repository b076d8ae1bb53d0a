"""The facts the add-on terms need (sizing.addons), read at preview: each LoRA adapter's rank and
the draft model's architecture.

* An adapter's rank is ``r`` in its ``adapter_config.json`` (PEFT's LoraConfig; vLLM 0.33 reads
  the same key: vllm/lora/peft_helper.py ``PEFTHelper.r``), from a local directory or the hub
  (through ``sizing.hub``'s cached fetch, so a repeated preview does not refetch). vLLM refuses
  an adapter whose rank exceeds --max-lora-rank when it loads it ("LoRA rank {r} is greater
  than max_lora_rank {max_lora_rank}", vllm/lora/peft_helper.py ``validate_legal``): that is
  refused here, before anything is created.
* The draft's architecture comes from ``sizing.hub.resolve`` like the base model's.

Raises SizingError naming the key, the value and a fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from config.constants import NAMESPACE
from config.keys_adapters import LORA_RANKS, LoraAdapter
from config.settings import StackConfig
from sizing.addons import NONE, AddOns
from sizing.engine_args import EngineOptions
from sizing.errors import SizingError
from sizing.formats import WeightFormat
from sizing.hub import DEFAULT_REVISION, FetchError, _fetch_cached, http_fetch, resolve
from sizing.models import ModelResolutionError

ADAPTER_CONFIG = "adapter_config.json"


def adapter_rank(adapter: LoraAdapter, source: str, fetch=http_fetch) -> tuple[Optional[int], str]:
    """(r, "") from the adapter's adapter_config.json, or (None, why it could not be read)."""
    try:
        if adapter.is_local:
            raw: Optional[bytes] = (Path(adapter.model).expanduser() / ADAPTER_CONFIG).read_bytes()
        else:
            rev = adapter.revision or DEFAULT_REVISION[source]
            raw = _fetch_cached(source, adapter.model, rev, ADAPTER_CONFIG, fetch)
    except (OSError, FetchError) as exc:
        return None, str(exc)
    if raw is None:
        return None, f"{adapter.model} has no {ADAPTER_CONFIG} (HTTP 404): is it a LoRA adapter?"
    try:
        data = json.loads(raw)
        # vLLM checks max(r, *rank_pattern.values()) (PEFTHelper.validate_legal).
        ranks = [data.get("r"), *(data.get("rank_pattern") or {}).values()]
    except (ValueError, AttributeError):
        return None, f"{ADAPTER_CONFIG} of {adapter.model} is not a JSON object"
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        return None, f"{ADAPTER_CONFIG} of {adapter.model} has no positive integer r (got {ranks[0]!r})"
    return max(ranks), ""


def smallest_rank(rank: int) -> Optional[int]:
    """The smallest --max-lora-rank vLLM 0.33 accepts that holds `rank` (None: above 512)."""
    return next((r for r in LORA_RANKS if r >= rank), None)


def _lora(config: StackConfig) -> tuple[int, tuple[tuple[str, int], ...]]:
    where = f"{NAMESPACE}:loraAdapters"
    ranks: list[tuple[str, int]] = []
    unread: list[str] = []
    for adapter in config.lora_adapters:
        local = Path(adapter.model).expanduser()
        if adapter.is_local and not (local / ADAPTER_CONFIG).is_file():
            # No maxLoraRank can help here: the directory itself is missing or not an adapter.
            what = "does not exist" if not local.exists() else (
                "is not a directory" if not local.is_dir() else f"has no {ADAPTER_CONFIG}")
            raise SizingError(
                f"{where}: adapter {adapter.name!r} names the local directory {adapter.model}, which "
                f"{what} on this machine; a LoRA adapter directory holds {ADAPTER_CONFIG} and "
                "adapter_model.safetensors (as `hf download <adapter>` leaves them). Fix: set its model "
                "to such a directory (an absolute path), or to the adapter's hub id"
            )
        rank, why = adapter_rank(adapter, config.model_source)
        if rank is None:
            unread.append(f"{adapter.name} ({adapter.model}): {why}")
            ranks.append((adapter.name, 0))
            continue
        ranks.append((adapter.name, rank))
        if config.max_lora_rank is not None and rank > config.max_lora_rank:
            fix = smallest_rank(rank)
            raise SizingError(
                f"{where}: adapter {adapter.name!r} ({adapter.model}) has rank r={rank} in its "
                f"{ADAPTER_CONFIG}, above {NAMESPACE}:maxLoraRank={config.max_lora_rank}; vLLM "
                f"0.33 refuses it ('LoRA rank {rank} is greater than max_lora_rank'). Set "
                + (f"maxLoraRank to {fix}" if fix else "a smaller adapter (vLLM's largest rank is 512)")
            )
    if config.max_lora_rank is not None:
        return config.max_lora_rank, tuple(ranks)
    if unread:
        cache = os.environ.get("VLLM_DEPLOY_MODEL_CACHE") or "~/.cache/vllm-deploy/models"
        raise SizingError(
            f"{NAMESPACE}:maxLoraRank is needed: the rank of "
            + "; ".join(unread)
            + ". Set maxLoraRank to the largest adapter's r (one of "
            + ", ".join(map(str, LORA_RANKS))
            + f"), or run the preview where the hub is reachable (answers are cached in {cache})"
        )
    largest = max(rank for _, rank in ranks)
    chosen = smallest_rank(largest)
    if chosen is None:
        raise SizingError(
            f"{where}: an adapter has rank r={largest}, above vLLM 0.33's largest --max-lora-rank "
            "(512); use adapters of rank 512 or less"
        )
    return chosen, tuple(ranks)


def resolve_addons(config: StackConfig, engine: Optional[EngineOptions] = None, resolver=resolve) -> AddOns:
    """The stack's add-ons with the facts the sizing needs; NONE when it has none. `engine`:
    vllmExtraArgs' options (sizing.engine_args): --enable-lora there, without loraAdapters, is
    sized at its --max-loras / --max-lora-rank (vLLM's defaults 1 and 16).

    Raises SizingError for an unreadable adapter rank without maxLoraRank, a rank above
    maxLoraRank, or a draft model whose architecture cannot be read."""
    spec_cfg = config.speculative_model
    if not config.lora_adapters and spec_cfg is None:
        if engine is not None and engine.lora:
            return AddOns(max_loras=engine.max_loras, max_lora_rank=engine.max_lora_rank)
        return NONE
    max_loras = max_rank = 0
    ranks: tuple[tuple[str, int], ...] = ()
    if config.lora_adapters:
        max_loras = config.effective_max_loras
        max_rank, ranks = _lora(config)
    draft = None
    if spec_cfg is not None and spec_cfg.model:
        try:
            draft = resolver(spec_cfg.model, config.model_source, spec_cfg.revision)
        except ModelResolutionError as exc:
            raise SizingError(f"{NAMESPACE}:speculativeModel.model={spec_cfg.model!r}: {exc}") from None
    return AddOns(
        max_loras=max_loras,
        max_lora_rank=max_rank,
        adapter_ranks=ranks,
        draft=draft,
        draft_format=None if draft is None else WeightFormat(
            draft.native_quantization, draft.quant_bits, draft.quant_group_size
        ),
        num_speculative_tokens=spec_cfg.num_speculative_tokens if spec_cfg else 0,
        method=spec_cfg.method if spec_cfg else None,
    )
