"""serving.replica: the files a replica bakes, read as text (no nginx needed; the live drain,
balancer and limit tests are tests/serving/test_replica_live.py)."""

from __future__ import annotations

import difflib
import json
import re

import pytest

from components.proxy import proxy_config
from serving.nginx_conf import render
from serving.proxy_limits import stack_limits
from serving.replica import (
    ALB_IDLE_TIMEOUT_MAX_S,
    DRAIN_FLAG_PATH,
    REPLICA_SCRIPTS,
    TENANT_UNITS,
    UNITS,
    fleet_site,
    keepalive_timeouts,
    replica_files,
)
from serving.vllm_args import SHUTDOWN_TIMEOUT_S, VLLM_PORT
from sizing.choice import plan as choose_plan
from tests.scripts.replica_host import PUBLIC_IP, settings_for, single_host, without_shutdown_timeout


def _block(conf: str, head: str) -> str:
    start = conf.index(head + " {") + len(head) + 2
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        i += 1
    return conf[start:i - 1]


@pytest.mark.parametrize("upstream", [1, 75, 3600, 4000, 4001, 86400])
def test_nginx_keeps_idle_connections_longer_than_the_alb_from_one_value(upstream):
    alb, nginx = keepalive_timeouts(upstream)
    assert alb == min(upstream, ALB_IDLE_TIMEOUT_MAX_S), "the ALB waits as long as the proxy for vLLM, within its limit"
    assert nginx > alb, "P1: nginx closing first makes the ALB send into a closing socket (502)"
    config, argv, site = single_host()
    files = replica_files(vllm_argv=argv, nginx_site=site.model_copy(update={"upstream_read_timeout_s": upstream}),
                          settings=settings_for(config, upstream_timeout_s=upstream))
    http = _block(files["nginx/nginx.conf"], "http")
    assert re.findall(r"^    keepalive_timeout (\d+)s;", http, re.M) == [str(nginx)]


def test_keepalive_timeouts_refuses_nonsense():
    for bad in (0, -5, True, 1.5):
        with pytest.raises(ValueError, match="upstream_timeout_s"):
            keepalive_timeouts(bad)


def test_the_fleet_config_is_the_single_hosts_plus_only_the_fleet_options():
    """The same renderer: the replica's nginx.conf differs from the one components/proxy.py
    renders for a single host by exactly the real-ip, keep-alive and drain lines."""
    config, argv, site = single_host()
    settings = settings_for(config)
    single = proxy_config(config, stack_limits(config, choose_plan(config)), public_ip=PUBLIC_IP,
                          upstream_port=VLLM_PORT)
    fleet = replica_files(vllm_argv=argv, nginx_site=site, settings=settings)["nginx/nginx.conf"]
    added, removed = [], []
    for line in difflib.ndiff(single.splitlines(), fleet.splitlines()):
        if line.startswith("+ "):
            added.append(line[2:].strip())
        elif line.startswith("- "):
            removed.append(line[2:].strip())
    _, keepalive = keepalive_timeouts(settings.upstream_timeout_s)
    assert removed == ["keepalive_timeout 75s;"]
    directives = [a for a in added if a and not a.startswith("#")]
    assert directives == [
        f"keepalive_timeout {keepalive}s;",
        "set_real_ip_from 10.0.0.0/24;", "set_real_ip_from 10.0.1.0/24;",
        "real_ip_header X-Forwarded-For;", "real_ip_recursive on;",
        *[d for _ in range(2) for d in (
            f"if (-f {DRAIN_FLAG_PATH}) {{",
            'add_header Strict-Transport-Security "max-age=31536000" always;',
            "add_header Retry-After 1 always;",
            d_return(fleet),
            "}",
        )],
    ]


def d_return(conf: str) -> str:
    (line,) = set(re.findall(r"return 503 '[^']*draining[^']*';|return 503 '[^']*shutting down[^']*';", conf))
    body = json.loads(line.removeprefix("return 503 '").removesuffix("';"))
    assert body["error"]["code"] == 503 and body["error"]["type"] == "ServiceUnavailableError"
    return line


