"""Runs where `pulumi up` runs: after the driver step scheduled a reboot, waits until the
host's SSH port stops answering (the reboot has begun), so the next step does not connect to
the host in the seconds before it goes down. Its comeback is the next step's job (SSH dial
retries). No reboot scheduled (BOOT_ID_BEFORE empty): returns at once.

Environment: BOOT_ID_BEFORE, HOST, PORT (22), TIMEOUT_SECONDS (180), POLL_SECONDS (2).
"""

import os
import socket
import sys
import time


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def main() -> int:
    if not os.environ.get("BOOT_ID_BEFORE"):
        return 0
    host, port = os.environ["HOST"], int(os.environ.get("PORT", "22"))
    deadline = time.monotonic() + float(os.environ.get("TIMEOUT_SECONDS", "180"))
    poll = float(os.environ.get("POLL_SECONDS", "2"))
    while time.monotonic() < deadline:
        if not port_answers(host, port):
            print(f"{host}:{port} went down: the host is rebooting", flush=True)
            return 0
        time.sleep(poll)
    # Not fatal here: the next step checks the boot id and says what happened.
    print(f"{host}:{port} still answers after the timeout; the next step checks the boot id", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
