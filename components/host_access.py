"""The access side of a GPU host: its security group and rules, its SSH key pair, and the
instance profile (SSM only). Functions creating resources under the host component
(components.gpu_host.GpuHost), named after it."""

from __future__ import annotations

import json
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from components.naming import child
from config.settings import StackConfig

HTTPS_PORT = 443
HTTP_PORT = 80  # redirects to HTTPS, and answers ACME http-01 challenges
SSH_PORT = 22


def security_group(
    parent: pulumi.Resource, name: str, settings: StackConfig, vpc_id: str, serves_endpoint: bool
) -> aws.ec2.SecurityGroup:
    """The host's firewall: 443 and 80 from allowedCidrs on the node that serves the endpoint (80
    from anywhere with letsencrypt), 22 from sshAllowedCidrs, all egress. Rules are the group's
    children."""
    group = aws.ec2.SecurityGroup(
        child(name, "sg"),
        vpc_id=vpc_id,
        description=(
            "vllm-deploy: HTTPS to the proxy, SSH for provisioning; vLLM stays on loopback"
            if serves_endpoint
            else "vllm-deploy worker node: SSH for provisioning only"
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    rules: list[tuple[str, int, str]] = []
    if serves_endpoint:
        rules += [("https", HTTPS_PORT, c) for c in settings.allowed_cidrs]
        # Let's Encrypt validates from addresses it does not publish, so with letsencrypt the
        # HTTP port is open to all; nginx answers there only ACME challenges and redirects.
        http_from = ["0.0.0.0/0", "::/0"] if settings.tls == "letsencrypt" else settings.allowed_cidrs
        rules += [("http", HTTP_PORT, c) for c in http_from]
    for cidr in settings.ssh_allowed_cidrs:
        rules.append(("ssh", SSH_PORT, cidr))
    for role, port, cidr in rules:
        ipv6 = ":" in cidr
        aws.vpc.SecurityGroupIngressRule(
            child(name, f"{role}-{cidr.replace('/', '-').replace(':', '_')}"),
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            cidr_ipv4=None if ipv6 else cidr,
            cidr_ipv6=cidr if ipv6 else None,
            description=f"{role} from {cidr}",
            opts=pulumi.ResourceOptions(parent=group),
        )
    for family, cidr in (("ipv4", "0.0.0.0/0"), ("ipv6", "::/0")):
        aws.vpc.SecurityGroupEgressRule(
            child(name, f"egress-{family}"),
            security_group_id=group.id,
            ip_protocol="-1",
            cidr_ipv4=cidr if family == "ipv4" else None,
            cidr_ipv6=cidr if family == "ipv6" else None,
            description="image pulls, model downloads, package installs",
            opts=pulumi.ResourceOptions(parent=group),
        )
    return group


def key_pair(
    parent: pulumi.Resource, name: str, settings: StackConfig
) -> tuple[pulumi.Input[str], Optional[pulumi.Output[str]]]:
    """(key name, private key): the user's sshPublicKey, else a generated ED25519 key whose
    private half is a secret Output (None with the user's key)."""
    private_key: Optional[pulumi.Output[str]] = None
    if settings.ssh_public_key:
        public_key: pulumi.Input[str] = settings.ssh_public_key
    else:
        generated = tls.PrivateKey(
            child(name, "ssh-key"),
            algorithm="ED25519",
            opts=pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["privateKeyOpenssh", "privateKeyPem"]),
        )
        public_key = generated.public_key_openssh
        private_key = pulumi.Output.secret(generated.private_key_openssh)
    key_pair = aws.ec2.KeyPair(
        child(name, "key"),
        public_key=public_key,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return key_pair.key_name, private_key


def instance_profile(parent: pulumi.Resource, name: str) -> aws.iam.InstanceProfile:
    """A role the host assumes for SSM Session Manager, and nothing else."""
    role = aws.iam.Role(
        child(name, "role"),
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
        description="vllm-deploy host: SSM Session Manager only",
        opts=pulumi.ResourceOptions(parent=parent),
    )
    aws.iam.RolePolicyAttachment(
        child(name, "ssm"),
        role=role.name,
        policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        opts=pulumi.ResourceOptions(parent=role),
    )
    return aws.iam.InstanceProfile(
        child(name, "profile"), role=role.name, opts=pulumi.ResourceOptions(parent=parent)
    )
