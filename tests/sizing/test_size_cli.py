"""tools/size as a what-if tool for any GPU: its JSON shape, its verdicts, its errors, and the line
that points to a cheaper choice."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from config.validation import parse
from sizing import __main__ as sizing_cli
from sizing.choice import candidates, evaluate, plan
from sizing.gpus import get
from sizing.models import from_catalog
from sizing.report import format_report
from sizing.whatif import find_gpu

REPO = Path(__file__).resolve().parents[2]
AWQ_CONFIG = REPO / "tests" / "fixtures" / "models" / "qwen2.5-7b-instruct-awq" / "config.json"
PER_GPU_KEYS = {"total", "budget", "weights", "activation", "cuda_graphs", "non_torch", "kv_cache_allocated",
                "kv_cache_for_sequences"}
REQUIRED_KEYS = {"fits", "tensor_parallel_size", "per_gpu_gib", "kv_cache_tokens", "max_concurrency", "reasons"}


def run_json(capsys, *args) -> dict:
    status = sizing_cli.main([*args, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one JSON object, on one line"
    result = json.loads(out)
    assert status == (0 if result["fits"] else 1), "the exit status says whether it fits, for scripts"
    return result


def test_json_is_one_object_of_the_stable_shape(capsys):
    result = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--max-model-len", "16384")
    assert REQUIRED_KEYS <= set(result)
    assert set(result["per_gpu_gib"]) == PER_GPU_KEYS
    assert isinstance(result["fits"], bool) and isinstance(result["tensor_parallel_size"], int)
    assert isinstance(result["kv_cache_tokens"], int) and isinstance(result["max_concurrency"], float)
    assert all(isinstance(v, float) for v in result["per_gpu_gib"].values())
    assert result["reasons"] == [] and result["fits"] is True


def test_json_figures_follow_vllms_arithmetic(capsys):
    """kv_cache_allocated = budget - weights - activation - CUDA graphs - non-torch ("Available KV cache
    memory"); the token count is concurrency x max_model_len; the budget is 0.92 x the CUDA total."""
    result = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--max-model-len", "16384")
    gib = result["per_gpu_gib"]
    assert gib["total"] == 21.95 and gib["budget"] == pytest.approx(0.92 * 21.95, abs=0.01)
    rest = gib["weights"] + gib["activation"] + gib["cuda_graphs"] + gib["non_torch"]
    assert gib["kv_cache_allocated"] == pytest.approx(gib["budget"] - rest, abs=0.03)
    assert gib["weights"] == pytest.approx(7.616e9 * 2 / 2**30, rel=0.01)
    assert result["kv_cache_tokens"] == pytest.approx(result["max_concurrency"] * 16384, rel=1e-3)
    # Qwen2.5-7B holds 57,344 B of KV per token: blocks of 16 tokens from the available memory
    blocks = math.floor(gib["kv_cache_allocated"] * 2**30 / (16 * 57344))
    assert result["kv_cache_tokens"] == pytest.approx(blocks * 16, rel=2e-3)


def test_a_model_whose_weights_exceed_the_budget_does_not_fit(capsys):
    """Qwen2.5-7B in 16-bit is 7.616e9 x 2 B = 14.19 GiB; a T4 budgets 0.92 x 14.58 = 13.41 GiB."""
    result = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--gpu", "T4")
    assert result["fits"] is False and result["per_gpu_gib"]["kv_cache_allocated"] < 0
    assert any("weights alone do not fit" in reason for reason in result["reasons"])


def test_any_gpu_by_its_cuda_total_and_compute_capability(capsys):
    """vllm-project/vllm#10517: Llama-3.1-8B at 20k tokens started on an RTX 3090 (23.58 GiB as vLLM
    printed it) at utilization 0.9."""
    result = run_json(capsys, "meta-llama/Llama-3.1-8B-Instruct", "--gpu-memory-gib", "23.58",
                      "--compute-capability", "8.6", "--max-model-len", "20000", "--gpu-memory-utilization", "0.9")
    assert result["fits"] is True and result["per_gpu_gib"]["total"] == 23.58
    # below Ampere there is no bfloat16, and a Volta-class card has no vLLM 0.33 kernels at all
    old = run_json(capsys, "Qwen/Qwen2.5-0.5B-Instruct", "--gpu-memory-gib", "31", "--compute-capability", "7.0")
    assert old["fits"] is False and any("sm_70" in reason for reason in old["reasons"])


def test_the_verdict_holds_the_requested_sequences(capsys):
    """One 32k request of Qwen2.5-7B needs 1.75 GiB of KV cache, two (the stack's default) 3.5,
    which an L4 has (4.74 GiB allocated); four need 7 GiB."""
    one = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--max-model-len", "32768")
    assert one["per_gpu_gib"]["kv_cache_for_sequences"] == pytest.approx(2 * 32768 * 57344 / 2**30, abs=0.01)
    four = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--max-model-len", "32768",
                    "--min-concurrent-sequences", "4")
    assert one["fits"] is True and four["fits"] is False
    # the same startup; only the ask differs
    assert {k: v for k, v in one["per_gpu_gib"].items() if k != "kv_cache_for_sequences"} == \
        {k: v for k, v in four["per_gpu_gib"].items() if k != "kv_cache_for_sequences"}
    assert "would fit at --max-model-len 16384" in four["reasons"]
    assert "would fit with --kv-cache-dtype fp8" in four["reasons"]
    # Llama-3.1-8B on an L4 leaves about 3.9 GiB: one 20k request (2.4 GiB, vLLM's own check) but
    # not two, the default
    single = run_json(capsys, "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4", "--max-model-len", "20000",
                      "--min-concurrent-sequences", "1")
    default = run_json(capsys, "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4", "--max-model-len", "20000")
    assert single["fits"] is True and default["fits"] is False


