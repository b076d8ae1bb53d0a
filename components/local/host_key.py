"""Runs where `pulumi up` runs: prints the SSH host key (`ssh-ed25519 <base64>`, one line) of a
new EC2 instance, read from its console output through the EC2 API, never over SSH. Every SSH
connection of the program to that instance then accepts only this key (pulumi-command's
`hostKey`, the Docker provider's known_hosts file).

Why the console: cloud-init's keys_to_console module writes the host's public keys between
`-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----` to the serial console
at the instance's first boot (all key types by default: cloud-init docs, "Control SSH key
printing to console"), and EC2's GetConsoleOutput returns that console to a caller holding the
deploy credentials over the AWS API's TLS: a party between us and the Elastic IP cannot change
it, and the host's containers do not write it (docs/host-keys.md says more).

Environment:
  INSTANCE_ID       the instance (i-...)
  AWS_REGION        its region (AWS_PROFILE and the usual credentials as for pulumi-aws)
  TIMEOUT_SECONDS   how long to wait for the keys to appear (600)
  POLL_SECONDS      between reads (5)
  HOST_KEY_FILE     optional: an `ssh-ed25519 ...` line the operator read through another
                    trusted channel (SSM Session Manager), used only when the console no longer
                    shows the keys (an instance created before this step existed and rebooted
                    since: keys_to_console runs once per instance).
Exit status 0 with the key on stdout; 1 with the reason and the fix on stderr.
"""

from __future__ import annotations

import base64
import os
import struct
import sys
import time
from typing import Callable, Optional

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
KEY_TYPE = "ssh-ed25519"


class HostKeyError(Exception):
    """The console output shows a malformed or ambiguous key block."""


def _wire_type(blob: str) -> Optional[str]:
    """The key type inside an OpenSSH public key blob (RFC 4253 6.6: string type, ...); None
    when the blob is not valid base64 or too short."""
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
        return raw[4:4 + length].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        return None


def parse_host_key(console: str) -> Optional[str]:
    """The ed25519 host key in `console` as `ssh-ed25519 <base64>`; None when no complete key
    block is there yet. Raises HostKeyError for a block without an ed25519 key, a malformed
    key, or two blocks that disagree (the host's keys are generated once per instance)."""
    found: set[str] = set()
    rest = console
    while BEGIN in rest:
        _, _, after = rest.partition(BEGIN)
        block, ended, rest = after.partition(END)
        if not ended:
            break  # still being written
        keys = [line.split() for line in block.splitlines() if line.strip()]
        # The console may prefix a line (a kernel timestamp): the key follows its type's field.
        ed25519 = [fields[fields.index(KEY_TYPE):] for fields in keys if KEY_TYPE in fields]
        if not ed25519:
            raise HostKeyError(f"the console's host key block has no {KEY_TYPE} key")
        fields = ed25519[0]
        if len(fields) < 2 or _wire_type(fields[1]) != KEY_TYPE:
            raise HostKeyError(f"malformed {KEY_TYPE} key on the console: {' '.join(fields[:2])!r}")
        found.add(f"{KEY_TYPE} {fields[1]}")
    if len(found) > 1:
        raise HostKeyError(f"the console shows {len(found)} different {KEY_TYPE} host keys")
    return found.pop() if found else None


def console_reader(instance_id: str) -> Callable[[], str]:
    """Reads the instance's console through EC2's GetConsoleOutput (Latest on Nitro
    instances, which every GPU type the catalog offers is; buffered output otherwise)."""
    import boto3  # here: the parsing above needs no AWS SDK

    # AWS_REGION as pulumi-aws reads it (botocore itself reads AWS_DEFAULT_REGION).
    ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_REGION") or None)
    latest = True

    def read() -> str:
        nonlocal latest
        try:
            answer = ec2.get_console_output(InstanceId=instance_id, Latest=latest)
        except ec2.exceptions.ClientError as error:
            if latest and error.response.get("Error", {}).get("Code") == "UnsupportedOperation":
                latest = False
                return ""
            raise
        # boto3 decodes the base64 Output field itself.
        return answer.get("Output") or ""

    return read


def wait_for_host_key(read: Callable[[], str], timeout: float, poll: float) -> Optional[str]:
    deadline = time.monotonic() + timeout
    while True:
        key = parse_host_key(read())
        if key is not None or time.monotonic() >= deadline:
            return key
        time.sleep(poll)


def operator_key(path: str) -> str:
    line = open(path, encoding="utf-8").read().split()
    if len(line) < 2 or line[0] != KEY_TYPE or _wire_type(line[1]) != KEY_TYPE:
        raise HostKeyError(f"HOST_KEY_FILE {path} holds no `{KEY_TYPE} AAAA...` line")
    return f"{KEY_TYPE} {line[1]}"


def main(read: Optional[Callable[[], str]] = None) -> int:
    instance_id = os.environ["INSTANCE_ID"]
    timeout = float(os.environ.get("TIMEOUT_SECONDS", "600"))
    poll = float(os.environ.get("POLL_SECONDS", "5"))
    try:
        key = wait_for_host_key(read or console_reader(instance_id), timeout, poll)
        if key is None and os.environ.get("HOST_KEY_FILE"):
            key = operator_key(os.environ["HOST_KEY_FILE"])
            print(f"{instance_id}: using the host key from {os.environ['HOST_KEY_FILE']}", file=sys.stderr)
    except HostKeyError as error:
        print(f"{instance_id}: {error}; refusing to trust it. Replace the host "
              "(`pulumi up --replace <its instance URN>`) to get a fresh one.", file=sys.stderr)
        return 1
    if key is None:
        print(
            f"{instance_id}: no SSH host key on its console after {timeout:.0f} s (cloud-init prints "
            "it once, at the instance's first boot). An instance created before vllm-deploy pinned "
            "host keys and rebooted since no longer shows it: read it through SSM with "
            f"`aws ssm start-session --target {instance_id}` and `cat /etc/ssh/ssh_host_ed25519_key.pub`, "
            "save that line to a file and run `HOST_KEY_FILE=<file> pulumi up`; or replace the host.",
            file=sys.stderr,
        )
        return 1
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
