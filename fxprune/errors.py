"""Errors fxprune raises: each names the argument or graph node at fault and says what to do."""


class FxpruneError(Exception):
    """Base class of every error fxprune raises on purpose."""


class InputError(FxpruneError, ValueError):
    """An argument given to fxprune is not what it expects."""


class TraceError(FxpruneError):
    """torch.fx could not trace the model, or the traced graph could not run."""


class RewriteError(FxpruneError):
    """Applying a plan produced a graph whose shapes differ from what the plan promised."""

    def __init__(self, message: str, nodes: list[str] | None = None):
        super().__init__(message)
        self.nodes = nodes or []
