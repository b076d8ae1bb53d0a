"""Monitoring: Prometheus, the NVIDIA DCGM exporter, the node exporter and Grafana on the host.

Pinned containers created like vLLM's and nginx's: through the host's Docker engine over SSH,
replaced with the instance (its id is a label or trigger) and deleted with it. All four share
the host's network and listen on 127.0.0.1 only (serving/monitoring/services.py); the only way
in from outside is nginx's /grafana/ on 443, so the security group gets no new rule. The files
they read are rendered by serving/monitoring and uploaded into the containers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_random as random

from config.image_pins import with_digest
from components.docker_host import CONTAINER_SLICE, GPU_RUNTIME, INSTANCE_LABEL
from components.host_handle import HostHandle
from components.naming import child, component_type
from components.tenant_usage import tenant_usage_step
from config.settings import StackConfig
from serving.monitoring import grafana, prometheus
from serving.monitoring.certificate_expiry import expiry_alert_rules, unix_seconds
from serving.monitoring.catalog import DCGM_COUNTERS_FILE
from serving.monitoring.usage_dashboard import usage_alert_rules
from serving.monitoring.services import (
    DCGM_COUNTERS_PATH,
    DCGM_EXPORTER,
    GRAFANA,
    NODE_EXPORTER,
    NODE_ROOTFS,
    PROMETHEUS,
    dcgm_exporter_args,
    node_exporter_args,
)
from sizing.plan import SizingPlan

GRAFANA_PASSWORD_LENGTH = 32
PROMETHEUS_VOLUME = "vllm-prometheus-data"
READINESS_TIMEOUT_S = 300


@dataclass
class MonitoringArgs:
    settings: StackConfig
    """The validated stack config (retention, alert threshold key)."""
    plan: SizingPlan
    """The sizing decision (the derived waiting-requests threshold)."""
    host: HostHandle
    """The head node's host: Docker engine, SSH for the readiness check, instance, provisioning."""
    vllm_ready: pulumi.Resource
    """vLLM answers: only then can every scrape target be up."""
    vllm_port: int
    """vLLM's port on the host's loopback (its /metrics)."""
    address: pulumi.Input[str]
    """The stack's domain or Elastic IP: Grafana's root URL is https://<address>/grafana/."""
    certificate_not_after: Optional[pulumi.Input[str]] = None
    """The stack's own server certificate's notAfter (RFC 3339): alerts before it expires
    (serving.monitoring.certificate_expiry); None with letsencrypt."""


