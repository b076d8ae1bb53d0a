"""components/local/host_key.py: the host key from an instance's console output, read for real
through boto3 from a loopback EC2 endpoint that answers GetConsoleOutput."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.harness import mock_host_key

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "components" / "local" / "host_key.py"
sys.path.insert(0, str(SCRIPT.parent))
import host_key  # noqa: E402

KEY = mock_host_key("node-0")
OTHER = mock_host_key("someone-else")
# As an Ubuntu instance's console shows it (cloud-init's write-ssh-key-fingerprints: the
# fingerprints through logger with the "ec2" tag, then the keys as they are).
CONSOLE = f"""[   12.345678] cloud-init[1043]: Cloud-init v. 24.1 running 'modules:final'
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:abc root@ip-172-31-5-9 (ECDSA)
ec2: 256 SHA256:def root@ip-172-31-5-9 (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= root@ip-172-31-5-9
{KEY} root@ip-172-31-5-9
-----END SSH HOST KEY KEYS-----
[   13.0] cloud-init[1043]: Cloud-init v. 24.1 finished
"""


def test_reads_the_ed25519_key_from_the_console():
    assert host_key.parse_host_key(CONSOLE) == KEY


@pytest.mark.parametrize("console", ["", "booting...\n", CONSOLE.split("-----END SSH HOST KEY KEYS")[0]])
def test_no_key_yet_until_the_block_is_complete(console):
    assert host_key.parse_host_key(console) is None


def test_refuses_two_blocks_that_disagree_or_a_malformed_key():
    with pytest.raises(host_key.HostKeyError, match="2 different"):
        host_key.parse_host_key(CONSOLE + CONSOLE.replace(KEY, OTHER))
    with pytest.raises(host_key.HostKeyError, match="malformed"):
        host_key.parse_host_key(CONSOLE.replace(KEY, "ssh-ed25519 bm90IGEga2V5"))
    assert host_key.parse_host_key(CONSOLE + CONSOLE) == KEY  # the same block twice is fine


class FakeEc2:
    """Answers EC2's GetConsoleOutput (query API, XML) on loopback; `outputs` in turn."""

    def __init__(self, outputs: list[str]):
        self.outputs, self.calls = outputs, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                fake.calls.append({k: v[0] for k, v in form.items()})
                text = fake.outputs[min(len(fake.calls), len(fake.outputs)) - 1]
                body = (
                    '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                    f"<requestId>r</requestId><instanceId>{form['InstanceId'][0]}</instanceId>"
                    "<timestamp>2026-12-07T13:00:00.000Z</timestamp>"
                    f"<output>{base64.b64encode(text.encode()).decode()}</output></GetConsoleOutputResponse>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def run(self, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "AWS_ENDPOINT_URL_EC2": f"http://127.0.0.1:{self.server.server_port}",
                 "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                 "INSTANCE_ID": "i-0123456789abcdef0", "POLL_SECONDS": "0.1", **env},
        )

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ec2():
    servers = []

    def start(outputs):
        servers.append(FakeEc2(outputs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_waits_for_the_keys_then_prints_only_the_key(ec2):
    fake = ec2(["", "booting\n", CONSOLE])
    result = fake.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == KEY + "\n"
    assert len(fake.calls) == 3
    assert fake.calls[0]["Action"] == "GetConsoleOutput" and fake.calls[0]["InstanceId"] == "i-0123456789abcdef0"
    assert fake.calls[0]["Latest"] == "true"


def test_gives_up_with_the_way_out_when_the_console_never_shows_a_key(ec2, tmp_path):
    fake = ec2(["rebooted long ago\n"])
    result = fake.run(TIMEOUT_SECONDS="0.5")
    assert result.returncode == 1 and result.stdout == ""
    assert "aws ssm start-session --target i-0123456789abcdef0" in result.stderr
    assert "HOST_KEY_FILE" in result.stderr
    vouched = tmp_path / "node.pub"
    vouched.write_text(f"{KEY} root@ip-172-31-5-9\n")
    result = fake.run(TIMEOUT_SECONDS="0.3", HOST_KEY_FILE=str(vouched))
    assert result.returncode == 0 and result.stdout == KEY + "\n"


def test_a_forged_second_key_is_refused_not_trusted(ec2):
    result = ec2([CONSOLE + CONSOLE.replace(KEY, OTHER)]).run()
    assert result.returncode == 1 and result.stdout == ""
    assert "refusing to trust" in result.stderr
