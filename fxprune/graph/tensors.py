"""Names for the tensors of a graph and their dimensions: the keys every later stage speaks in.

A node's output is ``node.name`` (``"conv1"``), element ``i`` of a tuple output is ``"attn#0"``, a
parameter or buffer is ``"param:layer1.0.conv1.weight"`` (made by ``param_key``, read back by
``param_name``: no other code adds or strips the prefix). ``DimRef`` is one dimension of one of them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.fx

_PARAM_PREFIX = "param:"


class DimRef(NamedTuple):
    """One dimension (``dim``, never negative) of one tensor (``key``).

    A named tuple: the analysis hashes and compares hundreds of thousands of these, and a tuple's
    hash and equality run in C.
    """

    key: str
    dim: int

    def __str__(self) -> str:
        return f"{self.key}[dim {self.dim}]"


def output_key(node: torch.fx.Node, path: tuple = ()) -> str:
    return node.name if not path else node.name + "#" + ".".join(str(p) for p in path)


def param_key(qualified_name: str) -> str:
    """The tensor key of the parameter or buffer ``qualified_name`` (``"layer1.0.conv1.weight"``)."""
    return _PARAM_PREFIX + qualified_name


def is_param_key(key: str) -> bool:
    return key.startswith(_PARAM_PREFIX)


def param_name(key: str) -> str:
    """The qualified parameter name of a key made by ``param_key``."""
    if not is_param_key(key):
        raise ValueError(f"{key!r} is not a parameter key")
    return key[len(_PARAM_PREFIX):]


def canonical_names(gm: torch.nn.Module) -> dict[str, str]:
    """Map every name under which a parameter or buffer is reachable to one canonical name."""
    first_name: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if tensor is None:
            continue
        aliases[name] = first_name.setdefault(id(tensor), name)
    return aliases
