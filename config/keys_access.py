"""Stack keys of one concern: who reaches the endpoint and how (allow lists, domain and TLS, the proxy's limits).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from config import values
from config.access import THIS_MACHINE
from config.keys_base import Keys


class AccessKeys(Keys):
    """Who reaches the endpoint and how: CIDR allow lists, domain and TLS, the proxy's limits."""

    # --- access --------------------------------------------------------------------
    allowed_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="Who may reach the HTTPS endpoint (the API key is still required).",
    )
    ssh_allowed_cidrs: list[str] = Field(
        default_factory=lambda: [THIS_MACHINE],
        description="Who may SSH to the host; `auto` = the public IPv4 address pulumi runs "
        "from (provisioning runs over SSH, so it must be included).",
    )
    metrics_allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Who may read Prometheus /metrics through the proxy (default: nobody).",
    )
    domain: Optional[str] = Field(
        None, description="DNS name pointing at the host's Elastic IP (needed for letsencrypt)."
    )
    tls: Literal["self-signed", "letsencrypt"] = Field(
        "self-signed",
        description="self-signed: a stack CA signs the certificate (exported as "
        "caCertificate); letsencrypt: a real certificate for `domain`.",
    )
    letsencrypt_email: Optional[str] = Field(
        None, description="Contact address for Let's Encrypt expiry notices."
    )
    rate_limit_per_minute: Optional[int] = Field(
        None, gt=0, description="Requests per minute per client IP at the proxy (default: off)."
    )
    max_request_body_mb: int = Field(
        64, ge=1, le=1024, description="Largest request body the proxy accepts, in MiB."
    )
    max_concurrent_requests_per_client: Optional[int] = Field(
        None,
        ge=1,
        le=65535,
        description="Requests one client address may have in flight at once through the proxy "
        "(streams included); more get 429 with Retry-After (default: the sequences vLLM "
        "batches at once, maxNumSeqs or vLLM's default for the GPU).",
    )

    @field_validator("letsencrypt_email")
    @classmethod
    def _email(cls, value: Optional[str]) -> Optional[str]:
        return values.email(value)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: Optional[str]) -> Optional[str]:
        return values.domain(value)

