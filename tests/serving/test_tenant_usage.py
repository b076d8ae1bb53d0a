"""Per-tenant usage as written (pure, plus Debian's promtool): the mtail program exports what
serving.monitoring.tenant_usage lists, the dashboard and alerts read only that, and the
Prometheus and Grafana files gain the usage job and dashboard in tenant mode only.
tests/serving/test_tenant_usage_live.py runs the program in a real mtail.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from serving.monitoring import catalog, grafana, prometheus, services, tenant_usage
from serving.monitoring.promql import metric_names
from serving.monitoring.usage_dashboard import USAGE, usage_alert_rules
from serving.vllm_args import VLLM_PORT
from tests.serving.test_monitoring import GRAFANA_RATE_INTERVAL, promtool

GRAFANA_RANGE = "3h"


def usage_queries() -> list[tuple[str, str]]:
    found = [(f"{USAGE.uid} / {title}", expr) for title, expr in USAGE.queries()]
    return found + [(f"alert {r.name}", r.expr) for r in usage_alert_rules()]


def as_prometheus_sees_it(expr: str) -> str:
    return expr.replace("$__rate_interval", GRAFANA_RATE_INTERVAL).replace("$__range", GRAFANA_RANGE)


def test_the_program_declares_exactly_the_listed_counters_with_their_labels():
    declared = tenant_usage.declared_counters(tenant_usage.program_text())
    assert declared == {m.name: m.labels for m in tenant_usage.USAGE_METRICS}
    assert all(m.name.startswith("vllm_deploy_") and m.name.endswith("_total") for m in tenant_usage.USAGE_METRICS)
    # Per tenant, except what has no tenant: a request without a valid key, an unreadable line.
    untenanted = {m.name for m in tenant_usage.USAGE_METRICS if "tenant" not in m.labels}
    assert untenanted == {"vllm_deploy_unauthenticated_requests_total", "vllm_deploy_usage_log_unparsed_lines_total"}


def test_usage_queries_read_only_what_the_program_exports_and_up():
    served = catalog.exported_series()
    read = {name for _, expr in usage_queries() for name in metric_names(expr)}
    assert read - {"up"} <= {m.name for m in tenant_usage.USAGE_METRICS}
    assert {served[name].exporter for name in read} == {"mtail", "prometheus"}
    for wanted in ("vllm_deploy_tenant_prompt_tokens_total", "vllm_deploy_tenant_completion_tokens_total",
                   "vllm_deploy_tenant_requests_total"):
        assert wanted in read, wanted


def test_the_usage_panel_shows_tokens_and_requests_per_second_by_tenant():
    panels = {p.title: p for p in USAGE.panels}
    tokens = [q.expr for q in panels["Usage by tenant"].queries]
    assert all(e.startswith("sum by (tenant) (rate(") for e in tokens)
    assert {n for e in tokens for n in metric_names(e)} == {
        "vllm_deploy_tenant_prompt_tokens_total", "vllm_deploy_tenant_completion_tokens_total"}
    assert panels["Requests by tenant"].unit == "reqps"
    assert all(p.description for p in USAGE.panels)


def test_usage_queries_and_alerts_parse_as_promql(tmp_path):
    rules = [{"record": f"check:usage_{i}", "expr": as_prometheus_sees_it(expr)}
             for i, (_, expr) in enumerate(usage_queries())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "usage", "rules": rules}]}))
    checked = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_tenant_mode_config_and_rules_pass_promtool(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(prometheus.rules_yaml(prometheus.alert_rules(requests_waiting=4) + usage_alert_rules()))
    config = tmp_path / "prometheus.yml"
    targets = prometheus.scrape_targets(VLLM_PORT, tenant_usage=True)
    config.write_text(prometheus.config_yaml(targets, rules_path=str(rules)))
    for kind, path in (("config", config), ("rules", rules)):
        checked = subprocess.run([promtool(), "check", kind, str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "10 rules found" in checked.stdout
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs[tenant_usage.USAGE_JOB] == ["127.0.0.1:3903"]


def test_without_api_keys_nothing_changes():
    assert tenant_usage.USAGE_JOB not in prometheus.scrape_targets(VLLM_PORT)
    assert grafana.provisioned_files() == grafana.provisioned_files(tenant_usage=False)
    assert not any("tenants" in path for path in grafana.provisioned_files())


def test_mtails_port_clashes_with_nothing_on_the_host():
    taken = {s.port for s in services.SERVICES} | {VLLM_PORT}
    assert tenant_usage.MTAIL_PORT not in taken
    assert tenant_usage.scrape_address() == f"127.0.0.1:{tenant_usage.MTAIL_PORT}"


def test_the_usage_dashboard_is_provisioned_in_tenant_mode():
    files = grafana.provisioned_files(tenant_usage=True)
    board = json.loads(files[f"{grafana.DASHBOARDS_DIR}/vllm-tenants.json"])
    assert board["title"] == "Usage by tenant"
    assert [p["title"] for p in board["panels"]][0] == "Usage by tenant"
    for panel in board["panels"]:
        assert {t["datasource"]["uid"] for t in panel["targets"]} == {"prometheus"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_the_host_script_gets_the_program_and_loopback_settings():
    env = tenant_usage.install_env(metrics=True, nginx_container="vllm-proxy")
    assert base64.b64decode(env["VLLM_DEPLOY_MTAIL_PROGRAM_B64"]).decode() == tenant_usage.program_text()
    assert env["VLLM_DEPLOY_MTAIL_ADDRESS"] == "127.0.0.1"
    assert env["VLLM_DEPLOY_USAGE_LOG_DIR"] == tenant_usage.USAGE_LOG_HOST_DIR
    rotation_only = tenant_usage.install_env(metrics=False, nginx_container="vllm-proxy")
    assert rotation_only["VLLM_DEPLOY_USAGE_METRICS"] == "0"
    assert not any(k.startswith("VLLM_DEPLOY_MTAIL_") for k in rotation_only)


def test_the_usage_log_is_where_the_proxy_writes_it():
    """Our stand-in constants against serving.tenants (the proxy's), once that module exists."""
    tenants = pytest.importorskip("serving.tenants", reason="serving/tenants.py (the proxy's) not merged yet")
    assert tenant_usage.USAGE_LOG_HOST_DIR == tenants.USAGE_LOG_HOST_DIR
    assert Path(tenants.USAGE_LOG_CONTAINER).name == tenant_usage.USAGE_LOG_NAME
    program = tenant_usage.program_text()
    unread = [f for f in tenants.USAGE_LOG_FIELDS if f != "time" and f'"{f}":' not in program]
    assert unread == []


def test_the_operations_guide_explains_every_usage_panel_and_alert():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    missing = [p.title for p in USAGE.panels if f"\n| {p.title} |" not in guide]
    missing += [r.name for r in usage_alert_rules() if f"\n| `{r.name}` |" not in guide]
    assert missing == []
