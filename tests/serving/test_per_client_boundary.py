"""maxConcurrentRequestsPerClient on both sides of its boundary: the host's whole stream
capacity is a valid per-client limit (one client may use it all), one more is refused."""

from __future__ import annotations

import pytest

from config.validation import ConfigError, parse
from serving.proxy_limits import derive_limits, stack_limits
from sizing.choice import plan as size

MODEL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}


def test_a_per_client_limit_equal_to_the_hosts_capacity_is_accepted_and_rendered_as_given():
    plan = size(parse(MODEL))
    capacity = stack_limits(parse(MODEL), plan).max_streams
    at_capacity = stack_limits(parse({**MODEL, "maxConcurrentRequestsPerClient": capacity}), plan)
    assert at_capacity.max_streams_per_client == capacity == at_capacity.max_streams
    with pytest.raises(ConfigError, match=rf"maxConcurrentRequestsPerClient={capacity + 1} can never"):
        stack_limits(parse({**MODEL, "maxConcurrentRequestsPerClient": capacity + 1}), plan)


@pytest.mark.parametrize("memory_gib", [1, 16, 64])
def test_derive_limits_accepts_the_capacity_and_refuses_one_more(memory_gib):
    capacity = derive_limits(vcpus=4, memory_gib=memory_gib, default_per_client=1).max_streams
    limits = derive_limits(vcpus=4, memory_gib=memory_gib, default_per_client=1, per_client=capacity)
    assert limits.max_streams_per_client == capacity
    assert derive_limits(vcpus=4, memory_gib=memory_gib, default_per_client=1, per_client=1).max_streams_per_client == 1
    with pytest.raises(ValueError, match=f"{capacity + 1} concurrent requests per client"):
        derive_limits(vcpus=4, memory_gib=memory_gib, default_per_client=1, per_client=capacity + 1)
