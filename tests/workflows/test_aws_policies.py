"""The IAM and KMS policy templates under policies/, which docs/operations.md links (the files
are the single source), held to what the program does and to who may use them.

The preview role lists the read calls a preview really makes and nothing more: the invokes the
program sends (seen by the mocks' `call` hook on representative stacks, and found in the source,
so an invoke behind a condition no run reaches still counts), mapped to the IAM actions the AWS
provider's data source calls (INVOKE_ACTIONS, with the source of each), plus the provider's own
account lookup. Each deploy role allows every action the program's resources need (their
types, seen in mock runs of the single-host, cluster and fleet stacks, mapped to the provider's
create/read/update/delete calls in tests/workflows/aws_actions.py, with sources), and changes
only resources of its own stack (tag conditions, or names and ARNs with the stack in them); each
trust policy admits one OIDC subject; the prod stack's KMS key is usable by the prod deploy role
and an MFA-only break-glass role alone, the dev key also by the operators' role (MFA); clients
read prod's API key from the SSM parameter the prod deploy job writes.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from plan.world import AwsWorld
from tests.harness import run_program, stack_config
from tests.workflows.aws_actions import LOCAL_COMMAND_ACTIONS, NOT_AWS_PREFIXES, RESOURCE_ACTIONS

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
OPERATIONS = REPO / "docs" / "operations.md"
ENVIRONMENTS = ("dev", "prod")
FLEET_KEY = "sk-test-policies-0a1b2c3d4e5f"
DEFAULT_TAGS = {"project": "vllm-deploy", "stack": "dev", "managed-by": "pulumi"}  # components/naming.py

# invoke token -> (IAM actions the provider's data source calls, where that is written).
# The data sources are terraform-provider-aws's (pulumi-aws 7.x bridges them), under
# internal/service/ec2/ and internal/service/meta/ of hashicorp/terraform-provider-aws.
INVOKE_ACTIONS: dict[str, tuple[set[str], str]] = {
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": (
        {"ec2:DescribeInstanceTypeOfferings"}, "ec2_instance_type_offerings_data_source.go"),
    "aws:ec2/getAmi:getAmi": ({"ec2:DescribeImages"}, "ec2_ami_data_source.go (FindImages)"),
    "aws:ec2/getVpc:getVpc": (
        {"ec2:DescribeVpcs", "ec2:DescribeVpcAttribute", "ec2:DescribeRouteTables"},
        "vpc_data_source.go: FindVPC, FindVPCAttribute (enableDnsSupport, enableDnsHostnames, "
        "enableNetworkAddressUsageMetrics), FindVPCMainRouteTable"),
    "aws:ec2/getSubnets:getSubnets": ({"ec2:DescribeSubnets"}, "vpc_subnets_data_source.go"),
    "aws:ec2/getSubnet:getSubnet": ({"ec2:DescribeSubnets"}, "vpc_subnet_data_source.go"),
    "aws:ec2/getInstances:getInstances": ({"ec2:DescribeInstances"}, "ec2_instances_data_source.go"),
    "aws:ebs/getEbsVolumes:getEbsVolumes": ({"ec2:DescribeVolumes"}, "ebs_volumes_data_source.go"),
    "aws:ebs/getVolume:getVolume": ({"ec2:DescribeVolumes"}, "ebs_volume_data_source.go"),
    "aws:index/getRegion:getRegion": (
        {"ec2:DescribeRegions"}, "meta/region_data_source.go: the configured region, checked against EC2's list"),
    # A fleet (replicas >= 2): the account id for its lifecycle-hook ARN, the partition, the
    # domain's hosted zone.
    "aws:index/getCallerIdentity:getCallerIdentity": (
        {"sts:GetCallerIdentity"}, "meta/caller_identity_data_source.go"),
    "aws:index/getPartition:getPartition": (set(), "meta/partition_data_source.go: the provider's own config, no call"),
    "aws:route53/getZone:getZone": (
        {"route53:ListHostedZones", "route53:GetHostedZone", "route53:ListTagsForResource"},
        "route53/zone_data_source.go: the zones listed and matched by name, then read with their tags "
        "(from the provider's source as remembered, not re-read for this change)"),
}
# The provider itself, once per run: the account id (internal/conns/config.go,
# GetAccountIDAndPartition; STS answers GetCallerIdentity for any identity).
PROVIDER_ACTIONS = {"sts:GetCallerIdentity"}

# aws.<module>.get_<name>( or aws.get_<name>( in the program's source.
INVOKE_CALL = re.compile(r"\baws\.(?:(?P<module>[a-z0-9]+)\.)?get_(?P<name>[a-z0-9_]+)\(")
# Actions that return a secret's value (the fleet's API key is an SSM SecureString).
SECRET_READS = {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "secretsmanager:GetSecretValue",
                "kms:Decrypt"}
PROGRAM_DIRS = ("components", "config", "sizing", "serving", "stack")


def policy(name: str) -> dict:
    return json.loads((POLICIES / name).read_text())


def statements(doc: dict) -> list[dict]:
    found = doc["Statement"]
    return found if isinstance(found, list) else [found]


def actions(statement: dict) -> set[str]:
    found = statement.get("Action", [])
    return {found} if isinstance(found, str) else set(found)


def token_of(module: str | None, name: str) -> str:
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)
    fn = "get" + camel[0].upper() + camel[1:]
    return f"aws:{module or 'index'}/{fn}:{fn}"


def source_invokes() -> set[str]:
    found = set()
    for folder in PROGRAM_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            found |= {token_of(m["module"], m["name"]) for m in INVOKE_CALL.finditer(path.read_text())}
    found |= {token_of(m["module"], m["name"]) for m in INVOKE_CALL.finditer((REPO / "__main__.py").read_text())}
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list:
    """Previews of the three stacks, of a stack whose model volume and host already exist
    (stopped), of one with its own subnet, and of a fleet (replicas: 3) with and without a
    domain in Route 53."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    mp.setenv("VLLM_DEPLOY_PUBLIC_IP", "192.0.2.44")
    found = []
    try:
        for stack in ("dev", "prod", "large"):
            found.append(run_program(stack_config(stack), stack=stack, preview=True))
        deployed = run_program(stack_config("dev")).one("aws:ebs/volume:Volume").plain
        world = AwsWorld()
        world.volumes = [{"id": "vol-0aaaabbbbccccdddd", "status": "in-use", "zone": deployed["availabilityZone"],
                          "size": deployed["size"], "tags": {**DEFAULT_TAGS, **deployed["tags"]}}]
        found.append(run_program(stack_config("dev"), world=world, preview=True))
        own_subnet = {**stack_config("dev"), "subnetId": "subnet-a000000000000000"}
        found.append(run_program(own_subnet, preview=True, expect_error=True))
        fleet = {**stack_config("prod"), "replicas": 3}
        found.append(run_program(fleet, stack="prod", secrets={"apiKey": FLEET_KEY}, preview=True))
        # Issue 26: a scaling fleet with a warm pool, and a spot fleet (mixed instances).
        found.append(run_program({**fleet, "maxReplicas": 5, "warmReplicas": 1}, stack="prod",
                                 secrets={"apiKey": FLEET_KEY}, preview=True))
        found.append(run_program({**fleet, "spot": True, "maxReplicas": 5}, stack="prod",
                                 secrets={"apiKey": FLEET_KEY}, preview=True))
        with_zone = AwsWorld()
        with_zone.hosted_zones = {"example.com": "Z0EXAMPLE"}
        # the domain the policies' Route 53 statement stands for (docs/operations.md)
        found.append(run_program({**fleet, "domain": "prod.llm.example.com"}, stack="prod",
                                 secrets={"apiKey": FLEET_KEY}, world=with_zone, preview=True))
    finally:
        mp.undo()
    return found


