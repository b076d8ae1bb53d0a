"""The context length: the longest ``max_model_len`` vLLM 0.33 accepts for a model, and the one served."""

from __future__ import annotations

import math

from config.settings import DEFAULT_MAX_MODEL_LEN_CAP, NAMESPACE, StackConfig
from sizing.errors import SizingError
from sizing.models import ModelSpec


def model_context_limit(spec: ModelSpec, config: StackConfig) -> int:
    """The longest max_model_len vLLM accepts for this model (after any rope scaling)."""
    scaling = config.rope_scaling
    if not scaling:
        return spec.max_position_embeddings
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type == "llama3":
        return spec.max_position_embeddings
    original = scaling.get("original_max_position_embeddings") or spec.max_position_embeddings
    return int(original * float(scaling.get("factor", 1)))


def resolve_max_model_len(spec: ModelSpec, config: StackConfig) -> int:
    limit = model_context_limit(spec, config)
    if config.max_model_len is None:
        return min(limit, DEFAULT_MAX_MODEL_LEN_CAP)
    if config.max_model_len > limit:
        hint = (
            f"set ropeScaling (e.g. {{\"rope_type\": \"yarn\", \"factor\": "
            f"{math.ceil(config.max_model_len / spec.max_position_embeddings)}.0, "
            f"\"original_max_position_embeddings\": {spec.max_position_embeddings}}}) if the model "
            "card allows it, or lower maxModelLen"
            if not config.rope_scaling
            else "raise the ropeScaling factor or lower maxModelLen"
        )
        raise SizingError(
            f"{NAMESPACE}:maxModelLen={config.max_model_len} is longer than {spec.model_id}'s "
            f"context of {limit} tokens; vLLM would refuse to start. {hint}"
        )
    return config.max_model_len
