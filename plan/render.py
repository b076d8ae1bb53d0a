"""The plan as text for people (rich tables) or as JSON for machines."""

from __future__ import annotations

import json
import shlex
from typing import Any, Optional, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from plan.summary import PlanSummary
from sizing import gpus

# Wide enough for the resource table when the output is a file or a pipe (no terminal width).
PIPE_WIDTH = 200


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _money(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def to_json(summary: PlanSummary) -> str:
    return json.dumps(summary.to_dict(), indent=2, default=str)


def _console(out: TextIO) -> Console:
    width = None if out.isatty() else PIPE_WIDTH
    return Console(file=out, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False)


def _resources(summary: PlanSummary) -> Table:
    cloud = sum(1 for r in summary.resources if r.custom and not r.type.startswith("pulumi:providers:"))
    table = Table(title=Text(f"Resources: {len(summary.resources)} to create ({cloud} in the cloud or on the host)"),
                  title_justify="left", show_lines=False)
    table.add_column("type", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("key inputs", overflow="fold", min_width=60)
    for row in summary.resources:
        inputs = ", ".join(f"{k}={_compact(v)}" for k, v in row.inputs.items())
        table.add_row(Text(row.type), Text("  " * row.depth + row.name), Text(inputs))
    return table


def _cost(summary: PlanSummary) -> Optional[Table]:
    cost = summary.cost
    if cost is None:
        return None
    table = Table(title=Text("Cost (USD, us-east-1 list prices)"), title_justify="left")
    table.add_column("item")
    table.add_column("per hour", justify="right")
    table.add_column("per month", justify="right")
    for item, hourly, monthly in cost.lines():
        table.add_row(Text(item), Text(_money(hourly)), Text(_money(monthly, 2)))
    return table


def to_text(summary: PlanSummary, out: TextIO, *, nginx: bool = False) -> None:
    console = _console(out)
    console.print(f"Plan of stack '{summary.stack}' (vllm-deploy): offline, nothing is created and no AWS "
                  "account is asked")
    console.print()
    console.print("Sizing")
    for line in summary.report:
        console.print(Text("  " + line.replace("\n", "\n  ")))
    for line in summary.warnings:
        console.print(Text("  warning: " + line))
    console.print()
    console.print(_resources(summary))
    console.print()
    image = summary.vllm_image or "?"
    console.print(Text(f"vLLM command (in {image}, whose entrypoint is `vllm serve`):"))
    console.print(Text("  " + shlex.join(["vllm", "serve", *summary.vllm_argv])), soft_wrap=True)
    console.print()
    if summary.tenants is not None:
        console.print(Text("Tenants (apiKeys; nginx checks their keys, which the secret output apiKeys holds):"))
        for line in tenant_lines(summary.tenants):
            console.print(Text("  " + line))
        console.print()
    cost = _cost(summary)
    if cost is not None:
        console.print(cost)
        surge = summary.outputs.get("refreshSurge")
        if isinstance(surge, dict):  # a fleet never stops; an update briefly doubles it
            scaling = summary.outputs.get("scaling")
            console.print(Text(
                f"  fleet: {summary.cost.instances} replicas; the stopped image builder's volumes and address "
                "are in the volumes and IPv4 lines. An update (instance refresh) launches "
                f"{surge['extraInstances']} more instances ({surge['extraGpus']} GPUs, {surge['extraVcpus']} "
                f"vCPUs; {surge['peakVcpus']} vCPUs at the peak) until the old ones retire: "
                + _quota(scaling if isinstance(scaling, dict) else {})
            ))
            if isinstance(scaling, dict):  # issue 26: maxReplicas, warmReplicas, spot
                for line in scaling_lines(scaling):
                    console.print(Text("  " + line))
        else:
            several = summary.cost.public_ipv4_addresses > 1
            console.print(Text(f"  stopped instance{'s' if several else ''}: "
                               f"{_money(summary.cost.stopped_usd_per_month, 2)}/month "
                               f"(the volumes and the Elastic IP{'s' if several else ''} still bill)"))
            quota = _host_quota(summary)
            if quota:
                console.print(Text("  " + quota))
        for source in summary.cost.to_dict()["sources"]:
            console.print(Text(f"  source: {source}"))
        console.print()
    outputs = Table(title=Text("Stack outputs"), title_justify="left")
    outputs.add_column("output", no_wrap=True)
    outputs.add_column("value", overflow="fold")
    for name, value in summary.outputs.items():
        if name == "sizing":
            value = "(the sizing above; --json shows it whole)"
        outputs.add_row(Text(name), Text(_compact(value)))
    console.print(outputs)
    if nginx:
        console.print()
        console.print("nginx config (/etc/nginx/nginx.conf in the proxy container):")
        console.print(Text(summary.nginx_config or "(none)"), soft_wrap=True)
    console.print()
    for note in summary.notes:
        console.print(Text(f"note: {note}"))
    if not nginx:
        console.print(Text(f"note: the nginx config: tools/plan {summary.stack} --nginx"))


# EC2's on-demand vCPU quotas per instance family (Service Quotas, service code ec2): G and VT
# (g*, gr*) L-DB2E81BA, P L-417A185B; README "Prerequisites".
_ON_DEMAND_QUOTAS = {"g": ("Running On-Demand G and VT instances", "L-DB2E81BA"),
                     "p": ("Running On-Demand P instances", "L-417A185B")}


def _host_quota(summary: PlanSummary) -> Optional[str]:
    """The vCPUs the planned host(s) need of which on-demand quota, and the command that reads it
    (None when the plan has no instance or its family has no quota listed here)."""
    sizing = summary.sizing or {}
    name = sizing.get("instanceType")
    quota = _ON_DEMAND_QUOTAS.get(str(name or "")[:1])
    if not name or quota is None:
        return None
    try:
        vcpus = gpus.get(name).vcpus * int(sizing.get("nodes") or 1)
    except KeyError:
        return None
    region = next((r.inputs.get("region") for r in summary.resources if r.type == "pulumi:providers:aws"
                   and r.inputs.get("region")), "us-east-1")
    return (f"quota: {vcpus} vCPUs of '{quota[0]}' in {region} (0 on most new accounts); check it: "
            f"aws service-quotas get-service-quota --service-code ec2 --quota-code {quota[1]} "
            f"--region {region} --query Quota.Value")


def _quota(scaling: dict) -> str:
    """Which of EC2's vCPU quotas a fleet's refresh surge counts against: on-demand and spot
    instances have separate ones per family (Service Quotas, EC2: 'Running On-Demand G and VT
    instances' L-DB2E81BA, 'All G and VT Spot Instance Requests' L-3819A6DF; P: L-417A185B,
    L-7212CCBC; docs/fleet.md)."""
    if scaling.get("spot"):
        return (f"the family's on-demand vCPU quota counts the {scaling['onDemandReplicas']} on-demand "
                "replica(s), its spot vCPU quota (a separate one, e.g. 'All G and VT Spot Instance "
                "Requests') the spot ones: both must allow it")
    return "the account's on-demand vCPU quota for the family must allow it"


def scaling_lines(scaling: dict) -> list[str]:
    """What a scaling, warm-pool or spot fleet adds to the bill (the fleet's `scaling` output):
    the month at the minimum and at the maximum, the warm pool's volumes, what scaling watches."""
    lines = []
    if scaling.get("scales"):
        lines.append(
            f"scaling: {scaling['minReplicas']} to {scaling['maxReplicas']} replicas on {scaling['metric']}, "
            f"target {scaling['targetWaitingRequestsPerReplica']:g} waiting requests per replica; out after "
            f"~{scaling['scaleOutAfterMinutes']} min above it (plus a replica's start), in after "
            f"~{scaling['scaleInAfterMinutes']} min below it"
        )
        lines.append(
            f"  per month: {_money(scaling['costAtMinPerMonth'], 2)} at {scaling['minReplicas']} replicas (the table), "
            f"{_money(scaling['costAtMaxPerMonth'], 2)} at {scaling['maxReplicas']}"
        )
    if scaling.get("warmReplicas"):
        lines.append(
            f"warm pool: {scaling['warmReplicas']} stopped instance(s), volumes only: "
            f"{_money(scaling['warmPoolPerMonth'], 2)}/month on top"
        )
    if scaling.get("spot"):
        lines.append(
            f"spot: {scaling['onDemandReplicas']} on-demand, the rest spot ({scaling['spotAllocationStrategy']}) over "
            f"{', '.join(scaling['instanceTypes'])}; instance prices above are on-demand, the ceiling; streams "
            f"longer than ~{scaling['spotStreamBoundSeconds']} s can be cut when a spot replica is interrupted"
        )
    return lines


def tenant_lines(tenants: list[dict]) -> list[str]:
    """One line per tenant: its limits and whether its key is generated (which generation) or
    given, and whether a previous key is still accepted; never a key."""
    lines = []
    for t in tenants:
        rate = f"{t['rateLimitPerMinute']} requests/min" if t.get("rateLimitPerMinute") else "no rate limit of its own"
        concurrent = f"{t.get('maxConcurrentRequests') or '?'} concurrent requests"
        if t.get("maxConcurrentRequestsIsDefault"):
            concurrent += " (the default: what vLLM batches at once)"
        key = f"generated key, rotation {t.get('rotation', 0)}" if t["key"] == "generated" else "given key (secret)"
        previous = "; the previous key is accepted too" if t.get("acceptsPreviousKey") else ""
        lines.append(f"{t['name']}: {rate}, {concurrent}; {key}{previous}")
    return lines
