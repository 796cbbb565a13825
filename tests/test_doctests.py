"""The examples in fxprune's docstrings run (those marked ``+SKIP`` need a model or data they do not build)."""

import doctest
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "fxprune"
MODULES = sorted(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_the_view_groups_example_is_among_those_run():
    finder = doctest.DocTestFinder()
    module = importlib.import_module("fxprune.rules.reshape")
    examples = [e for test in finder.find(module) if test.name.endswith("view_groups") for e in test.examples]
    assert examples and not any(e.options.get(doctest.SKIP) for e in examples)
