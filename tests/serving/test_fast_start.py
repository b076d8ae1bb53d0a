"""What every host's vLLM gets for a fast start and a graceful stop (serving.vllm_args), and
where its compile cache lives (serving.compile_cache, fleet-pitfalls P23)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from serving import compile_cache
from serving.flag_reader import check_flags
from serving.vllm_args import CONTAINER_CACHE_ROOT, CONTAINER_ENV, SHUTDOWN_TIMEOUT_S, prefetch_fits, serve_args
from sizing.gpus import GpuInstance
from tests.serving.test_vllm_args import L40S, MODEL_PATH, T4, flag_value, make_config, make_plan

BIG_RAM = GpuInstance("g6e.4xlarge", "NVIDIA L40S", 1, 44.5, 8.9, 16, 128.0, 3.004, "x86_64")


def test_every_host_drains_on_a_stop_unless_the_user_chose_a_timeout():
    argv = serve_args(make_config(), make_plan(), model_path=MODEL_PATH)
    assert flag_value(argv, "--shutdown-timeout") == str(SHUTDOWN_TIMEOUT_S) and SHUTDOWN_TIMEOUT_S > 0
    check_flags(argv[1:], source="test")  # raises on a flag the pinned vLLM would refuse
    own = serve_args(make_config(vllmExtraArgs=["--shutdown-timeout=120"]), make_plan(), model_path=MODEL_PATH)
    assert "--shutdown-timeout" not in own and own[-1] == "--shutdown-timeout=120"


def test_weights_are_prefetched_only_where_the_checkpoint_fits_the_page_cache_on_one_node():
    roomy = make_plan(instance=BIG_RAM)
    assert prefetch_fits(roomy)
    argv = serve_args(make_config(), roomy, model_path=MODEL_PATH)
    assert flag_value(argv, "--safetensors-load-strategy") == "prefetch"
    # 16 GiB of RAM (g4dn.xlarge) cannot hold 15 GB of weights beside vLLM's own processes.
    assert not prefetch_fits(make_plan(instance=T4))
    assert "--safetensors-load-strategy" not in serve_args(make_config(), make_plan(instance=T4), model_path=MODEL_PATH)
    # Across nodes vLLM splits the prefetch by global rank: a node would cache another's files.
    assert not prefetch_fits(replace(roomy, nodes=2))
    lazy = serve_args(make_config(vllmExtraArgs=["--safetensors-load-strategy", "lazy"]), roomy, model_path=MODEL_PATH)
    assert lazy.count("--safetensors-load-strategy") == 1 and flag_value(lazy, "--safetensors-load-strategy") == "lazy"


def test_the_cache_root_is_in_the_containers_environment_and_outside_vllms_compile_hash():
    assert CONTAINER_ENV["VLLM_CACHE_ROOT"] == CONTAINER_CACHE_ROOT


def test_one_cache_per_instance_type_image_and_argv():
    argv = serve_args(make_config(), make_plan(), model_path=MODEL_PATH)
    image = make_config().vllm_image
    model_dir = "/data/models/Qwen--Qwen2.5-7B-Instruct-default"
    base = compile_cache.host_cache_dir(model_dir, "g6e.xlarge", image, argv)
    assert base.startswith("/data/models/.vllm-compile-cache/g6e.xlarge--")
    assert compile_cache.host_cache_dir(model_dir, "g6e.xlarge", image, list(argv)) == base
    others = {
        compile_cache.host_cache_dir(model_dir, "g6e.2xlarge", image, argv),  # another type
        compile_cache.host_cache_dir(model_dir, "g6e.xlarge", image.replace("v0.33.0", "v0.33.1"), argv),
        compile_cache.host_cache_dir(model_dir, "g6e.xlarge", image, [*argv, "--enforce-eager"]),  # a flag
    }
    assert base not in others and len(others) == 3


@pytest.mark.parametrize("bad", ["relative/dir", "/data"])
def test_the_cache_lives_beside_the_weights_on_the_volume(bad):
    with pytest.raises(ValueError, match="model_dir"):
        compile_cache.cache_base(bad)
    with pytest.raises(ValueError, match="instance_type"):
        compile_cache.host_cache_dir("/data/models/x", "not a type", "img", [])
    assert L40S.name == "g6e.xlarge"


def test_a_spot_fleet_never_prefetches_so_every_type_of_its_gpu_runs_one_argv():
    roomy = make_plan(instance=BIG_RAM)
    spot = serve_args(make_config(replicas=3, spot=True), roomy, model_path=MODEL_PATH)
    assert "--safetensors-load-strategy" not in spot
    on_demand = serve_args(make_config(replicas=3), roomy, model_path=MODEL_PATH)
    assert flag_value(on_demand, "--safetensors-load-strategy") == "prefetch"
