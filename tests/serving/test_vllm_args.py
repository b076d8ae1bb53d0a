"""The `vllm serve` command line: what the stack emits, and what it refuses before a host exists."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Optional

import pytest

from config.constants import SECRET_KEYS
from config.images import PINNED_VLLM_VERSION
from config.settings import KEYS
from config.validation import ConfigError, parse
from serving.extra_args import flag_warnings
from serving.flag_reader import check_flags
from serving.vllm_args import managed_flags, serve_args
from sizing.choice import plan as choose_plan
from serving.vllm_flags import FLAGS_FILE, REMOVED_FLAGS, flag_catalog
from sizing.gpus import GpuInstance
from sizing.models import from_catalog
from sizing.plan import MemoryBreakdown, SizingPlan
from sizing.rope import rope_override

MODEL_PATH = "/models/served"

T4 = GpuInstance("g4dn.xlarge", "NVIDIA T4", 1, 15.0, 7.5, 4, 16.0, 0.526, "x86_64")
L4X4 = GpuInstance("g6.12xlarge", "NVIDIA L4", 4, 22.0, 8.9, 48, 192.0, 4.602, "x86_64")
L40S = GpuInstance("g6e.xlarge", "NVIDIA L40S", 1, 44.5, 8.9, 4, 32.0, 1.861, "x86_64")


def make_plan(instance: GpuInstance = L40S, **changes: Any) -> SizingPlan:
    plan = SizingPlan(
        model="Qwen/Qwen2.5-7B-Instruct",
        instance=instance,
        tensor_parallel_size=1,
        dtype="bfloat16",
        quantization=None,
        kv_cache_dtype="auto",
        max_model_len=32768,
        max_num_seqs=None,
        max_num_batched_tokens=2048,
        gpu_memory_utilization=0.92,
        memory=MemoryBreakdown(14.2, 7.0, 1.5, 0.8, 1.2, 40.9),
        kv_cache_capacity_tokens=200_000,
        root_volume_gb=120,
        model_volume_gb=30,
        weights_on_disk_gb=15.2,
        hourly_price_usd=instance.on_demand_usd_per_hour,
    )
    return replace(plan, **changes)


def make_config(**keys: Any) -> Any:
    return parse({"model": "Qwen/Qwen2.5-7B-Instruct", **keys})


def flag_value(argv: list[str], flag: str) -> Optional[str]:
    """The value after `flag`, or None when the flag is absent."""
    if flag not in argv:
        return None
    return argv[argv.index(flag) + 1]


def problems_of(args: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        check_flags(args)
    return caught.value.problems


def serve_problems(**keys: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        serve_args(make_config(**keys), make_plan(), model_path=MODEL_PATH)
    return caught.value.problems


YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}

# (config keys, plan changes): the shapes of deployment the builder must get right.
SCENARIOS = {
    "t4-float16": ({}, dict(instance=T4, dtype="float16", max_model_len=4096)),
    "tp4": ({"maxNumSeqs": 64}, dict(instance=L4X4, tensor_parallel_size=4, max_num_seqs=64)),
    "awq": ({"quantization": "awq"}, dict(quantization="awq", max_model_len=8192)),
    "rope-yarn": (
        {"ropeScaling": YARN, "maxModelLen": 131072},
        dict(max_model_len=131072, rope_override=rope_override(
            from_catalog("Qwen/Qwen2.5-7B-Instruct"),
            parse({"model": "Qwen/Qwen2.5-7B-Instruct", "ropeScaling": YARN}),
        )),
    ),
    "fp8-kv": (
        {"kvCacheDtype": "fp8", "maxNumBatchedTokens": 8192},
        dict(kv_cache_dtype="fp8", max_num_batched_tokens=8192),
    ),
    "extra-args": (
        {"vllmExtraArgs": ["--enable-prefix-caching", "--reasoning-parser", "qwen3", "-O3"]},
        {},
    ),
}


@pytest.fixture(params=sorted(SCENARIOS))
def built(request: pytest.FixtureRequest) -> tuple[list[str], SizingPlan]:
    keys, plan_changes = SCENARIOS[request.param]
    plan = make_plan(**plan_changes)
    return serve_args(make_config(**keys), plan, model_path=MODEL_PATH), plan


# --- the catalog ---------------------------------------------------------------------


def test_catalog_is_the_list_of_the_pinned_vllm_version():
    header = FLAGS_FILE.read_text(encoding="utf-8").splitlines()[0]
    assert f"vLLM {PINNED_VLLM_VERSION} " in header, (
        "serving/vllm-serve-flags.txt was dumped from another vLLM than "
        "PINNED_VLLM_VERSION; re-dump it when changing the pin"
    )


def test_catalog_holds_every_option_line_of_the_file():
    catalog = flag_catalog()
    option_lines = [
        line.split("\t")[0]
        for line in FLAGS_FILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("-")
    ]
    assert len(option_lines) > 400
    assert [o for o in option_lines if o not in catalog] == []


def test_catalog_knows_arity_choices_aliases_and_notes():
    catalog = flag_catalog()
    assert catalog["-tp"] is catalog["--tensor-parallel-size"]
    assert catalog["--device-memory-utilization"].name == "--gpu-memory-utilization"
    assert not catalog["--enable-prefix-caching"].takes_value
    assert not catalog["--no-trust-remote-code"].takes_value
    assert catalog["--served-model-name"].arity == "many"
    assert catalog["--hf-token"].arity == "optional"
    assert catalog["--log-level"].choices == ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")
    assert catalog["--log-level"].hidden
    assert catalog["--disable-cascade-attn"].deprecated
    assert catalog["--compilation-config"].accepts_json
    assert not catalog["--max-model-len"].accepts_json


# --- what serve_args emits -----------------------------------------------------------


def test_every_emitted_flag_is_in_the_pinned_catalog(built):
    argv, _ = built
    catalog = flag_catalog()
    options = [a for a in argv if a.startswith("-") and not a.startswith("-O")]
    assert options, argv
    assert [o for o in options if o not in catalog] == []
    check_flags(argv[1:])  # and the list as a whole parses, values included


def test_model_path_is_the_only_positional_and_comes_first(built):
    argv, _ = built
    assert argv[0] == MODEL_PATH
    assert MODEL_PATH not in argv[1:]


def test_plan_decides_parallelism_dtype_and_lengths(built):
    argv, plan = built
    assert flag_value(argv, "--tensor-parallel-size") == str(plan.tensor_parallel_size)
    assert flag_value(argv, "--dtype") == plan.dtype
    assert int(flag_value(argv, "--max-model-len")) == plan.max_model_len
    assert float(flag_value(argv, "--gpu-memory-utilization")) == plan.gpu_memory_utilization
    expected_seqs = None if plan.max_num_seqs is None else str(plan.max_num_seqs)
    assert flag_value(argv, "--max-num-seqs") == expected_seqs
    assert "--pipeline-parallel-size" not in argv  # single stage is vLLM's default


def test_server_listens_in_the_container_on_the_given_port():
    argv = serve_args(make_config(), make_plan(), model_path=MODEL_PATH, port=8123)
    assert flag_value(argv, "--host") == "0.0.0.0"
    assert flag_value(argv, "--port") == "8123"
    assert flag_value(argv, "--served-model-name") == "Qwen/Qwen2.5-7B-Instruct"


def test_hand_built_plan_maps_to_flags():
    plan = make_plan(
        instance=L4X4, tensor_parallel_size=4, dtype="float16", quantization="gptq",
        kv_cache_dtype="fp8", max_model_len=16384, max_num_seqs=32,
        max_num_batched_tokens=4096, gpu_memory_utilization=0.88, emit_max_num_batched_tokens=True,
    )
    config = make_config(servedModelName="chat", maxNumBatchedTokens=4096)
    argv = serve_args(config, plan, model_path=MODEL_PATH)
    assert argv[: 1 + 2] == [MODEL_PATH, "--served-model-name", "chat"]
    assert flag_value(argv, "--tensor-parallel-size") == "4"
    assert flag_value(argv, "--dtype") == "float16"
    assert flag_value(argv, "--quantization") == "gptq"
    assert flag_value(argv, "--kv-cache-dtype") == "fp8"
    assert flag_value(argv, "--max-model-len") == "16384"
    assert flag_value(argv, "--max-num-seqs") == "32"
    assert flag_value(argv, "--max-num-batched-tokens") == "4096"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.88"


def test_defaults_are_left_to_vllm():
    argv = serve_args(make_config(), make_plan(), model_path=MODEL_PATH)
    for flag in ("--quantization", "--kv-cache-dtype", "--max-num-batched-tokens",
                 "--max-num-seqs", "--hf-overrides", "--generation-config"):
        assert flag not in argv, flag


def test_extra_args_come_last_and_unchanged():
    extra = ["--enable-prefix-caching", "--compilation-config.cudagraph_mode", "PIECEWISE"]
    argv = serve_args(make_config(vllmExtraArgs=extra), make_plan(), model_path=MODEL_PATH)
    assert argv[-len(extra):] == extra


def test_plan_needing_more_gpus_than_the_instance_has_is_a_bug():
    with pytest.raises(ValueError, match="spans 4 GPUs"):
        serve_args(make_config(), make_plan(instance=T4, tensor_parallel_size=4), model_path=MODEL_PATH)


# --- rope scaling ----------------------------------------------------------------------


def hf_overrides(argv: list[str]) -> dict[str, Any]:
    return json.loads(flag_value(argv, "--hf-overrides"))


def sized_args(**keys: Any) -> list[str]:
    """The argv for a config sized for real (catalog model, offline)."""
    from sizing.choice import plan as size

    settings = make_config(**keys)
    return serve_args(settings, size(settings), model_path=MODEL_PATH)


def test_readme_rope_example_works_as_written():
    """README: ropeScaling {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings":
    32768}, no rope_theta: the catalog knows Qwen2.5's (config.json: 1000000.0)."""
    argv = sized_args(ropeScaling=YARN, maxModelLen=131072, minConcurrentSequences=1)
    overrides = hf_overrides(argv)
    assert overrides["rope_parameters"] == {**YARN, "rope_theta": 1000000.0}
    assert overrides["rope_scaling"] == YARN
    assert flag_value(argv, "--max-model-len") == "131072"


