"""The two kinds of bad input the steps refuse, each a :class:`ValueError` with a one-line message.

The command line prints ``error: <message>`` and exits with code 2 for either.
"""

from __future__ import annotations


class DataError(ValueError):
    """The input data cannot be used; the message names the problem and the fix."""


class OutputError(ValueError):
    """The output folder cannot be used; the message names the fix."""
