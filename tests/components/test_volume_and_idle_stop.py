"""The model cache volume and idle stop, under recording mocks: what a change of instance type
keeps, where the host goes, what a stopped host does to `pulumi up`, what it all costs."""

import pytest

from components.host_setup import MODELS_DIR
from sizing.costs import GP3_USD_PER_GB_MONTH, HOURS_PER_MONTH, PUBLIC_IPV4_USD_PER_HOUR
from sizing.start_stages import VolumePerformance
from tests.components.test_program import reaches
from tests.harness import AwsWorld, stack_config

INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
OURS = {"project": "vllm-deploy", "stack": "dev", "managed-by": "pulumi"}


def step(run, role):
    return run.named(f"vllm-setup-{role}")


def zone_of(run) -> str:
    """The zone of the subnet the instance was placed in (the mocks name subnets after zones)."""
    return "us-east-1" + run.one(INSTANCE).plain["subnetId"][len("subnet-")]


def deployed(run, world, *, status="in-use", zone=None, size=None):
    """`world` after `run` was deployed: EC2 now lists its model volume."""
    volume = run.one(VOLUME)
    world.volumes = [{
        "id": "vol-0aaaabbbbccccdddd", "status": status, "zone": zone or volume.plain["availabilityZone"],
        "size": size or volume.plain["size"], "tags": {**OURS, "Name": volume.plain["tags"]["Name"]},
    }]
    return world


def inputs_from(run, res, prop):
    """The resources whose outputs feed `prop` of `res`."""
    return [run.by_urn(u) for u in res.property_dependencies.get(prop, [])]


# --- the volume -----------------------------------------------------------------------


def test_the_model_volume_is_encrypted_gp3_sized_from_the_weights_and_attached_to_the_host(program):
    run = program(SMALL)
    volume = run.one(VOLUME)
    sizing = run.exports["sizing"].value
    assert volume.plain["type"] == "gp3" and volume.plain["encrypted"] is True
    assert volume.plain["size"] == sizing["modelVolumeGb"] >= sizing["weightsOnDiskGb"]
    assert volume.plain["availabilityZone"] == zone_of(run), "a volume attaches only within its zone"
    assert volume.plain["tags"]["Name"] == "vllm-models-volume"
    provider = run.one("pulumi:providers:aws")
    assert volume.provider.startswith(provider.urn + "::"), "tagged like the rest (provider default tags)"
    attachment = run.one(ATTACHMENT)
    assert volume in inputs_from(run, attachment, "volumeId")
    assert run.one(INSTANCE) in inputs_from(run, attachment, "instanceId")
    assert attachment.plain["stopInstanceBeforeDetaching"] is True, "never detach a mounted volume"
    mount = step(run, "volume").plain["environment"]
    assert mount["VLLM_DEPLOY_VOLUME_ID"] == run.exports["modelVolumeId"].value
    assert mount["VLLM_DEPLOY_MODELS_DIR"] == MODELS_DIR
    assert run.exports["sizing"].value["rootVolumeGb"] == run.one(INSTANCE).plain["rootBlockDevice"]["volumeSize"]


def test_destroy_deletes_the_volume_unless_it_is_retained(program):
    assert program(SMALL).one(VOLUME).retain_on_delete is False
    assert program({**SMALL, "retainModelVolume": True}).one(VOLUME).retain_on_delete is True


def test_a_new_instance_type_keeps_the_volume_and_its_zone_and_does_not_download_again(program):
    # First deploy: g4dn.xlarge is offered in us-east-1b and c only, so the host and its
    # volume land in b.
    world = AwsWorld()
    world.zone_offerings = {"us-east-1a": {"g5.xlarge", "g6.xlarge"}}
    before = program({**SMALL, "instanceType": "g4dn.xlarge"}, world=world)
    assert zone_of(before) == "us-east-1b"
    # A new type offered everywhere: on its own the placement would take us-east-1a.
    assert zone_of(program({**SMALL, "instanceType": "g6.xlarge"}, world=AwsWorld())) == "us-east-1a"

    after = program({**SMALL, "instanceType": "g6.xlarge"}, world=deployed(before, world))
    assert after.one(INSTANCE).plain["instanceType"] == "g6.xlarge"
    assert zone_of(after) == "us-east-1b", "the host follows the volume's zone"
    assert after.one(VOLUME).plain == before.one(VOLUME).plain, "same volume inputs: no replacement"
    # ... and no resource option that would replace it with the instance either.
    volume = after.one(VOLUME)
    assert volume.replacement_trigger is None, "no trigger replaces it"
    assert set(volume.replace_on_changes) <= {"availabilityZone"}, "only a zone move replaces it"
    assert volume.deleted_with != after.one(INSTANCE).urn, "not deleted with the instance"
    assert after.one(INSTANCE) in inputs_from(after, after.one(ATTACHMENT), "instanceId"), \
        "the attachment follows the new instance"
    assert not any("the model volume vol-" in line for line in after.logs), "nothing moves, nothing to say"

    # The download is tied to the volume and the model, not to the instance...
    download_before, download = step(before, "model"), step(after, "model")
    for prop in ("triggers", "environment", "create"):
        assert download.plain.get(prop) == download_before.plain.get(prop), prop
    instance = after.one(INSTANCE)
    for prop in ("triggers", "environment", "create"):
        for source in inputs_from(after, download, prop):
            assert source is not instance and not reaches(after, source, instance), \
                f"the download's {prop} follows {source.name}, which a new instance replaces"
    # Its connection pins the new instance's host key (docs/host-keys.md), an update without a
    # replacement: pulumi-command then runs `update`, which redoes nothing.
    assert download.plain["update"] == "true"
    # ... while the mount (and the rest of the provisioning) runs again on the new host.
    assert instance in [r for p in ("triggers",) for r in inputs_from(after, step(after, "volume"), p)]
    assert reaches(after, download, step(after, "volume")), "it still waits for the mount"


