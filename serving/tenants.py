"""Tenants at the proxy (issue 29): what nginx needs to check a tenant's bearer key, name the
tenant and apply its limits, as files in one directory that the main nginx.conf includes. Pure:
no Pulumi, no files written.

Tenant mode (``apiKeys`` set) moves the key check from vLLM to nginx. nginx's njs module
(``tenants.js``) hashes the presented ``Authorization: Bearer <key>`` with SHA-256; a ``map``
from the hash to the tenant's name finds the tenant; no match answers 401 from nginx itself.
vLLM keeps checking the stack's own ``apiKey``, which nginx sends upstream in place of the
tenant's key. Only hashes of tenants' keys are in the files; the stack's own key is, so the
files are secret as a whole (0600 on the host, a SecureString on a fleet).

Changing tenants = rewriting these files, ``nginx -t``, ``nginx -s reload``
(components/scripts/proxy_tenants.sh): the container is not replaced and vLLM not restarted.

Files (``tenant_files``), by name:

* ``tenants.js``: the njs module (key hash, usage counts); the same for every stack.
* ``tenants.conf`` (http level): hash -> tenant ``map``, one ``limit_req_zone`` and one
  ``limit_conn_zone`` per tenant (zones ``tenant_<i>_req`` / ``tenant_<i>_conn`` keyed on a
  variable that holds the tenant's name for its own requests and is empty for everyone else's,
  which nginx does not count), and the tenant's 429 bodies.
* ``location.conf`` (the ``/v1/`` location): the tenant limits and the upstream Authorization.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from serving import proxy_policy
from serving.proxy_limits import ProxyLimits

if TYPE_CHECKING:  # settings imports nothing from here; keep the import one-way
    from config.settings import StackConfig

# Where the files live on a single host, and where the nginx container sees them (a read-only
# bind mount); the main nginx.conf includes them from TENANT_DIR_CONTAINER.
TENANT_DIR_HOST = "/etc/vllm-deploy/proxy-tenants"
TENANT_DIR_CONTAINER = "/etc/nginx/tenants"

# The per-tenant usage log, JSON lines (USAGE_LOG_FIELDS), one per request that named a tenant;
# the host directory is bind-mounted on the container's.
USAGE_LOG_CONTAINER = "/var/log/nginx-usage/usage.log"
USAGE_LOG_HOST_DIR = "/var/log/vllm-deploy/proxy-usage"
USAGE_LOG_FIELDS = (
    "time",  # ISO 8601, nginx's $time_iso8601
    "tenant",  # the tenant's name (never its key)
    "status",  # HTTP status sent (number)
    "request_bytes",  # bytes received from the client, headers included
    "response_bytes",  # bytes sent to the client, headers included
    "request_time",  # seconds, millisecond resolution
    "prompt_tokens",  # from vLLM's `usage`, null when the answer carried none
    "completion_tokens",  # likewise
)

JS_FILE = "tenants.js"
HTTP_FILE = "tenants.conf"
LOCATION_FILE = "location.conf"
JS_SOURCE_PATH = Path(__file__).resolve().parent / "templates" / JS_FILE

# A tenant's burst above its rate: ten seconds' worth of requests, served at once before 429s.
TENANT_BURST_SECONDS = 10

# nginx shared memory per zone: 1 MiB holds one key per zone thousands of times over.
_ZONE_MIB = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The stack's own key goes inside a double-quoted nginx string: no quote, backslash, `$`, `;`,
# braces or whitespace.
_UPSTREAM_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")
LONGEST_UPSTREAM_KEY = 256  # the longest stack apiKey tenant_files takes (_UPSTREAM_KEY)


@dataclass(frozen=True)
class TenantLimits:
    """One tenant's limits at the proxy (per host; on a fleet, per replica)."""

    name: str
    rate_limit_per_minute: Optional[int]  # requests per minute; None = no rate of its own
    max_concurrent_requests: int  # requests in flight at once, streams included

    @property
    def burst(self) -> int:
        """Requests above the rate served at once (TENANT_BURST_SECONDS of the rate)."""
        if self.rate_limit_per_minute is None:
            return 0
        return self.rate_limit_per_minute * TENANT_BURST_SECONDS // 60


