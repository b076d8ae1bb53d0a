"""Values of vLLM 0.33's JSON-typed flags, judged the way its parser judges them.

Each JSON-typed flag of vllm/engine/arg_utils.py `_compute_kwargs` has one of three argparse
types (the flag list writes them in its type column):

* ``parse_dataclass``: the value, after `_expand_json_human_readable_numbers`, goes to
  pydantic's `TypeAdapter(<config dataclass>).validate_json`: it must be a JSON object whose
  keys are fields of the dataclass (vLLM's @config forbids others) and whose Literal-typed
  fields hold one of their values;
* ``loads`` (``parse_type(json.loads)``, optionally wrapped in ``optional_type``): any JSON;
* ``union_dict_and_str``: a value that looks like ``{...}`` must be JSON, anything else is
  kept as a string -- which vLLM's config then refuses for every such flag but
  --pt-load-map-location (`str | dict`, vllm/config/load.py): ModelConfig.hf_overrides is
  `dict | Callable` (vllm/config/model.py HfOverrides), LoadConfig.model_loader_extra_config
  `dict | TensorizerConfig`, VllmConfig.additional_config `dict | SupportsHash`.

``optional_type`` lets "" and "None" stand for None. A dotted key (``--flag.key value``) is
folded by FlexibleArgumentParser into ``{"key": value}``, the value read with json.loads, else
as a human-readable int, else as a string (vllm/utils/argparse_utils.py `parse_args`).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Optional

from config.images import PINNED_VLLM_VERSION
from serving.vllm_flags import FlagSpec, config_object_fields

_OBJECT_LIKE = re.compile(r"(?s)^\s*{.*}\s*$")

# union_dict_and_str flags whose config field takes a plain string too (vllm/config/load.py).
_STRING_ACCEPTED = frozenset({"--pt-load-map-location"})

# vllm/utils/argparse_utils.py human_readable_int: 1k = 1000, 1K = 1024 (no decimals with K/M/G/T).
_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

# A value that works, per flag, for the refusal's fix (every other JSON flag gets a generic one).
_EXAMPLES = {
    "--speculative-config": '\'{"method": "ngram", "num_speculative_tokens": 4}\'',
    "--limit-mm-per-prompt": '\'{"image": 4}\'',
}


def human_readable_int(value: str) -> Optional[int]:
    """vLLM's human_readable_int, or None where it raises."""
    value = value.strip()
    match = _HUMAN_INT.fullmatch(value)
    if match:
        number, suffix = match.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        return int(number) * _BINARY[suffix] if number.isdigit() else None
    try:
        return int(value)
    except ValueError:
        return None


def _expand_human_numbers(value: str) -> str:
    """vllm/engine/arg_utils.py `_expand_json_human_readable_numbers`: bare 80m -> 80000000."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', value)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(
            r"\b\d+(?:\.\d+)?[kKmMgGtT]\b",
            lambda m: str(human_readable_int(m.group())),
            parts[i],
        )
    return "".join(parts)


def _kind(value_type: str) -> str:
    for kind in ("parse_dataclass", "union_dict_and_str", "loads"):
        if kind in value_type:
            return kind
    return ""


def json_value_problem(spec: FlagSpec, value: str, written: str) -> Optional[str]:
    """Why vLLM 0.33's parser refuses `value` for this JSON-typed flag, or None."""
    kind = _kind(spec.value_type)
    optional = spec.value_type.startswith("optional[")
    if optional and value in ("", "None"):
        return None
    if kind == "union_dict_and_str" and not _OBJECT_LIKE.match(value):
        if spec.name in _STRING_ACCEPTED:
            return None
        return (
            f"{written} {value!r} is not a JSON object: vLLM {PINNED_VLLM_VERSION} keeps it as a "
            "string, and its config refuses a string here at startup. Write "
            f"{_example(spec, value, written)}"
        )
    text = _expand_human_numbers(value) if kind == "parse_dataclass" else value
    try:
        parsed = json.loads(text)
    except ValueError:
        return (
            f"{written} {value!r} is not JSON: vLLM {PINNED_VLLM_VERSION} parses this flag with "
            f"json.loads and stops at startup. Write {_example(spec, value, written)}"
        )
    if kind != "parse_dataclass":
        return None
    if not isinstance(parsed, dict):
        return (
            f"{written} {value!r} must be a JSON object (the fields of a vLLM config); write "
            f"{_example(spec, value, written)}"
        )
    for key, item in parsed.items():
        problem = _field_problem(spec, [key], item, written)
        if problem:
            return problem
    return None


def dotted_value(spec: FlagSpec, dotted_key: str, value: str, written: str) -> Optional[str]:
    """Why `--flag.key value` is refused for this flag, or None (only config objects are known
    field by field)."""
    if _kind(spec.value_type) != "parse_dataclass":
        return None
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        number = human_readable_int(value)
        parsed = value if number is None else number
    return _field_problem(spec, dotted_key.split("."), parsed, written)


def _field_problem(spec: FlagSpec, path: list[str], value: Any, written: str) -> Optional[str]:
    fields = config_object_fields(spec.name)
    if fields is None:
        return None
    key = path[0]
    if key not in fields:
        guess = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]!r}?" if guess else f" (fields: {', '.join(sorted(fields)[:12])}, ...)"
        return (
            f"{written}: {key!r} is not a field of {spec.name} in vLLM {PINNED_VLLM_VERSION}, "
            f"which refuses unknown keys{hint}"
        )
    choices = fields[key]
    if len(path) == 1 and choices and value is not None and value not in choices:
        listed = ", ".join(map(str, choices))
        names = [str(c) for c in choices]
        guess = [n for n in names if n.lower() == str(value).lower()] or difflib.get_close_matches(
            str(value), names, n=1, cutoff=0.6
        )
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"{written} {key}={value!r} is not allowed: expected one of {listed}{hint}"
    return None


def _example(spec: FlagSpec, value: str, written: str) -> str:
    pairs = [part.split("=", 1) for part in value.split(",") if "=" in part]
    if pairs and len(pairs) == len(value.split(",")):
        converted = {k.strip(): _scalar(v.strip()) for k, v in pairs}
        return f"{written} '{json.dumps(converted)}'"
    if spec.name in _EXAMPLES:
        return f"{written} {_EXAMPLES[spec.name]}"
    return f"a JSON object, e.g. {written} '{{\"<key>\": <value>}}', or one key as {written}.<key> <value>"


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
