"""vllmExtraArgs judged by value type and meaning, as vLLM 0.33 judges them before it serves."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from typing import Any

import pytest

from config.validation import ConfigError, parse
from serving.flag_reader import check_flags
from serving.vllm_args import serve_args
from serving.vllm_flags import flag_catalog, vllm_facts
from sizing.gpus import GpuInstance
from sizing.plan import MemoryBreakdown, SizingPlan

MODEL_PATH = "/models/served"
L4 = GpuInstance("g6.xlarge", "NVIDIA L4", 1, 22.0, 8.9, 4, 16.0, 0.805, "x86_64")


def make_plan(**changes: Any) -> SizingPlan:
    base = SizingPlan(
        model="Qwen/Qwen2.5-7B-Instruct", instance=L4, tensor_parallel_size=1,
        dtype="bfloat16", quantization=None, kv_cache_dtype="auto",
        max_model_len=8192, max_num_seqs=None, max_num_batched_tokens=2048,
        gpu_memory_utilization=0.92, memory=MemoryBreakdown(14.2, 1.0, 1.5, 0.8, 0.8, 20.2),
        kv_cache_capacity_tokens=50_000, root_volume_gb=120, model_volume_gb=30,
        weights_on_disk_gb=15.2, hourly_price_usd=0.805,
    )
    return replace(base, **changes)


def problems(extra: list[str], model: str = "Qwen/Qwen2.5-7B-Instruct", **plan_changes) -> list[str]:
    # monitoring off: these are vLLM's own rules; the monitoring stack's needs (metrics kept
    # on) are tested in tests/serving/test_vllm_args.py.
    settings = parse({"model": model, "vllmExtraArgs": extra, "monitoring": False})
    try:
        serve_args(settings, make_plan(**plan_changes), model_path=MODEL_PATH)
    except ConfigError as exc:
        return exc.problems
    return []


def only(extra: list[str], **kwargs) -> str:
    found = problems(extra, **kwargs)
    assert len(found) == 1, found
    assert found[0].startswith("vllm-deploy:vllmExtraArgs:")
    return found[0]


def suggested_args(problem: str, flag: str) -> list[str]:
    """The `flag '<value>'` a refusal proposes, as argv items."""
    tail = problem[problem.rindex(f"{flag} '"):]
    return shlex.split(tail)[:2]


# --- JSON-typed flags ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--limit-mm-per-prompt", "image=4"], "--limit-mm-per-prompt"),
        (["--limit-mm-per-prompt", "image=4,video=1"], "--limit-mm-per-prompt"),
        (["--speculative-config", "ngram"], "--speculative-config"),
        (["--mm-processor-kwargs", "num_crops=4"], "--mm-processor-kwargs"),
        (["--override-generation-config", "temperature=0.5"], "--override-generation-config"),
        (["--default-chat-template-kwargs", "enable_thinking=false"], "--default-chat-template-kwargs"),
    ],
)
def test_non_json_values_of_json_flags_are_refused_with_a_fix_that_parses(extra, flag):
    problem = only(extra)
    assert repr(extra[1]) in problem and "is not JSON" in problem
    fixed = suggested_args(problem, flag)
    assert isinstance(json.loads(fixed[1]), dict)
    check_flags(fixed)  # the proposed value passes the same check


@pytest.mark.parametrize(
    "extra",
    [
        ["--limit-mm-per-prompt", '{"image": 4}'],
        ["--limit-mm-per-prompt.image", "4"],
        ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}'],
        ["--speculative-config", "None"],
        ["--kv-transfer-config", "None"],
        ["--compilation-config", '{"mode": 3, "max_cudagraph_capture_size": 256}'],
        ["--compilation-config.cudagraph_mode", "PIECEWISE"],
        ["-cc.max_cudagraph_capture_size", "1k"],
        ["--structured-outputs-config", '{"backend": "guidance", "disable_additional_properties": true}'],
        ["--hf-overrides", '{"architectures": ["Qwen2ForCausalLM"]}'],
        ["--pt-load-map-location", "cuda:0"],
    ],
)
def test_json_values_vllm_parses_are_accepted(extra):
    assert problems(extra) == []


@pytest.mark.parametrize("value", ["abc", "{bad"])
def test_dict_only_union_flags_refuse_plain_strings(value):
    assert "is not a JSON object" in only(["--hf-overrides", value])


@pytest.mark.parametrize(
    "extra, wrong, guess",
    [
        (["--structured-outputs-config.backend", "xgrammer"], "'xgrammer'", "'xgrammar'"),
        (["--structured-outputs-config", '{"backend": "outline"}'], "'outline'", "'outlines'"),
        (["--logging-config.log_level", "info"], "'info'", "'INFO'"),
        (["--kv-events-config.publisher", "zmq2"], "'zmq2'", "'zmq'"),
    ],
)
def test_config_object_values_outside_their_choices_get_did_you_mean(extra, wrong, guess):
    problem = only(extra)
    assert wrong in problem and "is not allowed" in problem and f"did you mean {guess}" in problem


def test_unknown_config_object_fields_are_refused():
    problem = only(["--compilation-config.cuda_graph_mode", "FULL"])
    assert "'cuda_graph_mode' is not a field of --compilation-config" in problem
    assert "did you mean 'cudagraph_mode'" in problem


def test_config_object_facts_cover_every_parse_dataclass_flag_of_the_dump():
    dataclass_flags = {s.name for s in flag_catalog().values() if "parse_dataclass" in s.value_type}
    assert dataclass_flags == set(vllm_facts()["config_objects"])


# --- parser registries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, guess",
    [
        (["--enable-auto-tool-choice", "--tool-call-parser", "hermes2"], "'hermes'"),
        (["--enable-auto-tool-choice", "--tool-call-parser", "llama3-json"], "'llama3_json'"),
        (["--reasoning-parser", "deepseek-r1"], "'deepseek_r1'"),
        (["--structured-outputs-config.reasoning_parser", "qwen"], "'qwen3'"),
    ],
)
def test_unregistered_parser_names_are_refused(extra, guess):
    problem = only(extra)
    assert "is not a parser registered in vLLM 0.33.0" in problem and f"did you mean {guess}" in problem


@pytest.mark.parametrize(
    "extra",
    [
        ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        ["--reasoning-parser", "deepseek_r1"],
        ["--reasoning-parser", "None"],
        ["--tool-call-parser", "mine", "--tool-parser-plugin", "/models/served/my_parser.py"],
    ],
)
def test_registered_parsers_and_plugins_are_accepted(extra):
    assert problems(extra) == []


def test_a_tool_parser_without_auto_tool_choice_is_unused_and_warned_about():
    from serving.extra_args import flag_warnings

    assert problems(["--tool-call-parser", "hermes2"]) == []  # vLLM never resolves it
    assert "--enable-auto-tool-choice" in flag_warnings(["--tool-call-parser", "hermes"])[0]


def test_the_parser_registries_hold_the_well_known_names():
    facts = vllm_facts()
    assert {"hermes", "mistral", "llama3_json", "openai"} <= set(facts["tool_parsers"])
    assert {"deepseek_r1", "qwen3", "openai_gptoss"} <= set(facts["reasoning_parsers"])


# --- flags that need each other --------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needs",
    [
        (["--enable-auto-tool-choice"], "--tool-call-parser"),
        (["--enable-log-outputs"], "--enable-log-requests"),
        (["--enable-per-request-metrics", "--disable-log-stats"], "--disable-log-stats"),
        (["--sse-keep-alive-interval", "-5"], "0 (off)"),
        (["--grpc-port", "50051"], "Rust frontend"),
        (["--reasoning-effort-map", '{"huge": "x"}'], "unknown efforts"),
        (["--structured-outputs-config.disable_any_whitespace", "true"], "xgrammar or guidance"),
    ],
)
def test_flags_that_need_another_are_refused_naming_it(extra, needs):
    assert needs in only(extra)


@pytest.mark.parametrize(
    "extra, fix",
    [
        (["--long-prefill-token-threshold", "9000"], "8192 or less"),  # the plan serves 8192
        (["--max-num-active-seqs", "300"], "256 or less"),  # vLLM's default max_num_seqs on L4
    ],
)
def test_scheduler_limits_beyond_the_plan_are_refused(extra, fix):
    assert fix in only(extra, effective_max_num_seqs=256)


def test_scheduler_limits_within_the_plan_are_accepted():
    assert problems(["--long-prefill-token-threshold", "4096", "--max-num-active-seqs", "128"],
                    effective_max_num_seqs=256) == []


@pytest.mark.parametrize("key", ["max_position_embeddings", "model_max_length", "seq_length"])
def test_hf_overrides_that_change_the_context_length_go_through_the_config_keys(key):
    problem = only(["--hf-overrides", json.dumps({key: 65536})])
    assert key in problem and "maxModelLen" in problem


def test_optimization_levels_are_vllms_four():
    with pytest.raises(ConfigError):
        check_flags(["--optimization-level", "5"])
    with pytest.raises(ConfigError):
        check_flags(["-Odecode"])
    check_flags(["--optimization-level", "0", "-O3"])


def test_auto_tool_choice_turned_off_again_needs_nothing():
    assert problems(["--enable-auto-tool-choice", "--no-enable-auto-tool-choice"]) == []
    assert problems(["--enable-log-outputs", "--enable-log-requests"]) == []


# --- files the container can see -------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--chat-template", "/home/me/t.jinja"],
        ["--chat-template", "t.jinja"],
        ["--chat-template", "/models/served/../etc/t.jinja"],
        ["--tool-parser-plugin", "/home/me/parser.py"],
        ["--generation-config", "/opt/gen"],
        ["--tokenizer", "Qwen/Qwen2.5-7B-Instruct"],
    ],
)
def test_files_outside_the_model_mount_are_refused(extra):
    problem = only(extra)
    assert repr(extra[1]) in problem and "cannot see" in problem and "/models/served" in problem


@pytest.mark.parametrize(
    "value",
    [
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        "template_chatml.jinja",  # shipped with vLLM, found by name
        "/models/served/chat_template.jinja",  # a hub model's files are known after the download
    ],
)
def test_inline_builtin_and_mounted_templates_are_accepted(value):
    assert problems(["--chat-template", value]) == []


def test_a_local_models_template_must_exist(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert "does not exist" in only(["--chat-template", "/models/served/t.jinja"], model=str(tmp_path))
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    assert problems(["--chat-template", "/models/served/t.jinja"], model=str(tmp_path)) == []


def test_generation_config_words_and_the_model_directory_are_accepted():
    assert problems(["--generation-config", "vllm"]) == []
    assert problems(["--generation-config", "/models/served"]) == []


# --- GPUs used ------------------------------------------------------------------------------------


def test_data_parallel_beyond_the_hosts_gpus_is_refused():
    problem = only(["--data-parallel-size", "2"])
    assert "needs 2 GPUs" in problem and "g6.xlarge has 1" in problem


def test_data_parallel_that_fits_is_accepted():
    four = GpuInstance("g6.12xlarge", "NVIDIA L4", 4, 22.0, 8.9, 48, 192.0, 4.6, "x86_64")
    assert problems(["-dp", "2"], instance=four, tensor_parallel_size=2, data_parallel_size=2) == []


# --- switches -------------------------------------------------------------------------------------


HIDDEN_NEGATIONS = sorted(name for name, spec in flag_catalog().items() if spec.not_in_help)


def test_every_enable_disable_switch_has_its_hidden_no_form():
    assert "--no-enable-prefix-caching" in HIDDEN_NEGATIONS
    assert "--no-enable-chunked-prefill" in HIDDEN_NEGATIONS
    assert "--no-disable-log-stats" not in HIDDEN_NEGATIONS  # store_true: no negation at all


@pytest.mark.parametrize("flag", HIDDEN_NEGATIONS)
def test_the_no_forms_vllm_accepts_are_accepted(flag):
    check_flags([flag])


STORE_TRUE = ["--headless", "--grpc", "--disable-log-stats", "--aggregate-engine-logging",
              "--data-parallel-multi-port-external-lb"]


@pytest.mark.parametrize("flag", STORE_TRUE)
def test_an_opposite_that_does_not_exist_is_never_answered_with_the_switch_itself(flag):
    opposite = "--enable-" + flag[10:] if flag.startswith("--disable-") else "--no-" + flag[2:]
    with pytest.raises(ConfigError) as caught:
        check_flags([opposite])
    (problem,) = caught.value.problems
    assert "did you mean" not in problem and f"leave {opposite} out" in problem


def test_a_switch_given_a_value_points_at_the_right_spelling():
    with pytest.raises(ConfigError) as caught:
        check_flags(["--enable-prefix-caching=false"])
    assert "write --disable-prefix-caching" in caught.value.problems[0]
    with pytest.raises(ConfigError) as caught:
        check_flags(["--headless=false"])
    assert "leave it out" in caught.value.problems[0]


@pytest.mark.parametrize("extra", [["--headless"], ["--grpc"]])
def test_switches_that_cut_off_the_api_server_are_refused(extra):
    assert "managed by this stack" in only(extra)


def test_o_dot_is_not_a_compilation_key_in_0_33():
    with pytest.raises(ConfigError) as caught:
        check_flags(["-O.cudagraph_mode", "FULL"])
    assert "--compilation-config.cudagraph_mode" in caught.value.problems[0]
    check_flags(["--compilation-config.cudagraph_mode", "FULL"])  # the fix


# --- speculative decoding -------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"method": "eagle", "num_speculative_tokens": 2},
    {"method": "draft_model", "num_speculative_tokens": 2},
    {"num_speculative_tokens": 2},  # no method: vLLM takes it for a draft model
])
def test_a_drafting_method_without_its_model_is_refused(config):
    # vLLM 0.33 stops: "num_speculative_tokens was provided but without speculative model"
    # (config/speculative.py SpeculativeConfig.__post_init__); conformance case xa-spec-no-draft.
    problem = only(["--speculative-config", json.dumps(config)])
    assert "drafts with a model of its own and names none" in problem
    assert '"model": "/models/served/<draft directory>"' in problem


@pytest.mark.parametrize("config", [
    {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4},
    {"model": "ngram", "num_speculative_tokens": 3},
    {"method": "suffix", "num_speculative_tokens": 3},
    {"method": "deepseek_mtp", "num_speculative_tokens": 1},
    {"method": "mtp", "num_speculative_tokens": 1},
    {"method": "eagle", "model": "/models/served/eagle-head", "num_speculative_tokens": 2},
])
def test_methods_without_a_draft_model_or_with_one_in_the_mount_are_accepted(config):
    assert problems(["--speculative-config", json.dumps(config)]) == []


def test_the_mtp_methods_come_from_vllms_source():
    assert {"mtp", "deepseek_mtp", "qwen3_next_mtp"} <= set(vllm_facts()["speculative_mtp_methods"])


def test_a_draft_model_the_offline_container_cannot_fetch_is_refused():
    config = {"model": "Qwen/Qwen2.5-0.5B-Instruct", "num_speculative_tokens": 3}
    problem = only(["--speculative-config", json.dumps(config)])
    # A hub id: the refusal names the key that downloads and mounts the draft.
    assert "names the draft 'Qwen/Qwen2.5-0.5B-Instruct', which the offline container cannot download" in problem
    assert "vllm-deploy:speculativeModel: {model: Qwen/Qwen2.5-0.5B-Instruct, numSpeculativeTokens: 3}" in problem
