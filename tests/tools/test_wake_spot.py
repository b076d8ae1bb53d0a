"""tools/wake on a stopped spot host (issue 27): it reads the spot request and says what AWS will
do and when, starts what AWS lets it start, and retries the brief IncorrectSpotRequestState right
after a stop. The cloud boundary is botocore's Stubber on a real EC2 client (every request and
response checked against the EC2 API model); status codes and rules from AWS's docs
(tools/wake_spot.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.tools.test_wake import INSTANCE_ID, ec2, run, stack  # noqa: F401  (fixtures)
from tests.tools.test_wake import pki  # noqa: F401
import wake  # noqa: E402  (tests.tools.test_wake put tools/ on sys.path)

REQUEST_ID = "sir-0123abcd"
IDS = {"InstanceIds": [INSTANCE_ID]}
REQUEST = {"SpotInstanceRequestIds": [REQUEST_ID]}
VALID_UNTIL = datetime(2026, 12, 14, 9, 30, tzinfo=timezone.utc)


def spot_instance(state: str, reason: str = "") -> dict:
    instance = {"InstanceId": INSTANCE_ID, "State": {"Name": state, "Code": 80}, "InstanceLifecycle": "spot",
                "SpotInstanceRequestId": REQUEST_ID, "InstanceType": "g5.xlarge",
                "Placement": {"AvailabilityZone": "us-east-1a"}}
    if reason:
        instance["StateReason"] = {"Code": reason, "Message": reason}
    return {"Reservations": [{"Instances": [instance]}]}


def spot_request(state: str, code: str, message: str = "") -> dict:
    return {"SpotInstanceRequests": [{
        "SpotInstanceRequestId": REQUEST_ID, "State": state, "InstanceId": INSTANCE_ID, "Type": "persistent",
        "InstanceInterruptionBehavior": "stop", "ValidUntil": VALID_UNTIL,
        "Status": {"Code": code, "Message": message or code,
                   "UpdateTime": datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc)},
    }]}


@pytest.mark.parametrize(("code", "why"), [
    ("instance-stopped-no-capacity", "EC2 needed the capacity back"),
    ("instance-stopped-by-price", "the spot price rose above the request's maximum price"),
    ("instance-stopped-capacity-oversubscribed", "EC2 needed the capacity back (oversubscribed)"),
])
def test_an_interrupted_spot_host_is_left_to_aws_saying_what_it_does_and_when(stack, ec2, capsys, code, why):
    client, stubber = ec2
    stubber.add_response("describe_instances", spot_instance("stopped", "Server.SpotInstanceShutdown"), IDS)
    stubber.add_response("describe_spot_instance_requests", spot_request("open", code), REQUEST)
    assert run(client, "--no-wait") == 1  # no StartInstances: the Stubber has none queued
    err = capsys.readouterr().err
    assert f"a spot interruption ({code}: {why})" in err
    assert "Only AWS can restart an interrupted spot instance" in err
    assert "when spot capacity for g5.xlarge in us-east-1a returns" in err
    assert "until 2026-12-14 09:30 UTC" in err
    # The way out the program accepts, not a loop back to tools/wake or a refused `pulumi up`.
    assert "pulumi config set replaceStoppedHost true" in err and "pulumi up --replace" in err


def test_a_host_being_interrupted_says_aws_stops_then_restarts_it(stack, ec2, capsys):
    client, stubber = ec2
    stubber.add_response("describe_instances", spot_instance("stopping"), IDS)
    stubber.add_response("describe_instances", spot_instance("stopped"), IDS)
    stubber.add_response("describe_spot_instance_requests", spot_request("open", "marked-for-stop"), REQUEST)
    assert run(client, "--no-wait") == 1
    err = capsys.readouterr().err
    assert "AWS is interrupting" in err and "restarts it by itself when spot capacity" in err


def test_right_after_a_stop_incorrect_spot_request_state_is_retried_then_it_starts(stack, ec2, capsys):
    """The issue's report: idle stop powered the host off; a start right after fails briefly."""
    client, stubber = ec2
    stubber.add_response("describe_instances", spot_instance("stopped", "Client.InstanceInitiatedShutdown"), IDS)
    stubber.add_response("describe_spot_instance_requests",
                         spot_request("disabled", "instance-stopped-by-user"), REQUEST)
    for _ in range(2):
        stubber.add_client_error("start_instances", "IncorrectSpotRequestState",
                                 f"The Spot Instance request {REQUEST_ID} is not in a valid state.")
    stubber.add_response("start_instances", {"StartingInstances": []}, IDS)
    stubber.add_response("describe_instances", spot_instance("running"), IDS)
    assert wake.main(["--no-wait"], ec2_client=lambda region: client, poll_seconds=0.01,
                     spot_window_seconds=30) == 0
    err = capsys.readouterr().err
    assert err.count("IncorrectSpotRequestState, right after a stop); trying again") == 2
    assert f"{INSTANCE_ID} is running" in err


def test_incorrect_spot_request_state_past_the_window_names_the_way_out(stack, ec2, capsys):
    client, stubber = ec2
    stubber.add_response("describe_instances", spot_instance("stopped"), IDS)
    stubber.add_response("describe_spot_instance_requests",
                         spot_request("disabled", "instance-stopped-by-user"), REQUEST)
    stubber.add_client_error("start_instances", "IncorrectSpotRequestState", "not in a valid state")
    stubber.add_response("describe_spot_instance_requests", spot_request("open", "pending-fulfillment"), REQUEST)
    assert wake.main(["--no-wait"], ec2_client=lambda region: client, poll_seconds=0.01,
                     spot_window_seconds=0) == 1
    err = capsys.readouterr().err
    assert "still refuses to start" in err and "the request is open (pending-fulfillment)" in err
    assert "pulumi config set replaceStoppedHost true" in err


@pytest.mark.parametrize("state", ["closed", "cancelled"])
def test_an_ended_spot_request_says_aws_will_not_restart_it(stack, ec2, capsys, state):
    client, stubber = ec2
    stubber.add_response("describe_instances", spot_instance("stopped"), IDS)
    stubber.add_response("describe_spot_instance_requests",
                         spot_request(state, "instance-stopped-no-capacity"), REQUEST)
    assert run(client, "--no-wait") == 1
    err = capsys.readouterr().err
    assert f"is {state}" in err and "AWS will not restart it" in err and "replaceStoppedHost" in err
