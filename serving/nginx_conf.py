"""nginx.conf for the proxy: an ``NginxSite`` (serving.nginx) rendered through
``serving/templates/nginx.conf.j2`` with the error answers and forwarded headers of
serving.proxy_policy, and the production site for a validated stack. Pure: no Pulumi, no files
written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import jinja2

from serving import proxy_policy, tenants
from serving.monitoring.services import GRAFANA
from serving.nginx import NginxSite
from serving.proxy_limits import ProxyLimits

if TYPE_CHECKING:  # settings imports nothing from here; keep the import one-way
    from config.settings import StackConfig

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "nginx.conf.j2"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_PATH.parent)),
        autoescape=False,  # nginx syntax, not HTML; values are validated by NginxSite instead
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(site: NginxSite) -> str:
    """The complete nginx.conf for `site`."""
    template = _environment().get_template(TEMPLATE_PATH.name)
    return template.render(site=site, policy=_policy(site))


def _policy(site: NginxSite) -> dict[str, object]:
    """The error answers and forwarded headers the template writes out (serving.proxy_policy)."""
    limits = site.limits
    unreachable, full = proxy_policy.bad_gateway_pages(limits.max_streams)
    too_many_at_once, too_fast = proxy_policy.too_many_requests_bodies(
        per_client=limits.max_streams_per_client, rate_per_minute=site.rate_limit_per_minute
    )
    plain, plain_with_key = proxy_policy.plain_http_bodies(site.public_https_url)
    pages = proxy_policy.error_pages(
        body_limit_mib=site.client_max_body_size_mb,
        max_streams=limits.max_streams,
        header_line_kib=site.header_line_kib,
    )
    return {
        "error_prefix": proxy_policy.ERROR_PREFIX,
        "error_location_regex": proxy_policy.ERROR_LOCATION_REGEX,
        "pages": pages,
        "statuses": sorted([*pages, 429]),
        "unreachable": unreachable,
        "draining": proxy_policy.draining_page(),
        "full": full,
        "too_many_at_once": too_many_at_once,
        "too_fast": too_fast,
        "concurrency_retry_after_s": proxy_policy.CONCURRENCY_RETRY_AFTER_S,
        "rate_retry_after_s": (
            proxy_policy.rate_retry_after_s(site.rate_limit_per_minute) if site.rate_limit_per_minute else None
        ),
        "plain_http": plain,
        "plain_http_with_key": plain_with_key,
        "upstream_headers": proxy_policy.headers_to_upstream(site.upstream_authority),
        "unauthorized": tenants.unauthorized_body(),
    }


def site_for_stack(
    config: "StackConfig",
    limits: ProxyLimits,
    *,
    vllm_port: int,
    public_ip: Optional[str] = None,
    acme_webroot: Optional[str] = None,
    **overrides: object,
) -> NginxSite:
    """The production site for a validated stack config on the planned instance.

    `vllm_port` is vLLM's --port; `public_ip` the host's address, the canonical host when no
    domain is set. `overrides` are further NginxSite fields (paths, ports) for callers that
    need them. With ``apiKeys`` set the site is in tenant mode (``tenants_dir``). `limits`: serving.proxy_limits.stack_limits() for the planned host, computed
    once at preview (stack.preflight).
    """
    values: dict[str, object] = {
        "upstream_port": vllm_port,
        "server_name": config.domain or "_",
        "canonical_host": config.domain or public_ip,
        "acme_webroot": acme_webroot,
        "client_max_body_size_mb": config.max_request_body_mb,
        "metrics_allowed_cidrs": list(config.metrics_allowed_cidrs),
        "rate_limit_per_minute": config.rate_limit_per_minute,
        "limits": limits,
    }
    if config.monitoring:
        values["grafana_upstream_port"] = GRAFANA.port
        values["grafana_allowed_cidrs"] = config.grafana_cidrs
    if config.tenants_enabled:
        # nginx checks the tenants' keys; the files come from serving.tenants.tenant_files.
        values["tenants_dir"] = tenants.TENANT_DIR_CONTAINER
    values.update(overrides)
    return NginxSite.model_validate(values)
