"""vllmExtraArgs that expose prompts, files or the network, and multimodal models that fetch
any URL: warnings with vLLM 0.33's reason (for pulumi.log.warn at preview). Pure.

The refusals (--trust-remote-code without a pinned modelRevision, --allowed-local-media-path /)
are config.risky_args', checked with the stack config; what is only risky is said here:

* `--enable-log-requests`: vLLM 0.33 builds a RequestLogger (entrypoints/launchers/api_server/
  app_state.py) that logs each request's prompt and prompt token ids, cut at --max-log-len
  (unlimited by default; entrypoints/serve/utils/request_logger.py `log_inputs`), into the
  container's log: users' prompts end up on the host's disk and in `docker logs`.
* `--allowed-local-media-path <dir>`: API requests may read any file under <dir>
  (multimodal/media/connector.py `_load_file_url`); vLLM's docs call it a security risk.
* A multimodal architecture (vLLM 0.33's registry, serving/vllm-multimodal-architectures.txt)
  without `--allowed-media-domains`: the server downloads every http(s) media URL a client
  sends (connector.py `load_from_url`; the allowlist is checked only when set,
  `_assert_url_in_allowed_media_domains`), so any client holding the API key makes the host
  fetch from addresses only it can reach (loopback services, the VPC). Redirects are followed
  unless VLLM_MEDIA_URL_ALLOW_REDIRECTS=0 (vllm/envs.py), so the allowlist is best with it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from config.constants import NAMESPACE
from config.risky_args import ALLOWED_LOCAL_MEDIA_PATH, flag_value

MULTIMODAL_ARCHITECTURES_TXT = Path(__file__).parent / "vllm-multimodal-architectures.txt"
ENABLE_LOG_REQUESTS = "--enable-log-requests"
ALLOWED_MEDIA_DOMAINS = "--allowed-media-domains"


@functools.cache
def multimodal_architectures() -> frozenset[str]:
    lines = MULTIMODAL_ARCHITECTURES_TXT.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _names(args: Sequence[str]) -> list[str]:
    return ["--" + a[2:].split("=", 1)[0].replace("_", "-") for a in args if a.startswith("--")]


def _switch_on(args: Sequence[str], flag: str) -> bool:
    """The last of `flag` / its negation (`--disable-...` or `--no-...`) wins."""
    on = False
    negations = {"--disable-" + flag.removeprefix("--enable-"), "--no-" + flag[2:]}
    for name in _names(args):
        if name == flag:
            on = True
        elif name in negations:
            on = False
    return on


def risky_flag_warnings(args: Sequence[str], architecture: str) -> list[str]:
    """One warning per risky choice in `args` (vllmExtraArgs) for a model of `architecture`."""
    where = f"{NAMESPACE}:vllmExtraArgs"
    warnings = []
    if _switch_on(args, ENABLE_LOG_REQUESTS):
        cut = flag_value(args, "--max-log-len")
        warnings.append(
            f"{where} has {ENABLE_LOG_REQUESTS}: vLLM 0.33 logs every request's prompt and token "
            f"ids ({'up to ' + cut + ' characters' if cut else 'in full: --max-log-len is unset'}) "
            "into the container's log on the host (docker logs, the journal), where anyone with "
            f"SSH or log access reads users' prompts. Remove {ENABLE_LOG_REQUESTS} unless that is "
            "intended (vLLM's default is off)"
        )
    media = flag_value(args, ALLOWED_LOCAL_MEDIA_PATH)
    if media:
        warnings.append(
            f"{where} has {ALLOWED_LOCAL_MEDIA_PATH} {media!r}: every API request may read any "
            "file under that directory of the container (file:// media URLs; vLLM's docs call it "
            "\"a security risk\", vllm/config/model.py). Only the model directory is mounted in "
            f"the container; remove {ALLOWED_LOCAL_MEDIA_PATH} and send media as data: URLs"
        )
    if architecture in multimodal_architectures() and ALLOWED_MEDIA_DOMAINS not in _names(args):
        warnings.append(
            f"{architecture} takes media inputs and {where} has no {ALLOWED_MEDIA_DOMAINS}: the "
            "server downloads any http(s) image/video/audio URL a client sends, from the host's "
            "network (loopback services, the VPC). Add the domains clients may use, e.g. "
            f"\"{ALLOWED_MEDIA_DOMAINS}\", \"upload.wikimedia.org\", or send media as data: URLs"
        )
    return warnings
