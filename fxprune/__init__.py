"""fxprune: remove whole channels from any traceable PyTorch model, physically.

    import fxprune
    small = fxprune.compress(model, data, ratio=0.5)
    print(fxprune.analyze(model, example))

The pipeline, one package per stage: ``graph`` (capture and shapes) → ``analysis`` (coupled
channels, from the op ``rules``) → ``choose`` (the plan) → ``rewrite`` → ``deploy``; ``recover``
wins back accuracy afterwards. ``fxprune.pipeline`` runs the stages one by one.
"""

from . import rules
from .choose import cost
from .choose.mlacp import MLACP
from .choose.plan import Plan
from .compress import analyze, apply_plan, compress
from .deploy.export import ExportError, export_onnx
from .errors import FxpruneError, InputError, RewriteError, TraceError
from .recover.finetune import finetune
from .saving import load, save
from .submodule import compress_submodule

__all__ = ["ExportError", "FxpruneError", "InputError", "MLACP", "Plan", "RewriteError", "TraceError", "analyze",
           "apply_plan", "compress", "compress_submodule", "cost", "export_onnx", "finetune", "load", "rules", "save"]
