"""`tools/plan` on a stack with tenants (`apiKeys`, issue 29) whose given keys are encrypted leaves
(`pulumi config set --secret --path apiKeys.<name>.key`): it plans without the passphrase and
shows each tenant's name, limits and kind of key, never a key or its ciphertext."""

from __future__ import annotations

import json

from tests.conftest import DEPLOYER_IP
from tests.plan.test_plan_tool import clone, plan_cli  # noqa: F401 - the clone fixture, reused

CIPHERTEXT = "v1:Zm9vYmFyYmF6cXV4Y2lwaGVydGV4dA=="
STACK_FILE = f"""\
config:
  aws:region: us-east-1
  vllm-deploy:model: Qwen/Qwen2.5-1.5B-Instruct
  vllm-deploy:maxModelLen: 8192
  vllm-deploy:allowedCidrs:
    - 0.0.0.0/0
  vllm-deploy:sshAllowedCidrs:
    - 198.51.100.0/24
  vllm-deploy:apiKey:
    secure: {CIPHERTEXT}
  vllm-deploy:apiKeys:
    team-a:
      rateLimitPerMinute: 60
    team-b:
      maxConcurrentRequests: 4
      rotation: 2
      keepPreviousKey: true
    team-c:
      key:
        secure: {CIPHERTEXT}
      previousKey:
        secure: {CIPHERTEXT}
"""


def test_the_plan_of_a_stack_with_encrypted_tenant_keys_shows_tenants_and_no_key(clone, tmp_path):  # noqa: F811
    (clone / "Pulumi.tenants.yaml").write_text(STACK_FILE)
    try:
        text = plan_cli(clone, tmp_path, "tenants", public_ip=DEPLOYER_IP)
        as_json = plan_cli(clone, tmp_path, "tenants", "--json", "--nginx", public_ip=DEPLOYER_IP)
    finally:
        (clone / "Pulumi.tenants.yaml").unlink()
    assert text.returncode == 0, text.stderr
    assert as_json.returncode == 0, as_json.stderr
    assert "team-a: 60 requests/min" in text.stdout
    assert "team-b: no rate limit of its own, 4 concurrent requests; generated key, rotation 2; the previous key is accepted too" in text.stdout
    assert "team-c: no rate limit of its own" in text.stdout and "given key (secret)" in text.stdout
    planned = json.loads(as_json.stdout)
    assert [t["name"] for t in planned["tenants"]] == ["team-a", "team-b", "team-c"]
    assert planned["outputs"]["apiKeys"] == "[secret]"
    names = {r["name"] for r in planned["resources"]}
    assert {"vllm-api-keys-tenant-team-a-key", "vllm-api-keys-tenant-team-b-key-r1",
            "vllm-api-keys-tenant-team-b-key-r2", "vllm-proxy-tenants"} <= names
    assert not any("team-c-key" in n for n in names)  # a given key creates no resource
    for printed in (text.stdout, as_json.stdout, text.stderr, as_json.stderr):
        assert CIPHERTEXT not in printed and "unreadable-secret-placeholder" not in printed
