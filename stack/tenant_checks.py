"""What `pulumi preview` checks of `apiKeys` (issue 29) once the proxy's limits are known, before
any resource exists: the tenants' limits the proxy can honour, and tenants' files that fit the
one environment variable the proxy's tenants step carries them in."""

from __future__ import annotations

from config.constants import NAMESPACE
from config.settings import StackConfig
from config.validation import ConfigError
from serving.proxy_limits import ProxyLimits
from serving.tenants import tenant_bundle, tenant_files, tenant_limits

# The longest single environment string execve(2) takes: MAX_ARG_STRLEN, 32 pages
# (include/uapi/linux/binfmts.h; 131072 bytes with 4 KiB pages, as on every EC2 x86_64/arm64
# Ubuntu kernel), NUL included. `sudo` and `bash` are exec'd with the bundle in their environment.
MAX_ARG_STRLEN = 32 * 4096
BUNDLE_ENV = "VLLM_DEPLOY_TENANT_FILES"  # proxy_tenants.sh's variable (components.proxy)
# The upstream key in the files is the stack's apiKey: at most this long (a bound, for the size).
LONGEST_UPSTREAM_KEY = 256


def tenant_problems(settings: StackConfig, limits: ProxyLimits) -> list[str]:
    """Why the tenants cannot be served as configured (empty without apiKeys): a limit the proxy
    refuses (serving.tenants.tenant_limits), or files too large for the step's environment."""
    if not settings.tenants_enabled:
        return []
    try:
        tenants = tenant_limits(settings, limits)
    except ValueError as exc:
        return [f"{NAMESPACE}:{exc}"]
    # Every key hash is 64 hex characters (distinct, as the keys are): the size does not depend
    # on the keys themselves.
    counter = iter(range(2 * len(settings.api_keys)))
    hashes = {
        name: [f"{next(counter):064x}" for _ in range(2 if t.previous_key is not None or t.keep_previous_key else 1)]
        for name, t in settings.api_keys.items()
    }
    size = len(BUNDLE_ENV) + 1 + len(tenant_bundle(tenant_files(tenants, hashes, "k" * LONGEST_UPSTREAM_KEY))) + 1
    if size <= MAX_ARG_STRLEN:
        return []
    return [
        f"{NAMESPACE}:apiKeys: the {len(tenants)} tenants' proxy files take {size} bytes, above the "
        f"{MAX_ARG_STRLEN} one environment variable can carry to the host (Linux's MAX_ARG_STRLEN); "
        "use shorter tenant names, fewer tenants, or close the rotation windows (keepPreviousKey, "
        "previousKey) you no longer need"
    ]


def check_tenants(settings: StackConfig, limits: ProxyLimits) -> None:
    """Raise ConfigError with every tenant_problems()."""
    problems = tenant_problems(settings, limits)
    if problems:
        raise ConfigError(problems)
