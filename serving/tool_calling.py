"""Tool calling and reasoning output: the `vllm serve` flags the toolCalling, toolCallParser and
reasoningParser keys stand for, chosen for the model's family.

vLLM 0.33 answers a request with tools and tool_choice "auto" only when it runs with
--enable-auto-tool-choice and a --tool-call-parser matching the format the model writes its
calls in; otherwise the request gets 400 `"auto" tool choice requires --enable-auto-tool-choice
and --tool-call-parser to be set` (vllm/renderers/online_renderer.py; mcp-assist#21,
vllm-project/vllm#17792). A parser that does not match the model's format returns the calls as
plain text (vllm-project/vllm#17161, #26561; shared reference fleet-pitfalls.md P21).

The family -> parser table is data: serving/catalog/tool_parsers.json (with its sources). A
rule matches on the model id (a pattern) and config.json's architectures[0], which the sizing
read (SizingPlan.architecture). Parser names are checked against the pinned registries
(serving/vllm-facts.json, from the vLLM 0.33.0 wheel), and a chat template from the image's
examples goes through serving.container_paths like any other path.

Reasoning (my call, documented in the README): one key, `reasoningParser`, "auto" for the
family's parser or a registered name; off by default, because a reasoning parser moves the
model's thinking out of `content` into `reasoning_content`, which changes what clients read.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from config.constants import NAMESPACE
from config.images import PINNED_VLLM_VERSION
from config.settings import StackConfig
from serving.container_paths import IMAGE_EXAMPLES_DIR, check_container_path, model_mounts
from serving.vllm_flags import vllm_facts
from sizing.plan import SizingPlan

CATALOG_FILE = Path(__file__).parent / "catalog" / "tool_parsers.json"

AUTO = "auto"

# vllm/entrypoints/common/cli_args.py init_parser_plugin: a plugin value this short is ignored.
_PLUGIN_MIN_LEN = 4


@dataclass(frozen=True)
class FamilyParsers:
    """What vLLM documents for one model family: the parsers and the chat template (a path in
    the container, under the image's examples directory), with the source."""

    family: str
    tool_call_parser: Optional[str]
    chat_template: Optional[str]
    reasoning_parser: Optional[str]
    source: str


@functools.cache
def catalog() -> dict:
    """serving/catalog/tool_parsers.json: {"rules": [...], "sources": {...}, ...}."""
    return json.loads(CATALOG_FILE.read_text(encoding="utf-8"))


def family_parsers(model_id: str, architecture: str) -> Optional[FamilyParsers]:
    """The first catalog rule whose model pattern (searched in the id, any case) and
    architectures both match; None when the catalog knows no such family."""
    for rule in catalog()["rules"]:
        pattern = rule.get("model")
        if pattern and not re.search(pattern, model_id, re.IGNORECASE):
            continue
        if "architectures" in rule and architecture not in rule["architectures"]:
            continue
        template = rule.get("chatTemplate")
        return FamilyParsers(
            family=rule["family"],
            tool_call_parser=rule.get("toolCallParser"),
            chat_template=f"{IMAGE_EXAMPLES_DIR}/{template}" if template else None,
            reasoning_parser=rule.get("reasoningParser"),
            source=rule["source"],
        )
    return None


def parser_args(config: StackConfig, plan: SizingPlan, model_path: str) -> tuple[list[str], list[str]]:
    """(the flags the tool and reasoning keys stand for, every problem with them). Each problem
    names the key, the bad value and a fix."""
    family = family_parsers(config.model, plan.architecture)
    args: list[str] = []
    problems: list[str] = []
    if config.tool_calling:
        tool, tool_problems = _tool_args(config, plan, family, model_path)
        args += tool
        problems += tool_problems
    if config.reasoning_parser:
        name = config.reasoning_parser
        if name == AUTO:
            name = family.reasoning_parser if family else None
            if name is None:
                problems.append(
                    f"{NAMESPACE}:reasoningParser=auto: the catalog has no reasoning parser for "
                    f"{_what(config, plan, family)} (serving/catalog/tool_parsers.json); set "
                    f"reasoningParser to one vLLM {PINNED_VLLM_VERSION} registers for its format "
                    f"({', '.join(vllm_facts()['reasoning_parsers'][:8])}, ...), or drop reasoningParser"
                )
        elif not _plugin(config, "--reasoning-parser-plugin"):
            problems += _registered("reasoningParser", name, vllm_facts()["reasoning_parsers"])
        if name is not None:
            args += ["--reasoning-parser", name]
    return args, problems


def _tool_args(
    config: StackConfig, plan: SizingPlan, family: Optional[FamilyParsers], model_path: str
) -> tuple[list[str], list[str]]:
    parser = config.tool_call_parser or (family.tool_call_parser if family else None)
    if parser is None:
        return [], [
            f"{NAMESPACE}:toolCalling=true: the catalog has no tool-call parser for "
            f"{_what(config, plan, family)} (serving/catalog/tool_parsers.json, from vLLM "
            f"{PINNED_VLLM_VERSION}'s tool-calling docs); set toolCallParser to the parser for the "
            "format the model writes its calls in (e.g. hermes for <tool_call>{...}</tool_call>, "
            "llama3_json, mistral, pythonic), or set toolCalling false"
        ]
    problems = []
    if config.tool_call_parser and not _plugin(config, "--tool-parser-plugin"):
        problems += _registered("toolCallParser", parser, vllm_facts()["tool_parsers"])
    args = ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    # The family's template goes with the family's parser, unless vllmExtraArgs brings one.
    template = family.chat_template if family and parser == family.tool_call_parser else None
    if template and not _sets(config, "--chat-template"):
        check_container_path("--chat-template", template, model_mounts(model_path))
        args += ["--chat-template", template]
    return args, problems


def _what(config: StackConfig, plan: SizingPlan, family: Optional[FamilyParsers]) -> str:
    arch = plan.architecture or "an unknown architecture"
    return f"{config.model} ({family.family if family else arch})"


def _registered(key: str, name: str, registered: list[str]) -> list[str]:
    if name in registered:
        return []
    guess = difflib.get_close_matches(name.replace("-", "_"), registered, n=1, cutoff=0.5)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return [
        f"{NAMESPACE}:{key}={name!r} is not a parser vLLM {PINNED_VLLM_VERSION} registers, so it "
        f"would stop at startup; {hint}registered: {', '.join(registered)}"
    ]


def _sets(config: StackConfig, flag: str) -> bool:
    return any(a.split("=", 1)[0].replace("_", "-") == flag for a in config.vllm_extra_args)


def _plugin(config: StackConfig, flag: str) -> bool:
    """vllmExtraArgs loads a parser plugin, which may register any name (checked at start)."""
    args = config.vllm_extra_args
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return len(arg.split("=", 1)[1]) >= _PLUGIN_MIN_LEN
        if arg == flag and index + 1 < len(args):
            return len(args[index + 1]) >= _PLUGIN_MIN_LEN
    return False


def tool_hint(config: StackConfig, plan: SizingPlan) -> Optional[str]:
    """A warning when the model has a tool-call format vLLM parses and nothing turns tool
    calling on: agent clients would get 400 on tool_choice "auto"."""
    if config.tool_calling or _sets(config, "--enable-auto-tool-choice"):
        return None
    family = family_parsers(config.model, plan.architecture)
    if family is None or family.tool_call_parser is None:
        return None
    return (
        f"{config.model} ({family.family}) writes tool calls vLLM {PINNED_VLLM_VERSION} parses "
        f"(--tool-call-parser {family.tool_call_parser}), but tool calling is off: a request with "
        "tools and tool_choice \"auto\" gets 400 ('\"auto\" tool choice requires "
        "--enable-auto-tool-choice and --tool-call-parser to be set'). To serve agent clients, "
        f"set {NAMESPACE}:toolCalling true"
    )