@pytest.mark.parametrize("rope_type", ["yarn", "longrope", "llama3"])
def test_types_vllm_does_not_multiply_get_the_extended_max_position_embeddings(rope_type):
    """vLLM 0.33 leaves max_position_embeddings alone for these types
    (_get_and_verify_max_len), so the override must carry original x factor."""
    extra = {
        "longrope": {"short_factor": [1.0], "long_factor": [4.0]},
        "llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
    }.get(rope_type, {})
    rope = {"rope_type": rope_type, "factor": 4.0, "original_max_position_embeddings": 32768, **extra}
    argv = sized_args(ropeScaling=rope, maxModelLen=65536, minConcurrentSequences=1)
    overrides = hf_overrides(argv)
    assert overrides["max_position_embeddings"] == 131072
    # flat key first (vLLM applies it before transformers' RoPE patching), then the dicts,
    # rope_parameters last: transformers 5's rope_scaling setter replaces it wholesale
    assert list(overrides) == ["max_position_embeddings", "rope_scaling", "rope_parameters"]


def test_types_vllm_multiplies_keep_the_models_max_position_embeddings():
    argv = sized_args(ropeScaling={"rope_type": "linear", "factor": 2.0}, maxModelLen=65536,
                      minConcurrentSequences=1)
    overrides = hf_overrides(argv)
    assert "max_position_embeddings" not in overrides  # vLLM derives 32768 x 2 itself
    assert overrides["rope_parameters"] == {"factor": 2.0, "rope_type": "linear", "rope_theta": 1000000.0}


