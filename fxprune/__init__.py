"""fxprune: remove whole channels from any traceable PyTorch model, physically.

    import fxprune
    small = fxprune.compress(model, data, ratio=0.5)
    print(fxprune.analyze(model, example))
"""

from .compress import analyze, apply_plan, compress
from .errors import FxpruneError, InputError, RewriteError, TraceError
from .export import ExportError, export_onnx
from .finetune import finetune
from .mlacp import MLACP
from .plan import Plan
from .saving import load, save
from .submodule import compress_submodule

__all__ = ["FxpruneError", "InputError", "Plan", "RewriteError", "TraceError", "analyze", "apply_plan", "compress",
           "finetune", "MLACP"]
__all__ += ["ExportError", "export_onnx", "load", "save"]
__all__ += ["compress_submodule"]
