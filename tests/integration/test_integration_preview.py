"""Opt-in: a real `pulumi preview` of the dev stack, through the Automation API.

It talks to AWS (read-only: a preview creates nothing) and to the stack's backend, so it
runs only when all three hold, and is skipped otherwise with a message naming what is
missing:

  1. VLLM_DEPLOY_INTEGRATION=1
  2. the `pulumi` CLI on PATH
  3. AWS credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a web
     identity or container credentials variable, or a ~/.aws/credentials or ~/.aws/config
     that holds a profile

    VLLM_DEPLOY_INTEGRATION=1 AWS_PROFILE=my-profile \\
        .venv/bin/python -m pytest -m integration tests/integration/test_integration_preview.py

The stack must exist in the backend you are logged in to (`pulumi stack init dev`, see
docs/operations.md); VLLM_DEPLOY_STACK picks another one. The credential check reads only
the environment and files: it never calls AWS, so skipping costs nothing.
"""

from __future__ import annotations

import configparser
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OPT_IN = "VLLM_DEPLOY_INTEGRATION"
STACK = os.environ.get("VLLM_DEPLOY_STACK", "dev")
NAMESPACE = "vllm-deploy"
INSTANCE_TYPE = "aws:ec2/instance:Instance"
RUN_HINT = (
    f"run: {OPT_IN}=1 AWS_PROFILE=<profile> .venv/bin/python -m pytest -m integration "
    "tests/integration/test_integration_preview.py"
)

# Variables any AWS SDK (and so the Pulumi AWS provider) takes credentials from, alone.
_SOLE_CREDENTIAL_VARIABLES = (
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)
# Keys that make a ~/.aws/config profile a source of credentials, not only settings.
_PROFILE_CREDENTIAL_KEYS = (
    "aws_access_key_id",
    "credential_process",
    "role_arn",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
)


def aws_credentials_source(env: Mapping[str, str], home: Path) -> Optional[str]:
    """Where the AWS SDK would find credentials, judged from env and files only; None if nowhere."""
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    for name in _SOLE_CREDENTIAL_VARIABLES:
        if env.get(name):
            return name
    credentials = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
    if _profiles_with(credentials, ("aws_access_key_id",)):
        return str(credentials)
    config = Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")
    if _profiles_with(config, _PROFILE_CREDENTIAL_KEYS):
        return str(config)
    return None


def _profiles_with(path: Path, keys: tuple[str, ...]) -> bool:
    if not path.is_file():
        return False
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error:
        return False
    return any(key in parser[section] for section in parser.sections() for key in keys)


def missing_prerequisites(
    env: Mapping[str, str], which: Callable[[str], Optional[str]], home: Path
) -> list[str]:
    """What stops the integration test from running, each with how to provide it."""
    missing = []
    if env.get(OPT_IN) != "1":
        missing.append(f"{OPT_IN}=1 is not set (the test is opt-in: it calls AWS)")
    if which("pulumi") is None:
        missing.append("the pulumi CLI is not on PATH (install it: https://www.pulumi.com/docs/install/)")
    if aws_credentials_source(env, home) is None:
        missing.append(
            "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run `aws configure` / `aws sso login`"
        )
    return missing


@dataclass(frozen=True)
class InstancePlan:
    """What a preview's engine events say about the EC2 instances in the plan."""

    urns: frozenset[str]
    ops: frozenset[str]
    inputs: dict[str, Any]


def instance_plan(events: Iterable[Any]) -> InstancePlan:
    steps = [
        event.resource_pre_event.metadata
        for event in events
        if event.resource_pre_event is not None
        and event.resource_pre_event.metadata.type == INSTANCE_TYPE
    ]
    planned = next((step.new for step in steps if step.new is not None), None)
    return InstancePlan(
        urns=frozenset(step.urn for step in steps),
        ops=frozenset(step.op.value for step in steps),
        inputs=dict(planned.inputs or {}) if planned is not None else {},
    )


def configured_instance_type(stack: str) -> Optional[str]:
    path = REPO / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        return None
    config = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}
    value = config.get(f"{NAMESPACE}:instanceType")
    return None if value in (None, "auto") else str(value)


# --- the prerequisite check itself (runs everywhere, no network) -----------------------------


def _no_pulumi(_: str) -> None:
    return None


def _pulumi_found(_: str) -> str:
    return "/usr/local/bin/pulumi"


