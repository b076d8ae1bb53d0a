"""Tenants (`apiKeys`, issue 29) in the whole program under recording mocks: the secret output, keys
in no plain input or log, the proxy's tenants step and mounts, rotation, given keys, and a stack
without apiKeys that registers nothing new."""

from __future__ import annotations

import base64
import io
import json
import tarfile

import pytest

from plan.summary import shown
from serving.tenants import TENANT_DIR_CONTAINER, TENANT_DIR_HOST, USAGE_LOG_CONTAINER, USAGE_LOG_HOST_DIR, key_hash
from tests.harness import computed_outputs, is_secret, plain_text, reveal

SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
API_KEY = "sk-stack-own-key-5e4d3c2b1a09f8e7"
GIVEN = "given-team-c-key-0123456789abcdefABCDEF"  # 39 characters: a valid given key
PREVIOUS = "given-team-c-old-0123456789abcdefABCDEF"
PASSWORD = "random:index/randomPassword:RandomPassword"
TENANTS = {"team-a": {"rateLimitPerMinute": 60}, "team-b": {"maxConcurrentRequests": 4}}
STEP = "vllm-proxy-tenants"


def tenant_program(program, tenants, *, given: bool = False, **kwargs):
    """`apiKeys` as the engine passes it: with a given key (a secure leaf), the whole value is secret."""
    if given:
        return program(SMALL, secrets={"apiKey": API_KEY, "apiKeys": json.dumps(tenants)}, **kwargs)
    return program({**SMALL, "apiKeys": tenants}, secrets={"apiKey": API_KEY}, **kwargs)


