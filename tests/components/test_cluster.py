"""A model across several nodes under recording mocks: the cluster network, EFA, the Ray wiring
between the workers and the head, and what stays on the head only (issue 15)."""

import re

import pytest

from serving.flag_reader import check_flags
from sizing.gpus import load_instances
from sizing.start_stages import VolumePerformance
from tests.harness import AwsWorld, plain_text, reveal

INSTANCE = "aws:ec2/instance:Instance"
CONTAINER = "docker:index/container:Container"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
PLACEMENT_GROUP = "aws:ec2/placementGroup:PlacementGroup"
ENI = "aws:ec2/networkInterface:NetworkInterface"
EIP_ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"
DOCKER_PROVIDER = "pulumi:providers:docker"

# Sizing puts Llama-3.1-405B at bf16 on 2 x p4de.24xlarge (TP 8 inside, PP 2 across), an EFA
# type; a 7B model forced onto two single-GPU g5.2xlarge (no EFA) takes plain TCP.
LARGE = {"model": "meta-llama/Llama-3.1-405B-Instruct", "nodes": "2"}
TCP_PAIR = {"model": "Qwen/Qwen2.5-7B-Instruct", "nodes": "2", "instanceType": "g5.2xlarge"}


@pytest.fixture(scope="module")
def runs():
    """Each cluster program once (they take seconds): the tests read the recordings."""
    return {}


@pytest.fixture
def cluster(program, runs):
    def run(config):
        key = tuple(sorted(config.items()))
        if key not in runs:
            runs[key] = program(config)
        return runs[key]

    return run


def by_node(resources):
    """{0: head's, 1: node 1's, ...} by the naming convention (vllm-host-*, vllm-node<i>-*)."""
    numbered = (re.search(r"-node(\d+)-", r.name) for r in resources)
    return {int(m.group(1)) if m else 0: r for m, r in zip(numbered, resources)}


def test_every_node_is_an_identical_instance_in_one_placement_group_and_subnet(cluster):
    for config in (LARGE, TCP_PAIR):
        run = cluster(config)
        instances = run.of_type(INSTANCE)
        sizing = run.exports["sizing"].value
        assert len(instances) == sizing["nodes"] == 2
        assert {i.plain["instanceType"] for i in instances} == {sizing["instanceType"]}
        group = run.one(PLACEMENT_GROUP)
        assert group.plain["strategy"] == "cluster"
        assert all(i.depends_on(group) for i in instances)
        assert {i.plain["placementGroup"] for i in instances} == {f"{group.name}-4f2a9c1"}
        # One subnet for all: on the instance, or (EFA) on each of its interfaces.
        subnets = {i.plain.get("subnetId") for i in instances} | {e.plain["subnetId"] for e in run.of_type(ENI)}
        subnets.discard(None)
        assert len(subnets) == 1


def test_the_cluster_security_group_admits_its_members_only_and_opens_nothing_outside(cluster):
    for config in (LARGE, TCP_PAIR):
        run = cluster(config)
        cluster_group = run.named("vllm-cluster-sg")
        inside = [r for r in run.of_type(INGRESS) if r.depends_on(cluster_group)]
        assert len(inside) == 1
        rule = inside[0].plain
        assert rule["securityGroupId"] == rule["referencedSecurityGroupId"], "self-referencing"
        assert rule["ipProtocol"] == "-1"
        assert not any(k in rule for k in ("cidrIpv4", "cidrIpv6", "prefixListId"))
        out = [r.plain for r in run.of_type(EGRESS) if r.depends_on(cluster_group)]
        assert [r["referencedSecurityGroupId"] for r in out] == [rule["securityGroupId"]]
        # From outside: the head takes HTTPS/HTTP and SSH, a worker SSH only, as on one node.
        head_rules = {r.plain["fromPort"] for r in run.of_type(INGRESS) if r.name.startswith("vllm-host-")}
        worker_rules = {r.plain["fromPort"] for r in run.of_type(INGRESS) if r.name.startswith("vllm-node1-host-")}
        assert head_rules == {443, 80, 22} and worker_rules == {22}
        # Every node is in the cluster group.
        for node in run.of_type(INSTANCE):
            groups = node.plain.get("vpcSecurityGroupIds")
            if groups is None:  # EFA: the groups are on the interfaces
                groups = [g for e in run.of_type(ENI) if node.depends_on(e) for g in e.plain["securityGroups"]]
            assert rule["securityGroupId"] in groups


