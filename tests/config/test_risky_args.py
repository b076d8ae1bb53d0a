"""Risky vllmExtraArgs (issue 27): refused with the reason and a fix through parse and through
the program before any resource; warned about at preview. Public report replayed:
`--trust-remote-code` on a model served from its main branch."""

from __future__ import annotations

import pytest

from config.validation import ConfigError, parse
from serving.risky_flags import multimodal_architectures, risky_flag_warnings
from tests.harness import run_program, stack_config

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
COMMIT = "989aa7980e4cf806f80c7fef2b1adb7bc71aa306"


@pytest.fixture(autouse=True)
def _address(monkeypatch):
    monkeypatch.setenv("VLLM_DEPLOY_PUBLIC_IP", "192.0.2.44")


def _parse(extra: list[str], **more):
    return parse({"model": MODEL, "vllmExtraArgs": extra, **more})


@pytest.mark.parametrize(("extra", "revision"), [
    (["--trust-remote-code"], None),  # the public report: the main branch's code at each deploy
    (["--trust_remote_code"], "main"),  # vLLM reads _ as -; a branch moves
    (["--no-trust-remote-code", "--trust-remote-code"], "v1.0"),  # the last one wins; a tag moves
])
def test_trust_remote_code_without_a_commit_is_refused(extra, revision):
    with pytest.raises(ConfigError) as caught:
        _parse(extra, **({"modelRevision": revision} if revision else {}))
    (problem,) = caught.value.problems
    assert problem.startswith("vllm-deploy:vllmExtraArgs has --trust-remote-code and modelRevision")
    assert (repr(revision) if revision else "unset") in problem
    assert "pulumi config set modelRevision <40-hex commit id>" in problem


def test_the_fix_it_names_is_accepted():
    assert _parse(["--trust-remote-code"], modelRevision=COMMIT).model_revision == COMMIT
    assert _parse(["--trust-remote-code", "--no-trust-remote-code"]).vllm_extra_args


def test_the_program_refuses_it_before_any_resource():
    run = run_program({**stack_config("dev"), "vllmExtraArgs": ["--trust-remote-code"]}, preview=True,
                      expect_error=True)
    assert run.resources == []
    assert "--trust-remote-code" in str(run.error) and "modelRevision" in str(run.error)


@pytest.mark.parametrize("extra", [["--allowed-local-media-path", "/"], ["--allowed_local_media_path=//"]])
def test_the_whole_filesystem_as_media_is_refused(extra):
    with pytest.raises(ConfigError, match="remove --allowed-local-media-path"):
        _parse(extra)


def test_prompts_in_the_log_and_local_media_are_warned_about():
    warnings = risky_flag_warnings(["--enable-log-requests", "--allowed-local-media-path", "/srv/m"],
                                   "Qwen2ForCausalLM")
    assert len(warnings) == 2
    assert "--enable-log-requests" in warnings[0] and "prompt" in warnings[0]
    assert "/srv/m" in warnings[1]
    assert risky_flag_warnings(["--enable-log-requests", "--disable-log-requests"], "Qwen2ForCausalLM") == []


def test_a_multimodal_model_without_a_media_allowlist_is_warned_about():
    assert "Gemma3ForConditionalGeneration" in multimodal_architectures()
    (warning,) = risky_flag_warnings([], "Gemma3ForConditionalGeneration")
    assert "--allowed-media-domains" in warning
    assert risky_flag_warnings(["--allowed-media-domains", "example.com"], "Gemma3ForConditionalGeneration") == []
    assert risky_flag_warnings([], "Qwen2ForCausalLM") == []


def test_the_program_warns_at_preview_and_goes_on():
    run = run_program({**stack_config("dev"), "model": "google/gemma-3-4b-it",
                       "vllmExtraArgs": ["--enable-log-requests"]}, preview=True)
    warned = [line for line in run.logs if "--allowed-media-domains" in line or "--enable-log-requests" in line]
    assert len(warned) == 2, run.logs
    assert run.resources


def test_trust_remote_code_needs_the_drafts_revision_pinned_too():
    """vLLM 0.33 loads a speculative draft with the target's trust_remote_code
    (vllm/config/speculative.py): an unpinned draft repository would run code on the host."""
    pinned = "0123456789abcdef0123456789abcdef01234567"
    values = {"model": "Qwen/Qwen2.5-7B-Instruct", "modelRevision": pinned, "vllmExtraArgs": ["--trust-remote-code"],
              "speculativeModel": {"model": "Qwen/Qwen2.5-0.5B-Instruct", "numSpeculativeTokens": 3}}
    with pytest.raises(ConfigError) as err:
        parse(values)
    assert "vllm-deploy:speculativeModel Qwen/Qwen2.5-0.5B-Instruct has no revision" in str(err.value)
    fixed = {**values, "speculativeModel": {**values["speculativeModel"], "revision": pinned}}
    assert parse(fixed).speculative_model.revision == pinned
