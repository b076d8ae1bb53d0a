"""FleetLoadBalancer: the Application Load Balancer in front of a fleet's replicas.

- Listener 443: HTTPS with a TLS 1.3/1.2 policy, forwarding to the replicas' nginx on 443
  (HTTPS target group: an ALB does not validate a target's certificate, so each replica's
  self-signed one serves; fleet contract, fleet-pitfalls P4). Certificate: with `domain` and a
  public Route 53 zone for it in the account, an ACM certificate validated by DNS and an alias
  record; otherwise the stack's own CA signs a certificate for the ALB's DNS name (and the
  domain) that is imported into ACM, so clients keep verifying with `caCertificate`.
- Listener 80: the single host's plain-HTTP rule, as ALB rules: an API call gets the same JSON
  403 (serving.proxy_policy.plain_http_bodies, the leaked-key text when an Authorization header
  came), only a browser's GET/HEAD of / is redirected to the HTTPS address.
- Target group: health check HTTPS GET /health, 200 only; deregistration delay = drainSeconds
  (the drain bound, P7); least outstanding requests and no slow start (P6).
- Its security group takes 443 and 80 from allowedCidrs and sends only HTTPS into the VPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.certificates import stack_certificates
from components.naming import child, component_type
from config.settings import StackConfig
from serving.monitoring import certificate_expiry
from serving.proxy_policy import plain_http_bodies

HTTPS_PORT = 443
HTTP_PORT = 80
# TLS 1.3 and 1.2 with forward secrecy only (AWS, "Security policies for your Application Load
# Balancer"; the policy AWS recommends for new listeners).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HEALTH_PATH = "/health"
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3
HEALTH_INTERVAL_S = 15


@dataclass
class FleetLoadBalancerArgs:
    settings: StackConfig
    """allowedCidrs, domain, drainSeconds."""
    vpc_id: str
    vpc_cidr: str
    """Where the targets are: the ALB sends HTTPS only there."""
    subnet_ids: list[str]
    """One public subnet per zone, two zones at least (an ALB's requirement)."""
    idle_timeout_s: int
    """The ALB's idle timeout, from the contract's keepalive_timeouts (below nginx's, P1)."""
    route53_zone_id: Optional[str] = None
    """The public hosted zone of `domain`, when the account has it: DNS-validated ACM + alias."""


class FleetLoadBalancer(pulumi.ComponentResource):
    security_group: aws.ec2.SecurityGroup
    target_group: aws.lb.TargetGroup
    dns_name: pulumi.Output[str]
    address: pulumi.Output[str]  # the name clients use: domain, else the ALB's DNS name
    ca_certificate: Optional[pulumi.Output[str]]  # None with an ACM-issued certificate

    def __init__(self, name: str, args: FleetLoadBalancerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("FleetLoadBalancer"), name, None, opts)
        self._name = name
        settings = args.settings
        self.security_group = self._security_group(args)
        alb = aws.lb.LoadBalancer(
            child(name, "alb"),
            load_balancer_type="application",
            internal=False,
            security_groups=[self.security_group.id],
            subnets=args.subnet_ids,
            idle_timeout=args.idle_timeout_s,
            drop_invalid_header_fields=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.target_group = aws.lb.TargetGroup(
            child(name, "replicas"),
            vpc_id=args.vpc_id,
            target_type="instance",
            port=HTTPS_PORT,
            protocol="HTTPS",
            deregistration_delay=settings.drain_seconds,
            load_balancing_algorithm_type="least_outstanding_requests",
            slow_start=0,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True, protocol="HTTPS", port="traffic-port", path=HEALTH_PATH, matcher="200",
                interval=HEALTH_INTERVAL_S, timeout=5,
                healthy_threshold=HEALTHY_THRESHOLD, unhealthy_threshold=UNHEALTHY_THRESHOLD,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dns_name = alb.dns_name
        self.arn_suffix = alb.arn_suffix  # the LoadBalancer dimension of its CloudWatch metrics
        self.address = pulumi.Output.from_input(settings.domain) if settings.domain else alb.dns_name
        certificate_arn = self._certificate(args, alb)
        aws.lb.Listener(
            child(name, "https"),
            load_balancer_arn=alb.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=certificate_arn,
            default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._plain_http(alb)
        self.register_outputs({"dnsName": self.dns_name, "address": self.address, "caCertificate": self.ca_certificate})

    def _security_group(self, args: FleetLoadBalancerArgs) -> aws.ec2.SecurityGroup:
        group = aws.ec2.SecurityGroup(
            child(self._name, "sg"),
            vpc_id=args.vpc_id,
            description="vllm-deploy load balancer: HTTPS (and HTTP's refusal) from allowedCidrs",
            opts=pulumi.ResourceOptions(parent=self),
        )
        for role, port in (("https", HTTPS_PORT), ("http", HTTP_PORT)):
            for cidr in args.settings.allowed_cidrs:
                ipv6 = ":" in cidr
                aws.vpc.SecurityGroupIngressRule(
                    child(self._name, f"{role}-{cidr.replace('/', '-').replace(':', '_')}"),
                    security_group_id=group.id, ip_protocol="tcp", from_port=port, to_port=port,
                    cidr_ipv4=None if ipv6 else cidr, cidr_ipv6=cidr if ipv6 else None,
                    description=f"{role} from {cidr}",
                    opts=pulumi.ResourceOptions(parent=group),
                )
        aws.vpc.SecurityGroupEgressRule(
            child(self._name, "to-replicas"),
            security_group_id=group.id, ip_protocol="tcp", from_port=HTTPS_PORT, to_port=HTTPS_PORT,
            cidr_ipv4=args.vpc_cidr, description="HTTPS to the replicas' nginx (requests and health checks)",
            opts=pulumi.ResourceOptions(parent=group),
        )
        return group

    def _certificate(self, args: FleetLoadBalancerArgs, alb: aws.lb.LoadBalancer) -> pulumi.Output[str]:
        domain = args.settings.domain
        if domain and args.route53_zone_id:
            self.ca_certificate = None
            return self._dns_validated(domain, args.route53_zone_id, alb)
        # ACM imports RSA or ECDSA P-256/384/521 (the stack's keys are P-256); the CN stays a short
        # label (an ALB's DNS name can pass X.509's 64-character CN limit, P25), the names go in SANs.
        certs = stack_certificates(
            self, self._name, common_name=f"vllm-deploy {pulumi.get_stack()}",
            dns_names=alb.dns_name.apply(lambda dns: [dns, *([domain] if domain else [])]),
        )
        self.ca_certificate = certs.ca_cert_pem
        imported = aws.acm.Certificate(
            child(self._name, "certificate"),
            certificate_body=certs.server_cert_pem,
            certificate_chain=certs.ca_cert_pem,
            private_key=certs.server_key_pem,
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.settings.monitoring:  # monitoring: false makes no CloudWatch side
            self._expiry_alarm(imported)
        return imported.arn

    def _expiry_alarm(self, imported: aws.acm.Certificate) -> aws.cloudwatch.MetricAlarm:
        """Alarms from the start of the renewal window: `pulumi up` alone renews the certificate."""
        return aws.cloudwatch.MetricAlarm(
            child(self._name, "certificate-expiry"),
            name=f"vllm-deploy-{pulumi.get_stack()}-certificate-expiry",
            namespace=certificate_expiry.ACM_NAMESPACE,
            metric_name=certificate_expiry.ACM_METRIC,
            dimensions=imported.arn.apply(lambda arn: {certificate_expiry.ACM_DIMENSION: arn}),
            statistic="Minimum",
            period=certificate_expiry.ACM_PERIOD_S,
            evaluation_periods=1,
            comparison_operator="LessThanThreshold",
            threshold=certificate_expiry.RENEWAL_WINDOW_DAYS,
            treat_missing_data="notBreaching",  # ACM publishes once a day
            alarm_description=certificate_expiry.ACM_ALARM_DESCRIPTION,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _dns_validated(self, domain: str, zone_id: str, alb: aws.lb.LoadBalancer) -> pulumi.Output[str]:
        opts = pulumi.ResourceOptions(parent=self)
        cert = aws.acm.Certificate(child(self._name, "certificate"), domain_name=domain, validation_method="DNS", opts=opts)
        option = cert.domain_validation_options[0]
        record = aws.route53.Record(
            child(self._name, "validation"),
            zone_id=zone_id, name=option.resource_record_name, type=option.resource_record_type,
            records=[option.resource_record_value], ttl=300, allow_overwrite=True, opts=opts,
        )
        validated = aws.acm.CertificateValidation(
            child(self._name, "validated"), certificate_arn=cert.arn, validation_record_fqdns=[record.fqdn], opts=opts,
        )
        aws.route53.Record(
            child(self._name, "alias"),
            zone_id=zone_id, name=domain, type="A",
            aliases=[aws.route53.RecordAliasArgs(name=alb.dns_name, zone_id=alb.zone_id, evaluate_target_health=True)],
            opts=opts,
        )
        return validated.certificate_arn

    def _plain_http(self, alb: aws.lb.LoadBalancer) -> None:
        """Port 80: the single host's rule (serving/templates/nginx.conf.j2, plain-HTTP server)."""
        https_url = self.address.apply(lambda host: f"https://{host}/")
        bodies = https_url.apply(plain_http_bodies)

        def refusal(body: pulumi.Input[str]) -> aws.lb.ListenerDefaultActionFixedResponseArgs:
            return aws.lb.ListenerDefaultActionFixedResponseArgs(
                content_type="application/json", status_code="403", message_body=body
            )

        listener = aws.lb.Listener(
            child(self._name, "http"),
            load_balancer_arn=alb.arn, port=HTTP_PORT, protocol="HTTP",
            default_actions=[aws.lb.ListenerDefaultActionArgs(type="fixed-response", fixed_response=refusal(bodies[0]))],
            opts=pulumi.ResourceOptions(parent=self),
        )
        # A browser opening the address is sent to HTTPS by its configured name, never the request's Host.
        aws.lb.ListenerRule(
            child(self._name, "http-browser"),
            listener_arn=listener.arn, priority=10,
            conditions=[
                aws.lb.ListenerRuleConditionArgs(path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=["/"])),
                aws.lb.ListenerRuleConditionArgs(
                    http_request_method=aws.lb.ListenerRuleConditionHttpRequestMethodArgs(values=["GET", "HEAD"])
                ),
            ],
            actions=[aws.lb.ListenerRuleActionArgs(
                type="redirect",
                redirect=aws.lb.ListenerRuleActionRedirectArgs(
                    protocol="HTTPS", port=str(HTTPS_PORT), host=self.address, path="/", status_code="HTTP_301"
                ),
            )],
            opts=pulumi.ResourceOptions(parent=listener),
        )
        # An API call that carried a key over plain HTTP is told to replace it (as nginx does).
        aws.lb.ListenerRule(
            child(self._name, "http-with-key"),
            listener_arn=listener.arn, priority=20,
            conditions=[aws.lb.ListenerRuleConditionArgs(
                http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(http_header_name="Authorization", values=["*"])
            )],
            actions=[aws.lb.ListenerRuleActionArgs(
                type="fixed-response",
                fixed_response=aws.lb.ListenerRuleActionFixedResponseArgs(
                    content_type="application/json", status_code="403", message_body=bodies[1]
                ),
            )],
            opts=pulumi.ResourceOptions(parent=listener),
        )
