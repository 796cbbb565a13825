"""Rule-level tests: one file per rule module of fxprune/rules."""
