"""The package layout ARCHITECTURE.md describes: data flows config -> sizing -> serving, then to
stack (reads Pulumi's config, runs the checks: preflight) and components (the resources), which
know nothing of each other; __main__.py joins them; plan (the offline plan tool) runs the whole
program. Nothing imports upward, with no exception, and only stack/, components/ and plan/ (and
__main__.py) know Pulumi."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import from this project (besides itself).
ALLOWED = {
    "config": set(),
    "sizing": {"config"},
    "serving": {"config", "sizing"},
    "stack": {"config", "sizing", "serving"},
    "components": {"config", "sizing", "serving"},
    "plan": {"config", "sizing", "serving", "stack", "components"},
}
OURS = {"config", "sizing", "serving", "stack", "components", "plan", "tests"}


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (module level or inside a function), not those under
    `if TYPE_CHECKING:`, which only a type checker reads."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


_DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def _literal_dynamic_imports(tree: ast.AST) -> set[str]:
    """Modules imported by name at run time with a literal: `importlib.import_module("a.b")`,
    `import_module("a.b")`, `__import__("a.b")` (a computed name cannot be read here)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0]
        if name in _DYNAMIC_IMPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.add(first.value)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports when it runs: `from a.b import c` is a.b.c when c is a
    module, else a.b; relative imports resolved."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    targets: set[str] = set(_literal_dynamic_imports(tree))
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            targets.add(sub if sub in modules else base)
    return {t for t in targets if t in modules and t != here}


def import_cycle(paths: list[Path]) -> list[str]:
    """One cycle in the run-time import graph of `paths`, as [a, b, ..., a]; [] when none."""
    modules = {_module_name(p): p for p in paths}
    graph = {name: sorted(_module_imports(path, set(modules))) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    trail: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        trail.append(name)
        for target in graph[name]:
            if state.get(target) == 1:
                return trail[trail.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        trail.pop()
        state[name] = 2
        return []

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return []


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = {name.split(".")[0] for name in _literal_dynamic_imports(tree)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_upward(package):
    for path in _modules(package):
        ours = _imports(path) & OURS
        allowed = ALLOWED[package] | {package}
        assert ours <= allowed, f"{path.relative_to(ROOT)} imports {sorted(ours - allowed)}"


def test_the_main_program_imports_only_the_top_floors():
    ours = _imports(ROOT / "__main__.py") & OURS
    assert ours <= {"stack", "components"}, f"__main__.py imports {sorted(ours)}"


def test_the_pure_packages_do_not_import_pulumi():
    for package in ("config", "sizing", "serving"):
        for path in _modules(package):
            pulumi_imports = {n for n in _imports(path) if n == "pulumi" or n.startswith("pulumi_")}
            assert not pulumi_imports, f"{path.relative_to(ROOT)} imports {sorted(pulumi_imports)}"


def test_no_module_imports_itself_through_others():
    """No import cycle anywhere in the program (type-only imports aside): each module can be
    read, and moved, knowing only what is below it."""
    paths = [p for package in ALLOWED for p in _modules(package)]
    cycle = import_cycle(paths)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other, one of them lazily."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import a\n")
    (tmp_path / "pkg" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    paths = sorted((tmp_path / "pkg").glob("*.py"))
    assert import_cycle(paths) == ["pkg.a", "pkg.b", "pkg.a"]
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    pass\n")
    assert import_cycle(paths) == []  # and a type-only import (c) is no cycle


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_module_stays_small(package):
    """One concern per module (ARCHITECTURE.md): under 400 lines, or it is split."""
    for path in _modules(package):
        lines = len(path.read_text().splitlines())
        assert lines < 400, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"


def test_imports_by_literal_name_count_like_import_statements(tmp_path, monkeypatch):
    """`importlib.import_module("...")` with a literal is an import: the floor rule and the cycle
    check see it (a lazy upward import written that way once slipped past both)."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("import importlib\ndef f():\n    return importlib.import_module('pkg.a')\n")
    (tmp_path / "pkg" / "c.py").write_text("def g():\n    return __import__('components.fleet')\n")
    paths = sorted((tmp_path / "pkg").glob("*.py"))
    assert import_cycle(paths) == ["pkg.a", "pkg.b", "pkg.a"]
    assert "components" in _imports(tmp_path / "pkg" / "c.py")
