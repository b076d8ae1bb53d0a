"""The package layout ARCHITECTURE.md describes: data flows config -> sizing -> serving, then to
stack (reads Pulumi's config, runs the checks: preflight) and components (the resources), which
know nothing of each other; __main__.py joins them; plan (the offline plan tool) runs the whole
program. Nothing imports upward, with no exception, and only stack/, components/ and plan/ (and
__main__.py) know Pulumi."""

import ast
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
        assert ours <= allowed, f"{path.relative_to(ROOT)} imports {sorted(ours - allowed)}"


def test_the_main_program_imports_only_the_top_floors():
    ours = _imports(ROOT / "__main__.py") & OURS
    assert ours <= {"stack", "components"}, f"__main__.py imports {sorted(ours)}"


def test_the_pure_packages_do_not_import_pulumi():
    for package in ("config", "sizing", "serving"):
        for path in _modules(package):
            pulumi_imports = {n for n in _imports(path) if n == "pulumi" or n.startswith("pulumi_")}
            assert not pulumi_imports, f"{path.relative_to(ROOT)} imports {sorted(pulumi_imports)}"
