"""A stand-in for huggingface_hub's HfApi: answers model_info / auth_check the way the Hub does,
raising huggingface_hub's own exceptions, and records every call. No network."""

from __future__ import annotations

from types import SimpleNamespace

import httpx2
from huggingface_hub.errors import GatedRepoError


def hub_error(kind, status: int, repo: str = "org/model"):
    request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo}")
    return kind(f"HTTP {status}", response=httpx2.Response(status, request=request))


class FakeHub:
    """model_info / auth_check as the Hub answers: `gated` per repo, tokens with access."""

    def __init__(self, gated=None, readers=(), info_error=None, check_error=None):
        self.gated, self.readers = gated, set(readers)
        self.info_error, self.check_error = info_error, check_error
        self.calls: list[tuple] = []

    def model_info(self, repo_id, *, revision=None, token=None, timeout=None):
        self.calls.append(("model_info", repo_id, revision, token))
        if self.info_error:
            raise self.info_error
        return SimpleNamespace(id=repo_id, gated=self.gated or False)

    def auth_check(self, repo_id, *, token=None):
        self.calls.append(("auth_check", repo_id, token))
        if self.check_error:
            raise self.check_error
        if token not in self.readers:
            raise hub_error(GatedRepoError, 403)


