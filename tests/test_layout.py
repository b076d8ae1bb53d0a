"""The package layout ARCHITECTURE.md describes: data flows config -> sizing -> serving ->
components -> plan (the offline plan tool, which runs the whole program), nothing imports
upward, and only config/stack.py, components/ and plan/ know Pulumi."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import from this project (besides itself).
ALLOWED = {
    "config": {"config"},  # config/stack.py is the one exception, checked below
    "sizing": {"config"},
    "serving": {"config", "sizing"},
    "components": {"config", "sizing", "serving"},
    "plan": {"config", "sizing", "serving", "components"},
}
OURS = {"config", "sizing", "serving", "components", "plan", "tests"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
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
        if path == ROOT / "config" / "stack.py":
            allowed = {"config", "sizing", "serving"}  # it runs sizing and builds the vLLM argv
        assert ours <= allowed, f"{path.relative_to(ROOT)} imports {sorted(ours - allowed)}"


def test_only_the_stack_module_and_components_import_pulumi():
    for package in ("config", "sizing", "serving"):
        for path in _modules(package):
            if path == ROOT / "config" / "stack.py":
                continue
            pulumi_imports = {n for n in _imports(path) if n == "pulumi" or n.startswith("pulumi_")}
            assert not pulumi_imports, f"{path.relative_to(ROOT)} imports {sorted(pulumi_imports)}"
