"""How many tenants a fleet's one SSM parameter holds (issue 29, serving/replica_tenants.py).

A fleet's replicas read the tenants' nginx files (serving.tenants.tenant_files, as the single
host's proxy renders them) from one SecureString: Standard up to 4 KB, Advanced up to 8 KB. For
1..64 tenants (config/keys_tenants.py's most) it renders the files for one key per tenant and for
two (a rotation window), with random keys and a generated 48-character upstream key, and prints
per count the parameter value's real size, the preview's bound (what picks the tier) and the tier,
then the most tenants each tier holds. Pure Python, no network: the figures depend only on the
rendering in this checkout.

    .venv/bin/python bench/fleet_tenant_capacity.py
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.validation import parse  # noqa: E402
from serving import replica_tenants  # noqa: E402
from serving.proxy_limits import stack_limits  # noqa: E402
from serving.tenants import key_hash  # noqa: E402
from sizing.choice import plan as choose_plan  # noqa: E402

MOST_TENANTS = 64
MODEL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}


def measure(count: int, keys: int) -> tuple[int, int, str]:
    """(value's characters with random keys, the preview's bound, its tier or 'refused')."""
    tenant = {"rateLimitPerMinute": 60, **({"rotation": 1, "keepPreviousKey": True} if keys == 2 else {})}
    names = [f"tenant-{i:02d}" for i in range(count)]
    settings = parse({**MODEL, "apiKeys": {n: dict(tenant) for n in names}})
    limits = stack_limits(settings, choose_plan(settings))
    hashes = {n: [key_hash(secrets.token_urlsafe(36)) for _ in range(keys)] for n in names}
    value = replica_tenants.bundle_for(settings, limits, hashes, secrets.token_urlsafe(36)[:48])
    try:
        tier = replica_tenants.parameter_tier(settings, limits)
    except ValueError:
        tier = "refused"
    return len(value), replica_tenants.bundle_size_bound(settings, limits), tier


def main() -> None:
    for keys in (1, 2):
        print(f"\n{keys} key(s) per tenant: tenants, value chars, bound chars, tier")
        most: dict[str, int] = {}
        previous = ""
        for count in range(1, MOST_TENANTS + 1):
            size, bound, tier = measure(count, keys)
            if tier != "refused":
                most[tier] = count
            if count in (1, 2, 5, 10, 20, 30, 40, 50, 64) or tier != previous:  # and where the tier changes
                print(f"  {count:3d} {size:6d} {bound:6d} {tier}")
            previous = tier
        print(f"  most tenants: Standard {most.get('Standard', 0)}, Advanced {most.get('Advanced', 0)}")


if __name__ == "__main__":
    main()