def test_efa_interfaces_go_only_to_types_that_have_them(cluster):
    catalog = {i.name: i for i in load_instances()}
    large, tcp = cluster(LARGE), cluster(TCP_PAIR)
    p4de = catalog[large.exports["sizing"].value["instanceType"]]
    assert p4de.efa_max_interfaces > 0 and catalog["g5.2xlarge"].efa_max_interfaces == 0
    assert tcp.of_type(ENI) == []
    assert all(i.plain["associatePublicIpAddress"] is True for i in tcp.of_type(INSTANCE))

    for index, instance in by_node(large.of_type(INSTANCE)).items():
        interfaces = [e for e in large.of_type(ENI) if instance.depends_on(e)]
        assert len(interfaces) == p4de.efa_max_interfaces
        attached = instance.plain["networkInterfaces"]
        assert sorted(a["networkCardIndex"] for a in attached) == list(range(p4de.efa_max_interfaces))
        assert {e.plain["interfaceType"] for e in interfaces} <= {"efa", "efa-only"}
        primary = [a for a in attached if a["deviceIndex"] == 0 and a["networkCardIndex"] == 0]
        assert len(primary) == 1
        # EC2 refuses a subnet, groups or a public IP request beside network_interfaces.
        assert not {"subnetId", "vpcSecurityGroupIds", "associatePublicIpAddress"} & instance.plain.keys()
        # The Elastic IP goes to the primary interface (the instance has several).
        prefix = "vllm-host" if index == 0 else f"vllm-node{index}-host"
        association = large.named(f"{prefix}-eip-assoc").plain
        assert association["networkInterfaceId"] == primary[0]["networkInterfaceId"]
        assert "instanceId" not in association
    # Each node checks its EFA software before vLLM starts there.
    for prefix in ("vllm-setup", "vllm-node1-setup"):
        efa = large.named(f"{prefix}-efa")
        assert reveal(efa.inputs["environment"])["VLLM_DEPLOY_EFA_INTERFACES"] == str(p4de.efa_max_interfaces)
        assert efa.depends_on(large.named(f"{prefix}-gpu-check"))
    assert not [r for r in tcp.resources if r.name.endswith("-efa")]
    # The head's container reaches the adapters: their devices, the host's EFA libraries and
    # NCCL's plugin, unlimited locked memory; the workers' get the same through ray_node.sh.
    head = large.named("vllm-vllm-container").plain
    assert len(head["devices"]) == p4de.efa_max_interfaces
    assert all(d["hostPath"].startswith("/dev/infiniband/uverbs") for d in head["devices"])
    amazon = next(m for m in head["mounts"] if m["target"] == "/opt/amazon")
    assert amazon["source"] == "/opt/amazon" and amazon["readOnly"] is True
    assert head["ulimits"] == [{"name": "memlock", "soft": -1, "hard": -1}]
    env = dict(e.split("=", 1) for e in reveal(large.named("vllm-vllm-container").inputs["envs"]))
    assert "/opt/amazon/ofi-nccl/lib" in env["LD_LIBRARY_PATH"].split(":")
    worker = reveal(large.named("vllm-node1-ray-ray").inputs["environment"])
    assert worker["VLLM_DEPLOY_EFA_DEVICES"] == str(p4de.efa_max_interfaces)
    assert "NCCL_NET_PLUGIN=ofi" in worker["VLLM_DEPLOY_CONTAINER_ENV"].split()
    tcp_head = tcp.named("vllm-vllm-container").plain
    assert not tcp_head.get("devices") and not tcp_head.get("ulimits")
    assert reveal(tcp.named("vllm-node1-ray-ray").inputs["environment"])["VLLM_DEPLOY_EFA_DEVICES"] == "0"


