"""Library warnings as one log line each.

Python's warnings (pandas, scikit-learn, matplotlib, ...) print two lines with the library's file
path and source line. Inside :func:`library_warnings`, each distinct warning is logged once on
the ``steps`` logger instead, as its first line only, so the command line shows it as one
``warning:`` line (its formatter decides the prefix), without file paths.
"""

from __future__ import annotations

import logging
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