def test_legacy_type_key_and_a_missing_original_length_are_filled_in():
    argv = sized_args(ropeScaling={"type": "yarn", "factor": 2.0}, maxModelLen=65536,
                      minConcurrentSequences=1)
    overrides = hf_overrides(argv)
    # transformers' standardize_rope_params would default it to max_position_embeddings; the
    # dict override skips that step, so the stack fills it in
    assert overrides["rope_parameters"]["original_max_position_embeddings"] == 32768
    assert overrides["rope_scaling"]["rope_type"] == "yarn" and "type" not in overrides["rope_scaling"]
    assert overrides["max_position_embeddings"] == 65536


def test_rope_theta_in_rope_scaling_is_used_and_not_left_in_the_legacy_key():
    overrides = hf_overrides(sized_args(ropeScaling={**YARN, "rope_theta": 500000.0},
                                        minConcurrentSequences=1))
    assert overrides["rope_parameters"]["rope_theta"] == 500000.0
    assert "rope_theta" not in overrides["rope_scaling"]


def test_hf_overrides_json_is_read_by_transformers_as_vllm_applies_it(tmp_path):
    """Runs the real transformers config update vLLM does, where transformers is installed:
    flat keys through config.update, dict keys set afterwards (vllm/config/model.py)."""
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_attention_heads": 14, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "vocab_size": 1000,
    }))
    overrides = hf_overrides(sized_args(ropeScaling=YARN, maxModelLen=131072, minConcurrentSequences=1))
    hf_config = transformers.AutoConfig.from_pretrained(tmp_path)
    hf_config.update({k: v for k, v in overrides.items() if not isinstance(v, dict)})
    for key, value in overrides.items():
        if isinstance(value, dict):
            setattr(hf_config, key, value)
    rope = getattr(hf_config, "rope_parameters", None) or hf_config.rope_scaling
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope.get("rope_theta", getattr(hf_config, "rope_theta", None)) == 1000000.0
    assert hf_config.max_position_embeddings == 131072


