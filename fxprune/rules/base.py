"""The rule registry: for each op, how it couples channels and how it is shrunk.

A rule's ``couple(view)`` describes one FX node as a list of relations between dimensions of the
tensors it touches (its inputs, its outputs, the parameters of its module):

* ``Tie(a, b)``: slot ``i`` of ``a`` is the same channel as slot ``i`` of ``b`` (or, with index
  arrays, slot ``a_index[k]`` of ``a`` is slot ``b_index[k]`` of ``b``);
* ``Freeze(at, reason)``: the slots of ``at`` (or those at ``index``) must not be removed;
* ``Observe(at)``: the node reads ``at`` (its size, say) but removing slots there is fine.

Any dimension the node touches that its rule does not mention is frozen, so a missing rule costs
pruning, never correctness. A rule that ties only some slots of a dim says the others are not read
by the op (as a slice does); slots the op does use must be tied or frozen. A rule's optional
``shrink(ctx)`` updates what a rewrite must change besides parameters: module attributes and the
literal sizes in node arguments.

Every other fact about an op lives on its rule too, as keyword arguments of ``register``:

* ``normalizes(view)``: the output dims whose statistics the op computes across channels
  (LayerNorm's last dims): where those hold pruned channels the pruned model is close to, not
  equal to, the masked original (``Analysis.mixing_norms``);
* ``latency``: how the latency model (``choose.cost``) charges it — ``"free"`` (views, dropout),
  ``"fusable"`` (a norm, ReLU-like activation or residual add that runtimes fold into the conv or
  linear layer before it), ``"producer"`` (conv and linear layers), or ``None`` (its traffic costs);
* ``same_shape(module, x)``: for a module type whose output has its input's shape, the checks its
  kernel makes, so that shape propagation can skip running it (``graph.shapes``);
* ``refit(module)``: whether the least-squares refit (``choose.refit``) can solve for its weight;
* ``channel_affine(module)``: whether, as the model runs now, the op maps each channel of its input by
  a fixed scale and shift (BatchNorm with running statistics): layer-wise losses read a layer's
  error after it, where every channel is on the scale the next layers see (``analysis.sites``);
* ``weight_layout``: what the module's weight dims are, for reports (``("out", "in")``, or
  ``("in", "out")`` for a transposed convolution).

A user adds a rule for an op fxprune does not know with the same call (``fxprune.rules.register``):

    >>> @fxprune.rules.register(my_gate)                             # doctest: +SKIP
    ... def my_gate_rule(view):
    ...     return fxprune.rules.same_dims(view.tensor_args()[0], view.out(), view)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
import torch.fx

from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, output_key, param_key

if TYPE_CHECKING:  # the analysis builds the table; rules only read it
    from ..analysis.slots import SlotTable


@dataclass(frozen=True)
class Tie:
    a: DimRef
    b: DimRef
    a_index: np.ndarray | None = None
    b_index: np.ndarray | None = None


@dataclass(frozen=True)
class Freeze:
    at: DimRef
    reason: str
    index: np.ndarray | None = None  # only these slots (all when None)


@dataclass(frozen=True)
class Observe:
    at: DimRef


Relation = Tie | Freeze | Observe


LATENCY_CLASSES = ("free", "fusable", "producer", None)


@dataclass(frozen=True)
class Rule:
    """How one op couples channels and is shrunk, and the other facts about it (module docstring)."""

    name: str
    couple: Callable[["NodeView"], Iterable[Relation]]
    shrink: Callable | None = None
    normalizes: Callable[["NodeView"], list[int]] | None = None
    latency: str | None = None
    same_shape: Callable[[torch.nn.Module, torch.Tensor], None] | None = None
    refit: Callable[[torch.nn.Module], bool] | None = None
    channel_affine: Callable[[torch.nn.Module], bool] | None = None
    weight_layout: tuple[str, ...] = ("out", "in")


@dataclass(frozen=True)
class Lazy:
    """A target named by where it is defined, ``"package.module:name"``, so that registering its rule
    does not import its module (torchvision's models, say). It stands for the object once that module
    is imported: a node can call the object only after that, so every lookup first swaps the lazy keys
    of imported modules for the objects (``_resolve_imported``) and a rule applies as if registered by object.
    """

    path: str

    def __post_init__(self):
        if self.path.count(":") != 1:
            raise ValueError(f"Lazy: expected 'package.module:name', got {self.path!r}")

    @property
    def module(self) -> str:
        return self.path.partition(":")[0]

    def imported(self):
        """The object, or None while its module is not imported."""
        return getattr(sys.modules.get(self.module), self.path.partition(":")[2], None)

    def matches(self, target) -> bool:
        return target is not None and self.imported() is target


_REGISTRY: dict[tuple[str, object], Rule] = {}
_LAZY: set[Lazy] = set()  # lazy targets whose module was not imported at the last lookup


# An ATen overload (what torch.export captures) -> the key of the op it computes with the same arguments.
_ALIASES: dict[object, tuple[str, object]] = {}


def alias(aten_op, target) -> None:
    """Let ``aten_op`` use the rule of ``target`` (a function, or a method name): same arguments, same
    meaning, so one rule, with all its facts, serves both captures (``rules/aten.py`` lists them)."""
    if aten_op in _ALIASES:
        raise ValueError(f"{aten_op} is aliased twice")
    _ALIASES[aten_op] = _key_of(target)


def canonical_target(node: torch.fx.Node):
    """The node's target, or for an aliased ATen op the function or method name it stands for."""
    key = _ALIASES.get(node.target) if node.op == "call_function" else None
    return key[1] if key is not None else node.target


def rule_key(node: torch.fx.Node, gm: torch.fx.GraphModule) -> tuple[str, object]:
    """The registry key of a node: its module class, function, or method name (ATen ops via their alias)."""
    if node.op == "call_module":
        return ("module", type(gm.get_submodule(node.target)))
    if node.op == "call_function":
        return _ALIASES.get(node.target, ("function", node.target))
    if node.op == "call_method":
        return ("method", node.target)
    return (node.op, None)


_NODE_KINDS = ("placeholder", "output", "get_attr")


def _key_of(target) -> tuple[str, object]:
    if isinstance(target, Lazy):
        resolved = target.imported()
        return ("lazy", target) if resolved is None else _key_of(resolved)
    if isinstance(target, str) and target in _NODE_KINDS:
        return (target, None)
    if isinstance(target, str):
        return ("method", target)
    if isinstance(target, type) and issubclass(target, torch.nn.Module):
        return ("module", target)
    return ("function", target)


def _resolve_imported() -> None:
    """Key the rules of lazy targets whose modules are now imported by the objects themselves."""
    for target in [t for t in _LAZY if t.imported() is not None]:
        _LAZY.discard(target)
        rule = _REGISTRY.pop(("lazy", target), None)
        if rule is not None:
            _REGISTRY.setdefault(_key_of(target), rule)


def register(*targets, shrink: Callable | None = None, normalizes=None, latency: str | None = None,
             same_shape=None, refit=None, channel_affine=None, weight_layout: tuple[str, ...] = ("out", "in")):
    """Register the decorated ``couple`` function for each target (module class, function, method name,
    or a ``Lazy("module:name")`` that names a class or function without importing its module).

    The keywords are the op's other facts (module docstring). Decorators stack, so one ``couple``
    can serve targets whose facts differ. The node kinds ``"placeholder"``, ``"output"`` and
    ``"get_attr"`` are targets too; a method called ``output`` would clash with them, and none
    exists on tensors. Registering a target twice is an error (``unregister`` it first).
    """
    if latency not in LATENCY_CLASSES:
        raise ValueError(f"latency: expected one of {LATENCY_CLASSES}, got {latency!r}")
    if same_shape is not None and not all(isinstance(t, (type, Lazy)) for t in targets):
        raise ValueError("same_shape applies to module types only")

    def decorate(couple):
        rule = Rule(couple.__name__, couple, shrink, normalizes, latency, same_shape, refit, channel_affine,
                    weight_layout)
        _resolve_imported()
        for key in dict.fromkeys(_key_of(t) for t in targets):  # aliases (torch.einsum) count once
            if key in _REGISTRY:
                raise ValueError(f"a rule for {describe_key(key)} is registered twice")
            _REGISTRY[key] = rule
            if key[0] == "lazy":
                _LAZY.add(key[1])
        return couple

    return decorate


def unregister(*targets) -> None:
    """Remove the rules of ``targets`` (a user's own, say, after a test)."""
    _resolve_imported()
    for target in targets:
        key = _key_of(target)
        _REGISTRY.pop(key, None)
        if key[0] == "lazy":
            _LAZY.discard(key[1])


def rule_for(node: torch.fx.Node, gm: torch.fx.GraphModule) -> Rule | None:
    """The rule of a node, or None when fxprune knows no rule for its op."""
    return find_rule(rule_key(node, gm))


def shape_shortcuts() -> dict[type, Callable]:
    """Module types whose output has their input's shape, with the checks their kernels make.

    Types named lazily join once their module is imported (before that no model can hold one).
    """
    _resolve_imported()
    return {key[1]: rule.same_shape for key, rule in _REGISTRY.items()
            if rule.same_shape is not None and key[0] == "module"}


def find_rule(key: tuple[str, object]) -> Rule | None:
    """The rule registered for a key (``rule_key``), lazily named targets included."""
    rule = _REGISTRY.get(key)
    if rule is None and _LAZY:
        _resolve_imported()
        rule = _REGISTRY.get(key)
    return rule


def registered_keys() -> list[tuple[str, object]]:
    """Every key; ``("lazy", Lazy(...))`` for a lazily named target whose module is not imported yet."""
    _resolve_imported()
    return list(_REGISTRY)


def describe_key(key: tuple[str, object]) -> str:
    kind, target = key
    if kind == "module":
        return f"module {target.__module__}.{target.__qualname__}"
    if kind == "function":
        return f"function {getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
    if kind == "method":
        return f"method Tensor.{target}"
    if kind == "lazy":
        return f"{target.path} (not imported yet)"
    return kind


class NodeView:
    """What a rule needs to know about one node, in terms of tensor keys and dimensions."""

    def __init__(self, node: torch.fx.Node, gm: torch.fx.GraphModule, table: SlotTable, aliases: dict[str, str],
                 group_axes: set[DimRef] | None = None):
        self.node = node
        self.gm = gm
        self.table = table
        self.aliases = aliases
        # dims that a split marked as the outer (group) axis; merges prefer the other dims
        self.group_axes = group_axes if group_axes is not None else set()
        self._module = None

    # ----- node outputs and arguments
    @property
    def name(self) -> str:
        return self.node.name

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            self._module = self.gm.get_submodule(self.node.target)
        return self._module

    @property
    def target(self):
        """What the node calls, with an ATen op read as the function or method it aliases."""
        return canonical_target(self.node)

    @property
    def rule_key(self) -> tuple[str, object]:
        """The node's registry key (its module looked up once, then reused by the rule)."""
        return ("module", type(self.module)) if self.node.op == "call_module" else rule_key(self.node, self.gm)

    def arg(self, index: int, name: str | None = None, default=None):
        if index < len(self.node.args):
            return self.node.args[index]
        if name is not None and name in self.node.kwargs:
            return self.node.kwargs[name]
        return default

    def kwargs_flag(self, name: str) -> bool:
        return bool(self.node.kwargs.get(name, False))

    def out(self, path: tuple = ()) -> str:
        return output_key(self.node, path)

    def key_of(self, value) -> str | None:
        """The tensor key of an argument, or None when it is not a single tensor."""
        if isinstance(value, torch.fx.Node) and () in tensor_shapes(value):
            return output_key(value)
        return None

    def shape(self, key: str) -> tuple[int, ...]:
        return self.table.shapes[key]

    def dims(self, key: str) -> list[DimRef]:
        return [DimRef(key, d) for d in range(len(self.table.shapes[key]))]

    def dim(self, key: str, dim: int) -> DimRef:
        return DimRef(key, dim % len(self.table.shapes[key]))

    def param(self, name: str) -> str | None:
        """Key of the module's parameter or buffer ``name`` (None when the module has none)."""
        qualified = f"{self.node.target}.{name}" if self.node.target else name
        canonical = self.aliases.get(qualified)
        return param_key(canonical) if canonical else None

    def module_params(self) -> list[str]:
        module = self.module
        names = [n for n, t in module.named_parameters(remove_duplicate=False)]
        names += [n for n, t in module.named_buffers(remove_duplicate=False)]
        return [k for k in (self.param(n) for n in names) if k]

    def tensor_args(self) -> list[str]:
        """Keys of every single-tensor value among the node's arguments, in order."""
        keys: list[str] = []
        torch.fx.node.map_arg((self.node.args, self.node.kwargs), lambda n: keys.append(self.key_of(n)) or n)
        return [k for k in keys if k is not None]


def same_dims(a: str, b: str, view: NodeView, skip: Iterable[int] = ()) -> list[Tie]:
    """Tie every dimension of ``a`` to the same dimension of ``b`` where the sizes agree."""
    skipped = {d % max(len(view.shape(a)), 1) for d in skip}
    shape_a, shape_b = view.shape(a), view.shape(b)
    return [
        Tie(DimRef(a, d), DimRef(b, d))
        for d in range(min(len(shape_a), len(shape_b)))
        if d not in skipped and shape_a[d] == shape_b[d]
    ]
