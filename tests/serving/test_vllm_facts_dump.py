"""tools/dump_vllm_facts.py reads the facts out of a vLLM source tree (here a small one shaped
like vLLM 0.33.0's), so re-pinning regenerates serving/vllm-facts.json instead of editing it."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def dump():
    spec = importlib.util.spec_from_file_location("dump_vllm_facts", REPO / "tools" / "dump_vllm_facts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    write(tmp_path, "vllm/tool_parsers/__init__.py", """
        _TOOL_PARSERS_TO_REGISTER = {"hermes": ("hermes_tool_parser", "H"), "mistral": ("m", "M")}
    """)
    write(tmp_path, "vllm/reasoning/__init__.py", """
        _REASONING_PARSERS_TO_REGISTER = {"qwen3": ("q", "Q"), "deepseek_r1": ("d", "D")}
    """)
    write(tmp_path, "vllm/renderers/params.py", """
        from typing import Literal
        ReasoningEffort = Literal["low", "high"]
    """)
    write(tmp_path, "vllm/config/structured_outputs.py", """
        from typing import Literal
        from vllm.config.utils import config
        Backend = Literal["auto", "xgrammar"]

        @config
        class StructuredOutputsConfig:
            backend: Backend = "auto"
            disable_any_whitespace: bool = False
            level: Literal[1, 2] | None = None
    """)
    write(tmp_path, "vllm/config/vllm.py", """
        from vllm.config.structured_outputs import StructuredOutputsConfig

        @config
        class VllmConfig:
            structured_outputs_config: StructuredOutputsConfig = None
    """)
    write(tmp_path, "vllm/config/speculative.py", """
        from typing import Literal
        MTPModelTypes = Literal["deepseek_mtp", "mtp"]
    """)
    write(tmp_path, "vllm/transformers_utils/chat_templates/template_chatml.jinja", "{{ x }}")
    return tmp_path


def test_registries_templates_and_config_fields_are_read(dump, tree):
    facts = dump.facts(tree)
    assert facts["tool_parsers"] == ["hermes", "mistral"]
    assert facts["reasoning_parsers"] == ["deepseek_r1", "qwen3"]
    assert facts["reasoning_efforts"] == ["low", "high"]
    assert facts["builtin_chat_templates"] == ["template_chatml.jinja"]
    assert facts["speculative_mtp_methods"] == ["deepseek_mtp", "mtp"]
    structured = facts["config_objects"]["--structured-outputs-config"]
    assert structured["class"] == "StructuredOutputsConfig"
    assert structured["fields"] == {
        "backend": ["auto", "xgrammar"], "disable_any_whitespace": None, "level": [1, 2],
    }


def test_the_committed_facts_name_their_origin():
    import json

    facts = json.loads((REPO / "serving" / "vllm-facts.json").read_text())
    assert "vllm-0.33.0" in facts["_about"]
