"""What the rendered nginx.conf promises, read from the text (no nginx needed).

tests/serving/test_nginx_live.py runs the same file in a real nginx; these pin the promises a
reviewer would look for and that a live run cannot easily show (the production paths, the
absence of a directive).
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from serving.nginx import NGINX_IMAGE, NginxSite, render, site_for_stack
from config.settings import parse


def _render(**fields) -> str:
    return render(NginxSite(upstream_port=8000, **fields))


def _location(conf: str, head: str) -> str:
    """The body of the `location <head> {...}` block (locations here do not nest)."""
    match = re.search(r"location " + re.escape(head) + r" \{(.*?)\n\s*\}", conf, re.S)
    assert match, f"no `location {head}` block in:\n{conf}"
    return match.group(1)


def _directives(conf: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]*);", conf, re.M)


def test_upstream_is_the_vllm_port_on_loopback():
    conf = render(NginxSite(upstream_port=8123))
    upstream = re.search(r"upstream vllm \{(.*?)\}", conf, re.S).group(1)
    assert _directives(upstream, "server") == ["127.0.0.1:8123"]
    assert re.search(r"keepalive \d+;", upstream)
    assert set(_directives(conf, "proxy_pass")) == {"http://vllm"}


def test_streaming_is_never_buffered_and_uses_keepalive_http11():
    conf = _render()
    for directive in ("proxy_buffering off", "proxy_request_buffering off", "proxy_cache off",
                      "proxy_http_version 1.1", 'proxy_set_header Connection ""', "gzip off"):
        assert re.search(rf"^\s*{re.escape(directive)};", conf, re.M), directive
    assert "proxy_buffering on" not in conf and "gzip on" not in conf


def test_long_generations_get_hour_long_timeouts_by_default():
    conf = _render()
    assert _directives(conf, "proxy_read_timeout") == ["3600s"]
    assert _directives(conf, "proxy_send_timeout") == ["3600s"]


def test_no_log_format_can_record_the_api_key():
    conf = _render(rate_limit_per_minute=60, metrics_allowed_cidrs=["10.0.0.0/8"])
    log_format = re.search(r"log_format (.*?);", conf, re.S).group(1)
    directives_only = re.sub(r"#[^\n]*", "", conf)
    assert "authorization" not in directives_only.lower()
    assert "$request " not in log_format and "$request'" not in log_format  # carries ?query
    assert "$args" not in log_format and "$request_body" not in log_format
    names = {d.split()[1] for d in _directives(conf, "access_log")}
    assert names == {"vllm_proxy"}, "every access_log must use the key-free format"


def test_tls_hardening():
    conf = _render()
    assert _directives(conf, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert _directives(conf, "server_tokens") == ["off"]
    assert _directives(conf, "add_header") == ['Strict-Transport-Security "max-age=31536000" always']


def test_metrics_denied_to_everyone_without_cidrs():
    metrics = _location(_render(), "= /metrics")
    assert _directives(metrics, "allow") == []
    assert _directives(metrics, "deny") == ["all"]


def test_metrics_allowed_only_from_the_given_cidrs_then_denied():
    metrics = _location(_render(metrics_allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"]), "= /metrics")
    assert _directives(metrics, "allow") == ["10.0.0.0/8", "2001:db8::/32"]
    assert metrics.index("deny all") > metrics.rindex("allow")  # nginx: first match wins


def test_health_is_proxied_without_any_access_rule():
    health = _location(_render(), "= /health")
    assert "deny" not in health and "auth" not in health and "limit_req" not in health


def test_rate_limit_only_when_configured():
    assert "limit_req" not in _render()
    conf = _render(rate_limit_per_minute=90, rate_limit_burst=5)
    assert _directives(conf, "limit_req_zone") == [
        "$binary_remote_addr zone=per_client:10m rate=90r/m"
    ]
    assert _directives(conf, "limit_req_status") == ["429"]
    assert _directives(_location(conf, "/v1/"), "limit_req") == ["zone=per_client burst=5 nodelay"]
    assert "limit_req" not in _location(conf, "= /health")


def test_acme_challenge_location_only_with_a_webroot():
    assert "acme-challenge" not in _render()
    conf = _render(acme_webroot="/var/www/acme")
    acme = _location(conf, "^~ /.well-known/acme-challenge/")
    assert _directives(acme, "root") == ["/var/www/acme"]


def test_plain_http_redirects_to_https_keeping_a_nonstandard_port():
    assert "return 301 https://$host$request_uri;" in _render()
    assert "return 301 https://$host:8443$request_uri;" in _render(https_port=8443, http_port=8080)


def test_listen_ports_and_body_limit():
    conf = _render(https_port=8443, http_port=8080, client_max_body_size_mb=12)
    assert _directives(conf, "listen") == ["0.0.0.0:8080 default_server", "0.0.0.0:8443 ssl default_server"]
    assert _directives(conf, "client_max_body_size") == ["12m"]


def test_production_defaults_fit_the_official_image():
    conf = _render()
    assert NGINX_IMAGE.startswith("nginx:") and not NGINX_IMAGE.endswith(":latest")
    assert _directives(conf, "user") == ["nginx"]
    assert _directives(conf, "ssl_certificate") == ["/etc/nginx/tls/server.crt"]
    assert _directives(conf, "listen")[1].endswith(":443 ssl default_server")


def test_no_user_directive_for_an_unprivileged_nginx():
    assert _directives(_render(worker_user=None), "user") == []


def test_site_for_stack_carries_the_stack_policy():
    config = parse({
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "domain": "llm.example.com",
        "metricsAllowedCidrs": ["10.1.0.0/16"],
        "rateLimitPerMinute": 120,
        "maxRequestBodyMb": 32,
    })
    site = site_for_stack(config, vllm_port=8000, acme_webroot="/var/www/acme")
    assert (site.upstream_port, site.server_name) == (8000, "llm.example.com")
    assert site.metrics_allowed_cidrs == ["10.1.0.0/16"]
    assert (site.rate_limit_per_minute, site.client_max_body_size_mb) == (120, 32)
    assert site.acme_webroot == "/var/www/acme"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"upstream_port": 0}, "upstream_port"),
        ({"upstream_port": 70000}, "upstream_port"),
        ({"https_port": 8000}, "also a port nginx listens on"),
        ({"https_port": 8443, "http_port": 8443}, "both 8443"),
        ({"upstream_host": "localhost"}, "not an IPv4 address"),
        ({"metrics_allowed_cidrs": ["10.0.0.0/33"]}, "'10.0.0.0/33' is not a CIDR"),
        ({"metrics_allowed_cidrs": ["10.0.0.1/8"]}, "host bits set"),
        ({"client_max_body_size_mb": 0}, "client_max_body_size_mb"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"tls_key_path": "/etc/x.key; include /etc/shadow"}, "tls_key_path="),
        ({"tls_key_path": "relative/server.key"}, "absolute path"),
        ({"server_name": "bad name{"}, "server_name="),
        ({"worker_user": "root;"}, "worker_user="),
        ({"proxy_buffering": "on"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValidationError) as caught:
        NginxSite(**{"upstream_port": 8000, **fields})
    assert message in str(caught.value)
