"""components/scripts/proxy_tenants.sh under bash, against a REAL nginx in tenant mode.

Only `docker` is a stub (tests/scripts/tenant_stubs/docker): `docker exec <c> nginx ...` runs
the real nginx that serves the tenants directory the script writes, so `nginx -t` judges the
files and `nginx -s reload` loads them; the test then calls the proxy with the keys.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import openai
import pytest

from serving import tenants
from serving.tenants import TenantLimits
from tests.fakes import (
    RunningNginx, TestPki, make_prefix_dir, make_test_pki, nginx_binary, require_proxy_tools, start_fake_vllm,
)
from tests.fakes.tenant_proxy import require_njs, start_tenant_nginx, tenant_site

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "components" / "scripts" / "proxy_tenants.sh"
STUBS = Path(__file__).resolve().parent / "tenant_stubs"
HOST_STUBS = ROOT / "tests" / "host_stubs"
REAL_TOOLS = ("bash", "base64", "tar", "mktemp", "find", "sort", "cmp", "cp", "mv", "rm", "chmod", "mkdir",
              "dirname", "basename", "sed", "cat")
STACK_KEY = "stack-" + secrets.token_hex(20)
LIMITS = (TenantLimits("team-a", None, 4), TenantLimits("team-b", None, 4))
CONTAINER = "vllm-proxy"


def _bundle(keys: dict[str, str], upstream: str = STACK_KEY, **extra: str) -> str:
    files = tenants.tenant_files(LIMITS, {n: [tenants.key_hash(k)] for n, k in keys.items()}, upstream)
    return tenants.tenant_bundle({**files, **extra})


@dataclass
class Host:
    root: Path
    state: Path
    tenants_dir: Path
    env: dict
    pki: TestPki
    nginx: RunningNginx

    def run(self, bundle: str) -> subprocess.CompletedProcess:
        (self.state / "calls.log").write_text("")
        return subprocess.run(["bash", str(SCRIPT)], env={**self.env, "VLLM_DEPLOY_TENANT_FILES": bundle},
                              capture_output=True, text=True, timeout=60, cwd=self.root)

    def calls(self) -> str:
        return (self.state / "calls.log").read_text()

    def settled(self, expected: dict[str, int], timeout_s: float = 5.0) -> dict[str, int]:
        """Each key's status once they all match `expected` (a reload takes effect as soon as the
        old worker has read the signal), else the last ones seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = {key: self.status(key) for key in expected}
            if seen == expected or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    def status(self, key: str) -> int:
        verify = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        with openai.DefaultHttpxClient(verify=verify, trust_env=False, timeout=30) as client:
            return client.post(f"{self.nginx.https_url}/v1/chat/completions",
                               headers={"Authorization": f"Bearer {key}"},
                               json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).status_code


