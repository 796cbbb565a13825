"""The README's examples run: every ```python block of README.md is executed, with small stand-ins.

Each block runs in a fresh namespace that holds the names the README leaves to the reader
(``model``, ``x``, ``loader``) and the imports of its first example; the first example builds its
own model and inputs, so two pieces of its text are replaced. A block that cannot run here goes in
``SKIPPED`` with the reason.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
import torchvision

import fxprune

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

# Text replaced before a block runs: resnet50 at 224x224 becomes resnet18 at 64x64.
SOURCE_STANDINS = {"torchvision.models.resnet50()": "torchvision.models.resnet18()", "224, 224": "64, 64"}
# Blocks that need files or data this test cannot make: block name -> why (none at present).
SKIPPED: dict[str, str] = {}


def _unregister_soft_threshold(names: dict) -> None:
    if "soft_threshold" in names:
        fxprune.rules.unregister(names["soft_threshold"])


# What a block leaves behind that would change later tests.
CLEANUP = {"teaching-fxprune-an-op": _unregister_soft_threshold}


def _blocks() -> dict[str, str]:
    """Each ```python block, named after the heading above it (``-2``, ``-3`` for a heading's later ones)."""
    blocks: dict[str, str] = {}
    heading, count, code = "", 0, None
    for line in README.read_text().splitlines(keepends=True):
        if code is None and line.startswith("#"):
            heading, count = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").strip().lower()).strip("-"), 0
        elif code is None and line.strip() == "```python":
            code, count = "", count + 1
        elif code is not None and line.strip() == "```":
            blocks[heading if count == 1 else f"{heading}-{count}"], code = code, None
        elif code is not None:
            code += line
    return blocks


def _standins() -> dict[str, object]:
    """The names the examples use without defining them: a 10-class resnet18, 32x32 inputs, two batches."""
    generator = torch.Generator().manual_seed(0)
    loader = [(torch.randn(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator))
              for _ in range(2)]
    return {"model": torchvision.models.resnet18(num_classes=10), "x": torch.randn(2, 3, 32, 32, generator=generator),
            "loader": loader, "torch": torch, "torchvision": torchvision, "fxprune": fxprune}


BLOCKS = _blocks()


def test_the_readme_has_its_examples_and_the_lists_name_real_blocks():
    assert len(BLOCKS) >= 5
    assert set(SKIPPED) | set(CLEANUP) <= set(BLOCKS)


@pytest.mark.parametrize("name", BLOCKS)
def test_readme_example_runs(name):
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    code = BLOCKS[name]
    for old, new in SOURCE_STANDINS.items():
        code = code.replace(old, new)
    names = _standins()
    try:
        exec(compile(code, f"README.md ({name})", "exec"), names)
    finally:
        if name in CLEANUP:
            CLEANUP[name](names)
