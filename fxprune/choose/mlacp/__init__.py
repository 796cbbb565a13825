"""Layer-wise pruning methods that choose channels *and* refine the weights that stay.

``MLACP`` is the seed paper's method; the named variants are its loss ablations (the paper's
Table 2): ``mlacp-r`` reconstruction only, ``mlacp-rg`` with the Gram losses (``mlacp``, the
default), ``mlacp-rc`` with the classification loss, ``mlacp-rgc`` all three.
"""

from __future__ import annotations

from .losses import TERMS
from .pruner import MLACP, GroupRecord

LAYERWISE = {
    "mlacp": lambda: MLACP(),
    "mlacp-r": lambda: MLACP(terms=("reconstruction",)),
    "mlacp-rg": lambda: MLACP(terms=("reconstruction", "gram")),
    "mlacp-rc": lambda: MLACP(terms=("reconstruction", "classification")),
    "mlacp-rgc": lambda: MLACP(terms=TERMS),
}

__all__ = ["LAYERWISE", "MLACP", "TERMS", "GroupRecord"]
