"""Imports flow one way down the pipeline: a stage imports only the stages below it.

    errors < graph < rules < analysis < choose < rewrite < recover, deploy < the front door

(the front door: ``compress``, ``pipeline``, ``submodule``, ``saving``, ``cli`` and the package itself).
Imports under ``if TYPE_CHECKING`` are annotations, not dependencies, and are not counted.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "fxprune"
ORDER = {"errors": 0, "graph": 1, "rules": 2, "analysis": 3, "choose": 4, "rewrite": 5, "recover": 6, "deploy": 6}
FRONT = 7


def _module(path: pathlib.Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _level(parts: list[str]) -> int:
    return ORDER.get(parts[1], FRONT) if len(parts) > 1 else FRONT


def _imports(path: pathlib.Path):
    """(line, imported module parts) of every relative import outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
               and getattr(stmt.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(stmt)}
    here = _module(path)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and id(node) not in skipped:
            base = package[:len(package) - node.level + 1]
            target = base + (node.module.split(".") if node.module else [])
            names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            for parts in names:
                yield node.lineno, parts


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_stage_imports_only_the_stages_below_it(path):
    here = _module(path)
    wrong = [f"line {line}: {'.'.join(parts)}" for line, parts in _imports(path)
             if _level(parts) > _level(here) or (_level(parts) == _level(here) == ORDER.get("deploy")
                                                 and parts[1] != here[1])]
    assert not wrong, f"{'.'.join(here)} imports from a later stage: {wrong}"


def test_nothing_imports_lazily_inside_a_function():
    """A lazy import hides a cycle; the only ones allowed keep optional or heavy libraries out of ``import fxprune``."""
    lazy = []
    for path in SOURCES:
        functions = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
        for node in (child for function in functions for child in ast.walk(function)):
            if isinstance(node, ast.ImportFrom) and node.level:
                lazy.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not lazy, f"relative imports inside functions: {lazy}"
