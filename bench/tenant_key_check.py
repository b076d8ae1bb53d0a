"""What nginx's tenant key check costs per request (issue 29): the same nginx build, the same
fake vLLM, the same request, once in plain mode (no apiKeys: vLLM checks the key, nginx passes
it on) and once in tenant mode (apiKeys: njs hashes the bearer key with SHA-256, a map names
the tenant, the tenant's limit_req/limit_conn zones count it, the njs body filter reads the
`usage`, a second access log line goes to the usage log).

Three nginx processes with one worker each, side by side. A client sends `--requests` plain chat
completions per round (`--rounds`) to each, one kept-alive TLS connection per nginx, a plain
and a tenant request in turn so the shared machine's noise falls on both alike; then as many
with an unknown key. Per mode it prints:

  wall p50 / p95   client-side time per request (us): TLS, nginx, the fake and back
  nginx cpu/req    user+system CPU time the nginx worker spent per request (us), from
                   /proc/<worker>/schedstat: the proxy's own cost, without the fake's or the client's
  key check only   the tenant-mode file with the usage body filter and usage log taken out:
                   what the check itself (hash, map, tenant zones) costs
  nginx 401 cpu    tenant mode only: CPU per request refused with an unknown key (us): the check
                   and nginx's own JSON answer, nothing proxied

and the tenant/plain ratios. It names the machine it ran on (CPU model, cores, nginx and njs
versions); client, fake and nginx share its CPUs, so read the ratios and the CPU figures.

    python bench/tenant_key_check.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make config/ and tests/ importable
    sys.path.insert(0, str(REPO_ROOT))

from serving.nginx_conf import render  # noqa: E402
from serving.tenants import TenantLimits  # noqa: E402
from tests.fakes import (  # noqa: E402
    free_port, installed_nginx_version, local_site, make_prefix_dir, make_test_pki, start_fake_vllm, start_nginx, worker_pids,
)
from tests.fakes.tenant_proxy import installed_njs_module, start_tenant_nginx, write_tenant_files  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """CPU time a process has run, in seconds: /proc/<pid>/schedstat's first field (ns, the
    scheduler's own count), else utime+stime from /proc/<pid>/stat (clock ticks, coarse)."""
    schedstat = Path(f"/proc/{pid}/schedstat")
    if schedstat.exists():
        return int(schedstat.read_text().split()[0]) / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    njs = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-http-js"],
                         capture_output=True, text=True, check=False).stdout or "unknown"
    nginx = ".".join(map(str, installed_nginx_version()))
    return (f"{model}, {os.cpu_count()} CPUs visible, {platform.system()} {platform.release()}; "
            f"nginx {nginx}, libnginx-mod-http-js {njs}; Python {platform.python_version()}")


class _Client:
    """One kept-alive TLS connection to one nginx, with its worker's pid."""

    def __init__(self, port: int, tls: ssl.SSLContext, key: str, worker: int, expect: int) -> None:
        self.connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=60)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.worker, self.expect = worker, expect
        self.walls: list[float] = []
        self.cpu_s = 0.0
        self.requests = 0

    def once(self, body: bytes) -> float:
        began = time.perf_counter()
        self.connection.request("POST", "/v1/chat/completions", body, self.headers)
        answer = self.connection.getresponse()
        answer.read()
        if answer.status != self.expect:
            raise SystemExit(f"expected {self.expect}, got {answer.status}")
        return time.perf_counter() - began


