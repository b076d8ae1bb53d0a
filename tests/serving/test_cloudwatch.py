"""A fleet's CloudWatch agent configuration, checked by the tools that read it: the agent's own
JSON schema (vendored, tests/fixtures/cloudwatch-agent) through check-jsonschema, Prometheus's
`promtool check config` on the scrape file, and a real Prometheus scraping the fake vLLM with
that file (the keep-list and the rename). And the alarms and the dashboard read only metrics
the configuration publishes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from serving.monitoring import cloudwatch, prometheus

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests/fixtures/cloudwatch-agent/schema.json"
GROUP = "vllm-deploy-prod-replicas"


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/bin"]))
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: needs {name}")
        pytest.skip(f"needs {name}")
    return found


def _config() -> dict:
    return cloudwatch.agent_config(log_group_name="/vllm-deploy/prod/replica-metrics",
                                   scrape_config_path=f"{cloudwatch.CONFIG_DIR}/prometheus.yaml")


def test_the_agent_config_is_valid_for_the_agents_schema(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(_config()))
    ok = subprocess.run([_tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The schema is not a rubber stamp: a misspelt key in the prometheus section is refused.
    broken = _config()
    broken["logs"]["metrics_collected"]["prometheus"]["log_group"] = "x"
    path.write_text(json.dumps(broken))
    bad = subprocess.run([_tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "log_group" in bad.stdout + bad.stderr


def test_promtool_accepts_the_scrape_file(tmp_path):
    path = tmp_path / "prometheus.yaml"
    path.write_text(cloudwatch.scrape_config_yaml(GROUP, vllm_port=8000))
    checked = subprocess.run([_tool("promtool"), "check", "config", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    job = yaml.safe_load(path.read_text())["scrape_configs"][0]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"], "labels": {"AutoScalingGroupName": GROUP}}]


def test_only_gauges_and_counters_are_published_and_never_a_histogram(monkeypatch):
    published = cloudwatch.published_vllm_series()
    assert {f.type for f in published.values()} <= {"gauge", "counter"}
    assert all(":" not in name for name in cloudwatch.published_metrics(_config()))
    # Asking for a latency histogram (which the agent would drop) or a name vLLM 0.33 does not
    # serve is refused, naming it.
    kept = cloudwatch.VLLM_PUBLISHED
    for name, why in (("vllm:time_to_first_token_seconds", "histogram"), ("vllm:gpu_cache_usage_perc", "not a vLLM 0.33")):
        monkeypatch.setattr(cloudwatch, "VLLM_PUBLISHED", (*kept, name))
        with pytest.raises(ValueError, match=why):
            cloudwatch.published_vllm_series()


def test_every_alarm_and_dashboard_metric_is_published():
    published = cloudwatch.published_metrics(_config())
    alarms = cloudwatch.alarms(replicas=3, requests_waiting=12)
    for alarm in alarms:
        if alarm.namespace == cloudwatch.NAMESPACE:
            assert alarm.metric in published, alarm.name
        else:
            assert alarm.namespace == "AWS/ApplicationELB" and alarm.scope == "targets"
    body = cloudwatch.dashboard_body(region="us-east-1", group_name=GROUP, load_balancer="app/lb/1", target_group="targetgroup/t/2")
    for namespace, metric in cloudwatch.dashboard_metrics(body):
        assert namespace == "AWS/ApplicationELB" or (namespace == cloudwatch.NAMESPACE and metric in published), metric
    # The single host's alerts are all here, or named as not expressible on a fleet (README).
    single = {rule.name for rule in prometheus.alert_rules(12)}
    assert single == {a.name for a in alarms if a.name != "VllmMetricsMissing"} | set(cloudwatch.NOT_ON_A_FLEET)


def test_the_scaling_gauge_is_per_group_only():
    (declaration,) = _config()["logs"]["metrics_collected"]["prometheus"]["emf_processor"]["metric_declaration"]
    assert declaration["dimensions"] == [["AutoScalingGroupName"]]
    assert any(re.search(s, "vllm_num_requests_waiting") for s in declaration["metric_selectors"])


def test_a_real_prometheus_keeps_only_the_published_series_renamed():
    """The scrape file's relabelling, run by Prometheus itself against the fake vLLM's /metrics
    (vLLM 0.33's families, histograms included)."""
    from tests.fakes import free_port, start_fake_vllm

    binary = _tool("prometheus")
    work = Path(tempfile.mkdtemp(prefix="vllm-cw-scrape-"))
    vllm = start_fake_vllm(api_key="sk-unused")
    process = None
    try:
        text = cloudwatch.scrape_config_yaml(GROUP, vllm_port=vllm.port, interval_s=1)
        (work / "prometheus.yaml").write_text(text)
        listen = f"127.0.0.1:{free_port()}"
        process = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yaml'}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address={listen}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

        def names() -> set[str]:
            url = f"http://{listen}/api/v1/label/__name__/values"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return set(json.load(answer)["data"])
            except OSError:
                return set()

        expected = {cloudwatch.cloudwatch_name(s) for s in cloudwatch.published_vllm_series()}
        deadline = time.monotonic() + 30
        while not expected <= names():
            assert time.monotonic() < deadline, f"missing {expected - names()}"
            time.sleep(0.5)
        stored = {n for n in names() if not n.startswith(("up", "scrape_"))}
        assert stored == expected
        query = urllib.parse.quote('vllm_num_requests_waiting{AutoScalingGroupName="%s"}' % GROUP)
        with urllib.request.urlopen(f"http://{listen}/api/v1/query?query={query}", timeout=2) as answer:
            assert json.load(answer)["data"]["result"], "the group's label is on the series"
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        vllm.stop()
        shutil.rmtree(work, ignore_errors=True)
