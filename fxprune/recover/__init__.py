"""After the rewrite: win back accuracy (BatchNorm recalibration, distillation from the original)."""