def bundle_files(run) -> dict[str, str]:
    """What proxy_tenants.sh installs: the tar in the step's secret environment."""
    env = run.named(STEP).inputs["environment"]
    assert is_secret(env) or is_secret(env["VLLM_DEPLOY_TENANT_FILES"])
    data = base64.b64decode(reveal(env)["VLLM_DEPLOY_TENANT_FILES"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


def comparable(res) -> str:
    """A resource's inputs, secrets revealed, assets by path (FileAsset compares by identity)."""
    return json.dumps(shown(reveal(res.inputs)), sort_keys=True, default=str)


def generations(run) -> set[str]:
    return {r.name for r in run.of_type(PASSWORD) if "-tenant-" in r.name}


def test_api_keys_is_a_secret_output_with_one_distinct_key_per_tenant(program):
    run = tenant_program(program, TENANTS)
    out = run.exports["apiKeys"]
    assert out.secret and out.known
    keys = out.value
    assert set(keys) == set(TENANTS)
    assert len(set(keys.values())) == len(TENANTS) and API_KEY not in keys.values()
    assert run.exports["apiKey"].secret and reveal(run.exports["apiKey"].value) == API_KEY  # kept, for nginx
    # Every tenant's key is accepted by its hash, and by nothing else
    files = "".join(bundle_files(run).values())
    for key in keys.values():
        assert key_hash(key) in files and key not in files


def test_no_key_in_any_plain_input_output_or_log(program):
    tenants = {**TENANTS, "team-c": {"key": GIVEN, "previousKey": PREVIOUS}}
    run = tenant_program(program, tenants, given=True)
    keys = [*run.exports["apiKeys"].value.values(), PREVIOUS, API_KEY]
    assert GIVEN in keys
    for res in run.resources:
        text = plain_text(res.inputs) + " " + plain_text(res.outputs or {})
        for key in keys:
            assert key not in text, f"a key in the plain inputs or outputs of {res.urn}"
    logged = "\n".join(run.logs)
    assert not any(key in logged for key in keys)
    # The proxy's step logs nothing and keeps its output secret (its environment holds the keys).
    step = run.named(STEP)
    assert step.inputs.get("logging") == "none" and {"stdout", "stderr"} <= set(step.additional_secret_outputs)
    assert not any(key in step.plain.get("create", "") for key in keys)


def test_a_given_key_and_its_predecessor_are_accepted_and_nothing_is_generated_for_it(program):
    run = tenant_program(program, {"team-c": {"key": GIVEN, "previousKey": PREVIOUS}}, given=True)
    assert run.exports["apiKeys"].value == {"team-c": GIVEN}
    assert generations(run) == set()
    files = "".join(bundle_files(run).values())
    assert key_hash(GIVEN) in files and key_hash(PREVIOUS) in files


def test_a_given_key_in_plain_text_is_refused_with_the_command_that_encrypts_it(program):
    run = program(
        SMALL, secrets={"apiKeys": json.dumps({"team-c": {"key": GIVEN}})}, plaintext_secrets=True,
        expect_error=True,
    )
    message = str(run.error)
    assert "vllm-deploy:apiKeys.team-c.key is stored in plain text" in message
    assert "pulumi config set --secret --path 'apiKeys.team-c.key'" in message
    assert GIVEN not in message
    assert run.cloud_resources == []


def test_the_proxy_mounts_the_tenants_files_and_installs_them_before_it_starts(program):
    run = tenant_program(program, TENANTS)
    container, step = run.named("vllm-proxy-container"), run.named(STEP)
    mounts = {(v["hostPath"], v["containerPath"], bool(v.get("readOnly"))) for v in container.plain["volumes"]}
    assert (TENANT_DIR_HOST, TENANT_DIR_CONTAINER, True) in mounts
    assert (USAGE_LOG_HOST_DIR, USAGE_LOG_CONTAINER.rsplit("/", 1)[0], False) in mounts
    assert container.depends_on(step)
    env = reveal(step.inputs["environment"])
    assert env["VLLM_DEPLOY_TENANT_DIR"] == TENANT_DIR_HOST and env["VLLM_DEPLOY_NGINX_CONTAINER"] == "vllm-proxy"
    assert "proxy_tenants.sh" in step.plain["create"]
    # nginx sends vLLM the stack's own key upstream; vLLM keeps checking it
    assert API_KEY in "".join(bundle_files(run).values())
    argv = run.named("vllm-vllm-container").plain["command"]
    assert "--enable-force-include-usage" in argv


def test_changing_tenants_reruns_only_the_tenants_step(program):
    """Adding a tenant and changing limits: every resource both runs have keeps its inputs except
    the tenants step's secret environment (an update: its triggers, hence its replacement, do not
    change), so neither the proxy container nor vLLM is replaced."""
    before = tenant_program(program, TENANTS)
    after = tenant_program(program, {**TENANTS, "team-a": {"rateLimitPerMinute": 120}, "team-d": {}})
    old = {r.urn: r for r in before.resources}
    changed = [r.name for r in after.resources if r.urn in old and comparable(r) != comparable(old[r.urn])]
    assert changed == [STEP]
    step, old_step = after.named(STEP), before.named(STEP)
    assert reveal(step.inputs["triggers"]) == reveal(old_step.inputs["triggers"])
    assert bundle_files(after) != bundle_files(before)
    assert set(generations(after)) - set(generations(before)) == {"vllm-api-keys-tenant-team-d-key"}


def test_a_stack_with_only_api_key_registers_nothing_of_tenants(program):
    run = program(SMALL, secrets={"apiKey": API_KEY})
    assert "apiKeys" not in run.exports
    assert not [r.name for r in run.resources if "tenant" in r.name.lower() or "TenantApiKeys" in r.type]
    container = run.named("vllm-proxy-container")
    assert {v["hostPath"] for v in container.plain["volumes"]} == {"/var/lib/vllm-deploy/acme-webroot"}
    assert "--enable-force-include-usage" not in run.named("vllm-vllm-container").plain["command"]


KEY = "vllm-api-keys-tenant-team-a-key"


@pytest.mark.parametrize(
    ("tenant", "live", "newest"),
    [
        ({}, {KEY}, KEY),
        ({"rotation": 1}, {f"{KEY}-r1"}, f"{KEY}-r1"),
        ({"rotation": 1, "keepPreviousKey": True}, {KEY, f"{KEY}-r1"}, f"{KEY}-r1"),
        ({"rotation": 3, "keepPreviousKey": True}, {f"{KEY}-r2", f"{KEY}-r3"}, f"{KEY}-r3"),
        ({"rotation": 3}, {f"{KEY}-r3"}, f"{KEY}-r3"),
    ],
)
def test_rotation_keeps_only_the_live_generations(program, tenant, live, newest):
    """Raising rotation creates the new generation and drops the old one (the engine deletes what
    the program no longer registers) unless keepPreviousKey keeps it; the output is the newest key,
    and nginx accepts every live one."""
    run = tenant_program(program, {"team-a": tenant})
    assert generations(run) == live
    files = "".join(bundle_files(run).values())
    passwords = {r.name: r for r in run.of_type(PASSWORD)}
    answered = {n: computed_outputs(PASSWORD, n, {})["result"] for n in live}  # what the provider made
    assert run.exports["apiKeys"].value == {"team-a": answered[newest]}
    assert all(key_hash(k) in files for k in answered.values())
    assert all(passwords[n].plain["length"] >= 32 and passwords[n].plain["special"] is False for n in live)


def test_with_letsencrypt_the_proxys_steps_share_one_host_directory(program):
    """The certificate step and the tenants step run from one step factory: one workdir, one copy
    of lib.sh, no two resources with one URN (which the mocks would not catch)."""
    letsencrypt = {"tls": "letsencrypt", "domain": "llm.example.com", "letsencryptEmail": "ops@example.com"}
    run = program({**SMALL, **letsencrypt, "apiKeys": TENANTS}, secrets={"apiKey": API_KEY})
    urns = [r.urn for r in run.resources]
    assert len(urns) == len(set(urns))
    container = run.named("vllm-proxy-container")
    assert container.depends_on(run.named(STEP)) and container.depends_on(run.named("vllm-proxy-certificate"))
    assert [r.name for r in run.resources if r.name.endswith("-workdir") and r.name.startswith("vllm-proxy")] == [
        "vllm-proxy-workdir"
    ]


@pytest.mark.parametrize("name_length", [9, 64])
def test_no_tenants_step_carries_more_than_one_environment_string_can(program, name_length):
    """The bundle travels as one environment variable of the SSH step: Linux refuses an execve
    with a single environment string over MAX_ARG_STRLEN (32 pages: 131072 bytes on 4 KiB pages,
    include/uapi/linux/binfmts.h), which `sudo` and `bash` are. With the most tenants
    (MAX_TENANTS), each with two live keys, the program either registers a step whose bundle fits,
    or refuses at preview, naming the limit and the way out, before any cloud resource."""
    from config.keys_tenants import MAX_TENANTS

    tenants = {f"t{i:02d}-".ljust(name_length, "x"): {"rotation": 1, "keepPreviousKey": True, "rateLimitPerMinute": 60}
               for i in range(MAX_TENANTS)}
    run = tenant_program(program, tenants, expect_error=True)
    if run.error is not None:
        message = str(run.error)
        assert "MAX_ARG_STRLEN" in message and "shorter tenant names" in message, message
        assert run.cloud_resources == []
        return
    bundle = reveal(run.named(STEP).inputs["environment"])["VLLM_DEPLOY_TENANT_FILES"]
    assert len(f"VLLM_DEPLOY_TENANT_FILES={bundle}") + 1 <= 131072
    assert len(run.exports["apiKeys"].value) == MAX_TENANTS


def test_a_tenant_limit_above_the_proxys_capacity_is_refused_before_anything_exists(program):
    run = tenant_program(program, {"team-a": {"maxConcurrentRequests": 65535}}, expect_error=True)
    assert "apiKeys.team-a.maxConcurrentRequests=65535 is above the" in str(run.error)
    assert run.cloud_resources == []
