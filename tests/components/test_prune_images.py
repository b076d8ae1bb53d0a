"""components/local/prune_images.py against botocore's Stubber (no AWS): after a successful
refresh it keeps the current and the previous image and removes older ones with their
snapshots; on destroy it removes every image of the stack; it never touches what it cannot
place."""

import importlib.util
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from components.fleet_image_cleanup import PRUNE_IMAGES, prune_command

spec = importlib.util.spec_from_file_location("prune_images", PRUNE_IMAGES)
prune_images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prune_images)

ROOT = Path(__file__).resolve().parents[2]
STACK_ID = "5f1c0ffee0c0ffee"
FILTERS = {
    "Owners": ["self"],
    "Filters": [
        {"Name": "tag:project", "Values": ["vllm-deploy"]},
        {"Name": "tag:stack", "Values": ["prod"]},
        {"Name": "tag:vllm-deploy-stack-id", "Values": [STACK_ID]},
        {"Name": "tag-key", "Values": ["vllm-deploy-image-digest"]},
    ],
}


def image(n: int) -> dict:
    """Image n, made on day n, with a root and a model-volume snapshot; ids sort against the
    dates (the order is the creation date's, never the id's)."""
    return {
        "ImageId": f"ami-{100 - n:017x}", "Name": f"vllm-deploy-prod-{n:016x}", "CreationDate": f"2026-11-{n:02d}T00:00:00.000Z",
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": f"snap-{n:017x}"}},
            {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": f"snap-{n + 100:017x}"}},
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        ],
    }


@pytest.fixture
def ec2(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("ec2", region_name="us-east-1")


def expect_removal(stub: Stubber, n: int) -> None:
    """Image n deregistered with its snapshots (AWS deletes them in the same call)."""
    stub.add_response("deregister_image", {}, {"ImageId": image(n)["ImageId"], "DeleteAssociatedSnapshots": True})


def test_after_a_refresh_it_keeps_the_current_and_previous_image_and_removes_older_ones(ec2, capsys):
    stub = Stubber(ec2)
    # Listed out of order: the script orders by creation date.
    stub.add_response("describe_images", {"Images": [image(4), image(1), image(3), image(2)]}, FILTERS)
    expect_removal(stub, 1)
    expect_removal(stub, 2)
    with stub:
        assert prune_images.run(ec2, "prune", "vllm-deploy", "prod", current=image(4)["ImageId"], stack_id=STACK_ID) == 0
        stub.assert_no_pending_responses()  # images 3 (previous) and 4 (current) untouched
    out = capsys.readouterr().out
    assert "2 image(s) removed" in out and image(3)["ImageId"] in out and image(4)["ImageId"] in out


def test_an_image_newer_than_the_current_or_an_unknown_current_is_never_removed(ec2, capsys):
    stub = Stubber(ec2)
    stub.add_response("describe_images", {"Images": [image(1), image(2), image(3)]}, FILTERS)
    with stub:  # current is image 2: 1 is its previous, 3 is newer; nothing goes
        assert prune_images.run(ec2, "prune", "vllm-deploy", "prod", current=image(2)["ImageId"], stack_id=STACK_ID) == 0
        stub.assert_no_pending_responses()
    stub.add_response("describe_images", {"Images": [image(1), image(2), image(3)]}, FILTERS)
    with stub:
        assert prune_images.run(ec2, "prune", "vllm-deploy", "prod", current="ami-0000000000000dead", stack_id=STACK_ID) == 0
        stub.assert_no_pending_responses()
    assert "not among this stack's images; nothing removed" in capsys.readouterr().out


def test_destroy_removes_every_image_of_the_stack_and_its_snapshots(ec2):
    stub = Stubber(ec2)
    stub.add_response("describe_images", {"Images": [image(2), image(1)]}, FILTERS)
    expect_removal(stub, 1)
    expect_removal(stub, 2)
    with stub:
        assert prune_images.run(ec2, "destroy", "vllm-deploy", "prod", stack_id=STACK_ID) == 0
        stub.assert_no_pending_responses()


def test_a_refused_call_fails_naming_the_image_and_the_manual_fix(ec2, capsys):
    stub = Stubber(ec2)
    stub.add_response("describe_images", {"Images": [image(1)]}, FILTERS)
    stub.add_client_error("deregister_image", "UnauthorizedOperation", "You are not authorized to perform this operation.",
                          expected_params={"ImageId": image(1)["ImageId"], "DeleteAssociatedSnapshots": True})
    with stub:
        assert prune_images.run(ec2, "destroy", "vllm-deploy", "prod", stack_id=STACK_ID) == 1
    err = capsys.readouterr().err
    assert image(1)["ImageId"] in err and "UnauthorizedOperation" in err and "aws ec2 deregister-image" in err and "--delete-associated-snapshots" in err


def test_the_command_runs_the_script_with_the_projects_venv(tmp_path):
    """As pulumi-command runs it (/bin/sh -c, in the project's root): an unknown mode is refused
    by the script itself, which shows the command found and ran it."""
    result = subprocess.run(["/bin/sh", "-c", prune_command("neither")], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", "PROJECT": "vllm-deploy", "STACK": "prod",
                                             "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x",
                                             "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                             "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    assert result.returncode == 1 and "unknown mode 'neither' (prune or destroy)" in result.stderr, result.stderr


def test_without_the_stack_id_nothing_is_listed_or_removed(ec2, capsys):
    """Another stack of the same project and name (another person's `dev` in the account) shares
    the project and stack tags: without this stack's random id the script touches nothing."""
    stub = Stubber(ec2)
    with stub:  # no call expected: a describe or deregister would fail the stubber
        assert prune_images.run(ec2, "destroy", "vllm-deploy", "prod") == 1
    assert "no STACK_ID" in capsys.readouterr().err


def test_the_program_tags_images_with_the_tag_the_script_selects_by():
    from components.fleet_image_cleanup import STACK_ID_TAG

    assert STACK_ID_TAG == prune_images.STACK_ID_TAG
