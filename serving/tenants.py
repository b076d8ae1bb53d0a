"""STAND-IN for PROXY's serving/tenants.py (issue 29), written on branch `stack` only so that the
stack's wiring can be built and tested before PROXY's module lands. It implements the interface
of /work/brief/TENANT-CONTRACT.md and nothing more; at merge, PROXY's file replaces this one.

Pure: the tenants' limits, the hash a key is matched on, the files nginx includes in tenant mode,
and the bundle proxy_tenants.sh installs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from config.settings import StackConfig
    from serving.proxy_limits import ProxyLimits

TENANT_DIR_HOST = "/etc/vllm-deploy/proxy-tenants"  # on the host (single host)
TENANT_DIR_CONTAINER = "/etc/nginx/tenants"  # what nginx.conf includes
USAGE_LOG_CONTAINER = "/var/log/nginx-usage/usage.log"
USAGE_LOG_HOST_DIR = "/var/log/vllm-deploy/proxy-usage"


@dataclass(frozen=True)
class TenantLimits:
    name: str
    rate_limit_per_minute: Optional[int]
    max_concurrent_requests: int


def tenant_limits(settings: "StackConfig", limits: "ProxyLimits") -> tuple[TenantLimits, ...]:
    """Each tenant's limits in name order; maxConcurrentRequests defaults to the per-client limit.
    Raises ValueError naming apiKeys.<name>.maxConcurrentRequests above limits.max_streams."""
    result = []
    for name, t in sorted(settings.api_keys.items()):
        concurrent = t.max_concurrent_requests or limits.max_streams_per_client
        if concurrent > limits.max_streams:
            raise ValueError(
                f"apiKeys.{name}.maxConcurrentRequests={concurrent} is above the {limits.max_streams} requests "
                f"the proxy admits from all clients together on this host; set it to {limits.max_streams} or less"
            )
        result.append(TenantLimits(name, t.rate_limit_per_minute, concurrent))
    return tuple(result)


def key_hash(key: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 key."""
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_files(
    tenants: Sequence[TenantLimits], key_hashes: Mapping[str, Sequence[str]], upstream_api_key: str
) -> dict[str, str]:
    """File name -> text (secret content: the upstream key is in it)."""
    keys = "".join(f'    "{h}" "{t.name}";\n' for t in tenants for h in key_hashes.get(t.name, ()))
    return {
        "keys.conf": f"map $tenant_key_hash $tenant {{\n    default \"\";\n{keys}}}\n",
        "upstream.conf": f'proxy_set_header Authorization "Bearer {upstream_api_key}";\n',
    }


def tenant_bundle(files: Mapping[str, str]) -> str:
    """Base64 of a deterministic tar of `files` (sorted, fixed mtime/owner/mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name].encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o600, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()
