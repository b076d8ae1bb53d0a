"""Per-tenant usage for real: install_tenant_usage.sh on the simulated host writes its units,
then what they run runs here: the real mtail (its ExecStart, on a free loopback port) over a
usage log this test appends to as nginx would (JSON lines, one open file, reopened when told),
the real logrotate with the written configuration (its `docker exec ... nginx -s reopen` is a
stub that tells the writer to reopen), and a real Prometheus scraping mtail, asked every query
of the "Usage by tenant" dashboard. Needs mtail, logrotate, prometheus (apt-get install mtail
logrotate prometheus); every process is stopped at the end.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from serving.monitoring import prometheus, tenant_usage
from serving.monitoring.usage_dashboard import USAGE, usage_alert_rules
from tests.fakes import free_port
from tests.scripts.test_tenant_usage_script import usage_host
from tests.fakes.system_tools import binary

SCRAPE_S = 1
RATE_INTERVAL = "10s"  # what Grafana puts for $__rate_interval: four scrapes at least

# Requests as the proxy logs them (serving/templates/nginx.conf.j2's vllm_usage format): two
# tenants, an answer without usage (null), a stream the client cut ("-"), a 429,
# an unknown key (tenant "", nginx's 401), a line that is not the log's format.
ENTRIES = [
    {"tenant": "team-a", "status": 200, "request_bytes": 812, "response_bytes": 2048,
     "request_time": 1.25, "prompt_tokens": 120, "completion_tokens": 64},
    {"tenant": "team-a", "status": 200, "request_bytes": 640, "response_bytes": 9120,
     "request_time": 3.5, "prompt_tokens": 33, "completion_tokens": 410},
    {"tenant": "team-a", "status": 200, "request_bytes": 500, "response_bytes": 700,
     "request_time": 0.75, "prompt_tokens": None, "completion_tokens": None},
    {"tenant": "team-a", "status": 499, "request_bytes": 500, "response_bytes": 0,
     "request_time": 12.0, "prompt_tokens": "-", "completion_tokens": "-"},
    {"tenant": "team-a", "status": 429, "request_bytes": 500, "response_bytes": 310, "request_time": 0.0},
    {"tenant": "team-b.eu", "status": 200, "request_bytes": 1024, "response_bytes": 4096,
     "request_time": 2.0, "prompt_tokens": 2000, "completion_tokens": 15},
    {"tenant": "team-b.eu", "status": 500, "request_bytes": 300, "response_bytes": 250, "request_time": 0.125},
    {"tenant": "", "status": 401, "request_bytes": 200, "response_bytes": 180, "request_time": 0.0},
    {"tenant": "", "status": 401, "request_bytes": 200, "response_bytes": 180, "request_time": 0.0},
]
GARBAGE = "2026/12/07 16:40:42 [warn] not a usage line"


def _binary(name: str) -> str:
    return binary(name, "mtail logrotate prometheus", "live usage tests")


def line(entry: dict[str, Any]) -> str:
    """One usage log line as nginx's escape=json format writes it: numbers bare, strings quoted."""
    return json.dumps({"time": "2026-12-07T16:40:42+00:00", **entry}, separators=(",", ":"))


class NginxWriter:
    """Appends to the usage log through one open file, as nginx does, and reopens the path
    only when the stub `docker exec ... nginx -s reopen` asked (the flag file)."""

    def __init__(self, path: Path, reopen_flag: Path) -> None:
        self.path, self.flag = path, reopen_flag
        self.file = path.open("a")
        self.lock = threading.Lock()
        self.reopens = 0

    def write(self, text: str) -> None:
        with self.lock:
            if self.flag.exists():
                self.file.close()
                self.file = self.path.open("a")
                self.flag.unlink()
                self.reopens += 1
            self.file.write(text + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class Live:
    root: Path
    env: dict[str, str]
    metrics_url: str
    prometheus_url: str
    writer: NginxWriter
    rotate_argv: list[str]
    rotate_env: dict[str, str]
    docker_calls: Path

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:  # noqa: S310 - loopback
            text = response.read().decode()
        found = {}
        for row in text.splitlines():
            match = re.match(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$", row)
            if match and not row.startswith("#"):
                labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")))
                found[(match.group(1), labels)] = float(match.group(3))
        return found

    def value(self, name: str, **labels: str) -> float:
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)

    def lines_read(self) -> float:
        return sum(v for (name, _), v in self.samples().items() if name == "mtail_log_lines_total")

    def wait_for_lines(self, count: float, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while self.lines_read() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"mtail read {self.lines_read()} lines, not {count}")
            time.sleep(0.1)

    def rotate(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.rotate_argv, env=self.rotate_env, capture_output=True, text=True, timeout=60)

    def query(self, expr: str) -> list:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]


def _unit_line(path: Path, key: str) -> list[str]:
    (value,) = [ln.split("=", 1)[1] for ln in path.read_text().splitlines() if ln.startswith(f"{key}=")]
    return shlex.split(value)