def test_workers_join_the_heads_private_ip_and_the_head_waits_for_every_node(cluster):
    for config in (LARGE, TCP_PAIR):
        run = cluster(config)
        nodes = {n["name"]: n for n in run.exports["nodes"].value}
        head, worker = nodes["node-0"], nodes["node-1"]
        assert head["role"] == "head" and worker["role"] == "worker"
        assert head["privateIp"] != worker["privateIp"]
        join = run.named("vllm-node1-ray-ray")
        env = reveal(join.inputs["environment"])
        assert env["VLLM_DEPLOY_RAY_ROLE"] == "worker"
        assert env["VLLM_DEPLOY_RAY_HEAD_IP"] == head["privateIp"]
        assert env["VLLM_DEPLOY_NODE_IP"] == worker["privateIp"]
        assert env["VLLM_DEPLOY_RAY_PORT"] == "6379"
        # The worker's Ray container starts only with its own weights and image in place.
        assert join.depends_on(run.named("vllm-node1-setup-model"))
        assert join.depends_on(run.named("vllm-node1-ray-image"))
        # The head's container (the Ray head and vLLM) knows every node, head first, and
        # starts after every worker has its image and weights.
        container = run.named("vllm-vllm-container")
        head_env = dict(e.split("=", 1) for e in reveal(container.inputs["envs"]))
        assert head_env["VLLM_DEPLOY_RAY_NODES"] == f"node-0={head['privateIp']} node-1={worker['privateIp']}"
        assert head_env["VLLM_DEPLOY_NODE_IP"] == head["privateIp"]
        assert head_env["VLLM_DEPLOY_GPUS_PER_NODE"] == str(run.exports["sizing"].value["gpus"])
        assert container.plain["entrypoints"][-1].endswith("serve_on_ray_head.sh")
        assert container.plain["networkMode"] == "host"
        uploaded = {u["file"].rsplit("/", 1)[1] for u in container.plain["uploads"]}
        # The scripts, and the Ray token file (tests/components/test_ray_auth.py).
        assert uploaded == {"lib.sh", "ray_node.sh", "wait_for_ray_gpus.sh", "serve_on_ray_head.sh", "ray-auth-token"}
        assert container.depends_on(run.named("vllm-node1-ray-image"))
        assert container.depends_on(run.named("vllm-node1-setup-model"))
        # The worker joins once the head's container (its Ray head) exists, and readiness
        # waits for the join: a node that cannot join fails its own step, naming it.
        assert join.depends_on(container)
        assert run.named("vllm-vllm-ready").depends_on(join)
        assert container.plain["init"] is True, "Docker's init reaps the Ray processes"


def test_nginx_monitoring_and_the_endpoint_live_on_the_head_only(cluster):
    run = cluster(LARGE)
    head_engine = run.named("vllm-docker")
    assert plain_text(head_engine.inputs["host"]).endswith("@203.0.113.10")
    nginx = [c for c in run.of_type(CONTAINER) if c.name == "vllm-proxy-container"]
    assert len(nginx) == 1 and nginx[0].provider.startswith(head_engine.urn)
    for container in run.of_type(CONTAINER):
        assert container.provider.startswith(head_engine.urn), container.name
    head = next(n for n in run.exports["nodes"].value if n["role"] == "head")
    assert run.exports["endpoint"].value == f"https://{head['publicIp']}/v1"
    assert run.exports["instanceId"].value == head["instanceId"]


