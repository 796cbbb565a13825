"""The op rules: for each op, how it couples channels, how it is shrunk, and every other fact about it.

Importing this package registers fxprune's own rules; ``register`` adds a user's (see ``base``).
"""

from . import (  # noqa: F401
    aten,
    attention,
    elementwise,
    graph_nodes,
    joins,
    layers,
    norms,
    pooling,
    rearrange,
    reshape,
    transformer,
    video,
    written_out,
)
from .base import (
    Freeze,
    Lazy,
    NodeView,
    Observe,
    Relation,
    Rule,
    Tie,
    describe_key,
    find_rule,
    register,
    registered_keys,
    rule_for,
    rule_key,
    same_dims,
    shape_shortcuts,
    unregister,
)
from .written_out import fuse_written_out

__all__ = ["Freeze", "Lazy", "NodeView", "Observe", "Relation", "Rule", "Tie", "describe_key", "find_rule", "register",
           "registered_keys", "rule_for", "rule_key", "same_dims", "shape_shortcuts", "unregister",
           "fuse_written_out"]
