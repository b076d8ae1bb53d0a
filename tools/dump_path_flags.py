#!/usr/bin/env python3
"""Writes serving/vllm-path-flags.json: the `vllm serve` flags whose value is a file or directory
vLLM opens, read from a vLLM source tree with `ast` (no torch, no import of vLLM).

Usage: python tools/dump_path_flags.py <dir holding the vllm/ package> [--check]
(the tree: see tools/dump_vllm_facts.py; the conformance tier checks the file against
$VLLM_VENV's vLLM 0.33.0).

The rule, for every value-taking flag of serving/vllm-serve-flags.txt (the pinned parser's own
list): vLLM documents each flag by the attribute docstring of the config field behind it
(vllm/config/*.py for the engine groups, vllm/entrypoints/common/cli_args.py BaseFrontendArgs /
FrontendArgs for "Frontend"; vllm/engine/arg_utils.py turns those docstrings into --help). A flag
takes a path when that docstring names one ("path", "file", "directory", "folder") or its name
ends in -path, -dir, -file, -certs, -plugin. It takes a directory when the docstring says
directory/folder (or "name or path" of a Hugging Face config or tokenizer: a model directory),
else a file; vLLM writes to it ("written") when the docstring says it downloads or saves there. NOT_CONTAINER_PATHS lists the flags that match the rule and are not a path vLLM
opens, each with why.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS_FILE = ROOT / "serving" / "vllm-serve-flags.txt"
OUT = ROOT / "serving" / "vllm-path-flags.json"

_NAME_SUFFIX = re.compile(r"-(path|dir|file|certs|certfile|keyfile|plugin)$")
_PATH_WORDS = re.compile(r"\b(path|file|directory|directories|folder)\b", re.I)
_WRITTEN = re.compile(r"\b(download and load|saves?)\b", re.I)
_DIRECTORY = re.compile(r"\b(directory|directories|folder)\b|name or path of the hugging face", re.I)

# Matched by the rule, not a path vLLM opens (or not this check's business).
NOT_CONTAINER_PATHS = {
    "--model": "the model itself: this stack sets it to the mounted model directory",
    "--root-path": "a URL prefix for FastAPI (\"behind a path based routing proxy\"), not a file",
    "--uds": "a socket vLLM creates; the stack serves TCP (a fixed flag)",
    "--middleware": "a Python import path, not a file",
    "--scheduler-cls": "a Python class or import path, not a file",
    "--api-key": "a secret (the apiKey secret), not a file",
    "--quantization": "a method name",
    "--safetensors-load-strategy": "a strategy name",
    "--safetensors-prefetch-block-size": "a byte count",
    "--mm-encoder-attn-dtype": "a dtype",
    "--renderer-num-workers": "a thread count",
    "--io-processor-plugin": "a plugin name (\"IOProcessor plugin name to load\"), not a file",
    "--ssl-keyfile": "the proxy terminates TLS: a flag the stack fixes (serving.vllm_args)",
    "--ssl-certfile": "the proxy terminates TLS: a flag the stack fixes (serving.vllm_args)",
    "--ssl-ca-certs": "the proxy terminates TLS: a flag the stack fixes (serving.vllm_args)",
    "--lora-modules": "name=path pairs or JSON, one adapter each: the LoRA adapters' own check",
}

_CLASS_OF_GROUP = {"Frontend": ("FrontendArgs", "BaseFrontendArgs")}


def field_docs(src: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """{(class, field): (docstring, file)} for every class attribute followed by a docstring."""
    files = sorted((src / "vllm" / "config").rglob("*.py")) + [
        src / "vllm" / "entrypoints" / "common" / "cli_args.py"]
    docs: dict[tuple[str, str], tuple[str, str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for first, second in zip(node.body, node.body[1:]):
                if (isinstance(first, ast.AnnAssign) and isinstance(first.target, ast.Name)
                        and isinstance(second, ast.Expr) and isinstance(second.value, ast.Constant)
                        and isinstance(second.value.value, str)):
                    text = " ".join(second.value.value.split())
                    docs.setdefault((node.name, first.target.id), (text, str(path.relative_to(src))))
    return docs


def path_flags(src: Path) -> dict:
    docs = field_docs(src)
    found: dict[str, dict[str, str]] = {}
    for line in FLAGS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            continue
        flag, kind, group = (line.split("\t") + ["", ""])[:3]
        if kind.startswith(("bool flag", "flag", "negation of", "alias of")) or flag in NOT_CONTAINER_PATHS:
            continue
        field = flag[2:].replace("-", "_")
        classes = _CLASS_OF_GROUP.get(group, (group,))
        doc, where = next((docs[(c, field)] for c in classes if (c, field) in docs), ("", ""))
        if not (_PATH_WORDS.search(doc) or _NAME_SUFFIX.search(flag)):
            continue
        found[flag] = {
            "kind": "directory" if _DIRECTORY.search(doc) or flag.endswith("-dir") else "file",
            "written": bool(_WRITTEN.search(doc)),
            "doc": doc[:200],
            "source": f"{where} {field}" if where else "serving/vllm-serve-flags.txt (flag name)",
        }
    return {
        "_about": "Generated by tools/dump_path_flags.py from the vLLM 0.33.0 source; see its "
        "docstring for the rule.",
        "path_flags": found,
        "not_container_paths": NOT_CONTAINER_PATHS,
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    text = json.dumps(path_flags(Path(argv[0])), indent=1, sort_keys=True) + "\n"
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} differs from what {argv[0]} says; rerun without --check")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