def test_nothing_set_names_all_three_missing_prerequisites(tmp_path: Path) -> None:
    missing = missing_prerequisites({}, _no_pulumi, tmp_path)
    assert len(missing) == 3
    assert OPT_IN in missing[0] and "pulumi CLI" in missing[1] and "AWS_PROFILE" in missing[2]


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example"},
        {"AWS_PROFILE": "deploy"},
        {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"},
    ],
    ids=["access-keys", "profile", "web-identity"],
)
def test_credentials_from_the_environment_count(env: dict[str, str], tmp_path: Path) -> None:
    assert missing_prerequisites({OPT_IN: "1", **env}, _pulumi_found, tmp_path) == []


def test_an_access_key_id_without_its_secret_is_not_credentials(tmp_path: Path) -> None:
    assert aws_credentials_source({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, tmp_path) is None


def test_a_credentials_file_counts_and_an_empty_one_does_not(tmp_path: Path) -> None:
    credentials = tmp_path / ".aws" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text("[default]\nregion = us-east-1\n", encoding="utf-8")
    assert aws_credentials_source({}, tmp_path) is None
    credentials.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\n", encoding="utf-8")
    assert aws_credentials_source({}, tmp_path) == str(credentials)


def test_an_sso_profile_in_the_config_file_counts(tmp_path: Path) -> None:
    config = tmp_path / ".aws" / "config"
    config.parent.mkdir()
    config.write_text("[profile deploy]\nsso_session = corp\nregion = us-east-1\n", encoding="utf-8")
    assert aws_credentials_source({}, tmp_path) == str(config)


def test_opt_in_must_be_exactly_1(tmp_path: Path) -> None:
    env = {OPT_IN: "true", "AWS_PROFILE": "deploy"}
    assert missing_prerequisites(env, _pulumi_found, tmp_path) == [
        f"{OPT_IN}=1 is not set (the test is opt-in: it calls AWS)"
    ]


def _pre_event(op: str, type_: str, urn_name: str, inputs: dict[str, Any]) -> Any:
    from pulumi.automation import EngineEvent

    # The engine's JSON event shape (`pulumi preview --json` / the Automation API event log).
    urn = f"urn:pulumi:dev::vllm-deploy::{type_}::{urn_name}"
    return EngineEvent.from_json({
        "sequence": 1,
        "timestamp": 0,
        "resourcePreEvent": {
            "metadata": {"op": op, "urn": urn, "type": type_, "provider": "",
                         "new": {"type": type_, "urn": urn, "inputs": inputs}},
        },
    })


def test_instance_plan_reads_the_instance_out_of_engine_events() -> None:
    events = [
        _pre_event("create", "aws:ec2/securityGroup:SecurityGroup", "sg", {"name": "sg"}),
        _pre_event("create", INSTANCE_TYPE, "host", {"instanceType": "g6.xlarge"}),
    ]
    plan = instance_plan(events)
    assert plan.ops == {"create"} and len(plan.urns) == 1
    assert plan.inputs["instanceType"] == "g6.xlarge"


# --- the real preview ------------------------------------------------------------------------


@pytest.mark.integration
def test_preview_of_the_dev_stack_plans_the_gpu_instance() -> None:
    missing = missing_prerequisites(os.environ, shutil.which, Path.home())
    if missing:
        pytest.skip("integration preview skipped: " + "; ".join(missing) + f". {RUN_HINT}")

    from pulumi import automation as auto

    try:
        stack = auto.select_stack(stack_name=STACK, work_dir=str(REPO))
    except auto.StackNotFoundError:
        pytest.fail(
            f"stack {STACK!r} does not exist in the backend you are logged in to; create it "
            f"with `pulumi stack init {STACK}` (docs/operations.md) or set VLLM_DEPLOY_STACK"
        )
    deployed = bool((stack.export_stack().deployment or {}).get("resources"))

    events: list[auto.EngineEvent] = []
    result = stack.preview(on_event=events.append, color="never")

    plan = instance_plan(events)
    assert len(plan.urns) == 1, f"expected one {INSTANCE_TYPE} in the plan, got {sorted(plan.urns)}"
    assert plan.ops - {"delete", "delete-replaced"}, f"the plan deletes the instance: {plan.ops}"
    # Sizing is pure Python, so the type is known at preview, not an unknown placeholder.
    instance_type = plan.inputs.get("instanceType")
    assert isinstance(instance_type, str) and "." in instance_type, plan.inputs
    wanted = configured_instance_type(STACK)
    if wanted is not None:
        assert instance_type == wanted

    if not deployed:
        assert plan.ops == {"create"}, plan.ops
        assert result.change_summary.get("create", 0) > 1, result.change_summary
