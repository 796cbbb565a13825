"""Errors fxprune raises: each names the argument or graph node at fault and says what to do."""

import re


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


_ADVERTS = re.compile(r"^.*(tlparse|TORCH_LOGS|TORCHDYNAMO_VERBOSE).*$\n?", re.MULTILINE)
_EMPTY_TRACEBACK = re.compile(r"^Original traceback:\nNone$\n?", re.MULTILINE)


def torch_message(error: BaseException) -> str:
    """``str(error)`` without torch's advice to run its log tools (tlparse, TORCH_LOGS) or an empty traceback.

    fxprune wraps torch's errors in its own, whose advice is the one to follow.
    """
    text = _EMPTY_TRACEBACK.sub("", _ADVERTS.sub("", str(error)))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
