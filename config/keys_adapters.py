"""Stack keys of one concern: what is served beside the base model (LoRA adapters, a speculative
decoding draft).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference. Adapters and the draft are
downloaded onto the model volume like the base model and mounted read-only where vLLM sees them
(components.host_setup, serving.adapter_args); sizing.addons counts their GPU memory.

vLLM 0.33 facts (vllm/config/lora.py ``LoRAConfig``; vllm/config/speculative.py
``SpeculativeConfig``):

* ``max_lora_rank``: ``MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]``
  (default 16); ``max_loras``: ``Field(default=1, ge=1)``;
* ``num_speculative_tokens`` must be > 0 (``SpeculativeConfig.__post_init__``);
* the methods that draft without weights of their own: ``ngram`` and ``suffix``
  (``SpeculativeConfig.__post_init__``, serving/extra_args.py ``_DRAFTLESS_METHODS``).
"""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from config import values
from config.constants import NAMESPACE
from config.keys_base import Keys

# vllm/config/lora.py MaxLoRARanks.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# The methods this stack passes in --speculative-config: a draft model of its own, or one that
# drafts from the prompt and needs no weights (vllm/config/speculative.py).
SPECULATIVE_METHODS = ("draft_model", "ngram", "suffix")
DRAFTLESS_METHODS = ("ngram", "suffix")

# An adapter name is what clients pass as `model`, and `name=path` in --lora-modules
# (vllm/entrypoints/common/cli_args.py LoRAParserAction splits on the first "=" and takes an
# item holding "," as JSON): no "=", ",", spaces, and not a path.
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LoraAdapter(Keys):
    """One LoRA adapter served under its own name beside the base model."""

    name: str = Field(description="Name clients pass as `model` to use the adapter.")
    model: str = Field(
        description="Hugging Face or ModelScope id (org/name, the base model's modelSource), or "
        "an absolute path to an adapter directory on this machine (adapter_config.json and "
        "adapter_model.safetensors)."
    )
    revision: Optional[str] = Field(None, description="Branch, tag or commit (default: main).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ADAPTER_NAME.match(value):
            raise ValueError(
                f"adapter name {value!r} must be 1-64 letters, digits, '.', '_' or '-' (no '=', "
                "',' or '/': vLLM reads --lora-modules as name=path); e.g. sql-lora"
            )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return values.model_id_or_path(value)

    @property
    def is_local(self) -> bool:
        return self.model.startswith(("/", "./", "~"))


class SpeculativeModel(Keys):
    """Speculative decoding: a draft model (downloaded like the base model), or a method that
    drafts without weights."""

    method: Literal[SPECULATIVE_METHODS] = Field(  # type: ignore[valid-type]
        "draft_model", description="draft_model (needs model), ngram or suffix."
    )
    model: Optional[str] = Field(
        None,
        description="The draft: hub id (the base model's modelSource) or an absolute path to a "
        "model directory on this machine; it must share the base model's tokenizer.",
    )
    revision: Optional[str] = Field(None, description="Branch, tag or commit of the draft.")
    num_speculative_tokens: int = Field(
        ..., ge=1, le=32, description="Tokens drafted per step (vLLM: num_speculative_tokens > 0)."
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else values.model_id_or_path(value)

    @model_validator(mode="after")
    def _model_matches_method(self) -> "SpeculativeModel":
        if self.method == "draft_model" and not self.model:
            raise ValueError(
                "method draft_model needs model (the draft's hub id or directory); or set "
                "method: ngram (drafts from the prompt, no weights)"
            )
        if self.method in DRAFTLESS_METHODS and self.model:
            raise ValueError(
                f"method {self.method} drafts without a model: drop model, or set method: draft_model"
            )
        return self

    @property
    def is_local(self) -> bool:
        return bool(self.model) and self.model.startswith(("/", "./", "~"))  # type: ignore[union-attr]


class AdapterKeys(Keys):
    """LoRA adapters and a speculative decoding draft served with the base model."""

    lora_adapters: list[LoraAdapter] = Field(
        default_factory=list,
        description="LoRA adapters, each {name, model, revision}: downloaded onto the model "
        "volume, served with --enable-lora --lora-modules name=<container path>; /v1/models lists "
        "them and the readiness check generates through one. Fixed at start (a fleet bakes them).",
    )
    max_loras: Optional[int] = Field(
        None,
        ge=1,
        description="Adapters in one batch (vLLM's --max-loras; default: the number of "
        "loraAdapters); each slot holds a LoRA buffer in GPU memory, which the sizing counts.",
    )
    max_lora_rank: Optional[int] = Field(
        None,
        description="vLLM's --max-lora-rank, one of 1, 8, 16, 32, 64, 128, 256, 320, 512 "
        "(default: the smallest that holds every adapter's rank `r`, read from its "
        "adapter_config.json; required when that cannot be read).",
    )
    speculative_model: Optional[SpeculativeModel] = Field(
        None,
        description="Speculative decoding: {model, revision, numSpeculativeTokens} for a draft "
        "model (downloaded and mounted like the base model, its weights and KV cache sized), or "
        "{method: ngram, numSpeculativeTokens} (no weights); passed as --speculative-config.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, value: Optional[int]) -> Optional[int]:
        if value is not None and value not in LORA_RANKS:
            above = [r for r in LORA_RANKS if r >= value]
            fix = f"use {above[0]}" if above else f"use at most {LORA_RANKS[-1]}"
            raise ValueError(
                f"{value} is not a rank vLLM 0.33 accepts ({', '.join(map(str, LORA_RANKS))}, "
                f"vllm/config/lora.py MaxLoRARanks); {fix}"
            )
        return value

    def adapter_key_problems(self) -> list[str]:
        """The adapter keys' combinations that cannot work, one message each (StackConfig reports
        them with every other cross-key problem at once)."""
        problems = []
        names = [a.name for a in self.lora_adapters]
        for twice in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{NAMESPACE}:loraAdapters: the name {twice!r} is used twice; give each adapter its own name")
        if not self.lora_adapters:
            for key, value in (("maxLoras", self.max_loras), ("maxLoraRank", self.max_lora_rank)):
                if value is not None:
                    problems.append(f"{NAMESPACE}:{key}={value} is set but {NAMESPACE}:loraAdapters is empty; "
                                    f"add loraAdapters or drop {key} (pulumi config rm {key})")
        return problems

    @property
    def lora_enabled(self) -> bool:
        return bool(self.lora_adapters)

    @property
    def effective_max_loras(self) -> int:
        """--max-loras: maxLoras, else one slot per adapter (0 without adapters)."""
        return self.max_loras if self.max_loras is not None else len(self.lora_adapters)
