"""A replica's nginx config (serving.replica.fleet_site, the single host's site plus the fleet
options) in a real nginx, in front of the fake vLLM that drains on SIGTERM as vLLM 0.33 does;
drain.sh runs for real (stub aws/IMDS; its stub `docker stop -t` SIGTERMs the fake).

- drain: streams in flight all complete; /health and new API calls get the JSON 503 at once;
  the termination hook is completed once, after the streams, within the bound;
- a stand-in load balancer (a second nginx: passive health removal with max_fails and
  proxy_next_upstream, keep-alive to the replicas below theirs, X-Forwarded-For appended as an
  ALB does) over two replicas on 127.0.0.20 and 127.0.0.21: rolling one (drain, then stop) drops
  none of 300 streams;
- per-client limits behind it: clients on 127.0.0.2 and 127.0.0.3 get separate buckets (and
  with the single host's config they would share the balancer's).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from serving.nginx import NginxSite
from serving.replica import fleet_site, keepalive_timeouts, replica_files
from tests.fakes import (
    FakeVllmProcess, RunningNginx, _worker_identity, free_port, local_site, proxy_workspace,
    start_fake_vllm, start_nginx,
)
from tests.fakes.clients import tls_context
from tests.scripts.replica_host import PARAMETER, ReplicaHost, settings_for, single_host, without_shutdown_timeout

BALANCER_SOURCE = "127.0.0.10"  # the "ALB subnet": the only address whose X-Forwarded-For counts
SHUTDOWN_TIMEOUT_S = 10


@dataclass
class Replica:
    fake: FakeVllmProcess
    nginx: RunningNginx
    host: ReplicaHost  # drain.sh and its stubs
    run_dir: Path

    def drain(self) -> subprocess.CompletedProcess:
        argv, env = self.host.command("drain.sh", VLLM_DEPLOY_RUN_DIR=str(self.run_dir))
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    def running(self) -> int:
        with urllib.request.urlopen(f"{self.fake.base_url}/metrics", timeout=5) as answer:  # noqa: S310
            for line in answer.read().decode().splitlines():
                if line.startswith("vllm:num_requests_running"):
                    return int(float(line.split()[-1]))
        return 0


def start_replica(stack, prefix: Path, api_key: str, pki, name: str, address: str = "127.0.0.1",
                  fleet: bool = True, **site_fields) -> Replica:
    """One replica: fake vLLM + nginx with the fleet config on `address`, and its drain.sh."""
    config, argv, prod_site = single_host()
    settings = settings_for(config, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, alb_subnet_cidrs=(f"{BALANCER_SOURCE}/32",))
    fake = start_fake_vllm(api_key=api_key, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S)
    stack.callback(fake.stop)
    run_dir = prefix / name / "run"
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o755)
    (prefix / name).chmod(0o755)
    site = local_site(prefix=prefix, upstream_port=fake.port, pki=pki, listen_address=address,
                      access_log_path=str(prefix / f"{name}-access.log"), **site_fields)
    if fleet:
        site = fleet_site(site, settings, drain_flag_path=str(run_dir / "draining"))
    nginx = start_nginx(site, prefix)
    stack.callback(nginx.stop)
    host_root = prefix / name / "host"
    host_root.mkdir()
    host = ReplicaHost(host_root, replica_files(vllm_argv=without_shutdown_timeout(argv), nginx_site=prod_site,
                                                settings=settings))
    host.set_parameter(PARAMETER, api_key)
    host.add_container("vllm", pid=fake.process.pid)
    host.pending("vllm-terminate")
    return Replica(fake, nginx, host, run_dir)


def balancer(prefix: Path, replicas: list[Replica], stack) -> int:
    """The stand-in ALB: HTTP in, HTTPS to each replica's nginx (certificate not verified, as an
    ALB does not), idle keep-alive to the replicas shorter than theirs (P1), X-Forwarded-For
    appended, a replica that answers 503 or fails retried on the other and taken out (passive
    health check). Returns its port."""
    alb_idle, replica_keepalive = keepalive_timeouts(replicas[0].nginx.site.upstream_read_timeout_s)
    assert replicas[0].nginx.site.client_keepalive_timeout_s in (replica_keepalive, 75)
    port = free_port()
    user = _worker_identity()
    servers = "\n".join(f"        server {r.nginx.site.listen_address}:{r.nginx.site.https_port} max_fails=1 fail_timeout=60s;"
                        for r in replicas)
    temp = prefix / "lb-temp"
    temp.mkdir(exist_ok=True)
    conf = f"""
{f"user {user['worker_user']} {user['worker_group']};" if user['worker_user'] else ""}
worker_processes 1;
pid {prefix}/lb.pid;
error_log {prefix}/lb-error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log {prefix}/lb-access.log;
    client_body_temp_path {temp}/client; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fcgi;
    uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    upstream replicas {{
{servers}
        keepalive 32;
        keepalive_timeout {alb_idle}s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass https://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_bind {BALANCER_SOURCE};
            proxy_ssl_verify off;
            proxy_buffering off;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""
    path = prefix / "lb.conf"
    path.write_text(conf)
    from tests.fakes import _require_nginx
    process = subprocess.Popen([_require_nginx(), "-e", f"{prefix}/lb-error.log", "-p", str(prefix), "-c", str(path),
                                "-g", "daemon off;"], stdin=subprocess.DEVNULL)
    stack.callback(lambda: (process.terminate(), process.wait(timeout=10)))
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=1):
                pass
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, (prefix / "lb-error.log").read_text()
            time.sleep(0.05)
    return port


def chat(conn: http.client.HTTPConnection, api_key: str, *, tokens: int = 8, delay_ms: int = 20,
         stream: bool = True, headers: Optional[dict] = None) -> tuple[int, dict, str]:
    body = {"model": "fake-model", "stream": stream, "max_tokens": tokens, "fake_chunk_delay_ms": delay_ms,
            "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()


def stream_completed(status: int, body: str) -> bool:
    return status == 200 and body.rstrip().endswith("data: [DONE]") and '"finish_reason": "stop"' in body


def assert_drain_503(status: int, headers: dict, body: str) -> None:
    assert status == 503, body
    assert headers.get("retry-after") == "1" and headers.get("content-type", "").startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == "ServiceUnavailableError" and "shutting down" in error["message"]


# --- drain ---------------------------------------------------------------------------------------
def test_drain_finishes_every_stream_and_refuses_new_work_at_once():
    with proxy_workspace() as (stack, prefix, api_key, pki):
        replica = start_replica(stack, prefix, api_key, pki, "solo")
        site = replica.nginx.site
        context = tls_context(pki.ca_cert)

        def one_stream() -> tuple[int, str, float]:
            conn = http.client.HTTPSConnection(site.listen_address, site.https_port, context=context, timeout=30)
            try:
                status, _, body = chat(conn, api_key, tokens=40, delay_ms=50)  # about 2 s
                return status, body, time.time()
            finally:
                conn.close()

        with ThreadPoolExecutor(20) as pool:
            streams = [pool.submit(one_stream) for _ in range(20)]
            deadline = time.monotonic() + 10
            while replica.running() < 20:
                assert time.monotonic() < deadline, "the streams never all started"
                time.sleep(0.02)
            started = time.monotonic()
            drain = ThreadPoolExecutor(1).submit(replica.drain)
            while not (replica.run_dir / "draining").exists():
                assert not drain.done(), "drain.sh ended without turning drain mode on"
                assert time.monotonic() - started < 10, "drain.sh never turned drain mode on"
                time.sleep(0.01)
            conn = http.client.HTTPSConnection(site.listen_address, site.https_port, context=context, timeout=5)
            conn.request("GET", "/health")
            response = conn.getresponse()
            assert_drain_503(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode())
            assert_drain_503(*chat(conn, api_key))  # never vLLM's 200 with finish_reason "abort"
            assert replica.running() == 20, "refused at once, while every stream still runs"
            done = drain.result(timeout=60)
            elapsed = time.monotonic() - started
            results = [s.result(timeout=30) for s in streams]
        assert done.returncode == 0, done.stderr
        assert all(stream_completed(status, body) for status, body, _ in results), [b[-300:] for _, b, _ in results]
        (completion,) = replica.host.completions()
        assert completion[:2] == ("vllm-terminate", "CONTINUE")
        assert completion[2] >= max(end for _, _, end in results), "the hook completed after the last stream"
        assert (replica.host.state / "containers" / "vllm.stopped").read_text() == "exited\n", "never SIGKILLed"
        assert elapsed < SHUTDOWN_TIMEOUT_S, f"drained in {elapsed:.1f}s, within vLLM's shutdown timeout"
        assert replica.fake.process.wait(timeout=5) is not None, "vLLM exited after its drain"


# --- the stand-in load balancer -------------------------------------------------------------------
def test_rolling_one_replica_behind_the_balancer_drops_no_stream():
    total, workers = 300, 16
    with proxy_workspace() as (stack, prefix, api_key, pki):
        a = start_replica(stack, prefix, api_key, pki, "a", address="127.0.0.20")
        b = start_replica(stack, prefix, api_key, pki, "b", address="127.0.0.21")
        port = balancer(prefix, [a, b], stack)
        issued, lock, failures, finished = [0], threading.Lock(), [], []

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while True:
                with lock:
                    if issued[0] >= total:
                        return
                    issued[0] += 1
                try:
                    status, _, body = chat(conn, api_key, tokens=10, delay_ms=30)
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    continue
                (finished if stream_completed(status, body) else failures).append(f"{status} {body[-200:]}")

        with ThreadPoolExecutor(workers) as pool:
            for _ in range(workers):
                pool.submit(worker)
            while len(finished) < total // 4:
                time.sleep(0.02)
            in_flight_on_a = a.running()
            drained = a.drain()
            a.nginx.stop()  # then the instance goes
            served_by_a_after = len(finished)
        assert drained.returncode == 0, drained.stderr
        assert failures == [], f"{len(failures)} of {total} failed: {failures[:5]}"
        assert len(finished) == total
        assert in_flight_on_a > 0, "the roll happened under load"
        assert served_by_a_after < total, "streams still ran after the roll"
        a_log = [json.loads(line) for line in Path(a.nginx.site.access_log_path).read_text().splitlines()]
        assert any(e["status"] == 503 and e["ended_by"] == "proxy" for e in a_log), \
            "the balancer sent to the draining replica, got the drain 503 and retried elsewhere"


# --- per-client limits behind it ------------------------------------------------------------------
def _from(port: int, source: str, api_key: str, path: str = "/v1/chat/completions",
          headers: Optional[dict] = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        if path == "/v1/chat/completions":
            return chat(conn, api_key, stream=False, headers=headers)[0]
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("fleet", [True, False], ids=["replica-config", "single-host-config"])
def test_two_clients_behind_the_balancer_get_separate_buckets(fleet):
    with proxy_workspace() as (stack, prefix, api_key, pki):
        replica = start_replica(stack, prefix, api_key, pki, "r", address="127.0.0.20", fleet=fleet,
                                rate_limit_per_minute=1, rate_limit_burst=0,
                                metrics_allowed_cidrs=["127.0.0.2/32"])
        port = balancer(prefix, [replica], stack)
        first = [_from(port, "127.0.0.2", api_key), _from(port, "127.0.0.3", api_key)]
        if not fleet:
            # The single host trusts no header: every client is the balancer, one bucket for all.
            assert first == [200, 429]
            return
        assert first == [200, 200], "separate buckets"
        assert _from(port, "127.0.0.2", api_key) == 429, "each client's own limit still holds"
        # A client cannot borrow another's bucket by writing X-Forwarded-For: the balancer appends
        # the address it saw, and nginx takes the right-most one it does not trust.
        assert _from(port, "127.0.0.4", api_key, headers={"X-Forwarded-For": "127.0.0.3"}) == 200
        assert _from(port, "127.0.0.3", api_key, headers={"X-Forwarded-For": "203.0.113.9"}) == 429
        assert _from(port, "127.0.0.2", api_key, path="/metrics") == 200
        assert _from(port, "127.0.0.3", api_key, path="/metrics") == 403
        log = [json.loads(line) for line in Path(replica.nginx.site.access_log_path).read_text().splitlines()]
        assert [e["client"] for e in log if e["path"] != "/nothing"] == [
            "127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.4", "127.0.0.3", "127.0.0.2", "127.0.0.3"]
