"""No dead end on a stopped host (issue 27): `pulumi up` refuses it naming both ways out, and goes
on when the user asks explicitly (`replaceStoppedHost: true`), warning with the exact instance URN
that `pulumi up --replace` takes. Under recording mocks; AWS's answers from tests.harness.AwsWorld."""

from tests.harness import AwsWorld

INSTANCE = "aws:ec2/instance:Instance"
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
OURS = {"project": "vllm-deploy", "stack": "dev", "managed-by": "pulumi"}
STOPPED = "i-0123456789abcdef0"


def _stopped_world() -> AwsWorld:
    world = AwsWorld()
    world.instances = [{"id": STOPPED, "state": "stopped", "tags": {**OURS, "Name": "vllm-host"}}]
    return world


def test_the_refusal_names_wake_and_the_replacement_the_program_accepts(program):
    run = program(SMALL, world=_stopped_world(), expect_error=True)
    message = str(run.error)
    assert f"{STOPPED} is stopped" in message and "tools/wake dev" in message
    assert "pulumi config set replaceStoppedHost true" in message and "pulumi up --replace" in message
    assert "ec2/instance:Instance::vllm-host-instance" in message


def test_asked_explicitly_the_update_goes_on_and_names_the_urn_to_replace(program):
    run = program({**SMALL, "replaceStoppedHost": "true"}, world=_stopped_world())
    instance = run.one(INSTANCE)
    [warning] = [line.message for line in run.log if line.severity == "warning" and STOPPED in line.message]
    # The engine's URN chains every ancestor's type (the SDK's create_urn); the mock monitor keeps
    # only the parent's, so the recorded one is the same resource with a shorter type chain.
    urn = ("urn:pulumi:dev::vllm-deploy::vllm-deploy:index:VllmDeployment$vllm-deploy:index:GpuHost"
           "$aws:ec2/instance:Instance::vllm-host-instance")
    assert instance.urn.endswith("vllm-deploy:index:GpuHost$aws:ec2/instance:Instance::vllm-host-instance")
    assert f"pulumi up --replace '{urn}'" in warning
    assert "pulumi config rm replaceStoppedHost" in warning


def test_the_key_changes_nothing_on_a_running_host(program):
    world = _stopped_world()
    world.instances[0]["state"] = "running"
    plain = program(SMALL, world=world)
    asked = program({**SMALL, "replaceStoppedHost": "true"}, world=world)
    assert asked.one(INSTANCE).plain == plain.one(INSTANCE).plain
    assert not [line for line in asked.log if line.severity == "warning" and "replaceStoppedHost" in line.message]
