"""Every op rule fxprune knows; importing this package fills the registry."""

from . import (  # noqa: F401
    attention,
    elementwise,
    graph_nodes,
    joins,
    layers,
    pooling,
    rearrange,
    reshape,
    transformer,
    video,
)
from .base import Freeze, NodeView, Observe, Relation, Rule, Tie, describe_key, find_rule, registered_keys, rule_key

__all__ = ["Freeze", "NodeView", "Observe", "Relation", "Rule", "Tie", "describe_key", "find_rule",
           "registered_keys", "rule_key"]
