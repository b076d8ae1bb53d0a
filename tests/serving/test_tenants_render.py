"""Tenant mode of the proxy, read from the text (serving/tenants.py, the templates): the file
without apiKeys is byte for byte the one before tenants existed; with them, the key check, the
limits and the logs never carry a key. tests/serving/test_tenants_live.py runs it in nginx."""

from __future__ import annotations

import base64
import difflib
import io
import re
import tarfile
from pathlib import Path

import pytest

from config.validation import parse
from serving import tenants
from serving.nginx_conf import render, site_for_stack
from serving.proxy_limits import derive_limits, stack_limits
from sizing.choice import plan as size
from tests.harness import stack_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nginx"
UPSTREAM_KEY = "stack-key-" + "0" * 32
A_KEY, B_KEY = "a" * 48, "b" * 48


def _stack_site(stack: str, api_keys: dict | None = None):
    raw = stack_config(stack)
    if api_keys is not None:
        raw["apiKeys"] = api_keys
    config = parse(raw)
    return config, site_for_stack(config, stack_limits(config, size(config)), vllm_port=8000, public_ip="203.0.113.9")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_without_api_keys_the_nginx_conf_is_byte_identical_to_before_tenants(stack):
    """The fixtures were rendered by the templates of commit ee5efec (before tenant mode), plus
    only the raw-path guards of the three vLLM locations (a fix for every stack, not tenant mode)."""
    _, site = _stack_site(stack)
    assert site.tenants_dir is None
    assert render(site) == (FIXTURES / f"{stack}.conf").read_text()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_with_api_keys_only_tenant_lines_are_added(stack):
    _, site = _stack_site(stack, {"team-a": {"rateLimitPerMinute": 60}, "team-b": {}})
    assert site.tenants_dir == tenants.TENANT_DIR_CONTAINER
    before = (FIXTURES / f"{stack}.conf").read_text().splitlines()
    after = render(site).splitlines()
    # Every line of the old file is still there, in order, except the two 429 maps' values
    # (now the tenant's own answers) and the /v1/ comment that said vLLM checks the key.
    removed = [line[2:].strip() for line in difflib.ndiff(before, after) if line.startswith("- ")]
    assert removed, "tenant mode must change the 429 answers"
    for line in removed:
        assert re.match(r"^(REJECTED|default) +('\{\"error\"|\d+;)", line) or "vLLM checks the API key" in line, line
    added = "\n".join(after)
    assert f"load_module {site.njs_module_path};" in added
    assert f"include {tenants.TENANT_DIR_CONTAINER}/tenants.conf;" in added
    assert f"include {tenants.TENANT_DIR_CONTAINER}/location.conf;" in added
    assert re.search(r"^worker_shutdown_timeout \d+s;$", added, re.M)
    assert f"access_log {tenants.USAGE_LOG_CONTAINER} vllm_usage if=$usage_logged;" in added


def test_the_v1_location_refuses_unknown_keys_before_any_limit_and_sets_every_header_itself():
    _, site = _stack_site("dev", {"team-a": {}})
    conf = render(site)
    v1 = conf[conf.index("location /v1/ {"):]
    v1 = v1[: v1.index("\n        }\n")]
    assert v1.index("return 401") < v1.index("limit_conn per_client_streams") < v1.index("proxy_pass")
    assert v1.index("include /etc/nginx/tenants/location.conf;") < v1.index("proxy_pass")
    # location.conf sets Authorization, which drops every inherited proxy_set_header: the
    # location writes the whole set again.
    own = {line.split()[1] for line in v1.splitlines() if line.strip().startswith("proxy_set_header")}
    assert {"Host", "X-Forwarded-For", "Forwarded", "Proxy-Authorization"} <= own
    assert "js_body_filter tenants.usage_filter;" in v1
    body = re.search(r"return 401 '([^']*)';", v1).group(1)
    assert '"code":401' in body and '"type":"AuthenticationError"' in body


def test_no_log_format_in_tenant_mode_can_record_a_key():
    _, site = _stack_site("prod", {"team-a": {}, "team-b": {}})
    conf = render(site)
    formats = re.findall(r"log_format (\w+) escape=json(.*?);\n", conf, re.S)
    assert {name for name, _ in formats} == {"vllm_proxy", "vllm_usage"}
    for _, text in formats:
        assert "$http_authorization" not in text and "$tenant_key_hash" not in text
        assert '"tenant":"$tenant"' in text
    usage = dict(formats)["vllm_usage"]
    assert re.findall(r'"(\w+)":', usage) == list(tenants.USAGE_LOG_FIELDS)


