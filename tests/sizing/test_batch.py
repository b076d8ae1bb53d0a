"""Batch limits: what vLLM 0.33 runs with, and the combinations it refuses at startup."""

from __future__ import annotations

import pytest

from config.validation import parse
from serving.vllm_args import serve_args
from sizing.batch import batch_limits
from sizing.choice import plan
from sizing.engine_args import EngineOptions, engine_options
from sizing.errors import SizingError
from sizing.gpus import get

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
L4 = get("g6.xlarge")  # vLLM's defaults on it: 2048 batched tokens, 256 sequences
H100 = get("p5.48xlarge")  # 8192 batched tokens, 1024 sequences


def limits(instance=L4, max_model_len=32768, extra=(), **keys):
    config = parse({"model": MODEL, "vllmExtraArgs": list(extra), **keys})
    return batch_limits(config, instance, max_model_len, engine_options(config.vllm_extra_args))


def vllm_accepts(tokens: int, seqs: int, max_model_len: int, chunked: bool = True) -> bool:
    """vllm/config/scheduler.py SchedulerConfig.verify_max_model_len, by hand."""
    if tokens < max_model_len and not chunked:
        return False
    return tokens >= seqs


def argv(**keys):
    settings = parse({"model": MODEL, **keys})
    return serve_args(settings, plan(settings), model_path="/models/served")


def flag(args, name):
    return args[args.index(name) + 1] if name in args else None


def test_defaults_are_vllms_per_gpu():
    assert (limits().max_num_batched_tokens, limits().max_num_seqs) == (2048, 256)
    assert (limits(H100).max_num_batched_tokens, limits(H100).max_num_seqs) == (8192, 1024)


@pytest.mark.parametrize("seqs", [2049, 4096, 10000])
def test_a_lone_maxnumseqs_above_the_default_budget_raises_the_budget(seqs):
    got = limits(maxNumSeqs=seqs)
    assert got.max_num_batched_tokens == seqs and got.pass_batched_tokens
    assert "maxNumBatchedTokens raised" in got.note
    assert vllm_accepts(got.max_num_batched_tokens, got.max_num_seqs, 32768)


def test_maxnumseqs_4096_reaches_the_command_line_with_a_budget_vllm_accepts():
    args = argv(maxNumSeqs=4096, maxModelLen=4096)
    tokens, seqs = int(flag(args, "--max-num-batched-tokens")), int(flag(args, "--max-num-seqs"))
    assert vllm_accepts(tokens, seqs, 4096)


def test_a_lone_maxnumseqs_within_the_default_budget_leaves_it_to_vllm():
    got = limits(H100, maxNumSeqs=4096)  # H100's default 8192 already holds 4096
    assert (got.max_num_batched_tokens, got.pass_batched_tokens) == (8192, False)
    assert "--max-num-batched-tokens" not in argv(maxNumSeqs=128)


def test_both_set_with_tokens_below_seqs_is_refused_naming_both_keys():
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": MODEL, "maxNumSeqs": 512, "maxNumBatchedTokens": 256}))
    message = str(caught.value)
    assert "vllm-deploy:maxNumBatchedTokens=256" in message and "maxNumSeqs=512" in message
    # both ways out named in the message work
    plan(parse({"model": MODEL, "maxNumSeqs": 512, "maxNumBatchedTokens": 512}))
    plan(parse({"model": MODEL, "maxNumSeqs": 256, "maxNumBatchedTokens": 256}))


def test_a_lone_small_budget_lowers_vllms_sequence_default():
    got = limits(maxNumBatchedTokens=128)
    assert (got.max_num_batched_tokens, got.max_num_seqs) == (128, 128)
    assert vllm_accepts(128, 128, 32768)


@pytest.mark.parametrize("off", ["--no-enable-chunked-prefill", "--disable-chunked-prefill"])
def test_chunked_prefill_off_needs_a_budget_of_maxmodellen(off):
    got = limits(extra=[off], max_model_len=16384)
    assert got.max_num_batched_tokens == 16384  # vLLM raises its own default to max_model_len
    with pytest.raises(SizingError) as caught:
        limits(extra=[off], max_model_len=16384, maxNumBatchedTokens=4096)
    message = str(caught.value)
    assert "maxNumBatchedTokens=4096" in message and "maxModelLen=16384" in message and off in message


def test_chunked_prefill_turned_back_on_lifts_the_rule():
    got = limits(extra=["--no-enable-chunked-prefill", "--enable-chunked-prefill"],
                 max_model_len=16384, maxNumBatchedTokens=4096)
    assert got.max_num_batched_tokens == 4096


def test_throughput_mode_doubles_only_the_defaults():
    got = limits(extra=["--performance-mode", "throughput"])
    assert (got.max_num_batched_tokens, got.max_num_seqs) == (4096, 512)
    assert limits(extra=["--performance-mode=throughput"], maxNumBatchedTokens=1000).max_num_batched_tokens == 1000


def test_short_contexts_cap_the_default_budget_at_seqs_times_length():
    got = limits(max_model_len=4, maxNumSeqs=2)
    assert got.max_num_batched_tokens == 8  # min(seqs x max_model_len, 2048)


def test_engine_options_read_spellings_and_last_wins():
    options = engine_options(["-dp", "2", "--enable_chunked_prefill", "--disable-chunked-prefill", "-ep"])
    assert options == EngineOptions(
        data_parallel_size=2, chunked_prefill=False, chunked_prefill_flag="--disable-chunked-prefill",
        expert_parallel=True, expert_parallel_flag="-ep",
    )
    assert engine_options(["--data-parallel-size=4"]).data_parallel_size == 4