def test_tensor_parallelism_over_several_gpus(capsys):
    result = run_json(capsys, "Qwen/Qwen2.5-72B-Instruct", "--gpu", "H100", "--gpu-count", "4", "--max-model-len", "8192")
    assert result["tensor_parallel_size"] == 4 and result["fits"] is True
    # 72.7e9 x 2 B over 4 GPUs = 33.9 GiB each
    assert result["per_gpu_gib"]["weights"] == pytest.approx(72.706e9 * 2 / 4 / 2**30, rel=0.01)
    too_many = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--gpu", "H100", "--tensor-parallel-size", "8",
                        "--gpu-count", "4")
    assert too_many["fits"] is False and any("needs 8 GPUs" in reason for reason in too_many["reasons"])


@pytest.mark.parametrize("name,model", [
    ("l40s", "NVIDIA L40S"), ("A100-40GB", "NVIDIA A100 40GB"), ("a100 80gb", "NVIDIA A100 80GB"),
    ("NVIDIA H100", "NVIDIA H100"), ("h200", "NVIDIA H200"), ("B200", "NVIDIA B200"), ("a10g", "NVIDIA A10G"),
    ("rtx pro 6000", "NVIDIA RTX PRO 6000 Blackwell Server Edition"),
])
def test_gpu_names_are_case_insensitive_with_aliases(name, model):
    assert find_gpu(name) == model


def test_ambiguous_and_unknown_gpus_are_refused_with_the_choices(capsys):
    assert sizing_cli.main(["Qwen/Qwen2.5-7B-Instruct", "--gpu", "A100"]) == 1
    assert "A100-40GB or A100-80GB" in capsys.readouterr().err
    assert sizing_cli.main(["Qwen/Qwen2.5-7B-Instruct", "--gpu", "H10"]) == 1
    err = capsys.readouterr().err
    assert "Did you mean H100" in err and "--gpu-memory-gib" in err
    with pytest.raises(SystemExit):
        sizing_cli.main(["Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--gpu-memory-gib", "20"])


def test_without_a_gpu_json_names_the_cheapest_instance_that_fits(capsys):
    result = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--max-model-len", "16384")
    cfg = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 16384, "minConcurrentSequences": 1})
    cheapest = next(c for c in candidates(cfg) if c.fits)
    assert result["instance_type"] == cheapest.instance.name and result["fits"] is True
    assert result["hourly_price_usd"] == cheapest.instance.on_demand_usd_per_hour