def test_tenant_files_hold_hashes_and_limits_never_a_tenants_key():
    limits = (tenants.TenantLimits("team-a", 120, 8), tenants.TenantLimits("team-b", None, 4))
    files = tenants.tenant_files(
        limits, {"team-a": [tenants.key_hash(A_KEY), tenants.key_hash("c" * 48)], "team-b": [tenants.key_hash(B_KEY)]},
        UPSTREAM_KEY,
    )
    assert set(files) == {tenants.JS_FILE, tenants.HTTP_FILE, tenants.LOCATION_FILE}
    text = "\n".join(files.values())
    assert A_KEY not in text and B_KEY not in text
    http, location = files[tenants.HTTP_FILE], files[tenants.LOCATION_FILE]
    assert f'"{tenants.key_hash(A_KEY)}" "team-a";' in http and f'"{tenants.key_hash("c" * 48)}" "team-a";' in http
    assert "limit_req_zone $tenant_0 zone=tenant_0_req:1m rate=120r/m;" in http
    assert "tenant_1_req" not in http, "team-b has no rate of its own"
    assert "limit_req zone=tenant_0_req burst=20 nodelay;" in location  # ten seconds of 120/min
    assert "limit_conn tenant_0_conn 8;" in location and "limit_conn tenant_1_conn 4;" in location
    assert f'proxy_set_header Authorization "Bearer {UPSTREAM_KEY}";' in location


def test_key_hash_is_what_vllm_compares():
    # vllm/entrypoints/serve/middleware/authenticate.py: hashlib.sha256(t.encode("utf-8")).
    assert tenants.key_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("hashes, message", [
    ({"team-a": []}, "team-a has no key hash"),
    ({"team-a": ["ABC"]}, "is not a key_hash"),
    ({"team-a": [tenants.key_hash(A_KEY)], "team-b": [tenants.key_hash(A_KEY)]}, "share a key"),
    ({"team-a": [tenants.key_hash(A_KEY)], "ghost": [tenants.key_hash(B_KEY)]}, "ghost"),
])
def test_bad_tenant_input_is_refused_without_showing_a_key(hashes, message):
    limits = [tenants.TenantLimits("team-a", None, 4)]
    if "team-b" in hashes:
        limits.append(tenants.TenantLimits("team-b", None, 4))
    with pytest.raises(ValueError, match=message) as caught:
        tenants.tenant_files(limits, hashes, UPSTREAM_KEY)
    assert A_KEY not in str(caught.value) and UPSTREAM_KEY not in str(caught.value)


def test_an_upstream_key_nginx_could_not_quote_is_refused_unseen():
    bad = 'x" ; evil' + "0" * 20
    with pytest.raises(ValueError) as caught:
        tenants.tenant_files([tenants.TenantLimits("t", None, 1)], {"t": [tenants.key_hash(A_KEY)]}, bad)
    assert bad not in str(caught.value)


def test_tenant_limits_default_to_an_equal_share_of_the_batch_and_refuse_more_than_the_host_admits():
    config = parse({**stack_config("dev"), "apiKeys": {"b": {"maxConcurrentRequests": 3}, "a": {"rateLimitPerMinute": 6},
                                                       "c": {}}})
    limits = derive_limits(vcpus=4, memory_gib=16, default_per_client=256)
    got = tenants.tenant_limits(config, limits)
    assert [t.name for t in got] == ["a", "b", "c"], "sorted: zone indexes do not depend on dict order"
    # 256 sequences in vLLM's batch, 3 tenants: 86 each (rounded up); together at most the batch
    # plus rounding, so no tenant at its default queues behind another's flood.
    assert got[0] == tenants.TenantLimits("a", 6, 86) and got[2].max_concurrent_requests == 86
    alone = parse({**stack_config("dev"), "apiKeys": {"solo": {}}})
    assert tenants.tenant_limits(alone, limits)[0].max_concurrent_requests == limits.max_streams_per_client
    assert got[1].max_concurrent_requests == 3 and got[1].rate_limit_per_minute is None
    too_many = parse({**stack_config("dev"), "apiKeys": {"a": {"maxConcurrentRequests": limits.max_streams + 1}}})
    with pytest.raises(ValueError, match=r"apiKeys\.a\.maxConcurrentRequests"):
        tenants.tenant_limits(too_many, limits)


def test_the_bundle_is_a_deterministic_private_tar_of_the_files():
    files = {"b.conf": "two\n", "a.conf": "one\n"}
    bundle = tenants.tenant_bundle(files)
    assert bundle == tenants.tenant_bundle(dict(reversed(list(files.items()))))
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(bundle))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.conf", "b.conf"]
        assert all(m.mode == 0o600 and m.isfile() for m in members)
        assert tar.extractfile("b.conf").read() == b"two\n"
    with pytest.raises(ValueError):
        tenants.tenant_bundle({"../x": ""})
