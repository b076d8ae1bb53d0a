from __future__ import annotations

import os
import sys

import pytest

from tests.cluster.processes import BIN, Cluster


@pytest.fixture(scope="session", autouse=True)
def ray_installed():
    if not (BIN / "ray").exists():
        message = f"Ray is not installed next to {sys.executable}: run ./tools/test-cluster"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def cluster():
    started = Cluster()
    yield started
    left = started.stop()
    assert not left, f"Ray processes left running: {left}"
