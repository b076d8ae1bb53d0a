"""What a fleet's replicas may reach and be reached by: their security group, the API key as an
SSM SecureString parameter, and an instance profile allowed only to read that parameter (and in
tenant mode the tenants' files parameter, components.fleet_tenants), to answer their own
lifecycle hooks, and SSM Session Manager. Functions creating resources under
the group component (components.fleet_group.FleetGroup), named after it."""

from __future__ import annotations

import json
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.naming import child
from config.settings import StackConfig

HTTPS_PORT = 443
SSH_PORT = 22

# Session Manager without ssm:GetParameter(s) on "*" (which AmazonSSMManagedInstanceCore grants):
# the actions of AWS's minimal Session Manager policy (Systems Manager user guide, "Create a
# custom IAM role for Session Manager").
SESSION_MANAGER_ACTIONS = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
]
LIFECYCLE_ACTIONS = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]


def replica_security_group(
    parent: pulumi.Resource, name: str, settings: StackConfig, vpc_id: str, load_balancer_group: pulumi.Input[str]
) -> aws.ec2.SecurityGroup:
    """443 only from the load balancer's group, 22 from sshAllowedCidrs, all egress (SSM, image
    pulls). Nothing else reaches a replica: the world talks to the ALB."""
    group = aws.ec2.SecurityGroup(
        child(name, "sg"),
        vpc_id=vpc_id,
        description="vllm-deploy replicas: HTTPS from the load balancer only, SSH from sshAllowedCidrs",
        opts=pulumi.ResourceOptions(parent=parent),
    )
    aws.vpc.SecurityGroupIngressRule(
        child(name, "https-from-alb"),
        security_group_id=group.id, ip_protocol="tcp", from_port=HTTPS_PORT, to_port=HTTPS_PORT,
        referenced_security_group_id=load_balancer_group,
        description="nginx from the load balancer (requests and health checks)",
        opts=pulumi.ResourceOptions(parent=group),
    )
    for cidr in settings.ssh_allowed_cidrs:
        ipv6 = ":" in cidr
        aws.vpc.SecurityGroupIngressRule(
            child(name, f"ssh-{cidr.replace('/', '-').replace(':', '_')}"),
            security_group_id=group.id, ip_protocol="tcp", from_port=SSH_PORT, to_port=SSH_PORT,
            cidr_ipv4=None if ipv6 else cidr, cidr_ipv6=cidr if ipv6 else None,
            description=f"ssh from {cidr}", opts=pulumi.ResourceOptions(parent=group),
        )
    for family, cidr in (("ipv4", "0.0.0.0/0"), ("ipv6", "::/0")):
        aws.vpc.SecurityGroupEgressRule(
            child(name, f"egress-{family}"),
            security_group_id=group.id, ip_protocol="-1",
            cidr_ipv4=cidr if family == "ipv4" else None, cidr_ipv6=cidr if family == "ipv6" else None,
            description="SSM, lifecycle actions, the boot unit's image pulls",
            opts=pulumi.ResourceOptions(parent=group),
        )
    return group


def api_key_parameter(
    parent: pulumi.Resource, name: str, parameter_name: str, api_key: pulumi.Output[str]
) -> aws.ssm.Parameter:
    """The API key as a SecureString (the AWS-managed aws/ssm key), read by each replica at boot."""
    return aws.ssm.Parameter(
        child(name, "api-key"),
        name=parameter_name,
        type="SecureString",
        value=pulumi.Output.secret(api_key),
        description="vllm-deploy: the endpoint's API key, read by the replicas at boot",
        opts=pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["value"]),
    )


# The CloudWatch agent (a fleet with monitoring on): EMF events into the stack's log group only,
# host metrics into the stack's namespace only (cloudwatch:namespace condition key), and the
# instance's tags for the AutoScalingGroupName dimension (AWS's CloudWatchAgentServerPolicy has
# these actions, on "*"; here each is scoped as far as IAM allows).
METRICS_LOG_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]


def metrics_statements(log_group_arn: str, namespace: str) -> list[dict]:
    """The agent's statements: the log group (`arn:...:log-group:NAME`) and its streams, PutMetricData
    in `namespace` only, ec2:DescribeTags (Describe* take no resource-level permission)."""
    return [
        {"Sid": "MetricsLogGroup", "Effect": "Allow", "Action": METRICS_LOG_ACTIONS,
         "Resource": [log_group_arn, f"{log_group_arn}:*"]},
        {"Sid": "MetricsPut", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}}},
        {"Sid": "MetricsTags", "Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"},
    ]


def replica_instance_profile(
    parent: pulumi.Resource, name: str, *, parameter_arn: pulumi.Input[str], group_arn: pulumi.Input[str], region: str,
    metrics: Optional[tuple[pulumi.Input[str], str]] = None,
    tenant_parameter_arn: Optional[pulumi.Input[str]] = None,
) -> aws.iam.InstanceProfile:
    """A role that may read the one parameter (decrypting through SSM only), complete and
    heartbeat this group's lifecycle actions, and open Session Manager sessions; with `metrics`
    (the log group's ARN, the metric namespace) what the CloudWatch agent needs; with
    `tenant_parameter_arn` (tenant mode, issue 29) the tenants' files parameter too: nothing else.
    Without it the policy is the one fleets had before tenants, byte for byte."""
    role = aws.iam.Role(
        child(name, "role"),
        assume_role_policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
        }),
        description="vllm-deploy replica: its API key parameter, its lifecycle hooks, Session Manager",
        opts=pulumi.ResourceOptions(parent=parent),
    )
    log_group_arn, namespace = metrics if metrics is not None else (None, "")
    policy = pulumi.Output.all(parameter_arn, group_arn, log_group_arn, tenant_parameter_arn).apply(lambda arns: json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ApiKey", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": arns[0]},
            *([{"Sid": "TenantFiles", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": arns[3]}]
              if arns[3] else []),
            {
                "Sid": "ApiKeyDecrypt", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                "Condition": {"StringEquals": {
                    "kms:ViaService": f"ssm.{region}.amazonaws.com",
                    # Either parameter's ciphertext, and only through SSM (a list: any of them).
                    "kms:EncryptionContext:PARAMETER_ARN": [arns[0], arns[3]] if arns[3] else arns[0],
                }},
            },
            {"Sid": "LifecycleHooks", "Effect": "Allow", "Action": LIFECYCLE_ACTIONS, "Resource": arns[1]},
            # How a replica finds its own group to complete its hooks (replica_lib.sh asg_group);
            # Describe* calls of Auto Scaling take no resource-level permissions, hence "*".
            {"Sid": "OwnGroup", "Effect": "Allow", "Action": "autoscaling:DescribeAutoScalingInstances",
             "Resource": "*"},
            {"Sid": "SessionManager", "Effect": "Allow", "Action": SESSION_MANAGER_ACTIONS, "Resource": "*"},
            *(metrics_statements(arns[2], namespace) if arns[2] else []),
        ],
    }))
    aws.iam.RolePolicy(child(name, "policy"), role=role.id, policy=policy, opts=pulumi.ResourceOptions(parent=role))
    return aws.iam.InstanceProfile(child(name, "profile"), role=role.name, opts=pulumi.ResourceOptions(parent=parent))
