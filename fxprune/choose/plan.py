"""A plan: for every group, which channels stay. Plain data that can be printed, saved and re-applied.

Each group is named by an *anchor*, one dimension of one parameter (``layer1.0.conv1.weight``,
dim 0), and its channels by their indices along it, so a plan reads like what it does and still
applies after the model is traced again. (One parameter dim may hold several groups: a channel
shuffle splits a layer's outputs into groups coupled differently downstream.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..analysis.analyze import Analysis
from ..analysis.grouping import ChannelGroup
from ..errors import InputError
from ..graph.tensors import DimRef, param_key, param_name


@dataclass
class GroupPlan:
    anchor: str  # parameter name
    dim: int
    indices: list[int]  # the group's channels, as indices along the anchor dim
    keep: list[int]  # those that stay

    @property
    def size(self) -> int:
        return len(self.indices)


@dataclass
class Plan:
    groups: list[GroupPlan] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"groups": [asdict(g) for g in self.groups], "info": self.info})

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """The plan ``to_json`` wrote; ``InputError`` naming the field that is missing or malformed."""
        data = _plan_fields(text)
        return cls([_group_plan(entry, i) for i, entry in enumerate(data["groups"])], data.get("info", {}))

    def __str__(self) -> str:
        lines = [f"plan: {len(self.groups)} groups, {self.removed_channels} channels removed {self.info or ''}"]
        lines += [f"  {g.anchor} dim {g.dim}: keep {len(g.keep)} of {g.size}" for g in self.groups]
        return "\n".join(lines)

    @property
    def removed_channels(self) -> int:
        return sum(len(g.indices) - len(g.keep) for g in self.groups)


_FIX = "pass the text Plan.to_json wrote"
_GROUP_FIELDS = {"anchor": str, "dim": int, "indices": list, "keep": list}
_KINDS = {str: "a string", int: "an integer", list: "a list of integers"}


def _plan_fields(text) -> dict:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as error:
        raise InputError(f"plan: not JSON text ({error}); {_FIX}") from None
    if not isinstance(data, dict) or "groups" not in data:
        raise InputError(f"plan: missing field 'groups' (a list of groups with {', '.join(_GROUP_FIELDS)}); {_FIX}")
    if not isinstance(data["groups"], list):
        raise InputError(f"plan: field 'groups' must be a list, got {type(data['groups']).__name__}; {_FIX}")
    if not isinstance(data.get("info", {}), dict):
        raise InputError(f"plan: field 'info' must be an object, got {type(data['info']).__name__}; {_FIX}")
    return data


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_field(entry: dict, i: int, name: str, kind: type) -> None:
    if name not in entry:
        raise InputError(f"plan: group {i} is missing field {name!r}; {_FIX}")
    value = entry[name]
    fits = all(map(_is_integer, value)) if kind is list and isinstance(value, list) else isinstance(value, kind)
    if not fits or isinstance(value, bool):
        raise InputError(f"plan: field {name!r} of group {i} must be {_KINDS[kind]}, got {value!r}; {_FIX}")


def _group_plan(entry, i: int) -> GroupPlan:
    """Group ``i`` of a plan read from JSON, each field checked."""
    if not isinstance(entry, dict):
        raise InputError(f"plan: group {i} must be an object with fields {', '.join(_GROUP_FIELDS)}; {_FIX}")
    for name, kind in _GROUP_FIELDS.items():
        _check_field(entry, i, name, kind)
    unknown = sorted(set(entry) - set(_GROUP_FIELDS))
    if unknown:
        raise InputError(f"plan: group {i} has unknown field {unknown[0]!r}; {_FIX}")
    if not set(entry["keep"]) <= set(entry["indices"]):
        raise InputError(f"plan: field 'keep' of group {i} names channels not in its 'indices'; {_FIX}")
    return GroupPlan(**entry)


def kept_count(size: int, ratio: float, round_to: int) -> int:
    """Channels a group of ``size`` keeps: ``ratio`` of them go, at least one stays; the count is
    rounded up to a multiple of ``round_to``, except in a group smaller than ``round_to``.

    >>> kept_count(64, 0.5, 1), kept_count(60, 0.5, 8), kept_count(3, 0.5, 8)
    (32, 32, 2)
    """
    keep = max(1, size - int(np.floor(ratio * size + 1e-9)))
    if round_to > 1 and size >= round_to:
        keep = min(size, int(np.ceil(keep / round_to)) * round_to)
    return keep


def anchor_member(group: ChannelGroup, analysis: Analysis):
    """The member a plan names a group by: its first parameter (a buffer when it holds no parameter)."""
    return (group.params(analysis.table) or group.params(analysis.table, include_buffers=True))[0]


def plan_from_scores(analysis: Analysis, scores: list[np.ndarray], keep_counts: list[int], info=None) -> Plan:
    """Keep each group's ``keep_counts[g]`` highest-scoring channels."""
    plan = Plan(info=dict(info or {}))
    for group, score, count in zip(analysis.groups, scores, keep_counts):
        score = np.asarray(score, dtype=np.float64)
        if score.shape != (group.size,) or not np.isfinite(score).all():
            raise ValueError(f"criterion gave scores of shape {score.shape} (finite: "
                             f"{np.isfinite(score).all()}) for a group of {group.size} channels")
        order = np.argsort(-score, kind="stable")[:count]
        anchor = anchor_member(group, analysis)
        keep = np.sort(anchor.index[order].ravel())
        plan.groups.append(GroupPlan(param_name(anchor.ref.key), anchor.ref.dim,
                                     sorted(int(i) for i in anchor.index.ravel()), [int(i) for i in keep]))
    return plan


def removed_components(analysis: Analysis, plan: Plan) -> np.ndarray:
    """Component ids of the channels the plan removes."""
    prunable = np.zeros(analysis.labels.max() + 1, dtype=bool)
    for group in analysis.groups:
        prunable[group.channels] = True
    removed = []
    for entry in plan.groups:
        ref = DimRef(param_key(entry.anchor), entry.dim)
        gone = np.setdiff1d(entry.indices, entry.keep)
        if ref not in analysis.table.offset or (len(gone) and gone.max() >= analysis.table.size[ref]):
            raise InputError(f"plan: {entry.anchor} dim {entry.dim} does not exist in this model with that size")
        components = np.unique(analysis.labels[analysis.table.slots(ref, gone)])
        if not prunable[components].all():
            raise InputError(f"plan: channels of {entry.anchor} dim {entry.dim} cannot be removed in this model")
        removed.append(components)
    return np.concatenate(removed) if removed else np.zeros(0, np.int64)


def kept_slots(analysis: Analysis, removed: np.ndarray) -> dict[DimRef, np.ndarray]:
    """For every space that loses slots, the indices it keeps."""
    gone = np.zeros(analysis.labels.max() + 1, dtype=bool)
    gone[removed] = True
    slot_gone = gone[analysis.labels]
    kept = {}
    for ref, start in analysis.table.offset.items():
        window = slot_gone[start:start + analysis.table.size[ref]]
        if window.any():
            kept[ref] = np.flatnonzero(~window)
    return kept
