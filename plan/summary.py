"""What `tools/plan` reports, read from the recording of one preview run of the program.

Everything here comes from what the program registered, logged and exported under the
in-process engine (plan.engine): the resource table is the registrations, the vLLM command is
the container's command input, the nginx config is the file uploaded into the proxy container.
Secret values are masked before anything leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi

from components.naming import component_type
from components.vllm_server import CONTAINER_NAME
from plan.engine import ROOT, ProgramRun, Registered, is_secret, is_unknown
from sizing.costs import HostCost
from sizing.start_stages import VolumePerformance

SECRET = "[secret]"
UNKNOWN = "(known after apply)"

INSTANCE = "aws:ec2/instance:Instance"
EIP = "aws:ec2/eip:Eip"
EBS_VOLUME = "aws:ebs/volume:Volume"
CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/remoteImage:RemoteImage"

# The inputs worth a column per resource type (dotted paths into the inputs).
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    INSTANCE: (
        "instanceType", "ami", "rootBlockDevice.volumeType", "rootBlockDevice.volumeSize",
        "instanceMarketOptions.marketType", "metadataOptions.httpTokens", "placementGroup",
    ),
    "aws:ec2/placementGroup:PlacementGroup": ("strategy",),
    "aws:ebs/volume:Volume": ("size", "type", "encrypted", "availabilityZone"),
    "aws:ec2/networkInterface:NetworkInterface": ("interfaceType",),
    "aws:ec2/securityGroup:SecurityGroup": ("vpcId",),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "ipProtocol", "fromPort", "cidrIpv4", "cidrIpv6", "referencedSecurityGroupId",
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (
        "ipProtocol", "cidrIpv4", "cidrIpv6", "referencedSecurityGroupId",
    ),
    EIP: ("domain",),
    "aws:ec2/keyPair:KeyPair": ("publicKey",),
    "aws:iam/role:Role": ("description",),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
    "tls:index/privateKey:PrivateKey": ("algorithm", "ecdsaCurve"),
    "tls:index/selfSignedCert:SelfSignedCert": ("subject.commonName", "validityPeriodHours"),
    "tls:index/certRequest:CertRequest": ("subject.commonName",),
    "tls:index/locallySignedCert:LocallySignedCert": ("validityPeriodHours",),
    "random:index/randomShuffle:RandomShuffle": ("inputs",),
    "random:index/randomPassword:RandomPassword": ("length",),
    IMAGE: ("name",),
    CONTAINER: ("name", "gpus", "networkMode", "ports"),
    "command:remote:Command": ("create",),
    "command:remote:CopyToRemote": ("source", "remotePath"),
    "aws:autoscaling/group:Group": (
        "desiredCapacity", "healthCheckType", "launchTemplate.version",
        "instanceRefresh.preferences.minHealthyPercentage", "instanceRefresh.preferences.maxHealthyPercentage",
    ),
    "aws:ec2/launchTemplate:LaunchTemplate": (
        "instanceType", "metadataOptions.httpTokens", "metadataOptions.httpPutResponseHopLimit",
    ),
    "aws:ec2/amiFromInstance:AmiFromInstance": ("name",),
    "aws:ec2transitgateway/instanceState:InstanceState": ("state",),
    "aws:lb/loadBalancer:LoadBalancer": ("loadBalancerType", "idleTimeout"),
    "aws:lb/targetGroup:TargetGroup": ("protocol", "port", "deregistrationDelay", "healthCheck.path"),
    "aws:lb/listener:Listener": ("port", "protocol", "sslPolicy"),
    "aws:lb/listenerRule:ListenerRule": ("priority",),
    "aws:acm/certificate:Certificate": ("domainName", "validationMethod"),
    "aws:ssm/parameter:Parameter": ("name", "type"),
    "pulumi:providers:aws": ("region",),
    "pulumi:providers:docker": ("host",),
}


def shown(value: Any) -> Any:
    """A recorded input as a user may see it: secrets masked, unknowns named, assets as paths,
    whole numbers as integers (the engine's wire format has only floats)."""
    if is_secret(value):
        return SECRET
    if is_unknown(value):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, pulumi.FileAsset):
        path = Path(value.path)
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown(v) for v in value]
    return value


