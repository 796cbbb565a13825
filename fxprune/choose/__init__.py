"""Stage 3, choose: the plan (for every group, the channels it keeps).

``selection.Chooser`` runs it: counts per group (a ratio, a MACs budget in ``allocation``, or the
latency model in ``cost``), then which channels (``criteria``, or the layer-wise ``mlacp``), then
optionally the least-squares ``refit``. ``plan`` is the plain data it hands to the rewrite.
"""
