"""Stack keys of one concern: tool calling and reasoning output (vLLM's tool-call and reasoning
parsers).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference. The parser names are checked
against the pinned vLLM's registries, and the model's family against the catalog
(serving/catalog/tool_parsers.json), at preview by serving.tool_calling: both need the sizing's
reading of the model's config.json.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from config.constants import NAMESPACE
from config.keys_base import Keys

# vllmExtraArgs flags the tool keys set, when they are on (spellings as the flag catalog's).
TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser")
REASONING_FLAGS = ("--reasoning-parser",)


class ToolKeys(Keys):
    """Tool calling (OpenAI `tools` with tool_choice "auto") and reasoning output."""

    # --- tool calling and reasoning ---------------------------------------------------
    tool_calling: bool = Field(
        False,
        description="Serve tool calls (tool_choice \"auto\"): --enable-auto-tool-choice with the "
        "tool-call parser (and chat template) vLLM documents for the model's family; the "
        "readiness check then makes one tool call.",
    )
    tool_call_parser: Optional[str] = Field(
        None,
        description="With toolCalling: the --tool-call-parser name to use instead of the "
        "family's (one vLLM 0.33 registers, e.g. hermes, llama3_json, mistral).",
        json_schema_extra={"x-default": "derived: the model family's parser"},
    )
    reasoning_parser: Optional[str] = Field(
        None,
        description="--reasoning-parser: auto for the model family's, or a name vLLM 0.33 "
        "registers (e.g. qwen3, deepseek_r1); the reasoning then comes back apart from the answer.",
        json_schema_extra={"x-default": "off"},
    )

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not value or value.startswith("-") or any(c.isspace() for c in value)):
            raise ValueError(f"{value!r} is not a parser name; write one name, e.g. hermes")
        return value

    def tool_key_problems(self) -> list[str]:
        """The tool keys' combinations that cannot work, one message each (StackConfig reports
        them with every other cross-key problem at once)."""
        problems = []
        if self.tool_call_parser is not None and not self.tool_calling:
            problems.append(
                f"{NAMESPACE}:toolCallParser={self.tool_call_parser!r} does nothing without toolCalling: "
                f"set {NAMESPACE}:toolCalling true (or drop toolCallParser)"
            )
        extra = list(getattr(self, "vllm_extra_args", []) or [])
        owned = (TOOL_FLAGS if self.tool_calling else ()) + (REASONING_FLAGS if self.reasoning_parser else ())
        for arg in extra:
            name = arg.split("=", 1)[0].replace("_", "-")
            if name in owned:
                key = "toolCalling/toolCallParser" if name in TOOL_FLAGS else "reasoningParser"
                problems.append(
                    f"{NAMESPACE}:vllmExtraArgs has {name}, which {key} sets; drop it from vllmExtraArgs "
                    f"(to choose the parser, set {'toolCallParser' if name in TOOL_FLAGS else 'reasoningParser'})"
                )
        return problems
