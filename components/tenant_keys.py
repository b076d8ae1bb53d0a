"""TenantApiKeys: the tenants' API keys (`apiKeys`, issue 29), generated or given, and the hashes
the proxy accepts.

Each tenant with no given key gets one pulumi_random RandomPassword per live generation of its key:
`rotation` 0 is `<name>-tenant-<tenant>-key`, rotation N >= 1 `<name>-tenant-<tenant>-key-r<N>`.
Raising `rotation` creates the new generation and deletes the old one, unless `keepPreviousKey`
keeps generation N-1 (both accepted: the rotation window). A given key (and its previousKey) comes
from the encrypted config (stack.pulumi_config.TenantSecret) and creates no resource.

Outputs: `keys`, the secret map tenant -> current key (the stack output `apiKeys`), and
`key_hashes`, the secret map tenant -> the SHA-256 hex of every key it may present
(serving.tenants.key_hash), which is all the proxy ever holds of a tenant's key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

import pulumi
import pulumi_random as random

from components.naming import child, component_type
from config.keys_tenants import Tenant
from config.settings import StackConfig
from serving.proxy_limits import ProxyLimits
from serving.tenants import TenantLimits, key_hash, tenant_limits


class GivenKey(Protocol):
    """A tenant's given key and the one it replaces, as secret Outputs (stack.pulumi_config.TenantSecret)."""

    @property
    def key(self) -> pulumi.Output[str]: ...

    @property
    def previous_key(self) -> Optional[pulumi.Output[str]]: ...


# A generated key: 48 characters of A-Z a-z 0-9 (safe in an Authorization header and a shell
# variable), as the stack's own generated apiKey (components.stack_resources).
GENERATED_KEY_LENGTH = 48


def generation_name(name: str, tenant: str, rotation: int) -> str:
    """The logical name of a tenant's generated key of generation `rotation` (rotation 0 keeps
    the name it had before rotations existed)."""
    base = child(name, f"tenant-{tenant}-key")
    return base if rotation == 0 else f"{base}-r{rotation}"


def live_generations(tenant: Tenant) -> tuple[int, ...]:
    """The generations of a generated key that exist: the current one, and the previous one while
    keepPreviousKey holds it (current first)."""
    if tenant.keep_previous_key and tenant.rotation >= 1:
        return (tenant.rotation, tenant.rotation - 1)
    return (tenant.rotation,)


def tenant_summary(tenants: Mapping[str, Tenant], limits: Sequence[TenantLimits] = ()) -> list[dict[str, Any]]:
    """What a plan shows of each tenant: name, limits (`limits`: as the proxy applies them, the
    defaults resolved), whether its key is given or generated (and its rotation), never a key."""
    applied = {t.name: t.max_concurrent_requests for t in limits}
    rows = []
    for name, tenant in sorted(tenants.items()):
        rows.append({
            "name": name,
            "rateLimitPerMinute": tenant.rate_limit_per_minute,
            "maxConcurrentRequests": tenant.max_concurrent_requests or applied.get(name),
            "maxConcurrentRequestsIsDefault": tenant.max_concurrent_requests is None,
            "key": "given" if tenant.key_given else "generated",
            "acceptsPreviousKey": tenant.previous_key is not None or tenant.keep_previous_key,
            **({} if tenant.key_given else {"rotation": tenant.rotation}),
        })
    return rows


@dataclass
class TenantApiKeysArgs:
    tenants: Mapping[str, Tenant]
    """The validated `apiKeys` (StackConfig.api_keys): names, limits, rotation."""
    given: Mapping[str, GivenKey] = field(default_factory=dict)
    """The given keys by tenant (stack.pulumi_config.Secrets.tenant_keys: TenantSecret); the others are generated."""
    limits: Sequence[TenantLimits] = ()
    """The limits the proxy applies (serving.tenants.tenant_limits), for the summary a plan shows."""


class TenantApiKeys(pulumi.ComponentResource):
    """One key per tenant (generated or given) and the hashes the proxy matches them on."""

    keys: pulumi.Output[dict[str, str]]  # secret: tenant -> current key
    key_hashes: pulumi.Output[dict[str, list[str]]]  # secret: tenant -> accepted keys' SHA-256 hex
    summary: list[dict[str, Any]]  # plain: tenant_summary (no key)

    def __init__(self, name: str, args: TenantApiKeysArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("TenantApiKeys"), name, None, opts)
        current: dict[str, pulumi.Output[str]] = {}
        accepted: dict[str, list[pulumi.Output[str]]] = {}
        for tenant_name, tenant in sorted(args.tenants.items()):
            given = args.given.get(tenant_name)
            if tenant.key_given:
                if given is None:  # stack.pulumi_config reads every given key; a bug otherwise
                    raise ValueError(f"apiKeys.{tenant_name}.key is given but was not read as a secret")
                keys = [given.key] + ([given.previous_key] if given.previous_key is not None else [])
            else:
                keys = [self._generated(name, tenant_name, g) for g in live_generations(tenant)]
            current[tenant_name] = keys[0]
            accepted[tenant_name] = [pulumi.Output.secret(k).apply(key_hash) for k in keys]
        names = list(current)
        self.keys = pulumi.Output.secret(
            pulumi.Output.all(*current.values()).apply(lambda ks: dict(zip(names, ks)))
        )
        self.key_hashes = pulumi.Output.secret(
            pulumi.Output.all(*[pulumi.Output.all(*hs) for hs in accepted.values()]).apply(
                lambda hs: {n: list(h) for n, h in zip(names, hs)}
            )
        )
        self.summary = tenant_summary(args.tenants, args.limits)
        self.register_outputs({"apiKeys": self.keys, "keyHashes": self.key_hashes, "tenants": self.summary})

    def _generated(self, name: str, tenant: str, rotation: int) -> pulumi.Output[str]:
        password = random.RandomPassword(
            generation_name(name, tenant, rotation),
            length=GENERATED_KEY_LENGTH,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Secret here, not only by the provider's schema: nothing downstream may see it plain.
        return pulumi.Output.secret(password.result)


def tenant_api_keys(
    parent: pulumi.Resource, name: str, settings: StackConfig, limits: ProxyLimits, given: Mapping[str, GivenKey]
) -> Optional[TenantApiKeys]:
    """The tenants' keys under `parent` (named `<name>-api-keys`), or None without `apiKeys`
    (a stack with only apiKey registers nothing new)."""
    if not settings.tenants_enabled:
        return None
    return TenantApiKeys(
        child(name, "api-keys"),
        TenantApiKeysArgs(tenants=settings.api_keys, given=given, limits=tenant_limits(settings, limits)),
        pulumi.ResourceOptions(parent=parent),
    )
