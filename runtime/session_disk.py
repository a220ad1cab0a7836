"""A ClearML cache folder that fills up: refused before a run, caught before its results are written.

ClearML's offline mode copies artifacts into the session folder and zips it at the end, and says
nothing when a copy fails for lack of space (seen: a run exiting 0 with a session missing its
artifacts, or a 0-byte zip). So an offline run checks the free space first
(:func:`check_cache_space`), checks that every artifact really is in the session before its
results are moved into place (:func:`check_session_written`), and a failed run removes a session
it could not write (:func:`remove_broken_session`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from runtime.errors import SetupError

#: Free space an offline run needs in the ClearML cache folder (a four-model session stays below 40 MB).
NEEDED_MB = 64


def _full(folder: str, detail: str) -> SetupError:
    return SetupError(f"the ClearML cache folder {folder} is full ({detail}): the offline session cannot be written; "
                      "free space there, or point CLEARML_CACHE_DIR at a folder on another disk")


def check_cache_space(folder: str, needed_mb: int = NEEDED_MB) -> None:
    """:raises SetupError: less than ``needed_mb`` MB free where the offline session goes."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < needed_mb:
        raise _full(folder, f"{free_mb:.0f} MB free, a run needs {needed_mb} MB")


def check_session_written(task) -> None:
    """Every artifact of an offline ``task`` is in its session folder, whole.

    :raises SetupError: one missing or cut short (the disk filled), naming the cache folder.
    """
    from clearml import Task

    if not Task.is_offline():
        return
    folder = _cache_of(task)
    for name, artifact in task.artifacts.items():
        url = str(artifact.url or "")
        path = Path(unquote(url.removeprefix("file://"))).absolute() if url else None  # file://cache/... is relative
        if path is None or not path.is_file() or (artifact.size is not None and path.stat().st_size != artifact.size):
            raise _full(folder, f"artifact {name} was not stored")
    try:
        check_cache_space(folder, needed_mb=1)
    except SetupError:
        raise _full(folder, "less than 1 MB left for the session's events and zip") from None


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def cache_disk_errors(task) -> Iterator[None]:
    """ClearML's copies into the offline session: a full disk there is named as the cache folder's (not
    the output folder's, whose writes share the same ``with`` block)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL or not _in_cache(exc, task):
            raise
        raise _full(_cache_of(task), "no space left on device") from None


def _cache_of(task) -> str:
    return str(Path(task.get_offline_mode_folder()).parent.parent.absolute())


def _in_cache(exc: OSError, task) -> bool:
    from clearml import Task

    cache = _cache_of(task) if Task.is_offline() else None
    return bool(cache) and any(str(name or "").startswith(cache) for name in (exc.filename, exc.filename2))


class _DiskFullFilter(logging.Filter):
    """Drops ClearML's own log lines about a full disk (its retries and upload errors): the run says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "No space left on device" not in text and "Errno 28" not in text


def quiet_disk_full() -> None:
    """Offline runs: ClearML's background writer dying on a full disk, and its log lines about it, are not
    shown (the run then fails with one line: :func:`check_session_written`); other thread errors are."""
    previous = threading.excepthook

    def hook(args) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in _DISK_FULL:
            return
        previous(args)

    threading.excepthook = hook
    from runtime.sdk import drop_direct_stderr_lines

    drop_direct_stderr_lines(lambda text: "Errno 28" in text or "No space left on device" in text
                             or ("Flush timeout" in text and "dropping last" in text))
    quiet = _DiskFullFilter()
    names = [name for name in logging.Logger.manager.loggerDict if name.split(".")[0] == "clearml"]
    for logger in [logging.getLogger(name) for name in names]:
        logger.addFilter(quiet)
        for handler in logger.handlers:
            handler.addFilter(quiet)


def disk_full_reason(exc: BaseException, task) -> str | None:
    """The one line for a run that ended with a full disk under its offline session, or None."""
    from clearml import Task

    if task is None or not Task.is_offline() or not isinstance(exc, OSError) or exc.errno not in _DISK_FULL:
        return None
    folder = _cache_of(task)
    if shutil.disk_usage(folder).free >= 2**20 and not _in_cache(exc, task):
        return None  # another disk (the output folder's has its own message)
    return str(_full(folder, "no space left on device"))


def remove_broken_session(task) -> None:
    """After a failed offline run: remove its session zip if it is not a whole zip (e.g. 0 bytes, the disk full)."""
    zip_path = Path(f"{task.get_offline_mode_folder()}.zip")
    try:
        if zip_path.exists() and (zip_path.stat().st_size == 0 or not zipfile.is_zipfile(zip_path)):
            os.remove(zip_path)
    except OSError:
        pass
