"""How the program reads what Pulumi hands it: the deployer's address, image lookups."""

import http.server
import threading

import pulumi
import pytest

from components.host_image import ami_query
from stack.pulumi_config import public_ipv4


class _Echo(http.server.BaseHTTPRequestHandler):
    answer = b"203.0.113.77\n"

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_this_machines_address_comes_from_the_echo_service(monkeypatch, echo_server):
    monkeypatch.delenv("VLLM_DEPLOY_PUBLIC_IP", raising=False)
    monkeypatch.setenv("VLLM_DEPLOY_IP_ECHO_URL", echo_server)
    assert public_ipv4() == "203.0.113.77"


def test_an_explicit_address_wins_and_is_checked(monkeypatch):
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", "198.51.100.9")
    assert public_ipv4() == "198.51.100.9"
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", "not-an-ip")
    with pytest.raises(pulumi.RunError, match="VLLM_DEPLOY_PUBLIC_IP='not-an-ip' is not an IPv4 address"):
        public_ipv4()


def test_no_address_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("VLLM_DEPLOY_PUBLIC_IP", raising=False)
    monkeypatch.setenv("VLLM_DEPLOY_IP_ECHO_URL", "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(pulumi.RunError) as caught:
        public_ipv4()
    assert "sshAllowedCidrs" in str(caught.value) and "VLLM_DEPLOY_PUBLIC_IP" in str(caught.value)


@pytest.mark.parametrize(
    ("choice", "arch", "owner", "pattern"),
    [
        ("dlami", "x86_64", "898082745236", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"),
        ("dlami", "arm64", "898082745236", "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"),
        ("ubuntu", "x86_64", "099720109477", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"),
        ("ubuntu", "arm64", "099720109477", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-arm64-server-*"),
    ],
)
def test_image_lookup_follows_the_instance_architecture(choice, arch, owner, pattern):
    query = ami_query(choice, arch)
    assert (query.owner, query.name_pattern, query.arch) == (owner, pattern, arch)
    assert ami_query("ami-0123456789abcdef0", arch) is None
