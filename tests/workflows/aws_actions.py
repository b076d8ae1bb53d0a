"""What each AWS resource type the program registers costs in IAM actions, as data with sources:
the calls the AWS provider makes to create, read, update and delete it, and the calls of the
program's own local commands. tests/workflows/test_aws_policies.py derives the deploy roles'
needed actions from the resource types of mock runs through this table.

Shape: {Pulumi type token: (IAM actions, source)}. The provider is pulumi-aws 7.x, which bridges
hashicorp/terraform-provider-aws; a source names the Go file under its internal/service/. Where a
call is made only for an input the program never sets (e.g. an ASG warm pool, an ELB access log
bucket), its action is left out: least privilege, and a test (every type in the table) makes a
new resource type come here first. The provider's files are cited from its source as known to
the author, not re-read for this change: check them against the pinned version before relying
on an action's absence.

Which actions take tag conditions or resource ARNs (used by the policies, not by this table):
AWS's Service Authorization Reference, docs.aws.amazon.com/service-authorization/latest/reference/
list_amazonec2.html, list_amazonec2autoscaling.html, list_awscertificatemanager.html,
list_elasticloadbalancingv2.html, list_amazonroute53.html, list_awssystemsmanager.html,
list_awsidentityandaccessmanagementiam.html.
"""

from __future__ import annotations

TAGS_EC2 = {"ec2:CreateTags", "ec2:DeleteTags"}