class Monitoring(pulumi.ComponentResource):
    """Metrics, alerts and dashboards of the endpoint, on the host; Grafana via nginx."""

    grafana_url: pulumi.Output[str]
    grafana_password: pulumi.Output[str]
    ready: command.remote.Command

    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("Monitoring"), name, None, opts)
        self._name = name
        self._args = args
        self._tenants = args.settings.tenants_enabled

        password = self._grafana_password()
        prometheus_container = self._prometheus()
        exporters = [self._node_exporter(), self._dcgm_exporter()]
        grafana_container = self._grafana(password, after=prometheus_container)
        # apiKeys: mtail's per-tenant counters on the host (components.tenant_usage); the
        # readiness check then waits for their scrape job too.
        usage = [tenant_usage_step(self, name, args.host, metrics=True)] if self._tenants else []
        self.ready = self._readiness([prometheus_container, grafana_container, *exporters], after=usage)

        self.grafana_password = password
        self.grafana_url = pulumi.Output.all(self.ready.id, args.address).apply(
            lambda v: grafana.root_url(v[1])
        )
        self.register_outputs({"grafanaUrl": self.grafana_url, "grafanaPassword": self.grafana_password})

    # --- helpers -------------------------------------------------------------------
    def _on_host(self, depends_on: list[pulumi.Resource], **extra) -> pulumi.ResourceOptions:
        return self._args.host.docker_options(self, depends_on, **extra)

    def _image(self, role: str, reference: str) -> docker.RemoteImage:
        return docker.RemoteImage(
            child(self._name, f"{role}-image"),
            name=with_digest(reference),
            keep_locally=True,
            triggers={INSTANCE_LABEL: self._args.host.instance_id},
            opts=self._on_host([self._args.host.runtime_ready]),
        )

    def _labels(self) -> list[docker.ContainerLabelArgs]:
        return [docker.ContainerLabelArgs(label=INSTANCE_LABEL, value=self._args.host.instance_id)]

    def _container(self, role: str, image: docker.RemoteImage, *, after: list[pulumi.Resource],
                   secret_inputs: tuple[str, ...] = (), **settings) -> docker.Container:
        """A long-running container on the host network; replaced in place (same name, port)."""
        return docker.Container(
            child(self._name, role),
            cgroup_parent=CONTAINER_SLICE,  # no IMDS from the host network (docker_host)
            image=image.image_id,
            network_mode="host",
            restart="always",
            must_run=True,
            labels=self._labels(),
            log_driver="json-file",
            log_opts={"max-size": "20m", "max-file": "3"},
            **settings,
            opts=self._on_host(
                [self._args.host.runtime_ready, *after],
                additional_secret_outputs=list(secret_inputs),
                delete_before_replace=True,
            ),
        )

    def _grafana_password(self) -> pulumi.Output[str]:
        generated = random.RandomPassword(
            child(self._name, "grafana-password"),
            length=GRAFANA_PASSWORD_LENGTH,
            special=False,  # safe in a form field and an environment variable
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pulumi.Output.secret(generated.result)

    def _prometheus(self) -> docker.Container:
        settings, plan = self._args.settings, self._args.plan
        rules = prometheus.alert_rules(prometheus.requests_waiting_threshold(settings, plan))
        rules += usage_alert_rules() if self._tenants else ()
        config = prometheus.config_yaml(prometheus.scrape_targets(self._args.vllm_port, tenant_usage=self._tenants))
        # A named volume keeps the metrics across container replacements; Docker fills a new
        # one from the image's /prometheus, owned by the image's user (nobody). Its label
        # ties it to the instance, so a new host gets a new volume.
        data = docker.Volume(
            child(self._name, "prometheus-data"),
            name=PROMETHEUS_VOLUME,
            labels=[docker.VolumeLabelArgs(label=INSTANCE_LABEL, value=self._args.host.instance_id)],
            opts=self._on_host([self._args.host.runtime_ready]),
        )
        return self._container(
            "prometheus",
            self._image("prometheus", PROMETHEUS.image),
            after=[data],
            name=PROMETHEUS.container,
            command=prometheus.command_args(
                retention_days=settings.monitoring_retention_days,
                retention_size_gib=settings.monitoring_retention_size_gib,
            ),
            uploads=[
                docker.ContainerUploadArgs(file=prometheus.CONFIG_PATH, content=config, permissions="0644"),
                docker.ContainerUploadArgs(file=prometheus.RULES_PATH, content=self._rules_file(rules), permissions="0644"),
            ],
            mounts=[docker.ContainerMountArgs(type="volume", source=data.name, target=prometheus.STORAGE_PATH)],
        )

    def _rules_file(self, rules: tuple[prometheus.AlertRule, ...]) -> pulumi.Input[str]:
        """The rules file; with the stack's own certificate, its expiry alerts too."""
        if self._args.certificate_not_after is None:
            return prometheus.rules_yaml(rules)
        return pulumi.Output.from_input(self._args.certificate_not_after).apply(
            lambda end: prometheus.rules_yaml(rules + (expiry_alert_rules(unix_seconds(end)) if end else ()))
        )

    def _node_exporter(self) -> docker.Container:
        # The node exporter README's Docker recipe: host network and PID namespace, the host's
        # root read-only at /host with rslave propagation (later mounts show up too).
        return self._container(
            "node-exporter",
            self._image("node-exporter", NODE_EXPORTER.image),
            after=[],
            name=NODE_EXPORTER.container,
            command=node_exporter_args(),
            pid_mode="host",
            mounts=[
                docker.ContainerMountArgs(
                    type="bind", source="/", target=NODE_ROOTFS, read_only=True,
                    bind_options=docker.ContainerMountBindOptionsArgs(propagation="rslave"),
                )
            ],
        )

    def _dcgm_exporter(self) -> docker.Container:
        # No CAP_SYS_ADMIN: the collectors file leaves out the profiling fields that need it.
        return self._container(
            "dcgm-exporter",
            self._image("dcgm-exporter", DCGM_EXPORTER.image),
            after=[],
            name=DCGM_EXPORTER.container,
            command=dcgm_exporter_args(),
            gpus="all",
            runtime=GPU_RUNTIME,  # as the vLLM container: works in the toolkit's CDI mode too
            uploads=[
                docker.ContainerUploadArgs(
                    file=DCGM_COUNTERS_PATH, content=DCGM_COUNTERS_FILE.read_text(), permissions="0644"
                )
            ],
        )

    def _grafana(self, password: pulumi.Output[str], *, after: docker.Container) -> docker.Container:
        url = pulumi.Output.from_input(self._args.address).apply(grafana.root_url)
        settings = url.apply(grafana.environment)
        envs = pulumi.Output.all(settings, password).apply(
            lambda v: [*v[0], f"GF_SECURITY_ADMIN_PASSWORD={v[1]}"]
        )
        return self._container(
            "grafana",
            self._image("grafana", GRAFANA.image),
            after=[after],
            secret_inputs=("envs",),
            name=GRAFANA.container,
            # Secret as a whole: it holds the admin password (read once, when Grafana first
            # creates its database inside the container).
            envs=pulumi.Output.secret(envs),
            uploads=[
                docker.ContainerUploadArgs(file=path, content=text, permissions="0644")
                for path, text in sorted(grafana.provisioned_files(tenant_usage=self._tenants).items())
            ],
        )

    def _readiness(self, containers: list[docker.Container], *,
                   after: list[command.remote.Command]) -> command.remote.Command:
        """Prometheus ready with every target up, and Grafana healthy, checked on the host."""
        jobs = " ".join(prometheus.scrape_targets(self._args.vllm_port, tenant_usage=self._tenants))
        return self._args.host.steps(self, self._name).run(
            "ready", "wait_for_monitoring.sh", after=self._args.vllm_ready,
            env={
                "VLLM_DEPLOY_PROMETHEUS": PROMETHEUS.address,
                # Grafana serves from its sub-path on its own port too.
                "VLLM_DEPLOY_GRAFANA": GRAFANA.address + grafana.SUB_PATH.rstrip("/"),
                "VLLM_DEPLOY_JOBS": jobs,
                "VLLM_DEPLOY_CONTAINERS": " ".join(
                    s.container for s in (PROMETHEUS, DCGM_EXPORTER, NODE_EXPORTER, GRAFANA)
                ),
                "VLLM_DEPLOY_TIMEOUT_SECONDS": str(READINESS_TIMEOUT_S),
            },
            log_output=True,
            extra_triggers=[c.id for c in containers] + [step.id for step in after],
            timeout=f"{READINESS_TIMEOUT_S // 60 + 5}m",
        )
