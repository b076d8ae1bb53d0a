"""NginxProxy: TLS termination and streaming reverse proxy in front of vLLM.

The only way in from outside: 443 (and 80, which answers ACME challenges and refuses the rest
in JSON). The nginx config is a typed model (serving/nginx.py) rendered from a template
(serving/nginx_conf.py), with limits derived from the instance once at preview
(serving/proxy_limits.py, stack.preflight); the container's nofile ulimit matches the workers'
file limit.
tls=self-signed: a stack CA signs a certificate for the address; certificate and key are
uploaded into the container by pulumi-docker, so the key is in no command line or script.
tls=letsencrypt: certbot on the host obtains (and a systemd timer renews) a certificate for
`domain`; nginx reads it from /etc/letsencrypt.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

import pulumi_command as command

from config.image_pins import digest_of, with_digest
from components.certificates import stack_certificates
from components.docker_host import CONTAINER_SLICE, INSTANCE_LABEL
from components.host_handle import HostHandle
from components.naming import child, component_type
from components.script_steps import ScriptSteps
from components.tenant_keys import TenantApiKeys
from serving.nginx import CONTAINER_CERT_PATH, CONTAINER_CONF_PATH, CONTAINER_KEY_PATH, NGINX_IMAGE
from serving.nginx_conf import render, site_for_stack
from config.settings import StackConfig
from serving.proxy_limits import ProxyLimits
from serving.tenants import (
    TENANT_DIR_CONTAINER, TENANT_DIR_HOST, USAGE_LOG_CONTAINER, USAGE_LOG_HOST_DIR, tenant_bundle, tenant_files,
    tenant_limits,
)

PROXY_CONTAINER_NAME = "vllm-proxy"
# Served at /.well-known/acme-challenge/ on port 80 in every mode, so a stack can switch to
# letsencrypt while the old proxy still runs.
ACME_WEBROOT = "/var/lib/vllm-deploy/acme-webroot"
LETSENCRYPT_DIR = "/etc/letsencrypt"
CERTBOT_IMAGE = "certbot/certbot:v5.8.0"  # obtain_certificate.sh's default


def proxy_config(settings: StackConfig, limits: ProxyLimits, *, public_ip: str, upstream_port: int) -> str:
    """The nginx.conf the proxy container runs, for a host at `public_ip` with the proxy's
    `limits` (pure: `tools/plan` renders it offline with a placeholder address)."""
    site_fields: dict[str, object] = {"vllm_port": upstream_port, "acme_webroot": ACME_WEBROOT}
    if settings.tls == "letsencrypt":
        live = f"{LETSENCRYPT_DIR}/live/{settings.domain}"
        site_fields.update(tls_certificate_path=f"{live}/fullchain.pem", tls_key_path=f"{live}/privkey.pem")
    return render(site_for_stack(settings, limits, public_ip=public_ip, **site_fields))


@dataclass
class NginxProxyArgs:
    settings: StackConfig
    """The validated stack config (domain, CIDRs, body size, rate and concurrency limits)."""
    limits: ProxyLimits
    """Workers, connections and file limits for the planned instance (stack.preflight)."""
    host: HostHandle
    """The head node's host: the proxy's Docker engine, and SSH for a Let's Encrypt certificate."""
    public_ip: pulumi.Input[str]
    """The address clients use: in the certificate, and the canonical host without a domain."""
    upstream_port: int
    """vLLM's port on the host's loopback."""
    depends_on: list[pulumi.Resource]
    """What must exist before the proxy starts (the vLLM container)."""
    tenants: Optional[TenantApiKeys] = None
    """apiKeys (tenant mode): the keys' hashes nginx checks; None: vLLM checks the one apiKey."""
    upstream_api_key: Optional[pulumi.Output[str]] = None
    """The stack's own apiKey, which nginx sends vLLM in tenant mode (secret)."""


