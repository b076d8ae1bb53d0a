"""A secret `aws:*` setting stays secret on its way to the explicit AWS provider.

The stack's `aws:*` settings are copied onto the explicit provider (stack.pulumi_config
aws_provider_settings); a copy loses the engine's secret flag unless the program puts it back.
A live web-identity token or a secret key in plain text would then sit in the state's provider
inputs, readable by anyone who can read the state.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import is_secret, plain_text, reveal

SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
TOKEN = "eyJhbGciOiJSUzI1NiJ9.live-web-identity-token.c2lnbmF0dXJl"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTSECRET"


@pytest.mark.parametrize(
    ("key", "arg", "value", "needle"),
    [
        ("aws:assumeRoleWithWebIdentity", "assumeRoleWithWebIdentity",
         json.dumps({"roleArn": "arn:aws:iam::123456789012:role/vllm-deploy-dev", "webIdentityToken": TOKEN}),
         TOKEN),
        ("aws:secretKey", "secretKey", SECRET_KEY, SECRET_KEY),
    ],
)
def test_a_secret_aws_setting_reaches_the_provider_as_a_secret(program, key, arg, value, needle):
    run = program(SMALL, secrets={key: value})
    provider = run.one("pulumi:providers:aws")
    assert needle in json.dumps(reveal(provider.inputs[arg])), "the setting must reach the provider"
    assert is_secret(provider.inputs[arg]) or needle not in plain_text(provider.inputs[arg])
    for res in run.resources:
        assert needle not in plain_text(res.inputs), f"{res.urn} holds {key} in plain text"


def test_a_plain_aws_setting_stays_plain(program):
    """The check keys on the engine's secret flag, not on the setting's name."""
    run = program({**SMALL, "aws:profile": "team-gpu"})
    provider = run.one("pulumi:providers:aws")
    assert provider.inputs["profile"] == "team-gpu" and not is_secret(provider.inputs["profile"])
