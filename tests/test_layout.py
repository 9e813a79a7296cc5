"""The package's layout rules that import-linter does not see: where imports stand, and docstrings."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "inceptorch"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imports_of_the_package_inside_functions(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                own = (isinstance(inner, ast.ImportFrom) and (inner.level > 0 or (inner.module or "").startswith(
                    "inceptorch"))) or (isinstance(inner, ast.Import) and any(
                        a.name.startswith("inceptorch") for a in inner.names))
                if own:
                    found.append(f"line {inner.lineno} in {node.name}()")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_package_is_imported_at_module_level_only(path):
    assert _imports_of_the_package_inside_functions(ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_owns(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring.splitlines()[0]) > 20


def test_the_checker_finds_an_import_inside_a_function():
    tree = ast.parse("def f():\n    from .engine import train\n    import json\n")
    assert _imports_of_the_package_inside_functions(tree) == ["line 2 in f()"]


def test_importing_the_package_and_its_cli_leaves_torchvision_unloaded():
    """torchvision (and the torch._dynamo it imports) costs seconds at start-up: it loads only when a
    command downloads a data set, reads CIFAR-10's batches, transforms images, names ImageNet classes,
    reports its weights' top-1 or benchmarks against its models."""
    probe = ("import sys, inceptorch, inceptorch.cli; "
             "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
