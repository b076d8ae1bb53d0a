"""apiKeys as the validator reads it: a tenant's key is never echoed, whatever shape the mistake
has, and every fix that touches a key says --secret."""

import pytest

from config.validation import ConfigError, parse

BASE = {"model": "Qwen/Qwen2.5-0.5B-Instruct"}
KEY = "given-team-c-key-0123456789abcdef0123456789"


@pytest.mark.parametrize("api_keys", [
    {"team-c": KEY},                                   # apiKeys.team-c = <key>: one level too high
    KEY,                                               # apiKeys = <key>
    [KEY],
    {"team-c": {"key": "short-" + KEY[:10]}},          # a key of the wrong form
    {"team-c": {"rateLimitPerMinute": KEY}},           # a key pasted into the wrong field
    {"team-c": {"key": KEY, "previous_key": KEY + "x"}},
    {"a": {"key": KEY}, "b": {"key": KEY}},            # the same key twice
    {"team-c": {"key": KEY, "rotation": 1}},
])
def test_no_error_shows_a_key(api_keys):
    with pytest.raises(ConfigError) as caught:
        parse({**BASE, "apiKeys": api_keys})
    text = str(caught.value)
    assert KEY[:20] not in text and KEY[-20:] not in text, text
    assert "vllm-deploy:apiKeys" in text


def test_a_key_given_where_a_tenant_belongs_gets_the_secret_fix():
    with pytest.raises(ConfigError) as caught:
        parse({**BASE, "apiKeys": {"team-c": KEY}})
    assert "pulumi config set --secret --path 'apiKeys.team-c.key'" in str(caught.value)


def test_a_bad_given_key_gets_a_secret_fix_and_the_key_name():
    with pytest.raises(ConfigError) as caught:
        parse({**BASE, "apiKeys": {"team-c": {"key": "short"}}})
    assert "vllm-deploy:apiKeys.team-c.key:" in str(caught.value)
    assert "pulumi config set --secret --path 'apiKeys.team-c.key'" in str(caught.value)


def test_snake_case_inside_a_tenant_is_refused_with_the_camel_case_name():
    """previous_key validated, and was then never read as the secret it is (silently no window)."""
    with pytest.raises(ConfigError, match="write previousKey, not previous_key"):
        parse({**BASE, "apiKeys": {"t": {"key": KEY, "previous_key": KEY + "x"}}})


def test_limits_are_shown_and_the_config_keeps_no_key():
    with pytest.raises(ConfigError, match=r"apiKeys.t.rateLimitPerMinute=0"):
        parse({**BASE, "apiKeys": {"t": {"rateLimitPerMinute": 0}}})
    settings = parse({**BASE, "apiKeys": {"t": {"key": KEY, "previousKey": KEY + "x", "rateLimitPerMinute": 60}}})
    assert KEY not in repr(settings) and settings.api_keys["t"].key_given
