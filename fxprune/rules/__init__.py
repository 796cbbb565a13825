"""Every op rule fxprune knows; importing this package fills the registry."""

from . import attention, elementwise, graph_nodes, joins, layers, pooling, rearrange, reshape, transformer  # noqa: F401
from .base import Freeze, NodeView, Observe, Relation, Rule, Tie, describe_key, find_rule, registered_keys, rule_key

__all__ = ["Freeze", "NodeView", "Observe", "Relation", "Rule", "Tie", "describe_key", "find_rule",
           "registered_keys", "rule_key"]
