"""A replica's expected start (sizing.start_time) and the fleet timings derived from it."""

from __future__ import annotations

import math

from config.validation import parse
from sizing import start_time
from sizing.choice import plan
from sizing.start_stages import FLEET_ROOT_VOLUME_MIB_S, rate
from sizing.startup import model_volume_for

SMALL, LARGE = "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-72B-Instruct"


def estimate(model: str, **keys) -> start_time.ReplicaStart:
    config = parse({"model": model, "replicas": 3, **keys})
    return start_time.replica_start(plan(config), config)


def test_each_term_groups_the_fleet_cold_stages_of_the_start_model():
    config = parse({"model": SMALL, "replicas": 3})
    small = plan(config)
    got = start_time.replica_start(small, config)
    volume = model_volume_for(small, config).throughput_mib_s
    # The weights hydrate at the slower of the initialization rate and the volume's throughput.
    assert got.weights_s == math.ceil(small.weights_on_disk_gb * 1e9 / 2**20 / min(300, volume))
    image_gb = rate("vllm_image_unpacked") * 2**30 / 1e9
    assert got.image_s == math.ceil(image_gb * 1e9 / 2**20 / min(300, FLEET_ROOT_VOLUME_MIB_S))
    assert got.boot_s == math.ceil(rate("instance_boot") + rate("first_boot_work"))
    assert got.engine_s == math.ceil(rate("torch_compile_cached") + rate("cuda_graph_capture")
                                     + rate("api_server_ready") + rate("alb_healthy"))
    assert got.total_s == got.boot_s + got.image_s + got.weights_s + got.engine_s
    eager = start_time.replica_start(small, config, enforce_eager=True)
    assert eager.engine_s < got.engine_s and eager.weights_s == got.weights_s


def test_a_faster_model_volume_shortens_the_weights_term_up_to_the_initialization_rate():
    slow = parse({"model": LARGE, "replicas": 3, "modelVolumeThroughputMibps": 125})
    fast = parse({"model": LARGE, "replicas": 3, "modelVolumeThroughputMibps": 1000})
    slow_s = start_time.replica_start(plan(slow), slow).weights_s
    fast_s = start_time.replica_start(plan(fast), fast).weights_s
    assert slow_s > 2 * fast_s  # 125 MiB/s against the 300 MiB/s initialization rate


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


def test_a_quick_restart_still_gets_the_minimum_warm_up():
    """A tiny eager model restarts in well under a minute: the refresh still waits MIN_WARMUP_S."""
    config = parse({"model": "Qwen/Qwen2.5-0.5B-Instruct", "replicas": 2, "vllmExtraArgs": ["--enforce-eager"]})
    quick = start_time.replica_start(plan(config), config, enforce_eager=True)
    assert quick.vllm_restart_s < start_time.MIN_WARMUP_S
    assert start_time.instance_warmup_s(quick) == start_time.MIN_WARMUP_S
