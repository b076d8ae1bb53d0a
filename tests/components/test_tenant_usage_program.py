"""Per-tenant usage in the whole program under recording mocks: with apiKeys and monitoring,
the host step that installs mtail and the rotation, the scrape job, the dashboard and the
readiness check waiting for it; without apiKeys none of it (same resources as before)."""

from __future__ import annotations

import base64

import yaml

from serving.monitoring import grafana, prometheus, tenant_usage
from tests.harness import reveal

COMMAND = "command:remote:Command"
CONTAINER = "docker:index/container:Container"
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
TENANTS = {**SMALL, "apiKeys": {"team-a": {}, "team-b": {"rateLimitPerMinute": 60}}}
STEP = "vllm-monitoring-tenant-usage-install"


def uploaded(container, path: str) -> str:
    return next(u["content"] for u in reveal(container.inputs["uploads"]) if u["file"] == path)


def test_with_api_keys_monitoring_installs_mtail_and_scrapes_it(program):
    run = program(TENANTS)
    step = run.named(STEP)
    env = reveal(step.inputs["environment"])
    assert env["VLLM_DEPLOY_USAGE_METRICS"] == "1"
    assert base64.b64decode(env["VLLM_DEPLOY_MTAIL_PROGRAM_B64"]).decode() == tenant_usage.program_text()
    assert env["VLLM_DEPLOY_NGINX_CONTAINER"] == "vllm-proxy"
    assert env["VLLM_DEPLOY_USAGE_LOG_DIR"] == "/var/log/vllm-deploy/proxy-usage"
    assert "install_tenant_usage.sh" in step.plain["create"]

    prom = run.named("vllm-monitoring-prometheus")
    config = yaml.safe_load(uploaded(prom, prometheus.CONFIG_PATH))
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs[tenant_usage.USAGE_JOB] == ["127.0.0.1:3903"]
    rules = uploaded(prom, prometheus.RULES_PATH)
    assert "TenantUsageMetricsDown" in rules and "TenantUsageLogUnreadable" in rules

    board = uploaded(run.named("vllm-monitoring-grafana"), f"{grafana.DASHBOARDS_DIR}/vllm-tenants.json")
    assert '"title": "Usage by tenant"' in board

    ready = run.named("vllm-monitoring-ready")
    assert tenant_usage.USAGE_JOB in reveal(ready.inputs["environment"])["VLLM_DEPLOY_JOBS"].split()
    assert step.urn in ready.property_dependencies["triggers"]


def test_without_api_keys_nothing_of_it_exists(program):
    run = program(SMALL)
    names = {r.name for r in run.resources}
    assert not any("tenant-usage" in n for n in names)
    prom = run.named("vllm-monitoring-prometheus")
    assert tenant_usage.USAGE_JOB not in uploaded(prom, prometheus.CONFIG_PATH)
    assert "Tenant" not in uploaded(prom, prometheus.RULES_PATH)
    grafana_files = [u["file"] for u in reveal(run.named("vllm-monitoring-grafana").inputs["uploads"])]
    assert not any("tenants" in f for f in grafana_files)


def test_with_api_keys_and_monitoring_off_the_usage_log_is_still_rotated(program):
    run = program({**TENANTS, "monitoring": False})
    step = run.named("vllm-tenant-usage-install")
    env = reveal(step.inputs["environment"])
    assert env["VLLM_DEPLOY_USAGE_METRICS"] == "0"
    assert not any(k.startswith("VLLM_DEPLOY_MTAIL_") for k in env)
    assert not any(r.name.startswith("vllm-monitoring") for r in run.resources)
