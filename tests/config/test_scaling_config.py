"""Issue 26's keys: maxReplicas, scaleOnWaitingRequests, warmReplicas, onDemandReplicas; each
refusal names every key involved, the bad value and a fix that parses."""

import pytest

from config.validation import ConfigError, parse

MODEL = "Qwen/Qwen2.5-7B-Instruct"


def problems(**values) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse({"model": MODEL, **values})
    return caught.value.problems


def test_defaults_keep_a_fixed_on_demand_fleet():
    cfg = parse({"model": MODEL, "replicas": 3})
    assert (cfg.max_replicas, cfg.warm_replicas, cfg.on_demand_replicas, cfg.spot) == (None, 0, 1, False)
    assert cfg.scale_on_waiting_requests > 0  # a target of 0 waiting can never be tracked (P19)


@pytest.mark.parametrize(
    "values, parts, fixed",
    [
        ({"replicas": 3, "maxReplicas": 2}, ("maxReplicas=2", "replicas=3", "set maxReplicas to 3 or more"),
         {"maxReplicas": 3}),
        ({"maxReplicas": 4}, ("maxReplicas=4", "replicas=1", "set replicas to 2"), {"replicas": 2}),
        ({"warmReplicas": 1}, ("warmReplicas=1", "replicas=1", "set replicas to 2"), {"replicas": 2}),
        ({"replicas": 2, "maxReplicas": 4, "monitoring": False}, ("maxReplicas=4", "monitoring=false", "set monitoring to true"),
         {"monitoring": True}),
        ({"replicas": 2, "spot": True, "warmReplicas": 1}, ("warmReplicas=1", "spot=true", "set warmReplicas to 0"),
         {"warmReplicas": 0}),
        ({"replicas": 2, "spot": True, "onDemandReplicas": 3}, ("onDemandReplicas=3", "replicas=2", "at most 2"),
         {"onDemandReplicas": 2}),
    ],
)
def test_refusals_name_both_keys_and_the_fix_works(values, parts, fixed):
    (message,) = problems(**values)
    for part in parts:
        assert part in message, (part, message)
    parse({"model": MODEL, **values, **fixed})  # the fix the message gives parses


def test_spot_is_allowed_on_a_fleet_now():
    cfg = parse({"model": MODEL, "replicas": 2, "spot": True, "maxReplicas": "6"})
    assert cfg.spot and cfg.max_replicas == 6


@pytest.mark.parametrize("bad", [0, -1.5])
def test_the_waiting_target_must_be_above_zero(bad):
    (message,) = problems(replicas=2, maxReplicas=4, scaleOnWaitingRequests=bad)
    assert "scaleOnWaitingRequests" in message


@pytest.mark.parametrize("values, said", [
    ({"onDemandReplicas": 2}, "vllm-deploy:onDemandReplicas=2 does nothing without a spot fleet"),
    ({"replicas": 2, "scaleOnWaitingRequests": 3}, "vllm-deploy:scaleOnWaitingRequests=3 does nothing without maxReplicas"),
    ({"replicas": 2, "replaceStoppedHost": True}, "vllm-deploy:replaceStoppedHost=true with vllm-deploy:replicas=2"),
])
def test_a_key_set_where_it_would_do_nothing_is_refused_with_the_fix(values, said):
    with pytest.raises(ConfigError) as err:
        parse({"model": "Qwen/Qwen2.5-7B-Instruct", **values})
    assert said in str(err.value)
    # The same keys where they act are accepted.
    parse({"model": "Qwen/Qwen2.5-7B-Instruct", "replicas": 2, "spot": True, "onDemandReplicas": 2,
           "maxReplicas": 4, "scaleOnWaitingRequests": 3})
    # Their defaults (which Pulumi.yaml declares, so the CLI passes them) are never refused.
    parse({"model": "Qwen/Qwen2.5-7B-Instruct", "onDemandReplicas": 1, "scaleOnWaitingRequests": 2})
