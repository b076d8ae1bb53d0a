"""The project files a user and CI rely on agree with the code."""

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic_core import PydanticUndefined

from config.constants import NAMESPACE, SECRET_KEYS
from config.settings import StackConfig
from config.validation import parse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import config_reference  # noqa: E402


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_starts_with_the_deploy_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", _readme(), re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands[0] == "pulumi login --local && pulumi stack select --create dev && pulumi up"
    assert commands[1] == "./tools/test"


def test_ci_runs_exactly_the_readme_test_command_then_the_vllm_tiers():
    first_block = re.search(r"```bash\n(.*?)```", _readme(), re.S).group(1)
    test_command = [line for line in first_block.splitlines() if line and not line.startswith("#")][1]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().strip().splitlines() if not line.startswith("#")]
    tiers = ["./tools/test-vllm", "./tools/test-real-vllm"]
    assert ci[-3:] == [test_command, *tiers]
    for tier in tiers:
        assert f"\n{tier}" in _readme(), f"README names {tier} in a code block"
    for tool in ("test", "test-vllm", "vllm-venv", "test-real-vllm", "real-vllm-venv"):
        assert (ROOT / "tools" / tool).stat().st_mode & 0o111, tool


def test_the_opt_in_tiers_have_markers_the_quick_suite_skips():
    """Each tier's marker is declared in pytest.ini and skipped by tests/conftest.py unless asked
    for; each tier's tool asks for it."""
    from tests.conftest import OPT_IN_TIERS

    ini = (ROOT / "pytest.ini").read_text()
    for mark, tool in (("vllm_conformance", "test-vllm"), ("real_vllm", "test-real-vllm")):
        assert mark in OPT_IN_TIERS and f"    {mark}: " in ini, mark
        assert f"-m {mark} " in (ROOT / "tools" / tool).read_text(), tool


def test_readme_config_reference_is_generated_from_the_model():
    assert config_reference.embedded(_readme()) == config_reference.table(), (
        "README config reference is stale: .venv/bin/python tools/config_reference.py --write"
    )


def _pulumi_type(annotation) -> typing.Optional[str]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is str or (origin is typing.Literal and all(isinstance(a, str) for a in args)):
        return "string"
    if origin is list:
        # Pulumi types an array's items as string, integer, boolean or array, never object
        # (loraAdapters: a list of {name, model, revision}): such keys stay undeclared.
        return "array" if _pulumi_type(args[0]) is not None else None
    return None


def test_pulumi_yaml_declares_typed_keys_with_the_programs_defaults():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    declared = project["config"]
    fields = {f.alias: f for f in StackConfig.model_fields.values()}
    for key, decl in declared.items():
        assert key in fields, f"Pulumi.yaml declares {key}, which the program does not know"
        field = fields[key]
        assert decl["type"] == _pulumi_type(field.annotation), key
        if "default" in decl:
            assert decl["default"] == field.get_default(call_default_factory=True), key
        else:
            assert field.default is PydanticUndefined, f"{key} has a default the CLI would not apply"
    for key, field in fields.items():
        has_default = field.default is not PydanticUndefined or field.default_factory is not None
        default = field.get_default(call_default_factory=True) if has_default else None
        typed = _pulumi_type(field.annotation) is not None
        # A declared key without default is required by the CLI: only declare real defaults.
        if typed and (default is not None or not has_default):
            assert key in declared, f"{key} can be declared in Pulumi.yaml (type and default)"
    for secret in SECRET_KEYS:
        assert secret not in declared


def test_runtime_installs_requirements_into_a_virtualenv():
    runtime = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]
    assert runtime["name"] == "python"
    assert runtime["options"]["toolchain"] == "pip" and runtime["options"]["virtualenv"] == ".venv"
    assert (ROOT / "requirements.txt").exists()


@pytest.mark.parametrize("stack", ["dev", "prod", "large"])
def test_example_stacks_are_valid(stack):
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    prefix = f"{NAMESPACE}:"
    values = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    cfg = parse(values)
    assert data.get("aws:region")
    assert not any(k in values for k in SECRET_KEYS), "secrets must not sit in plain text in a stack file"
    if stack == "prod":
        assert "0.0.0.0/0" not in cfg.allowed_cidrs and cfg.allowed_cidrs
        assert cfg.metrics_allowed_cidrs and cfg.rate_limit_per_minute


def test_config_reference_tool_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "config_reference.py")], capture_output=True, text=True, check=True
    ).stdout
    assert "| `maxModelLen` |" in out
