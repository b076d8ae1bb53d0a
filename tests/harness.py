"""Runs the whole Pulumi program (`__main__.py`) in-process against recording mocks.

The engine itself is `plan.engine` (the same one `tools/plan` uses, so the two never diverge):
it records every registered resource (type, name, inputs with secretness kept, parent,
dependencies, resource options), every invoke, and the stack exports, and answers invokes with
what AWS would say (`plan.world.AwsWorld`). This module adds only what the tests need on top:
the values a provider would compute (the unit-testing guide: echo inputs, add computed), and a
run that fails the test when the program fails unexpectedly. Tests then assert invariants and
wiring on the recording, never the mocks' own echo.
"""

from __future__ import annotations

import hashlib
import json
import re

from typing import Any, Optional

from plan import engine
from tests.fakes import bench
from plan.engine import (  # noqa: F401 - re-exported for the tests
    MAIN,
    PROJECT,
    ROOT,
    Export,
    Invoke,
    ProgramRun,
    Registered,
    is_secret,
    plain_text,
    project_defaults,
    reveal,
)
from plan.world import AwsWorld, InvokeFailure  # noqa: F401 - re-exported for the tests


def stack_config(stack: str) -> dict[str, Any]:
    """A stack file's values: `vllm-deploy:` keys without their namespace, other namespaces kept."""
    prefix = f"{PROJECT}:"
    return {k.removeprefix(prefix): v for k, v in engine.stack_config(stack).items()}


# What the tls provider answers as a certificate's validity_end_time (RFC 3339), far from expiry.
MOCK_CERT_NOT_AFTER = "2099-12-07T13:00:00Z"


