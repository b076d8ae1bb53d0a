"""Every SSH connection checks the host's key, obtained from the EC2 API (the console output),
not over the connection it protects (issue 27; docs/host-keys.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.harness import AwsWorld, computed_outputs, mock_host_key, plain_text, reveal, stack_config

REMOTE = ("command:remote:Command", "command:remote:CopyToRemote")
HOST_KEY_STEP = "command:local:Command"
EIP = "aws:ec2/eip:Eip"
INSTANCE = "aws:ec2/instance:Instance"
DOCKER = "pulumi:providers:docker"


def runs(program):
    yield "dev", program(stack_config("dev"), stack="dev")
    yield "prod", program(stack_config("prod"), stack="prod")
    yield "large", program(stack_config("large"), stack="large")
    yield "fleet", program({**stack_config("prod"), "replicas": 3}, stack="prod",
                           secrets={"apiKey": "sk-test-fleet-0f9e8d7c6b5a4f3e2d"}, world=AwsWorld())


def hosts_by_address(run) -> dict[str, str]:
    """Elastic IP address -> the GpuHost's name (whose host-key step reads that instance)."""
    return {computed_outputs(EIP, eip.name, {})["publicIp"]: eip.name.removesuffix("-eip") for eip in run.of_type(EIP)}


def test_every_remote_connection_pins_the_key_read_for_its_own_instance(program):
    for label, run in runs(program):
        hosts = hosts_by_address(run)
        remote = [r for r in run.resources if r.type in REMOTE]
        assert remote, label
        for res in remote:
            connection = reveal(res.inputs["connection"])
            host = hosts[connection["host"]]
            assert connection.get("hostKey") == mock_host_key(f"{host}-host-key"), (label, res.name)
            # The key comes from that host's own host-key step, not from a constant.
            assert any(run.by_urn(u).name == f"{host}-host-key" for u in res.dependencies) or any(
                run.by_urn(u).name == f"{host}-host-key" for deps in res.property_dependencies.values() for u in deps
            ), (label, res.name)


def test_the_host_key_is_read_again_for_each_new_instance(program):
    run = program(stack_config("large"), stack="large")
    steps = [r for r in run.of_type(HOST_KEY_STEP) if r.name.endswith("-host-key")]
    assert len(steps) == len(run.of_type(INSTANCE)) == 2  # large: two nodes, each its own key
    for step in steps:
        instance = run.named(step.name.removesuffix("-host-key") + "-instance")
        assert instance.urn in step.property_dependencies["triggers"]
        assert step.plain["create"].endswith("components/local/host_key.py")
        assert step.plain["environment"]["INSTANCE_ID"]
        # The tool runs on the deployer with boto3, never over SSH.
        assert "ssh" not in step.plain["create"]


def test_docker_provider_accepts_only_the_pinned_key(program, tmp_path):
    for label, run in runs(program):
        for provider in run.of_type(DOCKER):
            opts = provider.plain["sshOpts"]
            opts = json.loads(opts) if isinstance(opts, str) else opts  # provider inputs are JSON
            joined = " ".join(opts)
            assert "StrictHostKeyChecking=yes" in opts, label
            known = re.search(r"UserKnownHostsFile=(\S+)", joined).group(1)
            assert known.startswith("~/.ssh/vllm-deploy/")  # the same state on every machine
            path = tmp_path / "home" / known.removeprefix("~/")
            address = provider.plain["host"].rsplit("@", 1)[1]
            host = hosts_by_address(run)[address]
            assert path.read_text() == f"{address} {mock_host_key(f'{host}-host-key')}\n"
            assert (path.stat().st_mode & 0o777) == 0o600


def test_nothing_turns_host_key_checking_off(program):
    for label, run in runs(program):
        for res in run.resources:
            text = plain_text(res.inputs)
            assert "StrictHostKeyChecking=no" not in text, (label, res.name)
            assert "UserKnownHostsFile=/dev/null" not in text, (label, res.name)
    source = Path(__file__).resolve().parents[2] / "components"
    offenders = [p for p in source.rglob("*.py") if "StrictHostKeyChecking=no" in p.read_text()]
    assert offenders == []


def test_a_preview_writes_no_known_hosts_file(program, tmp_path):
    run = program(stack_config("dev"), stack="dev", preview=True)
    assert run.of_type(DOCKER)
    ssh_dir = tmp_path / "home" / ".ssh" / "vllm-deploy"
    assert not list(ssh_dir.glob("*.known_hosts")) if ssh_dir.exists() else True