class NginxProxy(pulumi.ComponentResource):
    """nginx on the host network: 443 TLS -> 127.0.0.1:<vLLM port>, streaming, unbuffered."""

    ca_certificate: Optional[pulumi.Output[str]]  # None with letsencrypt: publicly trusted
    # The stack's server certificate's notAfter (RFC 3339); None with letsencrypt (certbot renews).
    certificate_not_after: Optional[pulumi.Output[str]] = None
    container_id: pulumi.Output[str]
    config_text: pulumi.Output[str]

    def __init__(self, name: str, args: NginxProxyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("NginxProxy"), name, None, opts)
        self._name = name
        self._steps: Optional[ScriptSteps] = None
        settings, host = args.settings, args.host

        image = docker.RemoteImage(
            child(name, "image"),
            name=with_digest(NGINX_IMAGE),
            keep_locally=True,
            triggers={INSTANCE_LABEL: host.instance_id},
            opts=host.docker_options(self, [host.runtime_ready]),
        )
        volumes = [docker.ContainerVolumeArgs(host_path=ACME_WEBROOT, container_path=ACME_WEBROOT, read_only=True)]
        uploads: list[docker.ContainerUploadArgs] = []
        depends_on = list(args.depends_on)
        if settings.tls == "letsencrypt":
            depends_on.append(self._letsencrypt(settings, args))
            volumes.append(
                docker.ContainerVolumeArgs(host_path=LETSENCRYPT_DIR, container_path=LETSENCRYPT_DIR, read_only=True)
            )
            self.ca_certificate = None
        else:
            ca_cert, server_cert, server_key = self._certificates(settings, args.public_ip)
            uploads += [
                docker.ContainerUploadArgs(file=CONTAINER_CERT_PATH, content=server_cert),
                docker.ContainerUploadArgs(file=CONTAINER_KEY_PATH, content=server_key, permissions="0600"),
            ]
            self.ca_certificate = ca_cert
        if args.tenants is not None:  # tenant mode: nginx includes the tenants' files it reloads
            depends_on.append(self._tenant_files(settings, args, args.tenants))
            volumes += [
                docker.ContainerVolumeArgs(host_path=TENANT_DIR_HOST, container_path=TENANT_DIR_CONTAINER, read_only=True),
                docker.ContainerVolumeArgs(
                    host_path=USAGE_LOG_HOST_DIR, container_path=posixpath.dirname(USAGE_LOG_CONTAINER)
                ),
            ]
        # The address is known once the Elastic IP exists; rendering needs no resource.
        self.config_text = pulumi.Output.from_input(args.public_ip).apply(
            lambda ip: proxy_config(settings, args.limits, public_ip=ip, upstream_port=args.upstream_port)
        )
        limits = args.limits
        uploads.insert(0, docker.ContainerUploadArgs(file=CONTAINER_CONF_PATH, content=self.config_text))
        container = docker.Container(
            child(name, "container"),
            cgroup_parent=CONTAINER_SLICE,  # no IMDS from the host network (docker_host)
            name=PROXY_CONTAINER_NAME,
            image=image.image_id,
            network_mode="host",  # real client addresses for allow-lists and rate limits
            restart="always",
            must_run=True,
            uploads=uploads,
            volumes=volumes,
            # Soft = hard = the workers' worker_rlimit_nofile: nginx raises its workers to it
            # without privileges, whatever the Docker daemon's default (often a 1024 soft limit).
            ulimits=[
                docker.ContainerUlimitArgs(name="nofile", soft=limits.container_nofile, hard=limits.container_nofile)
            ],
            labels=[docker.ContainerLabelArgs(label=INSTANCE_LABEL, value=host.instance_id)],
            log_driver="json-file",
            log_opts={"max-size": "50m", "max-file": "5"},
            opts=host.docker_options(
                self, depends_on,
                additional_secret_outputs=["uploads"],
                delete_before_replace=True,  # one process can hold ports 80/443
            ),
        )
        self.container_id = container.id
        self.register_outputs(
            {"caCertificate": self.ca_certificate, "containerId": self.container_id, "nginxConfig": self.config_text}
        )

    def _host_steps(self, host: HostHandle) -> ScriptSteps:
        """The proxy's host script steps (one factory: its workdir and lib.sh copy exist once)."""
        if self._steps is None:
            self._steps = host.steps(self, self._name)
        return self._steps

    def _tenant_files(
        self, settings: StackConfig, args: NginxProxyArgs, tenants: TenantApiKeys
    ) -> command.remote.Command:
        """proxy_tenants.sh: installs the tenants' files (key hashes, limits, the upstream key) in
        TENANT_DIR_HOST and reloads nginx when it runs. Before the container on create; on a
        change of tenants, keys or limits only this step runs again (its secret environment
        changed), so neither the container nor vLLM is replaced."""
        if args.upstream_api_key is None:
            raise ValueError("tenant mode needs the stack's apiKey: nginx sends it upstream")
        limits = tenant_limits(settings, args.limits)
        bundle = pulumi.Output.all(tenants.key_hashes, args.upstream_api_key).apply(
            lambda v: tenant_bundle(tenant_files(limits, v[0], v[1]))
        )
        return self._host_steps(args.host).run(
            "tenants", "proxy_tenants.sh", after=args.host.runtime_ready,
            env={"VLLM_DEPLOY_TENANT_DIR": TENANT_DIR_HOST, "VLLM_DEPLOY_NGINX_CONTAINER": PROXY_CONTAINER_NAME},
            secret_env={"VLLM_DEPLOY_TENANT_FILES": bundle}, timeout="10m",
        )

    def _letsencrypt(self, settings: StackConfig, args: NginxProxyArgs) -> command.remote.Command:
        """certbot on the host; standalone on the first deploy (nothing serves port 80 yet)."""
        return self._host_steps(args.host).run(
            "certificate", "obtain_certificate.sh", after=args.depends_on[-1] if args.depends_on else None,
            env={
                "VLLM_DEPLOY_DOMAIN": settings.domain or "",
                "VLLM_DEPLOY_ACME_EMAIL": settings.letsencrypt_email or "",
                "VLLM_DEPLOY_CERT_DIR": LETSENCRYPT_DIR,
                "VLLM_DEPLOY_ACME_WEBROOT": ACME_WEBROOT,
                "VLLM_DEPLOY_NGINX_CONTAINER": PROXY_CONTAINER_NAME,
                "VLLM_DEPLOY_PUBLIC_IP": args.public_ip,
                # The script's own default, passed only once a digest pins it.
                **({"VLLM_DEPLOY_CERTBOT_IMAGE": with_digest(CERTBOT_IMAGE)} if digest_of(CERTBOT_IMAGE) else {}),
            },
        )

    def _certificates(
        self, settings: StackConfig, public_ip: pulumi.Input[str]
    ) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
        """A stack-local CA and a server certificate it signs for the IP (and domain)."""
        certs = stack_certificates(
            self, self._name, common_name=settings.domain or public_ip, ip_addresses=[public_ip],
            dns_names=[settings.domain] if settings.domain else None,
        )
        self.certificate_not_after = certs.server_not_after
        return certs.ca_cert_pem, certs.chain_pem, certs.server_key_pem