def _lookup(inputs: dict[str, Any], path: str) -> Any:
    value: Any = inputs
    for part in path.split("."):
        if is_secret(value):
            return value  # masked by shown(): never dig into a secret
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class ResourceRow:
    type: str
    name: str
    depth: int  # how many of our resources it is nested under
    parent: Optional[str]  # the parent's name (None for a child of the stack)
    custom: bool  # a cloud (or provider) resource, not a component
    inputs: dict[str, Any]  # key inputs, masked

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "parent": self.parent, "custom": self.custom,
                "inputs": self.inputs}


@dataclass
class PlanSummary:
    stack: str
    sizing: Optional[dict[str, Any]]
    report: list[str]  # the program's info log lines (the sizing report)
    warnings: list[str]
    resources: list[ResourceRow]
    vllm_image: Optional[str]
    vllm_argv: list[str]
    nginx_config: Optional[str]
    cost: Optional[HostCost]
    outputs: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what this offline plan assumed
    tenants: Optional[list[dict[str, Any]]] = None  # apiKeys: names, limits, given/generated; never a key

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "sizing": self.sizing,
            "sizingReport": "\n".join(self.report),
            "warnings": self.warnings,
            "resources": [r.to_dict() for r in self.resources],
            "vllmCommand": {"image": self.vllm_image, "entrypoint": ["vllm", "serve"], "args": self.vllm_argv},
            "nginxConfig": self.nginx_config,
            "cost": self.cost.to_dict() if self.cost else None,
            "outputs": self.outputs,
            "notes": self.notes,
            **({"tenants": self.tenants} if self.tenants is not None else {}),
        }


def _tree_order(run: ProgramRun) -> list[Registered]:
    """Parents before their children, siblings by name: registration order varies from run to
    run (outputs resolve concurrently), and a plan should diff cleanly against the last one."""
    urns = {r.urn for r in run.resources}
    children: dict[str, list[Registered]] = {}
    for res in run.resources:
        children.setdefault(res.parent if res.parent in urns else "", []).append(res)
    ordered: list[Registered] = []

    def visit(parent: str) -> None:
        for res in sorted(children.get(parent, []), key=lambda r: (r.name, r.type)):
            ordered.append(res)
            visit(res.urn)

    visit("")
    return ordered


def resource_rows(run: ProgramRun) -> list[ResourceRow]:
    """Every registered resource, in tree order, with its key inputs (masked)."""
    rows = []
    for res in _tree_order(run):
        ancestors = list(run.ancestors(res))
        keys = KEY_INPUTS.get(res.type, ())
        inputs = {k: shown(v) for k in keys if (v := _lookup(res.inputs, k)) is not None}
        rows.append(ResourceRow(res.type, res.name, len(ancestors), ancestors[0].name if ancestors else None,
                                res.custom, inputs))
    return rows


def _container(run: ProgramRun, name: str) -> Optional[Registered]:
    found = [r for r in run.of_type(CONTAINER) if r.plain.get("name") == name]
    return found[0] if found else None


def _image_of(run: ProgramRun, container: Registered) -> Optional[str]:
    images = [r for r in run.of_type(IMAGE) if r.parent == container.parent]
    return images[0].plain.get("name") if images else None


def nginx_config(run: ProgramRun) -> Optional[str]:
    """The config the proxy component registered as its `nginxConfig` output (the container's
    uploads hold it too, but inside one secret list with the TLS key)."""
    for component in run.of_type(component_type("NginxProxy")):
        config = component.outputs.get("nginxConfig")
        if config is not None:
            return shown(config)
    return None


