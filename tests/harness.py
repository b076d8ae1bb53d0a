"""Runs the whole Pulumi program (`__main__.py`) in-process against recording mocks.

The mocks stand in for the Pulumi engine and the cloud, nothing else: they record every
registered resource (type, name, inputs with secretness kept, parent, dependencies, resource
options), every invoke, and the stack exports, and answer invokes with what AWS would say.
Tests then assert invariants and wiring on the recording, never the mocks' own echo.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
PROJECT = "vllm-deploy"

_SECRET_SIG = rpc._special_sig_key
_SECRET_VALUE = rpc._special_secret_sig


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SECRET_SIG) == _SECRET_VALUE


def reveal(value: Any) -> Any:
    """The plain value with every secret wrapper removed (for asserting on content)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def plain_text(value: Any) -> str:
    """Everything in `value` that is NOT under a secret wrapper, as one string to search."""
    if is_secret(value):
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k} {plain_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(plain_text(v) for v in value)
    return "" if value is None else str(value)


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]  # as the engine receives them; secrets stay wrapped
    parent: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    provider: str
    replace_on_changes: list[str]
    delete_before_replace: bool
    ignore_changes: list[str]
    aliases: list[Any]
    error_hooks: list[str]
    deleted_with: str
    additional_secret_outputs: list[str]
    replacement_trigger: Any
    retain_on_delete: bool = False

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)

    def depends_on(self, other: "Registered") -> bool:
        deps = set(self.dependencies)
        for urns in self.property_dependencies.values():
            deps.update(urns)
        return other.urn in deps


@dataclass
class Invoke:
    token: str
    args: dict[str, Any]


class InvokeFailure(Exception):
    """What AWS answers when a lookup finds nothing: the engine reports it as a failed invoke."""