def _round(clients: list[_Client], requests: int) -> None:
    """`requests` per client, interleaved one by one so the machine's noise hits all alike;
    each worker's CPU time over the round is charged to its client's requests."""
    body = json.dumps({"model": "fake-model", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    for client in clients:
        for _ in range(20):  # warm: TLS handshake, upstream keep-alive
            client.once(body)
    before = {id(c): _cpu_s(c.worker) for c in clients}
    for _ in range(requests):
        for client in clients:
            client.walls.append(client.once(body))
    for client in clients:
        client.cpu_s += _cpu_s(client.worker) - before[id(client)]
        client.requests += requests


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode (medians)")
    args = parser.parse_args(argv)
    njs = installed_njs_module()
    if njs is None:
        raise SystemExit("needs nginx's njs module: apt-get install libnginx-mod-http-js")

    stack_key, tenant_key = "sk-stack-" + secrets.token_hex(16), "sk-tenant-" + secrets.token_hex(16)
    prefix = make_prefix_dir()
    started: list = []
    try:
        pki = make_test_pki(prefix / "pki")
        fake = start_fake_vllm(api_key=stack_key, chunks=1, chunk_delay_ms=0)
        started.append(fake)
        (prefix / "plain").mkdir(mode=0o755)
        plain_site = local_site(prefix=prefix / "plain", upstream_port=fake.port, pki=pki)
        plain = start_nginx(plain_site, prefix / "plain")
        started.append(plain)
        tenants_dir = prefix / "tenants"
        # Two tenants; the one used has limits far above what the bench sends.
        write_tenant_files(tenants_dir, (TenantLimits("bench", 600000, 64), TenantLimits("other", 60, 4)),
                           {"bench": [tenant_key], "other": ["sk-other-" + secrets.token_hex(16)]}, stack_key)
        tenant_site = local_site(prefix=prefix / "tenant", upstream_port=fake.port, pki=pki,
                                 tenants_dir=str(tenants_dir), njs_module_path=njs,
                                 usage_log_path=str(prefix / "tenant" / "usage.log"))
        tenant = start_tenant_nginx(tenant_site, prefix / "tenant")
        started.append(tenant)
        # The key check alone: the same tenant-mode file without the usage body filter and log.
        check_site = tenant_site.model_copy(update={
            "https_port": free_port(), "http_port": free_port(), "pid_path": str(prefix / "check" / "nginx.pid"),
            "access_log_path": str(prefix / "check" / "access.log"),
            "error_log_path": str(prefix / "check" / "error.log"), "temp_dir": str(prefix / "check" / "tmp")})
        check_text = render(check_site)
        for line in ("js_body_filter tenants.usage_filter;", f"access_log {check_site.usage_log_path} vllm_usage if=$tenant;"):
            assert line in check_text, line
            check_text = check_text.replace(line, "")
        (prefix / "check").mkdir(mode=0o755)
        check = start_nginx(check_site, prefix / "check", conf_text=check_text)
        started.append(check)
        tls = ssl.create_default_context(cafile=str(pki.ca_cert))
        workers = {name: worker_pids(n.process.pid)[0] for name, n in (("plain", plain), ("tenant", tenant),
                                                                        ("check", check))}

        plain_client = _Client(plain_site.https_port, tls, stack_key, workers["plain"], 200)
        tenant_client = _Client(tenant_site.https_port, tls, tenant_key, workers["tenant"], 200)
        check_client = _Client(check_site.https_port, tls, tenant_key, workers["check"], 200)
        for _ in range(args.rounds):
            _round([plain_client, check_client, tenant_client], args.requests)
        refused = _Client(tenant_site.https_port, tls, "sk-wrong-" + "x" * 32, workers["tenant"], 401)
        _round([refused], args.requests)

        print(f"machine: {_machine()}")
        print(f"{args.requests} non-streamed chat completions per mode and round, {args.rounds} rounds, plain "
              f"and tenant requests interleaved one by one, each mode on one TLS keep-alive connection to its "
              f"own nginx (one worker)\n")
        print(f"{'mode':<34}{'wall p50 us':>12}{'wall p95 us':>12}{'nginx cpu/req us':>18}")
        rows = {"plain (vLLM checks the key)": plain_client, "tenant: key check only": check_client,
                "tenant (nginx checks the key)": tenant_client,
                "tenant, unknown key -> nginx 401": refused}
        figures = {}
        for label, client in rows.items():
            p50, p95 = statistics.median(client.walls) * 1e6, statistics.quantiles(client.walls, n=20)[18] * 1e6
            figures[label] = (p50, p95, client.cpu_s / client.requests * 1e6)
            print(f"{label:<34}{p50:>12.0f}{p95:>12.0f}{figures[label][2]:>18.1f}")
        plain_fig, tenant_fig = figures["plain (vLLM checks the key)"], figures["tenant (nginx checks the key)"]
        check_fig = figures["tenant: key check only"]
        print(f"\nkey check only/plain: wall p50 x{check_fig[0] / plain_fig[0]:.3f}, nginx CPU per request "
              f"x{check_fig[2] / plain_fig[2]:.3f} (+{check_fig[2] - plain_fig[2]:.1f} us: key hash, tenant map, zones)")
        print(f"tenant/plain: wall p50 x{tenant_fig[0] / plain_fig[0]:.3f}, "
              f"nginx CPU per request x{tenant_fig[2] / plain_fig[2]:.3f} "
              f"(+{tenant_fig[2] - plain_fig[2]:.1f} us: key hash, tenant map and zones, usage filter, usage log)")
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
