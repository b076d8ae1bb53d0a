"""VllmDeployment: the whole endpoint, composed from one component per concern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.benchmark import VllmBenchmark, VllmBenchmarkArgs
from components.docker_host import docker_over_ssh, identity_file_hint
from components.gpu_host import GpuHost, GpuHostArgs
from components.host_setup import HostSetup, HostSetupArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.naming import child, component_type, default_tags
from components.proxy import NginxProxy, NginxProxyArgs
from components.vllm_server import VllmServer, VllmServerArgs
from sizing.plan import SizingPlan
from config.settings import StackConfig


@dataclass
class VllmDeploymentArgs:
    settings: StackConfig
    """The validated stack config."""
    plan: SizingPlan
    """The sizing decision."""
    vllm_command: list[str]
    """`vllm serve` arguments (config.stack.vllm_command), already checked."""
    api_key: Optional[pulumi.Output[str]] = None
    """Secret API key; generated when None."""
    hf_token: Optional[pulumi.Output[str]] = None
    """Secret Hugging Face token for gated models."""
    modelscope_token: Optional[pulumi.Output[str]] = None
    """Secret ModelScope token (modelSource modelscope)."""
    aws_settings: Optional[dict[str, Any]] = None
    """The stack's aws:* settings for the explicit provider (config.stack.aws_provider_settings)."""


class VllmDeployment(pulumi.ComponentResource):
    """A secured OpenAI-compatible vLLM endpoint on one AWS GPU instance."""

    endpoint: pulumi.Output[str]
    api_key: pulumi.Output[str]
    ca_certificate: Optional[pulumi.Output[str]]  # None with tls=letsencrypt
    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    ssh_command: pulumi.Output[str]
    ssh_private_key: Optional[pulumi.Output[str]]
    grafana_url: Optional[pulumi.Output[str]]  # None with monitoring off
    grafana_password: Optional[pulumi.Output[str]]
    benchmark: Optional[pulumi.Output[dict[str, Any]]]  # None with benchmarkOnDeploy false

    def __init__(self, name: str, args: VllmDeploymentArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("VllmDeployment"), name, None, opts)
        settings, plan = args.settings, args.plan

        provider = self._tagged_provider(name, dict(args.aws_settings or {}))
        in_aws = pulumi.ResourceOptions(parent=self, providers={"aws": provider})
        mine = pulumi.ResourceOptions(parent=self)

        api_key = args.api_key if args.api_key is not None else self._generated_api_key(name)
        host = GpuHost(child(name, "host"), GpuHostArgs(settings=settings, plan=plan), in_aws)
        setup = HostSetup(
            child(name, "setup"),
            HostSetupArgs(
                settings=settings,
                plan=plan,
                connection=host.connection,
                instance_id=host.instance_id,
                hf_token=args.hf_token,
                modelscope_token=args.modelscope_token,
            ),
            mine,
        )
        engine = docker_over_ssh(
            name, host=host.public_ip, user=host.ssh_user, private_key=host.ssh_private_key, opts=mine
        )
        server = VllmServer(
            child(name, "vllm"),
            VllmServerArgs(
                settings=settings,
                plan=plan,
                command=args.vllm_command,
                docker_provider=engine,
                connection=host.connection,
                instance=host.instance,
                instance_id=host.instance_id,
                runtime_ready=setup.runtime_ready,
                model_ready=setup.model_ready,
                model_dir=setup.model_dir,
                api_key=api_key,
            ),
            mine,
        )
        proxy = NginxProxy(
            child(name, "proxy"),
            NginxProxyArgs(
                settings=settings,
                docker_provider=engine,
                public_ip=host.public_ip,
                upstream_port=server.port,
                depends_on=[server.ready],
                connection=host.connection,
                instance=host.instance,
                instance_id=host.instance_id,
                runtime_ready=setup.runtime_ready,
            ),
            mine,
        )

        # Beside the proxy, not before it: on a first deploy nobody has the endpoint yet, and a
        # failed benchmark should not keep the endpoint from coming up.
        self.benchmark = None
        if settings.benchmark_on_deploy:
            self.benchmark = VllmBenchmark(
                child(name, "benchmark"),
                VllmBenchmarkArgs(
                    settings=settings,
                    plan=plan,
                    connection=host.connection,
                    instance_id=host.instance_id,
                    ready=server.ready,
                    model_dir=setup.model_dir,
                    api_key=api_key,
                ),
                mine,
            ).result

        address = settings.domain or host.public_ip
        # The endpoint exists once vLLM answered and the proxy is up: carry both as dependencies.
        self.endpoint = pulumi.Output.all(server.ready.id, proxy.container_id, address).apply(
            lambda v: f"https://{v[2]}/v1"
        )
        self.grafana_url, self.grafana_password = None, None
        if settings.monitoring:
            monitoring = Monitoring(
                child(name, "monitoring"),
                MonitoringArgs(
                    settings=settings,
                    plan=plan,
                    docker_provider=engine,
                    connection=host.connection,
                    instance=host.instance,
                    instance_id=host.instance_id,
                    runtime_ready=setup.runtime_ready,
                    vllm_ready=server.ready,
                    vllm_port=server.port,
                    address=address,
                ),
                mine,
            )
            # Grafana is reached through the proxy: the URL waits for both.
            self.grafana_url = pulumi.Output.all(monitoring.grafana_url, proxy.container_id).apply(lambda v: v[0])
            self.grafana_password = monitoring.grafana_password
        self.api_key = pulumi.Output.secret(api_key)
        self.ca_certificate = proxy.ca_certificate
        self.instance_id = host.instance_id
        self.public_ip = host.public_ip
        self.ssh_private_key = host.ssh_private_key
        key_hint = f"-i {identity_file_hint(pulumi.get_stack())} " if host.ssh_private_key is not None else ""
        self.ssh_command = pulumi.Output.concat("ssh ", key_hint, host.ssh_user, "@", host.public_ip)
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "apiKey": self.api_key,
                "caCertificate": self.ca_certificate,
                "instanceId": self.instance_id,
                "publicIp": self.public_ip,
                "sshCommand": self.ssh_command,
                "grafanaUrl": self.grafana_url,
                "grafanaPassword": self.grafana_password,
                "benchmark": self.benchmark,
            }
        )

    def _tagged_provider(self, name: str, settings: dict[str, Any]) -> aws.Provider:
        """The stack's own AWS settings, plus our tags on everything it creates (merged with
        any aws:defaultTags the stack sets)."""
        theirs = settings.pop("default_tags", None) or {}
        tags = {**(theirs.get("tags") or {}), **default_tags()}
        return aws.Provider(
            child(name, "aws"),
            **settings,
            default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _generated_api_key(self, name: str) -> pulumi.Output[str]:
        password = random.RandomPassword(
            child(name, "api-key"),
            length=48,
            special=False,  # safe in an Authorization header and a shell variable
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Secret here, not only by the provider's schema: nothing downstream may see it plain.
        return pulumi.Output.secret(password.result)
