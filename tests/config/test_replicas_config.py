"""The `replicas` and `drainSeconds` keys: defaults, and each refusal naming the keys and a fix."""

import pytest

from config.validation import ConfigError, parse

MODEL = "Qwen/Qwen2.5-7B-Instruct"


def problems(**values) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse({"model": MODEL, **values})
    return caught.value.problems


def test_one_replica_and_the_aws_drain_default_unless_asked():
    cfg = parse({"model": MODEL})
    assert cfg.replicas == 1 and cfg.drain_seconds == 300
    assert parse({"model": MODEL, "replicas": "3"}).replicas == 3  # the CLI stores "3"


@pytest.mark.parametrize("bad", [0, -2, 33, True, "two", 1.5])
def test_replicas_outside_one_to_32_is_refused_with_the_value_and_a_fix(bad):
    (message,) = problems(replicas=bad)
    fix = "write the number itself" if bad is True else "pulumi config set replicas 1"
    assert f"vllm-deploy:replicas={bad!r}" in message and fix in message


@pytest.mark.parametrize(
    "combination, keys",
    [
        ({"nodes": 2}, ("nodes=2", "not supported yet", "set nodes to 1")),
        ({"nodes": "auto"}, ("nodes=auto", "set nodes to 1")),
        ({"idleStopMinutes": 30}, ("idleStopMinutes=30", "unset idleStopMinutes")),
        ({"tls": "letsencrypt", "domain": "llm.example.com"}, ("tls=letsencrypt", "set tls to self-signed")),
        ({"subnetId": "subnet-0123456789abcdef0"}, ("subnetId=", "remove subnetId")),
    ],
)
def test_a_fleet_refuses_what_it_cannot_run_naming_both_keys(combination, keys):
    (message,) = problems(replicas=3, **combination)
    assert "vllm-deploy:replicas=3" in message and "replicas to 1" in message
    for part in keys:
        assert part in message, (part, message)
    # The same keys on one host are fine (the rules are about fleets).
    single = {k: v for k, v in combination.items() if k != "nodes"}
    parse({"model": MODEL, **single})


@pytest.mark.parametrize("bad", [-1, 3601, "-5", "ten"])
def test_drain_seconds_is_bounded_by_the_target_groups_limit(bad):
    (message,) = problems(drainSeconds=bad)
    # The key, the value, the range and a fix that works, in our words (not pydantic's).
    assert f"vllm-deploy:drainSeconds={bad!r}" in message
    assert "from 0 to 3600" in message and "pulumi config set drainSeconds 300" in message
    assert "Input should be" not in message and "greater than" not in message
    assert parse({"model": MODEL, "drainSeconds": "300"}).drain_seconds == 300  # the fix is accepted


def test_every_broken_cross_key_rule_is_reported_in_one_error():
    found = problems(replicas=3, nodes=2, idleStopMinutes=30, tls="letsencrypt")
    # Four rules broken, four lines, each naming its own keys and fix.
    assert len(found) == 4, found
    expected = [
        ("tls=letsencrypt needs `domain`", "set domain"),
        ("replicas=3 with nodes=2", "set nodes to 1"),
        ("replicas=3 with idleStopMinutes=30", "unset idleStopMinutes"),
        ("replicas=3 with tls=letsencrypt", "set tls to self-signed"),
    ]
    for (keys, fix), line in zip(expected, found):
        assert keys in line and fix in line, (keys, line)