def test_drain_switch_guards_health_and_the_api_only_before_any_limit():
    config, argv, site = single_host()
    conf = replica_files(vllm_argv=argv, nginx_site=site, settings=settings_for(config))["nginx/nginx.conf"]
    tls = _block(_block(conf, "http"), "server")  # the plain HTTP server first
    assert "draining" not in tls
    for head, guarded in (("location = /health", True), ("location /v1/", True), ("location = /metrics", False)):
        body = _block(conf, head)
        assert (f"if (-f {DRAIN_FLAG_PATH})" in body) is guarded, head
        if guarded:
            assert body.index("if (-f") < body.index("proxy_pass"), "answered before vLLM is asked"


def test_single_host_never_trusts_x_forwarded_for():
    config, _, site = single_host()
    conf = render(site)
    assert "real_ip" not in conf and "draining" not in conf


def test_argv_is_the_single_hosts_plus_a_shutdown_timeout():
    config, single_argv, site = single_host()
    # Every host drains on a stop (serving.vllm_args): a replica runs the single host's argv as is.
    at = single_argv.index("--shutdown-timeout")
    assert single_argv[at + 1] == str(SHUTDOWN_TIMEOUT_S)
    unchanged = replica_files(vllm_argv=single_argv, nginx_site=site,
                              settings=settings_for(config, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S))
    assert json.loads(unchanged["vllm-args.json"]) == single_argv
    argv = without_shutdown_timeout(single_argv)  # an argv without it gets the settings' value
    settings = settings_for(config, shutdown_timeout_s=45)
    files = replica_files(vllm_argv=argv, nginx_site=site, settings=settings)
    assert json.loads(files["vllm-args.json"]) == [*argv, "--shutdown-timeout", "45"]
    env = dict(line.split("=", 1) for line in files["replica.env"].splitlines() if not line.startswith("#"))
    assert int(env["VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S"]) > 45, "P7: docker must not SIGKILL vLLM's drain"
    with pytest.raises(ValueError, match="--shutdown-timeout"):
        replica_files(vllm_argv=[*argv, "--shutdown-timeout", "5"], nginx_site=site, settings=settings)
    same = replica_files(vllm_argv=[*argv, "--shutdown-timeout", "45"], nginx_site=site, settings=settings)
    assert json.loads(same["vllm-args.json"]).count("--shutdown-timeout") == 1


def test_files_carry_every_script_and_unit_and_no_key():
    """The key is not an input at all (it is read from SSM at boot); no settings file names it."""
    config, argv, site = single_host()
    files = replica_files(vllm_argv=argv, nginx_site=site, settings=settings_for(config))
    assert set(files) == {"replica.env", "vllm.env", "vllm-args.json", "nginx/nginx.conf", "lib.sh",
                          *REPLICA_SCRIPTS, *UNITS, *TENANT_UNITS}
    assert not any("VLLM_API_KEY" in text or "--api-key" in text
                   for name, text in files.items() if not name.endswith(".sh"))


def test_mismatched_inputs_are_refused_naming_the_field():
    config, argv, site = single_host()
    with pytest.raises(ValueError, match="upstream_read_timeout_s=3600 differs from settings.upstream_timeout_s=60"):
        replica_files(vllm_argv=argv, nginx_site=site, settings=settings_for(config, upstream_timeout_s=60))
    with pytest.raises(ValueError, match="tls_certificate_path|TLS paths"):
        replica_files(vllm_argv=argv, nginx_site=site.model_copy(update={"tls_certificate_path": "/x/cert.pem"}),
                      settings=settings_for(config))
    for field, bad in (("alb_subnet_cidrs", ()), ("alb_subnet_cidrs", ("10.0.0.1/24",)),
                       ("api_key_parameter", "no-slash"), ("region", "us east"), ("shutdown_timeout_s", 0),
                       ("vllm_image", "vllm/vllm-openai:v0.33.0; rm -rf /"), ("drain_seconds", 4000)):
        with pytest.raises(ValueError, match=field):
            settings_for(config, **{field: bad})


def test_fleet_site_is_validated_again():
    config, _, site = single_host()
    with pytest.raises(ValueError, match="drain_flag_path"):
        fleet_site(site, settings_for(config), drain_flag_path="/run/with space")