# --- old guides' flags ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fix",
    [
        (["--enable-metrics"], "/metrics on the API port"),
        (["--metrics-port", "9000"], "metricsAllowedCidrs"),
        (["--rope-scaling", '{"type": "yarn", "factor": 4.0}'], "ropeScaling"),
        (["--rope-theta", "1000000"], "--hf-overrides"),
        (["--swap-space", "4"], "drop it"),
        (["--guided-decoding-backend", "xgrammar"], "--structured-outputs-config.backend"),
        (["--enable-reasoning"], "--reasoning-parser"),
        (["--num-scheduler-steps", "8"], "drop it"),
        (["--speculative-model", "x/y"], "--speculative-config"),
        (["--task", "embed"], "--runner pooling"),
        (["--device", "cuda"], "drop it"),
    ],
)
def test_removed_flags_fail_with_the_documented_replacement(args, fix):
    (problem,) = problems_of(args)  # the flag's value is not reported a second time
    assert problem.startswith("vllm-deploy:vllmExtraArgs:")
    assert args[0] in problem and "removed" in problem and fix in problem


def test_the_seed_guides_flags_all_get_an_answer():
    """The Chinese guide's commands, flag by flag, as a user would paste them."""
    guide = ["--max-num-batched-tokens", "8192", "--max-num-seqs", "256",
             "--enable-chunked-prefill", "--disable-log-requests", "--disable-log-stats",
             "--enable-metrics", "--rope-scaling", '{"type": "yarn", "factor": 4.0}',
             "--api-key", "your-secret-key"]
    problems = serve_problems(vllmExtraArgs=guide)
    text = "\n".join(problems)
    assert "maxNumBatchedTokens" in text and "maxNumSeqs" in text
    assert "--enable-metrics" in text and "--rope-scaling" in text
    assert "pulumi config set --secret apiKey" in text
    assert "your-secret-key" not in text
    assert not any("chunked" in p or "log-requests" in p for p in problems)
    # The guide pairs --disable-log-stats with --enable-metrics; in vLLM 0.33 it removes the metrics.
    (log_stats,) = [p for p in problems if "log-stats" in p]
    assert "vllm-deploy:monitoring" in log_stats
    without_monitoring = serve_problems(vllmExtraArgs=guide, monitoring=False)
    assert not any("log-stats" in p for p in without_monitoring)


@pytest.mark.parametrize("flag", ["--disable-log-stats", "--disable_log_stats"])
def test_monitoring_refuses_the_flag_that_removes_vllms_metrics(flag):
    (problem,) = serve_problems(vllmExtraArgs=["--enable-prefix-caching", flag])
    assert "vllm-deploy:vllmExtraArgs" in problem and "vllm-deploy:monitoring" in problem
    assert flag in serve_args(make_config(vllmExtraArgs=[flag], monitoring=False), make_plan(), model_path=MODEL_PATH)


def test_no_effect_and_deprecated_flags_are_warnings_not_errors():
    args = ["--disable-log-requests", "--disable-cascade-attn", "--enable-prefix-caching"]
    check_flags(args)
    warnings = flag_warnings(args)
    assert len(warnings) == 2
    assert warnings[0].startswith("--disable-log-requests") and warnings[1].startswith("--disable-cascade-attn")


# --- check_flags: spelling ---------------------------------------------------------------


def test_unknown_flag_gets_a_suggestion():
    (problem,) = problems_of(["--enable-prefix-cache"])
    assert "'--enable-prefix-cache' is not a vllm serve flag" in problem
    assert "did you mean --enable-prefix-caching?" in problem


def test_abbreviations_are_refused_with_the_full_spelling():
    (problem,) = problems_of(["--max-num-seq", "8"])
    assert "abbreviation" in problem and "--max-num-seqs" in problem
    (problem,) = problems_of(["--enable-prefix-cach"])
    assert "--enable-prefix-caching" in problem


