"""Channel slots: one per index of every dimension of every tensor in the graph.

A *space* is one dimension of one tensor (``DimRef``); it owns a contiguous range of integer slot
ids. Rules relate slots of different spaces; the analysis unions related slots, so that each
connected set of slots is one channel that can be removed everywhere at once.

Tensor keys and ``DimRef`` come from ``graph.tensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.fx

from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, canonical_names, output_key, param_key


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

