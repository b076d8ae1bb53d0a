"""NginxProxy: TLS termination and streaming reverse proxy in front of vLLM.

The only way in from outside: 443 (and 80, which redirects). The nginx config is a typed model
rendered from a template (config/nginx.py); certificate and key are uploaded into the container
by pulumi-docker, so the key never sits in a command line or a host file Pulumi wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls

from components.naming import child, component_type
from config.nginx import CONTAINER_CONF_PATH, NGINX_IMAGE, render, site_for_stack
from config.settings import StackConfig

PROXY_CONTAINER_NAME = "vllm-proxy"
CA_VALIDITY_HOURS = 10 * 365 * 24
SERVER_CERT_VALIDITY_HOURS = 365 * 24
# `pulumi up` within 30 days of expiry issues a new server certificate.
SERVER_CERT_EARLY_RENEWAL_HOURS = 30 * 24


@dataclass
class NginxProxyArgs:
    settings: StackConfig
    """The validated stack config (domain, CIDRs, body size, rate limit)."""
    docker_provider: docker.Provider
    """Docker engine of the host."""
    public_ip: pulumi.Input[str]
    """The address clients use; it goes into the certificate."""
    upstream_port: int
    """vLLM's port on the host's loopback."""
    depends_on: list[pulumi.Resource]
    """What must exist before the proxy starts (the vLLM container)."""


class NginxProxy(pulumi.ComponentResource):
    """nginx on the host network: 443 TLS -> 127.0.0.1:<vLLM port>, streaming, unbuffered."""

    ca_certificate: pulumi.Output[str]
    config_text: str

    def __init__(self, name: str, args: NginxProxyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("NginxProxy"), name, None, opts)
        self._name = name
        settings = args.settings

        site = site_for_stack(settings, vllm_port=args.upstream_port)
        self.config_text = render(site)
        ca_cert, server_cert, server_key = self._certificates(settings, args.public_ip)
        image = docker.RemoteImage(
            child(name, "image"),
            name=NGINX_IMAGE,
            keep_locally=True,
            opts=pulumi.ResourceOptions(parent=self, provider=args.docker_provider),
        )
        docker.Container(
            child(name, "container"),
            name=PROXY_CONTAINER_NAME,
            image=image.image_id,
            network_mode="host",  # real client addresses for allow-lists and rate limits
            restart="always",
            must_run=True,
            uploads=[
                docker.ContainerUploadArgs(file=CONTAINER_CONF_PATH, content=self.config_text),
                docker.ContainerUploadArgs(file=site.tls_certificate_path, content=server_cert),
                docker.ContainerUploadArgs(
                    file=site.tls_key_path, content=pulumi.Output.secret(server_key), permissions="0600"
                ),
            ],
            log_driver="json-file",
            log_opts={"max-size": "50m", "max-file": "5"},
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.docker_provider,
                depends_on=args.depends_on,
                additional_secret_outputs=["uploads"],
                delete_before_replace=True,  # one process can hold ports 80/443
            ),
        )
        self.ca_certificate = ca_cert
        self.register_outputs({"caCertificate": self.ca_certificate})

    def _certificates(
        self, settings: StackConfig, public_ip: pulumi.Input[str]
    ) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
        """A stack-local CA and a server certificate it signs for the IP (and domain)."""
        ca_key = tls.PrivateKey(
            child(self._name, "ca-key"),
            algorithm="ECDSA",
            ecdsa_curve="P256",
            opts=pulumi.ResourceOptions(parent=self),
        )
        ca = tls.SelfSignedCert(
            child(self._name, "ca"),
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing"],
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"vllm-deploy {pulumi.get_stack()} CA", organization="vllm-deploy"
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        server_key = tls.PrivateKey(
            child(self._name, "server-key"),
            algorithm="ECDSA",
            ecdsa_curve="P256",
            opts=pulumi.ResourceOptions(parent=self),
        )
        request = tls.CertRequest(
            child(self._name, "server-csr"),
            private_key_pem=server_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(
                common_name=settings.domain or public_ip, organization="vllm-deploy"
            ),
            ip_addresses=[public_ip],
            dns_names=[settings.domain] if settings.domain else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        server = tls.LocallySignedCert(
            child(self._name, "server-cert"),
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=SERVER_CERT_VALIDITY_HOURS,
            early_renewal_hours=SERVER_CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        chain = pulumi.Output.concat(server.cert_pem, ca.cert_pem)
        return ca.cert_pem, chain, server_key.private_key_pem
