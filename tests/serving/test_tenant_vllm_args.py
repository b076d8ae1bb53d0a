"""vLLM's argv in tenant mode (`apiKeys`, issue 29): the proxy counts tokens from the `usage` vLLM
sends, so streams must carry it (--enable-force-include-usage), and only in tenant mode."""

from __future__ import annotations

from serving.flag_reader import check_flags
from serving.vllm_args import serve_args
from tests.serving.test_vllm_args import MODEL_PATH, make_config, make_plan

FLAG = "--enable-force-include-usage"
TENANTS = {"team-a": {"rateLimitPerMinute": 60}}


def test_tenant_mode_forces_usage_on_streams_and_vllm_accepts_the_argv():
    argv = serve_args(make_config(apiKeys=TENANTS), make_plan(), model_path=MODEL_PATH)
    assert argv.count(FLAG) == 1
    check_flags(argv[1:], source="tenant mode")  # the pinned vLLM's flag table takes it


def test_without_tenants_the_argv_is_as_before():
    assert FLAG not in serve_args(make_config(), make_plan(), model_path=MODEL_PATH)


def test_a_users_own_choice_in_vllm_extra_args_is_kept_once():
    for given in (FLAG, "--disable-force-include-usage"):
        argv = serve_args(make_config(apiKeys=TENANTS, vllmExtraArgs=[given]), make_plan(), model_path=MODEL_PATH)
        assert argv.count(given) == 1 and (given == FLAG or FLAG not in argv)
