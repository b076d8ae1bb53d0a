#!/usr/bin/env python3
"""Writes serving/vllm-facts.json: what `vllm serve` accepts beyond the flag list, read from a
vLLM source tree with `ast` (no torch, no import of vLLM).

Usage: python tools/dump_vllm_facts.py <dir holding the vllm/ package> [--check]

Get the tree of the pinned release without installing it:
    pip download --no-deps vllm==0.33.0 -d /tmp/vllm-whl
    python -c "import zipfile; zipfile.ZipFile('/tmp/vllm-whl/vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl').extractall('/tmp/vllm-src')"

What it reads (paths inside the vLLM 0.33.0 wheel):
* tool_parsers: the keys of `_TOOL_PARSERS_TO_REGISTER` in vllm/tool_parsers/__init__.py, which
  `ToolParserManager.list_registered()` returns (validate_api_server_args checks against it);
* reasoning_parsers: the keys of `_REASONING_PARSERS_TO_REGISTER` in vllm/reasoning/__init__.py;
* builtin_chat_templates: the files in vllm/transformers_utils/chat_templates/, which
  `validate_chat_template` (vllm/renderers/chat_utils/chat_template.py) resolves by bare name;
* reasoning_efforts: `ReasoningEffort` in vllm/renderers/params.py (validate_reasoning_effort_map);
* speculative_mtp_methods: `MTPModelTypes` in vllm/config/speculative.py, the methods whose draft
  layers come with the target model (SpeculativeConfig.__post_init__ needs no draft "model");
* config_objects: for every flag whose argparse type is `parse_dataclass`
  (vllm/engine/arg_utils.py `_compute_kwargs`), the @config dataclass behind it, its field
  names (the pydantic config forbids other keys: vllm/config/utils.py `config`, extra="forbid")
  and, for fields typed as a Literal, the allowed values.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS_FILE = ROOT / "serving" / "vllm-serve-flags.txt"
OUT = ROOT / "serving" / "vllm-facts.json"


def _module(src: Path, relative: str) -> ast.Module:
    return ast.parse((src / relative).read_text(encoding="utf-8"))


def _dict_keys(tree: ast.Module, name: str) -> list[str]:
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            return sorted(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    raise SystemExit(f"{name} not found")


def _literal_values(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        values = [item.value for item in items if isinstance(item, ast.Constant)]
        return values if len(values) == len(items) else None
    return None


class _ConfigIndex:
    """Every module-level Literal alias and @config dataclass under vllm/config/ and beyond."""

    def __init__(self, src: Path):
        self.aliases: dict[str, list] = {}
        self.classes: dict[str, tuple[str, ast.ClassDef]] = {}
        for path in sorted((src / "vllm").rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError):
                continue
            relative = str(path.relative_to(src))
            for node in tree.body:
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                    values = _literal_values(node.value) if node.value is not None else None
                    if isinstance(target, ast.Name) and values is not None:
                        self.aliases.setdefault(target.id, values)
                if isinstance(node, ast.ClassDef) and any(
                    _decorator_name(d) in ("config", "dataclass") for d in node.decorator_list
                ):
                    self.classes.setdefault(node.name, (relative, node))

    def choices(self, annotation: ast.AST) -> list | None:
        """Allowed values when the annotation is a Literal (possibly an alias, | None)."""
        values = _literal_values(annotation)
        if values is not None:
            return values
        if isinstance(annotation, ast.Name) and annotation.id in self.aliases:
            return self.aliases[annotation.id]
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            left, right = self.choices(annotation.left), self.choices(annotation.right)
            others = [side for side in (annotation.left, annotation.right) if not _is_none(side)]
            if len(others) == 1:
                return self.choices(others[0])
            if left is not None and right is not None:
                return left + right
        return None

    def dataclass_for_field(self, field: str) -> tuple[str, str] | None:
        """(class name, file) of the @config dataclass a config field named `field` holds."""
        for relative, node in self.classes.values():
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and getattr(item.target, "id", None) == field:
                    for name in _names(item.annotation):
                        if name in self.classes:
                            return name, self.classes[name][0]
        return None

    def fields(self, class_name: str) -> dict[str, list | None]:
        relative, node = self.classes[class_name]
        found: dict[str, list | None] = {}
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in self.classes:
                found.update(self.fields(base.id))
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                if "ClassVar" in ast.unparse(item.annotation) or item.target.id.startswith("_"):
                    continue
                found[item.target.id] = self.choices(item.annotation)
        return found


def _decorator_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    return getattr(node, "id", getattr(node, "attr", ""))


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _parse_dataclass_flags() -> list[str]:
    flags = []
    for line in FLAGS_FILE.read_text(encoding="utf-8").splitlines():
        cells = line.split("\t")
        if line.startswith("--") and len(cells) > 1 and "parse_dataclass" in cells[1]:
            flags.append(cells[0])
    return flags


def facts(src: Path) -> dict:
    index = _ConfigIndex(src)
    objects = {}
    for flag in _parse_dataclass_flags():
        found = index.dataclass_for_field(flag[2:].replace("-", "_"))
        if found is None:
            continue
        class_name, relative = found
        objects[flag] = {
            "class": class_name,
            "source": relative,
            "fields": index.fields(class_name),
        }
    templates = sorted(
        p.name for p in (src / "vllm/transformers_utils/chat_templates").glob("*.jinja")
    )
    efforts = index.aliases.get("ReasoningEffort")
    return {
        "_about": (
            "Generated by tools/dump_vllm_facts.py from the vLLM 0.33.0 wheel "
            "(vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl); see that file's docstring "
            "for where each fact is read."
        ),
        "tool_parsers": _dict_keys(
            _module(src, "vllm/tool_parsers/__init__.py"), "_TOOL_PARSERS_TO_REGISTER"
        ),
        "reasoning_parsers": _dict_keys(
            _module(src, "vllm/reasoning/__init__.py"), "_REASONING_PARSERS_TO_REGISTER"
        ),
        "builtin_chat_templates": templates,
        "reasoning_efforts": efforts,
        "speculative_mtp_methods": index.aliases.get("MTPModelTypes"),
        "config_objects": objects,
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    text = json.dumps(facts(Path(argv[0])), indent=1, sort_keys=True) + "\n"
    if "--check" in argv:
        same = OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs from the source tree")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
