"""The metric names each monitored program really serves, read from the data files beside this
module (metrics/*.txt, metrics/*.csv), each of which names its source.

Dashboards and alert rules may only name series listed here (tests/serving/test_monitoring.py),
so a panel cannot silently show nothing because a metric was renamed upstream (vLLM's
`gpu_cache_usage_perc` became `kv_cache_usage_perc`) or never existed.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from serving.monitoring.tenant_usage import PROGRAM_FILE, USAGE_METRICS

METRICS_DIR = Path(__file__).resolve().parent / "metrics"

VLLM_METRICS_FILE = METRICS_DIR / "vllm-0.33.0.txt"
DCGM_COUNTERS_FILE = METRICS_DIR / "dcgm-exporter-4.5.3-4.8.2.csv"
NODE_METRICS_FILE = METRICS_DIR / "node-exporter-1.12.1.txt"
PROMETHEUS_METRICS_FILE = METRICS_DIR / "prometheus-3.14.0.txt"

METRIC_TYPES = ("gauge", "counter", "histogram")


@dataclass(frozen=True)
class MetricFamily:
    """One metric family as its exporter serves it."""

    # As the exporter's source names the family. vLLM: without the `_total` that its /metrics
    # (prometheus_client) adds to a counter's samples and `# TYPE` line.
    name: str
    type: str  # gauge | counter | histogram
    exporter: str  # vllm | dcgm | node | prometheus | mtail
    source: str  # where the name was read

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names a scrape stores. prometheus_client (vLLM) suffixes counters with
        `_total`; the Go exporters name counters in full already (node) or not at all (DCGM)."""
        if self.type == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        if self.type == "counter" and self.exporter == "vllm":
            return (f"{self.name}_total",)
        return (self.name,)


def _rows(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            rows.append(text.split())
    return rows


def _table(path: Path, exporter: str) -> tuple[MetricFamily, ...]:
    families = []
    for row in _rows(path):
        name, kind, *source = row
        if kind not in METRIC_TYPES:
            raise ValueError(f"{path.name}: {name} has type {kind!r}, not one of {METRIC_TYPES}")
        families.append(MetricFamily(name, kind, exporter, f"{path.name}: {' '.join(source)}"))
    return tuple(families)


@functools.lru_cache(maxsize=None)
def vllm_families() -> tuple[MetricFamily, ...]:
    return _table(VLLM_METRICS_FILE, "vllm")


@functools.lru_cache(maxsize=None)
def node_families() -> tuple[MetricFamily, ...]:
    return _table(NODE_METRICS_FILE, "node")


@functools.lru_cache(maxsize=None)
def prometheus_families() -> tuple[MetricFamily, ...]:
    return _table(PROMETHEUS_METRICS_FILE, "prometheus")


@functools.lru_cache(maxsize=None)
def dcgm_families() -> tuple[MetricFamily, ...]:
    """The collectors file as dcgm-exporter reads it: `field, type, help` rows, `#` comments;
    `label` rows add a label to every metric instead of a metric of their own."""
    families = []
    lines = [ln for ln in DCGM_COUNTERS_FILE.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for row in csv.reader(lines, skipinitialspace=True):
        field, kind = row[0].strip(), row[1].strip()
        if kind == "label":
            continue
        if kind not in ("gauge", "counter"):
            raise ValueError(f"{DCGM_COUNTERS_FILE.name}: {field} has type {kind!r}")
        families.append(MetricFamily(field, kind, "dcgm", f"{DCGM_COUNTERS_FILE.name}: {row[2].strip()}"))
    return tuple(families)


@functools.lru_cache(maxsize=None)
def usage_families() -> tuple[MetricFamily, ...]:
    """The per-tenant counters of our own mtail program (serving.monitoring.tenant_usage):
    mtail exports each under its declared name, `_total` included."""
    return tuple(
        MetricFamily(m.name, "counter", "mtail", f"{PROGRAM_FILE.name}: counter {m.name}") for m in USAGE_METRICS
    )


def all_families() -> tuple[MetricFamily, ...]:
    return vllm_families() + dcgm_families() + node_families() + prometheus_families() + usage_families()


@functools.lru_cache(maxsize=None)
def exported_series() -> dict[str, MetricFamily]:
    """Every sample name a dashboard or rule may read -> the family that produces it."""
    return {series: family for family in all_families() for series in family.series}
