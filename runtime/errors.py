"""The runtime's own exception (bad input has its own types: ``steps.errors.BadInput`` and subclasses)."""


class SetupError(Exception):
    """ClearML cannot start: no server configured or reachable, bad credentials, a missing queue,
    or a broken cache folder or configuration file. The message is one line (exit 1)."""