def mock_host_key(name: str) -> str:
    """A well-formed `ssh-ed25519 <base64>` line, distinct per `name`."""
    import base64
    import hashlib
    import struct

    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + hashlib.sha256(name.encode()).digest()
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def computed_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Only what the provider computes (the unit-testing guide: echo inputs, add computed)."""
    # Each node its own addresses (the cluster's wiring is asserted on them): vllm-host-* is
    # node 0, vllm-node<i>-host-* node i.
    numbered = re.search(r"-node(\d+)-", name)
    node = int(numbered.group(1)) if numbered else 0
    if typ == "aws:ec2/instance:Instance":
        return {"publicIp": "198.51.100.7", "privateIp": f"172.31.5.{9 + node}", "arn": f"arn:aws:ec2:::instance/{name}"}
    if typ == "aws:ec2/eip:Eip":
        return {"publicIp": f"203.0.113.{10 + node}", "allocationId": f"eipalloc-{abs(hash(name)) % 10**8:08d}"}
    if typ == "aws:ec2/placementGroup:PlacementGroup":
        return {"name": f"{name}-4f2a9c1", "arn": f"arn:aws:ec2:::placement-group/{name}-4f2a9c1"}
    if typ == "aws:iam/role:Role":
        return {"arn": f"arn:aws:iam::123456789012:role/{name}", "name": inputs.get("name", name)}
    if typ == "aws:iam/instanceProfile:InstanceProfile":
        return {"arn": f"arn:aws:iam::123456789012:instance-profile/{name}", "name": inputs.get("name", name)}
    if typ == "aws:ec2/keyPair:KeyPair":
        return {"keyName": inputs.get("keyName", name)}
    if typ == "tls:index/privateKey:PrivateKey":
        return {
            "privateKeyOpenssh": "-----BEGIN OPENSSH PRIVATE KEY-----\nMOCKPRIVATEKEY\n-----END OPENSSH PRIVATE KEY-----\n",
            "privateKeyPem": "-----BEGIN PRIVATE KEY-----\nMOCKPRIVATEKEYPEM\n-----END PRIVATE KEY-----\n",
            "publicKeyOpenssh": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOCKPUBLICKEY mock\n",
        }
    if typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
        return {"certPem": f"-----BEGIN CERTIFICATE-----\nMOCK{name}\n-----END CERTIFICATE-----\n",
                "validityEndTime": MOCK_CERT_NOT_AFTER}
    if typ == "tls:index/certRequest:CertRequest":
        return {"certRequestPem": "-----BEGIN CERTIFICATE REQUEST-----\nMOCK\n-----END CERTIFICATE REQUEST-----\n"}
    if typ == "random:index/randomShuffle:RandomShuffle":
        return {"results": list(inputs.get("inputs", []))[: int(inputs.get("resultCount", 1))]}
    if typ == "random:index/randomPassword:RandomPassword" and "-tenant-" in name:
        # A tenant's key generation (components.tenant_keys): one key per resource, as the provider.
        return {"result": "mock-tenant-key-" + hashlib.sha256(name.encode()).hexdigest()[:32]}
    if typ == "random:index/randomPassword:RandomPassword":
        return {"result": "mock-generated-api-key-0123456789abcdef"}
    if typ == "random:index/randomId:RandomId":  # new keepers, new id (as the provider replaces it)
        seed = name + json.dumps(inputs.get("keepers") or {}, sort_keys=True)
        return {"hex": hashlib.sha256(seed.encode()).hexdigest()[: 2 * int(inputs.get("byteLength", 8))]}
    if typ == "command:remote:Command" and name.endswith("-benchmark-run"):
        # What benchmark_vllm.sh prints for the levels it was given.
        levels = tuple(int(c) for c in reveal(inputs["environment"])["VLLM_DEPLOY_BENCH_CONCURRENCY"].split())
        return {"stdout": bench.script_stdout(levels), "stderr": ""}
    if typ == "command:remote:Command":
        return {"stdout": "", "stderr": ""}
    if typ == "command:local:Command" and name.endswith("-host-key"):
        # What components/local/host_key.py prints: this instance's ed25519 host key (one per
        # host, so a test can tell whose key a connection pins).
        return {"stdout": mock_host_key(name) + "\n", "stderr": ""}
    if typ == "aws:ec2/amiFromInstance:AmiFromInstance":
        # What EC2 registers for an image of the builder: its root and model volumes' snapshots.
        return {"rootDeviceName": "/dev/sda1", "ebsBlockDevices": [
            {"deviceName": "/dev/sda1", "snapshotId": "snap-0root000000000000"},
            {"deviceName": "/dev/sdf", "snapshotId": "snap-0models0000000000"},
        ]}
    if typ == "aws:ec2/launchTemplate:LaunchTemplate":
        return {"latestVersion": 1, "arn": f"arn:aws:ec2:::launch-template/{name}"}
    if typ == "aws:lb/loadBalancer:LoadBalancer":
        # 76 characters: longer than X.509's 64-character common name (fleet-pitfalls P25).
        return {"dnsName": "vllm-lb-alb-7f3a2b1-0123456789abcdef.us-east-1.elb.amazonaws.com",
                "zoneId": "Z35SXDOTRQ7X7K", "arn": f"arn:aws:elasticloadbalancing:::loadbalancer/app/{name}",
                "arnSuffix": f"app/{name}/50dc6c495c0c9188"}
    if typ == "aws:acm/certificate:Certificate" and inputs.get("validationMethod") == "DNS":
        domain = inputs["domainName"]
        return {"arn": f"arn:aws:mock:::{name}", "domainValidationOptions": [{
            "domainName": domain, "resourceRecordName": f"_0a1b2c.{domain}.", "resourceRecordType": "CNAME",
            "resourceRecordValue": "_3d4e5f.acm-validations.aws.",
        }]}
    if typ == "aws:acm/certificateValidation:CertificateValidation":
        return {"certificateArn": inputs["certificateArn"]}
    if typ == "aws:route53/record:Record":
        return {"fqdn": str(inputs.get("name", "")).rstrip(".")}
    if typ == "aws:lb/targetGroup:TargetGroup":  # the ARN's tail: its CloudWatch dimension
        return {"arn": f"arn:aws:mock:::{name}", "arnSuffix": f"targetgroup/{name}/73e2d6bc24d8a067"}
    if typ == "aws:cloudwatch/logGroup:LogGroup":  # the provider's arn has no trailing ":*"
        return {"arn": f"arn:aws:logs:us-east-1:123456789012:log-group:{inputs.get('name', name)}"}
    if typ in ("aws:lb/listener:Listener", "aws:acm/certificate:Certificate"):
        return {"arn": f"arn:aws:mock:::{name}"}
    if typ == "aws:ssm/parameter:Parameter":
        return {"arn": f"arn:aws:ssm:us-east-1:123456789012:parameter{inputs.get('name', '')}"}
    if typ == "docker:index/remoteImage:RemoteImage":
        return {"imageId": f"sha256:{'0' * 64}", "repoDigest": f"{inputs.get('name', '')}@sha256:{'1' * 64}"}
    return {}


def run_program(
    config: dict[str, Any],
    *,
    secrets: Optional[dict[str, str]] = None,
    plaintext_secrets: bool = False,
    world: Optional[AwsWorld] = None,
    stack: str = "dev",
    preview: bool = False,
    with_defaults: bool = True,
    expect_error: bool = False,
) -> ProgramRun:
    """Run __main__.py with `config` (project keys without namespace; `aws:*` kept) on top of
    the Pulumi.yaml defaults. `secrets` are passed as encrypted config unless `plaintext_secrets`.
    A program failure fails the test unless `expect_error` (then it is `run.error`)."""
    run = engine.run_program(
        config,
        secrets=secrets,
        plaintext_secrets=plaintext_secrets,
        world=world,
        stack=stack,
        preview=preview,
        with_defaults=with_defaults,
        computed=computed_outputs,
        main=MAIN,  # read at call time: a test may point it at another program
    )
    if run.error is not None and not expect_error:
        raise AssertionError(f"the program failed: {run.error}") from run.error
    return run
