"""Monitoring in the whole program under recording mocks: the containers, the Grafana password,
the nginx location, the outputs, and a security group that gains nothing."""

import re

import pytest
import yaml

from config.image_pins import with_digest
from serving.monitoring import catalog, services
from tests.harness import is_secret, plain_text, reveal

CONTAINER = "docker:index/container:Container"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
API_KEY = "sk-test-0f9e8d7c6b5a4f3e2d1c0b9a"
GENERATED = "mock-generated-api-key-0123456789abcdef"  # what the mocks answer for any RandomPassword
SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}
MONITORING = {s.container: s for s in services.SERVICES}


def containers(run) -> dict[str, dict]:
    return {c.plain["name"]: c for c in run.of_type(CONTAINER)}


def uploaded(container, path: str) -> str:
    return next(u["content"] for u in reveal(container.inputs["uploads"]) if u["file"] == path)


def nginx_conf(run) -> str:
    return uploaded(run.named("vllm-proxy-container"), "/etc/nginx/nginx.conf")


def test_monitoring_containers_run_pinned_images_and_listen_on_loopback_only(program):
    run = program(SMALL)
    found = containers(run)
    assert set(MONITORING) <= set(found)
    images = {i.urn: i.plain["name"] for i in run.of_type("docker:index/remoteImage:RemoteImage")}
    for name, service in MONITORING.items():
        container = found[name]
        plain = container.plain
        assert plain["networkMode"] == "host" and not plain.get("ports"), name
        image_urns = set(container.property_dependencies["image"])
        # The catalog's tag, by its verified digest where config/image-digests.json has one.
        assert {images[u] for u in image_urns} == {with_digest(service.image)}, name
        listen = " ".join(plain.get("command") or []) + " " + " ".join(reveal(container.inputs.get("envs") or []))
        assert f"127.0.0.1:{service.port}" in listen or "GF_SERVER_HTTP_ADDR=127.0.0.1" in listen, name
        assert "0.0.0.0" not in listen and ":::" not in listen, name
    for container in found.values():  # vLLM and nginx included: nothing published beyond loopback
        for port in container.plain.get("ports") or []:
            assert port["ip"] == "127.0.0.1", container.name


def test_the_security_group_gains_no_rule(program):
    def rules(run):
        return sorted((r.plain["fromPort"], r.plain["toPort"], r.plain.get("cidrIpv4") or r.plain.get("cidrIpv6"))
                      for r in run.of_type(INGRESS))

    on, off = program(SMALL), program({**SMALL, "monitoring": False})
    assert rules(on) == rules(off)
    assert {port for port, _, _ in rules(on)} == {22, 80, 443}


def test_the_grafana_password_is_secret_everywhere_and_exported_as_a_secret(program):
    run = program(SMALL, secrets={"apiKey": API_KEY})  # so the mocks' generated value is Grafana's alone
    for res in run.resources:
        assert GENERATED not in plain_text(res.inputs), f"Grafana's password in plain inputs of {res.urn}"
    export = run.exports["grafanaPassword"]
    assert export.secret and export.value == GENERATED
    for name, other in run.exports.items():
        if name != "grafanaPassword":
            assert GENERATED not in str(other.value) or other.secret, name
    grafana = containers(run)["vllm-grafana"]
    assert is_secret(grafana.inputs["envs"]) and "envs" in grafana.additional_secret_outputs
    assert f"GF_SECURITY_ADMIN_PASSWORD={GENERATED}" in reveal(grafana.inputs["envs"])
    env = dict(e.split("=", 1) for e in reveal(grafana.inputs["envs"]))
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def grafana_allowed(run) -> list[str]:
    grafana = re.search(r"location \^~ /grafana/ \{(.*?)\n\s*\}", nginx_conf(run), re.S).group(1)
    assert "deny all;" in grafana
    return re.findall(r"allow ([^;]+);", grafana)


def test_grafana_is_closed_by_default_to_all_but_the_operators_networks(program):
    # dev's settings: the API open to the world, SSH from `auto` (the deployer, 192.0.2.44 here).
    run = program({**SMALL, "allowedCidrs": ["0.0.0.0/0"], "sshAllowedCidrs": ["auto"]})
    assert grafana_allowed(run) == ["192.0.2.44/32"]
    # prod's: an operators' network inside the clients' list.
    run = program({**SMALL, "allowedCidrs": ["203.0.113.0/24", "198.51.100.0/24"], "sshAllowedCidrs": ["198.51.100.0/24"]})
    assert grafana_allowed(run) == ["198.51.100.0/24"]
    # Operators outside what the security group lets reach 443: Grafana is open to nobody.
    run = program({**SMALL, "allowedCidrs": ["203.0.113.0/24"], "sshAllowedCidrs": ["10.0.0.0/8"]})
    assert grafana_allowed(run) == []
    # grafanaAllowedCidrs says otherwise.
    run = program({**SMALL, "allowedCidrs": ["0.0.0.0/0"], "grafanaAllowedCidrs": ["203.0.113.0/24"]})
    assert grafana_allowed(run) == ["203.0.113.0/24"]


