"""aws:region checked before any resource (issue 27): against EC2's enabled Regions at preview
(aws.get_regions), against the Region catalog when EC2 cannot be asked, and so in the offline plan.
The public report replayed: `aws:region: us-east-9` passed the offline plan."""

from __future__ import annotations

import pytest

from plan.world import AwsWorld, InvokeFailure
from sizing.regions import closest_regions, load_regions, region_problem
from tests.harness import run_program, stack_config


@pytest.fixture(autouse=True)
def _address(monkeypatch):
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", "192.0.2.44")


def _dev(region: str) -> dict:
    return {**stack_config("dev"), "aws:region": region}


def test_a_region_that_does_not_exist_is_refused_with_the_closest_ones():
    run = run_program(_dev("us-east-9"), preview=True, expect_error=True)
    assert run.resources == []
    message = str(run.error)
    assert "aws:region='us-east-9' is not an AWS Region" in message
    assert "us-east-1" in message and "us-east-2" in message
    assert "pulumi config set aws:region us-east-" in message
    assert any(i.token == "aws:index/getRegions:getRegions" for i in run.invokes)


def test_the_fix_it_names_is_accepted():
    """The Region the refusal suggests is one the program then deploys to."""
    suggested = closest_regions("us-east-9")[0]
    run = run_program(_dev(suggested), preview=True)
    assert run.error is None and run.resources


class _Unreachable(AwsWorld):
    """An AWS whose EC2 endpoint for the configured region does not resolve."""

    def answer(self, token, args):
        if token == "aws:index/getRegions:getRegions":
            raise InvokeFailure("dial tcp: lookup ec2.us-east-9.amazonaws.com: no such host")
        return super().answer(token, args)


def test_when_ec2_cannot_be_asked_the_catalog_decides():
    run = run_program(_dev("us-east-9"), world=_Unreachable(), preview=True, expect_error=True)
    assert run.resources == []
    assert "is not an AWS Region (EC2 could not be asked" in str(run.error)
    assert "no such host" in str(run.error)


def test_a_real_region_is_not_refused_when_ec2_cannot_be_asked_about_regions():
    run = run_program(_dev("eu-west-1"), world=_Unreachable(), preview=True)
    assert run.resources


def test_a_region_the_account_has_not_enabled_says_how_to_enable_it():
    world = AwsWorld()
    world.enabled_regions = {"us-east-1", "us-west-2"}
    run = run_program(_dev("af-south-1"), world=world, preview=True, expect_error=True)
    assert run.resources == []
    message = str(run.error)
    assert "aws:region='af-south-1'" in message and "not enabled" in message
    assert "aws account enable-region --region-name af-south-1" in message
    assert "pulumi config set aws:region us-east-1" in message


def test_the_catalog_holds_every_commercial_region_and_refuses_typos():
    codes = {r.code for r in load_regions()}
    assert {"us-east-1", "us-west-2", "eu-central-1", "ap-northeast-1", "us-gov-west-1", "cn-north-1"} <= codes
    assert region_problem("us-east-1") is None
    assert "eu-west-1" in region_problem("euwest1")


@pytest.mark.parametrize("region", ["cn-north-1", "us-gov-west-1"])
def test_a_region_of_another_partition_is_refused_as_such_not_as_one_to_enable(region):
    """China and GovCloud Regions cannot be enabled from a commercial account: the fix names a
    commercial Region instead of `aws account enable-region`."""
    problem = region_problem(region)
    assert problem and "partition, not the commercial `aws` partition" in problem
    assert "enable-region" not in problem and "pulumi config set aws:region " in problem