def test_ambiguous_abbreviation_names_the_candidates():
    (problem,) = problems_of(["--api", "sk-live-123"])
    assert "--api-key" in problem and "--api-server-count" in problem
    assert "sk-live" not in problem  # what follows an unresolved flag may be a secret


@pytest.mark.parametrize(
    "args",
    [
        ["--block-size", "32"],
        ["--block-size=32"],
        ["--block_size", "32"],
        ["--enable_prefix_caching"],
        ["--compilation-config.cudagraph_mode", "PIECEWISE"],
        ["--compilation-config.cudagraph_mode=PIECEWISE"],
        ["-cc.mode", "3"],
        ["-O3"],
        ["-O=2"],
        ["-O", "1"],
        ["-tp", "2"],
        ["-tp=2"],
        ["-q", "awq"],
        ["-qawq"],
        ["-ep"],
        ["--max-model-len", "-1"],
        ["--max-num-batched-tokens", "8k"],
        ["--cudagraph-capture-sizes", "1", "2", "4", "8"],
        ["--served-model-name", "a", "b"],
        ["--hf-token"],
        ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}'],
        ["--log-level", "INFO"],
        ["--log-level=DEBUG"],
        ["--uvicorn-log-level", "info"],
        ["--collect-detailed-traces", "model", "worker"],
    ],
)
def test_accepted_spellings(args):
    check_flags(args)


# --- check_flags: values --------------------------------------------------------------------


def test_choice_values_are_checked_and_case_is_suggested():
    (problem,) = problems_of(["--log-level", "info"])
    assert "--log-level 'info' is not allowed" in problem and "did you mean 'INFO'?" in problem
    (problem,) = problems_of(["--uvicorn-log-level=INFO"])
    assert "did you mean 'info'?" in problem
    (problem,) = problems_of(["--collect-detailed-traces", "model", "gpu"])
    assert "'gpu'" in problem


def test_values_vllm_checks_only_at_startup_are_checked_now():
    (problem,) = problems_of(["-q", "awq4"])
    assert "did you mean 'awq'?" in problem
    (problem,) = problems_of(["--tokenizer-mode", "slow"])
    assert "'slow' is not allowed" in problem


def test_values_of_the_wrong_type_are_refused():
    assert "not a valid int" in problems_of(["--block-size", "big"])[0]
    assert "not a valid float" in problems_of(["--cpu-offload-gb", "lots"])[0]
    assert "is not JSON" in problems_of(["--speculative-config", "{method: ngram}"])[0]
    assert problems_of(["--max-num-batched-tokens", "1.5K"])  # no decimals with binary suffixes


def test_value_flag_without_a_value_is_refused():
    (problem,) = problems_of(["--block-size", "--enforce-eager"])
    assert "'--block-size' needs a value" in problem
    (problem,) = problems_of(["--seed"])
    assert "'--seed' needs a value" in problem
    (problem,) = problems_of(["-O"])
    assert "-O3" in problem


def test_bool_flag_with_a_value_is_refused():
    (problem,) = problems_of(["--enforce-eager=true"])
    assert "takes no value" in problem
    (problem,) = problems_of(["--enforce-eager", "true"])
    assert "'true' is not the value of any flag" in problem


def test_dotted_keys_only_under_config_object_flags():
    (problem,) = problems_of(["--max-model-len.value", "3"])
    assert "dotted keys" in problem and "--max-model-len is not one" in problem


def test_every_problem_is_reported_at_once():
    problems = problems_of(["--enable-metrics", "--log-level", "info", "--max-num-seq", "8", "stray"])
    assert len(problems) == 4
    assert all(p.startswith("vllm-deploy:vllmExtraArgs:") for p in problems)


def test_removed_flags_are_not_in_the_pinned_catalog():
    catalog = flag_catalog()
    assert [flag for flag in REMOVED_FLAGS if flag in catalog] == []


# --- flags the stack owns ----------------------------------------------------------------


def test_managed_flags_are_real_flags_owned_by_real_config_keys():
    catalog = flag_catalog()
    for flag, key in managed_flags().items():
        assert flag in catalog, flag
        assert key in KEYS or key in SECRET_KEYS, (flag, key)


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--max-model-len", "8192"], "maxModelLen"),
        (["--max_model_len=8192"], "maxModelLen"),
        (["--max-model", "8192"], "maxModelLen"),
        (["--device-memory-utilization", "0.8"], "gpuMemoryUtilization"),
        (["-tp", "2"], "tensorParallelSize"),
        (["--dtype", "half"], "dtype"),
        (["-q", "awq"], "quantization"),
        (["--kv-cache-dtype", "fp8_e5m2"], "kvCacheDtype"),
        (["--served-model-name", "x"], "servedModelName"),
        (["--model", "Qwen/Qwen3-8B"], "model"),
    ],
)
def test_flags_set_from_config_keys_are_refused_in_extra_args(extra, key):
    (problem,) = serve_problems(vllmExtraArgs=extra)
    assert f"config key; remove it and use: pulumi config set {key} <value>" in problem