def test_grafana_is_served_by_nginx_at_its_root_url_to_its_allow_list(program):
    run = program({**SMALL, "allowedCidrs": ["203.0.113.0/24"], "grafanaAllowedCidrs": ["203.0.113.0/24"]})
    url = run.exports["grafanaUrl"].value
    assert url == f"https://{run.exports['publicIp'].value}/grafana/"
    env = dict(e.split("=", 1) for e in reveal(containers(run)["vllm-grafana"].inputs["envs"]))
    assert env["GF_SERVER_ROOT_URL"] == url and env["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    conf = nginx_conf(run)
    grafana = re.search(r"location \^~ /grafana/ \{(.*?)\n\s*\}", conf, re.S).group(1)
    assert re.findall(r"allow ([^;]+);", grafana) == ["203.0.113.0/24"]
    assert re.search(r"upstream grafana \{\s*server 127\.0\.0\.1:(\d+);", conf).group(1) == str(services.GRAFANA.port)


def test_with_a_domain_grafana_is_reached_by_name(program):
    run = program({**SMALL, "domain": "llm.example.com"})
    assert run.exports["grafanaUrl"].value == "https://llm.example.com/grafana/"


def test_monitoring_off_means_no_containers_location_or_outputs(program):
    run = program({**SMALL, "monitoring": False})
    assert not set(MONITORING) & set(containers(run))
    assert "grafana" not in nginx_conf(run)
    assert "grafanaUrl" not in run.exports and "grafanaPassword" not in run.exports
    assert not run.of_type("docker:index/volume:Volume")


def test_prometheus_scrapes_vllms_port_and_keeps_what_the_keys_say(program):
    run = program({**SMALL, "monitoringRetentionDays": 30, "monitoringRetentionSizeGib": 20})
    found = containers(run)
    prom = found["vllm-prometheus"]
    config = yaml.safe_load(uploaded(prom, "/etc/prometheus/prometheus.yml"))
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in config["scrape_configs"]}
    vllm_port = int(found["vllm"].plain["ports"][0]["external"])  # numbers travel as floats
    assert targets["vllm"] == f"127.0.0.1:{vllm_port}"
    assert targets["dcgm"] == "127.0.0.1:9400" and targets["node"] == "127.0.0.1:9100"
    assert config["rule_files"] == ["/etc/prometheus/rules/vllm-deploy.yml"]
    assert "--storage.tsdb.retention.time=30d" in prom.plain["command"]
    assert "--storage.tsdb.retention.size=20GB" in prom.plain["command"]
    volume = run.one("docker:index/volume:Volume").plain
    assert prom.plain["mounts"] == [{"type": "volume", "source": volume["name"], "target": "/prometheus"}]


def test_the_waiting_alert_follows_sizing_or_the_key(program):
    def waiting_expr(run):
        rules = yaml.safe_load(uploaded(containers(run)["vllm-prometheus"], "/etc/prometheus/rules/vllm-deploy.yml"))
        return next(r["expr"] for r in rules["groups"][0]["rules"] if r["alert"] == "VllmRequestsQueued")

    run = program(SMALL)
    held = run.exports["sizing"].value["concurrentFullLengthSequences"]
    assert waiting_expr(run).endswith(f"> {held}")
    assert waiting_expr(program({**SMALL, "alertRequestsWaiting": 7})).endswith("> 7")


def test_dcgm_exporter_sees_the_gpus_without_extra_privileges(program):
    dcgm = containers(program(SMALL))["vllm-dcgm-exporter"]
    assert dcgm.plain["gpus"] == "all"
    assert not dcgm.plain.get("capabilities") and not dcgm.plain.get("privileged")
    counters = uploaded(dcgm, services.DCGM_COUNTERS_PATH)
    assert counters == catalog.DCGM_COUNTERS_FILE.read_text()
    assert dcgm.plain["command"][:2] == ["-f", services.DCGM_COUNTERS_PATH]


def test_node_exporter_reads_the_host_read_only(program):
    node = containers(program(SMALL))["vllm-node-exporter"].plain
    assert node["pidMode"] == "host"
    (mount,) = node["mounts"]
    assert (mount["source"], mount["target"], mount["readOnly"]) == ("/", "/host", True)
    assert mount["bindOptions"]["propagation"] == "rslave"


def test_monitoring_is_checked_after_vllm_serves_and_grafana_starts_after_prometheus(program):
    from tests.components.test_program import reaches

    run = program(SMALL)
    ready = run.named("vllm-monitoring-ready")
    assert reaches(run, ready, run.named("vllm-vllm-ready"))
    for name in MONITORING:
        assert reaches(run, ready, containers(run)[name]), name
    assert reaches(run, containers(run)["vllm-grafana"], containers(run)["vllm-prometheus"])
    env = ready.plain["environment"]
    assert env["VLLM_DEPLOY_JOBS"].split() == ["vllm", "dcgm", "node", "prometheus"]
    assert env["VLLM_DEPLOY_GRAFANA"] == "127.0.0.1:3000/grafana"


def test_a_grafana_list_the_security_group_cannot_serve_fails_before_any_resource(program):
    run = program({**SMALL, "allowedCidrs": ["203.0.113.0/24"], "grafanaAllowedCidrs": ["198.51.100.0/24"]},
                  expect_error=True)
    assert "vllm-deploy:grafanaAllowedCidrs" in str(run.error) and "vllm-deploy:allowedCidrs" in str(run.error)
    assert run.cloud_resources == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stacks_export_grafana(program, stack):
    from tests.harness import stack_config

    run = program(stack_config(stack), stack=stack)
    assert run.exports["grafanaUrl"].value.endswith("/grafana/")
    assert run.exports["grafanaPassword"].secret
