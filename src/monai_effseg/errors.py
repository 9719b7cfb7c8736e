"""The last lines of a failure are the useful ones.

MONAI's bundle parser re-raises every error of a config expression or component as ``RuntimeError: Failed to
evaluate ConfigExpression: "$..."`` (``Failed to instantiate component ...``; ``Compose`` adds ``applying transform
...``), so the traceback of a bundle run ends on the wrapper and the real message (``DataValidationError: <file>:
<reason>``) sits dozens of lines higher. :func:`report_root_cause_last` installs an exception hook that prints the
full traceback as before and then repeats the innermost cause, so that it is the last thing on the terminal. The
bundles' ``inference.json`` installs it in ``initialize``; ``effseg`` installs it in ``main``.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Optional

__all__ = ["format_root_cause", "report_root_cause_last", "root_cause"]

_HEADER = "The run failed. The cause (the rest of the traceback above only wraps it):"


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of ``err``'s chain (``raise ... from``, or raised while handling another)."""
    seen = {id(err)}
    while True:
        nxt = err.__cause__ if err.__cause__ is not None else (None if err.__suppress_context__ else err.__context__)
        if nxt is None or id(nxt) in seen:
            return err
        seen.add(id(nxt))
        err = nxt


def format_root_cause(err: BaseException) -> Optional[str]:
    """The closing summary for ``err``: ``None`` when ``err`` is its own cause (the traceback already ends on it)."""
    cause = root_cause(err)
    if cause is err:
        return None
    return f"\n{_HEADER}\n{type(cause).__name__}: {cause}"


def _hook(previous):
    def hook(exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
        previous(exc_type, exc, tb)
        summary = format_root_cause(exc) if isinstance(exc, Exception) else None
        if summary:
            sys.stdout.flush()  # logs go to stdout: keep them above the summary on a shared terminal
            print(summary, file=sys.stderr, flush=True)

    hook._effseg_root_cause = True  # type: ignore[attr-defined]
    return hook


def report_root_cause_last() -> None:
    """Install (once) an exception hook that, after the usual traceback, prints the innermost cause of an uncaught
    error. Returns ``None`` so that it can be a bundle ``initialize`` expression."""
    if not getattr(sys.excepthook, "_effseg_root_cause", False):
        sys.excepthook = _hook(sys.excepthook)
