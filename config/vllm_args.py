"""The `vllm serve` command line: built from the stack config and the sizing plan, and
checked against the flags the pinned vLLM actually accepts.

A typo or a flag copied from an old guide would otherwise surface as a container that
exits at start, after the instance was bought and the weights downloaded. Everything here
runs at `pulumi preview` time and reports every problem at once.

``config/catalog/vllm-serve-flags.txt`` is the flag list dumped from the pinned vLLM's own
argparse parser (its header says how); the rules this module adds on top of it (removed
flags, prefix abbreviation, dotted keys, ``-O<n>``) come from the shared reference
vllm-notes.md, section 1.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence

from config.plan import SizingPlan
from config.settings import NAMESPACE, PINNED_VLLM_VERSION, ConfigError, StackConfig

FLAGS_FILE = Path(__file__).parent / "catalog" / "vllm-serve-flags.txt"

# Inside the container's own network namespace; the host publishes the port on its
# loopback only, so this is not an exposure (nginx is the only way in).
CONTAINER_HOST = "0.0.0.0"

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

    @property
    def takes_value(self) -> bool:
        return self.arity != "none"

    @property
    def deprecated(self) -> bool:
        return "deprecated" in self.note.lower()

    @property
    def hidden(self) -> bool:
        return "hidden" in self.note.lower() or "shortcut for" in self.note.lower()

    @property
    def accepts_json(self) -> bool:
        """Config-object flags: vLLM folds `--flag.key value` into their JSON value."""
        return _is_json_type(self.value_type)


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

# Flags this module sets from config keys; in vllmExtraArgs they would fight the sizing
# plan (or put a secret on the command line).
_MANAGED: dict[str, str] = {
    "--model": "model",
    "--served-model-name": "servedModelName",
    "--revision": "modelRevision",
    "--dtype": "dtype",
    "--quantization": "quantization",
    "--kv-cache-dtype": "kvCacheDtype",
    "--max-model-len": "maxModelLen",
    "--max-num-seqs": "maxNumSeqs",
    "--max-num-batched-tokens": "maxNumBatchedTokens",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--tensor-parallel-size": "tensorParallelSize",
    "--pipeline-parallel-size": "pipelineParallelSize",
    "--hf-overrides": "ropeScaling",
    "--api-key": "apiKey",
    "--hf-token": "hfToken",
}
_SECRET_FLAGS = {"--api-key": "apiKey", "--hf-token": "hfToken"}

# Flags that would break how the container is wired into the host; no config key sets them.
_PROXY_TLS = "the nginx proxy terminates TLS (see the tls key); vLLM serves plain HTTP behind it"
_FIXED_FLAGS: dict[str, str] = {
    "--host": "the container listens on all interfaces of its own network namespace and "
    "the host publishes the port on 127.0.0.1 only; restrict access with allowedCidrs",
    "--port": "the proxy reaches vLLM on a fixed port; nothing to set",
    "--uds": "the proxy reaches vLLM over TCP; a unix socket would cut it off",
    "--ssl-keyfile": _PROXY_TLS,
    "--ssl-certfile": _PROXY_TLS,
    "--ssl-ca-certs": _PROXY_TLS,
    "--config": "the file would have to exist inside the container; list the flags in "
    "vllmExtraArgs instead",
    "--help": "vllm serve would print its help and exit instead of serving",
}

# vLLM's rewriting before argparse (vllm/utils/argparse_utils.py): -O<n> means
# --optimization-level <n>, and -O.<key> a key of --compilation-config.
_OPT_LEVEL_FLAG = "--optimization-level"
_OPT_CONFIG_FLAG = "--compilation-config"
_BARE_O_LEVELS = ("0", "1", "2", "3")

# argparse's own rule: these look like numbers, not options, so they can be values.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_HUMAN_INT = re.compile(r"^\d+$|^\d+(\.\d+)?[kmgt]$|^\d+[KMGT]$")
_JSON_TYPES = ("parse_dataclass", "loads", "union_dict_and_str")


# vllm/model_executor/layers/quantization/__init__.py DEPRECATED_QUANTIZATION_METHODS
# (shared reference vllm-notes.md section 1).
DEPRECATED_QUANTIZATIONS = frozenset({"fbgemm_fp8", "fp_quant"})


def managed_flags() -> dict[str, str]:
    """Flags this stack sets itself, each mapped to the config key (or secret) that sets it."""
    return dict(_MANAGED)


def fixed_flags() -> dict[str, str]:
    """Flags no config key sets because the host wiring depends on them, with the reason."""
    return dict(_FIXED_FLAGS)


# --- the catalog -------------------------------------------------------------------


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
    catalog = dict(specs)
    for spec in specs.values():
        for alias in spec.aliases:
            catalog[alias] = spec
    return catalog


def _split_row(line: str) -> Optional[tuple[str, str, str, str]]:
    if not line.startswith("-"):  # comments, blank lines, the positional model_tag row
        return None
    cells = (line.split("\t") + ["", "", ""])[:4]
    return cells[0].strip(), cells[1].strip(), cells[2].strip(), cells[3].strip()


def _spec_from_row(option: str, kind: str, group: str, note: str) -> FlagSpec:
    if kind.startswith(("bool flag", "negation of ", "flag")):
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
def _long_names() -> tuple[str, ...]:
    return tuple(sorted(name for name in flag_catalog() if name.startswith("--")))


# --- reading an argument list the way vllm serve does ---------------------------------


@dataclass
class _Option:
    """One option occurrence in an argument list."""

    written: str  # the option as the user wrote it, without any =value
    spec: Optional[FlagSpec]  # None when unknown or removed
    position: int  # index in the argument list
    values: list[str] = field(default_factory=list)
    dotted_key: Optional[str] = None  # for --flag.key value


@dataclass
class _Reading:
    options: list[_Option] = field(default_factory=list)
    # (argv index, the option it concerns or None for a stray token, the message)
    findings: list[tuple[int, Optional[_Option], str]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [message for _, _, message in self.findings]


def _looks_like_option(token: str) -> bool:
    return (
        token.startswith("-")
        and len(token) > 1
        and not _NEGATIVE_NUMBER.match(token)
        and " " not in token
    )


def _normalize_long(name: str) -> str:
    """vLLM turns underscores into dashes in the flag name (not in a dotted key's path)."""
    head, dot, rest = name.partition(".")
    return "--" + head[2:].replace("_", "-") + dot + rest


class _Reader:
    """Walks argv once, the way vLLM's FlexibleArgumentParser + argparse would."""

    def __init__(self, args: Sequence[str], source: str):
        self.args = list(args)
        self.where = f"{NAMESPACE}:{source}"
        self.reading = _Reading()
        self.pos = 0

    def problem(self, message: str) -> None:
        self.reading.findings.append((self.pos - 1, None, f"{self.where}: {message}"))

    def option_problem(self, option: _Option, message: str) -> None:
        self.reading.findings.append((option.position, option, f"{self.where}: {message}"))

    def run(self) -> _Reading:
        while self.pos < len(self.args):
            token = self.args[self.pos]
            self.pos += 1
            if not isinstance(token, str) or not token:
                self.problem(f"{token!r} is not a non-empty string; each list item is one argument")
            elif not _looks_like_option(token):
                self.problem(
                    f"{token!r} is not the value of any flag; vllm serve takes one positional "
                    "argument, the model, which this stack passes from the `model` key "
                    "(remove it, or put it right after the flag it belongs to)"
                )
            elif token.startswith("-O") and not token.startswith("--"):
                self.read_o_shorthand(token)
            else:
                self.read_option(token)
        return self.reading

    # -- options ---------------------------------------------------------------------
    def read_option(self, token: str) -> None:
        written, eq, explicit = token.partition("=")
        explicit_value = explicit if eq else None
        name = _normalize_long(written) if written.startswith("--") else written
        base, dot, dotted_key = name.partition(".")
        if dotted_key.endswith("+"):  # --flag.key+ a,b appends to a list
            dotted_key = dotted_key[:-1]
        option = _Option(written, None, self.pos - 1, dotted_key=dotted_key or None)
        self.reading.options.append(option)
        option.spec = spec = self.resolve(base, option)
        if spec is None:
            self.skip_values()  # values of an unknown flag would only repeat the same problem
            return
        if dot:
            self.read_dotted(option, explicit_value)
        else:
            self.read_values(option, explicit_value)

    def resolve(self, base: str, option: _Option) -> Optional[FlagSpec]:
        catalog = flag_catalog()
        written = option.written
        if base in catalog:
            return catalog[base]
        if base in REMOVED_FLAGS:
            self.option_problem(
                option,
                f"{written!r} was removed before vLLM {PINNED_VLLM_VERSION}; {REMOVED_FLAGS[base]}"
            )
            return None
        short_value = self.attached_short_value(base)
        if short_value is not None:
            option.written = base[:2]
            return short_value
        if base.startswith("--"):
            matches = [name for name in _long_names() if name.startswith(base)]
            if len(matches) == 1:
                # argparse would take the abbreviation, but a later vLLM flag with the same
                # prefix would silently change its meaning; the full name is stable.
                self.option_problem(
                    option, f"{written!r} is an abbreviation; write it in full: {matches[0]}"
                )
                return catalog[matches[0]]
            if matches:
                self.option_problem(
                    option,
                    f"{written!r} is an ambiguous abbreviation of {', '.join(matches[:6])}; "
                    "write the flag in full"
                )
                return None
        self.option_problem(
            option,
            f"{written!r} is not a vllm serve flag in vLLM {PINNED_VLLM_VERSION}{_suggest(base)}",
        )
        return None

    def attached_short_value(self, base: str) -> Optional[FlagSpec]:
        """argparse reads -qawq as -q awq for two-character options."""
        spec = flag_catalog().get(base[:2])
        if base.startswith("--") or len(base) <= 2 or spec is None or not spec.takes_value:
            return None
        self.args.insert(self.pos, base[2:])
        return spec

    def read_values(self, option: _Option, explicit_value: Optional[str]) -> None:
        spec = option.spec
        assert spec is not None
        if explicit_value is not None:
            if not spec.takes_value:
                self.option_problem(
                    option,
                    f"{option.written!r} takes no value (write {option.written} alone, or its "
                    "--no-/--disable- form)"
                )
                return
            option.values.append(explicit_value)
        elif spec.arity == "one":
            self.take_value(option, required=True)
        elif spec.arity == "optional":
            self.take_value(option, required=False)
        elif spec.arity == "many":
            if self.take_value(option, required=True):
                while self.take_value(option, required=False):
                    pass
        self.check_values(option)

    def read_dotted(self, option: _Option, explicit_value: Optional[str]) -> None:
        spec = option.spec
        assert spec is not None
        if not spec.accepts_json:
            json_flags = sorted(s.name for s in set(flag_catalog().values()) if s.accepts_json)
            self.option_problem(
                option,
                f"{option.written!r}: dotted keys only set fields of config-object flags "
                f"({', '.join(json_flags[:5])}, ...); {spec.name} is not one"
            )
        if explicit_value is not None:
            option.values.append(explicit_value)
        else:
            self.take_value(option, required=True)

    def take_value(self, option: _Option, *, required: bool) -> bool:
        if self.next_is_value():
            option.values.append(self.args[self.pos])
            self.pos += 1
            return True
        if required:
            self.option_problem(
                option,
                f"{option.written!r} needs a value; write it as the next list item or as "
                f"{option.written}=<value>"
            )
        return False

    def skip_values(self) -> None:
        while self.next_is_value():
            self.pos += 1

    def next_is_value(self) -> bool:
        if self.pos >= len(self.args):
            return False
        token = self.args[self.pos]
        return isinstance(token, str) and not _looks_like_option(token)

    def read_o_shorthand(self, token: str) -> None:
        catalog = flag_catalog()
        if token.startswith("-O."):
            self.read_option(_OPT_CONFIG_FLAG + token[2:])
            return
        if token == "-O":
            option = _Option(token, catalog[_OPT_LEVEL_FLAG], self.pos - 1)
            self.reading.options.append(option)
            if self.pos < len(self.args) and self.args[self.pos] in _BARE_O_LEVELS:
                option.values.append(self.args[self.pos])
                self.pos += 1
            else:
                self.option_problem(option, "'-O' needs a level: write -O0, -O1, -O2 or -O3")
            return
        level = token[3:] if token[2] == "=" else token[2:]
        self.reading.options.append(_Option("-O", catalog[_OPT_LEVEL_FLAG], self.pos - 1, [level]))

    # -- values ----------------------------------------------------------------------
    def check_values(self, option: _Option) -> None:
        spec = option.spec
        assert spec is not None
        if spec.name in _SECRET_FLAGS:
            return  # never echo a secret, not even to say it is malformed
        allowed = spec.choices or LATE_CHECKED_CHOICES.get(spec.name)
        for value in option.values:
            if allowed is not None and value not in allowed:
                self.option_problem(
                    option,
                    f"{option.written} {value!r} is not allowed: expected one of "
                    f"{_listing(allowed)}{_suggest_value(value, allowed)}",
                )
            elif allowed is None and not _value_fits_type(spec.value_type, value):
                expected = "JSON" if _is_json_type(spec.value_type) else spec.value_type
                self.option_problem(
                    option, f"{option.written} {value!r} is not a valid {expected} value"
                )


def _listing(allowed: Sequence[str], shown: int = 10) -> str:
    if len(allowed) <= shown:
        return ", ".join(allowed)
    return f"{', '.join(allowed[:shown])}, ... ({len(allowed)} in all)"


def _is_json_type(value_type: str) -> bool:
    return any(t in value_type for t in _JSON_TYPES)


def _suggest(name: str) -> str:
    guess = difflib.get_close_matches(name, _long_names(), n=1, cutoff=0.6)
    return f"; did you mean {guess[0]}?" if guess else ""


def _suggest_value(value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    same_letters = [a for a in allowed if a.lower() == value.lower()]
    guess = same_letters or difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def _value_fits_type(value_type: str, value: str) -> bool:
    optional = value_type.startswith("optional[")
    base = value_type.removeprefix("optional[").removesuffix("]") if optional else value_type
    if optional and value in ("", "None"):
        return True
    if base == "int":
        return _parses(int, value)
    if base == "float":
        return _parses(float, value)
    if base == "human_readable_int":
        return bool(_HUMAN_INT.match(value.strip()))
    if base == "human_readable_int_or_auto":
        return value in ("auto", "-1") or bool(_HUMAN_INT.match(value.strip()))
    if _is_json_type(base) and value.lstrip().startswith(("{", "[")):
        return _parses(json.loads, value)
    return True


def _parses(convert: Any, value: str) -> bool:
    try:
        convert(value)
    except ValueError:
        return False
    return True


# --- public checks -------------------------------------------------------------------


def check_flags(args: Sequence[str], *, source: str = "vllmExtraArgs") -> None:
    """Raise ConfigError listing every flag in `args` the pinned `vllm serve` would reject.

    `args` are options only (no model positional). Accepted: --flag value, --flag=value,
    underscores for dashes, --config-flag.key value, -O<n>, short aliases (-tp, -q...).
    Refused: unknown and removed flags, abbreviations, values outside a flag's choices,
    values of the wrong type, a value flag without its value, and stray positionals.
    """
    problems = _Reader(args, source).run().problems
    if problems:
        raise ConfigError(problems)


def flag_warnings(args: Sequence[str]) -> list[str]:
    """Accepted flags that do nothing or are deprecated in the pinned vLLM (for pulumi.log.warn)."""
    warnings = []
    for option in _Reader(args, "vllmExtraArgs").run().options:
        if option.spec is None:
            continue
        if option.spec.name in NO_EFFECT_FLAGS:
            warnings.append(f"{option.written}: {NO_EFFECT_FLAGS[option.spec.name]}")
        elif option.spec.deprecated:
            warnings.append(f"{option.written}: {option.spec.note}")
    return warnings


# --- building the command line -------------------------------------------------------


def serve_args(
    config: StackConfig,
    plan: SizingPlan,
    *,
    model_path: str,
    port: int = 8000,
    rope_theta: Optional[float] = None,
) -> list[str]:
    """The arguments after the image name (the image's entrypoint is `vllm serve`).

    `rope_theta` is the model's RoPE base frequency from its config.json; it is needed only
    when ropeScaling is set and does not carry rope_theta itself (see _hf_overrides).
    The API key is never an argument: it reaches vLLM as the VLLM_API_KEY environment
    variable, so it shows neither in `ps` nor in `docker inspect`'s Args.
    """
    if not model_path or model_path.startswith("-"):
        raise ValueError(f"model_path must be a path inside the container, got {model_path!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    gpus_used = plan.tensor_parallel_size * plan.pipeline_parallel_size
    if gpus_used > plan.instance.gpu_count:
        raise ValueError(
            f"the plan spans {gpus_used} GPUs but {plan.instance.name} has "
            f"{plan.instance.gpu_count}"
        )

    problems = _extra_arg_problems(config)
    managed = _managed_args(config, plan, port, rope_theta, problems)
    if problems:
        raise ConfigError(problems)
    internal = _Reader(managed, "sizing plan").run().problems
    if internal:  # the builder's own output must pass the same check as the user's
        raise ValueError("vllm_args built flags vLLM would reject:\n" + "\n".join(internal))
    return [model_path, *managed, *config.vllm_extra_args]


def _managed_args(
    config: StackConfig,
    plan: SizingPlan,
    port: int,
    rope_theta: Optional[float],
    problems: list[str],
) -> list[str]:
    args = [
        "--served-model-name", config.served_name,
        "--host", CONTAINER_HOST,
        "--port", str(port),
        "--dtype", plan.dtype,
        "--tensor-parallel-size", str(plan.tensor_parallel_size),
    ]
    if plan.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(plan.pipeline_parallel_size)]
    args += [
        "--max-model-len", str(plan.max_model_len),
        "--gpu-memory-utilization", repr(float(plan.gpu_memory_utilization)),
    ]
    if plan.max_num_seqs is not None:
        args += ["--max-num-seqs", str(plan.max_num_seqs)]
    # Only when the user chose it: otherwise vLLM's own per-GPU default applies, which
    # also grows to max_model_len for models that cannot chunk their prefill.
    if config.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(plan.max_num_batched_tokens)]
    if plan.quantization and plan.quantization != "none":
        args += ["--quantization", plan.quantization]
    if plan.checkpoint_quantization in DEPRECATED_QUANTIZATIONS:
        # vLLM 0.33 refuses to load these checkpoints without the opt-in.
        args += ["--allow-deprecated-quantization"]
    if plan.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", plan.kv_cache_dtype]
    if config.rope_scaling:
        overrides = _hf_overrides(config.rope_scaling, rope_theta, problems)
        if overrides is not None:
            args += ["--hf-overrides", overrides]
    return args


def _hf_overrides(
    rope_scaling: dict[str, Any], rope_theta: Optional[float], problems: list[str]
) -> Optional[str]:
    """The --hf-overrides JSON for ropeScaling, for both transformers 4 and 5 configs.

    vLLM applies it with `config.update(...)`. transformers 5 (what the 0.33 parser was
    built with) keeps every RoPE setting in one `rope_parameters` dict and treats
    `rope_scaling` as a deprecated alias that *replaces* that dict, dropping the model's
    rope_theta (checked with transformers 5.23.0 on a Qwen2 config: rope_theta became
    None). So `rope_parameters` is sent complete, rope_theta included, and after
    `rope_scaling`, which transformers 4 and vLLM's v4 path still read.
    No max_position_embeddings override: vLLM derives the context limit from
    original_max_position_embeddings x factor, and --max-model-len states the length
    actually served.
    """
    scaling = {k: v for k, v in rope_scaling.items() if k not in ("rope_theta", "type")}
    scaling.setdefault("rope_type", rope_scaling.get("type"))
    theta = rope_scaling.get("rope_theta", rope_theta)
    if theta is None:
        problems.append(
            f"{NAMESPACE}:ropeScaling needs rope_theta, the model's RoPE base frequency from "
            "its config.json (e.g. 1000000.0 for Qwen2.5): vLLM 0.33 with transformers 5 "
            "replaces the model's whole RoPE block with this object; add "
            '"rope_theta": <value> to ropeScaling'
        )
        return None
    overrides = {
        "rope_scaling": dict(sorted(scaling.items())),
        "rope_parameters": dict(sorted({**scaling, "rope_theta": theta}.items())),
    }
    # Compact and key-sorted inside each object: the string is a container input, so a
    # reordered YAML map must not look like a change that restarts the server.
    return json.dumps(overrides, separators=(",", ":"))


def _extra_arg_problems(config: StackConfig) -> list[str]:
    """Parse problems, plus flags this stack owns; for an owned flag only the latter is
    reported, since "write --max-model-len in full" is moot when it must go anyway."""
    reading = _Reader(config.vllm_extra_args, "vllmExtraArgs").run()
    where = f"{NAMESPACE}:vllmExtraArgs"
    found: list[tuple[int, str]] = []
    owned_options: set[int] = set()
    for option in reading.options:
        owned = _ownership_problems(option, config, where)
        if owned:
            found += [(option.position, message) for message in owned]
            owned_options.add(id(option))
    found += [
        (position, message)
        for position, option, message in reading.findings
        if option is None or id(option) not in owned_options
    ]
    return [message for _, message in sorted(found, key=lambda item: item[0])]


def _ownership_problems(option: _Option, config: StackConfig, where: str) -> list[str]:
    if option.spec is None:
        return []
    name = option.spec.name
    if name in _SECRET_FLAGS:
        key = _SECRET_FLAGS[name]
        return [
            f"{where}: {option.written} puts a secret on the command line (visible in ps "
            f"and docker inspect); remove it and set the {key} secret: "
            f"pulumi config set --secret {key} <value>"
        ]
    if name in _FIXED_FLAGS:
        return [f"{where}: {option.written} is managed by this stack: {_FIXED_FLAGS[name]}"]
    if name == "--hf-overrides":
        return _hf_override_problems(option, config, where)
    if name in _MANAGED:
        key = _MANAGED[name]
        return [
            f"{where}: {option.written} is set by this stack from the {key} config key; "
            f"remove it and use: pulumi config set {key} <value>"
        ]
    return []


def _hf_override_problems(option: _Option, config: StackConfig, where: str) -> list[str]:
    if config.rope_scaling:
        return [
            f"{where}: {option.written} cannot be combined with ropeScaling, which this stack "
            "passes as --hf-overrides; put rope settings (rope_theta included) in ropeScaling "
            "and drop this flag"
        ]
    touched = _override_keys(option)
    rope_keys = sorted(touched & {"rope_scaling", "rope_parameters"})
    if rope_keys:
        return [
            f"{where}: {option.written} sets {', '.join(rope_keys)}; use the ropeScaling config "
            "key instead, so the sizing knows the longer context"
        ]
    return []


def _override_keys(option: _Option) -> set[str]:
    if option.dotted_key:
        return {option.dotted_key.split(".")[0]}
    keys: set[str] = set()
    for value in option.values:
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            keys |= set(parsed)
    return keys
