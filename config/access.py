"""Network lists of the access keys (allowedCidrs, sshAllowedCidrs, metricsAllowedCidrs,
grafanaAllowedCidrs): CIDR blocks checked and written in canonical form. Pure."""

from __future__ import annotations

import ipaddress

# In sshAllowedCidrs: the public IPv4 address `pulumi` runs from, looked up at preview time.
THIS_MACHINE = "auto"


def cidr_list(value: list[str], key: str) -> list[str]:
    """The CIDR blocks of `value` in canonical form (a bare address gets /32 or /128);
    THIS_MACHINE is kept as is in ssh_allowed_cidrs (`key` is the field name).

    Raises ValueError for a value that is not a CIDR block, or one with host bits set
    (naming the block meant)."""
    checked = []
    for raw in value:
        if raw == THIS_MACHINE and key == "ssh_allowed_cidrs":
            checked.append(raw)
            continue
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise ValueError(
                f"{raw!r} is not a CIDR block; write one as 203.0.113.0/24 "
                f"(IPv4 prefix 0-32) or 2001:db8::/32"
            ) from None
        if str(net) != raw and "/" in raw:
            raise ValueError(
                f"{raw!r} has host bits set; did you mean {str(net)!r}?"
            )
        checked.append(str(net) if "/" in raw else f"{raw}/{net.max_prefixlen}")
    return checked


def inside_any(cidr: str, blocks: list[str]) -> bool:
    """Whether every address of `cidr` lies in one of `blocks` (same IP version)."""
    net = ipaddress.ip_network(cidr)
    for raw in blocks:
        block = ipaddress.ip_network(raw)
        if block.version == net.version and net.subnet_of(block):  # type: ignore[arg-type]
            return True
    return False


def within(blocks: list[str], cover: list[str]) -> list[str]:
    """The addresses of `blocks` that also lie in `cover`, as CIDR blocks (collapsed, per IP
    version); THIS_MACHINE in either list is skipped. Two CIDR blocks either nest or are
    disjoint, so each overlap is the smaller of the two."""
    found: list = []
    for raw in blocks:
        if raw == THIS_MACHINE:
            continue
        net = ipaddress.ip_network(raw)
        for other in cover:
            if other == THIS_MACHINE:
                continue
            block = ipaddress.ip_network(other)
            if block.version != net.version or not net.overlaps(block):
                continue
            found.append(net if net.subnet_of(block) else block)  # type: ignore[arg-type]
    v4 = [n for n in found if n.version == 4]
    v6 = [n for n in found if n.version == 6]
    return [str(n) for group in (v4, v6) for n in ipaddress.collapse_addresses(group)]
