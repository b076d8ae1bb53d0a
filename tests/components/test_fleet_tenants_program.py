"""A fleet in tenant mode (issue 29) under recording mocks: the tenants' nginx files in their own
SSM SecureString that only the replicas' profile may read, nothing secret in a plain input, the
image and launch template independent of keys and limits (rotation needs no re-bake and no
refresh), and a fleet without apiKeys exactly as before."""

import base64
import gzip
import io
import json
import secrets
import tarfile

import pytest

from components.fleet_bake import SHUTDOWN_TIMEOUT_S, tenant_files_parameter
from config.validation import parse
from serving import replica_tenants
from serving.proxy_limits import stack_limits
from serving.tenants import TENANT_DIR_CONTAINER, key_hash, tenant_files, tenant_limits
from sizing.choice import plan as choose_plan
from tests.components.test_fleet_program import (
    AMI, API_KEY, PARAMETER, TEMPLATE, baked_files, prod_fleet,
)
from tests.harness import is_secret, plain_text, project_defaults, reveal, stack_config

MOCK_KEY = "mock-generated-api-key-0123456789abcdef"  # every RandomPassword under the mocks
TENANTS = {"team-a": {"rateLimitPerMinute": 60}, "team-b": {"maxConcurrentRequests": 4}}


def tenant_fleet(program, tenants=None, **extra):
    return prod_fleet(program, apiKeys=json.dumps(tenants or TENANTS), **extra)


