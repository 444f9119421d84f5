"""Warnings that point at the caller's line, not at modelcas's own code.

``warnings.warn(stacklevel=2)`` names the function one frame up, which inside a library is
usually another of its own functions (``Registry.path`` calls ``pin`` calls ``resolve``). The
user needs the line of *their* code that asked, so the stack level is counted here: the first
frame outside this package. (Python 3.12's ``skip_file_prefixes`` does the same; we support
3.11.)
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning attributed to the first caller outside modelcas.

    Args:
        message: the warning's text (one line).
        category: the warning class (default ``UserWarning``).
    """
    # stacklevel 1 is this function; 2 is its caller, sys._getframe(1).
    level = 2
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)
