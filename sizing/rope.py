"""RoPE scaling: what the `ropeScaling` key becomes for vLLM 0.33, and the context it unlocks.

vLLM 0.33 has no --rope-scaling flag; the stack passes the object through --hf-overrides
(serving.vllm_args). Two facts of vLLM's own code decide what that override must hold:

* dict-valued overrides are set on the HF config *after* transformers standardized its RoPE
  parameters (vllm/config/model.py `ModelConfig.__post_init__` -> `_apply_dict_overrides`), so
  the `rope_parameters` sent must be complete: rope_theta, every key the RoPE type reads
  (vllm/model_executor/layers/rotary_embedding/__init__.py `get_rope`), and keys such as
  partial_rotary_factor that the model's own parameters carried;
* vLLM derives the longest max_model_len from max_position_embeddings and multiplies it by the
  factor only for some RoPE types (vllm/config/model.py `_get_and_verify_max_len`). For the
  others (yarn, longrope, llama3, ...) max_position_embeddings must already be the extended
  length, so the override sets it to original_max_position_embeddings x factor.

`model_context_limit` in sizing.context and the override are computed here from the same
parameters, so the length the sizing accepts is the one vLLM derives.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from config.constants import NAMESPACE
from config.settings import StackConfig
from sizing.errors import SizingError
from sizing.models import ModelSpec
from sizing.vllm_rules import (
    ROPE_PER_LAYER_TYPE_MODEL_TYPES,
    ROPE_REQUIRED_KEYS,
    ROPE_TYPES_NOT_MULTIPLIED,
    vllm_context_limit,
)

# transformers' PreTrainedConfig.standardize_rope_params fills original_max_position_embeddings
# from max_position_embeddings for these types; the override skips that step, so it is done here.
_ORIGINAL_DEFAULTED = ("llama3", "yarn", "longrope")


@dataclass(frozen=True)
class RopeOverride:
    """The HF config changes that carry `ropeScaling` to vLLM, and the length vLLM then derives."""

    rope_parameters: dict[str, Any] = field(hash=False)  # complete, rope_theta included
    max_position_embeddings: Optional[int]  # set when vLLM does not multiply by the factor
    context_limit: int  # the longest max_model_len vLLM 0.33 accepts with this override

    @property
    def rope_type(self) -> str:
        return str(self.rope_parameters["rope_type"])


def native_rope_parameters(spec: ModelSpec) -> list[dict[str, Any]]:
    """The checkpoint's own scaling as vLLM iterates it (empty: no scaling)."""
    if not spec.rope_scaling_type:
        return []
    params: dict[str, Any] = {"rope_type": spec.rope_scaling_type}
    if spec.rope_scaling_factor is not None:
        params["factor"] = spec.rope_scaling_factor
    return [params]


def rope_override(spec: ModelSpec, config: StackConfig) -> Optional[RopeOverride]:
    """The override for `ropeScaling`, or None when the key is unset.

    Raises SizingError (key, value, fix) when vLLM could not use the object on this model:
    RoPE parameters kept per layer type, no known rope_theta, or a key the type needs missing.
    """
    scaling = config.rope_scaling
    if not scaling:
        return None
    where = f"{NAMESPACE}:ropeScaling"
    if spec.rope_per_layer_type or spec.model_type in ROPE_PER_LAYER_TYPE_MODEL_TYPES:
        raise SizingError(
            f"{where}={scaling} cannot be applied to {spec.model_id} (model type "
            f"{spec.model_type}): its RoPE parameters are kept per layer type (full and sliding "
            "attention), which one flat override would replace and break. vLLM 0.33 already "
            f"serves its own context of {model_native_limit(spec)} tokens: remove ropeScaling "
            "(pulumi config rm ropeScaling)."
        )
    rope_type = str(scaling.get("rope_type", scaling.get("type")))
    params = {k: v for k, v in scaling.items() if k != "type"}
    params["rope_type"] = rope_type
    theta = scaling.get("rope_theta", spec.rope_theta)
    if theta is None:
        raise SizingError(
            f"{where} needs rope_theta: {spec.model_id}'s RoPE base frequency is not known here "
            "(its config.json was not read), and vLLM 0.33 replaces the model's whole RoPE block "
            'with this object. Add "rope_theta": <the rope_theta of its config.json> to '
            "ropeScaling."
        )
    params["rope_theta"] = theta
    if rope_type in _ORIGINAL_DEFAULTED:
        params.setdefault("original_max_position_embeddings", spec.max_position_embeddings)
    if spec.partial_rotary_factor is not None:
        params.setdefault("partial_rotary_factor", spec.partial_rotary_factor)
    missing = [key for key in ROPE_REQUIRED_KEYS.get(rope_type, ()) if key not in params]
    if missing:
        raise SizingError(
            f"{where}={scaling}: rope_type {rope_type} needs {', '.join(missing)} (vLLM 0.33 "
            "reads them when it builds the rotary embedding and fails without them); add "
            f"{', '.join(repr(k) for k in missing)} to ropeScaling."
        )
    max_position = None
    if rope_type in ROPE_TYPES_NOT_MULTIPLIED:
        max_position = int(float(params["original_max_position_embeddings"]) * float(params["factor"]))
    limit = vllm_context_limit(
        max_position or spec.max_position_embeddings, spec.model_type, [params]
    )
    return RopeOverride(dict(sorted(params.items())), max_position, limit)


def model_native_limit(spec: ModelSpec) -> int:
    """The longest max_model_len vLLM derives from the checkpoint's own config."""
    return vllm_context_limit(
        spec.max_position_embeddings, spec.model_type, native_rope_parameters(spec)
    )


def with_hub_rope_facts(spec: ModelSpec, config: StackConfig) -> ModelSpec:
    """A catalog model without a known rope_theta takes its RoPE facts from the hub's config.json
    when ropeScaling needs them (cached after the first preview; offline, `rope_override` asks
    for rope_theta in ropeScaling instead)."""
    from sizing.hub import hub_spec  # the network boundary, only on this path
    from sizing.models import ModelResolutionError

    scaling = config.rope_scaling
    if not scaling or "rope_theta" in scaling or spec.rope_theta is not None or spec.source != "catalog":
        return spec
    try:
        hub = hub_spec(spec.model_id, config.model_source, config.model_revision)
    except ModelResolutionError:
        return spec
    return replace(
        spec,
        rope_theta=hub.rope_theta,
        partial_rotary_factor=hub.partial_rotary_factor,
        rope_per_layer_type=hub.rope_per_layer_type or spec.rope_per_layer_type,
    )
