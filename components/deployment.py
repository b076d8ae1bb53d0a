"""VllmDeployment: the whole endpoint, composed from one component per concern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from components.benchmark import VllmBenchmark, VllmBenchmarkArgs
from components.cluster import ClusterNetwork, ClusterNetworkArgs
from components.docker_host import docker_over_ssh, identity_file_hint
from components.gpu_host import GpuHost, GpuHostArgs
from components.host_handle import HostHandle
from components.host_setup import HostSetup, HostSetupArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.model_volume import ExistingVolume, ModelVolume, ModelVolumeArgs, find_model_volume
from components.naming import child, component_type
from components.placement import choose_subnet
from components.proxy import NginxProxy, NginxProxyArgs
from components.ray_cluster import RayHead, RayWorker, RayWorkerArgs, node_name, ray_auth_token, ray_nodes
from components.stack_resources import generated_api_key, tagged_provider
from components.tenant_keys import GivenKey, TenantApiKeys, tenant_api_keys
from components.vllm_server import VllmServer, VllmServerArgs
from config.settings import StackConfig
from serving.cluster_network import EFA_HOST_MOUNT, efa_interfaces, nccl_environment
from serving.proxy_limits import ProxyLimits
from sizing.costs import host_cost
from sizing.startup import model_volume_for
from sizing.plan import SizingPlan


@dataclass
class VllmDeploymentArgs:
    settings: StackConfig
    """The validated stack config."""
    plan: SizingPlan
    """The sizing decision."""
    vllm_command: list[str]
    """`vllm serve` arguments (stack.preflight.vllm_command), already checked."""
    proxy_limits: ProxyLimits
    """The proxy's limits on the planned instance (stack.preflight.proxy_limits), already checked."""
    api_key: Optional[pulumi.Output[str]] = None
    """Secret API key; generated when None."""
    hf_token: Optional[pulumi.Output[str]] = None
    """Secret Hugging Face token for gated models."""
    modelscope_token: Optional[pulumi.Output[str]] = None
    """Secret ModelScope token (modelSource modelscope)."""
    aws_settings: Optional[dict[str, Any]] = None
    """The stack's aws:* settings for the explicit provider (stack.pulumi_config.aws_provider_settings)."""
    tenant_keys: Optional[dict[str, GivenKey]] = None
    """apiKeys' given keys by tenant (stack.pulumi_config.Secrets.tenant_keys); the others are generated."""


@dataclass
class Node:
    """One instance of the deployment with its model volume and provisioning (node 0: the head)."""

    index: int
    host: GpuHost
    volume: ModelVolume
    setup: HostSetup

    @property
    def name(self) -> str:
        return node_name(self.index)

    def handle(self, docker_provider: docker.Provider) -> HostHandle:
        """What the components on this node's host need, with its Docker engine."""
        return HostHandle(
            connection=self.host.connection,
            docker_provider=docker_provider,
            instance=self.host.instance,
            instance_id=self.host.instance_id,
            runtime_ready=self.setup.runtime_ready,
            model_ready=self.setup.model_ready,
            model_dir=self.setup.model_dir,
            addon_mounts=self.setup.addon_mounts,
        )


def node_base_name(name: str, index: int) -> str:
    """The head keeps the single-node names (`vllm-host`...), so a stack that grows to several
    nodes keeps its head; worker i is `vllm-node<i>-...`."""
    return name if index == 0 else f"{name}-node{index}"