def test_the_heads_vllm_runs_tensor_parallel_inside_and_pipeline_parallel_across_on_ray(cluster):
    run = cluster(LARGE)
    sizing = run.exports["sizing"].value
    argv = run.named("vllm-vllm-container").plain["command"]
    check_flags(argv[1:])  # raises ConfigError naming what the pinned vLLM would reject

    def flag(name):
        return argv[argv.index(name) + 1]

    assert int(flag("--tensor-parallel-size")) == sizing["tensorParallelSize"] == sizing["gpus"]
    assert int(flag("--pipeline-parallel-size")) == sizing["nodes"] == 2
    assert flag("--distributed-executor-backend") == "ray"
    # On the host's network vLLM binds loopback itself: nginx stays the only way in.
    assert flag("--host") == "127.0.0.1"


def test_replacing_any_node_restarts_the_clusters_vllm(cluster):
    run = cluster(LARGE)
    container = run.named("vllm-vllm-container")
    labels = {label["label"]: label["value"] for label in container.plain["labels"]}
    ids = [n["instanceId"] for n in run.exports["nodes"].value]
    assert labels["vllm-deploy.cluster-instances"].split(",") == ids
    assert container.delete_before_replace
    # A replaced head: the worker joins the new one (its step's triggers hold the head's id).
    join = run.named("vllm-node1-ray-ray")
    assert ids[0] in reveal(join.inputs["triggers"])


def test_the_nodes_output_and_the_cost_count_every_node(cluster):
    run = cluster(LARGE)
    nodes = run.exports["nodes"].value
    assert [n["name"] for n in nodes] == ["node-0", "node-1"]
    instances = by_node(run.of_type(INSTANCE))
    assert [n["instanceId"] for n in nodes] == [f"{instances[i].name}-id" for i in (0, 1)]
    # Each node's model volume, so a retained one can be found and deleted after destroy.
    volumes = [n["modelVolumeId"] for n in nodes]
    assert volumes[0] == run.exports["modelVolumeId"].value
    assert len(set(volumes)) == 2 and all(v.startswith("vol-") for v in volumes)
    cost = run.exports["costUsd"].value
    sizing = run.exports["sizing"].value
    # Both instances (the sizing's price is the two together), both nodes' volumes and
    # both Elastic IPs: running costs more than the instances alone, stopped keeps 2 addresses.
    assert cost["runningPerHour"] > sizing["hourlyPriceUsd"]
    volumes_gb = 2 * (sizing["rootVolumeGb"] + sizing["modelVolumeGb"])
    # ...and each model volume's throughput and IOPS above gp3's baseline (the same on both).
    performance = [VolumePerformance(v.plain.get("throughput") or 125, v.plain.get("iops") or 3000).usd_per_month
                   for v in run.of_type("aws:ebs/volume:Volume")]
    assert len(performance) == 2 and performance[0] == performance[1] > 0
    assert cost["stoppedPerHour"] == pytest.approx((volumes_gb * 0.08 + sum(performance)) / 730 + 2 * 0.005, abs=1e-4)


def test_idle_stop_is_refused_across_nodes_before_any_resource(program):
    run = program({**TCP_PAIR, "idleStopMinutes": "30"}, expect_error=True)
    message = str(run.error)
    assert "idleStopMinutes=30" in message and "2 x g5.2xlarge" in message
    assert "pulumi config rm idleStopMinutes" in message
    assert run.cloud_resources == []
    # The advice works: the same stack without the key deploys its two nodes.
    fixed = program(TCP_PAIR)
    assert len(fixed.of_type(PLACEMENT_GROUP)) == 1


def test_idle_stop_below_its_minimum_is_refused_naming_the_way_to_turn_it_off(program):
    run = program({"model": "Qwen/Qwen2.5-1.5B-Instruct", "idleStopMinutes": "0"}, expect_error=True)
    assert "idleStopMinutes" in str(run.error) and run.cloud_resources == []


def test_one_node_has_no_cluster_network_ray_or_efa(program):
    run = program({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192})
    assert run.of_type(PLACEMENT_GROUP) == [] and run.of_type(ENI) == []
    assert not [r for r in run.resources if "ray" in r.name.split("-")]
    container = run.named("vllm-vllm-container").plain
    assert "entrypoints" not in container and container.get("networkMode") is None
    assert [n["role"] for n in run.exports["nodes"].value] == ["head"]


