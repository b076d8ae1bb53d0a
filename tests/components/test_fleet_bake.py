"""What a fleet's image holds (components.fleet_bake): the replica's files from the host side's
renderer, the keep-alive pair, the image digest, the hook timeouts, the refusal gate. Pure."""

import io
import tarfile
import base64

import pytest

from components import fleet_bake
from components.fleet_image import bake_archive
from config.validation import parse
from serving.proxy_limits import stack_limits
from sizing.choice import plan as choose_plan
from stack.preflight import vllm_command

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"


def bake(**values):
    settings = parse({"model": MODEL, "maxModelLen": 8192, "replicas": 2, **values})
    plan = choose_plan(settings)
    return fleet_bake.bake_files(
        settings, plan, vllm_argv=vllm_command(settings, plan), limits=stack_limits(settings, plan),
        region="us-east-1", stack="prod", model_host_dir="/data/models/x", alb_subnet_cidrs=["172.31.0.0/20"],
        driver_branch="580",
    )


def test_the_replica_files_carry_no_grafana_and_the_keepalive_outlasts_the_balancer():
    baked = bake()
    assert "nginx/nginx.conf" in baked.files and "/grafana/" not in baked.files["nginx/nginx.conf"]
    assert 1 <= baked.alb_idle_timeout_s <= 4000 and baked.nginx_keepalive_timeout_s > baked.alb_idle_timeout_s


@pytest.mark.parametrize("change", [
    {"modelRevision": "a1b2c3d"}, {"vllmImage": "vllm/vllm-openai:v0.33.0@sha256:" + "a" * 64},
    {"maxModelLen": 4096}, {"diskSizeGb": 300},
])
def test_the_digest_moves_with_what_the_image_holds(change):
    assert bake(**change).digest != bake().digest


def test_the_digest_stays_for_what_the_image_does_not_hold():
    # drainSeconds is the target group's deregistration delay: no replica file reads it, so a
    # change of it must not bake a new image and roll every replica.
    assert bake(replicas=5, allowedCidrs=["10.0.0.0/8"], drainSeconds=60).digest == bake().digest


def test_the_archive_is_deterministic_and_holds_the_replica_files_once(monkeypatch):
    """The archive is the upload step's stdin: a byte that moves with the clock (gzip's header
    stamps the time unless told) would re-run the upload on every `pulumi up`."""
    import time as time_module

    baked = bake()
    first = bake_archive(baked)
    monkeypatch.setattr(time_module, "time", lambda: 2_000_000_000.0)  # another second, another day
    second = bake_archive(bake())
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(first))) as tar:
        names = tar.getnames()
    # install_replica.sh installs the files beside it: they sit at the archive's top, one copy.
    assert sorted(names) == sorted(baked.files) and fleet_bake.INSTALL_SCRIPT in names


def test_hook_timeouts_cover_the_drain_and_the_readiness_bound():
    assert fleet_bake.terminate_hook_timeout_s(300) >= 300 + fleet_bake.SHUTDOWN_TIMEOUT_S + 30
    assert 3600 + fleet_bake.SHUTDOWN_TIMEOUT_S + 30 <= fleet_bake.terminate_hook_timeout_s(3600) <= 7200
    settings = parse({"model": MODEL, "readinessTimeoutMinutes": 240})
    assert fleet_bake.launch_hook_timeout_s(settings) == 7200  # AWS's most for a heartbeat


@pytest.mark.parametrize("minutes", [1, 4, 30, 90, 240])
def test_a_replica_waits_for_vllm_as_long_as_readiness_timeout_minutes_and_heartbeats_within_the_hook(minutes):
    """boot.sh gives up (and abandons the launch) after VLLM_DEPLOY_HEALTH_TIMEOUT_S: that is the
    stack's readinessTimeoutMinutes, or a model that loads in 45 min under a 60 min bound is
    abandoned at 30 min, again and again (fleet-pitfalls P8); its heartbeats come well within
    the launch hook's heartbeat timeout, or the hook's ABANDON ends a load boot still waits for."""
    settings = parse({"model": MODEL, "maxModelLen": 8192, "replicas": 2, "readinessTimeoutMinutes": minutes})
    env = dict(line.split("=", 1) for line in bake(readinessTimeoutMinutes=minutes).files["replica.env"].splitlines()
               if line and not line.startswith("#"))
    assert int(env["VLLM_DEPLOY_HEALTH_TIMEOUT_S"]) == minutes * 60
    hook = fleet_bake.launch_hook_timeout_s(settings)
    assert 10 <= int(env["VLLM_DEPLOY_HEARTBEAT_INTERVAL_S"]) <= hook // 2


def test_the_digest_moves_with_any_host_script_the_builder_runs(tmp_path, monkeypatch):
    """A fix to a provisioning script (download_model.sh, install_docker.sh...) that is not one
    of the replica's files still changes what the image holds: it must re-bake (P11)."""
    before = bake().digest
    scripts = tmp_path / "scripts"
    for name, content in fleet_bake.script_files().items():
        (scripts / name).parent.mkdir(parents=True, exist_ok=True)
        (scripts / name).write_bytes(content)
    (scripts / "download_model.sh").write_bytes((scripts / "download_model.sh").read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(fleet_bake, "SCRIPTS_DIR", scripts)
    assert bake().digest != before


ADAPTERS = {"loraAdapters": [{"name": "sql", "model": "acme/sql-lora"}], "maxLoraRank": 16}


@pytest.mark.parametrize("change", [
    ADAPTERS,
    {**ADAPTERS, "loraAdapters": [{"name": "sql", "model": "acme/sql-lora", "revision": "v2"}]},
    {"speculativeModel": {"model": "Qwen/Qwen2.5-0.5B-Instruct", "numSpeculativeTokens": 3}},
])
def test_adapters_and_drafts_are_part_of_the_image(change):
    """Fixed at start and baked (fleet-pitfalls P20, P22): a new adapter, a new revision of
    one or a draft makes a new image, whose replicas mount each where the argv names it."""
    plain, with_addons = bake(), bake(**change)
    assert with_addons.digest != plain.digest
    if change is not ADAPTERS and "loraAdapters" in change:
        assert with_addons.digest != bake(**ADAPTERS).digest


def test_a_replica_mounts_the_baked_adapters_where_the_argv_names_them():
    settings = parse({"model": MODEL, "maxModelLen": 8192, "replicas": 2, **ADAPTERS})
    plan = choose_plan(settings)
    baked = fleet_bake.bake_files(
        settings, plan, vllm_argv=vllm_command(settings, plan), limits=stack_limits(settings, plan),
        region="us-east-1", stack="prod", model_host_dir="/data/models/x", alb_subnet_cidrs=["172.31.0.0/20"],
        driver_branch="580", addon_mounts=(("/data/models/acme--sql-lora--default", "/models/adapters/sql"),),
    )
    env = dict(line.split("=", 1) for line in baked.files["replica.env"].splitlines() if "=" in line)
    assert env["VLLM_DEPLOY_ADDON_MOUNTS"] == "/data/models/acme--sql-lora--default:/models/adapters/sql"
    assert "sql=/models/adapters/sql" in baked.files["vllm-args.json"]
    assert "VLLM_DEPLOY_ADDON_MOUNTS" not in bake().files["replica.env"]
