"""Reads the stack's configuration out of Pulumi and hands it to the pure validator.

The only module under config/ that imports pulumi: everything it returns is either a
validated `StackConfig` or a secret `pulumi.Output`.
"""

from __future__ import annotations

import functools
import dataclasses
import ipaddress
import json
import os
import re
import typing
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
from pulumi.runtime import config as runtime_config

from config.access import THIS_MACHINE
from config.constants import NAMESPACE, SECRET_KEYS
from config.images import PINNED_VLLM_VERSION, UNCHECKED_WITH_ANOTHER_VERSION, is_pinned_vllm_image
from config.settings import StackConfig
from config.validation import ConfigError, parse
from serving import vllm_args
from serving.vllm_args import SERVED_MODEL_PATH, VLLM_PORT
from serving.flag_reader import flag_warnings
from serving.proxy_limits import ProxyLimits, stack_limits
from sizing.choice import plan as choose_plan
from sizing.errors import SizingError
from sizing.gated import AccessRefused, check_access, unchecked_warning
from sizing.hub import download_repo_id, hub_offline, has_chat_template, local_model_problems, resolve
from sizing.models import ModelResolutionError
from sizing.plan import SizingPlan

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


def _namespace_values(namespace: str) -> dict[str, Any]:
    """Every `<namespace>:*` value the engine passed in, namespace stripped."""
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{namespace}:"
    return {k[len(prefix):]: v for k, v in merged.items() if k.startswith(prefix)}


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
    values = {k: _decode(k, v) for k, v in raw.items() if k not in SECRET_KEYS}
    try:
        settings = parse(values)
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
    )


# Set by `tools/plan`, which runs the program without the stack's passphrase: the secret keys
# whose values it could not decrypt (comma-separated). Their placeholders must never be sent
# anywhere as if they were the real values.
UNREADABLE_SECRETS_ENV = "VLLM_DEPLOY_UNREADABLE_SECRETS"


def _unreadable(key: str) -> bool:
    return key in os.environ.get(UNREADABLE_SECRETS_ENV, "").split(",")


def _plain_secret(key: str) -> Optional[str]:
    """A secret config value as plain text, for a request made here at preview (never logged,
    exported or put in a resource): the engine hands the program its decrypted config.
    None when unset, or when the run could not decrypt it (UNREADABLE_SECRETS_ENV)."""
    if _unreadable(key):
        return None
    value = _project_keys().get(key)
    return str(value) if value else None


def hub_api() -> Any:
    """huggingface_hub's client, or None when HF_HUB_OFFLINE asks not to reach the Hub.
    The one place the program talks to the Hub about access; tests replace it."""
    if hub_offline():
        return None
    from huggingface_hub import HfApi

    return HfApi()


def check_model_access(settings: StackConfig) -> None:
    """Ask the Hugging Face Hub whether hfToken lets the host download the model (gated or private
    repositories), before anything is created. Refuses with pulumi.RunError when the Hub says no;
    warns when it could not be asked. Local directories and ModelScope are not asked."""
    if settings.is_local_model or settings.model_source != "huggingface":
        return
    if _unreadable("hfToken"):
        pulumi.log.warn(
            f"access to {settings.model} was not checked: {NAMESPACE}:hfToken is encrypted and this "
            "run has no passphrase to read it; `pulumi preview` checks it with the real token"
        )
        return
    token = _plain_secret("hfToken")
    try:
        access = check_access(settings.model, settings.model_revision, token, hub_api())
    except AccessRefused as exc:
        raise pulumi.RunError(str(exc)) from None
    if not access.checked:
        pulumi.log.warn(unchecked_warning(settings.model, token, access.why_unchecked))
    elif access.gated:
        pulumi.log.info(f"{settings.model} is gated on the Hugging Face Hub; hfToken can read it")


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


def size(settings: StackConfig, offered: Optional[set[str]]) -> SizingPlan:
    """The sizing decision, or pulumi.RunError with the arithmetic when nothing fits.

    A model known to have no chat template gets a note in the plan (so in the sizing report
    and the `sizing` output) and a warning."""
    if settings.is_local_model:
        _check_local_model(settings)
    try:
        repo = download_repo_id(settings.model, settings.model_source)
        # The hfToken also reads a gated model's config.json at preview (tools/size: $HF_TOKEN).
        resolver = functools.partial(resolve, token=_plain_secret("hfToken"))
        chosen = choose_plan(settings, offered=offered, resolver=resolver)
    except (SizingError, ModelResolutionError) as exc:
        raise pulumi.RunError(str(exc)) from None
    if chosen.nodes > 1 and settings.idle_stop_minutes:
        # The watcher powers off the host it runs on: across nodes the workers would go on
        # billing behind a stopped head, and tools/wake starts one instance.
        raise pulumi.RunError(
            f"{NAMESPACE}:idleStopMinutes={settings.idle_stop_minutes} stops one host, and "
            f"{settings.model} runs on {chosen.nodes} x {chosen.instance.name}: idle stop works "
            "on one node only. Set it to 0 (pulumi config set idleStopMinutes 0), or choose a "
            "model or quantization that fits one node and set nodes to 1."
        )
    if repo != settings.model:
        pulumi.log.info(
            f"{NAMESPACE}:model={settings.model!r} is {repo!r} on ModelScope (modelSource=modelscope): "
            f"the host downloads {repo}"
        )
    note = chat_template_note(settings)
    if note is not None:
        pulumi.log.warn(note)
        chosen = dataclasses.replace(chosen, notes=(*chosen.notes, note))
    return chosen


def chat_template_note(settings: StackConfig) -> Optional[str]:
    """What to tell the user when the model has no chat template and none is configured."""
    if vllm_args.sets_chat_template(settings.vllm_extra_args):
        return None
    if has_chat_template(settings.model, settings.model_source, settings.model_revision) is not False:
        return None
    return (
        f"{settings.model} has no chat template (no chat_template in its tokenizer_config.json, no "
        "chat_template.jinja): /v1/chat/completions will answer 400, only /v1/completions works, "
        "and the readiness check generates through it; to serve chat, add --chat-template "
        "<template> to vllmExtraArgs"
    )


def _check_local_model(settings: StackConfig) -> None:
    """A local directory is uploaded as the model: it must hold what vLLM loads, not just the
    config.json that sizes it."""
    directory = Path(settings.model).expanduser()
    if not directory.is_dir():
        return  # the resolver says it is not a directory
    problems = local_model_problems(directory)
    if problems:
        raise pulumi.RunError(
            f"{NAMESPACE}:model={settings.model!r} is not a model directory vLLM can serve: "
            f"{'; '.join(problems)}. Point model at a complete copy of the model (what "
            "`hf download <org>/<name> --local-dir <dir>` writes: config.json, the weights and the "
            "tokenizer files), or set model to the hub id and let the host download it."
        )


def vllm_command(settings: StackConfig, plan: SizingPlan) -> list[str]:
    """`vllm serve` arguments, every flag checked against the pinned vLLM's flag list."""
    try:
        argv = vllm_args.serve_args(
            settings, plan, model_path=SERVED_MODEL_PATH, port=VLLM_PORT
        )
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    for warning in flag_warnings(settings.vllm_extra_args):
        pulumi.log.warn(warning)
    return argv


def proxy_limits(settings: StackConfig, plan: SizingPlan) -> ProxyLimits:
    """The proxy's limits on the planned host (serving.proxy_limits), or pulumi.RunError naming
    the keys the proxy could never honour there."""
    try:
        return stack_limits(settings, plan)
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
