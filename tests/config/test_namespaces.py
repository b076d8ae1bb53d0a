"""Keys under a namespace nothing reads (issue 27): a mistyped `vllm-deploy:` is refused with the
key meant and the fix, before any resource; a provider's own namespaces pass; others warn.
The public report replayed: `vllm_deploy:maxModelLen` was silently ignored, the default used."""

from __future__ import annotations

import pytest

from config.namespaces import judge, meant_namespace
from config.settings import KEYS
from config.validation import ConfigError, parse
from tests.harness import run_program, stack_config

MODEL = {"model": "Qwen/Qwen2.5-1.5B-Instruct"}


@pytest.mark.parametrize(("key", "meant"), [
    ("vllm_deploy:maxModelLen", "vllm-deploy:maxModelLen"),  # the public report
    ("vllmdeploy:model", "vllm-deploy:model"),
    ("vllm-deploy-:maxModelLen", "vllm-deploy:maxModelLen"),
    ("VLLM-Deploy:instanceType", "vllm-deploy:instanceType"),
    ("vlm-deploy:maxModelLen", "vllm-deploy:maxModelLen"),
    # Two edits, with a key name that is not ours either (ours are refused under any namespace).
    ("vllm-deplyo:servedName", "vllm-deploy:servedModelName"),  # a transposed pair
    ("vlm-deply:servedName", "vllm-deploy:servedModelName"),  # two letters dropped
    ("vllm_deploy:maxmodellen", "vllm-deploy:maxModelLen"),  # the key's case fixed too
    ("AWS:region", "aws:region"),
    ("aws_:region", "aws:region"),
    ("dockr:host", "docker:host"),
])
def test_a_mistyped_namespace_is_refused_with_the_key_meant_and_the_fix(key, meant):
    with pytest.raises(ConfigError) as caught:
        parse({**MODEL, key: "4096"})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{key} is under the namespace")
    assert f"you likely meant {meant}" in problem
    assert f"rename the key to {meant}" in problem and f"pulumi config rm '{key}'" in problem
    assert "4096" not in problem  # a value under any key may be a secret: never echoed


def test_the_fix_it_names_is_accepted():
    """Renaming the key as told makes the same value count."""
    settings = parse({**MODEL, "maxModelLen": 4096})
    assert settings.max_model_len == 4096


@pytest.mark.parametrize("key", ["aws:region", "aws:profile", "pulumi:tags", "docker:host", "command:x",
                                 "tls:x", "random:x"])
def test_the_namespaces_the_program_and_pulumi_read_pass(key):
    assert meant_namespace(key.split(":")[0]) is None
    parse({**MODEL, key: "x"})


def test_an_unrelated_namespace_is_a_warning_not_a_refusal():
    judged = judge(["acme-policies:owner", "vllm-deploy:model", "aws:region"], KEYS)
    assert judged.refused == []
    (warning,) = judged.warnings
    assert "acme-policies:owner" in warning and "pulumi config rm 'acme-policies:owner'" in warning
    parse({**MODEL, "acme-policies:owner": "team-a"})  # not refused


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        parse({**MODEL, "vllm_deploy:maxModelLen": "4096", "gpuMemoryUtilization": 7})
    assert len(caught.value.problems) == 2


def test_the_program_refuses_a_mistyped_namespace_before_any_resource():
    """Through the engine: the key arrives as Pulumi hands it (set_all_config), and nothing is
    created."""
    run = run_program({**stack_config("dev"), "vllm_deploy:maxModelLen": 4096}, preview=True, expect_error=True)
    assert run.error is not None and run.resources == []
    assert "vllm_deploy:maxModelLen" in str(run.error) and "vllm-deploy:maxModelLen" in str(run.error)


def test_the_program_warns_about_an_unrelated_namespace_and_goes_on(monkeypatch):
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", "192.0.2.44")
    run = run_program({**stack_config("dev"), "acme-policies:owner": "team-a"}, preview=True)
    assert any("acme-policies:owner" in line for line in run.logs)
    assert run.resources


def test_a_mistyped_aws_provider_key_is_refused_with_the_one_meant(monkeypatch):
    """`aws:regoin` would be ignored by pulumi-aws, which then takes its Region from the
    environment (possibly another one): refused before anything is created, naming aws:region."""
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", "192.0.2.44")
    run = run_program({**stack_config("dev"), "aws:regoin": "eu-west-1"}, preview=True, expect_error=True)
    assert run.error is not None and not run.resources
    assert "aws:regoin is not a setting of the AWS provider" in str(run.error)
    assert "pulumi config set aws:region <the same value>" in str(run.error)
    assert run_program({**stack_config("dev"), "aws:region": "eu-west-1"}, preview=True).error is None