@pytest.fixture(scope="module")
def run_invokes(runs) -> set[str]:
    return {i.token for run in runs for i in run.invokes}


@pytest.fixture(scope="module")
def run_types(runs) -> set[str]:
    """The AWS resource types the runs register."""
    return {r.type for run in runs for r in run.resources if not r.type.startswith(NOT_AWS_PREFIXES)}


@pytest.fixture(scope="module")
def run_local_scripts(runs) -> set[str]:
    """The scripts the runs' local commands (run where `pulumi up` runs, with the deploy role) start."""
    found = set()
    for run in runs:
        for command in run.of_type("command:local:Command"):
            found |= set(re.findall(r"components/local/[a-z_]+\.py", str(command.plain.get("create", ""))))
    return found


def allowed(doc: dict, action: str) -> bool:
    """Whether some Allow statement of `doc` names `action` (IAM's * wildcards in names honoured)."""
    return any(
        fnmatch.fnmatchcase(action.lower(), pattern.lower())
        for s in statements(doc) if s["Effect"] == "Allow" for pattern in actions(s)
    )


def preview_reads() -> set[str]:
    (reads,) = [s for s in statements(policy("preview-permissions.json")) if s.get("Sid") == "ProgramReads"]
    assert reads["Resource"] == "*" and reads["Effect"] == "Allow"
    return actions(reads)


