"""Reads the stack's configuration and secrets out of Pulumi and hands them to the pure validator.

The one module that reads `pulumi.Config` and the engine's config: everything it returns is
either a validated `StackConfig`, a secret `pulumi.Output`, or (for a request made here at
preview, never logged or exported) a secret's plain value.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import typing
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
from pulumi.runtime import config as runtime_config

from config.access import THIS_MACHINE
from config.constants import NAMESPACE, SECRET_KEYS
from config.namespaces import judge
from config.images import PINNED_VLLM_VERSION, UNCHECKED_WITH_ANOTHER_VERSION, is_pinned_vllm_image
from config.settings import KEYS, StackConfig
from config.validation import ConfigError, parse

# Answers with the caller's public IPv4 address as plain text.
IP_ECHO_URL = "https://checkip.amazonaws.com"

# Keys whose values are not plain strings: the CLI stores every top-level value as a
# string, so these arrive JSON-encoded (arrays, objects) or as "true"/"2"/"0.9".
_STRING_KEYS = {
    field.alias
    for field in StackConfig.model_fields.values()
    if field.annotation is str
    or (typing.get_origin(field.annotation) is typing.Union and str in typing.get_args(field.annotation))
}


@dataclass(frozen=True)
class Secrets:
    """Secret config values; never unwrapped in program code."""

    api_key: Optional[pulumi.Output[str]]
    hf_token: Optional[pulumi.Output[str]]
    modelscope_token: Optional[pulumi.Output[str]] = None
    # apiKeys: the tenants whose key is given (not generated), by name (issue 29).
    tenant_keys: dict[str, "TenantSecret"] = field(default_factory=dict)


@dataclass(frozen=True)
class TenantSecret:
    """A tenant's given key (and the key it replaces, accepted too while set), as secret Outputs."""

    key: pulumi.Output[str]
    previous_key: Optional[pulumi.Output[str]] = None


# A tenant's fields that hold a given key (config/keys_tenants.py: never a StackConfig value).
_TENANT_KEY_FIELDS = ("key", "previousKey")


def _given_tenant_keys(raw_api_keys: Any) -> dict[str, dict[str, str]]:
    """tenant -> {field: value} of the keys `apiKeys` gives (decoded; malformed input is left
    to the validator, which reports it without the value)."""
    tenants = _decode("apiKeys", raw_api_keys)
    if not isinstance(tenants, dict):
        return {}
    return {
        name: {f: t[f] for f in _TENANT_KEY_FIELDS if isinstance(t.get(f), str)}
        for name, t in tenants.items()
        if isinstance(t, dict) and any(isinstance(t.get(f), str) for f in _TENANT_KEY_FIELDS)
    }


def _plain_tenant_key_problems(given: dict[str, dict[str, str]]) -> list[str]:
    """A given key stored in plain text, with the command that stores it encrypted. With any
    secure leaf Pulumi marks the whole `apiKeys` value secret, so the check is on the key."""
    full = f"{NAMESPACE}:apiKeys"
    if not given or runtime_config.is_config_secret(full):
        return []
    return [
        f"{full}.{name}.{f} is stored in plain text in the stack file; store it encrypted: "
        f"pulumi config set --secret --path 'apiKeys.{name}.{f}' (it prompts for the value, which then "
        "stays out of your shell history)"
        for name, fields in sorted(given.items()) for f in fields
    ]


def _tenant_secrets(given: dict[str, dict[str, str]]) -> dict[str, TenantSecret]:
    # Secret here whatever the engine says: nothing downstream may see a given key plain.
    return {
        name: TenantSecret(
            key=pulumi.Output.secret(fields["key"]),
            previous_key=pulumi.Output.secret(fields["previousKey"]) if "previousKey" in fields else None,
        )
        for name, fields in sorted(given.items()) if "key" in fields
    }


def _all_values() -> dict[str, Any]:
    """Every `namespace:key` value of the stack the engine passed in (PULUMI_CONFIG, or what
    `set_all_config` set under mocks), whatever the namespace."""
    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def _namespace_values(namespace: str) -> dict[str, Any]:
    """Every `<namespace>:*` value the engine passed in, namespace stripped."""
    prefix = f"{namespace}:"
    return {k[len(prefix):]: v for k, v in _all_values().items() if k.startswith(prefix)}


def _foreign_keys() -> dict[str, str]:
    """The stack's keys of other namespaces (`aws:region`, a mistyped `vllm_deploy:model`), for
    parse() to judge by name: their values are never read here (one may be a secret)."""
    return {k: "<not read>" for k in _all_values() if ":" in k and not k.startswith(f"{NAMESPACE}:")}


def aws_provider_keys() -> set[str]:
    """The `aws:*` keys pulumi-aws reads (its pulumi_aws.config module's settings, camelCase)."""
    import pulumi_aws.config  # noqa: F401 - loads the package (vars imports it back)
    from pulumi_aws.config import vars as provider_vars

    names = [n for n, v in vars(provider_vars._ExportableConfig).items() if isinstance(v, property)]
    return {n.split("_")[0] + "".join(p.capitalize() for p in n.split("_")[1:]) for n in names}


def aws_key_problems(keys: Any) -> list[str]:
    """`aws:regoin` and the like: an `aws:*` key pulumi-aws does not read but that is close to
    one it does, which would be silently ignored (the provider then takes its Region from the
    environment, possibly another one). Keys with no close match are left to the provider."""
    known = aws_provider_keys()
    problems = []
    for full in sorted(k for k in keys if k.startswith("aws:")):
        name = full[len("aws:"):]
        guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        if name not in known and guess:
            problems.append(
                f"{full} is not a setting of the AWS provider, which would ignore it (and take its "
                f"value from the environment instead); you likely meant aws:{guess[0]}. Fix: pulumi "
                f"config rm '{full}', then pulumi config set aws:{guess[0]} <the same value>"
            )
    return problems


