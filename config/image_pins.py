"""Container images pinned by digest where a digest is verified (config/image-digests.json: the
digest and where it was seen, or why a tag stays tag-only). Pure.

`with_digest("prom/prometheus:v3.14.0")` -> "prom/prometheus:v3.14.0@sha256:..." (Docker pulls
`name:tag@digest` by the digest and refuses content that does not match it); a reference not
in the catalog, already carrying a digest, or recorded without one is returned as is.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

CATALOG = Path(__file__).resolve().parent / "image-digests.json"


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict]:
    return json.loads(CATALOG.read_text())["images"]


def digest_of(reference: str) -> Optional[str]:
    """The verified digest of a `name:tag` reference; None when none is recorded."""
    entry = catalog().get(reference)
    return entry.get("digest") if entry else None


def with_digest(reference: str) -> str:
    if "@sha256:" in reference:
        return reference
    digest = digest_of(reference)
    return f"{reference}@{digest}" if digest else reference


def tag_only(references: Iterable[str]) -> list[str]:
    """The references (as the program uses them) that carry no digest, each once, in order."""
    seen: list[str] = []
    for ref in references:
        if "@sha256:" not in ref and ref not in seen:
            seen.append(ref)
    return seen
