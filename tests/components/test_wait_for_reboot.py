"""components/local/wait_for_reboot.py, run for real against a loopback port that goes away."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "components" / "local" / "wait_for_reboot.py"


def run(env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT)], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=30)
    return result, time.monotonic() - started


def test_returns_at_once_when_no_reboot_was_scheduled():
    result, took = run({"BOOT_ID_BEFORE": "", "HOST": "127.0.0.1", "PORT": "9"})
    assert result.returncode == 0 and result.stdout == "" and took < 5


def test_waits_until_the_ssh_port_goes_down():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    threading.Timer(1.5, listener.close).start()  # the "reboot" begins 1.5 s later
    result, took = run({"BOOT_ID_BEFORE": "abc", "HOST": "127.0.0.1", "PORT": str(port),
                        "POLL_SECONDS": "0.2", "TIMEOUT_SECONDS": "20"})
    assert result.returncode == 0
    assert "went down" in result.stdout
    assert 1.0 < took < 10


def test_gives_up_without_failing_when_the_port_stays_up():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        result, took = run({"BOOT_ID_BEFORE": "abc", "HOST": "127.0.0.1", "PORT": str(port),
                            "POLL_SECONDS": "0.2", "TIMEOUT_SECONDS": "1"})
    assert result.returncode == 0 and "still answers" in result.stdout
