"""Stage 4, rewrite: apply a plan (``apply.rewrite``), and the oracle that checks the result."""
