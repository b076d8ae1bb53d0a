"""The stack's own certificate authority and a server certificate it signs (tls=self-signed).

Used by the single host's proxy (components.proxy: the certificate nginx serves) and by a fleet's
load balancer (components.load_balancer: the certificate imported into ACM). Keys are ECDSA
P-256: nginx takes them, and so do ACM and an Application Load Balancer (ACM import
prerequisites: RSA 1024-4096 or ECDSA P-256/384/521; ALBs refuse ED25519 keys, AWS "Create an
HTTPS listener"). Resources are children of `parent`, named after `name`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_tls as tls

from components.naming import child
from serving.monitoring.certificate_expiry import preview_warning

CA_VALIDITY_HOURS = 10 * 365 * 24
SERVER_CERT_VALIDITY_HOURS = 365 * 24
# `pulumi up` within 30 days of expiry issues a new server certificate.
SERVER_CERT_EARLY_RENEWAL_HOURS = 30 * 24


@dataclass(frozen=True)
class StackCertificates:
    ca_cert_pem: pulumi.Output[str]  # what clients trust (the caCertificate output)
    server_cert_pem: pulumi.Output[str]  # the leaf alone
    server_key_pem: pulumi.Output[str]  # secret
    # The server certificate's notAfter (RFC 3339, the tls provider's validity_end_time): what the
    # expiry alerts count down to (serving.monitoring.certificate_expiry).
    server_not_after: Optional[pulumi.Output[str]] = None

    @property
    def chain_pem(self) -> pulumi.Output[str]:
        """Leaf then CA, as nginx serves it."""
        return pulumi.Output.concat(self.server_cert_pem, self.ca_cert_pem)


def stack_certificates(
    parent: pulumi.Resource,
    name: str,
    *,
    common_name: pulumi.Input[str],
    ip_addresses: Optional[Sequence[pulumi.Input[str]]] = None,
    dns_names: Optional[pulumi.Input[Sequence[pulumi.Input[str]]]] = None,
) -> StackCertificates:
    """A stack-local CA and a server certificate it signs for the addresses and names given."""
    opts = pulumi.ResourceOptions(parent=parent)
    ca_key = tls.PrivateKey(child(name, "ca-key"), algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
    ca = tls.SelfSignedCert(
        child(name, "ca"),
        private_key_pem=pulumi.Output.secret(ca_key.private_key_pem),
        is_ca_certificate=True,
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing"],
        subject=tls.SelfSignedCertSubjectArgs(
            common_name=f"vllm-deploy {pulumi.get_stack()} CA", organization="vllm-deploy"
        ),
        opts=opts,
    )
    server_key = tls.PrivateKey(child(name, "server-key"), algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
    request = tls.CertRequest(
        child(name, "server-csr"),
        private_key_pem=pulumi.Output.secret(server_key.private_key_pem),
        subject=tls.CertRequestSubjectArgs(common_name=common_name, organization="vllm-deploy"),
        ip_addresses=ip_addresses,
        dns_names=dns_names,
        opts=opts,
    )
    server = tls.LocallySignedCert(
        child(name, "server-cert"),
        cert_request_pem=request.cert_request_pem,
        ca_private_key_pem=pulumi.Output.secret(ca_key.private_key_pem),
        ca_cert_pem=ca.cert_pem,
        validity_period_hours=SERVER_CERT_VALIDITY_HOURS,
        early_renewal_hours=SERVER_CERT_EARLY_RENEWAL_HOURS,
        allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
        opts=opts,
    )
    # A preview (or update) inside the renewal window says so; the update renews it.
    server.validity_end_time.apply(lambda end: _warn_near_expiry(end, server))
    return StackCertificates(
        ca.cert_pem, server.cert_pem, pulumi.Output.secret(server_key.private_key_pem), server.validity_end_time
    )


def _warn_near_expiry(not_after: Optional[str], resource: pulumi.Resource) -> None:
    warning = preview_warning(not_after) if not_after else None
    if warning:
        pulumi.log.warn(warning, resource=resource)
