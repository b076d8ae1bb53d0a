"""What vllmExtraArgs mean together, checked the way vLLM 0.33 checks them before it serves.

flag_reader judges each flag and value on its own, as the argparse parser does. This module
reads the parsed options as one set, the way the checks after the parser do:

* `validate_parsed_serve_args` (vllm/entrypoints/common/cli_args.py, run by
  `ServeSubcommand.validate`): --enable-auto-tool-choice needs --tool-call-parser,
  --enable-log-outputs needs --enable-log-requests, --enable-per-request-metrics refuses
  --disable-log-stats, --sse-keep-alive-interval >= 0, --reasoning-effort-map's keys, the chat
  template (`validate_chat_template`), --grpc-port only with the Rust frontend;
* `validate_api_server_args` (same file, run by `setup_server`): the tool-call and reasoning
  parser names against the registries (serving/vllm-facts.json), unless a plugin adds names;
* `StructuredOutputsConfig._validate_structured_output_config` (vllm/config/structured_outputs.py);
* what this deployment adds: files must be inside the container (serving.container_paths: the
  model directory, mounted read-only at the model path, and the image's examples directory),
  for every flag of the pinned vLLM that takes a path;
* the parallelism flags (serving.parallel_args): the GPUs they add up to, expert-parallel load
  balancing, and the multi-server modes this one-host stack does not run.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from config.constants import NAMESPACE
from config.images import PINNED_VLLM_VERSION
from config.settings import StackConfig
from serving.container_paths import ContainerPathError, check_container_path, model_mounts, path_flags
from serving.flag_reader import FlagReader, Option, Reading
from serving.parallel_args import parallel_problems
from serving.vllm_flags import NO_EFFECT_FLAGS, vllm_facts
from sizing.plan import SizingPlan

# vllm/renderers/chat_utils/chat_template.py: a value holding one of these is a template, not
# a path.
_JINJA_CHARS = "{}\n"

# vllm/entrypoints/common/cli_args.py init_parser_plugin: shorter plugin values are ignored.
_PLUGIN_MIN_LEN = 4

# --generation-config values that are not paths (vllm/config/model.py get_diff_sampling_param).
_GENERATION_CONFIG_WORDS = ("auto", "vllm")

@dataclass(frozen=True)
class _Context:
    config: StackConfig
    plan: SizingPlan
    model_path: str  # where the model directory is mounted in the container
    where: str = f"{NAMESPACE}:vllmExtraArgs"


class _Args:
    """The parsed options as argparse would leave them: the last occurrence of each wins."""

    def __init__(self, reading: Reading):
        self.last: dict[str, Option] = {}
        self.switches: dict[str, tuple[bool, Option]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        for option in reading.options:
            spec = option.spec
            if spec is None:
                continue
            if not spec.takes_value:
                name = spec.negation_of or spec.name
                self.switches[name] = (spec.negation_of is None, option)
            elif option.dotted_key and option.values:
                self.objects.setdefault(spec.name, {})[option.dotted_key] = _json_or_text(option.values[-1])
            elif option.values:
                self.last[spec.name] = option
                if spec.accepts_json and isinstance(parsed := _json_or_text(option.values[-1]), dict):
                    self.objects.setdefault(spec.name, {}).update(parsed)

    def value(self, flag: str) -> Optional[str]:
        option = self.last.get(flag)
        return option.values[-1] if option and option.values else None

    def on(self, flag: str) -> bool:
        return self.switches.get(flag, (False, None))[0]


def meaning_problems(reading: Reading, config: StackConfig, plan: SizingPlan, model_path: str) -> list[str]:
    """Every problem of what the options mean together, each naming the flag, value and fix."""
    args = _Args(reading)
    context = _Context(config, plan, model_path)
    problems: list[str] = []
    for check in (_parsers, _dependencies, _structured_outputs, _speculative, _paths):
        problems += check(args, context)
    return problems + parallel_problems(args, plan, context.where)


def meaning_warnings(reading: Reading) -> list[str]:
    """Accepted combinations that do nothing (for pulumi.log.warn)."""
    args = _Args(reading)
    if args.value("--tool-call-parser") not in (None, "", "None") and not args.on("--enable-auto-tool-choice"):
        return [
            "--tool-call-parser does nothing without --enable-auto-tool-choice (vLLM 0.33 reads "
            "tool calls only then); add --enable-auto-tool-choice to parse them"
        ]
    return []


def flag_warnings(args: Sequence[str]) -> list[str]:
    """Accepted flags that do nothing or are deprecated in the pinned vLLM (for pulumi.log.warn)."""
    warnings = []
    reading = FlagReader(args, "vllmExtraArgs").run()
    for option in reading.options:
        if option.spec is None:
            continue
        if option.spec.name in NO_EFFECT_FLAGS:
            warnings.append(f"{option.written}: {NO_EFFECT_FLAGS[option.spec.name]}")
        elif option.spec.deprecated:
            warnings.append(f"{option.written}: {option.spec.note}")
    return warnings + meaning_warnings(reading)


def _parsers(args: _Args, ctx: _Context) -> list[str]:
    facts = vllm_facts()
    problems = []
    tool = args.value("--tool-call-parser")
    plugin = args.value("--tool-parser-plugin") or ""
    # vLLM resolves the tool-call parser only with --enable-auto-tool-choice
    # (vllm/parser/parser_manager.py ParserManager.get_tool_parser); without it the name is unused.
    if (
        args.on("--enable-auto-tool-choice")
        and tool not in (None, "", "None")
        and len(plugin) < _PLUGIN_MIN_LEN
        and tool not in facts["tool_parsers"]
    ):
        problems.append(_unregistered(ctx, "--tool-call-parser", tool, facts["tool_parsers"], "--tool-parser-plugin"))
    reasoning = args.value("--reasoning-parser")
    nested = args.objects.get("--structured-outputs-config", {}).get("reasoning_parser")
    plugin = args.value("--reasoning-parser-plugin") or ""
    for flag, name in (("--reasoning-parser", reasoning), ("--structured-outputs-config.reasoning_parser", nested)):
        if not isinstance(name, str) or name.lower() in ("", "none") or len(plugin) >= _PLUGIN_MIN_LEN:
            continue
        if name not in facts["reasoning_parsers"]:
            problems.append(_unregistered(ctx, flag, name, facts["reasoning_parsers"], "--reasoning-parser-plugin"))
    return problems


def _unregistered(ctx: _Context, flag: str, name: str, registered: list[str], plugin: str) -> str:
    guess = difflib.get_close_matches(name.replace("-", "_"), registered, n=1, cutoff=0.5)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return (
        f"{ctx.where}: {flag} {name!r} is not a parser registered in vLLM {PINNED_VLLM_VERSION}, "
        f"which stops at startup; {hint}registered: {', '.join(registered)} (or load your own "
        f"with {plugin} <a .py file under {ctx.model_path}>)"
    )


def _dependencies(args: _Args, ctx: _Context) -> list[str]:
    problems = []
    if args.on("--enable-auto-tool-choice") and args.value("--tool-call-parser") in (None, "", "None"):
        problems.append(
            f"{ctx.where}: --enable-auto-tool-choice needs --tool-call-parser (vLLM "
            f"{PINNED_VLLM_VERSION} stops: \"--enable-auto-tool-choice requires --tool-call-parser\"); "
            "add --tool-call-parser <name> for the model's tool-call format, e.g. hermes for Qwen2.5"
        )
    if args.on("--enable-log-outputs") and not args.on("--enable-log-requests"):
        problems.append(
            f"{ctx.where}: --enable-log-outputs needs --enable-log-requests (vLLM stops without "
            "it); add --enable-log-requests or drop --enable-log-outputs"
        )
    if args.on("--enable-per-request-metrics") and args.on("--disable-log-stats"):
        problems.append(
            f"{ctx.where}: --enable-per-request-metrics needs engine statistics, which "
            "--disable-log-stats turns off; drop one of them"
        )
    interval = args.value("--sse-keep-alive-interval")
    if interval is not None and interval.lstrip("-").isdigit() and int(interval) < 0:
        problems.append(
            f"{ctx.where}: --sse-keep-alive-interval {interval} must be 0 (off) or a positive "
            "number of seconds"
        )
    if args.value("--grpc-port") is not None:
        problems.append(
            f"{ctx.where}: --grpc-port {args.value('--grpc-port')} needs vLLM's Rust frontend "
            "(VLLM_USE_RUST_FRONTEND=1), which this stack does not run; drop it (the API is "
            "served over HTTPS by the proxy)"
        )
    problems += _effort_map(args, ctx)
    problems += _scheduler(args, ctx)
    return problems


def _scheduler(args: _Args, ctx: _Context) -> list[str]:
    """vllm/config/scheduler.py SchedulerConfig.verify_max_model_len, for the extra flags."""
    problems = []
    threshold = _int_or_none(args.value("--long-prefill-token-threshold"))
    if threshold is not None and threshold > ctx.plan.max_model_len:
        problems.append(
            f"{ctx.where}: --long-prefill-token-threshold {threshold} is above the served "
            f"maxModelLen {ctx.plan.max_model_len}, which vLLM refuses; set it to "
            f"{ctx.plan.max_model_len} or less"
        )
    active = _int_or_none(args.value("--max-num-active-seqs"))
    seqs = ctx.plan.effective_max_num_seqs
    if active is not None and seqs is not None and active > seqs:
        problems.append(
            f"{ctx.where}: --max-num-active-seqs {active} is above max_num_seqs {seqs} (the "
            f"maxNumSeqs key, or vLLM's default on {ctx.plan.instance.gpu_model}), which vLLM "
            f"refuses; set it to {seqs} or less, or raise maxNumSeqs"
        )
    return problems


def _int_or_none(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _effort_map(args: _Args, ctx: _Context) -> list[str]:
    raw = args.value("--reasoning-effort-map")
    if raw in (None, "", "None"):
        return []
    efforts = vllm_facts()["reasoning_efforts"]
    mapping = _json_or_text(raw)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        return [
            f"{ctx.where}: --reasoning-effort-map {raw!r} must be a JSON object mapping reasoning "
            f"efforts to strings, e.g. '{{\"high\": \"think hard\"}}'"
        ]
    unknown = sorted(set(mapping) - set(efforts))
    if unknown:
        return [
            f"{ctx.where}: --reasoning-effort-map has unknown efforts {unknown}; keys must be one "
            f"of {', '.join(efforts)}"
        ]
    return []


def _structured_outputs(args: _Args, ctx: _Context) -> list[str]:
    merged = args.objects.get("--structured-outputs-config", {})
    backend = merged.get("backend", "auto")
    problems = []
    if merged.get("disable_any_whitespace") is True and backend not in ("xgrammar", "guidance"):
        problems.append(
            f"{ctx.where}: --structured-outputs-config disable_any_whitespace works only with "
            f"backend xgrammar or guidance (backend is {backend!r}); set "
            "--structured-outputs-config.backend xgrammar"
        )
    if merged.get("disable_additional_properties") is True and backend != "guidance":
        problems.append(
            f"{ctx.where}: --structured-outputs-config disable_additional_properties works only "
            f"with backend guidance (backend is {backend!r}); set "
            "--structured-outputs-config.backend guidance"
        )
    return problems


# vllm/config/speculative.py SpeculativeConfig.__post_init__: the methods that need no draft
# "model" besides the MTP ones (serving/vllm-facts.json speculative_mtp_methods).
_DRAFTLESS_METHODS = ("dspark", "ngram", "[ngram]", "ngram_gpu", "suffix", "extract_hidden_states")


def _speculative(args: _Args, ctx: _Context) -> list[str]:
    """SpeculativeConfig.__post_init__: a method that drafts with a model of its own needs
    "model"; that model is a directory the offline container must see."""
    spec = args.objects.get("--speculative-config")
    if not spec:
        return []
    model, method = spec.get("model"), spec.get("method")
    custom = isinstance(model, str) and all(p.isidentifier() for p in model.split(".")) and "." in model
    if method is None:
        method = "custom_class" if custom else "ngram" if model in ("ngram", "[ngram]") else "draft_model"
    draftless = _DRAFTLESS_METHODS + tuple(vllm_facts()["speculative_mtp_methods"])
    flag = "--speculative-config"
    if model is None and spec.get("num_speculative_tokens") is not None and method not in draftless:
        return [
            f"{ctx.where}: {flag} method {method!r} drafts with a model of its own and names none "
            '(vLLM stops: "num_speculative_tokens was provided but without speculative model"); '
            f'add "model": "{ctx.model_path}/<draft directory>" (a local model directory holding '
            f"it), or use a method that needs none: {', '.join(draftless[:6])}, or an MTP method"
        ]
    if isinstance(model, str) and method not in ("ngram", "custom_class") and model not in ("ngram", "[ngram]"):
        problem = _path_problem(f"{flag} model", "directory", model, ctx)
        if problem and not model.startswith(("/", "./", "~")):
            # A hub id: the speculativeModel key downloads it and passes its container path.
            tokens = spec.get("num_speculative_tokens")
            problem = (
                f"{ctx.where}: {flag} names the draft {model!r}, which the offline container cannot "
                f"download; use the key that downloads and mounts it: {NAMESPACE}:speculativeModel: "
                f"{{model: {model}, numSpeculativeTokens: {tokens if tokens is not None else 4}}} "
                f"(and drop {flag} from vllmExtraArgs)"
            )
        return [problem] if problem else []
    return []


def _paths(args: _Args, ctx: _Context) -> list[str]:
    """Every flag of the pinned vLLM that takes a path (serving.container_paths.path_flags,
    generated from vLLM's own help text), when vllmExtraArgs sets it."""
    problems = []
    for flag, spec in path_flags().items():
        value = args.value(flag)
        if value is None or value in ("", "None"):
            continue
        problem = _path_problem(flag, spec.kind, value, ctx, written=spec.written)
        if problem:
            problems.append(problem)
    return problems


def _path_problem(flag: str, kind: str, value: str, ctx: _Context, written: bool = False) -> Optional[str]:
    """vLLM's values that are not paths pass; a path must be under one of the container's
    mounts (serving.container_paths), and a file in the model directory of a local model must
    exist here."""
    if flag == "--chat-template" and (
        any(c in value for c in _JINJA_CHARS) or value in vllm_facts()["builtin_chat_templates"]
    ):
        return None  # an inline template, or one vLLM ships (resolved by name)
    if flag.endswith("-plugin") and len(value) < _PLUGIN_MIN_LEN:
        return None
    if flag == "--generation-config" and value in _GENERATION_CONFIG_WORDS:
        return None
    mounts = model_mounts(ctx.model_path)
    try:
        path = check_container_path(flag, value, mounts, kind, written)  # type: ignore[arg-type]
    except ContainerPathError as exc:
        inline = " (or pass the template itself: text with {{ }})" if flag == "--chat-template" else ""
        return f"{ctx.where}: {exc}{inline}"
    mount = mounts[0].path
    if mounts[0].holds(path):
        return _missing_in_local_model(flag, value, path[len(mount):].lstrip("/"), ctx)
    return None


def _missing_in_local_model(flag: str, value: str, relative: str, ctx: _Context) -> Optional[str]:
    if not ctx.config.is_local_model or not relative:
        return None  # a hub model's files are only known after the download
    local = Path(ctx.config.model).expanduser() / relative
    if local.exists():
        return None
    return (
        f"{ctx.where}: {flag} {value!r} points into the model directory, but {local} does not "
        f"exist on this machine, so it will not be in the container; add it to {ctx.config.model}"
    )


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