def _project_keys() -> dict[str, Any]:
    return _namespace_values(NAMESPACE)


def aws_provider_settings() -> dict[str, Any]:
    """The stack's `aws:*` settings as arguments of an explicit aws.Provider.

    An explicit provider reads none of them by itself (profile, assumeRoles, allowed account
    ids...), while the default provider that answers the preview-time lookups does: without
    this, sizing could ask one account and the resources land in another.
    """
    import inspect

    import pulumi_aws as aws

    accepted = set(inspect.signature(aws.ProviderArgs.__init__).parameters) - {"__self__"}
    settings: dict[str, Any] = {}
    for key, raw in _namespace_values("aws").items():
        arg = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        if arg not in accepted:
            continue
        value = _json_or_text(raw)
        if runtime_config.is_config_secret(f"aws:{key}"):
            value = pulumi.Output.secret(value)
        settings[arg] = value
    return settings


def _json_or_text(raw: Any) -> Any:
    """Structured provider settings (assumeRoles, endpoints, booleans) arrive JSON-encoded."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _decode(key: str, value: Any) -> Any:
    if not isinstance(value, str) or key in _STRING_KEYS:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value  # the validator reports it with the key name and what is allowed


def load() -> tuple[StackConfig, Secrets]:
    """Validate the stack config once; raise pulumi.RunError (message only) when it is bad."""
    raw = _project_keys()
    problems = []
    for key in SECRET_KEYS:
        full = f"{NAMESPACE}:{key}"
        if key in raw and not runtime_config.is_config_secret(full):
            problems.append(
                f"{full} is stored in plain text in the stack file; store it encrypted: "
                f"pulumi config set --secret {key} (it prompts for the value, which then stays out of your shell history)"
            )
    given = _given_tenant_keys(raw.get("apiKeys"))
    problems += _plain_tenant_key_problems(given)
    values = {k: _decode(k, v) for k, v in raw.items() if k not in SECRET_KEYS}
    foreign = _foreign_keys()
    for warning in judge(foreign, KEYS).warnings:
        pulumi.log.warn(warning)
    problems += aws_key_problems(foreign)
    try:
        settings = parse({**values, **foreign})
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise pulumi.RunError(str(ConfigError(problems)))

    if not is_pinned_vllm_image(settings.vllm_image):  # allowUnverifiedVllmImage confirmed it
        pulumi.log.warn(
            f"{NAMESPACE}:vllmImage={settings.vllm_image!r} is not known to be vLLM "
            f"{PINNED_VLLM_VERSION} (allowUnverifiedVllmImage is true): "
            f"{UNCHECKED_WITH_ANOTHER_VERSION} are checked against {PINNED_VLLM_VERSION} only"
        )
    if THIS_MACHINE in settings.ssh_allowed_cidrs:
        settings = settings.model_copy(
            update={"ssh_allowed_cidrs": _with_this_machine(settings.ssh_allowed_cidrs)}
        )
    cfg = pulumi.Config(NAMESPACE)
    return settings, Secrets(
        api_key=cfg.get_secret("apiKey"),
        hf_token=cfg.get_secret("hfToken"),
        modelscope_token=cfg.get_secret("modelscopeToken"),
        tenant_keys=_tenant_secrets(given),
    )


# Set by `tools/plan`, which runs the program without the stack's passphrase: the secret keys
# whose values it could not decrypt (comma-separated). Their placeholders must never be sent
# anywhere as if they were the real values.
UNREADABLE_SECRETS_ENV = "VLLM_DEPLOY_UNREADABLE_SECRETS"


def unreadable(key: str) -> bool:
    return key in os.environ.get(UNREADABLE_SECRETS_ENV, "").split(",")


def plain_secret(key: str) -> Optional[str]:
    """A secret config value as plain text, for a request made here at preview (never logged,
    exported or put in a resource): the engine hands the program its decrypted config.
    None when unset, or when the run could not decrypt it (UNREADABLE_SECRETS_ENV)."""
    if unreadable(key):
        return None
    value = _project_keys().get(key)
    return str(value) if value else None


def public_ipv4() -> str:
    """This machine's public IPv4 address: $VLLM_DEPLOY_PUBLIC_IP, else asked of IP_ECHO_URL."""
    override = os.environ.get("VLLM_DEPLOY_PUBLIC_IP")
    if override:
        try:
            return str(ipaddress.IPv4Address(override.strip()))
        except ValueError:
            raise pulumi.RunError(
                f"VLLM_DEPLOY_PUBLIC_IP={override!r} is not an IPv4 address; set it to this machine's "
                "public address, e.g. 203.0.113.7, or unset it to look the address up"
            ) from None
    url = os.environ.get("VLLM_DEPLOY_IP_ECHO_URL", IP_ECHO_URL)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - fixed https URL
            return str(ipaddress.IPv4Address(response.read().decode().strip()))
    except (OSError, ValueError) as exc:
        raise pulumi.RunError(
            f"{NAMESPACE}:sshAllowedCidrs contains 'auto' but this machine's public IPv4 address "
            f"could not be found ({url}: {exc}); set sshAllowedCidrs to your address, e.g. "
            "pulumi config set --path 'sshAllowedCidrs[0]' 203.0.113.7/32, or export "
            "VLLM_DEPLOY_PUBLIC_IP"
        ) from None


def _with_this_machine(cidrs: list[str]) -> list[str]:
    resolved = [f"{public_ipv4()}/32" if c == THIS_MACHINE else c for c in cidrs]
    return list(dict.fromkeys(resolved))
