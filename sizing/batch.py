"""The batch limits vLLM 0.33 will run with: max_num_batched_tokens and max_num_seqs.

vLLM fills in what the user leaves unset (vllm/engine/arg_utils.py
`EngineArgs._set_default_max_num_seqs_and_batched_tokens_args`, defaults from
`get_batch_defaults` for the OpenAI server) and then refuses to start when
(vllm/config/scheduler.py `SchedulerConfig.verify_max_model_len`):

* max_num_batched_tokens < max_model_len while chunked prefill is off
  ("max_num_batched_tokens (...) is smaller than max_model_len (...)"), or
* max_num_batched_tokens < max_num_seqs
  ("max_num_batched_tokens (...) must be greater than or equal to max_num_seqs (...)").

`batch_limits` mirrors both steps. Where only maxNumSeqs was set and vLLM's default token
budget would be below it, the budget is raised to maxNumSeqs and passed on the command line
(a plan note says so); a conflict between values the user set is refused, naming the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from config.constants import NAMESPACE
from config.settings import StackConfig
from sizing.engine_args import EngineOptions
from sizing.errors import SizingError
from sizing.gpus import GpuInstance
from sizing.memory import batch_defaults

# vllm/engine/arg_utils.py: "If throughput mode is set, double max_num_batched_tokens and
# max_num_seqs" (only the defaults, not values the user set).
THROUGHPUT_MULTIPLIER = 2


@dataclass(frozen=True)
class BatchLimits:
    """What vLLM will run with on this GPU, and what the command line must say for it."""

    max_num_batched_tokens: int
    max_num_seqs: int
    pass_batched_tokens: bool  # True: --max-num-batched-tokens goes on the command line
    note: Optional[str] = None  # a decision worth telling the user


def batch_limits(
    config: StackConfig, instance: GpuInstance, max_model_len: int, engine: EngineOptions
) -> BatchLimits:
    """The limits vLLM 0.33 derives for this config on this GPU (raises SizingError when it
    would refuse them: the message names maxNumSeqs, maxNumBatchedTokens, maxModelLen and
    the vllmExtraArgs flag that turned chunked prefill off)."""
    default_tokens, default_seqs = batch_defaults(instance)
    if engine.performance_mode == "throughput":
        default_tokens *= THROUGHPUT_MULTIPLIER
        default_seqs *= THROUGHPUT_MULTIPLIER
    chunked_off = engine.chunked_prefill_off
    user_tokens, user_seqs = config.max_num_batched_tokens, config.max_num_seqs
    seqs = user_seqs if user_seqs is not None else default_seqs

    if user_tokens is not None:
        _check_user_tokens(user_tokens, user_seqs, max_model_len, engine)
        tokens = user_tokens
        return BatchLimits(tokens, user_seqs if user_seqs is not None else min(seqs, tokens), True)

    tokens = default_tokens
    if chunked_off:
        tokens = max(max_model_len, tokens)
    tokens = min(seqs * max_model_len, tokens)
    if user_seqs is None:
        return BatchLimits(tokens, min(seqs, tokens), False)
    if tokens >= user_seqs:
        return BatchLimits(tokens, user_seqs, False)
    note = (
        f"maxNumBatchedTokens raised to {user_seqs} (= maxNumSeqs): vLLM 0.33 refuses a token "
        f"budget below max_num_seqs, and its default on {instance.gpu_model} is {tokens}"
    )
    return BatchLimits(user_seqs, user_seqs, True, note)


def _check_user_tokens(
    tokens: int, user_seqs: Optional[int], max_model_len: int, engine: EngineOptions
) -> None:
    problems = []
    if engine.chunked_prefill_off and tokens < max_model_len:
        problems.append(
            f"{NAMESPACE}:maxNumBatchedTokens={tokens} is below maxModelLen={max_model_len} "
            f"while vllmExtraArgs turns chunked prefill off ({engine.chunked_prefill_flag}): "
            "vLLM 0.33 refuses that (a prompt must fit one batch). Raise maxNumBatchedTokens to "
            f"{max_model_len} or more, lower maxModelLen, or drop {engine.chunked_prefill_flag}."
        )
    if user_seqs is not None and tokens < user_seqs:
        problems.append(
            f"{NAMESPACE}:maxNumBatchedTokens={tokens} is below maxNumSeqs={user_seqs}: "
            "vLLM 0.33 requires max_num_batched_tokens >= max_num_seqs. Raise "
            f"maxNumBatchedTokens to {user_seqs} or more, or lower maxNumSeqs to {tokens} or less."
        )
    if problems:
        raise SizingError("\n".join(problems))
