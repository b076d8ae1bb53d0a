"""The tenants' nginx files as a fleet's replicas read them: one SSM SecureString (issue 29).

A single host gets serving.tenants.tenant_bundle() through proxy_tenants.sh; a fleet's replicas
read the same bundle from SSM Parameter Store at boot (boot.sh) and every minute after
(tenant_sync.sh, vllm-replica-tenants.timer), so a tenant added, removed or re-keyed reaches
every replica without a re-bake or an instance refresh.

The parameter's value is the bundle's tar, gzip-compressed (mtime 0: the same files give the same
value), base64: ``parameter_value(bundle)``. A tar pads every member to 512 bytes and the archive
to a 10240-byte record, so the bundle alone is ~13.7 KB of base64 for a few hundred bytes of
configuration, over even the Advanced tier's 8 KB; gzip takes the padding out. The replica
undoes it with ``base64 -d | gzip -dc | tar -x``.

Tiers (AWS Systems Manager user guide, "Managing parameter tiers"): Standard holds values up to
4 KB and costs nothing extra; Advanced up to 8 KB and is charged (AWS Systems Manager pricing; at
this writing USD 0.05 per parameter-month and per 10,000 API interactions, so the timer's 43,200
GetParameter calls a month cost about USD 0.22 per replica; pricing not verified here). An
Advanced parameter cannot be reverted to Standard (the guide: delete and recreate it; the
Terraform provider under pulumi-aws recreates it). The tier is chosen at preview from
``bundle_size_bound``, an upper bound on the value's length for the stack's tenants, so it does
not depend on a key's value and changes only when tenants or their number of keys do.
"""

from __future__ import annotations

import base64
import gzip
from typing import Mapping, Sequence

from config.settings import StackConfig
from serving.proxy_limits import ProxyLimits
from serving.tenants import LONGEST_UPSTREAM_KEY, largest_files, tenant_bundle, tenant_files, tenant_limits

# AWS SSM PutParameter "Value": Standard 4 KB, Advanced 8 KB (characters of the value).
STANDARD_TIER_MAX_CHARS = 4096
ADVANCED_TIER_MAX_CHARS = 8192
# The upstream key in the files is the stack's apiKey: generated (components.stack_resources,
# 48 characters) or given. A bound for the estimate; a longer given key is caught at `up`.
UPSTREAM_KEY_BOUND_CHARS = LONGEST_UPSTREAM_KEY
SIZE_MARGIN_CHARS = 64


def parameter_value(bundle: str) -> str:
    """The parameter's value for serving.tenants.tenant_bundle() output `bundle` (base64 of a tar):
    base64 of the tar gzip-compressed with mtime 0 (deterministic). Secret like the bundle."""
    return base64.b64encode(gzip.compress(base64.b64decode(bundle), mtime=0)).decode()


def bundle_size_bound(settings: StackConfig, limits: ProxyLimits) -> int:
    """An upper bound (characters) of parameter_value() for this stack's tenants: the real
    rendering (serving.tenants) compressed, with each tenant's number of accepted hashes as
    SHA-256 digests of placeholders (as compressible as real ones: hex of a hash) and an upstream
    key of UPSTREAM_KEY_BOUND_CHARS random-looking characters (serving.tenants.largest_files),
    plus SIZE_MARGIN_CHARS and 2 % for gzip's few bytes of variation between equally random
    inputs."""
    size = len(parameter_value(tenant_bundle(largest_files(settings, limits))))
    return size + size // 50 + SIZE_MARGIN_CHARS


def parameter_tier(settings: StackConfig, limits: ProxyLimits) -> str:
    """"Standard" when bundle_size_bound fits 4 KB, "Advanced" up to 8 KB; a ValueError naming
    apiKeys and a fix past 8 KB."""
    bound = bundle_size_bound(settings, limits)
    if bound <= STANDARD_TIER_MAX_CHARS:
        return "Standard"
    if bound <= ADVANCED_TIER_MAX_CHARS:
        return "Advanced"
    raise ValueError(
        f"vllm-deploy:apiKeys: {len(settings.api_keys)} tenants need up to {bound} characters of nginx "
        f"files, over the {ADVANCED_TIER_MAX_CHARS} an SSM parameter holds (Advanced tier), which a "
        "fleet's replicas read them from; use fewer tenants or end rotation windows (drop previousKey, "
        "set keepPreviousKey false)"
    )


def check_value_fits(value: str, tier: str) -> str:
    """`value` (the parameter's, at `up`) when it fits `tier`; a ValueError saying by how much
    and why (a given apiKey longer than UPSTREAM_KEY_BOUND_CHARS) otherwise. Never shows it."""
    limit = STANDARD_TIER_MAX_CHARS if tier == "Standard" else ADVANCED_TIER_MAX_CHARS
    if len(value) > limit:
        raise ValueError(
            f"vllm-deploy:apiKeys: the tenants' nginx files are {len(value)} characters, over the "
            f"{limit} of the SSM {tier} tier chosen at preview (for an apiKey of up to "
            f"{UPSTREAM_KEY_BOUND_CHARS} characters); use a shorter apiKey or fewer tenants"
        )
    return value


def bundle_for(
    settings: StackConfig, limits: ProxyLimits, key_hashes: Mapping[str, Sequence[str]], upstream_api_key: str
) -> str:
    """parameter_value() of the stack's tenant files (serving.tenants): what the parameter holds."""
    files = tenant_files(tenant_limits(settings, limits), key_hashes, upstream_api_key)
    return parameter_value(tenant_bundle(files))
