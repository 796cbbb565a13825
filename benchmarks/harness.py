"""What the benchmarks share: the results folder, markdown tables, and writing result files.

    markdown_table(["model", "speedup"], [["resnet18", "1.9×"], {"model": "vgg16", "speedup": "2.1×"}])

A row is a list of cells or a dict keyed by column (a missing key is an empty cell); every cell is
written with ``str``. ``markdown_header`` and ``markdown_row`` are the same lines one at a time, for
a benchmark that prints each row as it is measured.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TESTS = Path(__file__).parent.parent / "tests"


def use_test_support() -> None:
    """Make the tests' support modules importable (``zoo``, ``helpers``, ``fuzz_models``; never a ``test_*.py``)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


def markdown_row(cells: Iterable) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_header(columns: Sequence[str]) -> str:
    """The column names and the separator below them: two lines."""
    return markdown_row(columns) + "\n" + "|" + "---|" * len(columns)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence | Mapping]) -> str:
    """A markdown table, without a trailing newline."""
    lines = [markdown_header(columns)]
    for row in rows:
        lines.append(markdown_row([row.get(c, "") for c in columns] if isinstance(row, Mapping) else row))
    return "\n".join(lines)


def write_result(name: str, text: str, folder: Path = RESULTS) -> Path:
    """Write ``text`` to ``folder / name`` (the folder is made if missing); return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def write_csv(name: str, fields: Sequence[str], rows: Iterable[Mapping], folder: Path = RESULTS) -> Path:
    """Dict rows as CSV with a header of ``fields`` (keys not among them are left out); return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