class VllmDeployment(pulumi.ComponentResource):
    """A secured OpenAI-compatible vLLM endpoint on one AWS GPU instance, or on `plan.nodes`
    identical instances (pipeline parallel across them, on a Ray cluster; the head serves)."""

    endpoint: pulumi.Output[str]
    api_key: pulumi.Output[str]
    ca_certificate: Optional[pulumi.Output[str]]  # None with tls=letsencrypt
    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    region: str
    model_volume_id: pulumi.Output[str]
    cost: dict[str, Optional[float]]  # sizing.costs.HostCost.to_output(): running vs stopped
    ssh_command: pulumi.Output[str]
    ssh_private_key: Optional[pulumi.Output[str]]
    nodes: pulumi.Output[list[dict[str, str]]]  # every node: name, role, instance id, IPs, model volume
    grafana_url: Optional[pulumi.Output[str]]  # None with monitoring off
    grafana_password: Optional[pulumi.Output[str]]
    benchmark: Optional[pulumi.Output[dict[str, Any]]]  # None with benchmarkOnDeploy false

    def __init__(self, name: str, args: VllmDeploymentArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("VllmDeployment"), name, None, opts)
        self._name, self._args = name, args
        provider = self._tagged_provider(name, dict(args.aws_settings or {}))
        in_aws = pulumi.ResourceOptions(parent=self, providers={"aws": provider})
        lookups = pulumi.InvokeOptions(parent=self, provider=provider)

        api_key = args.api_key if args.api_key is not None else self._generated_api_key(name)
        nodes = self._nodes(name, args, in_aws, lookups)
        head = nodes[0].handle(self._docker_engine(name, nodes[0]))
        server = self._server(head, nodes, api_key)
        proxy = self._proxy(head, server, nodes[0].host.public_ip)
        # Beside the proxy, not before it: on a first deploy nobody has the endpoint yet, and a
        # failed benchmark should not keep the endpoint from coming up.
        self.benchmark = self._benchmark(head, server, api_key)
        address = args.settings.domain or nodes[0].host.public_ip
        # The endpoint exists once vLLM answered and the proxy is up: carry both as dependencies.
        self.endpoint = pulumi.Output.all(server.ready.id, proxy.container_id, address).apply(
            lambda v: f"https://{v[2]}/v1"
        )
        self.grafana_url, self.grafana_password = self._monitoring(head, server, proxy, address)
        self.api_key = pulumi.Output.secret(api_key)
        self.ca_certificate = proxy.ca_certificate
        self.region = aws.get_region(opts=lookups).region
        self._node_outputs(nodes)
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "apiKey": self.api_key,
                "caCertificate": self.ca_certificate,
                "instanceId": self.instance_id,
                "publicIp": self.public_ip,
                "region": self.region,
                "modelVolumeId": self.model_volume_id,
                "costUsd": self.cost,
                "sshCommand": self.ssh_command,
                "nodes": self.nodes,
                "grafanaUrl": self.grafana_url,
                "grafanaPassword": self.grafana_password,
                "benchmark": self.benchmark,
            }
        )

    # --- what runs on the head -------------------------------------------------------------
    def _docker_engine(self, base: str, node: Node) -> docker.Provider:
        host = node.host
        return docker_over_ssh(
            base, host=host.public_ip, user=host.ssh_user, private_key=host.ssh_private_key,
            host_key=host.host_key,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _server(self, head: HostHandle, nodes: list[Node], api_key: pulumi.Output[str]) -> VllmServer:
        """vLLM on the head; across nodes its container is also the Ray head, and the workers
        (created first) join once that container exists."""
        args = self._args
        head_started, resolve_head_started = pulumi.deferred_output()
        ray_head = self._ray_cluster(nodes, head_started) if len(nodes) > 1 else None
        server = VllmServer(
            child(self._name, "vllm"),
            VllmServerArgs(
                settings=args.settings, plan=args.plan, command=args.vllm_command,
                host=head, api_key=api_key, ray_head=ray_head,
            ),
            pulumi.ResourceOptions(parent=self),
        )
        # Known only now: the head's readiness waits for the workers' join.
        resolve_head_started(server.container_id)
        return server

    def _proxy(self, head: HostHandle, server: VllmServer, public_ip: pulumi.Output[str]) -> NginxProxy:
        return NginxProxy(
            child(self._name, "proxy"),
            NginxProxyArgs(
                settings=self._args.settings, limits=self._args.proxy_limits, host=head,
                public_ip=public_ip, upstream_port=server.port, depends_on=[server.ready],
            ),
            pulumi.ResourceOptions(parent=self),
        )

    def _benchmark(
        self, head: HostHandle, server: VllmServer, api_key: pulumi.Output[str]
    ) -> Optional[pulumi.Output[dict[str, Any]]]:
        """benchmarkOnDeploy: `vllm bench serve` figures of the live endpoint; None when off."""
        if not self._args.settings.benchmark_on_deploy:
            return None
        return VllmBenchmark(
            child(self._name, "benchmark"),
            VllmBenchmarkArgs(
                settings=self._args.settings, plan=self._args.plan, host=head, ready=server.ready, api_key=api_key,
            ),
            pulumi.ResourceOptions(parent=self),
        ).result

    def _monitoring(
        self, head: HostHandle, server: VllmServer, proxy: NginxProxy, address: pulumi.Input[str]
    ) -> tuple[Optional[pulumi.Output[str]], Optional[pulumi.Output[str]]]:
        """monitoring: Grafana's URL (reached through the proxy, so it waits for both) and its
        admin password; (None, None) when off."""
        if not self._args.settings.monitoring:
            return None, None
        monitoring = Monitoring(
            child(self._name, "monitoring"),
            MonitoringArgs(
                settings=self._args.settings, plan=self._args.plan, host=head,
                vllm_ready=server.ready, vllm_port=server.port, address=address,
                certificate_not_after=proxy.certificate_not_after,
            ),
            pulumi.ResourceOptions(parent=self),
        )
        url = pulumi.Output.all(monitoring.grafana_url, proxy.container_id).apply(lambda v: v[0])
        return url, monitoring.grafana_password

    def _node_outputs(self, nodes: list[Node]) -> None:
        """The head's addresses, ids and SSH command; every node's row; the cost of them all."""
        head, plan = nodes[0].host, self._args.plan
        self.instance_id = head.instance_id
        self.public_ip = head.public_ip
        self.model_volume_id = nodes[0].volume.volume_id
        self.cost = host_cost(
            plan.hourly_price_usd, sum(plan.root_volume_gb + n.volume.size_gb for n in nodes), len(nodes),
            volume_performance_usd_per_month=len(nodes) * model_volume_for(plan, self._args.settings).usd_per_month,
        ).to_output()
        self.nodes = pulumi.Output.all(
            *[
                pulumi.Output.all(n.host.instance_id, n.host.private_ip, n.host.public_ip, n.volume.volume_id)
                for n in nodes
            ]
        ).apply(
            lambda rows: [
                {"name": node_name(i), "role": "head" if i == 0 else "worker", "instanceId": row[0],
                 "privateIp": row[1], "publicIp": row[2], "modelVolumeId": row[3]}
                for i, row in enumerate(rows)
            ]
        )
        self.ssh_private_key = head.ssh_private_key
        key_hint = f"-i {identity_file_hint(pulumi.get_stack())} " if head.ssh_private_key is not None else ""
        self.ssh_command = pulumi.Output.concat("ssh ", key_hint, head.ssh_user, "@", head.public_ip)

    # --- the nodes -----------------------------------------------------------------------
    def _nodes(
        self,
        name: str,
        args: VllmDeploymentArgs,
        in_aws: pulumi.ResourceOptions,
        lookups: pulumi.InvokeOptions,
    ) -> list[Node]:
        """Every node: its host, model volume and provisioning, in parallel. Across nodes they
        share one subnet (a cluster placement group lives in one zone: the head's model
        volume's when it offers the type), the cluster network, and the head's image and key."""
        settings, plan = args.settings, args.plan
        existing = [find_model_volume(child(node_base_name(name, i), "models"), lookups) for i in range(plan.nodes)]
        subnet, cluster, efa = None, None, ()
        if plan.nodes > 1:
            subnet = choose_subnet(settings, plan.instance.name, existing[0], self, lookups.provider)
            efa = tuple(efa_interfaces(plan.instance))
            cluster = ClusterNetwork(
                child(name, "cluster"), ClusterNetworkArgs(vpc_id=subnet.vpc_id, efa=efa), in_aws
            ).membership()
        nodes: list[Node] = []
        for index in range(plan.nodes):
            base = node_base_name(name, index)
            host = GpuHost(
                child(base, "host"),
                GpuHostArgs(
                    settings=settings,
                    plan=plan,
                    model_volume=existing[index],
                    subnet=subnet,
                    cluster=cluster,
                    shared=nodes[0].host.shared if nodes else None,
                    serves_endpoint=index == 0,
                ),
                in_aws,
            )
            nodes.append(self._provisioned(base, index, host, existing[index], args, in_aws, len(efa)))
        return nodes

    def _provisioned(
        self,
        base: str,
        index: int,
        host: GpuHost,
        existing: Optional[ExistingVolume],
        args: VllmDeploymentArgs,
        in_aws: pulumi.ResourceOptions,
        efa: int,
    ) -> Node:
        settings, plan = args.settings, args.plan
        # EBS volumes cannot shrink: a smaller model keeps the volume's size (and the room for
        # the models downloaded before it). A volume in another zone is replaced anyway.
        kept_gb = existing.size_gb if existing and existing.availability_zone == host.zone else 0
        if index > 0 and existing and existing.availability_zone != host.zone:
            # The head's volume gets this warning from choose_subnet; a worker follows the head's zone.
            pulumi.log.warn(
                f"{node_name(index)}'s model volume {existing.volume_id} is in "
                f"{existing.availability_zone} and the cluster runs in {host.zone} (a cluster placement "
                f"group lives in one zone, node-0's): {node_name(index)} gets a new, empty model volume "
                "there and downloads the weights again; the old volume is "
                + ("kept (retainModelVolume) and no longer managed by the stack." if settings.retain_model_volume
                   else "deleted."),
                resource=host,
            )
        volume = ModelVolume(
            child(base, "models"),
            ModelVolumeArgs(
                availability_zone=host.zone,
                size_gb=max(plan.model_volume_gb, kept_gb),
                instance=host.instance,
                retain=settings.retain_model_volume,
                performance=model_volume_for(plan, settings),
            ),
            in_aws,
        )
        setup = HostSetup(
            child(base, "setup"),
            HostSetupArgs(
                settings=settings,
                plan=plan,
                connection=host.connection,
                instance_id=host.instance_id,
                volume=volume,
                stable_connection=host.stable_connection,
                hf_token=args.hf_token,
                modelscope_token=args.modelscope_token,
                efa_interfaces=efa,
            ),
            pulumi.ResourceOptions(parent=self),
        )
        return Node(index, host, volume, setup)

    def _ray_cluster(self, nodes: list[Node], head_started: pulumi.Output[str]) -> RayHead:
        """The workers' Ray containers, and what makes the head's vLLM container the Ray head."""
        settings, plan = self._args.settings, self._args.plan
        head = nodes[0]
        efa = len(efa_interfaces(plan.instance))
        env = nccl_environment(efa)
        token = ray_auth_token(self, child(self._name, "ray-auth-token"))
        workers: list[RayWorker] = []
        for node in nodes[1:]:
            base = node_base_name(self._name, node.index)
            workers.append(
                RayWorker(
                    child(base, "ray"),
                    RayWorkerArgs(
                        index=node.index,
                        image=settings.vllm_image,
                        host=node.handle(self._docker_engine(base, node)),
                        node_ip=node.host.private_ip,
                        head_ip=head.host.private_ip,
                        head_instance_id=head.host.instance_id,
                        head_started=head_started,
                        container_env=env,
                        efa_interfaces=efa,
                        auth_token=token,
                    ),
                    pulumi.ResourceOptions(parent=self),
                )
            )
        return RayHead(
            node_ip=head.host.private_ip,
            nodes=ray_nodes([n.host.private_ip for n in nodes]),
            gpus_per_node=plan.instance.gpu_count,
            instance_ids=[n.host.instance_id for n in nodes],
            container_env=env,
            efa_interfaces=efa,
            efa_host_mount=EFA_HOST_MOUNT if efa else None,
            workers_ready=[r for n, w in zip(nodes[1:], workers) for r in (w.image, n.setup.model_ready)],
            workers_joined=[w.joined for w in workers],
            auth_token=token,
        )

    def _tagged_provider(self, name: str, settings: dict[str, Any]) -> aws.Provider:
        return tagged_provider(self, name, settings)

    def _generated_api_key(self, name: str) -> pulumi.Output[str]:
        return generated_api_key(self, name)
