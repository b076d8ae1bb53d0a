"""components/local/wait_for_refresh.py against botocore's Stubber (no AWS): it waits while a
refresh runs and reports how it ended."""

import importlib.util
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

PATH = Path(__file__).resolve().parents[2] / "components" / "local" / "wait_for_refresh.py"
spec = importlib.util.spec_from_file_location("wait_for_refresh", PATH)
wait_for_refresh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wait_for_refresh)

GROUP = "vllm-deploy-prod-replicas"


def refresh(status, percent=0, reason=None):
    item = {"InstanceRefreshId": "ir-0123", "AutoScalingGroupName": GROUP, "Status": status, "PercentageComplete": percent}
    if reason:
        item["StatusReason"] = reason
    return {"InstanceRefreshes": [item]}


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("autoscaling", region_name="us-east-1")


def run(client, answers, timeout=100.0):
    stub = Stubber(client)
    for answer in answers:
        stub.add_response("describe_instance_refreshes", answer, {"AutoScalingGroupName": GROUP, "MaxRecords": 1})
    now = [0.0]
    with stub:
        code = wait_for_refresh.wait(client, GROUP, timeout, 30, clock=lambda: now[0],
                                     sleep=lambda s: now.__setitem__(0, now[0] + s))
        stub.assert_no_pending_responses()
    return code


def test_it_waits_for_a_running_refresh_to_succeed(client, capsys):
    assert run(client, [refresh("InProgress", 0), refresh("InProgress", 50), refresh("Successful", 100)]) == 0
    assert "50% done" in capsys.readouterr().out


@pytest.mark.parametrize("status", ["Failed", "Cancelled", "RollbackSuccessful"])
def test_a_refresh_that_did_not_succeed_fails_the_update_with_its_reason(client, capsys, status):
    assert run(client, [refresh("InProgress"), refresh(status, reason="health checks failed")]) == 1
    assert "health checks failed" in capsys.readouterr().out


def test_no_refresh_is_nothing_to_wait_for(client):
    assert run(client, [{"InstanceRefreshes": []}]) == 0


def test_a_refresh_past_the_timeout_is_reported_as_still_running(client, capsys):
    assert run(client, [refresh("InProgress")] * 3, timeout=60) == 2
    assert "goes on in AWS" in capsys.readouterr().out