def test_a_model_outside_the_catalog_is_asked_of_the_hub_once_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VLLM_DEPLOY_MODEL_CACHE", str(tmp_path))
    asked = []

    def fake_fetch(url, headers, timeout):
        asked.append(url)
        return AWQ_CONFIG.read_bytes() if url.endswith("config.json") else None

    monkeypatch.setattr(sizing_cli, "http_fetch", fake_fetch)

    def size(model):
        assert sizing_cli.main([model, "--gpu", "L4", "--json"]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    result, err = size("someone/qwen-7b-awq-copy")
    assert result["fits"] is True
    assert "asking huggingface.co for config.json" in err and len(asked) == 2  # config + index
    _, err = size("someone/qwen-7b-awq-copy")
    assert len(asked) == 2 and "asking" not in err  # cached: offline from now on
    size("Qwen/Qwen2.5-7B-Instruct")
    assert len(asked) == 2  # catalog models never ask


def test_the_stable_entry_point_lists_the_gpus_it_knows():
    result = subprocess.run([str(REPO / "tools" / "size"), "--list-gpus"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    for gpu in ("T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200"):
        assert gpu in names


# --- the cheaper choice ----------------------------------------------------------------------


def test_the_report_points_to_a_shorter_context_and_an_fp8_kv_cache_when_cheaper():
    """Qwen2.5-7B at 32k x 4 sequences needs 7 GiB of KV cache: an L40S (g6e.xlarge). At 16k the
    same four fit an L4 (g6.xlarge, $0.80/h), and so do they at 32k with fp8 KV (half the bytes)."""
    cfg = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 32768, "minConcurrentSequences": 4})
    chosen = plan(cfg)
    report = format_report(chosen)
    assert chosen.instance.name == "g6e.xlarge"
    assert "cheaper: at maxModelLen 16384: g6.xlarge, $0.80/h" in report
    assert "cheaper: with kvCacheDtype fp8: g6.xlarge, $0.80/h" in report
    spec = from_catalog("Qwen/Qwen2.5-7B-Instruct")
    assert evaluate(cfg.model_copy(update={"max_model_len": 16384}), spec, get("g6.xlarge")).fits
    assert not evaluate(cfg, spec, get("g6.xlarge")).fits


def test_no_cheaper_line_when_the_choice_is_already_the_cheapest_gpu():
    chosen = plan(parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}))
    assert chosen.instance.name == "g4dn.xlarge" and chosen.cheaper == ()
    assert "cheaper:" not in format_report(chosen)


def test_cli_json_repeats_the_cheaper_choice(capsys):
    result = run_json(capsys, "Qwen/Qwen2.5-7B-Instruct", "--max-model-len", "32768", "--min-concurrent-sequences", "4")
    assert result["instance_type"] == "g6e.xlarge"
    assert "at maxModelLen 16384: g6.xlarge, $0.80/h" in result["cheaper"]


def test_python_module_and_tools_size_take_the_same_arguments():
    result = subprocess.run([sys.executable, "-m", "sizing", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=True)
    for flag in ("--gpu", "--gpu-memory-gib", "--compute-capability", "--gpu-count", "--tensor-parallel-size",
                 "--gpu-memory-utilization", "--max-model-len", "--max-num-batched-tokens", "--max-num-seqs",
                 "--dtype", "--quantization", "--kv-cache-dtype", "--min-concurrent-sequences", "--rope-scaling",
                 "--json", "--all", "--list-models", "--offered"):
        assert flag in result.stdout


def test_nodes_sizes_a_plan_across_nodes_as_json_and_as_text(capsys):
    assert sizing_cli.main(["meta-llama/Llama-3.1-405B-Instruct", "--nodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["fits"], result["nodes"], result["instance_type"]) == (True, 2, "p4de.24xlarge")
    assert result["hourly_price_usd"] == pytest.approx(2 * 27.44705)
    assert result["sizing"]["layersPerStage"] == [63, 63]
    assert result["sizing"]["hourlyPriceUsdPerNode"] == pytest.approx(27.44705)
    assert result["sizing"]["perGpu"]["weightsGib"] == pytest.approx(405.853e9 / 8 / 2**30, abs=0.01)
    assert sizing_cli.main(["meta-llama/Llama-3.1-405B-Instruct", "--nodes", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 x p4de.24xlarge" in text and "pipeline parallel 2 (layers 63/63)" in text


def test_lora_adapters_and_a_draft_take_their_terms_out_of_the_kv_cache(capsys, monkeypatch, tmp_path):
    """tools/size --lora-adapter ... --speculative-model ...: the terms appear in the JSON, and
    the KV cache shrinks by them (the closing figures of issue 28 come from this command)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_DEPLOY_MODEL_CACHE", str(tmp_path))
    common = ["Qwen/Qwen2.5-7B-Instruct", "--gpu", "L40S", "--max-model-len", "16384"]
    alone = run_json(capsys, *common)["per_gpu_gib"]
    adapters = [f"--lora-adapter={n}=acme/{n}-lora" for n in ("a", "b", "c", "d")]
    added = run_json(capsys, *common, *adapters, "--max-lora-rank", "16",
                     "--speculative-model", "Qwen/Qwen2.5-0.5B-Instruct")["per_gpu_gib"]
    assert added["lora_buffers"] > 0 and added["draft_weights"] > 0.9
    assert added["kv_cache_allocated"] == pytest.approx(alone["kv_cache_allocated"] - added["lora_buffers"] - added["draft_weights"], abs=0.02)
