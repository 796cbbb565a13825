"""Channel slots: one per index of every dimension of every tensor in the graph.

A *space* is one dimension of one tensor (``DimRef``); it owns a contiguous range of integer slot
ids. Rules relate slots of different spaces; the analysis unions related slots, so that each
connected set of slots is one channel that can be removed everywhere at once.

Tensor keys: a node's output is ``node.name`` (``"conv1"``), element ``i`` of a tuple output is
``"attn#0"``, a parameter or buffer is ``"param:layer1.0.conv1.weight"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch.fx

from .tracing import tensor_shapes


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
    return "param:" + qualified_name


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


@dataclass
class SlotTable:
    """Where each space's slots live: ``offset[ref]`` .. ``offset[ref] + size[ref]``."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    offset: dict[DimRef, int] = field(default_factory=dict)
    size: dict[DimRef, int] = field(default_factory=dict)
    param_keys: set[str] = field(default_factory=set)  # parameters and buffers: where channels live
    buffer_keys: set[str] = field(default_factory=set)
    total: int = 0

    def add(self, key: str, shape, is_param: bool = False, is_buffer: bool = False) -> None:
        if key in self.shapes:
            return
        self.shapes[key] = tuple(int(s) for s in shape)
        if is_param or is_buffer:
            self.param_keys.add(key)
        if is_buffer:
            self.buffer_keys.add(key)
        for dim, size in enumerate(self.shapes[key]):
            ref = DimRef(key, dim)
            self.offset[ref] = self.total
            self.size[ref] = size
            self.total += size

    def slots(self, ref: DimRef, index=None) -> np.ndarray:
        """Slot ids of ``ref`` (all of them, or those at ``index``)."""
        start = self.offset[ref]
        if index is None:
            return np.arange(start, start + self.size[ref], dtype=np.int64)
        return start + np.asarray(index, dtype=np.int64)

    def spaces(self) -> list[DimRef]:
        return list(self.offset)

    @classmethod
    def from_graph(cls, gm: torch.fx.GraphModule) -> "SlotTable":
        table = cls()
        params = dict(gm.named_parameters(remove_duplicate=False))
        buffers = dict(gm.named_buffers(remove_duplicate=False))
        for name in dict.fromkeys(canonical_names(gm).values()):
            if name in params:
                table.add(param_key(name), params[name].shape, is_param=True)
            else:
                table.add(param_key(name), buffers[name].shape, is_buffer=True)
        for node in gm.graph.nodes:
            if node.op == "output":
                continue
            for path, shape in tensor_shapes(node).items():
                table.add(output_key(node, path), shape)
        return table