def unpack(value: str) -> dict[str, str]:
    """The parameter's value as a replica's tenant_sync.sh reads it: base64, gzip, tar."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(base64.b64decode(value)))) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


def tenant_parameter(run):
    (parameter,) = [p for p in run.of_type(PARAMETER) if p.plain["name"] == tenant_files_parameter("prod")]
    return parameter


def test_the_tenants_files_are_a_secret_parameter_holding_what_the_proxy_renders(program):
    run = tenant_fleet(program)
    parameter = tenant_parameter(run)
    assert parameter.plain["type"] == "SecureString" and "keyId" not in parameter.plain  # aws/ssm, as the API key's
    assert is_secret(parameter.inputs["value"]) and "value" in parameter.additional_secret_outputs
    assert parameter.plain["tier"] == "Standard"  # two tenants fit 4 KB
    # What the replicas install is serving.tenants' rendering, with each tenant's exported key's
    # hash and the stack's own API key as what nginx sends upstream.
    assert run.exports["apiKeys"].secret
    keys = run.exports["apiKeys"].value
    assert set(keys) == set(TENANTS)
    raw = {**project_defaults(), **stack_config("prod"), "replicas": 3, "apiKeys": TENANTS}
    settings = parse({k: v for k, v in raw.items() if ":" not in k})
    limits = stack_limits(settings, choose_plan(settings))
    expected = tenant_files(tenant_limits(settings, limits), {t: [key_hash(k)] for t, k in keys.items()}, API_KEY)
    assert unpack(reveal(parameter.inputs["value"])) == expected


def test_no_key_or_key_hash_is_in_a_plain_input_the_image_or_the_template(program):
    run = tenant_fleet(program)
    secrets = [API_KEY, MOCK_KEY, key_hash(MOCK_KEY), key_hash(API_KEY)]
    for res in run.resources:
        for secret in secrets:
            assert secret not in plain_text(res.inputs), f"a key or its hash in plain inputs of {res.urn}"
    files = baked_files(run)
    assert not any(s in text for s in secrets for text in files.values())
    env = files["replica.env"]
    assert f"VLLM_DEPLOY_TENANT_PARAMETER={tenant_files_parameter('prod')}\n" in env
    assert f"VLLM_DEPLOY_TENANT_DIR_CONTAINER={TENANT_DIR_CONTAINER}\n" in env
    for name, export in run.exports.items():
        assert export.secret or not any(s in str(export.value) for s in secrets), name


def test_only_the_replicas_profile_reads_the_tenants_parameter_through_ssm(program):
    run = tenant_fleet(program)
    parameter = tenant_parameter(run)
    policy = json.loads(run.named("vllm-replicas-policy").plain["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["TenantFiles"]["Action"] == "ssm:GetParameter"
    assert by_sid["TenantFiles"]["Resource"].endswith(":parameter/vllm-deploy/prod/proxy-tenants")
    arns = by_sid["ApiKeyDecrypt"]["Condition"]["StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"]
    assert sorted(a.rsplit(":parameter", 1)[1] for a in arns) == ["/vllm-deploy/prod/api-key", "/vllm-deploy/prod/proxy-tenants"]
    # The group starts no replica before the parameter exists (boot.sh needs it).
    assert run.one("aws:autoscaling/group:Group").depends_on(parameter)


def test_a_fleet_without_tenants_has_no_tenant_resource_and_the_same_policy(program):
    plain, tenants = prod_fleet(program), tenant_fleet(program)
    assert [p.plain["name"] for p in plain.of_type(PARAMETER)] == ["/vllm-deploy/prod/api-key"]
    assert "apiKeys" not in plain.exports
    assert "VLLM_DEPLOY_TENANT" not in baked_files(plain)["replica.env"]
    policy = json.loads(plain.named("vllm-replicas-policy").plain["policy"])
    assert "TenantFiles" not in {s["Sid"] for s in policy["Statement"]}
    assert isinstance(next(s for s in policy["Statement"] if s["Sid"] == "ApiKeyDecrypt")["Condition"]["StringEquals"][
        "kms:EncryptionContext:PARAMETER_ARN"], str)
    # Turning tenants on adds resources and renames none.
    assert {r.urn for r in plain.resources} <= {r.urn for r in tenants.resources}


def test_rotating_adding_or_relimiting_tenants_changes_the_parameter_not_the_image_or_template(program):
    def deploy(tenants):
        run = tenant_fleet(program, tenants)
        return run, run.one(AMI).plain["name"], run.one(TEMPLATE).plain, reveal(tenant_parameter(run).inputs["value"])

    _, image, template, value = deploy(TENANTS)
    more = {**TENANTS, "team-c": {"rateLimitPerMinute": 5}}
    _, image2, template2, value2 = deploy(more)
    assert value2 != value  # the new tenant's key reaches the replicas through the parameter
    assert (image2, template2) == (image, template)  # no re-bake, no instance refresh
    _, image3, template3, _ = deploy({"team-a": {"rateLimitPerMinute": 600}})
    assert (image3, template3) == (image, template)


def test_tenants_that_cannot_fit_one_parameter_are_refused_before_any_resource(program, monkeypatch):
    # As many tenants' files as an 8 KB parameter holds is more than the test wants to render:
    # the parameter's limits made small instead (the bound is the real rendering's size).
    monkeypatch.setattr(replica_tenants, "STANDARD_TIER_MAX_CHARS", 100)
    monkeypatch.setattr(replica_tenants, "ADVANCED_TIER_MAX_CHARS", 200)
    run = program({**stack_config("prod"), "replicas": 3, "apiKeys": json.dumps(TENANTS)}, stack="prod",
                  secrets={"apiKey": API_KEY}, expect_error=True)
    assert "vllm-deploy:apiKeys: 2 tenants need up to" in str(run.error) and "fewer tenants" in str(run.error)
    assert not run.cloud_resources


@pytest.mark.parametrize("count", [2, 20])
def test_the_size_bound_holds_for_random_keys_and_picks_the_tier(count, monkeypatch):
    names = [f"tenant-{i:02d}" for i in range(count)]
    settings = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192,
                      "apiKeys": {n: {"rateLimitPerMinute": 60, "rotation": 1, "keepPreviousKey": True} for n in names}})
    limits = stack_limits(settings, choose_plan(settings))
    bound = replica_tenants.bundle_size_bound(settings, limits)
    for _ in range(5):  # real keys: random; a given apiKey as long as the bound allows
        hashes = {n: [key_hash(secrets.token_urlsafe(36)) for _ in range(2)] for n in names}
        upstream = secrets.token_urlsafe(300)[: replica_tenants.UPSTREAM_KEY_BOUND_CHARS]
        assert len(replica_tenants.bundle_for(settings, limits, hashes, upstream)) <= bound
    # The tier is the cheapest that holds the bound.
    monkeypatch.setattr(replica_tenants, "STANDARD_TIER_MAX_CHARS", bound)
    monkeypatch.setattr(replica_tenants, "ADVANCED_TIER_MAX_CHARS", bound + 1)
    assert replica_tenants.parameter_tier(settings, limits) == "Standard"
    monkeypatch.setattr(replica_tenants, "STANDARD_TIER_MAX_CHARS", bound - 1)
    assert replica_tenants.parameter_tier(settings, limits) == "Advanced"
    with pytest.raises(ValueError, match="shorter apiKey"):
        replica_tenants.check_value_fits("x" * (replica_tenants.STANDARD_TIER_MAX_CHARS + 1), "Standard")


def test_the_replicas_run_the_argv_and_nginx_site_the_single_host_would_in_tenant_mode(program):
    """Tenant mode's vLLM flags (--enable-force-include-usage, serving.vllm_args) and nginx site
    (its tenants directory, serving.nginx_conf) come from the single host's rendering: the fleet
    adds only --shutdown-timeout to the argv, and nothing twice."""
    run = tenant_fleet(program)
    files = baked_files(run)
    command = run.named("vllm").outputs["vllmCommand"]
    argv = json.loads(files["vllm-args.json"])
    assert argv[: len(command)] == command and argv[len(command):] in ([], ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)])
    assert all(argv.count(flag) == 1 for flag in argv if flag.startswith("--"))
