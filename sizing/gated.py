"""Whether the Hugging Face Hub lets the host download the model: gated and private repositories.

Asked at preview, before anything is paid for, through huggingface_hub's ``HfApi``:
``model_info`` says whether the repository exists and is gated ("auto" or "manual" approval),
``auth_check`` whether a token may read it. The Hub is a boundary: callers pass ``api`` (anything
with those two methods), so tests hand in a fake and never reach the network.

The token is the stack's hfToken, the one the host downloads with. Without it the Hub is asked
anonymously (``token=False``), never with a login cached on this machine, which the host would
not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from config.constants import NAMESPACE
from sizing.models import did_you_mean

# Long enough for a slow link to the Hub, short enough that an offline preview does not hang.
HUB_TIMEOUT_S = 10.0

TOKENS_PAGE = "https://huggingface.co/settings/tokens"

SET_TOKEN = f"pulumi config set --secret hfToken (it prompts; create a read token at {TOKENS_PAGE})"


class AccessRefused(ValueError):
    """The Hub says the host could not download the model; the message names the key and fix."""


@dataclass(frozen=True)
class Access:
    """The Hub's answer, when it could be asked."""

    checked: bool
    gated: Optional[str] = None  # None (not gated), "auto" or "manual"
    why_unchecked: str = ""


def _status(exc: Exception) -> Optional[int]:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the Hub cannot be reached (no HTTP answer)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for module in ("httpx2", "httpx"):  # huggingface_hub's HTTP client, by version
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def check_access(model_id: str, revision: Optional[str], token: Optional[str], api: Any) -> Access:
    """Ask the Hub whether `token` (None: no hfToken) lets the host download `model_id`.

    Returns Access(checked=False, why) when the Hub could not be asked (`api` None, offline, a
    server error). Raises AccessRefused when the Hub says no: the repository or revision does
    not exist, it is gated and no token is set, the token has no access, or the token is invalid.
    """
    if api is None:
        return Access(checked=False, why_unchecked="HF_HUB_OFFLINE is set")
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{model_id}"
    credential = token or False
    gated: Optional[str] = None
    try:
        info = api.model_info(model_id, revision=revision, token=credential, timeout=HUB_TIMEOUT_S)
        gated = getattr(info, "gated", None) or None
        if gated:
            api.auth_check(model_id, token=credential)
    except GatedRepoError:
        raise AccessRefused(_gated_refusal(model_id, gated, token, page)) from None
    except RevisionNotFoundError:
        raise AccessRefused(
            f"{NAMESPACE}:modelRevision={revision!r} does not exist in {model_id} on the Hugging Face "
            f"Hub: set modelRevision to a branch, tag or commit of {page} (or remove it for main)"
        ) from None
    except RepositoryNotFoundError:
        private = " or is private and hfToken cannot read it" if token else " or is private (set hfToken)"
        raise AccessRefused(
            f"{NAMESPACE}:model={model_id!r} is not on the Hugging Face Hub{private}.{did_you_mean(model_id)} "
            f"Fix the id (tools/size --list-models lists the catalog), or, for a private repository, "
            f"{SET_TOKEN} with a token of an account that can read it."
        ) from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status == 401 and token:
            raise AccessRefused(
                f"{NAMESPACE}:hfToken is not a valid Hugging Face token (the Hub answered 401 for "
                f"{model_id}): create a read token at {TOKENS_PAGE}, then pulumi config set --secret hfToken"
            ) from None
        return Access(checked=False, why_unchecked=f"the Hub answered HTTP {status}")
    except _unreachable_errors() as exc:
        return Access(checked=False, why_unchecked=f"the Hub could not be reached: {type(exc).__name__}: {exc}")
    return Access(checked=True, gated=gated)


def _gated_refusal(model_id: str, gated: Optional[str], token: Optional[str], page: str) -> str:
    approval = {"manual": "the authors approve each request", "auto": "access is granted on request"}.get(
        gated or "", "access must be requested"
    )
    if not token:
        return (
            f"{NAMESPACE}:model={model_id!r} is a gated model on the Hugging Face Hub ({approval}) and "
            f"hfToken is not set, so the host could not download it. Request access at {page} "
            f"(signed in), then {SET_TOKEN}."
        )
    return (
        f"{NAMESPACE}:model={model_id!r} is a gated model on the Hugging Face Hub ({approval}) and "
        f"the account of hfToken has no access to it yet. Request access at {page}, signed in as "
        "that account, and run the preview again once it is granted; or set hfToken to a token of "
        "an account that has access (pulumi config set --secret hfToken)."
    )


def unchecked_warning(model_id: str, token: Optional[str], why: str) -> str:
    """What preview logs when the Hub could not be asked: what that risks, and the fix."""
    hint = "" if token else f"; if it is, set hfToken: {SET_TOKEN}"
    return (
        f"could not ask the Hugging Face Hub whether {model_id} is gated or whether hfToken can read "
        f"it ({why}). A gated model the token cannot read fails on the host at the download step, "
        f"after the instance is paid for: check https://huggingface.co/{model_id}{hint}."
    )
