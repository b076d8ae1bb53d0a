"""What a workflow's jobs may reach, and what they leave behind (issue 23).

- On a pull request, no secret and no OIDC token that reaches a stack other than dev, unless
  the job waits in a protected environment (required reviewers): a PR's code could otherwise
  decrypt prod's secrets or act with prod's role. The one role a PR job may assume is the
  dev-only preview role (policies/preview-permissions.json, held by test_aws_policies.py).
- A preview never refreshes: a refresh dials the host over SSH (pulumi-docker reads its
  resources) and writes the refreshed state.
- Every job that runs pulumi first installs the program's hashed lock (pip --require-hashes),
  so pulumi runs in a .venv whose every file was checked against requirements.lock.
- Every job that deploys or destroys removes the stack's SSH key at its end, even on failure,
  so a runner that outlives the job (a self-hosted DEPLOY_RUNNER) keeps no key.

Each policy returns its violations, is checked on the real workflows (none) and on a workflow
that breaks it (each caught), as in test_workflows.py.
"""

from __future__ import annotations

import json
import re
from typing import Callable

import pytest
import yaml

from components.docker_host import IDENTITY_DIR
from tests.workflows.test_workflows import (
    CONFIGURE_AWS,
    PULUMI_ACTION,
    Job,
    Workflow,
    environment_name,
    jobs,
    pulumi_commands,
    pulumi_stack_expr,
    stacks_reached,
    steps,
    substitute_stack,
    triggers,
    uses_of,
    workflows,  # noqa: F401 - the fixture
)

# Environments with required reviewers (docs/operations.md, "GitHub environments").
PROTECTED_ENVIRONMENTS = {"prod"}
PREVIEW_ROLE = "vars.AWS_PREVIEW_ROLE_ARN"
PR_TRIGGERS = {"pull_request", "pull_request_target"}


def _protected(job: Job, stack: str = "prod") -> bool:
    env = environment_name(job)
    return env is not None and substitute_stack(env, stack) in PROTECTED_ENVIRONMENTS


def pull_requests_reach_beyond_dev(workflow: Workflow) -> list[str]:
    if not PR_TRIGGERS & set(triggers(workflow)):
        return []
    problems = []
    for name, job in jobs(workflow).items():
        if _protected(job):
            continue
        if "secrets." in json.dumps(job):
            problems.append(f"job {name}: a secret on a pull request outside a protected environment")
        if (job.get("permissions") or {}).get("id-token") == "write":
            roles = [str((s.get("with") or {}).get("role-to-assume", "")) for s in uses_of(job, CONFIGURE_AWS)]
            if not roles or any(PREVIEW_ROLE not in role for role in roles):
                problems.append(f"job {name}: an OIDC token on a pull request for a role other than {PREVIEW_ROLE}")
        for stack in sorted(stacks_reached(workflow, job) - {"dev"}):
            problems.append(f"job {name}: reaches stack {stack} from a pull request outside a protected environment")
    return problems


def refreshing_previews(workflow: Workflow) -> list[str]:
    problems = []
    for name, job in jobs(workflow).items():
        if "preview" not in pulumi_commands(job):
            continue
        for step in uses_of(job, PULUMI_ACTION):
            if str((step.get("with") or {}).get("refresh", "false")).lower() != "false":
                problems.append(f"job {name}: a preview with refresh dials the host and writes state")
        if any(re.search(r"--refresh\b(?!=false)", str(s.get("run", ""))) for s in steps(job)):
            problems.append(f"job {name}: a preview with refresh dials the host and writes state")
    return problems


def unlocked_installs(workflow: Workflow) -> list[str]:
    problems = []
    for name, job in jobs(workflow).items():
        if not pulumi_commands(job):
            continue
        locked = False
        for step in steps(job):
            run = str(step.get("run", ""))
            if "--require-hashes" in run and "-r requirements.lock" in run:
                locked = True
            is_pulumi = str(step.get("uses", "")).startswith(PULUMI_ACTION) or re.search(r"\bpulumi\s+\w", run)
            if is_pulumi and not locked:
                problems.append(f"job {name}: runs pulumi before installing requirements.lock with --require-hashes")
                break
    return problems


