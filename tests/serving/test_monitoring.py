"""The monitoring files as written (pure, plus Debian's promtool on the rendered text).

Every dashboard query and alert expression must name only series the pinned exporters serve
(serving/monitoring/metrics/ holds those lists with their sources), and parse as PromQL.
tests/serving/test_monitoring_live.py runs the same files in a real Prometheus.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from config.validation import parse
from serving.monitoring import catalog, dashboards, grafana, prometheus, services
from serving.monitoring.promql import metric_names
from sizing.choice import plan as size

SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
# Grafana replaces $__rate_interval with a duration before Prometheus sees a query.
GRAFANA_RATE_INTERVAL = "1m"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    reason = "needs promtool (apt-get install prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must check the monitoring files: {reason}")
    pytest.skip(reason)


def all_queries() -> list[tuple[str, str]]:
    """(where, expr) of every dashboard query and every alert expression."""
    found = [(f"{d.uid} / {title}", expr) for d in dashboards.DASHBOARDS for title, expr in d.queries()]
    found += [(f"alert {r.name}", r.expr) for r in prometheus.alert_rules(requests_waiting=4)]
    return found


# --- metric names ----------------------------------------------------------------------------


def test_every_query_names_only_series_the_pinned_exporters_serve():
    served = catalog.exported_series()
    unknown = [
        (where, name) for where, expr in all_queries() for name in metric_names(expr) if name not in served
    ]
    assert unknown == []


def test_the_dashboards_read_every_exporter_and_the_issues_vllm_metrics():
    read = {name for _, expr in all_queries() for name in metric_names(expr)}
    exporters = {catalog.exported_series()[name].exporter for name in read}
    assert exporters == {"vllm", "dcgm", "node", "prometheus"}
    for wanted in ("vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting",
                   "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                   "vllm:e2e_request_latency_seconds_bucket", "vllm:num_preemptions_total",
                   "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
                   "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                   "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP",
                   "DCGM_FI_DEV_POWER_USAGE", "node_cpu_seconds_total", "node_memory_MemAvailable_bytes",
                   "node_filesystem_avail_bytes"):
        assert wanted in read, wanted


def test_the_vllm_list_is_vllm_033s_and_expands_like_prometheus_client():
    families = {f.name: f for f in catalog.vllm_families()}
    assert "vllm:kv_cache_usage_perc" in families
    assert not any("gpu_cache_usage" in name for name in families), "renamed before 0.33"
    assert families["vllm:num_preemptions"].series == ("vllm:num_preemptions_total",)
    assert families["vllm:e2e_request_latency_seconds"].series == (
        "vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
        "vllm:e2e_request_latency_seconds_count")
    assert families["vllm:kv_cache_usage_perc"].series == ("vllm:kv_cache_usage_perc",)
    assert all(f.source.split(": ", 1)[1].startswith("loggers.py:") for f in families.values())


def test_dcgm_list_is_the_collectors_file_without_profiling_fields():
    names = {f.name for f in catalog.dcgm_families()}
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_USED"} <= names
    assert not any(n.startswith("DCGM_FI_PROF_") for n in names), "profiling needs CAP_SYS_ADMIN"
    assert "DCGM_FI_DRIVER_VERSION" not in names, "a label row, not a metric"
    counter = next(f for f in catalog.dcgm_families() if f.name == "DCGM_FI_DEV_PCIE_REPLAY_COUNTER")
    assert counter.type == "counter" and counter.series == ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER",)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (model_name) (rate(vllm:prompt_tokens_total{engine="0"}[5m]))', {"vllm:prompt_tokens_total"}),
        ("histogram_quantile(0.9, sum(rate(a_bucket[$__rate_interval])) by (le))", {"a_bucket"}),
        ('1 - x{mountpoint="/"} / on(gpu) group_left(UUID) y > 0.85 and z offset 1h', {"x", "y", "z"}),
        ('up{job=~"dcgm|node"} == 0 or absent(w) * 1e3', {"up", "w"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr, names):
    assert metric_names(expr) == names


# --- parses as PromQL ------------------------------------------------------------------------


def test_every_query_parses_as_promql(tmp_path):
    """Each query as a recording rule: promtool parses every expression of a rules file."""
    rules = [
        {"record": f"check:query_{i}", "expr": expr.replace("$__rate_interval", GRAFANA_RATE_INTERVAL)}
        for i, (_, expr) in enumerate(all_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    checked = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rendered_config_and_rules_pass_promtool(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(prometheus.rules_yaml(prometheus.alert_rules(requests_waiting=4)))
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus.config_yaml(prometheus.scrape_targets(8000), rules_path=str(rules)))
    for kind, path in (("config", config), ("rules", rules)):
        checked = subprocess.run([promtool(), "check", kind, str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "8 rules found" in checked.stdout


# --- what Prometheus does --------------------------------------------------------------------


def test_prometheus_scrapes_only_loopback_and_keeps_what_the_keys_say():
    targets = prometheus.scrape_targets(8000)
    assert targets == {"vllm": "127.0.0.1:8000", "dcgm": "127.0.0.1:9400", "node": "127.0.0.1:9100",
                       "prometheus": "127.0.0.1:9090"}
    config = yaml.safe_load(prometheus.config_yaml(targets))
    assert [j["static_configs"][0]["targets"] for j in config["scrape_configs"]] == [[t] for t in targets.values()]
    args = prometheus.command_args(retention_days=30, retention_size_gib=7)
    assert "--storage.tsdb.retention.time=30d" in args and "--storage.tsdb.retention.size=7GB" in args
    assert "--web.listen-address=127.0.0.1:9090" in args


def test_the_issues_alerts_exist_with_their_thresholds():
    rules = {r.name: r for r in prometheus.alert_rules(requests_waiting=12)}
    assert rules["VllmDown"].expr == 'up{job="vllm"} == 0'
    assert rules["VllmKvCacheNearlyFull"].expr.endswith("vllm:kv_cache_usage_perc) > 0.9")
    assert rules["VllmKvCacheNearlyFull"].for_ == "5m"
    assert rules["VllmRequestsQueued"].expr.endswith("vllm:num_requests_waiting) > 12")
    assert "DCGM_FI_DEV_XID_ERRORS" in rules["GpuXidError"].expr
    assert "DCGM_FI_DEV_GPU_TEMP > 85" == rules["GpuOverheating"].expr
    assert rules["HostDiskAlmostFull"].expr.endswith("> 0.85")


def test_the_waiting_threshold_is_the_key_or_what_the_kv_cache_holds():
    settings = parse(SMALL)
    chosen = size(settings)
    assert prometheus.requests_waiting_threshold(settings, chosen) == chosen.concurrent_full_length_sequences
    assert prometheus.requests_waiting_threshold(parse({**SMALL, "alertRequestsWaiting": 3}), chosen) == 3


# --- Grafana ---------------------------------------------------------------------------------


def test_three_dashboards_all_reading_the_provisioned_data_source():
    files = dashboards.dashboard_files()
    assert sorted(files) == ["vllm-gpu.json", "vllm-host.json", "vllm-serving.json"]
    source = yaml.safe_load(grafana.datasource_yaml())["datasources"][0]
    assert source["url"] == "http://127.0.0.1:9090" and source["uid"] == dashboards.DATASOURCE_UID
    for name, text in files.items():
        board = json.loads(text)
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
            assert {t["datasource"]["uid"] for t in panel["targets"]} == {source["uid"]}
            assert panel["description"], f"{name}: {panel['title']} needs a description"


def test_grafana_serves_from_its_sub_path_with_no_anonymous_access_and_no_password_in_settings():
    env = dict(e.split("=", 1) for e in grafana.environment(grafana.root_url("203.0.113.10")))
    assert env["GF_SERVER_ROOT_URL"] == "https://203.0.113.10/grafana/"
    assert env["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert not any("PASSWORD" in name for name in env)
    files = grafana.provisioned_files()
    provider = yaml.safe_load(files[f"{grafana.PROVISIONING_DIR}/dashboards/vllm-deploy.yaml"])["providers"][0]
    dashboards_in = [p for p in files if p.startswith(provider["options"]["path"] + "/")]
    assert len(dashboards_in) == 3


def test_every_service_listens_on_loopback_with_a_pinned_image():
    for service in services.SERVICES:
        assert service.address.startswith("127.0.0.1:")
        repository, tag = service.image.rsplit(":", 1)
        assert tag and tag != "latest" and "/" in repository, service.image
    assert services.dcgm_exporter_args()[-2:] == ["-a", "127.0.0.1:9400"]
    assert "--web.listen-address=127.0.0.1:9100" in services.node_exporter_args()


def test_the_operations_guide_explains_every_panel_and_every_alert():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    missing = [p.title for d in dashboards.DASHBOARDS for p in d.panels if f"\n| {p.title} |" not in guide]
    missing += [r.name for r in prometheus.alert_rules(4) if f"\n| `{r.name}` |" not in guide]
    assert missing == []
