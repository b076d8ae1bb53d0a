"""STAND-IN on branch `fleet` for STACK's components/tenant_keys.py (issue 29, TENANT-CONTRACT.md).

The least of the contract's TenantApiKeys the fleet needs: a generated key per tenant (rotation
0 only; given keys come from STACK's stack/pulumi_config), `keys` (secret map name -> key) and
`hashes` (secret map name -> accepted SHA-256 hex digests). When merging, take branch `stack`'s
file whole and adapt the one call in components/fleet_tenants.py to its constructor.
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_random as random

from components.naming import child, component_type
from config.settings import StackConfig
from serving.tenants import key_hash


class TenantApiKeys(pulumi.ComponentResource):
    keys: pulumi.Output[dict]
    hashes: pulumi.Output[dict]

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
        self.hashes = pulumi.Output.secret(self.keys.apply(lambda k: {t: [key_hash(v)] for t, v in k.items()}))
        self.register_outputs({"keys": self.keys})
