"""ClusterNetwork: what the nodes of one model across several instances share on AWS — a cluster
placement group, and a security group that lets the nodes (and only they) reach each other on
every port, for Ray, NCCL and, where the instance type has it, EFA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.naming import child, component_type
from serving.cluster_network import EfaInterface


@dataclass(frozen=True)
class ClusterMembership:
    """One node's place in the cluster: what GpuHost attaches it to."""

    placement_group: pulumi.Input[str]
    """The placement group's name."""
    security_group_id: pulumi.Input[str]
    """The cluster security group (all traffic between its members)."""
    efa: tuple[EfaInterface, ...] = ()
    """EFA interfaces to attach at launch (serving.cluster_network.efa_interfaces); empty: TCP."""


@dataclass
class ClusterNetworkArgs:
    vpc_id: str
    """The VPC of the nodes' subnet (one subnet, one zone: a cluster placement group spans one zone)."""
    efa: tuple[EfaInterface, ...] = ()
    """The EFA interfaces each node gets (the same instance type everywhere)."""


class ClusterNetwork(pulumi.ComponentResource):
    """A cluster placement group and the cluster security group.

    The group's only rules refer to itself: every protocol and port in from a member, and out
    to a member (EFA requires both, EC2 user guide "Get started with EFA and NCCL", "Prepare an
    EFA-enabled security group"; Ray's GCS (6379) and its workers' ports, and NCCL's sockets,
    are spread over ranges anyway). Nothing new opens to outside addresses: SSH and HTTPS stay
    on each node's own group.
    """

    placement_group: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterNetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("ClusterNetwork"), name, None, opts)
        group = aws.ec2.PlacementGroup(
            child(name, "placement"),
            # "cluster": one zone, low-latency network between the nodes (EC2 user guide,
            # "Placement strategies"), what NCCL's pipeline hops and EFA want.
            strategy="cluster",
            opts=pulumi.ResourceOptions(parent=self),
        )
        security_group = aws.ec2.SecurityGroup(
            child(name, "sg"),
            vpc_id=args.vpc_id,
            description="vllm-deploy cluster: all traffic between the nodes, nothing from outside",
            opts=pulumi.ResourceOptions(parent=self),
        )
        for role, rule in (("from-nodes", aws.vpc.SecurityGroupIngressRule), ("to-nodes", aws.vpc.SecurityGroupEgressRule)):
            rule(
                child(name, role),
                security_group_id=security_group.id,
                referenced_security_group_id=security_group.id,
                ip_protocol="-1",
                description="Ray, NCCL and EFA between the nodes",
                opts=pulumi.ResourceOptions(parent=security_group),
            )
        self.placement_group = group.name
        self.security_group_id = security_group.id
        self.efa = args.efa
        self.register_outputs(
            {"placementGroup": self.placement_group, "securityGroupId": self.security_group_id}
        )

    def membership(self) -> ClusterMembership:
        """What each node's GpuHost needs."""
        return ClusterMembership(self.placement_group, self.security_group_id, self.efa)
