"""A fleet's tenants (issue 29): their keys and the SSM SecureString every replica reads the
tenants' nginx files from (serving/replica_tenants.py). Created only in tenant mode (apiKeys
set): a fleet without tenants keeps every resource, URN and input it had.

The parameter's value never enters the launch template or the image's digest (only its name is
baked, in replica.env): a tenant added, removed or re-keyed updates the parameter alone, and each
replica's vllm-replica-tenants.timer installs the new files and reloads nginx within a minute
(components/scripts/replica/tenant_sync.sh), with no re-bake and no instance refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_aws as aws

from components.fleet_bake import tenant_files_parameter
from components.naming import child
from components.tenant_keys import GivenKey, tenant_api_keys
from config.settings import StackConfig
from serving import replica_tenants
from serving.proxy_limits import ProxyLimits


@dataclass
class FleetTenants:
    """What the fleet's group and outputs take from the tenants."""

    keys: pulumi.Output[dict]  # secret: tenant name -> key (the stack output apiKeys)
    files: pulumi.Output[str]  # secret: the parameter's value (serving.replica_tenants.bundle_for)
    tier: str  # the parameter's SSM tier, chosen at preview (serving.replica_tenants.parameter_tier)


def fleet_tenants(
    parent: pulumi.Resource, name: str, settings: StackConfig, limits: ProxyLimits, api_key: pulumi.Output[str],
    tier: str, given: Mapping[str, GivenKey],
) -> FleetTenants:
    """The tenants' keys (components.tenant_keys) and the secret files built from their hashes and
    the stack's own `api_key` (what nginx sends upstream), for a parameter of `tier`
    (serving.replica_tenants.parameter_tier, checked before any resource)."""
    keys = tenant_api_keys(parent, name, settings, limits, given)
    assert keys is not None, "fleet_tenants is called in tenant mode only (settings.tenants_enabled)"
    files = pulumi.Output.all(keys.key_hashes, api_key).apply(
        lambda v: replica_tenants.check_value_fits(replica_tenants.bundle_for(settings, limits, v[0], v[1]), tier)
    )
    return FleetTenants(keys=pulumi.Output.secret(keys.keys), files=pulumi.Output.secret(files), tier=tier)


def tenant_files_ssm_parameter(
    parent: pulumi.Resource, name: str, stack: str, tenants: FleetTenants
) -> aws.ssm.Parameter:
    """The files as a SecureString (the AWS-managed aws/ssm key, like the API key's parameter).
    A tier downgrade replaces the parameter (AWS refuses it in place); its fixed name makes that a
    delete first, and the replicas keep the files they hold until it is back (tenant_sync.sh)."""
    return aws.ssm.Parameter(
        child(name, "tenant-files"),
        name=tenant_files_parameter(stack),
        type="SecureString",
        tier=tenants.tier,
        value=tenants.files,
        description="vllm-deploy: the tenants' nginx files (key hashes, limits), read by the replicas every minute",
        opts=pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["value"], delete_before_replace=True),
    )
