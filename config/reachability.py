"""Settings that are valid one by one but together leave a feature unreachable. Pure.

`config.validation.parse()` runs `unreachable_features()` after validating each value, so a stack
that could never use what it asks for fails at preview with the keys involved and a fix. Checks
that need the sizing decision (the instance's capacity, the served context length) live with
the proxy's limits (serving.proxy_limits.stack_limits).
"""

from __future__ import annotations

import ipaddress

from config.access import THIS_MACHINE
from config.constants import NAMESPACE
from config.settings import StackConfig


def uncovered(network: str, cover: list[str]) -> list[str]:
    """The parts of `network` that no CIDR in `cover` contains (empty: wholly covered)."""
    left = [ipaddress.ip_network(network)]
    for raw in cover:
        if raw == THIS_MACHINE:
            continue
        block = ipaddress.ip_network(raw)
        remaining = []
        for part in left:
            if part.version != block.version or not part.overlaps(block):
                remaining.append(part)
            elif not part.subnet_of(block):  # type: ignore[arg-type]
                remaining.extend(part.address_exclude(block))  # type: ignore[arg-type]
        left = remaining
    return [str(n) for n in ipaddress.collapse_addresses(left)]  # type: ignore[arg-type]


def unreachable_features(config: StackConfig) -> list[str]:
    """Problems, each naming the keys involved and a fix, for settings that are valid one by
    one but together make a feature unreachable. The host has one IPv4 address; its security
    group opens 443 (the API and /metrics) and 80 only to allowedCidrs (80 to all with
    letsencrypt), and 22 to sshAllowedCidrs; nginx listens on IPv4."""
    ns = NAMESPACE
    problems = []
    if not config.allowed_cidrs:
        problems.append(
            f"{ns}:allowedCidrs is empty: the security group would open the API (443) to nobody; "
            "list your clients' networks, e.g. 203.0.113.0/24, or 0.0.0.0/0 for any address "
            "(the API key still guards it)"
        )
    if not config.ssh_allowed_cidrs:
        problems.append(
            f"{ns}:sshAllowedCidrs is empty: provisioning runs over SSH from where `pulumi up` runs; "
            "use [auto] (this machine's address) or list that machine's network"
        )
    ssh = config.ssh_allowed_cidrs
    if ssh and not any(c == THIS_MACHINE or ipaddress.ip_network(c).version == 4 for c in ssh):
        problems.append(
            f"{ns}:sshAllowedCidrs {ssh} holds only IPv6 networks, but the host has only an IPv4 "
            "address and provisioning reaches it over SSH: add the IPv4 address `pulumi up` runs "
            "from, e.g. pulumi config set --path 'sshAllowedCidrs[0]' auto"
        )
    for key, cidrs in (("allowedCidrs", config.allowed_cidrs), ("metricsAllowedCidrs", config.metrics_allowed_cidrs)):
        for cidr in cidrs:
            if ipaddress.ip_network(cidr).version == 6:
                problems.append(
                    f"{ns}:{key} entry {cidr!r} is IPv6, but the host has only an IPv4 address and "
                    f"nginx listens on IPv4: nothing from it could ever connect; remove it"
                )
    ipv4_allowed = [c for c in config.allowed_cidrs if ipaddress.ip_network(c).version == 4]
    for cidr in config.metrics_allowed_cidrs:
        if ipaddress.ip_network(cidr).version == 6:
            continue
        outside = uncovered(cidr, ipv4_allowed)
        if outside:
            part = "is" if outside == [cidr] else f"is partly ({', '.join(outside)})"
            problems.append(
                f"{ns}:metricsAllowedCidrs entry {cidr!r} {part} outside {ns}:allowedCidrs: the "
                f"security group opens 443, where /metrics is served, only to allowedCidrs, so "
                f"those addresses could never read it; add {cidr} to allowedCidrs (pulumi config "
                f"set --path 'allowedCidrs[{len(config.allowed_cidrs)}]' {cidr}) or remove it "
                f"from metricsAllowedCidrs"
            )
    if config.letsencrypt_email and config.tls != "letsencrypt":
        problems.append(
            f"{ns}:letsencryptEmail is set but {ns}:tls={config.tls!r}: the address is only given "
            "to Let's Encrypt; set tls to letsencrypt (with domain), or pulumi config rm letsencryptEmail"
        )
    return problems
