"""What `pulumi preview` checks before the first resource, in one call: `preflight()`.

It reads the stack (stack.pulumi_config), asks the Hugging Face Hub whether the host may download
the model, sizes the hardware (sizing/), builds the vLLM argv and the proxy's limits (serving/),
and returns what the components need. Every refusal becomes a pulumi.RunError with the message
only (the key, the bad value and a fix), so nothing is created for a stack that cannot come up.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi

from config.constants import NAMESPACE
from config.settings import StackConfig
from config.validation import ConfigError
from serving import vllm_args
from serving.extra_args import flag_warnings
from serving.proxy_limits import ProxyLimits, stack_limits
from serving.tool_calling import tool_hint
from serving.risky_flags import risky_flag_warnings
from serving.vllm_args import SERVED_MODEL_PATH, VLLM_PORT
from sizing.choice import plan as choose_plan
from sizing.errors import SizingError
from sizing.gated import AccessRefused, check_access, unchecked_warning
from sizing.hub import download_repo_id, hub_offline, has_chat_template, local_model_problems, resolve
from sizing.models import ModelResolutionError
from sizing.plan import SizingPlan
from sizing.report import format_report
from sizing.startup import start_notes
from stack.pulumi_config import Secrets, aws_provider_settings, load, plain_secret, unreadable
from stack.tenant_checks import check_tenants


@dataclass(frozen=True)
class Preflight:
    """What the components need, every part of it checked."""

    settings: StackConfig
    secrets: Secrets
    plan: SizingPlan
    vllm_command: list[str]  # `vllm serve` arguments, model path first
    proxy_limits: ProxyLimits
    aws_settings: dict[str, Any]  # the stack's aws:* settings as aws.Provider arguments


def preflight(offered: Callable[[], Optional[set[str]]]) -> Preflight:
    """Every check `pulumi preview` runs before the first resource, in this order; the first
    refusal raises pulumi.RunError. `offered()`: the instance types the region offers (None:
    not asked), called only once the config is valid and the model readable."""
    settings, secrets = load()  # every bad value fails here, before any resource exists
    check_model_access(settings)  # so does a gated model hfToken cannot read (asked of the Hub)
    plan = size(settings, offered=offered())  # so does a model that fits nowhere
    command = vllm_command(settings, plan)  # and a flag the pinned vLLM does not know
    limits = proxy_limits(settings, plan)  # and a proxy setting that host could never honour
    pulumi.log.info(format_report(plan))
    return Preflight(settings, secrets, plan, command, limits, aws_provider_settings())


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
    if unreadable("hfToken"):
        pulumi.log.warn(
            f"access to {settings.model} was not checked: {NAMESPACE}:hfToken is encrypted and this "
            "run has no passphrase to read it; `pulumi preview` checks it with the real token"
        )
        return
    token = plain_secret("hfToken")
    try:
        access = check_access(settings.model, settings.model_revision, token, hub_api())
    except AccessRefused as exc:
        raise pulumi.RunError(str(exc)) from None
    if not access.checked:
        pulumi.log.warn(unchecked_warning(settings.model, token, access.why_unchecked))
    elif access.gated:
        pulumi.log.info(f"{settings.model} is gated on the Hugging Face Hub; hfToken can read it")


def size(settings: StackConfig, offered: Optional[set[str]]) -> SizingPlan:
    """The sizing decision, or pulumi.RunError with the arithmetic when nothing fits.

    A model known to have no chat template gets a note in the plan (so in the sizing report
    and the `sizing` output) and a warning."""
    if settings.is_local_model:
        _check_local_model(settings)
    try:
        repo = download_repo_id(settings.model, settings.model_source)
        # The hfToken also reads a gated model's config.json at preview (tools/size: $HF_TOKEN).
        resolver = functools.partial(resolve, token=plain_secret("hfToken"))
        chosen = choose_plan(settings, offered=offered, resolver=resolver)
    except (SizingError, ModelResolutionError) as exc:
        raise pulumi.RunError(str(exc)) from None
    if repo != settings.model:
        pulumi.log.info(
            f"{NAMESPACE}:model={settings.model!r} is {repo!r} on ModelScope (modelSource=modelscope): "
            f"the host downloads {repo}"
        )
    note = chat_template_note(settings)
    if note is not None:
        pulumi.log.warn(note)
        chosen = dataclasses.replace(chosen, notes=(*chosen.notes, note))
    # The model volume's throughput and the expected start (sizing.start_stages, issue 26).
    start, too_short = start_notes(chosen, settings)
    for warning in too_short:
        pulumi.log.warn(warning)
    return dataclasses.replace(chosen, notes=(*chosen.notes, *start, *too_short))


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
    hint = tool_hint(settings, plan)  # a tool-capable model served without tool calling
    if hint:
        pulumi.log.warn(hint)
    for warning in risky_flag_warnings(settings.vllm_extra_args, plan.architecture):
        pulumi.log.warn(warning)  # prompts logged, files or URLs fetched for clients (issue 27)
    return argv


def proxy_limits(settings: StackConfig, plan: SizingPlan) -> ProxyLimits:
    """The proxy's limits on the planned host (serving.proxy_limits), or pulumi.RunError naming
    the keys the proxy could never honour there."""
    try:
        limits = stack_limits(settings, plan)
        check_tenants(settings, limits)  # apiKeys: limits the proxy honours, files that fit (issue 29)
        return limits
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