@pytest.fixture
def host() -> Iterator[Host]:
    require_proxy_tools()
    require_njs()
    root = make_prefix_dir()
    started: list = []
    try:
        state, bin_dir, tenants_dir = root / "state", root / "bin", root / "etc" / "proxy-tenants"
        state.mkdir()
        bin_dir.mkdir()
        (bin_dir / "docker").symlink_to(STUBS / "docker")
        for tool in REAL_TOOLS:
            (bin_dir / tool).symlink_to(shutil.which(tool))
        pki = make_test_pki(root / "pki")
        fake = start_fake_vllm(api_key=STACK_KEY, chunks=2, chunk_delay_ms=1)
        started.append(fake)
        # nginx needs the files to start: the first deploy's install, by the script itself.
        env = {"PATH": str(bin_dir), "LANG": "C.UTF-8", "STUB_STATE": str(state), "STUB_SRC": str(HOST_STUBS),
               "VLLM_DEPLOY_TENANT_DIR": str(tenants_dir), "VLLM_DEPLOY_NGINX_CONTAINER": CONTAINER}
        first = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                               env={**env, "VLLM_DEPLOY_TENANT_FILES": _bundle({"team-a": "ka-" + "1" * 40,
                                                                                "team-b": "kb-" + "1" * 40})})
        assert first.returncode == 0 and first.stdout == "TENANTS=installed\n", first.stderr
        assert "docker exec" not in (state / "calls.log").read_text().replace("docker inspect", "")
        site = tenant_site(prefix=root / "nginx", upstream_port=fake.port, pki=pki, tenants_dir=tenants_dir)
        nginx = start_tenant_nginx(site, root / "nginx")
        started.append(nginx)
        wrapper = state / "nginx"
        wrapper.write_text(f'#!/bin/sh\nexec {nginx_binary()} -e {site.error_log_path} -p {nginx.conf_path.parent} '
                           f'-c {nginx.conf_path} "$@"\n')
        wrapper.chmod(0o755)
        (state / "nginx_running").touch()
        yield Host(root, state, tenants_dir, env, pki, nginx)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(root, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_install_is_private_and_waits_for_the_container(host):
    assert _mode(host.tenants_dir) == 0o700
    files = sorted(p.name for p in host.tenants_dir.iterdir())
    assert files == sorted([tenants.JS_FILE, tenants.HTTP_FILE, tenants.LOCATION_FILE])
    assert all(_mode(host.tenants_dir / name) == 0o600 for name in files)
    assert host.status("ka-" + "1" * 40) == 200 and host.status("kb-" + "1" * 40) == 200


def test_a_rotated_key_is_checked_and_loaded_by_nginx_and_a_rerun_changes_nothing(host):
    new = "ka-" + "2" * 40
    bundle = _bundle({"team-a": new, "team-b": "kb-" + "1" * 40})
    run = host.run(bundle)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "TENANTS=reloaded\n"
    calls = host.calls()
    assert calls.index("nginx -t") < calls.index("nginx -s reload")
    expected = {new: 200, "ka-" + "1" * 40: 401, "kb-" + "1" * 40: 200}
    assert host.settled(expected) == expected
    for text in (run.stdout, run.stderr, calls):
        assert STACK_KEY not in text and bundle not in text and new not in text
    again = host.run(bundle)
    assert again.returncode == 0 and again.stdout == "TENANTS=unchanged\n"
    assert "exec" not in host.calls(), "unchanged files: no nginx -t, no reload"


def test_files_nginx_rejects_are_rolled_back_and_the_old_keys_keep_working(host):
    before = {p.name: p.read_bytes() for p in host.tenants_dir.iterdir()}
    secret_line = f"{STACK_KEY}-in-a-broken-line"
    bundle = _bundle({"team-a": "ka-" + "3" * 40, "team-b": "kb-" + "1" * 40},
                     **{tenants.HTTP_FILE: f'{secret_line} "x";\n'})
    run = host.run(bundle)
    assert run.returncode != 0
    assert "nginx -t rejected" in run.stderr and "previous ones are back" in run.stderr
    assert "unknown directive" in run.stderr, "nginx's own reason is shown ..."
    assert secret_line not in run.stderr and STACK_KEY not in run.stderr, "... with quoted text hidden"
    assert "reload" not in host.calls()
    assert {p.name: p.read_bytes() for p in host.tenants_dir.iterdir()} == before
    assert host.status("ka-" + "1" * 40) == 200 and host.status("ka-" + "3" * 40) == 401


def test_a_bundle_that_is_not_one_is_refused_without_showing_it(host):
    garbage = "not base64 at all: " + STACK_KEY
    run = host.run(garbage)
    assert run.returncode != 0 and "is not base64" in run.stderr
    assert STACK_KEY not in run.stdout + run.stderr
    assert host.status("ka-" + "1" * 40) == 200


def test_a_failed_reload_puts_the_old_files_back_so_the_next_run_reloads(host):
    """Left in place after a failed reload, the new files made the next `pulumi up` print
    TENANTS=unchanged and never reload: a revoked key stayed valid with no error shown."""
    wrapper = host.state / "nginx"
    real = wrapper.read_text().splitlines()[-1]
    wrapper.write_text("#!/bin/sh\n"
                       f'if [ "$1" = "-s" ] && [ -f {host.state}/fail_reload ]; then rm -f {host.state}/fail_reload; '
                       'echo "reload failed" >&2; exit 1; fi\n' + real + "\n")
    (host.state / "fail_reload").touch()
    before = {p.name: p.read_bytes() for p in host.tenants_dir.iterdir()}
    revoked = {"team-a": "ka-" + "4" * 40, "team-b": "kb-" + "1" * 40}  # team-a's old key revoked
    run = host.run(_bundle(revoked))
    assert run.returncode != 0 and "reload failed" in run.stderr and "previous files are back" in run.stderr
    assert {p.name: p.read_bytes() for p in host.tenants_dir.iterdir()} == before
    again = host.run(_bundle(revoked))
    assert again.returncode == 0 and again.stdout == "TENANTS=reloaded\n", again.stderr
    expected = {"ka-" + "1" * 40: 401, "ka-" + "4" * 40: 200, "kb-" + "1" * 40: 200}
    assert host.settled(expected) == expected
