"""What `pulumi preview` checks of `apiKeys` (issue 29) once the proxy's limits are known, before
any resource exists: the tenants' limits the proxy can honour, and tenants' files that fit the
one environment variable the proxy's tenants step carries them in."""

from __future__ import annotations

from config.constants import NAMESPACE
from config.settings import StackConfig
from config.validation import ConfigError
from serving.proxy_limits import ProxyLimits
from serving.tenants import largest_files, tenant_bundle

# The longest single environment string execve(2) takes: MAX_ARG_STRLEN, 32 pages
# (include/uapi/linux/binfmts.h; 131072 bytes with 4 KiB pages, as on every EC2 x86_64/arm64
# Ubuntu kernel), NUL included. `sudo` and `bash` are exec'd with the bundle in their environment.
MAX_ARG_STRLEN = 32 * 4096
BUNDLE_ENV = "VLLM_DEPLOY_TENANT_FILES"  # proxy_tenants.sh's variable (components.proxy)


def tenant_problems(settings: StackConfig, limits: ProxyLimits) -> list[str]:
    """Why the tenants cannot be served as configured (empty without apiKeys): a limit the proxy
    refuses (serving.tenants.tenant_limits), or files too large for the step's environment."""
    if not settings.tenants_enabled:
        return []
    try:
        files = largest_files(settings, limits)
    except ValueError as exc:  # a limit the proxy refuses (serving.tenants.tenant_limits)
        return [f"{NAMESPACE}:{exc}"]
    size = len(BUNDLE_ENV) + 1 + len(tenant_bundle(files)) + 1
    if size <= MAX_ARG_STRLEN:
        return []
    return [
        f"{NAMESPACE}:apiKeys: the {len(settings.api_keys)} tenants' proxy files take {size} bytes, above the "
        f"{MAX_ARG_STRLEN} one environment variable can carry to the host (Linux's MAX_ARG_STRLEN); "
        "use shorter tenant names, fewer tenants, or close the rotation windows (keepPreviousKey, "
        "previousKey) you no longer need"
    ]


def check_tenants(settings: StackConfig, limits: ProxyLimits) -> None:
    """Raise ConfigError with every tenant_problems()."""
    problems = tenant_problems(settings, limits)
    if problems:
        raise ConfigError(problems)
