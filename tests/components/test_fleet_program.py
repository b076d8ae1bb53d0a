"""replicas >= 2 under recording mocks: every fleet resource and its wiring, secrets, the
replicas' reachability, a refresh that keeps capacity, the image's lifecycle, and the instance
profile against the AWS calls the replica's scripts make."""

import base64
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from components.fleet_bake import LAUNCH_HOOK, TERMINATE_HOOK, SHUTDOWN_TIMEOUT_S
from serving.monitoring import cloudwatch, prometheus
from serving.nginx import DEFAULT_UPSTREAM_TIMEOUT_S
from serving.replica import keepalive_timeouts
from sizing.costs import ALB_USD_PER_HOUR
from sizing.start_stages import VolumePerformance
from tests.harness import AwsWorld, computed_outputs, is_secret, plain_text, reveal, stack_config

ROOT = Path(__file__).resolve().parents[2]

API_KEY = "sk-test-fleet-0f9e8d7c6b5a4f3e2d"
ASG = "aws:autoscaling/group:Group"
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
AMI = "aws:ec2/amiFromInstance:AmiFromInstance"
STATE = "aws:ec2transitgateway/instanceState:InstanceState"
ALB = "aws:lb/loadBalancer:LoadBalancer"
TARGETS = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
RULE = "aws:lb/listenerRule:ListenerRule"
ACM = "aws:acm/certificate:Certificate"
PARAMETER = "aws:ssm/parameter:Parameter"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"
INSTANCE = "aws:ec2/instance:Instance"


def prod_fleet(program, replicas=3, world=None, **extra):
    return program({**stack_config("prod"), "replicas": replicas, **extra}, stack="prod",
                   secrets={"apiKey": API_KEY}, world=world or AwsWorld())


LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"


def baked_files(run) -> dict[str, str]:
    """The replica files as the builder receives them (the upload step's archive)."""
    archive = base64.b64decode(run.named("vllm-builder-replica-upload").plain["stdin"])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


def test_a_fleets_metrics_go_to_cloudwatch_from_the_agent_it_bakes(program):
    run = prod_fleet(program)
    assert not run.of_type("docker:index/container:Container")  # no Prometheus or Grafana on replicas
    assert not any("not built" in line for line in run.logs)
    group = run.one(ASG)
    log_group = run.one(LOG_GROUP)
    assert log_group.plain["name"] == "/vllm-deploy/prod/replica-metrics"
    assert log_group.plain["retentionInDays"] >= 15  # monitoringRetentionDays' default
    assert group.depends_on(log_group)  # the agent never makes the group itself (a later create would fail)
    # What the alarms and the dashboard read is what the baked agent config publishes.
    files = baked_files(run)
    config = json.loads(files["cloudwatch/agent.json"])
    assert config["logs"]["metrics_collected"]["prometheus"]["log_group_name"] == log_group.plain["name"]
    scrape = yaml.safe_load(files["cloudwatch/prometheus.yaml"])
    assert scrape["scrape_configs"][0]["static_configs"][0]["labels"] == {"AutoScalingGroupName": group.plain["name"]}
    published = cloudwatch.published_metrics(config)
    alarms = run.of_type(ALARM)
    single_host = {rule.name for rule in prometheus.alert_rules(1)}
    assert {a.name.removeprefix("vllm-metrics-") for a in alarms} >= single_host - set(cloudwatch.NOT_ON_A_FLEET)
    for alarm in alarms:
        plain = alarm.plain
        if plain["namespace"] == cloudwatch.NAMESPACE:
            assert plain["metricName"] in published, alarm.name
            assert plain["dimensions"] == {"AutoScalingGroupName": group.plain["name"]}
        elif plain["namespace"] == "AWS/CertificateManager":  # tests/serving/test_certificate_expiry.py
            continue
        else:
            targets = run.one(TARGETS)
            assert plain["namespace"] == "AWS/ApplicationELB"
            assert plain["dimensions"]["TargetGroup"] == computed_outputs(TARGETS, targets.name, targets.plain)["arnSuffix"]
    down = next(a.plain for a in alarms if a.name.endswith("VllmDown"))
    assert down["threshold"] == 3 and down["comparisonOperator"] == "LessThanThreshold"
    body = run.one(DASHBOARD).plain["dashboardBody"]
    for namespace, metric in cloudwatch.dashboard_metrics(body):
        assert namespace == "AWS/ApplicationELB" or metric in published, metric
    assert "metricsDashboardUrl" in run.exports
    # The agent is installed on the builder (signature checked) before the replica's files.
    agent = run.named("vllm-builder-cloudwatch-agent")
    assert agent.depends_on(run.named("vllm-builder-replica-upload"))
    assert run.named("vllm-builder-replica-install").depends_on(agent)
    assert API_KEY not in json.dumps(files["cloudwatch/agent.json"]) + files["cloudwatch/prometheus.yaml"]


