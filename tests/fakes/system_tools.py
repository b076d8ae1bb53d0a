"""The system binaries the live tests run for real (apt packages .ci/run installs)."""

from __future__ import annotations

import os
import shutil

import pytest


def binary(name: str, packages: str, tier: str) -> str:
    """The path of `name` (PATH, then /usr/bin and /usr/sbin). Missing: the test skips, naming
    `apt-get install <packages>`; under CI (CI set) it fails instead, since CI must run `tier`."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"]))
    if found:
        return found
    reason = f"needs {name} (apt-get install {packages})"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {tier}: {reason}")
    pytest.skip(reason)
