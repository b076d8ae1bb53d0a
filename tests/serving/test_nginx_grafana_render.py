"""The /grafana/ block of the rendered nginx.conf, read from the text (its own file, beside
test_nginx_render.py, so the two nginx changes in flight merge without conflicts)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from config.validation import parse
from serving.nginx import NginxSite
from serving.nginx_conf import render, site_for_stack
from serving.proxy_limits import derive_limits, stack_limits
from sizing.choice import plan as size

MODEL = "Qwen/Qwen2.5-7B-Instruct"
LIMITS = derive_limits(vcpus=4, memory_gib=16, default_per_client=256)


def _site(**fields) -> NginxSite:
    return NginxSite(**{"upstream_port": 8000, "limits": LIMITS, **fields})


def _stack_site(**keys) -> NginxSite:
    config = parse({"model": MODEL, **keys})
    return site_for_stack(config, stack_limits(config, size(config)), vllm_port=8000)


def _location(conf: str, head: str) -> str:
    match = re.search(r"location " + re.escape(head) + r" \{(.*?)\n\s*\}", conf, re.S)
    assert match, f"no `location {head}` block"
    return match.group(1)


def _directives(conf: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]*);", conf, re.M)


def test_no_grafana_location_without_a_grafana_port():
    conf = render(_site())
    assert "grafana" not in conf.lower()


def test_grafana_location_proxies_to_loopback_only_for_its_allow_list():
    conf = render(_site(grafana_upstream_port=3000,
                            grafana_allowed_cidrs=["203.0.113.0/24", "2001:db8::/32"]))
    upstream = re.search(r"upstream grafana \{(.*?)\}", conf, re.S).group(1)
    assert _directives(upstream, "server") == ["127.0.0.1:3000"]
    grafana = _location(conf, "^~ /grafana/")
    assert _directives(grafana, "allow") == ["203.0.113.0/24", "2001:db8::/32"]
    assert grafana.index("deny all") > grafana.rindex("allow")
    assert _directives(grafana, "proxy_pass") == ["http://grafana"], "no URI part: the prefix stays"
    headers = dict(d.split(None, 1) for d in _directives(grafana, "proxy_set_header"))
    assert headers["Upgrade"] == "$http_upgrade" and headers["Connection"] == "$grafana_connection"
    assert headers["X-Forwarded-For"] == "$remote_addr", "overwrite, never append"
    assert "map $http_upgrade $grafana_connection" in conf
    assert "limit_req" not in grafana
    assert _directives(_location(conf, "= /grafana"), "return") == ["301 /grafana/"]


def test_the_stack_site_has_grafana_only_with_monitoring():
    # By default the operators' networks (sshAllowedCidrs inside allowedCidrs), not allowedCidrs.
    on = _stack_site(allowedCidrs=["203.0.113.0/24"], sshAllowedCidrs=["203.0.113.64/26"])
    assert (on.grafana_upstream_port, on.grafana_allowed_cidrs) == (3000, ["203.0.113.64/26"])
    narrowed = _stack_site(allowedCidrs=["203.0.113.0/24"], grafanaAllowedCidrs=["203.0.113.8/29"])
    assert narrowed.grafana_allowed_cidrs == ["203.0.113.8/29"]
    off = _stack_site(monitoring=False)
    assert off.grafana_upstream_port is None and "grafana" not in render(off)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grafana_upstream_port": 443}, "grafana_upstream_port=443"),
        ({"grafana_upstream_port": 8000}, "grafana_upstream_port=8000"),
        ({"grafana_upstream_port": 3000, "grafana_allowed_cidrs": ["10.0.0.1/8"]}, "grafana_allowed_cidrs entry"),
    ],
)
def test_bad_grafana_values_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValidationError) as caught:
        _site(**fields)
    assert message in str(caught.value)