def test_a_zone_without_the_new_type_moves_the_volume_and_says_so(program):
    world = AwsWorld()
    before = program({**SMALL, "instanceType": "g4dn.xlarge"}, world=world)
    assert zone_of(before) == "us-east-1a"
    world = deployed(before, world)
    world.zone_offerings = {"us-east-1a": {"g4dn.xlarge"}, "us-east-1b": set()}
    after = program({**SMALL, "instanceType": "g6.xlarge"}, world=world)
    assert zone_of(after) == "us-east-1c"
    volume = after.one(VOLUME)
    assert volume.plain["availabilityZone"] == "us-east-1c"
    assert "availabilityZone" in volume.replace_on_changes, "a new zone is a new, empty volume"
    (warning,) = [line for line in after.logs if "the model volume vol-" in line]
    for words in ("vol-0aaaabbbbccccdddd", "us-east-1a does not offer g6.xlarge", "downloaded again",
                  "deleted"):
        assert words in warning, warning
    # An empty volume: the download runs there (its triggers follow the volume).
    assert volume in inputs_from(after, step(after, "model"), "triggers")


def test_a_smaller_model_keeps_the_volume_size_it_has(program):
    world = AwsWorld()
    big = program({**SMALL, "model": "Qwen/Qwen2.5-14B-Instruct"}, world=world)
    big_gb = big.one(VOLUME).plain["size"]
    small = program(SMALL, world=deployed(big, world))
    assert small.exports["sizing"].value["modelVolumeGb"] < big_gb
    assert small.one(VOLUME).plain["size"] == big_gb, "EBS volumes cannot shrink"


def test_a_retained_volume_from_an_earlier_stack_only_guides_the_zone(program):
    world = AwsWorld()
    world.volumes = [{"id": "vol-0oldoldoldoldold0", "status": "available", "zone": "us-east-1c", "size": 500,
                      "tags": {**OURS, "Name": "vllm-models-volume"}}]
    run = program(SMALL, world=world)
    assert zone_of(run) == "us-east-1c"


# --- idle stop ------------------------------------------------------------------------


def test_idle_stop_is_off_by_default_and_installed_with_the_minutes_set(program):
    off = step(program(SMALL), "idle-stop").plain["environment"]
    assert off["VLLM_DEPLOY_IDLE_STOP_MINUTES"] == "0"
    run = program({**SMALL, "idleStopMinutes": 45})
    env = step(run, "idle-stop").plain["environment"]
    assert env["VLLM_DEPLOY_IDLE_STOP_MINUTES"] == "45"
    port = int(run.named("vllm-vllm-container").plain["ports"][0]["external"])
    assert env["VLLM_DEPLOY_METRICS_URL"] == f"http://127.0.0.1:{port}/metrics"
    assert run.exports["idleStopMinutes"].value == 45


def test_a_stopped_host_refuses_pulumi_up_with_what_to_do(program):
    world = AwsWorld()
    world.instances = [{"id": "i-0123456789abcdef0", "state": "stopped", "tags": {**OURS, "Name": "vllm-host"}}]
    run = program(SMALL, world=world, expect_error=True)
    assert "i-0123456789abcdef0 is stopped" in str(run.error) and "tools/wake dev" in str(run.error)
    assert not [r for r in run.cloud_resources if r.type.startswith("aws:")]

    world.instances[0]["state"] = "running"
    assert program(SMALL, world=world).one(INSTANCE)
    other_stack = {**OURS, "stack": "prod", "Name": "vllm-host"}
    world.instances = [{"id": "i-0fedcba987654321f", "state": "stopped", "tags": other_stack}]
    assert program(SMALL, world=world).one(INSTANCE), "another stack's stopped host is not ours"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_outputs_show_the_cost_running_and_stopped(program, stack):
    from tests.harness import stack_config

    run = program(stack_config(stack), stack=stack)
    cost = run.exports["costUsd"].value
    volume = run.one(VOLUME).plain
    volumes_gb = volume["size"] + run.one(INSTANCE).plain["rootBlockDevice"]["volumeSize"]
    # The model volume's provisioned throughput and IOPS above gp3's baseline bill, stopped or not.
    performance = VolumePerformance(volume.get("throughput") or 125, volume.get("iops") or 3000).usd_per_month
    assert (performance > 0) is (stack == "prod"), "prod's 15 GB of weights need more than 125 MiB/s"
    stopped = (volumes_gb * GP3_USD_PER_GB_MONTH + performance) / HOURS_PER_MONTH + PUBLIC_IPV4_USD_PER_HOUR
    assert cost["stoppedPerHour"] == pytest.approx(stopped, abs=1e-4)
    assert cost["runningPerHour"] == pytest.approx(run.exports["hourlyPriceUsd"].value + stopped, abs=1e-4)
    assert cost["runningPerMonth"] == pytest.approx(cost["runningPerHour"] * 730, abs=0.1)
    assert cost["stoppedPerHour"] < cost["runningPerHour"] / 10, "stopping saves the instance's price"
    assert run.exports["region"].value == "us-east-1"


def test_idle_stop_across_nodes_is_refused_before_any_resource(program):
    run = program({**stack_config("large"), "idleStopMinutes": 30}, stack="large", expect_error=True)
    assert "idleStopMinutes=30 stops one host" in str(run.error) and "idle stop works on one node only" in str(run.error)
    assert run.cloud_resources == []
