"""A start's speed and a stop's grace, as the program builds them (recording mocks): the model
volume's throughput, vLLM's compile cache on it, Docker's stop timeout above vLLM's drain, and the
fleet's bake that warms the cache."""

from __future__ import annotations

import pytest

from components.host_setup import MODELS_DIR
from serving.compile_cache import CACHE_DIR_NAME
from sizing.start_stages import model_volume_performance
from tests.components.test_fleet_program import baked_files, prod_fleet
from tests.harness import reveal, stack_config

VOLUME = "aws:ebs/volume:Volume"


def expected_volume(run):
    """What sizing.start_stages provisions for the run's sizing (its weights, per node)."""
    sizing = run.exports["sizing"].value
    return model_volume_performance(sizing["weightsOnDiskGb"] / sizing["nodes"])


def vllm_container(run):
    return run.named("vllm-vllm-container")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_model_volume_reads_the_weights_within_the_target_and_dev_keeps_the_free_baseline(program, stack):
    run = program(stack_config(stack), stack=stack)
    volume = run.one(VOLUME).plain
    expected = expected_volume(run)
    if stack == "dev":  # 3 GB: gp3's free 125 MiB/s is enough; the volume's inputs stay as they were
        assert "throughput" not in volume and "iops" not in volume and expected.throughput_mib_s == 125
    else:
        assert volume["throughput"] == expected.throughput_mib_s > 125
        assert volume.get("iops", 3000) * 0.25 >= volume["throughput"], "gp3: 0.25 MiB/s per IOPS at most"


def test_a_throughput_set_in_the_stack_is_the_volumes(program):
    run = program({**stack_config("dev"), "modelVolumeThroughputMibps": 600}, stack="dev")
    volume = run.one(VOLUME).plain
    assert (volume["throughput"], volume.get("iops", 3000)) == (600, 3000)
    assert run.exports["costUsd"].value["stoppedPerMonth"] > program(stack_config("dev"), stack="dev").exports[
        "costUsd"].value["stoppedPerMonth"] + 18, "(600 - 125) MiB/s x $0.04 a month"


def test_the_compile_cache_lives_on_the_model_volume_per_instance_type(program):
    run = program(stack_config("prod"), stack="prod")
    container = vllm_container(run).plain
    (volume,) = container["volumes"]
    env = reveal(vllm_container(run).inputs["envs"])
    assert volume["containerPath"] == "/vllm-cache" and "VLLM_CACHE_ROOT=/vllm-cache" in env
    sizing = run.exports["sizing"].value
    assert volume["hostPath"].startswith(f"{MODELS_DIR}/{CACHE_DIR_NAME}/{sizing['instanceType']}--")


def test_docker_waits_for_vllms_drain_before_killing_it(program):
    container = vllm_container(program(stack_config("prod"), stack="prod")).plain
    args = container["command"]
    drain = int(args[args.index("--shutdown-timeout") + 1])
    assert drain > 0
    assert container["stopTimeout"] > drain and container["destroyGraceSeconds"] > drain


def test_the_fleet_bake_warms_the_compile_cache_before_the_cleanup_and_each_replica_mounts_it(program):
    run = prod_fleet(program)
    warm = run.named("vllm-builder-compile-cache")
    assert warm.depends_on(run.named("vllm-builder-replica-install"))
    assert run.named("vllm-builder-bake-cleanup").depends_on(warm)
    files = baked_files(run)
    assert "warm_compile_cache.sh" in files
    env = dict(line.split("=", 1) for line in files["replica.env"].splitlines() if "=" in line and not line.startswith("#"))
    assert env["VLLM_DEPLOY_COMPILE_CACHE_BASE"] == f"{MODELS_DIR}/{CACHE_DIR_NAME}"
    assert env["VLLM_DEPLOY_COMPILE_CACHE_MOUNT"] == "/vllm-cache"
    # The builder's model volume (each replica's copy starts from its snapshot) at the throughput.
    builder_volume = run.named("vllm-builder-models-volume").plain
    assert builder_volume["throughput"] == expected_volume(run).throughput_mib_s > 125