def test_every_invoke_the_program_can_send_has_its_iam_actions_listed():
    in_source = source_invokes()
    assert len(in_source) >= 8, in_source  # the scan still finds the program's lookups
    assert in_source - set(INVOKE_ACTIONS) == set(), "add the token to INVOKE_ACTIONS, with its source"


def test_the_runs_see_the_invokes_the_source_scan_finds(run_invokes):
    assert run_invokes, "the mocks recorded no invoke"
    assert run_invokes <= source_invokes(), run_invokes - source_invokes()
    assert "aws:ebs/getVolume:getVolume" in run_invokes and "aws:ec2/getSubnet:getSubnet" in run_invokes
    # the fleet's reads: its account id, partition and the domain's zone
    assert {"aws:index/getCallerIdentity:getCallerIdentity", "aws:route53/getZone:getZone"} <= run_invokes


def test_every_resource_type_the_runs_register_has_its_actions_listed(run_types, run_local_scripts):
    # the runs reach the single host, the cluster and the fleet with a domain
    assert {"aws:ec2/instance:Instance", "aws:ec2/placementGroup:PlacementGroup", "aws:autoscaling/group:Group",
            "aws:route53/record:Record", "aws:ssm/parameter:Parameter"} <= run_types, run_types
    assert run_types - set(RESOURCE_ACTIONS) == set(), "add the type to RESOURCE_ACTIONS, with its source"
    assert "components/local/wait_for_refresh.py" in run_local_scripts
    assert run_local_scripts - set(LOCAL_COMMAND_ACTIONS) == set(), "add the script to LOCAL_COMMAND_ACTIONS"


def deploy_needs(run_types: set[str], run_invokes: set[str], run_local_scripts: set[str]) -> set[str]:
    """Every action `pulumi up`/`destroy` of the runs' stacks makes with the deploy role."""
    return (PROVIDER_ACTIONS
            | {a for t in run_types for a in RESOURCE_ACTIONS[t][0]}
            | {a for token in run_invokes for a in INVOKE_ACTIONS[token][0]}
            | {a for script in run_local_scripts for a in LOCAL_COMMAND_ACTIONS[script][0]})


@pytest.mark.parametrize("stack", ENVIRONMENTS)
def test_each_deploy_role_allows_every_action_its_stacks_resources_need(stack, run_types, run_invokes,
                                                                         run_local_scripts):
    doc = policy(f"deploy-{stack}-permissions.json")
    needed = deploy_needs(run_types, run_invokes, run_local_scripts)
    assert {"autoscaling:CreateAutoScalingGroup", "autoscaling:DescribeInstanceRefreshes",
            "elasticloadbalancing:CreateLoadBalancer", "acm:ImportCertificate", "ssm:PutParameter",
            "route53:ChangeResourceRecordSets", "ec2:CreateImage", "ec2:CreateLaunchTemplate",
            "ec2:StopInstances", "iam:PutRolePolicy"} <= needed  # the derivation reaches the fleet
    missing = sorted(a for a in needed if not allowed(doc, a))
    assert missing == [], f"deploy-{stack}-permissions.json lacks {missing}"


