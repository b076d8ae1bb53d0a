"""What the AWS lookups (invokes) answer when no AWS account is asked.

Shared by `tools/plan` (an offline plan) and the tests (tests/harness.py), which change the
fields to simulate other accounts: a region that lacks a type, no default VPC, no image.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from sizing.gpus import load_instances


class InvokeFailure(Exception):
    """What AWS answers when a lookup finds nothing: the engine reports it as a failed invoke."""


class AwsWorld:
    """The answers of the AWS invokes the program makes, from fields a caller can change.

    Instance type offerings come from the GPU catalog (every catalog type is offered unless
    `offered_instance_types` says otherwise); images, VPCs and subnets get the ids below.
    """

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.offered_instance_types: Optional[set[str]] = None  # None = every catalog type
        self.zones = [f"{region}a", f"{region}b", f"{region}c"]
        self.zone_offerings: dict[str, set[str]] = {}  # zone -> types; empty = all zones offer all
        self.has_default_vpc = True
        self.images_available = True
        self.image_ids = {"x86_64": "ami-0123456789abcdef0", "arm64": "ami-0fedcba9876543210"}
        self.default_vpc_id = "vpc-0default0000000"
        self.subnet_template = "subnet-{letter}000000000000000"  # one subnet per zone
        # What DescribeInstances / DescribeVolumes list: dicts with id, state (instances) or
        # status, zone and size (volumes), and tags (the provider's default tags included).
        # Empty: a stack deployed for the first time.
        self.instances: list[dict[str, Any]] = []
        self.volumes: list[dict[str, Any]] = []
        # Route 53 public hosted zones of the account: name -> zone id. Empty: none.
        self.hosted_zones: dict[str, str] = {}
        # An AWS error Route 53's lookups fail with instead of answering (e.g. AccessDenied for a
        # role without route53:ListHostedZones). None: they answer.
        self.route53_error: Optional[str] = None

    def subnet_id(self, zone: str) -> str:
        """The subnet the world has in `zone`."""
        return self.subnet_template.format(zone=zone, letter=zone[-1])

    def zone_of_subnet(self, subnet_id: str) -> str:
        for zone in self.zones:
            if self.subnet_id(zone) == subnet_id:
                return zone
        return f"{self.region}{subnet_id[len('subnet-')]}"  # an id the caller configured

    def answer(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = _INVOKES.get(token)
        if handler is None:
            raise InvokeFailure(f"the program made an invoke this offline engine does not model: {token}")
        return handler(self, args)


def offline_world(region: str) -> AwsWorld:
    """The world `tools/plan` shows: ids AWS would choose at preview read as such."""
    world = AwsWorld(region)
    world.image_ids = {arch: f"<newest {arch} image, looked up at preview>" for arch in world.image_ids}
    world.default_vpc_id = f"<default VPC of {region}>"
    world.subnet_template = "<public subnet in {zone}>"
    return world


def _filters(args: dict[str, Any]) -> dict[str, list[str]]:
    return {f["name"]: list(f["values"]) for f in args.get("filters") or []}


def _offerings(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    wanted = _filters(args).get("instance-type")
    location_type = args.get("locationType", "region")
    every = [i.name for i in load_instances()]  # the catalog is what AWS would list
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
    image = world.image_ids.get(arch, world.image_ids["x86_64"])
    return {
        "id": image,
        "imageId": image,
        "name": names[0].replace("*", "20261101"),
        "architecture": arch,
        "rootDeviceName": "/dev/sda1",
        "ownerId": (args.get("owners") or ["?"])[0],
    }


def _vpc(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("id") and not world.has_default_vpc:
        raise InvokeFailure("no matching EC2 VPC found")
    return {"id": args.get("id") or world.default_vpc_id, "cidrBlock": "172.31.0.0/16", "default": True}


def _subnets(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    zones = _filters(args).get("availability-zone") or world.zones
    return {"ids": [world.subnet_id(zone) for zone in zones], "id": "subnets"}


def _subnet(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    subnet_id = args.get("id") or world.subnet_id(world.zones[0])
    zone = world.zone_of_subnet(subnet_id)
    index = world.zones.index(zone) if zone in world.zones else len(world.zones)
    return {"id": subnet_id, "availabilityZone": zone, "vpcId": world.default_vpc_id,
            "cidrBlock": f"172.31.{16 * index}.0/20"}  # the default VPC's layout


def _zones(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"names": list(world.zones), "zoneIds": [f"use1-az{i}" for i, _ in enumerate(world.zones)], "id": world.region}


def _region(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": world.region, "region": world.region, "id": world.region}


def _caller(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/plan", "userId": "AIDPLAN", "id": "123456789012"}


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


def _hosted_zone(world: AwsWorld, args: dict[str, Any]) -> dict[str, Any]:
    name = str(args.get("name", "")).rstrip(".")
    if world.route53_error is not None:
        raise InvokeFailure(world.route53_error)
    if name not in world.hosted_zones:
        raise InvokeFailure("no matching Route 53 Hosted Zone found")
    return {"zoneId": world.hosted_zones[name], "id": world.hosted_zones[name], "name": name}


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
    "aws:route53/getZone:getZone": _hosted_zone,
}