def test_the_agent_may_write_only_its_log_group_and_namespace(program):
    run = prod_fleet(program)
    policy = json.loads(run.named("vllm-replicas-policy").plain["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    log_group = run.one(LOG_GROUP)
    log_group_arn = computed_outputs(LOG_GROUP, log_group.name, log_group.plain)["arn"]
    assert log_group_arn.endswith(":log-group:/vllm-deploy/prod/replica-metrics")
    assert by_sid["MetricsLogGroup"]["Resource"] == [log_group_arn, f"{log_group_arn}:*"]
    assert by_sid["MetricsPut"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": cloudwatch.NAMESPACE}}
    for statement in policy["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if any(a.startswith("logs:") for a in actions):
            assert "*" not in statement["Resource"], statement


def test_monitoring_off_makes_no_cloudwatch_side(program):
    run = prod_fleet(program, monitoring=False)
    assert not run.of_type(LOG_GROUP) and not run.of_type(ALARM) and not run.of_type(DASHBOARD)
    assert not any(name.startswith("cloudwatch/") for name in baked_files(run))
    assert not [r for r in run.resources if r.name == "vllm-builder-cloudwatch-agent"]
    policy = json.loads(run.named("vllm-replicas-policy").plain["policy"])
    assert not [s for s in policy["Statement"] if s["Sid"].startswith("Metrics")]
    assert "metricsDashboardUrl" not in run.exports


def test_one_replica_is_the_single_host(program):
    run = program({**stack_config("prod"), "replicas": 1}, stack="prod")
    assert not run.of_type(ASG) and not run.of_type(ALB) and len(run.of_type(INSTANCE)) == 1


def test_the_fleet_has_its_resources_wired_in_order(program):
    run = prod_fleet(program)
    group, template, image = run.one(ASG), run.one(TEMPLATE), run.one(AMI)
    stopped, targets, alb = run.one(STATE), run.one(TARGETS), run.one(ALB)
    # The only EC2 instance is the builder; the replicas are the group's.
    (builder,) = run.of_type(INSTANCE)
    assert group.plain["desiredCapacity"] == group.plain["minSize"] == group.plain["maxSize"] == 3
    # builder -> model -> upload -> install -> compile cache -> cleanup -> stopped -> image -> template -> group
    chain = [run.named("vllm-builder-setup-model"), run.named("vllm-builder-replica-upload"),
             run.named("vllm-builder-replica-install"), run.named("vllm-builder-compile-cache"),
             run.named("vllm-builder-bake-cleanup"), stopped, image, template, group]
    for later, earlier in zip(chain[1:], chain):
        assert later.depends_on(earlier), (later.name, earlier.name)
    assert stopped.plain["state"] == "stopped" and stopped.depends_on(builder)
    assert group.plain["targetGroupArns"] == [f"arn:aws:mock:::{targets.name}"] and group.depends_on(targets)
    assert group.plain["healthCheckType"] == "ELB"
    https = next(r for r in run.of_type(LISTENER) if r.plain["port"] == 443)
    assert https.depends_on(alb) and https.plain["defaultActions"][0]["type"] == "forward"
    assert https.plain["protocol"] == "HTTPS" and https.plain["sslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    exports = run.exports
    assert re.fullmatch(r"https://vllm-lb-alb-[\w.-]+\.elb\.amazonaws\.com/v1", exports["endpoint"].value)
    assert exports["replicas"].value == 3 and exports["autoScalingGroupName"].value == group.plain["name"]
    assert exports["imageId"].value == f"{image.name}-id"


def test_the_api_key_is_only_a_secure_string_and_a_secret_output(program):
    run = prod_fleet(program)
    parameter = run.one(PARAMETER)
    assert parameter.plain["type"] == "SecureString" and is_secret(parameter.inputs["value"])
    assert reveal(parameter.inputs["value"]) == API_KEY
    assert parameter.plain["name"] == "/vllm-deploy/prod/api-key"
    for res in run.resources:
        assert API_KEY not in plain_text(res.inputs), f"API key in plain inputs of {res.urn}"
    template = run.one(TEMPLATE)
    assert "userData" not in template.plain and API_KEY not in json.dumps(template.plain)
    assert run.exports["apiKey"].secret and run.exports["apiKey"].value == API_KEY
    for name, export in run.exports.items():
        assert export.secret or API_KEY not in str(export.value), name


def test_replicas_take_https_only_from_the_load_balancers_group(program):
    run = prod_fleet(program)
    alb_group = run.by_urn(next(u for u in run.one(ALB).dependencies if "SecurityGroup" in u))
    replica_group = run.named("vllm-replicas-sg")
    rules = [r for r in run.of_type(INGRESS) if r.parent == replica_group.urn]
    https = [r for r in rules if r.plain["fromPort"] <= 443 <= r.plain["toPort"]]
    assert len(https) == 1 and https[0].depends_on(alb_group)
    assert "cidrIpv4" not in https[0].plain and "cidrIpv6" not in https[0].plain
    others = [r for r in rules if r not in https]
    assert {(r.plain["fromPort"], r.plain.get("cidrIpv4")) for r in others} == {(22, "198.51.100.0/24")}
    # The template puts that group (and only it) on each replica.
    (interface,) = run.one(TEMPLATE).plain["networkInterfaces"]
    assert run.one(TEMPLATE).depends_on(replica_group) and len(interface["securityGroups"]) == 1
    # The balancer takes 443 and 80 from allowedCidrs only.
    alb_rules = {(r.plain["fromPort"], r.plain["cidrIpv4"]) for r in run.of_type(INGRESS) if r.parent == alb_group.urn}
    assert alb_rules == {(p, c) for p in (443, 80) for c in ("203.0.113.0/24", "198.51.100.0/24")}


def test_a_refresh_launches_before_it_retires_on_a_pinned_template_version(program):
    run = prod_fleet(program)
    group, template = run.one(ASG), run.one(TEMPLATE)
    pinned = group.plain["launchTemplate"]
    assert pinned["version"] == "1" and pinned["version"] not in ("$Latest", "$Default")
    assert group.depends_on(template) and template.plain["updateDefaultVersion"] is True
    refresh = group.plain["instanceRefresh"]
    assert refresh["strategy"] == "Rolling"
    prefs = refresh["preferences"]
    assert prefs["minHealthyPercentage"] == 100 and prefs["maxHealthyPercentage"] == 200 and prefs["autoRollback"]
    # `pulumi up` waits for the refresh each new template version starts.
    waiter = run.named("vllm-replicas-refresh-wait")
    assert waiter.depends_on(group) and waiter.plain["create"].endswith("components/local/wait_for_refresh.py")
    assert waiter.plain["environment"]["GROUP_NAME"] == group.plain["name"] and waiter.plain["triggers"] == [1]
    surge = run.exports["refreshSurge"].value
    assert surge["extraInstances"] == 3 and surge["extraGpus"] == 3 * run.exports["sizing"].value["gpus"]
    assert surge["peakVcpus"] == 2 * surge["extraVcpus"] > 0


def test_the_launch_template_is_locked_down_and_reads_the_model_from_the_image(program):
    run = prod_fleet(program)
    template, image = run.one(TEMPLATE).plain, run.one(AMI)
    assert run.one(TEMPLATE).depends_on(image)
    meta = template["metadataOptions"]
    assert (meta["httpTokens"], meta["httpPutResponseHopLimit"], meta["instanceMetadataTags"]) == ("required", 1, "enabled")
    assert template["instanceType"] == run.exports["instanceType"].value
    devices = {d["deviceName"]: d["ebs"] for d in template["blockDeviceMappings"]}
    assert set(devices) == {"/dev/sda1", "/dev/sdf"}
    for ebs in devices.values():
        assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3" and 100 <= ebs["volumeInitializationRate"] <= 300
    assert devices["/dev/sdf"]["snapshotId"] == "snap-0models0000000000"
    assert devices["/dev/sdf"]["volumeSize"] >= run.exports["sizing"].value["modelVolumeGb"]


def test_target_group_health_drain_and_keepalive_follow_the_contract(program):
    run = prod_fleet(program, drainSeconds=420)
    targets = run.one(TARGETS).plain
    assert (targets["protocol"], targets["port"], targets["deregistrationDelay"]) == ("HTTPS", 443, 420)
    check = targets["healthCheck"]
    assert (check["protocol"], check["path"], check["matcher"]) == ("HTTPS", "/health", "200")
    assert targets["loadBalancingAlgorithmType"] == "least_outstanding_requests"
    alb_idle, nginx_keepalive = keepalive_timeouts(DEFAULT_UPSTREAM_TIMEOUT_S)
    assert run.one(ALB).plain["idleTimeout"] == alb_idle < nginx_keepalive
    hooks = {h["name"]: h for h in run.one(ASG).plain["initialLifecycleHooks"]}
    assert hooks[LAUNCH_HOOK]["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert hooks[TERMINATE_HOOK]["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    # prod waits 40 minutes for readiness; the hooks and `pulumi up` wait at least as long.
    assert hooks[LAUNCH_HOOK]["heartbeatTimeout"] >= 40 * 60
    assert hooks[TERMINATE_HOOK]["heartbeatTimeout"] > 420 + SHUTDOWN_TIMEOUT_S + 30
    wait = run.one(ASG).plain["waitForCapacityTimeout"]
    assert int(wait.removesuffix("m")) >= 40 and run.one(ASG).plain["waitForElbCapacity"] == 3


def test_plain_http_gets_the_single_hosts_rule(program):
    run = prod_fleet(program)
    http = next(r for r in run.of_type(LISTENER) if r.plain["port"] == 80)
    refusal = http.plain["defaultActions"][0]["fixedResponse"]
    assert refusal["statusCode"] == "403" and json.loads(refusal["messageBody"])["error"]["code"] == 403
    rules = {r.name: r.plain for r in run.of_type(RULE)}
    browser = rules["vllm-lb-http-browser"]
    assert browser["actions"][0]["redirect"]["protocol"] == "HTTPS"
    methods = [c["httpRequestMethod"]["values"] for c in browser["conditions"] if "httpRequestMethod" in c]
    assert methods == [["GET", "HEAD"]]
    keyed = rules["vllm-lb-http-with-key"]
    assert "replace it" in keyed["actions"][0]["fixedResponse"]["messageBody"]
    assert browser["priority"] < keyed["priority"]


def test_the_listener_certificate_is_the_stacks_ca_signed_one_for_the_albs_name(program):
    run = prod_fleet(program)
    imported = run.one(ACM)
    assert is_secret(imported.inputs["privateKey"]) and "certificateBody" in imported.inputs
    request = run.named("vllm-lb-server-csr").plain
    assert len(request["subject"]["commonName"]) <= 64
    assert request["dnsNames"] == ["vllm-lb-alb-7f3a2b1-0123456789abcdef.us-east-1.elb.amazonaws.com"]
    for key in ("vllm-lb-server-key", "vllm-lb-ca-key"):
        assert run.named(key).plain["algorithm"] == "ECDSA"  # ACM and ALBs refuse ED25519
    assert run.exports["caCertificate"].value.startswith("-----BEGIN CERTIFICATE-----")


def test_with_a_domain_in_route_53_the_certificate_is_validated_by_dns(program):
    world = AwsWorld()
    world.hosted_zones = {"example.com": "Z0EXAMPLE"}
    run = prod_fleet(program, world=world, domain="llm.example.com")
    cert = run.one(ACM).plain
    assert cert["domainName"] == "llm.example.com" and cert["validationMethod"] == "DNS"
    assert run.named("vllm-lb-alias").plain["zoneId"] == "Z0EXAMPLE"
    assert not run.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert run.exports["endpoint"].value == "https://llm.example.com/v1" and "caCertificate" not in run.exports


def test_the_image_is_kept_when_replaced_and_rebaked_exactly_when_its_content_changes(program):
    def bake(**extra):
        run = prod_fleet(program, **extra)
        image = run.one(AMI)
        return run, image.plain["name"], image

    run, name, image = bake()
    assert image.retain_on_delete and not image.delete_before_replace
    assert image.plain["snapshotWithoutReboot"] is False
    builder = run.one(INSTANCE)
    assert builder.replacement_trigger == image.replacement_trigger  # a new digest rebuilds the builder
    assert bake()[1] == name
    assert bake(replicas=4)[1] == name  # the count is the group's business, not the image's
    assert bake(modelRevision="a1b2c3d")[1] != name
    assert bake(drainSeconds=120)[1] == name  # the target group's delay: no new image, no roll
    # The digest, then the bake's own id (an image name is unique in a Region: going back to an
    # earlier digest bakes under a new name while the retained image keeps the old one).
    assert re.fullmatch(r"vllm-deploy-prod-[0-9a-f]{16}-[0-9a-f]{8}", name)
    bake_id = run.named("vllm-builder-bake-id")
    assert bake_id.plain["keepers"] == {"digest": builder.replacement_trigger}
    stack_id = run.named("vllm-builder-stack-id")
    assert "keepers" not in stack_id.plain or not stack_id.plain["keepers"]  # made once per stack
    assert re.fullmatch(r"[0-9a-f]{16}", image.plain["tags"]["vllm-deploy-stack-id"])


def test_the_instance_profile_reads_one_parameter_and_answers_its_own_hooks(program):
    run = prod_fleet(program)
    policy = json.loads(run.named("vllm-replicas-policy").plain["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["ApiKey"]["Action"] == "ssm:GetParameter"
    assert by_sid["ApiKey"]["Resource"].endswith(":parameter/vllm-deploy/prod/api-key")
    decrypt = by_sid["ApiKeyDecrypt"]["Condition"]["StringEquals"]
    assert decrypt["kms:ViaService"] == "ssm.us-east-1.amazonaws.com"
    assert by_sid["LifecycleHooks"]["Resource"].endswith("autoScalingGroupName/vllm-deploy-prod-replicas")
    everywhere = [s for s in policy["Statement"] if s["Resource"] == "*"]
    # On every resource, only the read that tells a replica its own group (Describe* calls take no
    # resource-level permission); no parameter read and no lifecycle action anywhere but its own.
    assert {a for s in everywhere for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            if a.startswith(("ssm:GetParameter", "autoscaling:"))} == {"autoscaling:DescribeAutoScalingInstances"}
    # Every AWS call the replica's scripts make is allowed (a call the profile refuses would leave
    # a replica unable to read its key or complete its hooks).
    allowed = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    scripts = "\n".join(p.read_text() for p in (ROOT / "components/scripts/replica").glob("*.sh"))
    calls = set(re.findall(r"\baws (ssm|autoscaling) ([a-z-]+)", scripts))
    assert calls, "the replica scripts make AWS calls"
    for service, command in calls:
        action = f"{service}:" + "".join(part.capitalize() for part in command.split("-"))
        assert action in allowed, f"the instance profile does not allow {action} (aws {service} {command})"
    replica_role = run.named("vllm-replicas-role")
    attached = [r for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if r.parent == replica_role.urn]
    assert attached == []  # no managed policy (AmazonSSMManagedInstanceCore reads every parameter)


def test_cost_counts_every_replica_the_balancer_and_the_stopped_builder(program):
    run = prod_fleet(program)
    price = run.exports["hourlyPriceUsd"].value
    sizing = run.exports["sizing"].value
    replica_gb = sizing["rootVolumeGb"] + sizing["modelVolumeGb"]
    hourly = run.exports["costUsd"].value["runningPerHour"]
    gp3 = 0.08 / 730
    replica_extra, builder_extra = provisioned_performance_usd_per_month(run)
    assert replica_extra > 0  # prod's weights want more than gp3's 125 MiB/s (sizing.start_stages)
    expected = (3 * price + ALB_USD_PER_HOUR + (4 * replica_gb) * gp3 + (3 + 1 + 3) * 0.005
                + (3 * replica_extra + builder_extra) / 730)
    assert hourly == pytest.approx(expected, abs=1e-3)


def provisioned_performance_usd_per_month(run) -> tuple[float, float]:
    """(one replica's, the builder's) gp3 throughput and IOPS above the free baseline, USD per
    month, priced from what the launch template and the builder's volumes provision."""
    def extra(ebs) -> float:
        return VolumePerformance(int(ebs.get("throughput") or 125), int(ebs.get("iops") or 3000)).usd_per_month
    template = run.of_type("aws:ec2/launchTemplate:LaunchTemplate")[0]
    replica = sum(extra(m["ebs"]) for m in template.plain["blockDeviceMappings"])
    builder = sum(extra(v.plain) for v in run.of_type("aws:ebs/volume:Volume"))
    return replica, builder


def test_replicas_go_only_where_the_type_is_offered_and_the_balancer_spans_every_zone(program):
    world = AwsWorld()
    chosen = prod_fleet(program).exports["instanceType"].value
    world.zone_offerings = {"us-east-1a": {chosen}, "us-east-1b": set(), "us-east-1c": {chosen}}
    run = prod_fleet(program, world=world)
    assert run.one(ASG).plain["vpcZoneIdentifiers"] == [world.subnet_id("us-east-1a"), world.subnet_id("us-east-1c")]
    assert run.one(ALB).plain["subnets"] == [world.subnet_id(z) for z in world.zones]


def test_a_replica_that_never_reports_ready_is_abandoned_and_a_hung_drain_still_terminates(program):
    """The hooks' default results, what AWS does when a replica says nothing before the heartbeat
    timeout (IMDS or the Auto Scaling API unreachable from boot.sh, a wedged drain): a launch
    that never completed is ABANDONed (the group replaces it; CONTINUE would put a replica that
    never answered /health in service), a termination goes on (CONTINUE)."""
    run = prod_fleet(program)
    hooks = {h["name"]: h for h in run.one(ASG).plain["initialLifecycleHooks"]}
    assert hooks[LAUNCH_HOOK]["defaultResult"] == "ABANDON"
    assert hooks[TERMINATE_HOOK]["defaultResult"] == "CONTINUE"


def test_replica_nginx_trusts_x_forwarded_for_only_from_the_load_balancers_subnets(program):
    """P3: the baked nginx takes the client address from X-Forwarded-For only when the peer is
    one of the ALB's nodes, i.e. in one of the ALB's subnets. Trusting the VPC (or everyone) lets
    any host there, or any client, name its own address: per-client limits and the /metrics
    allow-list would believe it."""
    world = AwsWorld()
    run = prod_fleet(program, world=world)
    subnets = run.one(ALB).plain["subnets"]
    cidrs = {world.answer("aws:ec2/getSubnet:getSubnet", {"id": s})["cidrBlock"] for s in subnets}
    assert len(cidrs) >= 2
    archive = base64.b64decode(run.named("vllm-builder-replica-upload").plain["stdin"])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        conf = tar.extractfile("nginx/nginx.conf").read().decode()
    assert set(re.findall(r"^\s*set_real_ip_from\s+(\S+);", conf, re.M)) == cidrs
    assert re.search(r"^\s*real_ip_header\s+X-Forwarded-For;", conf, re.M)


def test_a_domain_without_a_route_53_zone_says_where_to_point_it(program):
    """No zone in the account: nothing makes the domain's record, and `endpoint` names the
    domain. The preview says so, and the ALB's own name is an output to point a CNAME at."""
    run = prod_fleet(program, domain="llm.example.com")
    assert run.exports["endpoint"].value == "https://llm.example.com/v1"
    dns_name = run.exports["loadBalancerDnsName"].value
    assert dns_name.endswith(".elb.amazonaws.com")
    assert any("domain=llm.example.com" in line and "loadBalancerDnsName" in line and "CNAME" in line
               for line in run.logs)
    zoned = AwsWorld()
    zoned.hosted_zones["example.com"] = "Z0123456789ABCDEFGHIJ"
    assert not any("loadBalancerDnsName" in line for line in prod_fleet(program, world=zoned, domain="llm.example.com").logs)


def test_a_scaling_fleets_refresh_surge_counts_the_top_of_its_range():
    """At maxReplicas a refresh overlaps maxReplicas old and as many new replicas: the vCPU quota
    the plan asks for must cover both (a quota set from a smaller figure fails the refresh)."""
    from components.fleet import refresh_surge
    from config.validation import parse
    from sizing.choice import plan as choose_plan

    config = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "replicas": 3, "maxReplicas": 6, "maxModelLen": 8192})
    sized = choose_plan(config)
    surge = refresh_surge(config, sized)
    assert surge["extraInstances"] == 6
    assert surge["peakVcpus"] == 12 * sized.instance.vcpus


def test_every_local_aws_command_uses_the_stacks_profile_and_region(program):
    """The refresh wait, the image pruner, the destroy guard and the host-key reader run where
    `pulumi up` runs, with boto3: they must reach the account pulumi-aws deploys to (aws:profile),
    not the machine's default credentials."""
    run = prod_fleet(program, **{"aws:profile": "team-gpu", "aws:region": "us-east-1"})
    local = [r for r in run.of_type("command:local:Command")
             if r.name.endswith(("-refresh-wait", "-image-prune", "-image-destroy", "-host-key"))]
    assert {r.name.rsplit("-", 2)[-2] + "-" + r.name.rsplit("-", 2)[-1] for r in local} >= {
        "refresh-wait", "image-prune", "image-destroy", "host-key"}
    for command in local:
        environment = reveal(command.plain["environment"])
        assert environment.get("AWS_PROFILE") == "team-gpu", command.name
        assert environment.get("AWS_REGION") == "us-east-1", command.name
