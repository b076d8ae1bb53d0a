"""A replica's expected start (sizing.start_time) and the fleet timings derived from it."""

from __future__ import annotations

from config.validation import parse
from sizing import start_time
from sizing.choice import plan
from sizing.host import VLLM_IMAGE_DISK_GB

SMALL, LARGE = "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-72B-Instruct"


def estimate(model: str, **keys) -> start_time.StartEstimate:
    return start_time.replica_start(plan(parse({"model": model, "replicas": 3, **keys})))


def test_each_term_is_bytes_over_the_initialization_rate_or_a_named_allowance():
    small = plan(parse({"model": SMALL, "replicas": 3}))
    got = start_time.replica_start(small)
    rate = 300 * 2**20  # bytes/s: EBS's maximum VolumeInitializationRate
    assert got.weights_s == -(-int(small.weights_on_disk_gb * 1e9) // rate)
    assert got.image_s == -(-VLLM_IMAGE_DISK_GB * 10**9 // rate)
    assert (got.boot_s, got.engine_s) == (start_time.BOOT_S, start_time.ENGINE_INIT_S)
    assert got.total_s == got.boot_s + got.image_s + got.weights_s + got.engine_s
    eager = start_time.replica_start(small, enforce_eager=True)
    assert eager.engine_s < got.engine_s and eager.weights_s == got.weights_s


def test_a_ten_times_larger_model_waits_and_warms_up_longer():
    small, large = estimate(SMALL), estimate(LARGE)
    # 72B in bf16 is ~145 GB on disk, 7B ~15 GB: minutes more of hydration at 300 MiB/s.
    assert large.weights_s - small.weights_s > 6 * 60
    assert start_time.instance_warmup_s(large) - start_time.instance_warmup_s(small) == large.weights_s - small.weights_s
    # With a short readiness bound the wait is the estimate's: twice the expected start.
    short = 5 * 60
    small_wait, large_wait = (start_time.capacity_wait_s(e, short) for e in (small, large))
    assert (small_wait, large_wait) == (2 * small.total_s, 2 * large.total_s)
    assert large_wait > small_wait


def test_the_wait_never_ends_before_a_replicas_own_launch_hook_would():
    small = estimate(SMALL)
    long_readiness = 4 * 3600  # readinessTimeoutMinutes=240: the hook may wait that long
    assert start_time.capacity_wait_s(small, long_readiness) == long_readiness + small.boot_s
    assert start_time.instance_warmup_s(small) >= start_time.MIN_WARMUP_S
