"""GpuHost: everything one GPU server needs on AWS — image, network placement, firewall and
access (SSH key and SSM: components.host_access), the instance with its encrypted disk, and a
stable address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pulumi_random as random

from components import host_access
from components.capacity import capacity_hook, error_hooks_supported
from components.host_image import AmiQuery, ami_query, user_data
from components.cluster import ClusterMembership
from components.deployer_aws import local_aws_environment
from components.model_volume import ExistingVolume
from components.naming import child, component_type, default_tags
from components.placement import choose_subnet
from components.region import lookup_errors
from sizing.plan import SizingPlan
from config.settings import StackConfig

SSH_USER = "ubuntu"
# Relative: local commands run in the project directory, and the command is in the state.
HOST_KEY_TOOL = "components/local/host_key.py"
LOCAL_PYTHON = '"$(if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi)"'

@dataclass(frozen=True)
class SharedAccess:
    """What every node of a cluster shares with the head: one image (pinned once, so nodes
    added later run the same release), one key pair, one instance profile."""

    image_id: pulumi.Input[str]
    key_name: pulumi.Input[str]
    private_key: Optional[pulumi.Output[str]]
    instance_profile: pulumi.Input[str]


@dataclass
class GpuHostArgs:
    settings: StackConfig
    """The validated stack config (access lists, image choice, spot, network placement)."""
    plan: SizingPlan
    """The sizing decision: instance type, architecture, disk size."""
    model_volume: Optional[ExistingVolume] = None
    """The model cache volume created earlier (components.model_volume.find_model_volume): the
    host stays in its zone when that zone offers the instance type."""
    subnet: Optional[aws.ec2.AwaitableGetSubnetResult] = None
    """The subnet chosen by the caller (a cluster's nodes share one); None: chosen here."""
    cluster: Optional[ClusterMembership] = None
    """Across nodes: the placement group, the cluster security group and the EFA interfaces."""
    shared: Optional[SharedAccess] = None
    """A worker node: the head's image, key and profile instead of its own."""
    serves_endpoint: bool = True
    """The node nginx runs on: HTTPS (and HTTP) open to allowedCidrs. Workers only take SSH."""
    rebuild_key: Optional[str] = None
    """A fleet's image builder (components.fleet_image): the instance is replaced (provisioned
    from scratch) whenever this key changes, and is stopped between runs by design, so a stopped
    instance is not refused. None for a serving host."""


class GpuHost(pulumi.ComponentResource):
    """One GPU server: reachable on 443/80 from allowedCidrs (the node that serves the endpoint),
    on 22 from sshAllowedCidrs only; across nodes, from the other nodes on everything."""

    instance: aws.ec2.Instance
    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    shared: SharedAccess  # what a worker node takes from this one
    availability_zone: pulumi.Output[str]
    zone: str  # the same, known at preview: where the model volume must be
    ssh_user: pulumi.Output[str]
    ssh_private_key: Optional[pulumi.Output[str]]
    # `ssh-ed25519 <base64>`: the instance's own host key, read from its console through the EC2
    # API (components/local/host_key.py); every SSH connection to it accepts only this key.
    host_key: pulumi.Output[str]
    connection: command.remote.ConnectionArgs
    # The same host and key, without waiting for the Elastic IP's association: for steps that
    # must not look changed when only the instance is replaced (their inputs stay known in preview).
    stable_connection: command.remote.ConnectionArgs

    def __init__(self, name: str, args: GpuHostArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("GpuHost"), name, None, opts)
        self._name = name
        settings, plan = args.settings, args.plan

        if args.rebuild_key is None:
            self._refuse_a_stopped_host(settings.replace_stopped_host)
        subnet = args.subnet or choose_subnet(settings, plan.instance.name, args.model_volume, self)
        security_group = host_access.security_group(self, name, settings, subnet.vpc_id, args.serves_endpoint)
        if args.shared is None:
            shared = SharedAccess(
                self._image(settings.ami, plan.instance.arch), *host_access.key_pair(self, name, settings),
                host_access.instance_profile(self, name).name,
            )
        else:
            shared = args.shared
        groups = [security_group.id, *([args.cluster.security_group_id] if args.cluster else [])]
        efa = self._efa_interfaces(args.cluster, subnet.id, groups)
        instance = self._instance(plan, settings, shared, subnet.id, groups, args.cluster, efa, args.rebuild_key)
        address, attached_ip = self._elastic_ip(instance, efa[0] if efa else None)
        private_key = shared.private_key

        self.instance = instance
        self.instance_id = instance.id
        self.private_ip = instance.private_ip
        self.shared = shared
        # The association's id rides along so whoever connects waits until the address is attached.
        self.public_ip = pulumi.Output.all(attached_ip.id, address.public_ip).apply(lambda v: v[1])
        self.availability_zone = instance.availability_zone
        self.zone = subnet.availability_zone
        self.ssh_user = pulumi.Output.from_input(SSH_USER)
        self.ssh_private_key = private_key
        self.host_key = self._host_key(instance)
        self.connection = self._connection(self.public_ip, private_key, self.host_key)
        self.stable_connection = self._connection(address.public_ip, private_key, self.host_key)
        self.register_outputs(
            {
                "instanceId": self.instance_id,
                "publicIp": self.public_ip,
                "availabilityZone": self.availability_zone,
                "privateIp": self.private_ip,
                "sshUser": self.ssh_user,
            }
        )

    # --- helpers -------------------------------------------------------------------
    def _invoke_opts(self) -> pulumi.InvokeOptions:
        return pulumi.InvokeOptions(parent=self)

    def _host_key(self, instance: aws.ec2.Instance) -> pulumi.Output[str]:
        """The instance's SSH host key, from its console output through the EC2 API (not over
        SSH: docs/host-keys.md), read again for each new instance (a replaced one has a new
        key). Runs where `pulumi up` runs, with the deploy credentials pulumi-aws uses; `.venv`'s
        python (boto3) when there is one, as the command is part of the state."""
        environment: dict[str, pulumi.Input[str]] = {"INSTANCE_ID": instance.id, **local_aws_environment()}
        read = command.local.Command(
            child(self._name, "host-key"),
            create=f"{LOCAL_PYTHON} {HOST_KEY_TOOL}",
            environment=environment,
            triggers=[instance.id],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(create="15m")),
        )
        return read.stdout.apply(lambda out: out.strip())

    @staticmethod
    def _connection(
        host: pulumi.Input[str], private_key: Optional[pulumi.Output[str]], host_key: pulumi.Input[str]
    ) -> command.remote.ConnectionArgs:
        return command.remote.ConnectionArgs(
            host=host,
            user=SSH_USER,
            private_key=private_key,
            # Only this key (pulumi-command >= 1.1: FixedHostKey, and the key's own algorithm;
            # provider/pkg/provider/remote/connection.go): a party answering at the address
            # without the instance's key gets no connection, so no secret.
            host_key=host_key,
            # A fresh instance takes minutes to boot (longer after a driver reboot).
            dial_error_limit=120,
            per_dial_timeout=10,
        )

    def _refuse_a_stopped_host(self, replace: bool = False) -> None:
        """A stopped host (idle stop, a spot interruption, or by hand) fails `pulumi up` here,
        with what to do: provisioning, the Docker provider and the readiness check all reach the
        host over SSH, and would fail later with a connection error. Starting it from the
        program instead would make a preview (CI runs them on pull requests, read-only) start an
        instance that bills by the hour.

        Two ways out, both accepted: `tools/wake` (AWS starts it; for an interrupted spot host
        AWS alone restarts it, when capacity returns, and wake says so), or, when the user asks
        explicitly with `replaceStoppedHost: true`, this run goes on and warns with the
        instance's URN for `pulumi up --replace` (Pulumi's own flag: a new host in the model
        volume's zone)."""
        stopped = aws.ec2.get_instances(
            instance_tags={**default_tags(), "Name": self._name},
            instance_state_names=["stopped", "stopping"],
            opts=self._invoke_opts(),
        ).ids
        if not stopped:
            return
        stack = pulumi.get_stack()
        instance_name = child(self._name, "instance")
        if replace:
            # The instance's URN as the engine forms it (the SDK's create_urn: parent types $-joined).
            urn = pulumi.create_urn(instance_name, "aws:ec2/instance:Instance", parent=self)
            urn.apply(lambda value: pulumi.log.warn(
                f"the host {stopped[0]} is stopped and replaceStoppedHost is true: this update must replace "
                f"it, or its SSH steps wait for a host that does not answer. Run: pulumi up --replace "
                f"'{value}'; then `pulumi config rm replaceStoppedHost`.",
                resource=self,
            ))
            return
        raise pulumi.RunError(
            f"the host {stopped[0]} is stopped (idle stop, a spot interruption, or by hand), and "
            "`pulumi up` provisions and checks it over SSH. Start it and wait until vLLM answers "
            f"with `tools/wake {stack}`, then run `pulumi up` again. (If it is still stopping, "
            "tools/wake waits for that first.) If AWS will not start it (tools/wake says so for an "
            "interrupted spot host, which only AWS restarts), replace it instead: `pulumi config set "
            "replaceStoppedHost true`, then `pulumi up --replace` with the instance's URN, which that "
            "preview prints (`pulumi stack --show-urns | grep "
            f"'ec2/instance:Instance::{instance_name}'`). The model volume keeps the weights."
        )

    def _image(self, choice: str, arch: str) -> pulumi.Input[str]:
        """The image, pinned when the host is first created.

        The lookup answers with the newest image on every run; feeding that straight to the
        instance would replace the host (and re-download the model) after each AWS image
        release. A holder resource records the image it first saw and ignores later answers;
        its name carries the `ami` choice and the architecture, so changing either creates a
        new holder with the newest image, and the instance follows.
        """
        query = ami_query(choice, arch)
        if query is None:
            return choice
        newest = self._newest_image(query)
        pinned = random.RandomShuffle(
            child(self._name, f"image-{choice}-{arch}"),
            inputs=[newest],
            result_count=1,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["inputs"]),
        )
        return pinned.results[0]

    def _newest_image(self, query: AmiQuery) -> str:
        with lookup_errors(
            f"no {query.arch} image named '{query.name_pattern}' from owner {query.owner} in this "
            "region; set vllm-deploy:ami to another choice (dlami, ubuntu) or an AMI id"
        ):
            ami = aws.ec2.get_ami(
                most_recent=True,
                owners=[query.owner],
                filters=[
                    aws.ec2.GetAmiFilterArgs(name="name", values=[query.name_pattern]),
                    aws.ec2.GetAmiFilterArgs(name="architecture", values=[query.arch]),
                    aws.ec2.GetAmiFilterArgs(name="state", values=["available"]),
                ],
                opts=self._invoke_opts(),
            )
        return ami.id

    def _efa_interfaces(
        self, cluster: Optional[ClusterMembership], subnet_id: str, groups: list[pulumi.Output[str]]
    ) -> list[aws.ec2.NetworkInterface]:
        """The node's EFA interfaces, made before the instance and attached at launch (EC2 adds
        EFA interfaces only at launch or to a stopped instance): the first, on network card 0,
        is the primary interface and carries the node's private IP. They outlive a replaced
        instance (attached by id, so not deleted on termination) and the next one reuses them.
        Both security groups go on each: EFA traffic must be allowed to and from the group
        itself (EC2 user guide, "Get started with EFA and NCCL", step 1)."""
        if cluster is None or not cluster.efa:
            return []
        return [
            aws.ec2.NetworkInterface(
                child(self._name, f"efa-{spec.network_card_index}"),
                subnet_id=subnet_id,
                security_groups=groups,
                interface_type=spec.interface_type,
                description=f"{self._name}: EFA on network card {spec.network_card_index}",
                tags={"Name": f"{self._name}-efa-{spec.network_card_index}"},
                opts=pulumi.ResourceOptions(parent=self),
            )
            for spec in cluster.efa
        ]

    def _instance(
        self,
        plan: SizingPlan,
        settings: StackConfig,
        shared: SharedAccess,
        subnet_id: str,
        groups: list[pulumi.Output[str]],
        cluster: Optional[ClusterMembership],
        efa: list[aws.ec2.NetworkInterface],
        rebuild_key: Optional[str] = None,
    ) -> aws.ec2.Instance:
        market = None
        if settings.spot:
            market = aws.ec2.InstanceInstanceMarketOptionsArgs(
                market_type="spot",
                spot_options=aws.ec2.InstanceInstanceMarketOptionsSpotOptionsArgs(
                    # Stop (keep the disk and the downloaded model) instead of terminating;
                    # AWS allows "stop" only for persistent requests.
                    instance_interruption_behavior="stop",
                    spot_instance_type="persistent",
                ),
            )
        if efa:
            # The interfaces carry the subnet and the security groups; EC2 refuses both (and a
            # public IP request) beside network_interfaces. The Elastic IP gives the address.
            placement: dict = dict(
                network_interfaces=[
                    aws.ec2.InstanceNetworkInterfaceArgs(
                        network_interface_id=interface.id,
                        device_index=spec.device_index,
                        network_card_index=spec.network_card_index,
                    )
                    for spec, interface in zip(cluster.efa, efa)  # type: ignore[union-attr]
                ]
            )
        else:
            placement = dict(subnet_id=subnet_id, vpc_security_group_ids=groups, associate_public_ip_address=True)
        return aws.ec2.Instance(
            child(self._name, "instance"),
            ami=shared.image_id,
            instance_type=plan.instance.name,
            **placement,
            # Cluster placement: the nodes sit close together for NCCL's pipeline hops.
            placement_group=cluster.placement_group if cluster else None,
            key_name=shared.key_name,
            iam_instance_profile=shared.instance_profile,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",  # IMDSv2 only
                http_put_response_hop_limit=1,  # containers cannot reach the instance role
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3",
                volume_size=plan.root_volume_gb,
                encrypted=True,
                delete_on_termination=True,
                # Provider default tags do not reach the root volume.
                tags={**default_tags(), "Name": f"{self._name}-root"},
            ),
            instance_market_options=market,
            # A shutdown from the host (the idle-stop watcher's `systemctl poweroff`) stops the
            # instance, keeping its volumes and Elastic IP; the EC2 default for EBS-backed
            # instances, said here because idle stop relies on it.
            instance_initiated_shutdown_behavior="stop",
            user_data=user_data(),
            # write_files runs once per instance: new user data needs a new instance.
            user_data_replace_on_change=True,
            tags={"Name": self._name},
            opts=pulumi.ResourceOptions(
                parent=self,
                # A new type is a new host: say "replace" in preview rather than an in-place
                # stop/modify/start that AWS may refuse mid-way. (A new image always replaces.)
                replace_on_changes=["instanceType"],
                replacement_trigger=rebuild_key,
                ignore_changes=["associatePublicIpAddress"],
                # Two GPU hosts at once would need twice the vCPU quota many accounts lack.
                delete_before_replace=True,
                hooks=pulumi.ResourceHookBinding(
                    on_error=[capacity_hook(
                        child(self._name, "instance"), plan.instance.name, spot=settings.spot, nodes=plan.nodes
                    )]
                )
                if error_hooks_supported()
                else None,
            ),
        )

    def _elastic_ip(
        self, instance: aws.ec2.Instance, primary: Optional[aws.ec2.NetworkInterface]
    ) -> tuple[aws.ec2.Eip, aws.ec2.EipAssociation]:
        address = aws.ec2.Eip(
            child(self._name, "eip"),
            domain="vpc",
            opts=pulumi.ResourceOptions(parent=self),
        )
        # A separate association keeps the address when the instance is replaced. With EFA
        # interfaces the instance has several, and EC2 wants the one to associate with named.
        association = aws.ec2.EipAssociation(
            child(self._name, "eip-assoc"),
            allocation_id=address.allocation_id,
            instance_id=None if primary else instance.id,
            network_interface_id=primary.id if primary else None,
            opts=pulumi.ResourceOptions(parent=address, depends_on=[instance]),
        )
        return address, association
