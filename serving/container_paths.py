"""Which paths the vLLM container can see, and which `vllm serve` flags name one.

The container runs offline (HF_HUB_OFFLINE=1) and sees only what is mounted into it plus the
image's own files. A flag whose value is a file or directory vLLM opens must therefore point
under one of the container's mounts, or vLLM stops at startup (FileNotFoundError, or "appears
path-like, but doesn't exist" for --chat-template: vllm/renderers/chat_utils/chat_template.py
validate_chat_template).

Which flags take a path is not a hand-written list: serving/vllm-path-flags.json is generated
by tools/dump_path_flags.py from the pinned vLLM's own field docstrings (the --help text), over
the flag catalog serving/vllm-serve-flags.txt; its docstring states the rule.

Public API (pure, Pulumi-free; for the LoRA adapters and draft models too):

* ``Mount(path, what, writable=False)``: a directory the container sees;
* ``model_mounts(model_path)``: the mounts of a vLLM container of this stack (the model
  directory, read-only, and the image's examples directory);
* ``check_container_path(flag, path, mounts, kind="file", written=False) -> str``: the path as
  vLLM resolves it inside the container, or ``ContainerPathError`` naming the flag, the path and
  the fix;
* ``path_flags()``: {flag: PathFlag} for every flag of the pinned vLLM that takes a path.
"""

from __future__ import annotations

import functools
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

PATH_FLAGS_FILE = Path(__file__).parent / "vllm-path-flags.json"

# The vllm/vllm-openai image: docker/Dockerfile's vllm-base stage sets WORKDIR /vllm-workspace
# and copies the repository's examples/ there (COPY examples examples); a relative path is
# resolved against the working directory, as vLLM's own docs write them
# (docs/features/tool_calling.md: "--chat-template examples/tool_chat_template_llama3.1_json.jinja",
# and for Apertus "/vllm-workspace/examples/tool_chat_template_apertus.jinja").
IMAGE_WORKDIR = "/vllm-workspace"
IMAGE_EXAMPLES_DIR = f"{IMAGE_WORKDIR}/examples"

Kind = Literal["file", "directory"]


class ContainerPathError(ValueError):
    """A flag names a path the vLLM container cannot see; the message names the flag, the path
    and the fix."""


@dataclass(frozen=True)
class Mount:
    """A directory the container sees: `path` (absolute, in the container), what it holds (for
    messages) and whether vLLM may write under it."""

    path: str
    what: str
    writable: bool = False

    def holds(self, path: str) -> bool:
        root = self.path.rstrip("/") or "/"
        return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class PathFlag:
    """A flag of the pinned vLLM whose value is a path: a file or a directory, read or written."""

    flag: str
    kind: Kind
    written: bool
    doc: str  # vLLM's own help text (its field docstring), shortened
    source: str  # where that docstring is, in the vLLM 0.33.0 tree


IMAGE_EXAMPLES = Mount(IMAGE_EXAMPLES_DIR, "vLLM's example files in the vllm/vllm-openai image")


def model_mounts(model_path: str) -> tuple[Mount, ...]:
    """The container's mounts in this stack: the model directory (read-only, components/
    vllm_server.py) and the image's examples (its chat templates for tool calling)."""
    return (Mount(model_path.rstrip("/") or "/", "the model directory, mounted read-only"), IMAGE_EXAMPLES)


def in_container(path: str, workdir: str = IMAGE_WORKDIR) -> str:
    """The absolute, normalised path vLLM opens for `path` (relative to the image's WORKDIR)."""
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(workdir, path))


def check_container_path(
    flag: str,
    path: str,
    mounts: Sequence[Mount],
    kind: Kind = "file",
    written: bool = False,
) -> str:
    """The path as vLLM resolves it in the container, when one of `mounts` holds it.

    A file may not be a mount's own directory; a path vLLM writes to (``written``) needs a
    writable mount. Raises ContainerPathError naming `flag`, `path` and the fix otherwise.
    """
    resolved = in_container(path)
    for mount in mounts:
        if not mount.holds(resolved):
            continue
        if kind == "file" and resolved == (mount.path.rstrip("/") or "/"):
            raise ContainerPathError(
                f"{flag} {path!r} is the directory {mount.path} ({mount.what}), not a file; "
                f"pass the file in it: {mount.path.rstrip('/')}/<name>"
            )
        if written and not mount.writable:
            raise ContainerPathError(
                f"{flag} {path!r}: vLLM writes this {kind}, and {mount.path} ({mount.what}) is "
                f"read-only in the container; drop {flag}"
            )
        return resolved
    seen = "; ".join(f"{m.path} ({m.what})" for m in mounts)
    if written:
        fix = f"drop {flag} (the container has nowhere to write it that outlives it)"
    else:
        fix = (
            f"put the {kind} in the model directory (a local model: model = an absolute path) and "
            f"pass {mounts[0].path.rstrip('/')}/<name>, or use a file the image ships under "
            f"{IMAGE_EXAMPLES_DIR}" if mounts else f"drop {flag}"
        )
    raise ContainerPathError(
        f"{flag} {path!r} is a {kind} the vLLM container cannot see"
        f"{f' (it resolves to {resolved})' if resolved != path else ''}: it runs offline and sees "
        f"only {seen}. {fix[0].upper()}{fix[1:]}"
    )


@functools.cache
def path_flags() -> dict[str, PathFlag]:
    """{flag: PathFlag} from serving/vllm-path-flags.json (tools/dump_path_flags.py)."""
    data = json.loads(PATH_FLAGS_FILE.read_text(encoding="utf-8"))
    return {
        flag: PathFlag(flag, entry["kind"], entry["written"], entry["doc"], entry["source"])
        for flag, entry in data["path_flags"].items()
    }
