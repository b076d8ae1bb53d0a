"""A real nginx in tenant mode (serving/tenants.py) on loopback: the njs module of the local
nginx, the tenants' files written the way proxy_tenants.sh installs them, reload by `nginx -s
reload`. Shared by tests/serving/test_tenants_live.py and bench/tenant_key_check.py.

Needs the njs module (Debian: apt-get install libnginx-mod-http-js): missing, a test skips, or
fails under CI (env CI set).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping, Optional, Sequence

from serving import tenants
from serving.nginx import NginxSite
from tests.fakes import RunningNginx, TestPki, local_site, nginx_binary, start_nginx

# Debian's libnginx-mod-http-js 0.7.9 (bookworm), then nginx.org's packages.
NJS_MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_http_js_module.so",
    "/usr/lib64/nginx/modules/ngx_http_js_module.so",
    "/etc/nginx/modules/ngx_http_js_module.so",
)


def installed_njs_module() -> Optional[str]:
    return next((path for path in NJS_MODULE_CANDIDATES if os.path.exists(path)), None)


def require_njs() -> str:
    """The njs module's path; skips the test without it (fails under CI)."""
    import pytest

    found = installed_njs_module()
    if found:
        return found
    reason = "needs nginx's njs module (apt-get install libnginx-mod-http-js)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the tenant proxy tests: {reason}")
    pytest.skip(reason)


def write_tenant_files(
    directory: Path,
    limits: Sequence[tenants.TenantLimits],
    keys: Mapping[str, Sequence[str]],
    upstream_api_key: str,
) -> None:
    """The tenants' files for tenant name -> its keys, written 0600 into `directory` (0700)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    hashes = {name: [tenants.key_hash(key) for key in given] for name, given in keys.items()}
    for name, text in tenants.tenant_files(limits, hashes, upstream_api_key).items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o600)


def tenant_site(*, prefix: Path, upstream_port: int, pki: TestPki, tenants_dir: Path, **fields) -> NginxSite:
    """local_site in tenant mode: the local njs module, the usage log under `prefix`."""
    return local_site(
        prefix=prefix, upstream_port=upstream_port, pki=pki, tenants_dir=str(tenants_dir),
        njs_module_path=require_njs(), usage_log_path=str(prefix / "usage.log"), **fields,
    )


def start_tenant_nginx(site: NginxSite, prefix: Path) -> RunningNginx:
    prefix.mkdir(exist_ok=True)
    prefix.chmod(0o755)
    return start_nginx(site, prefix)


def reload_nginx(running: RunningNginx) -> None:
    """`nginx -s reload` for that nginx (it reads the master's pid from the file's pid path)."""
    prefix = running.conf_path.parent
    subprocess.run(
        [nginx_binary() or "nginx", "-e", running.site.error_log_path, "-p", str(prefix),
         "-c", str(running.conf_path), "-s", "reload"],
        check=True, capture_output=True, text=True,
    )
