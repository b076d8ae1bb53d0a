"""toolCalling / toolCallParser / reasoningParser: the vLLM 0.33 flags they stand for, chosen
from the family catalog (serving/catalog/tool_parsers.json), and their refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.validation import ConfigError, parse
from serving.container_paths import IMAGE_EXAMPLES_DIR
from serving.tool_calling import catalog, family_parsers, tool_hint
from serving.vllm_args import serve_args
from serving.vllm_flags import vllm_facts
from tests.serving.test_extra_args import MODEL_PATH, make_plan

QWEN = ("Qwen/Qwen2.5-7B-Instruct", "Qwen2ForCausalLM")
LLAMA = ("meta-llama/Llama-3.1-8B-Instruct", "LlamaForCausalLM")
QWEN3 = ("Qwen/Qwen3-8B", "Qwen3ForCausalLM")


def argv(model: tuple[str, str], **keys) -> list[str]:
    settings = parse({"model": model[0], "monitoring": False, **keys})
    return serve_args(settings, make_plan(model=model[0], architecture=model[1]), model_path=MODEL_PATH)


def refusals(model: tuple[str, str], **keys) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        argv(model, **keys)
    return caught.value.problems


def flag(args: list[str], name: str):
    return args[args.index(name) + 1] if name in args else None


def test_tool_calling_off_adds_no_parser_flags():
    args = argv(QWEN)
    assert "--enable-auto-tool-choice" not in args and "--tool-call-parser" not in args


def test_tool_calling_picks_the_familys_parser():
    args = argv(QWEN, toolCalling=True)
    assert "--enable-auto-tool-choice" in args and flag(args, "--tool-call-parser") == "hermes"
    assert "--chat-template" not in args  # Qwen2.5's own template has Hermes-style tools


def test_a_family_whose_docs_name_an_example_template_gets_it_from_the_image():
    args = argv(LLAMA, toolCalling=True)
    assert flag(args, "--tool-call-parser") == "llama3_json"
    assert flag(args, "--chat-template") == f"{IMAGE_EXAMPLES_DIR}/tool_chat_template_llama3.1_json.jinja"


def test_a_chat_template_in_vllm_extra_args_wins_over_the_familys():
    args = argv(LLAMA, toolCalling=True, vllmExtraArgs=["--chat-template", "/models/served/mine.jinja"])
    assert args.count("--chat-template") == 1 and flag(args, "--chat-template") == "/models/served/mine.jinja"


def test_an_explicit_parser_overrides_the_family_and_drops_its_template():
    args = argv(LLAMA, toolCalling=True, toolCallParser="pythonic")
    assert flag(args, "--tool-call-parser") == "pythonic" and "--chat-template" not in args


def test_a_model_without_a_known_parser_is_refused_naming_the_key_and_fix():
    [problem] = refusals(("some-org/custom-7b", "LlamaForCausalLM"), toolCalling=True)
    assert "toolCalling=true" in problem and "some-org/custom-7b" in problem
    assert "set toolCallParser" in problem and "toolCalling false" in problem
    # the fix works
    assert flag(argv(("some-org/custom-7b", "LlamaForCausalLM"), toolCalling=True, toolCallParser="hermes"),
                "--tool-call-parser") == "hermes"


def test_an_unregistered_parser_name_is_refused_with_a_guess():
    [problem] = refusals(QWEN3, toolCalling=True, toolCallParser="qwen3")  # P21: there is no qwen3 tool parser
    assert "toolCallParser='qwen3'" in problem and "not a parser vLLM 0.33" in problem
    assert "did you mean 'qwen3_" in problem


def test_a_parser_plugin_may_register_any_name():
    args = argv(QWEN, toolCalling=True, toolCallParser="mine",
                vllmExtraArgs=["--tool-parser-plugin", "/models/served/mine.py"])
    assert flag(args, "--tool-call-parser") == "mine"


def test_reasoning_parser_auto_and_explicit():
    assert flag(argv(QWEN3, reasoningParser="auto"), "--reasoning-parser") == "qwen3"
    assert flag(argv(QWEN, reasoningParser="deepseek_r1"), "--reasoning-parser") == "deepseek_r1"
    [problem] = refusals(QWEN, reasoningParser="auto")
    assert "reasoningParser=auto" in problem and "drop reasoningParser" in problem
    [problem] = refusals(QWEN, reasoningParser="deepseek-r1")
    assert "did you mean 'deepseek_r1'" in problem


def test_tool_and_reasoning_parsers_together():
    args = argv(QWEN3, toolCalling=True, reasoningParser="auto")
    assert flag(args, "--tool-call-parser") == "hermes" and flag(args, "--reasoning-parser") == "qwen3"


@pytest.mark.parametrize("keys, message", [
    ({"toolCallParser": "hermes"}, "toolCallParser='hermes' does nothing without toolCalling"),
    ({"toolCalling": True, "vllmExtraArgs": ["--tool-call-parser", "hermes"]}, "drop it from vllmExtraArgs"),
    ({"toolCalling": True, "vllmExtraArgs": ["--enable-auto-tool-choice"]}, "--enable-auto-tool-choice"),
    ({"reasoningParser": "qwen3", "vllmExtraArgs": ["--reasoning-parser=qwen3"]}, "reasoningParser sets"),
])
def test_keys_and_extra_args_that_disagree_are_refused(keys, message):
    with pytest.raises(ConfigError, match="toolCall|reasoningParser") as caught:
        parse({"model": QWEN[0], **keys})
    assert message in str(caught.value)


def test_every_catalog_parser_is_registered_in_the_pinned_vllm():
    facts = vllm_facts()
    for rule in catalog()["rules"]:
        assert rule["toolCallParser"] in facts["tool_parsers"] + [None], rule
        assert rule["reasoningParser"] in facts["reasoning_parsers"] + [None], rule
        assert rule["source"], rule


def test_rules_by_model_id_come_before_the_architecture_rules():
    assert family_parsers("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Qwen2ForCausalLM").tool_call_parser is None
    assert family_parsers("Qwen/Qwen3-Coder-30B-A3B-Instruct", "Qwen3MoeForCausalLM").tool_call_parser == "qwen3_xml"
    assert family_parsers("NousResearch/Hermes-3-Llama-3.1-8B", "LlamaForCausalLM").tool_call_parser == "hermes"


def test_a_hint_when_a_tool_capable_model_is_served_without_tool_calling():
    settings = parse({"model": QWEN[0]})
    hint = tool_hint(settings, make_plan(architecture=QWEN[1]))
    assert hint and "toolCalling true" in hint and '"auto" tool choice requires --enable-auto-tool-choice' in hint
    assert tool_hint(parse({"model": QWEN[0], "toolCalling": True}), make_plan(architecture=QWEN[1])) is None
    assert tool_hint(settings, make_plan(architecture="GPT2LMHeadModel")) is None
