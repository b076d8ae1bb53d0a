"""What the rendered nginx.conf promises, read from the text (no nginx needed).

tests/serving/test_nginx_live*.py run the same file in a real nginx; these pin the promises a
reviewer would look for and that a live run cannot easily show (the production paths, the
absence of a directive, structural rules every future location must follow).
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from pydantic import ValidationError

from config.validation import ConfigError, parse
from serving import proxy_policy
from serving.nginx import NGINX_IMAGE, NGINX_IMAGE_VERSION, NginxSite
from serving.nginx_conf import render, site_for_stack
from serving.proxy_limits import derive_limits, stack_limits
from sizing.choice import plan as size

LIMITS = derive_limits(vcpus=4, memory_gib=16, default_per_client=256)


def _site(**fields) -> NginxSite:
    return NginxSite(**{"upstream_port": 8000, "limits": LIMITS, **fields})


def _render(**fields) -> str:
    return render(_site(**fields))


def _block(conf: str, head: str) -> str:
    """The body of the `<head> {...}` block, nested blocks included."""
    start = conf.index(head + " {") + len(head) + 2
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        i += 1
    return conf[start:i - 1]


def _location(conf: str, head: str) -> str:
    return _block(conf, f"location {head}")


def _directives(conf: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]*);", conf, re.M)


def _servers(conf: str) -> tuple[str, str]:
    """(plain HTTP server, TLS server)."""
    http = _block(conf, "http")
    parts = [m.start() for m in re.finditer(r"^    server \{", http, re.M)]
    plain, tls = (_block(http[p:], "server") for p in parts)
    return plain, tls


def _locations(server: str) -> dict[str, str]:
    heads = re.findall(r"^\s*location ([^{]+?) \{", server, re.M)
    return {head: _location(server, head) for head in heads}


# --- upstream, streaming, timeouts ---------------------------------------------------------
def test_upstream_is_the_vllm_port_on_loopback_capped_and_never_marked_down():
    conf = render(_site(upstream_port=8123))
    upstream = _block(conf, "upstream vllm")
    assert _directives(upstream, "server") == [f"127.0.0.1:8123 max_conns={LIMITS.max_streams} max_fails=0"]
    assert _directives(upstream, "zone"), "max_conns counts across workers only in a shared zone"
    assert set(_directives(conf, "proxy_pass")) == {"http://vllm"}


def test_idle_upstream_connections_close_before_uvicorns_keep_alive_does():
    """vLLM 0.33: uvicorn timeout_keep_alive = VLLM_HTTP_TIMEOUT_KEEP_ALIVE = 5 s (vllm/envs.py)."""
    upstream = _block(_render(), "upstream vllm")
    (timeout,) = _directives(upstream, "keepalive_timeout")
    assert int(timeout.rstrip("s")) < 5
    with pytest.raises(ValidationError, match="upstream_keepalive_timeout_s"):
        _site(upstream_keepalive_timeout_s=5)


def test_streaming_is_never_buffered_and_uses_keepalive_http11():
    conf = _render()
    for directive in ("proxy_buffering off", "proxy_request_buffering off", "proxy_cache off",
                      "proxy_http_version 1.1", 'proxy_set_header Connection ""', "gzip off"):
        assert re.search(rf"^\s*{re.escape(directive)};", conf, re.M), directive
    assert "proxy_buffering on" not in conf and "gzip on" not in conf


def test_long_generations_get_hour_long_upstream_timeouts_but_stalled_clients_a_minute_at_most():
    conf = _render()
    assert _directives(conf, "proxy_read_timeout") == ["3600s"]
    (send,) = _directives(conf, "send_timeout")
    assert int(send.rstrip("s")) <= 60
    assert _directives(conf, "reset_timedout_connection") == ["on"]
    # A fixed send buffer bounds how long a stalled client's data can hide in the kernel.
    assert re.search(r"listen \S+:443 ssl .*sndbuf=64k;", conf)
    with pytest.raises(ValidationError, match="client_send_timeout_s"):
        _site(client_send_timeout_s=120)


# --- limits from the instance --------------------------------------------------------------
def test_worker_limits_are_the_derived_ones_and_hold_two_connections_per_stream():
    conf = _render()
    assert _directives(conf, "worker_processes") == [str(LIMITS.worker_processes)]
    assert _directives(conf, "worker_rlimit_nofile") == [str(LIMITS.worker_rlimit_nofile)]
    (connections,) = _directives(_block(conf, "events"), "worker_connections")
    assert int(connections) == LIMITS.worker_connections >= 2 * LIMITS.max_streams
    assert LIMITS.worker_rlimit_nofile > LIMITS.worker_connections


def test_per_client_concurrency_is_limited_on_the_api_only():
    conf = _render()
    v1 = _location(conf, "/v1/")
    assert _directives(v1, "limit_conn") == [f"per_client_streams {LIMITS.max_streams_per_client}"]
    assert _directives(conf, "limit_conn_zone") == ["$binary_remote_addr zone=per_client_streams:10m"]
    assert _directives(conf, "limit_conn_status") == ["429"]
    assert "limit_conn" not in _location(conf, "= /health")


def test_rate_limit_only_when_configured():
    unlimited = _render()
    assert _directives(unlimited, "limit_req_zone") == [] and _directives(unlimited, "limit_req") == []
    conf = _render(rate_limit_per_minute=90, rate_limit_burst=5)
    assert _directives(conf, "limit_req_zone") == ["$binary_remote_addr zone=per_client:10m rate=90r/m"]
    assert _directives(conf, "limit_req_status") == ["429"]
    assert _directives(_location(conf, "/v1/"), "limit_req") == ["zone=per_client burst=5 nodelay"]
    assert "limit_req" not in _location(conf, "= /health")


def test_limits_come_from_the_planned_instance_and_impossible_settings_are_refused():
    config = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192})
    plan = size(config)
    limits = stack_limits(config, plan)
    assert limits.worker_processes == min(plan.instance.vcpus, 8)
    assert limits.max_streams_per_client == 256, "vLLM's max_num_seqs on a <70 GiB GPU"
    too_many = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192,
                      "maxConcurrentRequestsPerClient": limits.max_streams + 1})
    with pytest.raises(ConfigError) as caught:
        stack_limits(too_many, plan)
    assert "vllm-deploy:maxConcurrentRequestsPerClient" in str(caught.value)
    assert str(limits.max_streams) in str(caught.value)


def test_a_body_limit_below_a_full_length_prompt_is_refused():
    config = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 32768, "maxRequestBodyMb": 1})
    plan = size(config)
    assert stack_limits(config, plan)  # 32768 tokens x 4 characters = 128 KiB: fits in 1 MiB
    long = dataclasses.replace(plan, max_model_len=1_048_576)
    with pytest.raises(ConfigError) as caught:
        stack_limits(config, long)
    assert "vllm-deploy:maxRequestBodyMb=1" in str(caught.value) and "at least 4" in str(caught.value)


# --- HTTP/2 ---------------------------------------------------------------------------------
def test_http2_on_the_tls_listener_in_the_syntax_of_the_nginx_that_runs_it():
    production = _render()
    assert NGINX_IMAGE_VERSION >= (1, 25, 1)
    assert _directives(production, "http2") == ["on"], "1.25.1+ deprecates `listen ... http2`"
    old = _render(nginx_version=(1, 22, 1))
    assert "http2 on;" not in old
    assert re.search(r"listen \S+:443 ssl http2 default_server", old)


# --- nginx's own answers ---------------------------------------------------------------------
def test_every_status_nginx_produces_has_a_json_error_page():
    conf = _render(rate_limit_per_minute=60)
    pages = dict(d.split(" ", 1) for d in _directives(_block(conf, "http"), "error_page"))
    assert set(int(s) for s in pages) == set(proxy_policy.NGINX_STATUSES)
    bodies = _block(conf, "map $proxy_error $proxy_error_body")
    for status in proxy_policy.NGINX_STATUSES:
        if status in (429, 502):
            continue
        body = json.loads(re.search(rf"^\s*{status} '(.*)';$", bodies, re.M).group(1))
        sent = 400 if status in proxy_policy.SENT_AS_400 else status
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == sent


def test_no_location_overrides_the_inherited_errors_or_headers():
    """A location with its own error_page or proxy_set_header drops every inherited one, so
    error pages live at http level only, and a location that sets headers sets them all."""
    conf = _render(acme_webroot="/var/www/acme")
    every = {d.split(" ", 1)[0] for d in _directives(_block(conf, "http"), "proxy_set_header")}
    assert {"Host", "Forwarded", "X-Forwarded-For", *proxy_policy.CLEARED_HEADERS} <= every
    for server in _servers(conf):
        assert "error_page" not in re.sub(r"location [^{]+\{", "", server).split("location")[0]
        for head, body in _locations(server).items():
            assert "error_page" not in body, head
            own = {d.split(" ", 1)[0] for d in _directives(body, "proxy_set_header")}
            assert not own or every <= own, f"location {head} sets some headers and drops the rest"


def test_a_new_location_can_add_a_header_and_keep_the_whole_set():
    """templates/_proxy.j2 upstream_headers(extra): e.g. a WebSocket upgrade for a dashboard."""
    from serving.nginx_conf import _environment, _policy

    macros = _environment().get_template("_proxy.j2").module
    text = str(macros.upstream_headers(_policy(_site()), {"Upgrade": "$http_upgrade", "Connection": '"upgrade"'}))
    headers = dict(d.split(" ", 1) for d in _directives(text, "proxy_set_header"))
    assert headers["Upgrade"] == "$http_upgrade" and headers["Connection"] == '"upgrade"'
    assert headers["X-Forwarded-For"] == "$remote_addr" and headers["True-Client-IP"] == '""'
    assert len(re.findall(r"^proxy_set_header Connection ", text, re.M)) == 1


def test_tls_server_answers_carry_hsts_even_the_errors():
    _, tls = _servers(_render())
    hsts = 'Strict-Transport-Security "max-age=31536000" always'
    assert hsts in _directives(tls, "add_header")
    for head, body in _locations(tls).items():
        if "add_header" in body:  # a location's add_header replaces the server's
            assert hsts in _directives(body, "add_header"), head


def test_plain_http_refuses_api_calls_without_redirect_or_reflecting_the_host():
    conf = _render(canonical_host="llm.example.com")
    plain, _ = _servers(conf)
    assert "$host" not in conf and "$http_host" not in conf, "the client's Host is never reflected"
    assert _directives(_location(plain, "/"), "return") == ["403 $plain_http_body"]
    redirects = re.findall(r"return 301 (\S+);", plain)
    assert redirects == ["https://llm.example.com/"], "only a browser's GET / is redirected, by name"
    assert "return 301" not in _servers(_render(canonical_host=None))[0], "no configured name: no redirect"
    assert "https://llm.example.com:8443/" in _render(canonical_host="llm.example.com", https_port=8443, http_port=8080)


def test_plain_http_body_tells_a_key_holder_to_replace_it():
    without, with_key = proxy_policy.plain_http_bodies("https://llm.example.com/")
    assert "https://llm.example.com/" in json.loads(without)["error"]["message"]
    assert "replace it" in json.loads(with_key)["error"]["message"]


# --- headers to vLLM --------------------------------------------------------------------------
def test_every_forwarding_header_is_set_by_the_proxy_or_cleared():
    conf = _render(canonical_host="llm.example.com")
    http = _block(conf, "http")
    headers = dict(d.split(" ", 1) for d in _directives(http, "proxy_set_header"))
    for name in ("X-Forwarded-For", "X-Real-IP"):
        assert headers[name] == "$remote_addr", "overwrite, never append ($proxy_add_x_forwarded_for)"
    assert headers["Host"] == headers["X-Forwarded-Host"] == "llm.example.com"
    forwarded = re.search(r"^\s*proxy_set_header Forwarded (.*);$", http, re.M).group(1)
    assert forwarded == '"for=$remote_addr;host=\\"llm.example.com\\";proto=$scheme"'
    for name in proxy_policy.CLEARED_HEADERS:
        assert headers[name] == '""', name
    assert "proxy_add_x_forwarded_for" not in conf
    assert _directives(http, "underscores_in_headers") == ["off"]


# --- the access log ---------------------------------------------------------------------------
def test_no_log_format_can_record_the_api_key():
    conf = _render(rate_limit_per_minute=60, metrics_allowed_cidrs=["10.0.0.0/8"])
    log_format = re.search(r"log_format (.*?);", conf, re.S).group(1)
    assert "authorization" not in log_format.lower()
    assert "$request " not in log_format and "$request'" not in log_format  # carries ?query
    for variable in ("$args", "$request_body", "$request_uri", "$query_string", "$http_authorization"):
        assert variable not in log_format
    for variable in set(re.findall(r"\$(\w+)", log_format)):  # maps the format reads
        source = re.search(rf"map (\S+) \${variable} \{{", conf)
        assert source is None or "authorization" not in source.group(1).lower(), variable
    names = {d.split()[1] for d in _directives(conf, "access_log")}
    assert names == {"vllm_proxy"}, "every access_log must use the key-free format"


def test_access_log_records_who_ended_the_stream():
    log_format = re.search(r"log_format (.*?);", _render(), re.S).group(1)
    for field in ('"ended_by":"$ended_by"', '"complete":$complete', '"upstream_status":"$upstream_status"',
                  '"request_time":$request_time', '"response_bytes":$bytes_sent'):
        assert field in log_format


# --- paths, ports, identity -------------------------------------------------------------------
def test_tls_hardening():
    conf = _render()
    assert _directives(conf, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert _directives(conf, "server_tokens") == ["off"]


def test_metrics_allowed_only_from_the_given_cidrs_then_denied():
    assert _directives(_location(_render(), "= /metrics"), "allow") == []
    metrics = _location(_render(metrics_allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"]), "= /metrics")
    assert _directives(metrics, "allow") == ["10.0.0.0/8", "2001:db8::/32"]
    assert metrics.index("deny all") > metrics.rindex("allow")  # nginx: first match wins


def test_health_is_proxied_without_any_access_rule():
    health = _location(_render(), "= /health")
    assert "deny" not in health and "auth" not in health and "limit_req" not in health


def test_acme_challenge_location_only_with_a_webroot():
    assert "acme-challenge" not in _render()
    acme = _location(_render(acme_webroot="/var/www/acme"), "^~ /.well-known/acme-challenge/")
    assert _directives(acme, "root") == ["/var/www/acme"]


def test_listen_ports_and_body_limit():
    conf = _render(https_port=8443, http_port=8080, client_max_body_size_mb=12)
    assert _directives(conf, "listen") == ["0.0.0.0:8080 default_server backlog=4096",
                                           "0.0.0.0:8443 ssl default_server backlog=4096 sndbuf=64k"]
    assert _directives(conf, "client_max_body_size") == ["12m"]


def test_production_defaults_fit_the_official_image():
    conf = _render()
    assert NGINX_IMAGE.startswith("nginx:") and not NGINX_IMAGE.endswith(":latest")
    assert NGINX_IMAGE.split(":")[1].startswith(".".join(map(str, NGINX_IMAGE_VERSION)))
    assert _directives(conf, "user") == ["nginx"]
    assert _directives(conf, "ssl_certificate") == ["/etc/nginx/tls/server.crt"]
    assert "Rendered by serving/nginx.py" in conf


def test_no_user_directive_for_an_unprivileged_nginx():
    assert _directives(_render(worker_user=None), "user") == []


def test_site_for_stack_carries_the_stack_policy():
    config = parse({
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "domain": "llm.example.com",
        "allowedCidrs": ["10.0.0.0/8"],
        "metricsAllowedCidrs": ["10.1.0.0/16"],
        "rateLimitPerMinute": 120,
        "maxRequestBodyMb": 32,
        "maxConcurrentRequestsPerClient": 40,
    })
    site = site_for_stack(config, stack_limits(config, size(config)), vllm_port=8000, public_ip="203.0.113.9",
                          acme_webroot="/var/www/acme")
    assert (site.upstream_port, site.server_name, site.canonical_host) == (8000, "llm.example.com", "llm.example.com")
    assert site.metrics_allowed_cidrs == ["10.1.0.0/16"]
    assert (site.rate_limit_per_minute, site.client_max_body_size_mb) == (120, 32)
    assert site.limits.max_streams_per_client == 40
    assert site.acme_webroot == "/var/www/acme"
    no_domain = parse({"model": "Qwen/Qwen2.5-7B-Instruct"})
    assert site_for_stack(no_domain, stack_limits(no_domain, size(no_domain)), vllm_port=8000, public_ip="203.0.113.9").canonical_host == "203.0.113.9"


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
        ({"canonical_host": "evil.example;return 200"}, "canonical_host="),
        ({"canonical_host": "_"}, "canonical_host="),
        ({"worker_user": "root;"}, "worker_user="),
        ({"proxy_buffering": "on"}, "Extra inputs are not permitted"),
        ({"limits": LIMITS.__class__(1, 70000, 70100, 30000, 10)}, "65535"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValidationError) as caught:
        _site(**fields)
    assert message in str(caught.value)
