"""Where the data file is, and what it holds: paths portable between machines, and content hashes.

A path inside the project (such as the shipped ``data/cal_housing.csv``) is kept relative to the
project root, so that an agent that clones the project elsewhere finds the same file; the
content hash lets ClearML's step cache tell a changed file from the same one under the same path.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

#: The project root (the folder holding ``steps/``): relative data paths are resolved against it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_data_path(path: str) -> str:
    """``path`` as an absolute path: a relative one is taken relative to :data:`PROJECT_ROOT`.

    Empty stays empty (refused by the parameters' check; the loader then says the file is not found).
    """
    if not path or path == "sklearn" or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path)
    return str(PROJECT_ROOT / path)


def portable_data_path(path: str) -> str:
    """``path`` relative to :data:`PROJECT_ROOT` when the file is inside the project, else absolute."""
    if not path or path == "sklearn":
        return path
    absolute = Path(path).expanduser().resolve()
    try:
        return absolute.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(absolute)


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 (hex) of the file's bytes, read in chunks of ``chunk_bytes``.

    :raises OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(path: str) -> str:
    """What the ``load`` step's cache key sees of the data: the file's SHA-256 where it can be read here.

    Where it cannot (a path that only exists on the agents' machines, or an empty path: the
    scikit-learn download), a fresh random token: the ``load`` step is then never served from
    the cache, as its content cannot be vouched for.
    """
    resolved = resolve_data_path(path)
    if resolved and os.path.isfile(resolved):
        try:
            return file_sha256(resolved)
        except OSError:
            pass
    return f"unverified-{uuid.uuid4().hex}"