def test_the_preview_policy_is_exactly_the_reads_the_program_makes():
    needed = PROVIDER_ACTIONS | {a for token in source_invokes() for a in INVOKE_ACTIONS[token][0]}
    assert preview_reads() == needed, {"missing": needed - preview_reads(), "extra": preview_reads() - needed}


def test_the_preview_role_reads_and_decrypts_only_the_dev_stack():
    doc = policy("preview-permissions.json")
    for statement in statements(doc):
        assert statement["Effect"] == "Allow"
        for action in actions(statement):
            verb = action.split(":")[1]
            assert verb.startswith(("Describe", "Get", "List")) or action in {
                "kms:Decrypt", "s3:PutObject", "s3:DeleteObject"}, action
        if any(a.startswith("kms:") for a in actions(statement)):
            assert actions(statement) == {"kms:Decrypt"}
            assert statement["Condition"] == {"StringEquals": {"aws:ResourceTag/stack": "dev"}}
        if any(a in ("s3:PutObject", "s3:DeleteObject") for a in actions(statement)):
            assert statement["Resource"].endswith("/locks/vllm-deploy/dev/*"), "only its lock"
    text = json.dumps(doc)
    assert "prod" not in text and "ReadOnlyAccess" not in text


@pytest.mark.parametrize(("name", "subject"), [
    ("preview-trust.json", "repo:${GITHUB_REPO}:pull_request"),
    ("deploy-dev-trust.json", "repo:${GITHUB_REPO}:environment:dev"),
    ("deploy-prod-trust.json", "repo:${GITHUB_REPO}:environment:prod"),
])
def test_each_role_trusts_one_oidc_subject(name, subject):
    (statement,) = statements(policy(name))
    assert actions(statement) == {"sts:AssumeRoleWithWebIdentity"}
    assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
    assert statement["Condition"] == {"StringEquals": {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": subject}}, "one exact subject, no wildcard"


def test_the_deploy_policies_differ_only_in_the_stack():
    dev = json.dumps(policy("deploy-dev-permissions.json"))
    prod = json.dumps(policy("deploy-prod-permissions.json"))
    assert re.sub(r"\bdev\b", "STACK", dev) == re.sub(r"\bprod\b", "STACK", prod)


@pytest.mark.parametrize("stack", ENVIRONMENTS)
def test_a_deploy_role_changes_only_its_own_stacks_resources(stack):
    other = next(s for s in ENVIRONMENTS if s != stack)
    doc = policy(f"deploy-{stack}-permissions.json")
    assert other not in re.findall(r"\b(?:dev|prod)\b", json.dumps(doc))
    for statement in statements(doc):
        assert statement["Effect"] == "Allow" and statement["Resource"] != "*" or all(
            a.split(":")[1].startswith(("Describe", "Get", "List")) for a in actions(statement)
        ), f"{statement['Sid']}: only reads may name every resource"
        if statement["Resource"] == "*":
            # reads that return a secret's value (the fleet's API key) never on every resource
            assert not actions(statement) & SECRET_READS, f"{statement['Sid']}: {actions(statement) & SECRET_READS}"
        assert not any(a.endswith(":*") or a == "*" for a in actions(statement)), statement["Sid"]
        writes = {a for a in actions(statement) if not a.split(":")[1].startswith(("Describe", "Get", "List"))}
        if not writes:
            continue
        condition = json.dumps(statement.get("Condition", {}))
        resources = json.dumps(statement["Resource"])
        records = statement.get("Condition", {}).get("ForAllValues:StringLike", {}).get(
            "route53:ChangeResourceRecordSetsNormalizedRecordNames", [])
        scoped = (f'"aws:RequestTag/stack": "{stack}"' in condition
                  or f'"aws:ResourceTag/stack": "{stack}"' in condition
                  or f"/{stack}/" in resources
                  or f"/vllm-deploy-{stack}-" in resources
                  or (records and all(r.endswith(f".{stack}.llm.example.com") or r == f"{stack}.llm.example.com"
                                      for r in records)))
        # Taken by a call only together with a resource of this stack (the instance or the
        # builder's instance, held by another statement): the shared subnet, image and snapshots.
        shared = (statement["Sid"] == "LaunchIntoSharedNetworkAndImages" and writes == {"ec2:RunInstances"}
                  or statement["Sid"] == "ImageSnapshotsOfThisStacksBuilder" and writes == {"ec2:CreateImage"}
                  # Snapshots made by CreateImage carry no tag (the provider tags the image only), so
                  # no tag condition can hold them; the program deletes only those of this stack's
                  # tagged images, by deregistering them (components/local/prune_images.py).
                  or statement["Sid"] == "SnapshotsOfThisStacksImages" and writes == {"ec2:DeleteSnapshot"})
        assert scoped or shared, f"{statement['Sid']}: {sorted(writes)} not limited to the {stack} stack"


def test_the_prod_role_may_write_exactly_the_dns_records_a_prod_fleet_makes(runs):
    """Route 53 takes no tag conditions: the role is limited to the domain's names and record
    types, and those must admit the records the program writes (the alias and ACM's validation)."""
    (statement,) = [s for s in statements(policy("deploy-prod-permissions.json"))
                    if "route53:ChangeResourceRecordSets" in actions(s)]
    names = statement["Condition"]["ForAllValues:StringLike"]["route53:ChangeResourceRecordSetsNormalizedRecordNames"]
    types = statement["Condition"]["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsRecordTypes"]
    records = [r.plain for run in runs for r in run.of_type("aws:route53/record:Record")]
    assert len(records) == 2, "the fleet with a domain writes its alias and the validation record"
    for record in records:
        name = str(record["name"]).lower().rstrip(".")
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in names), (name, names)
        assert record["type"] in types, record["type"]
    assert not any(fnmatch.fnmatchcase("prod.other.example.com", pattern) for pattern in names)


@pytest.mark.parametrize("stack", ENVIRONMENTS)
def test_a_deploy_role_tags_with_its_stack_only_what_it_creates(stack):
    """A tagging action allowed on the request tag alone would let a role tag another stack's
    resource with its own stack, and then change it: tag-on-create only (EC2's ec2:CreateAction,
    ELBv2's elasticloadbalancing:CreateAction), or on resources already of this stack."""
    tag_actions = {"ec2:CreateTags", "elasticloadbalancing:AddTags"}
    for statement in statements(policy(f"deploy-{stack}-permissions.json")):
        tagging = actions(statement) & tag_actions
        if not tagging:
            continue
        condition = statement["Condition"]["StringEquals"]
        if "aws:ResourceTag/stack" in condition:
            assert condition["aws:ResourceTag/stack"] == stack
            continue
        assert condition["aws:RequestTag/stack"] == stack, statement["Sid"]
        for action in tagging:
            service = action.split(":")[0]
            assert condition.get(f"{service}:CreateAction"), f"{statement['Sid']}: {action} not only while creating"


KEY_USES = {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*", "kms:*"}
MFA = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}


def key_users(stack: str) -> dict[str, dict]:
    """principal ARN -> the statement that lets it use the stack's key."""
    return {s["Principal"]["AWS"]: s for s in statements(policy(f"kms-{stack}-key-policy.json"))
            if actions(s) & KEY_USES}


def role(name: str) -> str:
    return f"arn:aws:iam::${{ACCOUNT_ID}}:role/{name}"


def test_the_prod_key_is_usable_by_the_prod_deploy_role_and_the_mfa_break_glass_role_only():
    users = key_users("prod")
    assert set(users) == {role("vllm-deploy-prod"), role("vllm-deploy-prod-breakglass")}
    assert users[role("vllm-deploy-prod-breakglass")]["Condition"] == MFA
    assert "Condition" not in users[role("vllm-deploy-prod")]


def test_the_dev_key_serves_ci_the_preview_decrypting_and_operators_with_mfa():
    users = key_users("dev")
    assert set(users) == {role("vllm-deploy-dev"), role("vllm-deploy-preview"), role("vllm-deploy-operators")}
    assert actions(users[role("vllm-deploy-preview")]) & KEY_USES == {"kms:Decrypt"}
    assert users[role("vllm-deploy-operators")]["Condition"] == MFA


@pytest.mark.parametrize("stack", ENVIRONMENTS)
def test_the_key_administrator_manages_but_cannot_use_the_key(stack):
    (admin,) = [s for s in statements(policy(f"kms-{stack}-key-policy.json")) if s["Principal"]["AWS"] == "${KEY_ADMIN_ARN}"]
    assert {"kms:Put*", "kms:ScheduleKeyDeletion"} <= actions(admin)
    assert not actions(admin) & KEY_USES and "${KEY_ADMIN_ARN}" not in key_users(stack)


def test_people_assume_their_roles_only_with_mfa():
    (statement,) = statements(policy("people-trust.json"))
    assert actions(statement) == {"sts:AssumeRole"} and statement["Condition"] == MFA
    assert statement["Principal"] == {"AWS": "arn:aws:iam::${ACCOUNT_ID}:root"}


def test_operators_and_break_glass_reach_only_their_own_stacks_state():
    for name, stack, other in (("operators-permissions.json", "dev", "prod"),
                               ("prod-breakglass-permissions.json", "prod", "dev")):
        text = json.dumps(policy(name))
        assert f"/{stack}" in text and f"/{other}" not in text and f"{other}.json" not in text, name
        assert not any(a.startswith(("kms:", "ssm:")) for s in statements(policy(name)) for a in actions(s)), (
            f"{name}: key use comes from the key policy alone")


def test_clients_read_the_api_key_the_prod_deploy_job_publishes():
    deploy = (REPO / ".github" / "workflows" / "deploy.yml").read_text()
    assert deploy.count("API_KEY: ${{ steps.up.outputs.apiKey }}") == 2
    assert deploy.count('"/vllm-deploy/%s/clients/api-key" % e["STACK"]') == 2
    for stack in ENVIRONMENTS:
        (publish,) = [s for s in statements(policy(f"deploy-{stack}-permissions.json")) if s["Sid"] == "PublishApiKey"]
        assert actions(publish) == {"ssm:PutParameter"}
        assert publish["Resource"] == f"arn:aws:ssm:*:${{ACCOUNT_ID}}:parameter/vllm-deploy/{stack}/clients/api-key"
    (read,) = statements(policy("api-key-readers-permissions.json"))
    assert actions(read) == {"ssm:GetParameter"}
    assert read["Resource"] == "arn:aws:ssm:*:${ACCOUNT_ID}:parameter/vllm-deploy/prod/clients/api-key"
    # Not the parameter a fleet's stack owns (its replicas read it at boot): two writers of one
    # name would fight, and `pulumi up` of a fleet would find CI's copy already there.
    from components.fleet_bake import api_key_parameter

    for stack in ENVIRONMENTS:
        assert f"/vllm-deploy/{stack}/clients/api-key" != api_key_parameter(stack)


def test_operations_md_links_every_policy_file():
    text = OPERATIONS.read_text()
    files = sorted(POLICIES.glob("*.json"))
    assert len(files) >= 8
    missing = [p.name for p in files if f"](../policies/{p.name})" not in text]
    assert missing == [], f"docs/operations.md links no {missing}: the files are the single source"
    assert "```json\n{\n  \"Version\"" not in text, "link to the file instead of copying a policy"

