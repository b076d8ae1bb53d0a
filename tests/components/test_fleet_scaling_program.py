"""Issue 26 under recording mocks: the scaling policy's metric and target (and that the baked
CloudWatch agent publishes exactly that metric, its config valid for the agent's schema), the
warm pool, the lifecycle hooks, the spot fleet's mixed-instances policy and its type list (each
type runs the same vLLM argv), and a fixed fleet left exactly as issue 25 made it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components import fleet_scaling
from components.fleet_bake import LAUNCH_HOOK, SHUTDOWN_TIMEOUT_S, TERMINATE_HOOK
from config.validation import parse
from serving.monitoring import cloudwatch
from serving.vllm_args import SERVED_MODEL_PATH, VLLM_PORT, serve_args
from sizing import gpus
from sizing.choice import plan as choose_plan
from sizing.costs import GP3_USD_PER_GB_MONTH
from tests.components.test_fleet_program import API_KEY, ASG, baked_files, provisioned_performance_usd_per_month
from tests.harness import AwsWorld, stack_config

POLICY = "aws:autoscaling/policy:Policy"
SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "cloudwatch-agent" / "schema.json"


def fleet(program, **extra):
    values = {**stack_config("prod"), "replicas": 2, **extra}
    return program(values, stack="prod", secrets={"apiKey": API_KEY}, world=AwsWorld()), values


def test_max_replicas_tracks_the_replicas_average_waiting_requests_that_the_agent_publishes(program, tmp_path):
    run, _ = fleet(program, maxReplicas=6, scaleOnWaitingRequests=3)
    group = run.one(ASG)
    assert (group.plain["minSize"], group.plain["maxSize"]) == (2, 6)
    assert group.plain.get("desiredCapacity") is None  # left to the policy: `pulumi up` never resets it
    policy = run.one(POLICY)
    assert policy.plain["autoscalingGroupName"] == group.plain["name"] and policy.depends_on(group)
    tracking = policy.plain["targetTrackingConfiguration"]
    assert policy.plain["policyType"] == "TargetTrackingScaling" and tracking["targetValue"] == 3
    assert not tracking.get("disableScaleIn")
    spec = tracking["customizedMetricSpecification"]
    assert spec["namespace"] == cloudwatch.NAMESPACE and spec["statistic"] == "Average"  # per replica, not Sum (P19)
    assert spec["metricDimensions"] == [{"name": "AutoScalingGroupName", "value": group.plain["name"]}]
    # The metric is one the baked agent publishes, with exactly that one dimension.
    files = baked_files(run)
    agent = json.loads(files["cloudwatch/agent.json"])
    assert spec["metricName"] in cloudwatch.published_metrics(agent)
    assert spec["metricName"] == "vllm_num_requests_waiting"  # vLLM's `vllm:` renamed by the scrape file
    (declaration,) = agent["logs"]["metrics_collected"]["prometheus"]["emf_processor"]["metric_declaration"]
    assert declaration["dimensions"] == [["AutoScalingGroupName"]]
    path = tmp_path / "agent.json"
    path.write_text(files["cloudwatch/agent.json"])
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    checked = subprocess.run([tool, "--schemafile", str(SCHEMA), str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Scale-in never cuts a stream: the group keeps its drain hook with the policy on.
    hooks = {h["name"]: h for h in group.plain["initialLifecycleHooks"]}
    assert hooks[TERMINATE_HOOK]["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    scaling = run.exports["scaling"].value
    assert (scaling["minReplicas"], scaling["maxReplicas"], scaling["targetWaitingRequestsPerReplica"]) == (2, 6, 3)
    assert scaling["costAtMaxPerMonth"] > scaling["costAtMinPerMonth"] > 0


def test_a_warm_pool_keeps_warm_replicas_stopped_and_its_hooks_fire_on_entry(program):
    run, _ = fleet(program, maxReplicas=4, warmReplicas=2)
    group = run.one(ASG)
    pool = group.plain["warmPool"]
    assert pool["poolState"] == "Stopped" and pool["minSize"] == 2
    assert pool["maxGroupPreparedCapacity"] == 2 + 2  # at the minimum the pool holds exactly warmReplicas
    assert pool["instanceReusePolicy"]["reuseOnScaleIn"] is False  # scale-in goes through the drain hook
    hooks = {h["name"]: h for h in group.plain["initialLifecycleHooks"]}
    # The launch hook is the one AWS pauses at Warmed:Pending:Wait: boot.sh's warmed path completes it.
    assert hooks[LAUNCH_HOOK]["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert hooks[LAUNCH_HOOK]["defaultResult"] == "ABANDON"
    sizing = run.exports["sizing"].value
    replica_gb = sizing["rootVolumeGb"] + sizing["modelVolumeGb"]
    scaling = run.exports["scaling"].value
    replica_extra, _ = provisioned_performance_usd_per_month(run)  # stopped volumes keep their throughput
    assert scaling["warmPoolPerMonth"] == pytest.approx(2 * (replica_gb * GP3_USD_PER_GB_MONTH + replica_extra), abs=0.01)
    assert "vllm-deploy:warmReplicas" not in " ".join(run.logs)


def test_spot_is_a_mixed_instances_group_over_types_that_run_the_same_argv(program):
    # prod caps the price at $3/h; at $6/h the 4-GPU g6.12xlarge fits too, with another argv.
    run, values = fleet(program, spot=True, maxReplicas=5, onDemandReplicas=1, maxHourlyPriceUsd=6)
    group = run.one(ASG)
    assert group.plain.get("launchTemplate") is None and group.plain["capacityRebalance"] is True
    assert "warmPool" not in group.plain or group.plain["warmPool"] is None
    # The builder the image is made on stays on-demand: an interruption would stop its provisioning.
    builders = run.of_type("aws:ec2/instance:Instance")
    assert builders and all(not b.plain.get("instanceMarketOptions") for b in builders)
    policy = group.plain["mixedInstancesPolicy"]
    distribution = policy["instancesDistribution"]
    assert distribution["onDemandBaseCapacity"] == 1 and distribution["onDemandPercentageAboveBaseCapacity"] == 0
    assert distribution["spotAllocationStrategy"] == "price-capacity-optimized"
    assert distribution["onDemandAllocationStrategy"] == "prioritized"
    assert policy["launchTemplate"]["launchTemplateSpecification"]["version"] == "1"  # pinned, as issue 25
    types = [o["instanceType"] for o in policy["launchTemplate"]["overrides"]]
    chosen = run.exports["sizing"].value["instanceType"]
    assert types[0] == chosen and len(types) >= 2 and len(set(types)) == len(types)
    prices = [gpus.get(t).on_demand_usd_per_hour for t in types]
    assert prices == sorted(prices)  # cheapest first: the on-demand base's priority
    assert {gpus.get(t).gpu_model for t in types} == {gpus.get(chosen).gpu_model}  # one image, one GPU
    # Each type fits the model and renders the very argv the image carries.
    baked = json.loads(baked_files(run)["vllm-args.json"])
    config = parse({k: v for k, v in values.items() if ":" not in k})
    for name in types:
        sized = choose_plan(config.model_copy(update={"instance_type": name}))
        argv = serve_args(config, sized, model_path=SERVED_MODEL_PATH, port=VLLM_PORT)
        # Every host's argv carries --shutdown-timeout (serving.vllm_args): the replica's is the same.
        assert argv == baked and argv[argv.index("--shutdown-timeout") + 1] == str(SHUTDOWN_TIMEOUT_S), name
    # A type of the same GPU that would need another argv is left out, and the preview says why.
    assert "g6.12xlarge" not in types and "g6.16xlarge" in types
    assert "g6.24xlarge" not in types  # above maxHourlyPriceUsd: the price cap holds for spot types too
    assert any("g6.12xlarge: another vLLM argv: --tensor-parallel-size 4 (not 1)" in line for line in run.logs)
    scaling = run.exports["scaling"].value
    assert scaling["instanceTypes"] == types and scaling["spotStreamBoundSeconds"] == fleet_scaling.SPOT_STREAM_BOUND_S


def test_preview_refuses_a_warm_pool_beside_spot_naming_both_keys(program):
    run = program({**stack_config("prod"), "replicas": 2, "spot": True, "warmReplicas": 1}, stack="prod",
                  secrets={"apiKey": API_KEY}, world=AwsWorld(), expect_error=True)
    assert run.cloud_resources == []
    text = str(run.error)
    assert "warmReplicas=1" in text and "spot=true" in text and "set warmReplicas to 0" in text


def test_a_fixed_on_demand_fleet_is_exactly_issue_25s(program):
    run, _ = fleet(program)
    group = run.one(ASG)
    assert group.plain["desiredCapacity"] == group.plain["minSize"] == group.plain["maxSize"] == 2
    assert group.plain["launchTemplate"]["version"] == "1"
    for key in ("warmPool", "mixedInstancesPolicy", "capacityRebalance"):
        assert group.plain.get(key) in (None, False), key
    assert not run.of_type(POLICY) and "scaling" not in run.exports
