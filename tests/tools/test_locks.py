"""The hashed lock files (tools/lock) stay in step with the requirement ranges they come from.

pip's hash-checking mode installs only what a lock names, with the sha256 it lists: a range
added to a requirements*.txt without re-running tools/lock would make the install fail (or,
worse, be silently missing); a lock line without hashes would switch the mode off for nobody
but fail the whole install. Offline: reads the files, asks no index.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = ["requirements.txt", "requirements-dev.txt", "requirements-cluster.txt"]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def ranges(path: Path) -> list[Requirement]:
    """Every requirement of a requirements file, `-r` includes followed."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += ranges(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def pins(lock: Path) -> dict[str, list[tuple[str, int]]]:
    """name -> [(version, number of hashes)]; a universal lock may pin two versions (by marker)."""
    result: dict[str, list[tuple[str, int]]] = {}
    current = None
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = [match["version"], 0]
            result.setdefault(canonicalize_name(match["name"]), []).append(current)  # type: ignore[arg-type]
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            current[1] += 1
        elif line.strip() and not line.startswith((" ", "#")):
            pytest.fail(f"{lock.name}: a line pip would read as unpinned: {line!r}")
    return {name: [(v, n) for v, n in entries] for name, entries in result.items()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_range_is_pinned_inside_it_with_hashes(entry):
    lock = ROOT / entry.replace(".txt", ".lock")
    assert lock.exists(), f"{lock.name} is missing: run tools/lock"
    pinned = pins(lock)
    for requirement in ranges(ROOT / entry):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in {lock.name}: run tools/lock"
        for version, hashes in pinned[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock.name} pins {name}=={version}, outside {requirement}: run tools/lock"
            )
    for name, entries in pinned.items():
        assert all(hashes for _, hashes in entries), f"{lock.name}: {name} has no --hash"


def test_locks_pin_a_shared_package_to_one_version():
    """tools/venv.sh installs several locks into one .venv: they must agree."""
    locks = [pins(ROOT / e.replace(".txt", ".lock")) for e in ENTRY_POINTS]
    for smaller, larger in zip(locks, locks[1:]):
        for name, entries in smaller.items():
            assert sorted(v for v, _ in larger[name]) == sorted(v for v, _ in entries), name


def test_the_tools_install_locks_in_hash_checking_mode():
    venv_sh = (ROOT / "tools" / "venv.sh").read_text()
    assert '--require-hashes -r "$lock"' in venv_sh and '.lock"' in venv_sh


def test_tools_lock_passes_shellcheck():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    done = subprocess.run([str(shellcheck), "--severity=style", "tools/lock"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
