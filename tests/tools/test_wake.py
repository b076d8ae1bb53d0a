"""tools/wake: the stack's outputs name the host, EC2 starts it, the endpoint answers.

The cloud boundary is botocore's Stubber on a real EC2 client (every call checked against the
EC2 API model, nothing leaves this machine); the Pulumi CLI is a stub on PATH that prints the
outputs; the endpoint is a real HTTPS server on loopback with the stack's own CA.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from tests.fakes import make_test_pki

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import wake  # noqa: E402

INSTANCE_ID = "i-0123456789abcdef0"


WORKER_ID = "i-0fedcba9876543210"


def described(state: str, instance_id: str = INSTANCE_ID) -> dict:
    return {"Reservations": [{"Instances": [{"InstanceId": instance_id, "State": {"Name": state, "Code": 0}}]}]}


class Endpoint:
    """The proxy's /health over TLS: 502 while vLLM loads (`loading` answers), then 200."""

    def __init__(self, pki, loading: int) -> None:
        self.loading = loading
        self.hits = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                endpoint.hits += 1
                ready = self.path == "/health" and endpoint.hits > endpoint.loading
                self.send_response(200 if ready else 502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pki(tmp_path):
    return make_test_pki(tmp_path / "pki")


@pytest.fixture
def stack(tmp_path, monkeypatch, pki):
    """A fake `pulumi` CLI on PATH printing the outputs in stack.outputs; it records its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    outputs_file, argv_file = tmp_path / "outputs.json", tmp_path / "argv"
    (bin_dir / "pulumi").write_text(
        f"#!/usr/bin/env bash\nprintf '%s\\n' \"$*\" >> {argv_file}\ncat {outputs_file}\n")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    class Stack:
        def set(self, **outputs) -> None:
            outputs_file.write_text(json.dumps(outputs))

        @property
        def argv(self) -> list[str]:
            return argv_file.read_text().splitlines()

    stack = Stack()
    stack.set(instanceId=INSTANCE_ID, region="us-east-1", endpoint="https://127.0.0.1:9/v1")
    return stack


@pytest.fixture
def ec2():
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="AKIATEST", aws_secret_access_key="test")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def endpoint(pki):
    server = Endpoint(pki, loading=2)
    yield server
    server.close()


def run(ec2_client, *argv: str) -> int:
    return wake.main(list(argv), ec2_client=lambda region: ec2_client, poll_seconds=0.01)


def test_a_stopped_host_is_started_and_waited_for_until_the_endpoint_answers(stack, ec2, endpoint, pki, capsys):
    client, stubber = ec2
    stack.set(instanceId=INSTANCE_ID, region="us-east-1", endpoint=endpoint.url, caCertificate=pki.ca_cert.read_text(),
              costUsd={"runningPerHour": 0.55, "stoppedPerHour": 0.02}, idleStopMinutes=30)
    ids = {"InstanceIds": [INSTANCE_ID]}
    stubber.add_response("describe_instances", described("stopped"), ids)
    stubber.add_response("start_instances", {"StartingInstances": []}, ids)
    stubber.add_response("describe_instances", described("pending"), ids)
    stubber.add_response("describe_instances", described("running"), ids)
    assert run(client, "dev") == 0
    assert endpoint.hits == 3, "it waited through the model load (502) until /health answered 200"
    out = capsys.readouterr()
    assert out.out.startswith(f"ready: {endpoint.url} ({INSTANCE_ID}")
    assert "stops again after 30 minutes" in out.out
    assert stack.argv == ["stack output --json --stack dev"]


def test_a_running_host_is_not_started_again(stack, ec2, endpoint, pki):
    client, stubber = ec2
    stack.set(instanceId=INSTANCE_ID, region="us-east-1", endpoint=endpoint.url, caCertificate=pki.ca_cert.read_text())
    stubber.add_response("describe_instances", described("running"), {"InstanceIds": [INSTANCE_ID]})
    assert run(client) == 0
    assert stack.argv == ["stack output --json"], "no STACK: the selected stack"


def test_a_host_still_stopping_is_started_once_it_has_stopped(stack, ec2):
    client, stubber = ec2
    ids = {"InstanceIds": [INSTANCE_ID]}
    for state in ("stopping", "stopping", "stopped"):
        stubber.add_response("describe_instances", described(state), ids)
    stubber.add_response("start_instances", {"StartingInstances": []}, ids)
    stubber.add_response("describe_instances", described("running"), ids)
    assert run(client, "--no-wait") == 0


def test_a_terminated_host_says_to_run_pulumi_up(stack, ec2, capsys):
    client, stubber = ec2
    stubber.add_response("describe_instances", described("terminated"), {"InstanceIds": [INSTANCE_ID]})
    assert run(client) == 1
    assert "`pulumi up` creates a new one" in capsys.readouterr().err


def test_no_capacity_to_start_says_what_to_try(stack, ec2, capsys):
    client, stubber = ec2
    stubber.add_response("describe_instances", described("stopped"), {"InstanceIds": [INSTANCE_ID]})
    stubber.add_client_error("start_instances", "InsufficientInstanceCapacity", "no g4dn.xlarge capacity")
    assert run(client) == 1
    err = capsys.readouterr().err
    assert "no capacity" in err and "Try again in a few minutes" in err


def test_an_endpoint_that_never_answers_fails_with_where_to_look(stack, ec2, pki, capsys):
    client, stubber = ec2
    never = Endpoint(pki, loading=10**9)
    try:
        stack.set(instanceId=INSTANCE_ID, region="us-east-1", endpoint=never.url, caCertificate=pki.ca_cert.read_text())
        stubber.add_response("describe_instances", described("running"), {"InstanceIds": [INSTANCE_ID]})
        assert run(client, "--timeout", "0.005") == 1
    finally:
        never.close()
    err = capsys.readouterr().err
    assert "did not answer 200" in err and "HTTP 502" in err and "docker logs" in err


def test_an_endpoint_with_another_ca_is_not_trusted(stack, ec2, endpoint, tmp_path, capsys):
    client, stubber = ec2
    other = make_test_pki(tmp_path / "other")
    stack.set(instanceId=INSTANCE_ID, region="us-east-1", endpoint=endpoint.url, caCertificate=other.ca_cert.read_text())
    stubber.add_response("describe_instances", described("running"), {"InstanceIds": [INSTANCE_ID]})
    assert run(client, "--timeout", "0.005") == 1
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
    assert endpoint.hits == 0


def test_the_health_url_is_beside_the_api():
    assert wake.health_url("https://203.0.113.10/v1") == "https://203.0.113.10/health"
    assert wake.health_url("https://llm.example.com/v1/") == "https://llm.example.com/health"


def test_a_cluster_starts_every_stopped_node_the_head_first(stack, ec2, endpoint, pki, capsys):
    """Across nodes vLLM on the head waits for every node's GPUs: a worker stopped by a spot
    interruption must be started too."""
    client, stubber = ec2
    nodes = [{"name": "node-0", "role": "head", "instanceId": INSTANCE_ID, "privateIp": "172.31.5.9"},
             {"name": "node-1", "role": "worker", "instanceId": WORKER_ID, "privateIp": "172.31.5.10"}]
    stack.set(instanceId=INSTANCE_ID, region="us-east-1", endpoint=endpoint.url,
              caCertificate=pki.ca_cert.read_text(), nodes=nodes)
    stubber.add_response("describe_instances", described("running"), {"InstanceIds": [INSTANCE_ID]})
    worker = {"InstanceIds": [WORKER_ID]}
    stubber.add_response("describe_instances", described("stopped", WORKER_ID), worker)
    stubber.add_response("start_instances", {"StartingInstances": []}, worker)
    stubber.add_response("describe_instances", described("running", WORKER_ID), worker)
    assert run(client) == 0
    err = capsys.readouterr().err
    assert f"{INSTANCE_ID} is already running" in err and f"starting {WORKER_ID}" in err
