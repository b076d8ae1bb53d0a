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


@pytest.mark.parametrize("bad", [-1, 3601])
def test_drain_seconds_is_bounded_by_the_target_groups_limit(bad):
    (message,) = problems(drainSeconds=bad)
    assert f"vllm-deploy:drainSeconds={bad!r}" in message
