"""tools/install-cpu-torch: the conformance tier's CPU torch (torch==VERSION+cpu, not on PyPI) comes
from pip's configured index, else from the PyTorch CPU index, else the tool stops and names both
ways. Run for real: a real pip in a throwaway venv, against two PEP 503 indexes served on loopback
(one stands for the configured index, one for download.pytorch.org/whl/cpu) and a fake torch wheel;
the machine's pip configuration is switched off (PIP_CONFIG_FILE=/dev/null)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "install-cpu-torch"
CONSTRAINTS = ROOT / "tests" / "conformance" / "vllm_harness" / "constraints.txt"
PIN = next(line.strip() for line in CONSTRAINTS.read_text().splitlines() if line.startswith("torch=="))
VERSION = PIN.split("==", 1)[1]  # e.g. 2.13.0+cpu


def _fake_torch_wheel(folder: Path) -> Path:
    """A pure-Python wheel named torch VERSION whose torch.__version__ says where it came from."""
    name = f"torch-{VERSION}-py3-none-any.whl"
    info = f"torch-{VERSION}.dist-info"
    files = {
        "torch/__init__.py": f'__version__ = "{VERSION}"\nFAKE = True\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {VERSION}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    wheel = folder / name
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


class _Index:
    """A static PEP 503 index on 127.0.0.1 under `prefix`, with or without torch; records the
    paths asked for."""

    def __init__(self, root: Path, prefix: str, wheel: Path | None):
        self.requests: list[str] = []
        project = root / prefix.strip("/") / "torch"
        project.mkdir(parents=True)
        if wheel is not None:
            (project / wheel.name).write_bytes(wheel.read_bytes())
            (project / "index.html").write_text(f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>')
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{prefix}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def indexes(tmp_path):
    wheel = _fake_torch_wheel(tmp_path)
    made: list[_Index] = []

    def make(name: str, prefix: str, has_torch: bool) -> _Index:
        index = _Index(tmp_path / name, prefix, wheel if has_torch else None)
        made.append(index)
        return index

    yield make
    for index in made:
        index.close()


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    """A throwaway venv's python (the tests install into it, never into .venv)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv / "bin" / "python"


def _run(python: Path, configured: _Index, pytorch: _Index, home: Path) -> subprocess.CompletedProcess:
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "torch"], capture_output=True,
                   env=_env(configured, pytorch, home))
    return subprocess.run([str(TOOL), str(python), str(CONSTRAINTS)], capture_output=True, text=True,
                          env=_env(configured, pytorch, home), timeout=120)


def _env(configured: _Index, pytorch: _Index, home: Path) -> dict[str, str]:
    return {  # nothing from this machine's pip setup (its find-links hold the real torch wheel)
        "PATH": os.environ["PATH"], "HOME": str(home), "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": configured.url, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "TORCH_CPU_INDEX": pytorch.url, "NO_PROXY": "127.0.0.1",
    }


def _installed(python: Path) -> str | None:
    done = subprocess.run([str(python), "-c", "import torch; print(torch.__version__, torch.FAKE)"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_the_configured_index_is_tried_first(python, indexes, tmp_path):
    configured = indexes("configured", "/simple", has_torch=True)
    pytorch = indexes("pytorch", "/whl/cpu", has_torch=True)
    done = _run(python, configured, pytorch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert _installed(python) == f"{VERSION} True"
    assert "configured index" in done.stderr
    assert pytorch.requests == []


def test_the_pytorch_cpu_index_when_the_configured_one_has_no_cpu_torch(python, indexes, tmp_path):
    configured = indexes("configured", "/simple", has_torch=False)
    pytorch = indexes("pytorch", "/whl/cpu", has_torch=True)
    done = _run(python, configured, pytorch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert _installed(python) == f"{VERSION} True"
    assert pytorch.url in done.stderr
    assert any(path.startswith("/simple/torch") for path in configured.requests)
    assert any(path.startswith("/whl/cpu/torch") for path in pytorch.requests)


def test_neither_index_stops_with_the_two_ways(python, indexes, tmp_path):
    configured = indexes("configured", "/simple", has_torch=False)
    pytorch = indexes("pytorch", "/whl/cpu", has_torch=False)
    done = _run(python, configured, pytorch, tmp_path)
    assert done.returncode == 1
    assert _installed(python) is None
    message = done.stderr
    assert PIN in message
    assert "pip config set global.extra-index-url" in message  # way 1: an index that has it
    assert "https://download.pytorch.org/whl/cpu" in message  # way 2: reach the PyTorch index
    assert pytorch.url in message  # what was tried


def test_a_constraints_file_without_a_torch_pin_is_refused(python, tmp_path):
    empty = tmp_path / "constraints.txt"
    empty.write_text("numpy==2.0.0\n")
    done = subprocess.run([str(TOOL), str(python), str(empty)], capture_output=True, text=True)
    assert done.returncode == 2
    assert str(empty) in done.stderr and "torch==VERSION+cpu" in done.stderr


def test_the_tool_passes_shellcheck():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    done = subprocess.run([str(shellcheck), "--severity=style", "tools/install-cpu-torch", "tools/vllm-venv"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
