"""Stage 2, analyze: which channels are coupled (slots tied by the op rules) and which may go.

``analyze.analyze_graph`` builds the ``Analysis``; ``grouping`` turns slot components into
channel groups; ``sites`` says where each group is produced and read; ``report`` prints it all.
"""
