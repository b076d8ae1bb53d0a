"""The rendered Prometheus files in a real Prometheus (Debian's package) scraping a fake vLLM
that serves vLLM 0.33's metric names, and fake DCGM and node exporters; then every dashboard
query and alert expression asked through Prometheus's HTTP API.

Three phases, in order: healthy (no alert expression returns anything), troubled (every alert
expression but VllmDown returns data, every panel query returns data, the rules are pending),
and vLLM unscrapable (VllmDown returns data). The readiness script runs against the same
Prometheus. Prometheus starts on a free loopback port with a temporary storage directory and
is stopped at the end; needs `prometheus` and `promtool` (apt-get install prometheus).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from serving.monitoring import dashboards, prometheus
from tests.fakes import FakeVllmProcess, free_port, start_fake_vllm
from tests.fakes.exposition import dcgm_text, node_text
from tests.fakes.fake_exporter import FakeExporter
from tests.fakes.fake_grafana import start_fake_grafana
from tests.fakes.system_tools import binary

SCRIPT = Path(__file__).resolve().parents[2] / "components" / "scripts" / "wait_for_monitoring.sh"
WAITING_THRESHOLD = 4
SCRAPE_S = 1
# What Grafana puts for $__rate_interval: at least four scrape intervals (here with margin).
RATE_INTERVAL = "10s"
SETTLE_S = 12  # scrapes enough for every rate window after values change

HEALTHY_VLLM = {"vllm:kv_cache_usage_perc": 0.4, "vllm:num_requests_waiting": 1}
TROUBLED_VLLM = {"vllm:kv_cache_usage_perc": 0.95, "vllm:num_requests_waiting": WAITING_THRESHOLD + 20}
TROUBLED_DCGM = {"DCGM_FI_DEV_GPU_TEMP": 91, "DCGM_FI_DEV_XID_ERRORS": 79, "DCGM_FI_DEV_ROW_REMAP_FAILURE": 1}
TROUBLED_NODE = {"node_filesystem_avail_bytes": 10e9}  # of 200e9: 95% used


def _binary(name: str) -> str:
    return binary(name, "prometheus", "live monitoring tests")


@dataclass
class Observed:
    """What Prometheus answered in each phase: expr -> result list."""

    healthy: dict[str, list] = field(default_factory=dict)
    troubled: dict[str, list] = field(default_factory=dict)
    vllm_down: dict[str, list] = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    script_ok: Any = None
    script_missing_job: Any = None


@dataclass
class Stack:
    base: str
    prometheus: subprocess.Popen
    vllm: FakeVllmProcess
    overrides: Path
    dcgm: FakeExporter
    node: FakeExporter
    grafana_address: str
    dcgm_values: dict = field(default_factory=dict)
    node_values: dict = field(default_factory=dict)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
                body = json.load(response)
        except urllib.error.HTTPError as failed:
            raise AssertionError(f"{url}: {failed.code} {failed.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("/api/v1/query", query=expr.replace("$__rate_interval", RATE_INTERVAL))["result"]

    def set_vllm(self, values: dict) -> None:
        self.overrides.write_text(json.dumps(values))


def _all_exprs() -> tuple[list[str], dict[str, str]]:
    panels = [expr for d in dashboards.DASHBOARDS for _, expr in d.queries()]
    alerts = {r.name: r.expr for r in prometheus.alert_rules(WAITING_THRESHOLD)}
    return panels, alerts


def _wait_until(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _run_script(stack: Stack, bin_dir: Path, jobs: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VLLM_DEPLOY_PROMETHEUS": stack.base.removeprefix("http://"),
        "VLLM_DEPLOY_GRAFANA": stack.grafana_address,
        "VLLM_DEPLOY_JOBS": jobs,
        "VLLM_DEPLOY_CONTAINERS": "vllm-prometheus vllm-grafana",
        "VLLM_DEPLOY_TIMEOUT_SECONDS": "2",
        "VLLM_DEPLOY_POLL_SECONDS": "1",
    }
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    prometheus_bin, promtool_bin = _binary("prometheus"), _binary("promtool")
    work = Path(tempfile.mkdtemp(prefix="vllm-monitoring-test-"))
    started: list = []
    process = None
    try:
        overrides = work / "vllm-metrics.json"
        overrides.write_text(json.dumps(HEALTHY_VLLM))
        vllm = start_fake_vllm(api_key="sk-unused", metrics_overrides=overrides)
        started.append(vllm)
        start = time.monotonic()
        dcgm_values: dict = {}
        node_values: dict = {}
        dcgm = FakeExporter(lambda: dcgm_text(2, start=start, values=dcgm_values))
        node = FakeExporter(lambda: node_text(start=start, values=node_values))
        grafana = start_fake_grafana()
        started += [dcgm, node, grafana]

        listen = f"127.0.0.1:{free_port()}"
        rules = work / "rules.yml"
        rules.write_text(prometheus.rules_yaml(prometheus.alert_rules(WAITING_THRESHOLD)))
        targets = {"vllm": f"127.0.0.1:{vllm.port}", "dcgm": dcgm.address, "node": node.address, "prometheus": listen}
        config = work / "prometheus.yml"
        config.write_text(prometheus.config_yaml(targets, rules_path=str(rules), scrape_interval_s=SCRAPE_S))
        for kind, path in (("config", config), ("rules", rules)):
            checked = subprocess.run([promtool_bin, "check", kind, str(path)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout + checked.stderr
        argv = [prometheus_bin, *prometheus.command_args(
            retention_days=1, retention_size_gib=1, listen_address=listen,
            config_path=str(config), storage_path=str(work / "data"))]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("w"))
        stack = Stack(f"http://{listen}", process, vllm, overrides, dcgm, node, f"{grafana.address}/grafana")
        _wait_until(lambda: _ready(stack), 30, "Prometheus to be ready")

        panels, alerts = _all_exprs()
        seen = Observed()
        _wait_until(lambda: len(stack.query("up == 1")) == 4, 30, "every target up")
        time.sleep(SETTLE_S)
        seen.healthy = {e: stack.query(e) for e in [*panels, *alerts.values()]}
        seen.targets = stack.api("/api/v1/targets")["activeTargets"]

        bin_dir = work / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").write_text('#!/usr/bin/env bash\necho "stub log line of $*"\n')
        (bin_dir / "docker").chmod(0o755)
        seen.script_ok = _run_script(stack, bin_dir, " ".join(targets))
        seen.script_missing_job = _run_script(stack, bin_dir, "vllm no-such-job")

        stack.set_vllm(TROUBLED_VLLM)
        dcgm_values.update(TROUBLED_DCGM)
        node_values.update(TROUBLED_NODE)
        time.sleep(SETTLE_S)
        seen.troubled = {e: stack.query(e) for e in [*panels, *alerts.values()]}
        seen.rules = [r for g in stack.api("/api/v1/rules")["groups"] for r in g["rules"]]
        seen.alerts = stack.api("/api/v1/alerts")["alerts"]

        stack.set_vllm({**TROUBLED_VLLM, "status": 503})
        _wait_until(lambda: bool(stack.query('up{job="vllm"} == 0')), 15, "vLLM's scrape to fail")
        seen.vllm_down = {e: stack.query(e) for e in alerts.values()}
        yield seen
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for running in reversed(started):
            running.stop()
        shutil.rmtree(work, ignore_errors=True)


def _ready(stack: Stack) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.base}/-/ready", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        assert stack.prometheus.poll() is None, "Prometheus exited"
        return False


# --- tests -----------------------------------------------------------------------------------


def test_prometheus_scrapes_the_fake_vllm_and_both_exporters(observed):
    health = {t["labels"]["job"]: t["health"] for t in observed.targets}
    assert health == {"vllm": "up", "dcgm": "up", "node": "up", "prometheus": "up"}, observed.targets


def test_every_panel_query_returns_data(observed):
    panels, _ = _all_exprs()
    empty = [expr for expr in panels if not observed.troubled[expr]]
    assert empty == []


def test_every_panel_but_the_alert_list_returns_data_when_all_is_well(observed):
    panels, _ = _all_exprs()
    empty = [expr for expr in panels if not observed.healthy[expr]]
    assert empty == ["sum by (alertname, alertstate) (ALERTS)"]


def test_no_alert_expression_holds_when_all_is_well(observed):
    _, alerts = _all_exprs()
    holding = {name: observed.healthy[expr] for name, expr in alerts.items() if observed.healthy[expr]}
    assert holding == {}


def test_every_alert_expression_returns_data_when_its_problem_is_there(observed):
    _, alerts = _all_exprs()
    quiet = [name for name, expr in alerts.items()
             if name not in ("VllmDown", "MonitoringTargetDown") and not observed.troubled[expr]]
    assert quiet == []
    assert observed.vllm_down[alerts["VllmDown"]], "vLLM unscrapable: VllmDown's expression must hold"
    assert not observed.vllm_down[alerts["MonitoringTargetDown"]], "the exporters still answer"


def test_the_alert_values_are_the_troubles_values(observed):
    _, alerts = _all_exprs()
    xid = {r["metric"]["gpu"]: float(r["value"][1]) for r in observed.troubled[alerts["GpuXidError"]]}
    assert xid == {"0": 79.0, "1": 79.0}
    (kv,) = observed.troubled[alerts["VllmKvCacheNearlyFull"]]
    assert float(kv["value"][1]) == 0.95 and kv["metric"]["model_name"] == "fake-model"
    (disk,) = observed.troubled[alerts["HostDiskAlmostFull"]]
    assert disk["metric"]["mountpoint"] == "/" and abs(float(disk["value"][1]) - 0.95) < 1e-9


def test_prometheus_loaded_every_rule_and_holds_them_pending(observed):
    _, alerts = _all_exprs()
    assert {r["name"] for r in observed.rules} == set(alerts)
    assert all(r["health"] == "ok" for r in observed.rules), [r for r in observed.rules if r["health"] != "ok"]
    states = {a["labels"]["alertname"]: a["state"] for a in observed.alerts}
    assert states["VllmKvCacheNearlyFull"] == "pending", "held 5 minutes before it fires"
    assert states["GpuXidError"] == "firing", "an XID fires at once"
    assert {"VllmRequestsQueued", "GpuOverheating", "HostDiskAlmostFull", "GpuRowRemapFailure"} <= set(states)


def test_the_readiness_script_passes_when_every_job_is_up(observed):
    result = observed.script_ok
    assert result.returncode == 0, result.stderr
    assert "Grafana is up" in result.stderr


def test_the_readiness_script_names_the_job_it_cannot_see(observed):
    result = observed.script_missing_job
    assert result.returncode == 1
    assert "Prometheus cannot scrape job no-such-job" in result.stderr
    assert "stub log line of logs --tail 20 vllm-grafana" in result.stderr
