"""From slot components to channel groups: which channels can go, and which are ranked together.

Two channels belong to one group when they touch the same spaces with the same number of slots
each (the signature). The signature is hashed with one random 64-bit number per space, so
grouping is a few numpy passes however many channels a model has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph.tensors import DimRef
from .slots import SlotTable


@dataclass
class Member:
    """Where a group's channels sit in one space: ``index[c]`` are channel ``c``'s slots in ``ref``."""

    ref: DimRef
    index: np.ndarray  # shape (channels, slots per channel)


@dataclass
class ChannelGroup:
    """Channels that can be removed, coupled the same way; the unit a criterion ranks."""

    id: int
    channels: np.ndarray  # component ids, one per channel
    members: list[Member]

    @property
    def size(self) -> int:
        return len(self.channels)

    def params(self, table: SlotTable, include_buffers: bool = False) -> list[Member]:
        keep = table.param_keys if include_buffers else table.param_keys - table.buffer_keys
        return [m for m in self.members if m.ref.key in keep]


@dataclass
class FrozenGroup:
    """Channels that hold weights but must stay, with the reason a user can read."""

    reason: str
    size: int
    spaces: list[DimRef]


_SEED = 20191227


def _space_of_slot(table: SlotTable) -> tuple[np.ndarray, list]:
    spaces = table.spaces()
    sizes = np.array([table.size[s] for s in spaces], dtype=np.int64)
    return np.repeat(np.arange(len(spaces)), sizes), spaces


def _signatures(classes: np.ndarray, space: np.ndarray, n_spaces: int, n_classes: int) -> np.ndarray:
    """A 64-bit hash per class of the multiset of spaces its slots lie in."""
    weights = np.random.default_rng(_SEED).integers(1, 2**63, size=n_spaces, dtype=np.uint64)
    signature = np.zeros(n_classes, dtype=np.uint64)
    np.add.at(signature, classes, weights[space])
    return signature


def _class_flags(table, labels, collector):
    n = labels.max() + 1 if len(labels) else 0
    frozen_reason = np.full(n, -1, dtype=np.int64)
    if collector.frozen_slots:
        slots = np.concatenate(collector.frozen_slots)
        reasons = np.concatenate(collector.frozen_reason)
        order = np.argsort(-reasons, kind="stable")  # the earliest reason is written last and wins
        frozen_reason[labels[slots[order]]] = reasons[order]
    has_weight = np.zeros(n, dtype=bool)
    for key in table.param_keys:
        for dim in range(len(table.shapes[key])):
            has_weight[labels[table.slots(DimRef(key, dim))]] = True
    return frozen_reason, has_weight


def _members(slots, classes, space, spaces, offsets, group_of_class, group_sizes) -> dict[int, list[Member]]:
    """Each group's members, with channel order = ascending class id in every member."""
    if len(slots) == 0:
        return {}
    group = group_of_class[classes]
    local = slots - offsets[space]
    # slots ascend, so (space, local) is already in order: one stable sort by (group, space, class)
    order = np.argsort((group * len(spaces) + space) * (classes.max() + 1) + classes, kind="stable")
    space, group, local = space[order], group[order], local[order]
    cut = np.flatnonzero((np.diff(group) != 0) | (np.diff(space) != 0)) + 1
    members: dict[int, list[Member]] = {}
    for start, stop in zip(np.r_[0, cut].tolist(), np.r_[cut, len(slots)].tolist()):
        gid = int(group[start])
        index = local[start:stop].reshape(group_sizes[gid], -1)
        members.setdefault(gid, []).append(Member(spaces[space[start]], index))
    return members


def build_groups(table: SlotTable, labels: np.ndarray, collector) -> tuple[list[ChannelGroup], list[FrozenGroup]]:
    space_of_slot, spaces = _space_of_slot(table)
    offsets = np.array([table.offset[s] for s in spaces], dtype=np.int64)
    n_classes = labels.max() + 1 if len(labels) else 0
    frozen_reason, has_weight = _class_flags(table, labels, collector)
    signature = _signatures(labels, space_of_slot, len(spaces), n_classes)

    prunable = has_weight & (frozen_reason < 0)
    groups = _prunable_groups(prunable, signature, labels, space_of_slot, spaces, offsets)
    # frozen channels worth reporting: weights that meet activations (kernel dims never do)
    in_activations = np.zeros(n_classes, dtype=bool)
    activation_slots = ~np.isin(space_of_slot, [i for i, s in enumerate(spaces) if s.key in table.param_keys])
    in_activations[labels[activation_slots]] = True
    frozen = _frozen_groups(has_weight & in_activations & (frozen_reason >= 0), signature, frozen_reason, labels,
                            space_of_slot, spaces, table, collector.reasons)
    return groups, frozen


def _prunable_groups(prunable, signature, labels, space_of_slot, spaces, offsets) -> list[ChannelGroup]:
    class_ids = np.flatnonzero(prunable)
    if not len(class_ids):  # nothing prunable: no groups (np.split would still yield one empty piece)
        return []
    _, group_of = np.unique(signature[class_ids], return_inverse=True)
    group_of_class = np.full(len(prunable), -1, dtype=np.int64)
    group_of_class[class_ids] = group_of
    slots = np.flatnonzero(prunable[labels])
    sizes = np.bincount(group_of).tolist()
    members = _members(slots, labels[slots], space_of_slot[slots], spaces, offsets, group_of_class, sizes)
    by_group = np.split(class_ids[np.argsort(group_of, kind="stable")], np.cumsum(sizes)[:-1])
    return [ChannelGroup(gid, channels, members[gid]) for gid, channels in enumerate(by_group)]


def _frozen_groups(frozen, signature, frozen_reason, labels, space_of_slot, spaces, table, reasons):
    class_ids = np.flatnonzero(frozen)
    _, first, counts = np.unique(signature[class_ids], return_index=True, return_counts=True)
    representative = np.zeros(len(frozen), dtype=bool)
    representative[class_ids[first]] = True
    slots = np.flatnonzero(representative[labels])
    pairs = np.unique(np.stack([labels[slots], space_of_slot[slots]]), axis=1)
    spaces_of: dict[int, list] = {}
    for cls, space in pairs.T:
        if spaces[space].key in table.param_keys:
            spaces_of.setdefault(int(cls), []).append(spaces[space])
    return [FrozenGroup(reasons[frozen_reason[class_ids[i]]], int(count), spaces_of.get(int(class_ids[i]), []))
            for i, count in zip(first, counts)]
