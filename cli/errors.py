"""The one place an exception becomes the user's one-line answer and the exit code.

=====  =====================================================================================
code   meaning
=====  =====================================================================================
0      done
1      failed: a step failed, was aborted or lost; the server is missing or lost; anything else
2      bad input: :class:`steps.errors.BadInput` (a flag, a parameter, a file, a folder, a dataset)
130    interrupted: Ctrl-C or SIGTERM
=====  =====================================================================================
"""

from __future__ import annotations

import sys
from typing import Optional

from steps.errors import BadInput

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(BadInput):
    """Bad command-line input or environment; the message is one line naming the fix (exit 2)."""


def exit_code(exc: Optional[BaseException]) -> int:
    """The exit code of a run that ended with ``exc`` (``None``: success); see the module's table."""
    if exc is None:
        return EXIT_OK
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BadInput):
        return EXIT_USAGE
    return EXIT_FAILED


def one_line(exc: BaseException) -> str:
    """The user's answer to ``exc``: its message (ours are one line already), or its type and message
    on one line (a library's error, e.g. a server answering an error), never a traceback."""
    from runtime.errors import SetupError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, (BadInput, SetupError)):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def answer(exc: BaseException) -> int:
    """Print ``error: <one line>`` on stderr; return the exit code."""
    print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
    return exit_code(exc)