def test_a_workers_volume_in_another_zone_does_not_pull_the_worker_out_of_the_heads_subnet(program):
    """A cluster placement group lives in one zone: a worker whose model volume (kept from an
    earlier deploy) sits in another zone still launches in the head's subnet, with a new model
    volume in the head's zone; only the head's volume guides the zone."""
    ours = {"project": "vllm-deploy", "stack": "dev", "managed-by": "pulumi"}
    world = AwsWorld()
    world.volumes = [
        {"id": "vol-0headheadheadhead", "status": "in-use", "zone": "us-east-1b", "size": 100,
         "tags": {**ours, "Name": "vllm-models-volume"}},
        {"id": "vol-0nodenodenodenode", "status": "in-use", "zone": "us-east-1c", "size": 100,
         "tags": {**ours, "Name": "vllm-node1-models-volume"}},
    ]
    run = program(TCP_PAIR, world=world)
    subnets = {i.plain["subnetId"] for i in run.of_type(INSTANCE)}
    assert subnets == {world.subnet_id("us-east-1b")}
    volumes = run.of_type("aws:ebs/volume:Volume")
    assert len(volumes) == 2
    assert {v.plain["availabilityZone"] for v in volumes} == {"us-east-1b"}
    # The worker's weights are downloaded again there: the preview says so, naming the node.
    moved = [line for line in run.logs if "vol-0nodenodenodenode" in line]
    assert len(moved) == 1 and "node-1" in moved[0] and "us-east-1c" in moved[0] and "downloads the weights again" in moved[0]


def test_each_worker_mounts_its_own_downloaded_weights_where_the_heads_vllm_loads_them(cluster):
    """vLLM's Ray workers on node i load the model from the path in the head's argv, on node i's
    disk: the worker container must mount the directory node i's download step wrote, at the
    path the head's container mounts its own copy."""
    for config in (LARGE, TCP_PAIR):
        run = cluster(config)
        head = run.named("vllm-vllm-container").plain
        model_path = head["command"][0]
        head_mount = next(m for m in head["mounts"] if m["target"] == model_path)
        for index in range(1, run.exports["sizing"].value["nodes"]):
            downloaded = reveal(run.named(f"vllm-node{index}-setup-model").inputs["environment"])
            join = reveal(run.named(f"vllm-node{index}-ray-ray").inputs["environment"])
            assert join["VLLM_DEPLOY_MODEL_DIR"] == downloaded["VLLM_DEPLOY_MODEL_DIR"] == head_mount["source"]
            assert join["VLLM_DEPLOY_MODEL_MOUNT"] == model_path


def test_across_nodes_a_tensor_parallel_size_below_the_nodes_gpus_is_refused(program):
    """vLLM 0.33's Ray executor packs TP x PP single-GPU bundles onto as few nodes as hold them
    (ray_utils.initialize_ray_cluster, PACK): TP 4 x PP 2 on two 8-GPU nodes would run on node 0
    while node 1 bills idle (review finding)."""
    run = program({"model": "Qwen/Qwen2.5-1.5B-Instruct", "nodes": "2", "instanceType": "p4d.24xlarge"},
                  expect_error=True)
    message = str(run.error)
    assert "instanceType=p4d.24xlarge" in message
    assert "tensor parallel 4 would use 4 of each node's 8 GPUs" in message and "sit idle" in message
    assert "the cheapest that fits is 2 x " in message, "a way out that works"
    assert run.cloud_resources == []
    # Left to choose, the sizing uses every GPU of each node.
    chosen = program({"model": "Qwen/Qwen2.5-1.5B-Instruct", "nodes": "2"}).exports["sizing"].value
    assert chosen["tensorParallelSize"] == chosen["gpus"]
