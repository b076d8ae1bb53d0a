"""The flags the pinned ``vllm serve`` accepts, and what this project knows about them.

``serving/vllm-serve-flags.txt`` is the flag list dumped from the pinned vLLM's own argparse
parser (its header says how); the rules added on top of it (removed flags, flags that do nothing,
choices checked only at engine start) come from the shared reference vllm-notes.md, section 1.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional

from config.images import PINNED_VLLM_VERSION


FLAGS_FILE = Path(__file__).parent / "vllm-serve-flags.txt"

# Facts the flag list does not carry (parser registries, config-object fields), generated from
# the vLLM 0.33.0 wheel by tools/dump_vllm_facts.py (its docstring says where each comes from).
FACTS_FILE = Path(__file__).parent / "vllm-facts.json"

Arity = Literal["none", "one", "optional", "many"]


@dataclass(frozen=True)
class FlagSpec:
    """One `vllm serve` option as the pinned parser defines it (aliases share the spec)."""

    name: str  # canonical long spelling, e.g. --tensor-parallel-size
    arity: Arity  # none: bool flag; one: a value; optional: nargs=?; many: nargs=+
    value_type: str  # as the catalog writes it: int, optional[str], parse_dataclass...
    choices: Optional[tuple[str, ...]]
    group: str
    note: str
    aliases: tuple[str, ...] = ()
    negation_of: Optional[str] = None  # for a switch that turns another one off: its name
    not_in_help: bool = False  # registered with the parser but left out of --help and the dump

    @property
    def takes_value(self) -> bool:
        return self.arity != "none"

    @property
    def deprecated(self) -> bool:
        return "deprecated" in self.note.lower()

    @property
    def hidden(self) -> bool:
        return self.not_in_help or "hidden" in self.note.lower() or "shortcut for" in self.note.lower()

    @property
    def accepts_json(self) -> bool:
        """Config-object flags: vLLM folds `--flag.key value` into their JSON value."""
        return is_json_type(self.value_type)


# Flags that 0.33.0 no longer accepts (tested in vllm-notes.md section 1), with what to do instead.
_METRICS_FIX = (
    "metrics are served at /metrics on the API port; the proxy exposes them to "
    "metricsAllowedCidrs, so drop it"
)

_CAPTURE_FIX = "drop it; CUDA graph capture is bounded by --max-cudagraph-capture-size"

_SPEC_FIX = (
    "use --speculative-config '{\"method\": ..., \"model\": ..., \"num_speculative_tokens\": N}' "
    "or --spec-method/--spec-model/--spec-tokens"
)

REMOVED_FLAGS: dict[str, str] = {
    "--enable-metrics": _METRICS_FIX,
    "--metrics-port": _METRICS_FIX,
    "--rope-scaling": (
        "set the ropeScaling config key to the same object instead (e.g. ropeScaling: "
        '{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, '
        '"rope_theta": 1000000.0}); this stack passes it to vLLM through --hf-overrides'
    ),
    "--rope-theta": (
        "pass it as --hf-overrides '{\"rope_theta\": <value>}', or as rope_theta in ropeScaling"
    ),
    "--swap-space": "the V1 engine has no CPU swap space; drop it",
    "--max-seq-len-to-capture": _CAPTURE_FIX,
    "--max-context-len-to-capture": _CAPTURE_FIX,
    "--cuda-graph-sizes": "use --cudagraph-capture-sizes or --max-cudagraph-capture-size",
    "--guided-decoding-backend": "use --structured-outputs-config.backend <name> (e.g. xgrammar)",
    "--num-scheduler-steps": "multi-step scheduling was removed; drop it",
    "--multi-step-stream-outputs": "multi-step scheduling was removed; drop it",
    "--enable-reasoning": "use --reasoning-parser <name> (e.g. qwen3, deepseek_r1)",
    "--disable-async-output-proc": "drop it",
    "--preemption-mode": "drop it",
    "--tokenizer-pool-size": "drop it",
    "--tokenizer-pool-type": "drop it",
    "--speculative-model": _SPEC_FIX,
    "--num-speculative-tokens": _SPEC_FIX,
    "--task": (
        "use --runner pooling with --convert embed or --convert classify "
        "(generation is the default)"
    ),
    "--calculate-kv-scales": "drop it",
    "--disable-mm-preprocessor-cache": "use --mm-processor-cache-gb 0",
    "--quantization-param-path": "drop it",
    "--enable-lora-bias": "drop it",
    "--scheduler-delay-factor": "drop it",
    "--lora-extra-vocab-size": "drop it",
    "--enable-prompt-adapter": "drop it",
    "--log-requests": "use --enable-log-requests",
    "--override-pooler-config": "use --pooler-config",
    "--long-lora-scaling-factors": "drop it",
    "--max-num-partial-prefills": "drop it",
    "--disable-frontend-multiprocessing": "drop it",
    "--worker-use-ray": "use --distributed-executor-backend ray",
    "--engine-use-ray": "use --distributed-executor-backend ray",
    "--use-v2-block-manager": "it is always on; drop it",
    "--device": (
        "drop it: vLLM picks the device from the platform (0.33 rejects --device as an "
        "ambiguous abbreviation of --device-ids / --device-memory-utilization)"
    ),
}

# argparse accepts these values, and vLLM then refuses anything outside these lists when
# it builds its config, i.e. minutes into container start. Lists from vllm-notes.md
# section 1 (vllm/model_executor/layers/quantization/__init__.py, vllm/config/cache.py
# CacheDType, TokenizerMode).
LATE_CHECKED_CHOICES: dict[str, tuple[str, ...]] = {
    "--quantization": (
        "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4",
        "modelopt_mxfp8", "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin",
        "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16", "torchao", "inc",
        "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
        "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
    ),
    "--kv-cache-dtype": (
        "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
        "nvfp4_ds_mla", "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc",
        "turboquant_3bit_nc", "octave_k3v4", "octave_k3v3", "octave_k3v3_compact",
        "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head", "fp8_per_token_head",
        "nvfp4", "nvfp4_4over6",
    ),
    # vllm/config/vllm.py OptimizationLevel (O0..O3): the flag is typed str, pydantic takes only these.
    "--optimization-level": ("0", "1", "2", "3"),
    "--tokenizer-mode": (
        "auto", "hf", "alpamayo2_super", "mistral", "deepseek_v32", "deepseek_v4", "inkling",
        "kimi_k3", "cohere",
    ),
}

# Accepted, but pointless or about to go: worth a warning, not a failure.
NO_EFFECT_FLAGS: dict[str, str] = {
    "--disable-log-requests": (
        f"request logging is already off by default in vLLM {PINNED_VLLM_VERSION}; drop it"
    ),
}

_JSON_TYPES = ("parse_dataclass", "loads", "union_dict_and_str")

# vllm/model_executor/layers/quantization/__init__.py DEPRECATED_QUANTIZATION_METHODS
# (shared reference vllm-notes.md section 1).
DEPRECATED_QUANTIZATIONS = frozenset({"fbgemm_fp8", "fp_quant"})

SECRET_FLAGS = {"--api-key": "apiKey", "--hf-token": "hfToken"}


def is_json_type(value_type: str) -> bool:
    return any(t in value_type for t in _JSON_TYPES)


@functools.cache
def vllm_facts() -> dict:
    """serving/vllm-facts.json: tool_parsers, reasoning_parsers, builtin_chat_templates,
    reasoning_efforts and config_objects ({flag: {class, source, fields: {name: choices}}})."""
    return json.loads(FACTS_FILE.read_text(encoding="utf-8"))


def config_object_fields(flag: str) -> Optional[dict[str, Optional[list]]]:
    """The fields of the config dataclass a parse_dataclass flag holds (None when unknown)."""
    entry = vllm_facts()["config_objects"].get(flag)
    return None if entry is None else entry["fields"]


# --- the catalog -------------------------------------------------------------------------------


@functools.cache
def flag_catalog() -> dict[str, FlagSpec]:
    """Every option string `vllm serve` accepts (long names and short aliases) -> its spec."""
    rows = [_split_row(line) for line in FLAGS_FILE.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row is not None]
    specs: dict[str, FlagSpec] = {}
    pending_aliases: list[tuple[str, str]] = []
    for option, kind, group, note in rows:
        if kind.startswith("alias of "):
            pending_aliases.append((option, kind.removeprefix("alias of ").strip()))
            continue
        specs[option] = _spec_from_row(option, kind, group, note)
        extra_alias = re.search(r"\balias (-[\w-]+)", note)
        if extra_alias:
            pending_aliases.append((extra_alias.group(1), option))
    for alias, target in pending_aliases:
        base = specs[target]
        specs[target] = _with_alias(base, alias)
    specs.update(_hidden_negations(specs))
    catalog = dict(specs)
    for spec in specs.values():
        for alias in spec.aliases:
            catalog[alias] = spec
    return catalog


def _hidden_negations(specs: dict[str, FlagSpec]) -> dict[str, FlagSpec]:
    """The `--no-enable-x` / `--no-disable-x` spellings the dump leaves out.

    vLLM 0.33 registers every boolean flag with `EnableDisableAction`
    (vllm/utils/argparse_utils.py; FlexibleArgumentParser registers it for
    BooleanOptionalAction): `--enable-x` gets `--disable-x` as its visible negation, and the
    `--no-enable-x` that argparse's BooleanOptionalAction makes stays registered, hidden from
    --help ("still accepted for backwards compatibility"). The same holds for a declared
    `--disable-x`. Flags without a negation row are store_true and have no `--no-` form.
    """
    hidden = {}
    for spec in specs.values():
        declared = spec.negation_of
        if declared is None or not declared.startswith(("--enable-", "--disable-")):
            continue
        spelling = "--no-" + declared[2:]
        if spelling not in specs:
            hidden[spelling] = replace(
                spec, name=spelling, aliases=(), negation_of=declared, not_in_help=True,
                note=f"hidden negation of {declared}",
            )
    return hidden


def _split_row(line: str) -> Optional[tuple[str, str, str, str]]:
    if not line.startswith("-"):  # comments, blank lines, the positional model_tag row
        return None
    cells = (line.split("\t") + ["", "", ""])[:4]
    return cells[0].strip(), cells[1].strip(), cells[2].strip(), cells[3].strip()


def _spec_from_row(option: str, kind: str, group: str, note: str) -> FlagSpec:
    if kind.startswith("negation of "):
        negated = kind.removeprefix("negation of ").strip()
        return FlagSpec(option, "none", "bool", None, group, note, negation_of=negated)
    if kind.startswith(("bool flag", "flag")):
        return FlagSpec(option, "none", "bool", None, group, note)
    type_match = re.search(r"type=([^;]+)", kind)
    value_type = type_match.group(1).strip() if type_match else "str"
    value_type = value_type.removesuffix("(repeatable)").strip()
    nargs = re.search(r"nargs=(\S)", kind)
    arity: Arity = {"+": "many", "?": "optional"}.get(nargs.group(1), "one") if nargs else "one"
    choices_match = re.search(r"choices=\{([^}]*)\}", kind)
    choices = tuple(c.strip() for c in choices_match.group(1).split(",")) if choices_match else None
    return FlagSpec(option, arity, value_type, choices, group, note)


def _with_alias(spec: FlagSpec, alias: str) -> FlagSpec:
    return replace(spec, aliases=spec.aliases + (alias,))


@functools.cache
def long_names() -> tuple[str, ...]:
    return tuple(sorted(name for name in flag_catalog() if name.startswith("--")))


# --- switches ----------------------------------------------------------------------------------


def _polarity(name: str) -> tuple[str, bool]:
    """(the switch's subject, True for the positive spelling): --no-x and --disable-x are
    negative, --enable-x and --x positive, --no-disable-x positive again."""
    subject, positive = name.removeprefix("--"), True
    if subject.startswith("no-"):
        subject, positive = subject[3:], not positive
    if subject.startswith("disable-"):
        subject, positive = subject[8:], not positive
    elif subject.startswith("enable-"):
        subject = subject[7:]
    return subject, positive


def are_opposites(a: str, b: str) -> bool:
    """Do two switch spellings say opposite things about the same subject?"""
    (subject_a, positive_a), (subject_b, positive_b) = _polarity(a), _polarity(b)
    return subject_a == subject_b and positive_a != positive_b


def opposite_switch(name: str) -> Optional[str]:
    """A known switch that `name` would be the opposite of, when `name` itself does not exist
    (e.g. --no-headless, --enable-log-stats)."""
    if not name.startswith("--"):
        return None
    for known, spec in flag_catalog().items():
        if known.startswith("--") and not spec.takes_value and are_opposites(known, name):
            return known
    return None
