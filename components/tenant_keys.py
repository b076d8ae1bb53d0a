"""STAND-IN on branch `fleet` for STACK's components/tenant_keys.py (issue 29, TENANT-CONTRACT.md).

The interface of branch `stack`'s module as the fleet calls it (tenant_api_keys, TenantApiKeys'
`keys` and `key_hashes`, GivenKey), with only generated rotation-0 keys behind it. When merging,
take branch `stack`'s file whole.
"""

from __future__ import annotations

from typing import Mapping, Optional, Protocol

import pulumi
import pulumi_random as random

from components.naming import child, component_type
from config.settings import StackConfig
from serving.proxy_limits import ProxyLimits
from serving.tenants import key_hash


class GivenKey(Protocol):
    @property
    def key(self) -> pulumi.Output[str]: ...

    @property
    def previous_key(self) -> Optional[pulumi.Output[str]]: ...


class TenantApiKeys(pulumi.ComponentResource):
    keys: pulumi.Output[dict]  # secret: tenant -> current key
    key_hashes: pulumi.Output[dict]  # secret: tenant -> accepted keys' SHA-256 hex

    def __init__(self, name: str, settings: StackConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("TenantApiKeys"), name, None, opts)
        keys = {
            tenant: random.RandomPassword(
                child(name, f"tenant-{tenant}-key"), length=48, special=False,
                opts=pulumi.ResourceOptions(parent=self),
            ).result
            for tenant in sorted(settings.api_keys)
        }
        self.keys = pulumi.Output.secret(pulumi.Output.all(**keys))
        self.key_hashes = pulumi.Output.secret(self.keys.apply(lambda k: {t: [key_hash(v)] for t, v in k.items()}))
        self.register_outputs({"apiKeys": self.keys, "keyHashes": self.key_hashes})


def tenant_api_keys(
    parent: pulumi.Resource, name: str, settings: StackConfig, limits: ProxyLimits, given: Mapping[str, GivenKey]
) -> Optional[TenantApiKeys]:
    """The tenants' keys under `parent` (named `<name>-api-keys`), or None without `apiKeys`."""
    if not settings.tenants_enabled:
        return None
    return TenantApiKeys(child(name, "api-keys"), settings, pulumi.ResourceOptions(parent=parent))
