"""fxprune: remove whole channels from any traceable PyTorch model, physically.

    import fxprune
    small = fxprune.compress(model, data, ratio=0.5)
    print(fxprune.analyze(model, example))
"""

from .compress import analyze, apply_plan, compress
from .errors import FxpruneError, InputError, RewriteError, TraceError
from .finetune import finetune
from .mlacp import MLACP
from .plan import Plan
from .submodule import compress_submodule

__all__ = ["FxpruneError", "InputError", "Plan", "RewriteError", "TraceError", "analyze", "apply_plan", "compress",
           "finetune", "MLACP"]
__all__ += ["compress_submodule"]