class AwsWorld:
    """What the AWS and hub invokes answer. Tests change fields to simulate other accounts."""

    def __init__(self) -> None:
        self.region = "us-east-1"
        self.offered_instance_types: Optional[set[str]] = None  # None = every type
        self.zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
        self.zone_offerings: dict[str, set[str]] = {}  # zone -> types; empty = all zones offer all
        self.has_default_vpc = True
        self.images_available = True
        # What DescribeInstances / DescribeVolumes would list: dicts with id, state (instances)
        # or status, zone and size (volumes), and tags (the provider's default tags included).
        self.instances: list[dict[str, Any]] = []
        self.volumes: list[dict[str, Any]] = []

    def answer(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = _INVOKES.get(token)
        if handler is None:
            raise AssertionError(f"the program made an invoke the mocks do not model: {token}")
        return handler(self, args)


def _filters(args: dict[str, Any]) -> dict[str, list[str]]:
    return {f["name"]: list(f["values"]) for f in args.get("filters") or []}


def _offerings(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    wanted = _filters(args).get("instance-type")
    location_type = args.get("locationType", "region")
    from sizing.gpus import load_instances  # the catalog is what AWS would list

    every = [i.name for i in load_instances()]
    types = [t for t in every if world.offered_instance_types is None or t in world.offered_instance_types]
    if wanted is not None:
        types = [t for t in types if t in wanted]
    if location_type == "availability-zone":
        zone_filter = _filters(args).get("location")
        rows = []
        for zone in world.zones:
            if zone_filter and zone not in zone_filter:
                continue
            offered_here = world.zone_offerings.get(zone)
            rows += [(t, zone) for t in types if offered_here is None or t in offered_here]
        return {
            "instanceTypes": [t for t, _ in rows],
            "locations": [z for _, z in rows],
            "locationTypes": ["availability-zone"] * len(rows),
            "id": world.region,
        }
    return {
        "instanceTypes": types,
        "locations": [world.region] * len(types),
        "locationTypes": ["region"] * len(types),
        "id": world.region,
    }


def _ami(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    if not world.images_available:
        raise InvokeFailure("Your query returned no results. Please change your search criteria and try again.")
    names = _filters(args).get("name", ["?"])
    arch = _filters(args).get("architecture", ["x86_64"])[0]
    return {
        "id": "ami-0123456789abcdef0" if arch == "x86_64" else "ami-0fedcba9876543210",
        "imageId": "ami-0123456789abcdef0" if arch == "x86_64" else "ami-0fedcba9876543210",
        "name": names[0].replace("*", "20261101"),
        "architecture": arch,
        "rootDeviceName": "/dev/sda1",
        "ownerId": (args.get("owners") or ["?"])[0],
    }


def _vpc(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("id") and not world.has_default_vpc:
        raise InvokeFailure("no matching EC2 VPC found")
    return {"id": args.get("id") or "vpc-0default0000000", "cidrBlock": "172.31.0.0/16", "default": True}


def _subnets(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    zones = _filters(args).get("availability-zone") or world.zones
    return {"ids": [f"subnet-{zone[-1]}{'0' * 15}" for zone in zones], "id": "subnets"}


def _subnet(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    subnet_id = args.get("id", "subnet-a000000000000000")
    zone = f"{world.region}{subnet_id[len('subnet-')]}"
    return {"id": subnet_id, "availabilityZone": zone, "vpcId": "vpc-0default0000000"}


def _zones(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"names": list(world.zones), "zoneIds": [f"use1-az{i}" for i, _ in enumerate(world.zones)], "id": world.region}


def _region(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": world.region, "region": world.region, "id": world.region}


def _caller(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/test", "userId": "AIDTEST", "id": "123456789012"}


def _partition(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}


def _tagged(item: dict[str, Any], tags: Optional[dict[str, str]]) -> bool:
    return all(item.get("tags", {}).get(k) == v for k, v in (tags or {}).items())


def _instances(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    states = args.get("instanceStateNames") or ["pending", "running", "stopping", "stopped"]
    ids = [i["id"] for i in world.instances if i["state"] in states and _tagged(i, args.get("instanceTags"))]
    return {"ids": ids, "privateIps": [], "publicIps": [], "ipv6Addresses": [], "id": world.region}


def _ebs_volumes(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    statuses = _filters(args).get("status")
    ids = [
        v["id"] for v in world.volumes
        if _tagged(v, args.get("tags")) and (statuses is None or v["status"] in statuses)
    ]
    return {"ids": ids, "id": world.region}


def _volume(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    wanted = _filters(args).get("volume-id") or []
    found = [v for v in world.volumes if v["id"] in wanted]
    if not found:
        raise InvokeFailure("Your query returned no results. Please change your search criteria and try again.")
    volume = found[-1]
    return {"id": volume["id"], "volumeId": volume["id"], "availabilityZone": volume["zone"],
            "size": volume["size"], "encrypted": True, "volumeType": "gp3", "tags": volume.get("tags", {})}


_INVOKES: dict[str, Callable[[AwsWorld, dict[str, Any]], dict[str, Any]]] = {
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": _offerings,
    "aws:ec2/getAmi:getAmi": _ami,
    "aws:ec2/getVpc:getVpc": _vpc,
    "aws:ec2/getSubnets:getSubnets": _subnets,
    "aws:ec2/getSubnet:getSubnet": _subnet,
    "aws:index/getAvailabilityZones:getAvailabilityZones": _zones,
    "aws:index/getRegion:getRegion": _region,
    "aws:index/getCallerIdentity:getCallerIdentity": _caller,
    "aws:index/getPartition:getPartition": _partition,
    "aws:ec2/getInstances:getInstances": _instances,
    "aws:ebs/getEbsVolumes:getEbsVolumes": _ebs_volumes,
    "aws:ebs/getVolume:getVolume": _volume,
}


def _resource_id(typ: str, name: str) -> str:
    """The id the provider would assign: EC2's own shape where a host script checks it."""
    if typ == "aws:ebs/volume:Volume":
        return "vol-0" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name}-id"


def _computed_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Only what the provider computes (the unit-testing guide: echo inputs, add computed)."""
    if typ == "aws:ec2/instance:Instance":
        return {"publicIp": "198.51.100.7", "privateIp": "172.31.5.9", "arn": f"arn:aws:ec2:::instance/{name}"}
    if typ == "aws:ec2/eip:Eip":
        return {"publicIp": "203.0.113.10", "allocationId": f"eipalloc-{abs(hash(name)) % 10**8:08d}"}
    if typ == "aws:iam/role:Role":
        return {"arn": f"arn:aws:iam::123456789012:role/{name}", "name": inputs.get("name", name)}
    if typ == "aws:iam/instanceProfile:InstanceProfile":
        return {"arn": f"arn:aws:iam::123456789012:instance-profile/{name}", "name": inputs.get("name", name)}
    if typ == "aws:ec2/keyPair:KeyPair":
        return {"keyName": inputs.get("keyName", name)}
    if typ == "tls:index/privateKey:PrivateKey":
        return {
            "privateKeyOpenssh": "-----BEGIN OPENSSH PRIVATE KEY-----\nMOCKPRIVATEKEY\n-----END OPENSSH PRIVATE KEY-----\n",
            "privateKeyPem": "-----BEGIN PRIVATE KEY-----\nMOCKPRIVATEKEYPEM\n-----END PRIVATE KEY-----\n",
            "publicKeyOpenssh": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOCKPUBLICKEY mock\n",
        }
    if typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
        return {"certPem": f"-----BEGIN CERTIFICATE-----\nMOCK{name}\n-----END CERTIFICATE-----\n"}
    if typ == "tls:index/certRequest:CertRequest":
        return {"certRequestPem": "-----BEGIN CERTIFICATE REQUEST-----\nMOCK\n-----END CERTIFICATE REQUEST-----\n"}
    if typ == "random:index/randomShuffle:RandomShuffle":
        return {"results": list(inputs.get("inputs", []))[: int(inputs.get("resultCount", 1))]}
    if typ == "random:index/randomPassword:RandomPassword":
        return {"result": "mock-generated-api-key-0123456789abcdef"}
    if typ == "command:remote:Command":
        return {"stdout": "", "stderr": ""}
    if typ == "docker:index/remoteImage:RemoteImage":
        return {"imageId": f"sha256:{'0' * 64}", "repoDigest": f"{inputs.get('name', '')}@sha256:{'1' * 64}"}
    return {}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, world: AwsWorld):
        self.world = world
        self.invokes: list[Invoke] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = {**args.inputs, **_computed_outputs(args.typ, args.name, args.inputs)}
        return _resource_id(args.typ, args.name), outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.invokes.append(Invoke(args.token, reveal(args.args)))
        try:
            return self.world.answer(args.token, args.args), []
        except InvokeFailure as failure:
            return {}, [("", str(failure))]


def _value(proto_value) -> Any:
    """A protobuf Value as the plain Python value it carries."""
    from google.protobuf import json_format

    return json_format.MessageToDict(proto_value)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                    provider=request.provider,
                    replace_on_changes=list(request.replaceOnChanges),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    ignore_changes=list(request.ignoreChanges),
                    aliases=list(request.aliases),
                    error_hooks=list(request.hooks.on_error),
                    deleted_with=request.deletedWith,
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    replacement_trigger=_value(request.replacement_trigger)
                    if request.HasField("replacement_trigger")
                    else None,
                    retain_on_delete=request.HasField("retainOnDelete") and request.retainOnDelete,
                )
            )
        return response


@dataclass
class Export:
    value: Any
    secret: bool
    known: bool


@dataclass
class ProgramRun:
    resources: list[Registered]
    invokes: list[Invoke]
    exports: dict[str, Export]
    logs: list[str] = field(default_factory=list)
    error: Optional[BaseException] = None

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.urn for r in found]}"
        return found[0]

    def named(self, name: str) -> Registered:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}, found {len(found)}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def ancestors(self, res: Registered) -> Iterator[Registered]:
        urns = {r.urn: r for r in self.resources}
        parent = urns.get(res.parent)
        while parent is not None:
            yield parent
            parent = urns.get(parent.parent)

    @property
    def cloud_resources(self) -> list[Registered]:
        """Custom resources of cloud providers (not components, not providers)."""
        return [
            r
            for r in self.resources
            if r.custom and not r.type.startswith("pulumi:providers:")
        ]


def project_defaults() -> dict[str, Any]:
    """The `config:` defaults of Pulumi.yaml, which the CLI (not the mocks) would apply."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    defaults = {}
    for key, decl in (project.get("config") or {}).items():
        if isinstance(decl, dict) and "default" in decl:
            defaults[key] = decl["default"]
    return defaults


def stack_config(stack: str) -> dict[str, Any]:
    """A stack file's `vllm-deploy:` values (namespace stripped) and other namespaces kept."""
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(data.get("config") or {})


def _encode(value: Any) -> str:
    # The engine passes every config value as a string; structured values as JSON.
    if isinstance(value, str):
        return value
    return json.dumps(value)


class _LogCapture:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, msg: str) -> None:  # pragma: no cover - trivial sink
        pass

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append(msg)

    def error(self, msg: str) -> None:
        self.lines.append(msg)


def run_program(
    config: dict[str, Any],
    *,
    secrets: Optional[dict[str, str]] = None,
    plaintext_secrets: bool = False,
    world: Optional[AwsWorld] = None,
    stack: str = "dev",
    preview: bool = False,
    with_defaults: bool = True,
    expect_error: bool = False,
) -> ProgramRun:
    """Run __main__.py with `config` (project keys without namespace; `aws:*` kept) on top of
    the Pulumi.yaml defaults. `secrets` are passed as encrypted config unless `plaintext_secrets`."""
    world = world or AwsWorld()
    values = {**(project_defaults() if with_defaults else {}), **config}
    flat: dict[str, str] = {}
    for key, value in values.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        flat[full] = _encode(value)
    flat.setdefault("aws:region", world.region)
    secret_keys = []
    for key, value in (secrets or {}).items():
        flat[f"{PROJECT}:{key}"] = value
        if not plaintext_secrets:
            secret_keys.append(f"{PROJECT}:{key}")

    mocks = RecordingMocks(world)
    monitor = RecordingMonitor(mocks)
    logs = _LogCapture()
    settings.ROOT.set(None)  # fresh stack resource, so exports do not leak between runs
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor, logger=logs)
    pulumi.runtime.set_all_config(flat, secret_keys)
    stack_resource = settings.get_root_resource()

    error: Optional[BaseException] = None
    try:
        _sync_await(
            pulumi.runtime.stack.run_pulumi_func(
                lambda: runpy.run_path(str(MAIN), run_name="__main__")
            )
        )
    except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts on it
        error = exc

    exports: dict[str, Export] = {}
    for name, value in (stack_resource.outputs.items() if error is None else ()):
        out = pulumi.Output.from_input(value)
        resolved = _sync_await(out.future(with_unknowns=True))
        exports[name] = Export(
            value=resolved,
            secret=_sync_await(out.is_secret()),
            known=_sync_await(out.is_known()),
        )
    run = ProgramRun(resources=monitor.registered, invokes=mocks.invokes, exports=exports, logs=logs.lines, error=error)
    if error is not None and not expect_error:
        raise AssertionError(f"the program failed: {error}") from error
    return run
