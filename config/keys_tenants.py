"""Stack keys of one concern: tenants, several named API keys each with its own limits (issue 29).

One section of config.settings.StackConfig (which mixes the sections into the one model users
write); field descriptions are the README's config reference.

With ``apiKeys`` set, nginx checks every request's bearer key before anything reaches vLLM: it
matches the SHA-256 of the key against the tenants' (serving.tenants), names the tenant in its
access log and applies the tenant's limits; vLLM keeps the stack's own ``apiKey``, which only the
proxy sends. Without ``apiKeys`` the stack serves as before: one ``apiKey``, checked by vLLM.

A given key is a secret and never a field of StackConfig (see config.settings): the validator
checks its form and keeps only ``GIVEN_KEY`` in its place; stack.pulumi_config reads the value
from the encrypted config as a secret Output.
"""

from __future__ import annotations

import re
from typing import Optional

from pydantic import Field, field_validator, model_validator

from config.keys_base import Keys

# What StackConfig keeps where a tenant's key (or previous key) was given: never the value.
GIVEN_KEY = "(secret)"

# A tenant's name is a label in the access log, in Prometheus metrics and in a Pulumi resource
# name, and a string in nginx's config: letters, digits, '.', '_', '-'.
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A key travels in an `Authorization: Bearer <key>` header and a shell variable: RFC 6750's
# b64token characters, and long enough to resist guessing (generated keys are 48 characters).
_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
MIN_KEY_LENGTH = 32
MAX_KEY_LENGTH = 256
MAX_TENANTS = 64


def _given_key(value: Optional[str], key: str) -> Optional[str]:
    """Check a given key's form without ever echoing it; GIVEN_KEY in its place."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string (set it with pulumi config set --secret --path ...)")
    if not MIN_KEY_LENGTH <= len(value) <= MAX_KEY_LENGTH or not _KEY_CHARS.match(value):
        raise ValueError(
            f"{key} (value not shown) must be {MIN_KEY_LENGTH}-{MAX_KEY_LENGTH} characters of "
            "A-Z a-z 0-9 . _ ~ + / = - (it travels in an Authorization header); "
            "e.g. openssl rand -hex 24, or leave it out and the stack generates one"
        )
    return GIVEN_KEY


class Tenant(Keys):
    """One tenant: a named API key with its own limits at the proxy."""

    rate_limit_per_minute: Optional[int] = Field(
        None, gt=0, le=600000,
        description="Requests per minute this tenant's key may make (429 with Retry-After past it); "
        "default: no limit of its own (rateLimitPerMinute per client address still applies).",
    )
    max_concurrent_requests: Optional[int] = Field(
        None, ge=1, le=65535,
        description="Requests this tenant may have in flight at once, streams included (429 with "
        "Retry-After past it); default: an equal share of the sequences vLLM batches at once "
        "(maxNumSeqs or vLLM's default for the GPU, divided by the number of tenants, rounded up), "
        "so one tenant's flood leaves the others theirs. On a fleet both limits are per replica.",
    )
    key: Optional[str] = Field(
        None,
        description="This tenant's key, only as a secret: pulumi config set --secret --path "
        "'apiKeys.<name>.key' (default: a generated 48-character key).",
    )
    previous_key: Optional[str] = Field(
        None,
        description="A given key's predecessor, accepted too until removed (rotation window), "
        "only as a secret: pulumi config set --secret --path 'apiKeys.<name>.previousKey'.",
    )
    rotation: int = Field(
        0, ge=0,
        description="A generated key's generation: raise it by one to get a new key.",
    )
    keep_previous_key: bool = Field(
        False,
        description="After raising rotation, keep accepting the previous generated key until this "
        "is set back to false (rotation window).",
    )

    @model_validator(mode="before")
    @classmethod
    def _camel_case_only(cls, value: object) -> object:
        """previous_key would validate (pydantic takes field names too) and then never be read as
        the secret it is (stack.pulumi_config reads previousKey): stack keys are camelCase."""
        if isinstance(value, dict):
            wrong = [(k, f.alias) for k, f in cls.model_fields.items() if k in value and f.alias and f.alias != k]
            if wrong:
                raise ValueError("; ".join(f"write {alias}, not {name}" for name, alias in wrong))
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: Optional[str]) -> Optional[str]:
        return _given_key(value, "key")

    @field_validator("previous_key")
    @classmethod
    def _previous_key(cls, value: Optional[str]) -> Optional[str]:
        return _given_key(value, "previousKey")

    @model_validator(mode="after")
    def _one_way_to_rotate(self) -> "Tenant":
        if self.key is not None and (self.rotation or self.keep_previous_key):
            raise ValueError(
                "rotation/keepPreviousKey rotate a generated key; this tenant's key is given: "
                "rotate it by setting the new key as key and the old one as previousKey"
            )
        if self.previous_key is not None and self.key is None:
            raise ValueError("previousKey is set without key; set key too (the new key), or drop previousKey")
        if self.keep_previous_key and self.rotation == 0:
            raise ValueError("keepPreviousKey needs rotation >= 1 (there is no previous generated key at rotation 0)")
        return self

    @property
    def key_given(self) -> bool:
        return self.key is not None


class TenantKeys(Keys):
    """Several named API keys (tenants), each with its own limits, usage and rotation."""

    api_keys: dict[str, Tenant] = Field(
        default_factory=dict,
        description="Tenants: name -> {rateLimitPerMinute, maxConcurrentRequests, key, rotation, "
        "keepPreviousKey}; each gets its own key (stack output apiKeys, a secret map), checked "
        "by the proxy (default: none; the one apiKey, checked by vLLM).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _distinct_given_keys(cls, value: object) -> object:
        """Two tenants given the same key could not be told apart (names only, never the key)."""
        if isinstance(value, dict):
            owners: dict[str, list[str]] = {}
            for name, tenant in value.items():
                if isinstance(tenant, dict):
                    for field in ("key", "previousKey"):
                        if isinstance(tenant.get(field), str):
                            owners.setdefault(tenant[field], []).append(f"{name}.{field}")
            shared = [" and ".join(where) for where in owners.values() if len(where) > 1]
            if shared:
                raise ValueError(
                    f"the same key (not shown) is given for {'; '.join(shared)}; give each its own "
                    "(e.g. openssl rand -hex 24), or leave key out and the stack generates one"
                )
        return value

    @field_validator("api_keys")
    @classmethod
    def _tenant_names(cls, value: dict[str, Tenant]) -> dict[str, Tenant]:
        bad = [name for name in value if not _TENANT_NAME.match(name)]
        if bad:
            raise ValueError(
                f"tenant name(s) {', '.join(repr(n) for n in bad)} must be 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit; e.g. team-a"
            )
        if len(value) > MAX_TENANTS:
            raise ValueError(f"{len(value)} tenants; at most {MAX_TENANTS} (each has its own nginx zones)")
        return value

    @property
    def tenants_enabled(self) -> bool:
        return bool(self.api_keys)

    def tenant_key_problems(self) -> list[str]:
        """Tenants' combinations that cannot work (StackConfig reports them with the others)."""
        return []

