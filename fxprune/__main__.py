"""``python -m fxprune``: the ``fxprune`` command (no arguments: a demo on resnet18)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
