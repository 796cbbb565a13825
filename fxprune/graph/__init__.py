"""Stage 1, capture: the model becomes an FX graph whose nodes carry shapes, and data becomes batches.

Also the graph-level tools every later stage uses: tensor keys (``tensors``), running part of a
graph (``partial_run``), counting MACs (``measure``), comparing outputs (``outputs``).
"""
