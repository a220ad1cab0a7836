"""The steps' console: their progress as one ``info:``/``warning:`` line each, library warnings included.

:func:`configure_console` is called by a command's ``main`` and at the top of every step's body (a
step on an agent is a fresh process).

Python's warnings (pandas, scikit-learn, matplotlib, ...) print two lines with the library's file
path and source line. Inside :func:`library_warnings`, each distinct warning is logged once on
the ``steps`` logger instead, as its first line only, so the command line shows it as one
``warning:`` line (its formatter decides the prefix), without file paths.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

log = logging.getLogger("steps")


def warning_line(message: object) -> str:
    """The first non-blank line of a warning's message, stripped."""
    for line in str(message).splitlines():
        if line.strip():
            return line.strip()
    return type(message).__name__


@contextmanager
def library_warnings(logger: Optional[logging.Logger] = None, prefix: str = "") -> Iterator[None]:
    """Turn every warning raised in the block into one ``logger.warning`` line, once per distinct text.

    :param logger: where the lines go (default: the ``steps`` logger).
    :param prefix: put before each line, e.g. ``"figures: "``.
    The lines are logged when the block ends, also when it raises (in the order first seen).
    """
    target = logger or log
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: list[str] = []
            for w in caught:
                line = warning_line(w.message)
                if line not in seen:
                    seen.append(line)
            for line in seen:
                target.warning("%s%s", prefix, line)


class _OneLineFormatter(logging.Formatter):
    def format(self, record) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    (file or sys.stderr).write(f"warning: {' '.join(str(message).split())}\n")


def configure_console() -> None:
    """Called by a command's ``main`` only: the steps' progress and warnings (``steps.*`` loggers,
    INFO and up) as ``info:``/``warning:`` lines, and every Python warning from a library as
    ``warning: <text>``, without the file path and source line Python prints by default."""
    import warnings

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    logger = logging.getLogger("steps")
    if not any(isinstance(h.formatter, _OneLineFormatter) for h in logger.handlers):
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    warnings.showwarning = _one_line_warning
