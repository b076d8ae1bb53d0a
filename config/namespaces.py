"""Keys of the stack file under a namespace nothing reads. Pure.

Pulumi keeps whatever `namespace:key` a stack file holds and hands it to the program; a key under
a mistyped namespace (`vllm_deploy:maxModelLen`, `vllmdeploy:model`, `vllm-deploy-:x`) is read
by no one, so the default silently stands in for the value the user meant. `judge()` sorts the
stack's foreign keys (every key not under `vllm-deploy:`):

* under a namespace this program or Pulumi reads (`KNOWN_NAMESPACES`): fine;
* under a namespace within a few edits of ours, or of a provider's, once case and separators
  (`-`, `_`, `.`, spaces) are set aside: a refusal naming the key, the key meant and the fix;
* under any other namespace: a warning (a stack file may carry values for policy packs or other
  tools; we cannot tell, so we say that nothing here reads them).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable

from config.constants import NAMESPACE, SECRET_KEYS

# The namespaces whose keys something reads: ours, Pulumi's own (`pulumi:tags`,
# `pulumi:disable-default-providers`...), and the providers the program uses (requirements.txt:
# pulumi-aws, -command, -docker, -random, -tls; each reads `<name>:*` as its default provider's
# settings, e.g. `aws:region`, `aws:profile`).
PROVIDER_NAMESPACES = ("aws", "command", "docker", "random", "tls")
KNOWN_NAMESPACES = (NAMESPACE, "pulumi", *PROVIDER_NAMESPACES)

# How many single-character edits (Levenshtein) a namespace may be from a known one, after
# case and separators are set aside, to count as a typo of it: two for ours ("vllmdeploy" has
# ten letters: `vlm-deploy`, `vllm-deplyo`), one for a provider's of five letters or more
# (`dokcer` is two: transposed letters are two edits), none for `aws`/`tls` (`aws` and `tls` are
# only two apart, so only `AWS`, `aws_` and the like are taken for them).
_OURS_EDITS = 2
_PROVIDER_EDITS = 1
_PROVIDER_MIN_LENGTH = 5


@dataclass(frozen=True)
class ForeignKeys:
    """`refused`: one problem per mistyped key (key, the key meant, the fix); `warnings`: keys
    under namespaces nothing here reads, one line each."""

    refused: list[str]
    warnings: list[str]


def _bare(namespace: str) -> str:
    return re.sub(r"[\s_.\-]+", "", namespace).lower()


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute: one edit each)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def meant_namespace(namespace: str) -> str | None:
    """The known namespace `namespace` is a typo of, or None (also for a known one itself)."""
    if namespace in KNOWN_NAMESPACES:
        return None
    bare = _bare(namespace)
    if _edits(bare, _bare(NAMESPACE)) <= _OURS_EDITS:
        return NAMESPACE
    for known in PROVIDER_NAMESPACES + ("pulumi",):
        allowed = _PROVIDER_EDITS if len(known) >= _PROVIDER_MIN_LENGTH else 0
        if _edits(bare, known) <= allowed:
            return known
    return None


def _meant_key(name: str, keys: Iterable[str]) -> str:
    """Our key `name` stands for: itself when known, else the closest known key (any case)."""
    known = list(keys) + list(SECRET_KEYS)
    if name in known:
        return name
    by_lower = {k.lower(): k for k in known}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else name


def judge(full_keys: Iterable[str], our_keys: Iterable[str]) -> ForeignKeys:
    """Sort the stack's keys of other namespaces (`namespace:name`; keys without a namespace and
    ours are skipped). `our_keys`: the project's keys (camelCase), to name the key meant."""
    our_keys = list(our_keys)
    refused, warnings = [], []
    for full in sorted(set(full_keys)):
        namespace, sep, name = full.partition(":")
        if not sep or namespace in KNOWN_NAMESPACES:
            continue
        meant = meant_namespace(namespace)
        if meant is None and name in our_keys:
            meant = NAMESPACE  # `vllm:maxModelLen`: one of our keys under a namespace nobody reads
        if meant is None:
            warnings.append(
                f"{full}: nothing in this program reads the namespace {namespace!r} (it reads "
                f"{', '.join(k + ':' for k in KNOWN_NAMESPACES)}); if it was meant for this stack, "
                f"rename it, e.g. to {NAMESPACE}:{name}; otherwise remove it: pulumi config rm '{full}'"
            )
            continue
        intended = f"{meant}:{_meant_key(name, our_keys) if meant == NAMESPACE else name}"
        unknown = meant == NAMESPACE and _meant_key(name, our_keys) not in our_keys + list(SECRET_KEYS)
        also = f" ({name!r} is not one of its keys either: see README's config reference)" if unknown else ""
        refused.append(
            f"{full} is under the namespace {namespace!r}, which nothing reads, so its value would be "
            f"ignored and the default used; you likely meant {intended}{also}. Fix: rename the key to "
            f"{intended} in Pulumi.<stack>.yaml (the value, encrypted or not, stays as it is), or "
            f"pulumi config rm '{full}' and set it again with pulumi config set {intended} <value>"
        )
    return ForeignKeys(refused, warnings)
