"""vllmExtraArgs that hand code or files to strangers, refused before anything is created. Pure.

Two refusals (config/rules.py calls `risky_arg_problem` with the other cross-key rules):

* `--trust-remote-code` without a pinned `modelRevision`. vLLM then runs the Python files of the
  model repository (transformers' `trust_remote_code`: `auto_map` classes imported from the
  repository's `*.py`; vllm/config/model.py ModelConfig.trust_remote_code, "Trust remote code
  (e.g., from HuggingFace) when downloading the model and tokenizer"). The host downloads the
  repository at `modelRevision` (default: the `main` branch), so without a commit id whoever
  can push to that branch runs code on the next deploy, next to the API key and the tokens. A
  local model directory is uploaded as it is on this machine, so it needs no revision.
* `--allowed-local-media-path /`: vLLM lets API requests read media files under that directory
  ("Allowing API requests to read local images or videos from directories specified by the
  server file system. This is a security risk. Should only be enabled in trusted
  environments.", vllm/config/model.py ModelConfig.allowed_local_media_path;
  vllm/multimodal/media/connector.py `_load_file_url` allows any subpath). `/` is every file in
  the container. Another directory is allowed with a warning (serving/risky_flags.py).

Flags are read as vLLM's parser reads them: `--trust_remote_code` is `--trust-remote-code`, the
last of `--trust-remote-code` / `--no-trust-remote-code` wins, `--flag=value` or `--flag value`.
"""

from __future__ import annotations

import posixpath
import re
from typing import Optional, Sequence

from config.constants import NAMESPACE

TRUST_REMOTE_CODE = "--trust-remote-code"
ALLOWED_LOCAL_MEDIA_PATH = "--allowed-local-media-path"

# A git commit id as the Hugging Face Hub names one: 40 hexadecimal digits (branch and tag
# names move; a commit does not).
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _flag_name(token: str) -> str:
    """`--trust_remote_code=x` -> `--trust-remote-code` (vLLM turns `_` into `-` in names)."""
    return "--" + token[2:].split("=", 1)[0].replace("_", "-") if token.startswith("--") else token


def trusts_remote_code(args: Sequence[str]) -> bool:
    """Whether the last of --trust-remote-code / --no-trust-remote-code in `args` is the former."""
    on = False
    for token in args:
        name = _flag_name(token)
        if name == TRUST_REMOTE_CODE:
            on = True
        elif name == "--no-" + TRUST_REMOTE_CODE[2:]:
            on = False
    return on


def flag_value(args: Sequence[str], flag: str) -> Optional[str]:
    """The last value given to `flag` (`--flag v` or `--flag=v`); None when absent."""
    found = None
    for i, token in enumerate(args):
        if _flag_name(token) != flag:
            continue
        if "=" in token:
            found = token.split("=", 1)[1]
        elif i + 1 < len(args):
            found = args[i + 1]
    return found


def is_pinned_revision(revision: Optional[str]) -> bool:
    return bool(revision) and bool(_COMMIT.match(str(revision)))


def risky_arg_problem(args: Sequence[str], model: str, revision: Optional[str], local_model: bool) -> Optional[str]:
    """The refusal for the first risky flag in `args` (vllmExtraArgs), or None."""
    if trusts_remote_code(args) and not local_model and not is_pinned_revision(revision):
        given = f"modelRevision={revision!r}" if revision else "modelRevision is unset (the main branch)"
        return (
            f"{NAMESPACE}:vllmExtraArgs has {TRUST_REMOTE_CODE} and {given}: vLLM would run the "
            f"Python files of {model} as they are on that branch at each deploy, and whoever can "
            "push to it runs code on the host, next to the API key and tokens. Fix: pin the commit "
            "you reviewed, pulumi config set modelRevision <40-hex commit id> (the newest: "
            f"git ls-remote https://huggingface.co/{model} main, or the History of the Hub's "
            f"\"Files and versions\" page), or remove {TRUST_REMOTE_CODE}"
        )
    media = flag_value(args, ALLOWED_LOCAL_MEDIA_PATH)
    if media is not None and media.strip().startswith("/") and not posixpath.normpath(media.strip()).strip("/"):
        return (
            f"{NAMESPACE}:vllmExtraArgs has {ALLOWED_LOCAL_MEDIA_PATH} {media!r}: vLLM would let "
            "every API request read any file of the container (file:// media URLs under that "
            "directory; vLLM's own docs call the flag a security risk, vllm/config/model.py). Fix: "
            f"remove {ALLOWED_LOCAL_MEDIA_PATH} from vllmExtraArgs and send media as data: URLs "
            "(base64), which vLLM decodes without reading any file"
        )
    return None
