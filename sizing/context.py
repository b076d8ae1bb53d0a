"""The context length: the longest ``max_model_len`` vLLM 0.33 accepts for a model, and the one served."""

from __future__ import annotations

import math

from config.constants import DEFAULT_MAX_MODEL_LEN_CAP, NAMESPACE
from config.settings import StackConfig
from sizing.errors import SizingError
from sizing.models import ModelSpec
from sizing.rope import model_native_limit, rope_override
from sizing.vllm_rules import ROPE_PER_LAYER_TYPE_MODEL_TYPES


def model_context_limit(spec: ModelSpec, config: StackConfig) -> int:
    """The longest max_model_len vLLM 0.33 derives for this model as configured.

    The same arithmetic as vllm/config/model.py `_get_and_verify_max_len`: the model's length
    (sizing.vllm_rules.derived_max_len) times the RoPE factor for the types vLLM multiplies,
    with ropeScaling's override (sizing.rope) replacing the checkpoint's own RoPE parameters.
    Raises SizingError when ropeScaling cannot be applied to the model.
    """
    override = rope_override(spec, config)
    if override is not None:
        return override.context_limit
    return model_native_limit(spec)


def resolve_max_model_len(spec: ModelSpec, config: StackConfig) -> int:
    limit = model_context_limit(spec, config)
    if config.max_model_len is None:
        return min(limit, DEFAULT_MAX_MODEL_LEN_CAP)
    if config.max_model_len > limit:
        raise SizingError(
            f"{NAMESPACE}:maxModelLen={config.max_model_len} is longer than {spec.model_id}'s "
            f"context of {limit} tokens; vLLM would refuse to start. {_longer_context_hint(spec, config, limit)}"
        )
    return config.max_model_len


def _longer_context_hint(spec: ModelSpec, config: StackConfig, limit: int) -> str:
    if config.rope_scaling:
        return f"Raise the ropeScaling factor, or set maxModelLen to {limit} or less."
    if spec.rope_per_layer_type or spec.model_type in ROPE_PER_LAYER_TYPE_MODEL_TYPES:
        return f"Set maxModelLen to {limit} or less (this model's RoPE cannot be rescaled here)."
    factor = math.ceil(config.max_model_len / spec.max_position_embeddings)
    return (
        f'Set ropeScaling (e.g. {{"rope_type": "yarn", "factor": {factor}.0, '
        f'"original_max_position_embeddings": {spec.max_position_embeddings}}}) if the model '
        f"card allows it, or set maxModelLen to {limit} or less."
    )
