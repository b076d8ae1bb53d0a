"""The few engine options in `vllmExtraArgs` that change the hardware decision.

The full check of vllmExtraArgs (names, values, meaning) is serving.flag_reader's; sizing
runs first and only needs to know, the way vLLM 0.33's parser would read them: how many
data-parallel replicas and context-parallel ranks share the GPUs, whether chunked prefill is
off, the performance mode, and whether expert parallelism is on. Values that do not parse are
left at vLLM's defaults here; serving reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from config.constants import NAMESPACE
from sizing.models import ModelSpec

# Canonical flag -> its spellings, from serving/vllm-serve-flags.txt (short aliases) and
# vllm/utils/argparse_utils.py `EnableDisableAction` (the --no-enable-* forms it keeps).
_SPELLINGS = {
    "--data-parallel-size": ("--data-parallel-size", "-dp"),
    "--prefill-context-parallel-size": ("--prefill-context-parallel-size", "-pcp"),
    "--decode-context-parallel-size": ("--decode-context-parallel-size", "-dcp"),
    "--performance-mode": ("--performance-mode",),
    "--max-loras": ("--max-loras",),
    "--max-lora-rank": ("--max-lora-rank",),
}

_SWITCHES = {
    # flag: (spellings that turn it on, spellings that turn it off)
    "--enable-chunked-prefill": (
        ("--enable-chunked-prefill",),
        ("--disable-chunked-prefill", "--no-enable-chunked-prefill"),
    ),
    "--enable-expert-parallel": (
        ("--enable-expert-parallel", "-ep"),
        ("--disable-expert-parallel", "--no-enable-expert-parallel"),
    ),
    "--enable-lora": (("--enable-lora",), ("--disable-lora", "--no-enable-lora")),
}

# vllm/config/vllm.py PerformanceMode default; vllm/config/scheduler.py enable_chunked_prefill
# is decided per model when unset (generating decoder models: on).
DEFAULT_PERFORMANCE_MODE = "balanced"


@dataclass(frozen=True)
class EngineOptions:
    """What vllmExtraArgs sets among the options sizing depends on (vLLM defaults otherwise)."""

    data_parallel_size: int = 1
    prefill_context_parallel_size: int = 1
    decode_context_parallel_size: int = 1  # splits the KV cache over the TP ranks; no GPUs of its own
    chunked_prefill: Optional[bool] = None  # None: the model's default (on for generating models)
    chunked_prefill_flag: Optional[str] = None  # the spelling that set it, for messages
    performance_mode: str = DEFAULT_PERFORMANCE_MODE
    expert_parallel: bool = False
    expert_parallel_flag: Optional[str] = None
    # LoRA turned on in vllmExtraArgs without loraAdapters (vllm/config/lora.py defaults: 1, 16);
    # sizing.addon_facts sizes its buffers.
    lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16

    @property
    def replicas_and_ranks(self) -> int:
        """GPUs each tensor-parallel group is multiplied by (DP x PCP)."""
        return self.data_parallel_size * self.prefill_context_parallel_size

    @property
    def chunked_prefill_off(self) -> bool:
        return self.chunked_prefill is False


def _normalize(token: str) -> tuple[str, Optional[str]]:
    """(flag name with dashes, value given with =) the way FlexibleArgumentParser rewrites it."""
    name, eq, value = token.partition("=")
    if name.startswith("--"):
        head, dot, rest = name.partition(".")
        name = "--" + head[2:].replace("_", "-") + dot + rest
    return name, (value if eq else None)


def engine_options(args: Sequence[str]) -> EngineOptions:
    """Read the options from a vllmExtraArgs list; the last occurrence wins, as in argparse."""
    found: dict[str, object] = {}
    tokens = [a for a in args if isinstance(a, str)]
    for index, token in enumerate(tokens):
        name, value = _normalize(token)
        for flag, spellings in _SPELLINGS.items():
            if name in spellings:
                if value is None and index + 1 < len(tokens):
                    value = tokens[index + 1]
                found[flag] = value
        for flag, (on, off) in _SWITCHES.items():
            if name in on or name in off:
                found[flag] = (name in on, name)
    chunked = found.get("--enable-chunked-prefill")
    expert = found.get("--enable-expert-parallel")
    lora = found.get("--enable-lora")
    return EngineOptions(
        data_parallel_size=_positive_int(found.get("--data-parallel-size"), 1),
        prefill_context_parallel_size=_positive_int(found.get("--prefill-context-parallel-size"), 1),
        decode_context_parallel_size=_positive_int(found.get("--decode-context-parallel-size"), 1),
        chunked_prefill=chunked[0] if isinstance(chunked, tuple) else None,
        chunked_prefill_flag=chunked[1] if isinstance(chunked, tuple) else None,
        performance_mode=str(found.get("--performance-mode") or DEFAULT_PERFORMANCE_MODE),
        expert_parallel=bool(expert[0]) if isinstance(expert, tuple) else False,
        expert_parallel_flag=expert[1] if isinstance(expert, tuple) else None,
        lora=bool(lora[0]) if isinstance(lora, tuple) else False,
        max_loras=_positive_int(found.get("--max-loras"), 1),
        max_lora_rank=_positive_int(found.get("--max-lora-rank"), 16),
    )


def _positive_int(value: object, default: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        return default
    return number if number >= 1 else default


def expert_parallel_refusal(spec: ModelSpec, engine: EngineOptions) -> Optional[str]:
    """vLLM 0.33 refuses expert parallelism on a dense model (vllm/config/model.py
    `ModelConfig._verify_with_expert_parallelism`); None when the model has experts or EP is off."""
    if not engine.expert_parallel or spec.is_moe:
        return None
    flag = engine.expert_parallel_flag
    return (
        f"{NAMESPACE}:vllmExtraArgs: {flag} needs a mixture-of-experts model, and {spec.model_id} "
        'is dense (vLLM 0.33 stops with "Number of experts in the model must be greater than 0 '
        f'when expert parallelism is enabled"); remove {flag} from vllmExtraArgs'
    )
