"""STAND-IN on branch `fleet` for PROXY's serving/tenants.py (issue 29, TENANT-CONTRACT.md).

Only the contract's interface, with the least behaviour the fleet's code and tests need; when
merging, take branch `proxy`'s file whole and drop this one. Pure: no Pulumi.

    TENANT_DIR_CONTAINER: what the tenant-mode nginx.conf includes
    tenant_limits(settings, limits) -> tuple[TenantLimits, ...]
    key_hash(key) -> lower-case hex SHA-256 of the UTF-8 key
    tenant_files(tenants, key_hashes, upstream_api_key) -> {file name: text} (secret content)
    tenant_bundle(files) -> base64 of a deterministic tar of those files
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from config.settings import StackConfig
from serving.proxy_limits import ProxyLimits

TENANT_DIR_HOST = "/etc/vllm-deploy/proxy-tenants"
TENANT_DIR_CONTAINER = "/etc/nginx/tenants"


@dataclass(frozen=True)
class TenantLimits:
    name: str
    rate_limit_per_minute: Optional[int]
    max_concurrent_requests: int


def tenant_limits(settings: StackConfig, limits: ProxyLimits) -> tuple[TenantLimits, ...]:
    """Each tenant's limits, sorted by name; max_concurrent_requests defaults to the proxy's
    per-client stream limit."""
    return tuple(
        TenantLimits(name, t.rate_limit_per_minute, t.max_concurrent_requests or limits.max_streams_per_client)
        for name, t in sorted(settings.api_keys.items())
    )


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_files(
    tenants: Sequence[TenantLimits], key_hashes: Mapping[str, Sequence[str]], upstream_api_key: str
) -> dict[str, str]:
    """The tenants directory's files (stand-in shapes: a hash map and the upstream header)."""
    lines = [f'    "{h}" "{t.name}";\n' for t in tenants for h in key_hashes.get(t.name, ())]
    return {
        "http.conf": "map $tenant_key_hash $tenant {\n    default \"\";\n" + "".join(lines) + "}\n",
        "location.conf": f'proxy_set_header Authorization "Bearer {upstream_api_key}";\n',
    }


def tenant_bundle(files: Mapping[str, str]) -> str:
    """base64 of a tar of `files` with fixed metadata (the same files give the same text)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name].encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(out.getvalue()).decode()
