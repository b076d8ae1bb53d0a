"""The "Usage by tenant" dashboard and the tenant-usage alerts (apiKeys set, monitoring on).

Queries read only the counters serving/monitoring/tenant_usage.mtail exports (listed in
serving.monitoring.tenant_usage, checked by tests/serving/test_tenant_usage.py) and Prometheus's
`up`. Provisioned beside the three dashboards of serving.monitoring.dashboards only in tenant
mode (serving.monitoring.grafana.provisioned_files), so a stack without apiKeys gets the same
files as before.
"""

from __future__ import annotations

from serving.monitoring.dashboards import RATE, Dashboard, Panel, Query
from serving.monitoring.prometheus import SUSTAINED, AlertRule
from serving.monitoring.tenant_usage import USAGE_JOB

# Grafana's variable for the dashboard's whole time range (a duration such as "3h").
RANGE = "$__range"


def _by_tenant(series: str, legend: str, selector: str = "") -> Query:
    return Query(f"sum by (tenant) (rate({series}{selector}[{RATE}]))", legend)


USAGE = Dashboard(
    uid="vllm-tenants",
    title="Usage by tenant",
    description="Tokens, requests, errors and bytes per tenant (apiKeys), from the proxy's usage "
    "log through mtail.",
    panels=(
        Panel(
            "Usage by tenant",
            "Prompt and completion tokens per second of each tenant, from the `usage` vLLM "
            "sends with each response (streams included); a response cut before its usage "
            "adds none.",
            (
                _by_tenant("vllm_deploy_tenant_prompt_tokens_total", "{{tenant}} prompt"),
                _by_tenant("vllm_deploy_tenant_completion_tokens_total", "{{tenant}} completion"),
            ),
            unit="short",
        ),
        Panel(
            "Requests by tenant",
            "Requests per second the proxy answered for each tenant, all statuses.",
            (_by_tenant("vllm_deploy_tenant_requests_total", "{{tenant}}"),),
            unit="reqps",
        ),
        Panel(
            "Errors and limits by tenant",
            "Per tenant: 4xx and 5xx answers per second, and of the 4xx the 429s (over the "
            "tenant's rateLimitPerMinute or maxConcurrentRequests, or a per-address or "
            "capacity limit).",
            (
                Query(
                    "sum by (tenant, status_class) (rate(vllm_deploy_tenant_requests_total"
                    f'{{status_class=~"4xx|5xx"}}[{RATE}]))',
                    "{{tenant}} {{status_class}}",
                ),
                _by_tenant("vllm_deploy_tenant_rate_limited_requests_total", "{{tenant}} 429"),
            ),
            unit="reqps",
        ),
        Panel(
            "Requests without a valid key",
            "Requests nginx answered 401 itself (missing, wrong or revoked key): they reach "
            "no tenant and never reach vLLM. A steady rate is a client with an old key or "
            "someone guessing.",
            (Query(f"sum(rate(vllm_deploy_unauthenticated_requests_total[{RATE}]))", "no valid key"),),
            unit="reqps",
        ),
        Panel(
            "Mean request time by tenant",
            "Seconds per request (nginx's request_time: first byte in to last byte out, "
            "streams to their end), averaged over the rate window.",
            (
                Query(
                    f"sum by (tenant) (rate(vllm_deploy_tenant_request_seconds_total[{RATE}])) / "
                    f"sum by (tenant) (rate(vllm_deploy_tenant_requests_total[{RATE}]))",
                    "{{tenant}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Bytes sent by tenant",
            "Bytes per second the proxy sent each tenant (responses, headers included).",
            (_by_tenant("vllm_deploy_tenant_response_bytes_total", "{{tenant}}"),),
            unit="Bps",
        ),
        Panel(
            "Tokens in the time range",
            "Prompt and completion tokens of each tenant over the dashboard's time range "
            "(counted since mtail started if that is later).",
            (
                Query(f"sum by (tenant) (increase(vllm_deploy_tenant_prompt_tokens_total[{RANGE}]))", "{{tenant}} prompt"),
                Query(f"sum by (tenant) (increase(vllm_deploy_tenant_completion_tokens_total[{RANGE}]))", "{{tenant}} completion"),
            ),
            kind="table", width=24,
        ),
    ),
)


def usage_alert_rules() -> tuple[AlertRule, ...]:
    """Alerts that only tenant mode has: the usage metrics are blind, or misread the log."""
    return (
        AlertRule(
            "TenantUsageMetricsDown",
            f'up{{job="{USAGE_JOB}"}} == 0',
            SUSTAINED,
            "warning",
            "the per-tenant usage metrics (mtail) do not answer",
            "Usage by tenant is blind; requests are served as before. On the host: "
            "`systemctl status vllm-deploy-tenant-usage` and `journalctl -u vllm-deploy-tenant-usage`.",
        ),
        AlertRule(
            "TenantUsageLogUnreadable",
            "increase(vllm_deploy_usage_log_unparsed_lines_total[15m]) > 0",
            "0s",
            "warning",
            "lines of the proxy's usage log that the usage metrics cannot read",
            "The proxy's usage log format and serving/monitoring/tenant_usage.mtail disagree: "
            "those requests are missing from Usage by tenant. Compare a line of "
            "/var/log/vllm-deploy/proxy-usage/usage.log with the program's patterns.",
        ),
    )
