"""Bad input: :class:`BadInput` and its kinds, each with a one-line message naming the problem and the fix.

The command line prints ``error: <message>`` and exits with code 2 for any :class:`BadInput`
(``cli/errors.py``); every other exception is a failure (exit 1), never taken for bad input.
"""

from __future__ import annotations


class BadInput(ValueError):
    """Input the user gave (a flag, a parameter edited in the web UI, a file, a folder) cannot be used."""


class DataError(BadInput):
    """The input data cannot be used; the message names the problem and the fix."""


class OutputError(BadInput):
    """The output folder cannot be used; the message names the fix."""