@pytest.mark.parametrize("flag", ["--host", "--port", "--uds", "--ssl-certfile", "--config"])
def test_wiring_flags_are_refused_in_extra_args(flag):
    (problem,) = serve_problems(vllmExtraArgs=[flag, "x"])
    assert f"{flag} is managed by this stack" in problem


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--api-key", "sk-live-123"], "apiKey"),
        (["--api-key=sk-live-123"], "apiKey"),
        (["--api_key", "sk-live-123", "sk-old-456"], "apiKey"),
        (["--hf-token=hf_live123"], "hfToken"),
    ],
)
def test_secrets_in_extra_args_are_refused_without_echoing_them(extra, key):
    (problem,) = serve_problems(vllmExtraArgs=extra)
    assert f"pulumi config set --secret {key}" in problem
    assert "live" not in problem and "old" not in problem


def test_a_second_model_is_refused():
    (problem,) = serve_problems(vllmExtraArgs=["Qwen/Qwen3-8B", "--enable-prefix-caching"])
    assert "'Qwen/Qwen3-8B'" in problem and "`model` key" in problem


def test_hf_overrides_for_rope_go_through_ropescaling():
    (problem,) = serve_problems(vllmExtraArgs=["--hf-overrides", '{"rope_scaling": {"factor": 2}}'])
    assert "ropeScaling" in problem
    (problem,) = serve_problems(vllmExtraArgs=["--hf-overrides.rope_parameters.factor", "2"])
    assert "ropeScaling" in problem
    (problem,) = serve_problems(
        ropeScaling={**YARN, "rope_theta": 1e6},
        vllmExtraArgs=["--hf-overrides", '{"architectures": ["X"]}'],
    )
    assert "cannot be combined with ropeScaling" in problem


def test_other_hf_overrides_pass_through():
    extra = ["--hf-overrides", '{"rope_theta": 500000.0}']
    argv = serve_args(make_config(vllmExtraArgs=extra), make_plan(), model_path=MODEL_PATH)
    assert argv[-2:] == extra


def test_deprecated_checkpoint_quantization_is_opted_into():
    from sizing.choice import plan as size

    settings = parse({"model": "meta-llama/Llama-3.1-405B-Instruct-FP8", "maxModelLen": 8192})
    planned = size(settings)
    assert planned.checkpoint_quantization == "fbgemm_fp8"
    args = serve_args(settings, planned, model_path="/models/served")
    assert "--allow-deprecated-quantization" in args
    small = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 8192})
    assert "--allow-deprecated-quantization" not in serve_args(small, size(small), model_path="/models/served")


LLAMA_405B = "meta-llama/Llama-3.1-405B-Instruct"


def test_the_vllm_argv_across_nodes_has_pp_tp_and_the_ray_backend_and_passes_the_flag_check():
    spec = from_catalog(LLAMA_405B)
    cfg = parse({"model": LLAMA_405B, "nodes": 2})
    across = choose_plan(cfg, resolver=lambda *_: spec)
    argv = serve_args(cfg, across, model_path="/models/llama")  # raises if vLLM's flags reject it
    pairs = dict(zip(argv, argv[1:]))
    assert pairs["--tensor-parallel-size"] == "8" and pairs["--pipeline-parallel-size"] == "2"
    assert pairs["--distributed-executor-backend"] == "ray"
    one = parse({"model": LLAMA_405B})
    single = choose_plan(one, resolver=lambda *_: spec)
    assert "--distributed-executor-backend" not in serve_args(one, single, model_path="/m")


def test_a_flag_and_its_value_in_one_item_is_told_to_split_them():
    with pytest.raises(ConfigError) as refused:
        check_flags(["--max-num-seqs 64"])
    assert "write two items ('--max-num-seqs', '64') or --max-num-seqs=64" in str(refused.value)
    check_flags(["--max-num-seqs", "64"])
    check_flags(["--limit-mm-per-prompt={\"image\": 4}"])  # a JSON value with a space is one item
