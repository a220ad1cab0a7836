"""The console of a command: one line per message on stderr."""

from __future__ import annotations

import logging
import sys


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