def tenant_limits(settings: "StackConfig", limits: ProxyLimits) -> tuple[TenantLimits, ...]:
    """Each tenant of ``settings.api_keys`` (sorted by name: zone indexes stay put) with its
    limits on the host ``limits`` describes. ``max_concurrent_requests`` defaults to an equal
    share of ``limits.max_streams_per_client`` (by default the sequences vLLM batches at once,
    serving.proxy_limits): ceil(that / tenants), at least 1, so that tenants left at their
    default cannot together hold more than the batch and one tenant's flood leaves the others
    their share (a tenant that may take more says so with maxConcurrentRequests).

    Raises ValueError naming ``apiKeys.<name>.maxConcurrentRequests`` when it is above what the
    proxy admits from all clients together (``limits.max_streams``).
    """
    result = []
    share = max(1, -(-limits.max_streams_per_client // max(1, len(settings.api_keys))))
    for name in sorted(settings.api_keys):
        tenant = settings.api_keys[name]
        concurrent = tenant.max_concurrent_requests or share
        if concurrent > limits.max_streams:
            raise ValueError(
                f"apiKeys.{name}.maxConcurrentRequests={concurrent} is above the "
                f"{limits.max_streams} requests the proxy admits from all clients together on "
                f"this host; set it to {limits.max_streams} or less"
            )
        result.append(TenantLimits(name, tenant.rate_limit_per_minute, concurrent))
    return tuple(result)


def key_hash(key: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 key: what nginx matches (vLLM 0.33 compares the same
    digest, vllm/entrypoints/serve/middleware/authenticate.py)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def unauthorized_body() -> str:
    """nginx's 401 for a missing or unknown key, in the JSON shape of the proxy's other errors
    (serving.proxy_policy). vLLM 0.33's own middleware answers ``{"error": "Unauthorized"}``
    (vllm/entrypoints/serve/middleware/authenticate.py); the openai client raises
    AuthenticationError on the status either way and reads this message."""
    return proxy_policy.error_body(
        401,
        "Missing or unknown API key: send Authorization: Bearer <your key> (the key named "
        "for your tenant in the stack output apiKeys).",
    )


def _too_many_bodies(tenant: TenantLimits) -> tuple[str, str, int]:
    """(too many at once, too fast, Retry-After for too fast) for one tenant."""
    at_once = proxy_policy.error_body(
        429,
        f"Too many concurrent requests for tenant {tenant.name} (at most "
        f"{tenant.max_concurrent_requests}) or from your address. Retry after "
        f"{proxy_policy.CONCURRENCY_RETRY_AFTER_S} s.",
    )
    rate = tenant.rate_limit_per_minute
    retry = proxy_policy.rate_retry_after_s(rate) if rate else proxy_policy.CONCURRENCY_RETRY_AFTER_S
    limit = f"{rate} requests per minute for tenant {tenant.name}" if rate else "the rate limit"
    too_fast = proxy_policy.error_body(
        429, f"Rate limit exceeded: {limit} (or per address). Retry after {retry} s."
    )
    return at_once, too_fast, retry


def tenant_files(
    tenants: Sequence[TenantLimits],
    key_hashes: Mapping[str, Sequence[str]],
    upstream_api_key: str,
) -> dict[str, str]:
    """File name -> text of the tenants directory (JS_FILE, HTTP_FILE, LOCATION_FILE).

    ``key_hashes``: tenant name -> the ``key_hash`` of every key it may use now (two during a
    rotation window). ``upstream_api_key``: the stack's own apiKey, which vLLM checks. The
    result is SECRET (it holds that key). Deterministic: the same input gives the same text.

    Raises ValueError (never showing a key) for a tenant without hashes, a hash that is not
    64 lower-case hex digits or two tenants sharing one, a hash for an unknown tenant, a bad
    tenant name, no tenants, or a stack key nginx could not hold in a quoted string.
    """
    if not tenants:
        raise ValueError("tenant_files needs at least one tenant (apiKeys is empty)")
    names = [t.name for t in tenants]
    bad = [n for n in names if not _TENANT_NAME.match(n)] + sorted(set(key_hashes) - set(names))
    if bad or len(set(names)) != len(names):
        raise ValueError(f"tenant names {bad or names} are unknown, repeated or not 1-64 of A-Z a-z 0-9 . _ -")
    if not _UPSTREAM_KEY.match(upstream_api_key):
        raise ValueError("the stack's apiKey (not shown) must be 16-256 of A-Z a-z 0-9 . _ ~ + / = -")
    owner: dict[str, str] = {}
    for tenant in tenants:
        hashes = list(key_hashes.get(tenant.name, ()))
        if not hashes:
            raise ValueError(f"tenant {tenant.name} has no key hash; every tenant needs its key's key_hash")
        for digest in hashes:
            if not _HEX64.match(digest):
                raise ValueError(f"tenant {tenant.name}: {digest!r} is not a key_hash (64 lower-case hex digits)")
            if owner.setdefault(digest, tenant.name) != tenant.name:
                raise ValueError(f"tenants {owner[digest]} and {tenant.name} share a key; give each its own")

    http = [
        "# Tenants (serving/tenants.py). SECRET: rewritten by proxy_tenants.sh, never edited.",
        "# The SHA-256 of the presented key -> the tenant's name; empty = no tenant (401).",
        "map $tenant_key_hash $tenant {",
        '    default "";',
        *(f'    "{digest}" "{name}";' for digest, name in sorted(owner.items())),
        "}",
    ]
    location = [
        "# Tenants' limits and the key vLLM checks (serving/tenants.py). SECRET.",
        f'proxy_set_header Authorization "Bearer {upstream_api_key}";',
    ]
    bodies: dict[str, list[str]] = {"at_once": [], "too_fast": [], "retry": []}
    for index, tenant in enumerate(tenants):
        var, zone = f"$tenant_{index}", f"tenant_{index}"
        http += [
            f"# {tenant.name}: rate {tenant.rate_limit_per_minute or 'none'}/min, "
            f"{tenant.max_concurrent_requests} at once",
            f'map $tenant {var} {{ "{tenant.name}" "{tenant.name}"; default ""; }}',
            f"limit_conn_zone {var} zone={zone}_conn:{_ZONE_MIB}m;",
        ]
        location.append(f"limit_conn {zone}_conn {tenant.max_concurrent_requests};")
        if tenant.rate_limit_per_minute:
            http.append(f"limit_req_zone {var} zone={zone}_req:{_ZONE_MIB}m rate={tenant.rate_limit_per_minute}r/m;")
            burst = f" burst={tenant.burst} nodelay" if tenant.burst else ""
            location.append(f"limit_req zone={zone}_req{burst};")
        at_once, too_fast, retry = _too_many_bodies(tenant)
        bodies["at_once"].append(f"    \"{tenant.name}\" '{at_once}';")
        bodies["too_fast"].append(f"    \"{tenant.name}\" '{too_fast}';")
        bodies["retry"].append(f'    "{tenant.name}" {retry};')
    # No tenant (an OPTIONS request, which vLLM does not check either): the address's limits.
    retry = proxy_policy.CONCURRENCY_RETRY_AFTER_S
    generic = proxy_policy.error_body(429, f"Too many requests from your address. Retry after {retry} s.")
    http += [
        "# 429 answers naming the tenant's own limit (read by the main nginx.conf's 429 maps).",
        "map $tenant $tenant_too_many_at_once_body {", f"    default '{generic}';", *bodies["at_once"], "}",
        "map $tenant $tenant_too_fast_body {", f"    default '{generic}';", *bodies["too_fast"], "}",
        "map $tenant $tenant_too_fast_retry_after {", f"    default {retry};", *bodies["retry"], "}",
    ]
    return {
        JS_FILE: JS_SOURCE_PATH.read_text(),
        HTTP_FILE: "\n".join(http) + "\n",
        LOCATION_FILE: "\n".join(location) + "\n",
    }


def tenant_bundle(files: Mapping[str, str]) -> str:
    """Base64 of a deterministic (sorted, zero mtime, root-owned, 0600) uncompressed tar of
    ``files``: the value of VLLM_DEPLOY_TENANT_FILES for components/scripts/proxy_tenants.sh.
    The same files always give the same string, so a changed bundle means changed files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            if "/" in name or name.startswith("."):
                raise ValueError(f"tenant file name {name!r} must be a plain file name")
            data = files[name].encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def accepted_keys(settings: "StackConfig") -> dict[str, int]:
    """How many keys each tenant's files accept (config.keys_tenants): 2 in a rotation window
    (previousKey given, or keepPreviousKey), else 1."""
    return {name: 2 if (t.previous_key is not None or t.keep_previous_key) else 1
            for name, t in settings.api_keys.items()}


def _random_looking(seed: str, length: int) -> str:
    """`length` characters of base64 from SHA-256 chains: deterministic, and no more compressible
    than a random key (a generated key is 48 of [A-Za-z0-9]; a given one any characters)."""
    out, i = "", 0
    while len(out) < length:
        out += base64.b64encode(hashlib.sha256(f"{seed}-{i}".encode()).digest()).decode().rstrip("=")
        i += 1
    return out[:length]


def largest_files(settings: "StackConfig", limits: ProxyLimits) -> dict[str, str]:
    """The stack's tenant files as large as its keys can make them, before any key exists (for
    the size checks at preview: stack.tenant_checks, serving.replica_tenants): each tenant's
    accepted hashes as SHA-256 digests of placeholders (every hash is 64 hex characters, and as
    compressible as a real one) and a random-looking upstream key of LONGEST_UPSTREAM_KEY."""
    counts = accepted_keys(settings)
    tenants = tenant_limits(settings, limits)
    hashes = {t.name: [key_hash(f"bound-{t.name}-{i}") for i in range(counts.get(t.name, 1))] for t in tenants}
    return tenant_files(tenants, hashes, _random_looking("upstream", LONGEST_UPSTREAM_KEY))