def _stop(process: Optional[subprocess.Popen]) -> None:
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_http(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"{what} exited"
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}") from None
            time.sleep(0.2)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    mtail_bin, logrotate_bin = _binary("mtail"), _binary("logrotate")
    prometheus_bin = _binary("prometheus")
    root = Path(tempfile.mkdtemp(prefix="vllm-usage-test-"))
    mtail = prom = None
    writer: Optional[NginxWriter] = None
    try:
        host, env = usage_host(root)
        port = free_port()
        env["VLLM_DEPLOY_MTAIL_PORT"] = str(port)
        installed = host.run("install_tenant_usage.sh", **env)
        assert installed.returncode == 0, installed.stderr
        systemd = Path(env["VLLM_DEPLOY_SYSTEMD_DIR"])

        argv = _unit_line(systemd / tenant_usage.SYSTEMD_SERVICE, "ExecStart")
        assert argv[0] == "/usr/bin/mtail"
        mtail = subprocess.Popen([mtail_bin, *argv[1:]], stdout=subprocess.DEVNULL,
                                 stderr=(root / "mtail.log").open("w"))
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        _wait_http(metrics_url, mtail, "mtail")

        # The rotation service's command, forced (the size threshold is 100 MiB), with `docker`
        # a stub that records its arguments and asks the writer to reopen.
        bin_dir = root / "rotate-bin"
        bin_dir.mkdir()
        docker_calls, flag = root / "docker-calls", root / "reopen-requested"
        (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$*" >>{docker_calls}\ntouch {flag}\n')
        (bin_dir / "docker").chmod(0o755)
        rotate_argv = _unit_line(systemd / "vllm-deploy-usage-logrotate.service", "ExecStart")
        assert rotate_argv[0] == "/usr/sbin/logrotate"
        rotate_argv = [logrotate_bin, "--force", "--verbose", *rotate_argv[1:]]
        rotate_env = {"PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}

        log = Path(env["VLLM_DEPLOY_USAGE_LOG_DIR"]) / "usage.log"
        writer = NginxWriter(log, flag)

        listen = f"127.0.0.1:{free_port()}"
        rules = root / "rules.yml"
        rules.write_text(prometheus.rules_yaml(usage_alert_rules()))
        config = root / "prometheus.yml"
        config.write_text(prometheus.config_yaml(
            {tenant_usage.USAGE_JOB: f"127.0.0.1:{port}"}, rules_path=str(rules), scrape_interval_s=SCRAPE_S))
        prom = subprocess.Popen(
            [prometheus_bin, *prometheus.command_args(
                retention_days=1, retention_size_gib=1, listen_address=listen,
                config_path=str(config), storage_path=str(root / "data"))],
            stdout=subprocess.DEVNULL, stderr=(root / "prometheus.log").open("w"))
        _wait_http(f"http://{listen}/-/ready", prom, "Prometheus")
        yield Live(root, env, metrics_url, f"http://{listen}", writer, rotate_argv, rotate_env, docker_calls)
    finally:
        _stop(prom)
        _stop(mtail)
        if writer is not None:
            writer.close()
        shutil.rmtree(root, ignore_errors=True)


def _expected(entries: list[dict[str, Any]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the counters must have grown by, from the entries themselves."""
    out: dict = {}

    def add(name: str, amount: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        out[key] = out.get(key, 0.0) + amount

    for e in entries:
        status_class = f"{str(e['status'])[0]}xx"
        tenant = e["tenant"]
        if not tenant:
            add("vllm_deploy_unauthenticated_requests_total", 1, status_class=status_class)
            continue
        add("vllm_deploy_tenant_requests_total", 1, tenant=tenant, status_class=status_class)
        add("vllm_deploy_tenant_rate_limited_requests_total", e["status"] == 429, tenant=tenant)
        add("vllm_deploy_tenant_request_bytes_total", e["request_bytes"], tenant=tenant)
        add("vllm_deploy_tenant_response_bytes_total", e["response_bytes"], tenant=tenant)
        add("vllm_deploy_tenant_request_seconds_total", e["request_time"], tenant=tenant)
        for field in ("prompt_tokens", "completion_tokens"):
            if isinstance(e.get(field), int):
                add(f"vllm_deploy_tenant_{field}_total", e[field], tenant=tenant)
    return out


def _growth(before: dict, after: dict, keys) -> dict:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 6) for k in keys}


def test_mtail_counts_each_tenants_requests_tokens_bytes_and_seconds(live: Live):
    before, read = live.samples(), live.lines_read()
    for entry in ENTRIES:
        live.writer.write(line(entry))
    live.writer.write(GARBAGE)
    live.wait_for_lines(read + len(ENTRIES) + 1)
    after = live.samples()
    expected = _expected(ENTRIES)
    assert _growth(before, after, expected) == {k: round(v, 6) for k, v in expected.items()}
    # Spot checks in the field's terms: the stream without usage counts as a request only.
    assert after[("vllm_deploy_tenant_prompt_tokens_total", (("tenant", "team-a"),))] == 153
    assert after[("vllm_deploy_tenant_requests_total", (("status_class", "4xx"), ("tenant", "team-a")))] == 2
    assert after[("vllm_deploy_unauthenticated_requests_total", (("status_class", "4xx"),))] == 2
    assert after[("vllm_deploy_usage_log_unparsed_lines_total", ())] == 1
    # No tenant label for requests without a key: not "", not a name a tenant could have.
    tenants = {dict(labels).get("tenant") for (name, labels) in after if name.startswith("vllm_deploy_tenant_")}
    assert tenants == {"team-a", "team-b.eu"}


def test_rotation_under_load_loses_and_doubles_no_count(live: Live):
    key = ("vllm_deploy_tenant_requests_total", (("status_class", "2xx"), ("tenant", "team-a")))
    tokens = ("vllm_deploy_tenant_completion_tokens_total", (("tenant", "team-a"),))
    before, read = live.samples(), live.lines_read()
    written = 0
    stop = threading.Event()
    entry = ENTRIES[0]

    def load() -> None:
        nonlocal written
        while not stop.is_set():
            live.writer.write(line(entry))
            written += 1
            time.sleep(0.005)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(0.5)
        outputs = []
        for _ in range(2):  # the second rotation gzips the first one's file (delaycompress)
            rotated = live.rotate()
            outputs.append(rotated.stdout + rotated.stderr)
            assert rotated.returncode == 0, outputs[-1]
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert live.writer.reopens == 2, "\n".join(outputs)
    assert live.docker_calls.read_text().splitlines() == ["exec vllm-proxy nginx -s reopen"] * 2
    log_dir = Path(live.env["VLLM_DEPLOY_USAGE_LOG_DIR"])
    assert (log_dir / "usage.log.1").exists() and (log_dir / "usage.log.2.gz").exists()
    assert (log_dir / "usage.log").samefile(log_dir / "mtail-view" / "usage.log")

    live.wait_for_lines(read + written)
    time.sleep(1)  # nothing read twice shows up late
    after = live.samples()
    assert after[key] - before.get(key, 0.0) == written
    assert after[tokens] - before.get(tokens, 0.0) == written * entry["completion_tokens"]
    assert live.lines_read() == read + written


def test_prometheus_answers_every_usage_panel_per_tenant(live: Live):
    def answers() -> tuple[list, list]:
        empty, results = [], []
        for title, expr in USAGE.queries():
            result = live.query(expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", "1h"))
            (results if result else empty).append((expr, result) if result else (title, expr))
        return empty, results

    def totals() -> dict[str, float]:
        return {r["metric"]["tenant"]: float(r["value"][1])
                for r in live.query("sum by (tenant) (vllm_deploy_tenant_prompt_tokens_total)")}

    time.sleep(2 * SCRAPE_S)  # the counters as Prometheus has them before this test writes
    before = totals()
    # Traffic across a few scrapes (rates need two samples), until every panel answers.
    began, deadline, rounds = time.monotonic(), time.monotonic() + 20, 0
    while True:
        for entry in ENTRIES:
            live.writer.write(line(entry))
        rounds += 1
        time.sleep(0.25)
        if time.monotonic() - began >= 3 * SCRAPE_S:
            empty, results = answers()
            if not empty or time.monotonic() > deadline:
                break
    up = live.query(f'up{{job="{tenant_usage.USAGE_JOB}"}}')
    assert [float(r["value"][1]) for r in up] == [1.0]
    assert empty == []
    for expr, result in results:
        if "by (tenant" in expr:
            assert {r["metric"]["tenant"] for r in result} <= {"team-a", "team-b.eu"}, expr
    (tokens,) = [q.expr for q in USAGE.panels[0].queries if "prompt" in q.expr]
    per_tenant = {r["metric"]["tenant"]: float(r["value"][1])
                  for r in live.query(tokens.replace("$__rate_interval", RATE_INTERVAL))}
    assert set(per_tenant) == {"team-a", "team-b.eu"} and min(per_tenant.values()) > 0
    # What this test wrote, tenant by tenant, is what the counters the panel reads grew by (the
    # rate's window also holds the other tests' traffic on the same mtail, so it is not compared).
    time.sleep(2 * SCRAPE_S)
    after = totals()
    wrote = {}
    for entry in ENTRIES:
        if entry.get("tenant") and isinstance(entry.get("prompt_tokens"), int):
            wrote[entry["tenant"]] = wrote.get(entry["tenant"], 0) + entry["prompt_tokens"] * rounds
    for tenant, tokens_written in wrote.items():
        assert after.get(tenant, 0.0) - before.get(tenant, 0.0) == tokens_written, tenant
