"""Under mocks: every container runs in the slice the host's IMDS guard blocks, and starts only
after the guard's step (issue 27: host-network containers and IMDS)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.components.test_program import reaches
from tests.harness import stack_config

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = "docker:index/container:Container"


def guarded_slice() -> str:
    script = (ROOT / "components" / "scripts" / "block_container_imds.sh").read_text()
    return re.search(r"^SLICE=(\S+)$", script, re.M).group(1)


def test_every_container_is_in_the_guarded_slice_and_waits_for_the_guard(program):
    slice_name = guarded_slice()
    for stack in ("dev", "prod", "large"):
        run = program(stack_config(stack), stack=stack)
        containers = run.of_type(CONTAINER)
        assert containers, stack
        guards = [r for r in run.resources if r.name.endswith("-imds-guard")]
        assert len(guards) == len(run.of_type("aws:ec2/instance:Instance")), stack  # one per node
        for container in containers:
            assert container.plain.get("cgroupParent") == slice_name, (stack, container.name)
            assert any(reaches(run, container, guard) for guard in guards), (stack, container.name)


def test_every_host_network_container_a_script_starts_runs_in_the_guarded_slice():
    scripts = ROOT / "components" / "scripts"
    found = 0
    for path in [*scripts.glob("*.sh"), *scripts.glob("replica/*.sh")]:
        text = path.read_text().replace("\\\n", " ")  # continuation lines joined
        for line in text.splitlines():
            if "--network host" in line and ("docker run" in line or "run_args+=" in line):
                found += 1
                assert f"--cgroup-parent {guarded_slice()}" in line, (path.name, line)
    assert found >= 3  # the replica's nginx, the Ray node's vLLM, the benchmark client