def tenants(run: ProgramRun) -> Optional[list[dict[str, Any]]]:
    """The tenants (apiKeys) as the TenantApiKeys component registered them (components.tenant_keys
    .tenant_summary: no key in it); None without apiKeys."""
    for component in run.of_type(component_type("TenantApiKeys")):
        rows = component.outputs.get("tenants")
        if rows is not None:
            return shown(rows)
    return None


def _fleet(run: ProgramRun) -> Optional[Registered]:
    found = run.of_type(component_type("VllmFleet"))
    return found[0] if found else None


def fleet_cost(fleet: Registered) -> HostCost:
    """A fleet's bill as the fleet component registered it (its replicas are the Auto Scaling
    group's, not recorded instances): replicas, their volumes and addresses, the stopped builder,
    the load balancer."""
    cost = fleet.outputs["costBreakdown"]
    return HostCost(
        instance_usd_per_hour=cost.get("instancePerHour"),
        volume_gb=int(cost["volumeGb"]),
        public_ipv4_addresses=int(cost["publicIpv4Addresses"]),
        spot=bool(cost.get("spot")),
        load_balancers=int(cost.get("loadBalancers", 0)),
        instances=int(cost.get("instances", 1)),
        volume_performance_usd_per_month=float(cost.get("volumePerformancePerMonth") or 0.0),
    )


def host_cost(run: ProgramRun) -> Optional[HostCost]:
    """The bill of the recorded hosts: the instances' price (the sizing's, all nodes together),
    their root volumes plus the model volumes, and one public IPv4 address per Elastic IP. A
    fleet: fleet_cost."""
    fleet = _fleet(run)
    if fleet is not None:
        return fleet_cost(fleet)
    instances = run.of_type(INSTANCE)
    sizing = run.exports.get("sizing")
    if not instances or sizing is None:
        return None
    roots = [(i.plain.get("rootBlockDevice") or {}).get("volumeSize") for i in instances]
    volumes = [v.plain.get("size") for v in run.of_type(EBS_VOLUME)]
    performance = sum(
        VolumePerformance(int(v.plain.get("throughput") or 125), int(v.plain.get("iops") or 3000)).usd_per_month
        for v in run.of_type(EBS_VOLUME)
    )
    market = (instances[0].plain.get("instanceMarketOptions") or {}).get("marketType")
    return HostCost(
        instance_usd_per_hour=sizing.value.get("hourlyPriceUsd"),
        volume_gb=sum(int(r or 0) for r in roots) + sum(int(v or 0) for v in volumes),
        public_ipv4_addresses=len(run.of_type(EIP)),
        spot=market == "spot",
        volume_performance_usd_per_month=performance,
    )


def _output(export: Any) -> Any:
    if export.secret:
        return SECRET
    if not export.known:
        return UNKNOWN
    return shown(export.value)


def summarize(run: ProgramRun, stack: str, notes: Optional[list[str]] = None) -> PlanSummary:
    """The plan of a run that succeeded (run.error is None)."""
    vllm = _container(run, CONTAINER_NAME)
    sizing = run.exports.get("sizing")
    fleet = _fleet(run)
    if fleet is not None:  # the replicas' argv is baked into the image, the same as a host's
        image, argv = fleet.outputs.get("vllmImage"), fleet.outputs.get("vllmCommand") or []
    else:
        image = _image_of(run, vllm) if vllm else None
        argv = vllm.inputs.get("command") or [] if vllm else []
    return PlanSummary(
        stack=stack,
        sizing=sizing.value if sizing is not None else None,
        report=[line.message for line in run.log if line.severity == "info"],
        warnings=[line.message for line in run.log if line.severity != "info"],
        resources=resource_rows(run),
        vllm_image=image,
        vllm_argv=[str(a) for a in shown(argv)],
        nginx_config=nginx_config(run),
        cost=host_cost(run),
        outputs={name: _output(export) for name, export in run.exports.items()},
        notes=list(notes or []),
        tenants=tenants(run),
    )
