"""A real nginx, rendered from serving.nginx_conf, in front of the fake vLLM server.

Shared by tests/serving/test_nginx_live.py and bench/proxy_overhead.py so both measure the same
thing: `make_test_pki` (a throwaway CA and a server certificate for 127.0.0.1/localhost,
made with the openssl CLI), `start_fake_vllm`, `local_site` (an NginxSite whose ports and
paths suit an unprivileged or root test run) and `start_nginx` (checks the file with
`nginx -t`, then runs nginx in the foreground). Every start returns an object with
`stop()`; callers stop what they started.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from serving.nginx import NginxSite
from serving.nginx_conf import render
from serving.proxy_limits import ProxyLimits, derive_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# Debian installs nginx in /usr/sbin, which is not on an unprivileged user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class ProxyEnvError(RuntimeError):
    """The fake server, the certificates or nginx could not be set up."""


def nginx_binary() -> Optional[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    return shutil.which("nginx", path=search)


def require_proxy_tools() -> None:
    """Skips a live proxy test without nginx, curl or openssl; under CI (env CI) fails instead."""
    import pytest

    missing = [name for name, found in (("nginx", nginx_binary()), ("curl", shutil.which("curl")),
                                        ("openssl", openssl_binary())) if not found]
    if not missing:
        return
    reason = f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the live proxy tests: {reason}")
    pytest.skip(reason)


def installed_nginx_version() -> tuple[int, int, int]:
    """The local nginx's version (`nginx -v` says e.g. "nginx version: nginx/1.22.1")."""
    result = subprocess.run([_require_nginx(), "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    if not match:
        raise ProxyEnvError(f"cannot read the nginx version from: {result.stderr!r}")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def small_limits(max_streams_per_client: int = 64) -> ProxyLimits:
    """Limits of a 1-vCPU, 1 GiB host (1024 streams): small enough for an unprivileged
    nginx whose hard file limit is a few thousand, derived the production way."""
    return derive_limits(vcpus=1, memory_gib=1, default_per_client=max_streams_per_client)


def openssl_binary() -> Optional[str]:
    return shutil.which("openssl")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def make_prefix_dir() -> Path:
    """A fresh directory for nginx's files that its workers can enter even as `nobody`.

    pytest's tmp_path lives under a 0700 directory, which a root master's unprivileged
    workers could not traverse to serve the ACME webroot.
    """
    prefix = Path(tempfile.mkdtemp(prefix="vllm-proxy-test-"))
    prefix.chmod(0o755)
    return prefix


# --- certificates ---------------------------------------------------------------------
@dataclass(frozen=True)
class TestPki:
    __test__ = False  # not a pytest test class despite the name

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_pki(directory: Path) -> TestPki:
    """A one-day CA and a server certificate it signed for localhost and 127.0.0.1."""
    openssl = openssl_binary()
    if openssl is None:
        raise ProxyEnvError("openssl CLI not found; install it (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    # Python 3.13 verifies with X509_STRICT: it wants key identifiers and key usage.
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run_openssl(
        [openssl, "req", "-x509", *ec_key, "-keyout", str(ca_key), "-out", str(ca_cert),
         "-days", "1", "-subj", "/CN=vllm-deploy test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"]
    )
    _run_openssl(
        [openssl, "req", "-new", *ec_key, "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=localhost"]
    )
    _run_openssl(
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "1", "-sha256", "-extfile", str(extensions),
         "-out", str(cert)]
    )
    return TestPki(ca_cert=ca_cert, server_cert=cert, server_key=key)


def _run_openssl(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProxyEnvError(f"{' '.join(argv[:3])} failed:\n{result.stderr}")


# --- the fake vLLM server ---------------------------------------------------------------
@dataclass
class FakeVllmProcess:
    process: subprocess.Popen
    port: int
    model: str
    host: str = LOOPBACK

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        _terminate(self.process)


def start_fake_vllm(
    *,
    api_key: str,
    chunks: int = 16,
    chunk_delay_ms: float = 20.0,
    model: Optional[str] = None,
    metrics_overrides: Optional[Path] = None,
    chat_template: bool = True,
    fail_generation: Optional[int] = None,
    timeout_s: float = 10.0,
    host: str = LOOPBACK,
    shutdown_timeout_s: float = 0,
    tool_calls: str = "off",
    lora_modules: Sequence[str] = (),
    fail_lora_generation: Optional[int] = None,
) -> FakeVllmProcess:
    """Starts `python -m tests.fakes.fake_vllm` on a free loopback port; the key goes by env.
    `metrics_overrides`: a JSON file the fake reads at each /metrics request (fake_vllm.py);
    `chat_template=False`: a model without one; `fail_generation`: every generation answers
    that HTTP status; `shutdown_timeout_s` > 0: SIGTERM drains as vLLM 0.33 does (fake_vllm.py);
    `host`: another loopback address (several replicas side by side); `tool_calls`: how a
    request with tools and tool_choice "auto" is answered (fake_vllm.TOOL_CALL_MODES)."""
    # Imported here, not at the top: `-m tests.fakes.fake_vllm` imports this package first.
    from tests.fakes import fake_vllm

    model = model or fake_vllm.DEFAULT_MODEL
    argv = [
        sys.executable, "-m", "tests.fakes.fake_vllm", "--host", host, "--port", "0",
        "--model", model, "--chunks", str(chunks), "--chunk-delay-ms", str(chunk_delay_ms),
    ]
    if metrics_overrides is not None:
        argv += ["--metrics-overrides", str(metrics_overrides)]
    if not chat_template:
        argv.append("--no-chat-template")
    if fail_generation is not None:
        argv += ["--fail-generation", str(fail_generation)]
    if shutdown_timeout_s:
        argv += ["--shutdown-timeout", str(shutdown_timeout_s)]
    if tool_calls != "off":
        argv += ["--tool-calls", tool_calls]
    if lora_modules:  # `lora_modules`: name=path items; `fail_lora_generation`: their status
        argv += ["--lora-modules", *lora_modules]
    if fail_lora_generation is not None:
        argv += ["--fail-lora-generation", str(fail_lora_generation)]
    env = {**os.environ, fake_vllm.API_KEY_ENV: api_key, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("fake-vllm listening on "):
        _terminate(process)
        raise ProxyEnvError(f"fake vLLM did not start within {timeout_s}s (said {line!r})")
    port = int(line.rsplit(":", 1)[1])
    return FakeVllmProcess(process=process, port=port, model=model, host=host)


@dataclass
class StreamServerProcess:
    """tests/fakes/streams.py's asyncio server in its own process."""

    process: subprocess.Popen
    port: int
    host: str = LOOPBACK

    def stats(self, reset: bool = False) -> dict[str, int]:
        """Streams running, finished, and the most at once (since the last reset)."""
        import json
        import urllib.request

        path = "/stats/reset" if reset else "/stats"
        with urllib.request.urlopen(f"http://{self.host}:{self.port}{path}", timeout=10) as answer:  # noqa: S310
            return json.load(answer)

    def stop(self) -> None:
        _terminate(self.process)


def start_stream_server(timeout_s: float = 10.0) -> StreamServerProcess:
    """Starts `python -m tests.fakes.streams` on a free loopback port."""
    from tests.fakes.streams import READY_LINE

    argv = [sys.executable, "-m", "tests.fakes.streams", "--host", LOOPBACK, "--port", "0"]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if not line.startswith(READY_LINE):
        _terminate(process)
        raise ProxyEnvError(f"stream server did not start within {timeout_s}s (said {line!r})")
    return StreamServerProcess(process=process, port=int(line.rsplit(":", 1)[1]))


# --- nginx ------------------------------------------------------------------------------
def local_site(*, prefix: Path, upstream_port: int, pki: TestPki, **fields: Any) -> NginxSite:
    """An NginxSite on free loopback ports with every file under `prefix`.

    As root (CI) the master drops its workers to `nobody`, like the production image
    drops them to `nginx`; unprivileged, there is no `user` directive at all.
    """
    values: dict[str, Any] = {
        "upstream_port": upstream_port,
        "listen_address": LOOPBACK,
        "https_port": free_port(),
        "http_port": free_port(),
        "server_name": "localhost",
        "tls_certificate_path": str(pki.server_cert),
        "tls_key_path": str(pki.server_key),
        "pid_path": str(prefix / "nginx.pid"),
        "temp_dir": str(prefix / "tmp"),
        "access_log_path": str(prefix / "access.log"),
        "error_log_path": str(prefix / "error.log"),
        "canonical_host": LOOPBACK,
        "nginx_version": installed_nginx_version(),
        "limits": small_limits(),
        **_worker_identity(),
    }
    values.update(fields)
    return NginxSite.model_validate(values)


def _worker_identity() -> dict[str, Optional[str]]:
    if os.geteuid() != 0:
        return {"worker_user": None, "worker_group": None}
    nobody = pwd.getpwnam("nobody")
    return {"worker_user": "nobody", "worker_group": grp.getgrgid(nobody.pw_gid).gr_name}


@dataclass
class RunningNginx:
    process: subprocess.Popen
    site: NginxSite
    conf_path: Path

    @property
    def https_url(self) -> str:
        return f"https://{self.site.listen_address}:{self.site.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.site.listen_address}:{self.site.http_port}"

    def access_log(self) -> str:
        path = Path(self.site.access_log_path)
        return path.read_text() if path.exists() else ""

    def error_log(self) -> str:
        path = Path(self.site.error_log_path)
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        _terminate(self.process)


def check_config(conf_path: Path, prefix: Path, error_log: str) -> subprocess.CompletedProcess:
    """`nginx -t` on the file; returncode 0 means nginx accepts it."""
    return subprocess.run(
        [_require_nginx(), "-t", "-q", "-e", error_log, "-p", str(prefix), "-c", str(conf_path)],
        capture_output=True,
        text=True,
        check=False,
    )


def start_nginx(
    site: NginxSite,
    prefix: Path,
    timeout_s: float = 10.0,
    *,
    nofile: Optional[tuple[int, int]] = None,
    conf_text: Optional[str] = None,
) -> RunningNginx:
    """Renders `site` into prefix/nginx.conf, checks it with `nginx -t`, runs it in the
    foreground and waits until both ports accept connections.

    `nofile` = (soft, hard) starts nginx under that file limit, as a container would (e.g.
    Docker's common 1024 soft limit); `conf_text` runs that text instead of the rendering.
    """
    conf_path = prefix / f"nginx-{site.https_port}.conf"
    conf_path.write_text(conf_text if conf_text is not None else render(site))
    Path(site.temp_dir).mkdir(parents=True, exist_ok=True)
    checked = check_config(conf_path, prefix, site.error_log_path)
    if checked.returncode != 0:
        raise ProxyEnvError(f"nginx -t rejected {conf_path}:\n{checked.stderr}")
    # -e: the compiled-in error log (/var/log/nginx) is not writable when unprivileged.
    argv = [
        _require_nginx(), "-e", site.error_log_path, "-p", str(prefix), "-c", str(conf_path),
        "-g", "daemon off;",
    ]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, preexec_fn=(lambda: _set_nofile(nofile)) if nofile else None
    )
    running = RunningNginx(process=process, site=site, conf_path=conf_path)
    deadline = time.monotonic() + timeout_s
    while not all(_accepts(site.listen_address, p) for p in (site.https_port, site.http_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise ProxyEnvError(f"nginx did not start:\n{running.error_log()[-2000:]}")
        time.sleep(0.02)
    return running


def _set_nofile(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)  # a hard limit above the current: root only


def worker_pids(master_pid: int, expected: int = 1, timeout_s: float = 5.0) -> list[int]:
    """nginx worker processes of a master (its children), once `expected` of them run."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


def file_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) "Max open files" of a running process, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise ProxyEnvError(f"no file limit for process {pid}")


def _require_nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        raise ProxyEnvError("nginx not found; install it (apt-get install nginx)")
    return binary


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _terminate(process: subprocess.Popen, timeout_s: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM: nginx's fast shutdown, the fake's default exit
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def proxy_workspace() -> Iterator[tuple[ExitStack, Path, str, "TestPki"]]:
    """What a live proxy test module starts from: nginx and openssl checked, a prefix directory
    (removed at the end), a fresh API key and a test PKI. The ExitStack takes the module's own
    cleanups (fake servers, nginx), which run before the directory goes."""
    require_proxy_tools()
    prefix = make_prefix_dir()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, prefix, ignore_errors=True)
        yield stack, prefix, "sk-test-" + secrets.token_hex(16), make_test_pki(prefix / "pki")
