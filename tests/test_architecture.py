"""The house keeps its layers (docs/architecture.md): no import circles, no upward imports.

The product's contracts live in pyproject.toml ([tool.importlinter]) and are checked with
import-linter, which reads every import statement of every module (module level, inside
functions, under TYPE_CHECKING). bench/ and scripts/ are loose scripts that import each other
by file name; their circles are found here with ``ast``.
"""

from __future__ import annotations

import ast
import graphlib
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_MODULE_LINES = 600


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def importlinter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def product_modules() -> list[Path]:
    packages = importlinter_config()["root_packages"]
    return [
        path
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_product_package_is_under_the_contracts():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = {pattern.rstrip("*") for pattern in include}
    config = importlinter_config()
    assert set(config["root_packages"]) == installed
    layered = {
        module.strip().split(".")[0]
        for contract in config["contracts"]
        if contract["type"] == "layers"
        for layer in contract["layers"]
        for module in layer.replace("|", ":").split(":")
    }
    assert layered == installed
    acyclic = next(c for c in config["contracts"] if c["type"] == "acyclic_siblings")
    assert set(acyclic["ancestors"]) == installed


def test_the_check_counts_imports_inside_functions(tmp_path: Path):
    """A lazy import upward (the kind that hid circles before) breaks the contracts."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in importlinter_config()["root_packages"]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name in ("urls", "api_urls", "routing", "asgi", "wsgi", "settings", "celery", "env"):
        (tmp_path / "config" / f"{name}.py").write_text("")
    for name in ("process", "broker"):
        (tmp_path / "config" / f"{name}.py").write_text("")
    for name in ("models", "services", "api", "views", "tasks"):
        (tmp_path / "fleet" / f"{name}.py").write_text("")
    (tmp_path / "fleet" / "agent").mkdir()
    (tmp_path / "fleet" / "agent" / "__init__.py").write_text("")
    (tmp_path / "core" / "history.py").write_text(
        textwrap.dedent(
            """
            def record():
                from fleet import services  # upward, hidden in a function

                return services
            """
        )
    )
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "core is not allowed to import fleet" in result.stdout
    assert "core.history -> fleet.services" in result.stdout


def test_no_product_module_is_longer_than_600_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in product_modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules by idea (docs/architecture.md): {long}"


def script_imports(folder: Path) -> dict[str, set[str]]:
    """Each script of ``folder`` → the scripts of the same folder it imports."""
    names = {path.stem for path in folder.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == folder.name and len(parts) > 1:
                    parts = parts[1:]
                if parts[0] in names and parts[0] != path.stem:
                    imported.add(parts[0])
        graph[path.stem] = imported
    return graph


@pytest.mark.parametrize("folder", ["bench", "scripts"])
def test_scripts_have_no_import_circles(folder: str):
    graph = script_imports(ROOT / folder)
    assert graph, f"no scripts found in {folder}/"
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"{folder}/ has an import circle: {' -> '.join(error.args[1])}")


def test_the_script_check_sees_a_circle(tmp_path: Path):
    (tmp_path / "one.py").write_text("def f():\n    from two import g\n")
    (tmp_path / "two.py").write_text("import one\n")
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(script_imports(tmp_path)).static_order())