RESOURCE_ACTIONS: dict[str, tuple[set[str], str]] = {
    # --- EC2 (single host, cluster, the fleet's builder and groups) ---
    "aws:ec2/instance:Instance": (
        {"ec2:RunInstances", "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute",
         "ec2:DescribeInstanceCreditSpecifications", "ec2:DescribeInstanceTypes", "ec2:ModifyInstanceAttribute",
         "ec2:ModifyInstanceMetadataOptions", "ec2:StopInstances", "ec2:StartInstances", "ec2:TerminateInstances",
         "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "iam:PassRole"} | TAGS_EC2,
        "ec2/ec2_instance.go: RunInstances (with the instance profile: iam:PassRole), read with its "
        "attributes, credit specification and root volume; an instance-type change stops, modifies, starts"),
    "aws:ebs/volume:Volume": (
        {"ec2:CreateVolume", "ec2:DescribeVolumes", "ec2:ModifyVolume", "ec2:DescribeVolumesModifications",
         "ec2:DeleteVolume"} | TAGS_EC2, "ec2/ebs_volume.go"),
    "aws:ec2/volumeAttachment:VolumeAttachment": (
        {"ec2:AttachVolume", "ec2:DetachVolume", "ec2:DescribeVolumes", "ec2:DescribeInstances"},
        "ec2/ebs_volume_attachment.go"),
    "aws:ec2/eip:Eip": (
        {"ec2:AllocateAddress", "ec2:DescribeAddresses", "ec2:DescribeAddressesAttribute", "ec2:ReleaseAddress"}
        | TAGS_EC2, "ec2/ec2_eip.go (the PTR record read: DescribeAddressesAttribute)"),
    "aws:ec2/eipAssociation:EipAssociation": (
        {"ec2:AssociateAddress", "ec2:DisassociateAddress", "ec2:DescribeAddresses"}, "ec2/ec2_eip_association.go"),
    "aws:ec2/keyPair:KeyPair": (
        {"ec2:ImportKeyPair", "ec2:DescribeKeyPairs", "ec2:DeleteKeyPair"} | TAGS_EC2, "ec2/ec2_key_pair.go"),
    "aws:ec2/securityGroup:SecurityGroup": (
        {"ec2:CreateSecurityGroup", "ec2:DescribeSecurityGroups", "ec2:RevokeSecurityGroupEgress",
         "ec2:DeleteSecurityGroup", "ec2:DescribeNetworkInterfaces"} | TAGS_EC2,
        "ec2/vpc_security_group.go: the default allow-all egress is revoked after create; delete waits "
        "for the group's network interfaces"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        {"ec2:AuthorizeSecurityGroupIngress", "ec2:DescribeSecurityGroupRules", "ec2:ModifySecurityGroupRules",
         "ec2:RevokeSecurityGroupIngress"} | TAGS_EC2, "ec2/vpc_security_group_ingress_rule.go"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (
        {"ec2:AuthorizeSecurityGroupEgress", "ec2:DescribeSecurityGroupRules", "ec2:ModifySecurityGroupRules",
         "ec2:RevokeSecurityGroupEgress"} | TAGS_EC2, "ec2/vpc_security_group_egress_rule.go"),
    "aws:ec2/placementGroup:PlacementGroup": (
        {"ec2:CreatePlacementGroup", "ec2:DescribePlacementGroups", "ec2:DeletePlacementGroup"} | TAGS_EC2,
        "ec2/ec2_placement_group.go"),
    "aws:ec2/networkInterface:NetworkInterface": (
        {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:ModifyNetworkInterfaceAttribute",
         "ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface", "ec2:DeleteNetworkInterface"} | TAGS_EC2,
        "ec2/vpc_network_interface.go"),
    "aws:ec2/launchTemplate:LaunchTemplate": (
        {"ec2:CreateLaunchTemplate", "ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate",
         "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions", "ec2:DeleteLaunchTemplate"}
        | TAGS_EC2,
        "ec2/ec2_launch_template.go: a change is a new version, update_default_version sets it the default"),
    "aws:ec2/amiFromInstance:AmiFromInstance": (
        {"ec2:CreateImage", "ec2:DescribeImages", "ec2:ModifyImageAttribute", "ec2:DescribeInstances"} | TAGS_EC2,
        "ec2/ec2_ami_from_instance.go, ec2/ec2_ami.go (read, description update). No DeregisterImage: the "
        "program retains the image on delete (components/fleet_image.py, fleet-pitfalls P9)"),
    "aws:ec2transitgateway/instanceState:InstanceState": (
        {"ec2:StopInstances", "ec2:StartInstances", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus"},
        "ec2/ec2_instance_state.go: stop or start, then wait on DescribeInstances; read DescribeInstanceStatus"),
    # --- IAM (the single host's role, the replicas' role and its inline policy) ---
    "aws:iam/role:Role": (
        {"iam:CreateRole", "iam:GetRole", "iam:UpdateAssumeRolePolicy", "iam:UpdateRole", "iam:TagRole",
         "iam:UntagRole", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
         "iam:ListInstanceProfilesForRole", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteRole"},
        "iam/role.go: read lists inline and managed policies; delete first removes the role from its "
        "instance profiles"),
    "aws:iam/instanceProfile:InstanceProfile": (
        {"iam:CreateInstanceProfile", "iam:GetInstanceProfile", "iam:AddRoleToInstanceProfile",
         "iam:RemoveRoleFromInstanceProfile", "iam:TagInstanceProfile", "iam:UntagInstanceProfile",
         "iam:DeleteInstanceProfile"}, "iam/instance_profile.go"),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": (
        {"iam:AttachRolePolicy", "iam:ListAttachedRolePolicies", "iam:DetachRolePolicy"},
        "iam/role_policy_attachment.go"),
    "aws:iam/rolePolicy:RolePolicy": (
        {"iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"}, "iam/role_policy.go"),
    # --- the fleet: SSM, Auto Scaling, ELBv2, ACM, Route 53 ---
    "aws:ssm/parameter:Parameter": (
        {"ssm:PutParameter", "ssm:GetParameter", "ssm:DescribeParameters", "ssm:ListTagsForResource",
         "ssm:AddTagsToResource", "ssm:RemoveTagsFromResource", "ssm:DeleteParameter"},
        "ssm/parameter.go: read is GetParameter WithDecryption and DescribeParameters (the description "
        "and tier); the SecureString uses the AWS-managed aws/ssm key, whose key policy admits the "
        "account's principals through SSM, so no kms: action is needed"),
    # --- CloudWatch (a fleet's metrics, monitoring: true) ---
    "aws:cloudwatch/logGroup:LogGroup": (
        {"logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy", "logs:DescribeLogGroups",
         "logs:ListTagsForResource", "logs:TagResource", "logs:UntagResource", "logs:DeleteLogGroup"},
        "logs/group.go: CreateLogGroup then PutRetentionPolicy, read by DescribeLogGroups (prefix) and "
        "ListTagsForResource"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": (
        {"cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms",
         "cloudwatch:ListTagsForResource", "cloudwatch:TagResource", "cloudwatch:UntagResource"},
        "cloudwatch/metric_alarm.go"),
    "aws:cloudwatch/dashboard:Dashboard": (
        {"cloudwatch:PutDashboard", "cloudwatch:GetDashboard", "cloudwatch:DeleteDashboards"},
        "cloudwatch/dashboard.go"),
    "aws:autoscaling/group:Group": (
        {"autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup",
         "autoscaling:DeleteAutoScalingGroup", "autoscaling:DescribeAutoScalingGroups",
         "autoscaling:DescribeScalingActivities", "autoscaling:DescribeLifecycleHooks",
         "autoscaling:DescribeLoadBalancerTargetGroups", "autoscaling:DescribeTrafficSources",
         "autoscaling:DescribeWarmPool", "autoscaling:AttachLoadBalancerTargetGroups",
         "autoscaling:DetachLoadBalancerTargetGroups", "autoscaling:StartInstanceRefresh",
         "autoscaling:CancelInstanceRefresh", "autoscaling:DescribeInstanceRefreshes",
         "autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags", "autoscaling:SetInstanceProtection",
         "elasticloadbalancing:DescribeTargetHealth", "ec2:RunInstances", "ec2:DescribeLaunchTemplateVersions",
         "iam:PassRole", "autoscaling:PutWarmPool", "autoscaling:DeleteWarmPool"},
        "autoscaling/group.go: warm_pool is PutWarmPool (and DeleteWarmPool when removed); initial_lifecycle_hook goes in CreateAutoScalingGroup's "
        "LifecycleHookSpecificationList; wait_for_capacity/wait_for_elb_capacity poll the group and "
        "DescribeTargetHealth; instance_refresh starts (and cancels a running) refresh on a launch "
        "template change; delete drains with UpdateAutoScalingGroup to 0. The launch template's "
        "RunInstances and its instance profile's PassRole are checked on the caller (EC2 Auto Scaling "
        "user guide, 'Permissions to use launch templates')"),
    "aws:autoscaling/policy:Policy": (
        {"autoscaling:PutScalingPolicy", "autoscaling:DescribePolicies", "autoscaling:DeletePolicy"},
        "autoscaling/policy.go: PutScalingPolicy on create and update, DescribePolicies on read, "
        "DeletePolicy; a target-tracking policy's alarms are made by Auto Scaling's service-linked "
        "role, not the caller (EC2 Auto Scaling user guide, 'Target tracking scaling policies')"),
    "aws:lb/loadBalancer:LoadBalancer": (
        {"elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:DescribeLoadBalancers",
         "elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:ModifyLoadBalancerAttributes",
         "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
         "elasticloadbalancing:SetIpAddressType", "elasticloadbalancing:DescribeTags",
         "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags", "elasticloadbalancing:DeleteLoadBalancer",
         "ec2:DescribeNetworkInterfaces"},
        "elbv2/load_balancer.go: delete waits for the ALB's network interfaces to go"),
    "aws:lb/targetGroup:TargetGroup": (
        {"elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:DescribeTargetGroups",
         "elasticloadbalancing:DescribeTargetGroupAttributes", "elasticloadbalancing:ModifyTargetGroup",
         "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DescribeTags",
         "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags", "elasticloadbalancing:DeleteTargetGroup"},
        "elbv2/target_group.go"),
    "aws:lb/listener:Listener": (
        {"elasticloadbalancing:CreateListener", "elasticloadbalancing:DescribeListeners",
         "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:ModifyListener",
         "elasticloadbalancing:DescribeTags", "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
         "elasticloadbalancing:DeleteListener"},
        "elbv2/listener.go (provider 6.x reads the listener's attributes)"),
    "aws:lb/listenerRule:ListenerRule": (
        {"elasticloadbalancing:CreateRule", "elasticloadbalancing:DescribeRules", "elasticloadbalancing:ModifyRule",
         "elasticloadbalancing:SetRulePriorities", "elasticloadbalancing:DescribeTags", "elasticloadbalancing:AddTags",
         "elasticloadbalancing:RemoveTags", "elasticloadbalancing:DeleteRule"}, "elbv2/listener_rule.go"),
    "aws:acm/certificate:Certificate": (
        {"acm:ImportCertificate", "acm:RequestCertificate", "acm:DescribeCertificate", "acm:GetCertificate",
         "acm:ListTagsForCertificate", "acm:AddTagsToCertificate", "acm:RemoveTagsFromCertificate",
         "acm:DeleteCertificate"},
        "acm/certificate.go: an imported certificate is re-imported in place on change; read gets the "
        "chain (GetCertificate) and the DNS validation options"),
    "aws:acm/certificateValidation:CertificateValidation": (
        {"acm:DescribeCertificate"}, "acm/certificate_validation.go: waits for ISSUED"),
    "aws:route53/record:Record": (
        {"route53:ChangeResourceRecordSets", "route53:GetChange", "route53:ListResourceRecordSets",
         "route53:GetHostedZone"}, "route53/record.go: change, wait INSYNC, read by listing"),
}

# Types that are no AWS call: Pulumi's own providers and components, and other providers' resources
# (tls, random, command, docker), which touch no AWS API.
NOT_AWS_PREFIXES = ("pulumi:providers:", "vllm-deploy:", "tls:", "random:", "command:", "docker:")

# Local commands that call AWS where `pulumi up` runs (with the deploy role): the script, by the
# path its command line names -> (actions, source).
LOCAL_COMMAND_ACTIONS: dict[str, tuple[set[str], str]] = {
    "components/local/wait_for_refresh.py": (
        {"autoscaling:DescribeInstanceRefreshes"}, "its newest_refresh(): describe_instance_refreshes"),
    "components/local/wait_for_reboot.py": (set(), "TCP to the host's SSH port, no AWS call"),
    "components/local/prune_images.py": (
        {"ec2:DescribeImages", "ec2:DeregisterImage", "ec2:DeleteSnapshot"},
        "its stack_images(): describe_images; remove(): deregister_image with DeleteAssociatedSnapshots "
        "(AWS deletes the image's snapshots in that call)"),
}