def keys_left_on_runner(workflow: Workflow) -> list[str]:
    problems = []
    for name, job in jobs(workflow).items():
        if not pulumi_commands(job) & {"up", "destroy", "refresh"}:
            continue
        last = steps(job)[-1] if steps(job) else {}
        # The very file the program writes (components.docker_host.identity_file), for the stack
        # this job runs: a near miss (another name, another stack) leaves the key behind.
        removes = str(last.get("run", "")).strip() == f'rm -f -- "$HOME/{IDENTITY_DIR}/$STACK.key"'
        stack = re.sub(r"^\$\{\{\s*|\s*\}\}$", "", str((last.get("env") or {}).get("STACK", "")))
        if not (removes and stack and stack in pulumi_stack_expr(job)
                and str(last.get("if", "")).replace(" ", "") == "always()"):
            problems.append(f"job {name}: its last step must remove ~/.ssh/vllm-deploy/<stack>.key, if: always()")
    return problems


POLICIES: list[Callable[[Workflow], list[str]]] = [
    pull_requests_reach_beyond_dev, refreshing_previews, unlocked_installs, keys_left_on_runner,
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.__name__)
def test_workflows_satisfy_policy(policy: Callable[[Workflow], list[str]], workflows: dict[str, Workflow]) -> None:  # noqa: F811
    problems = [f"{file}: {p}" for file, wf in workflows.items() for p in policy(wf)]
    assert problems == []


def test_no_workflow_reads_a_stored_pulumi_credential(workflows: dict[str, Workflow]) -> None:  # noqa: F811
    """Pulumi Cloud through OIDC token exchange, S3 state and KMS keys through the AWS role."""
    text = json.dumps(workflows)
    assert "secrets." not in text, "no long-lived secret in any workflow"


BAD = yaml.safe_load("""\
on: [pull_request]
permissions: {}
jobs:
  preview:
    runs-on: ubuntu-latest
    environment: dev
    permissions: {id-token: write}
    strategy: {matrix: {stack: [dev, prod]}}
    steps:
      - uses: aws-actions/configure-aws-credentials@61815dcd50bd041e203e49132bacad1fd04d2708
        with: {role-to-assume: "${{ vars.AWS_DEPLOY_ROLE_ARN }}"}
      - uses: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d
        with: {command: preview, stack-name: "${{ matrix.stack }}", refresh: true}
        env: {PULUMI_CONFIG_PASSPHRASE: "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"}
  up:
    runs-on: self-hosted
    environment: prod
    steps:
      - run: python -m venv .venv && .venv/bin/pip install -r requirements.txt
      - run: pulumi up --yes --stack prod
      - run: rm -f ~/.ssh/vllm-deploy/prod.key
""")


def test_the_policies_catch_a_workflow_that_breaks_them() -> None:
    assert pull_requests_reach_beyond_dev(BAD) == [
        "job preview: a secret on a pull request outside a protected environment",
        f"job preview: an OIDC token on a pull request for a role other than {PREVIEW_ROLE}",
        "job preview: reaches stack prod from a pull request outside a protected environment",
    ], "up runs in the protected prod environment: reviewers approve it first"
    assert refreshing_previews(BAD) == ["job preview: a preview with refresh dials the host and writes state"]
    assert unlocked_installs(BAD) == [
        "job preview: runs pulumi before installing requirements.lock with --require-hashes",
        "job up: runs pulumi before installing requirements.lock with --require-hashes",
    ]
    assert keys_left_on_runner(BAD) == [
        "job up: its last step must remove ~/.ssh/vllm-deploy/<stack>.key, if: always()",
    ]
