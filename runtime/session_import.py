"""``import-offline PATH``: upload an offline session (zip or folder) with ClearML's own import.

ClearML marks every imported task completed; the outcome the session recorded
(:mod:`runtime.outcome`) is then restored: failed or aborted with its one-line reason, and a
session that recorded none (its run was killed) as aborted, saying so.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import runtime.outcome as outcome
from runtime.errors import SetupError
from runtime.server import check_server
from steps.errors import BadInput


class SessionError(BadInput):
    """The file is not an offline session that can be read (damaged, or not a session)."""


def session_outcome(path: Path) -> outcome.Outcome:
    """What the session at ``path`` recorded, read before anything is uploaded.

    :raises SessionError: a damaged zip, or a file that is not a session.
    """
    try:
        if path.is_file():
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()  # every member's CRC, as ClearML's import would meet it
            if damaged:
                raise zipfile.BadZipFile(f"member {damaged} is damaged")
        return outcome.read_session_outcome(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise SessionError(f"{path} cannot be read as an offline session ({first}): the file is damaged or "
                           "incomplete; import the session folder of the same name instead, if it is still in "
                           "the ClearML cache (…/offline/<id>/), or run the pipeline again") from None


def import_offline(path: str) -> tuple[str, outcome.Outcome]:
    """Upload the session at ``path``; restore its outcome on the new task.

    :returns: ``(new task id, the outcome recorded on it)``.
    :raises SessionError: the session cannot be read. :raises SetupError: no server, or ClearML failed.
    """
    from clearml import Task

    result = session_outcome(Path(path))
    check_server(queues=[])
    task_id = Task.import_offline_session(str(path))
    if not task_id:
        raise SetupError(f"ClearML could not import {path}; is it an offline session folder or zip?")
    task = Task.get_task(task_id=task_id)
    task.set_tags([t for t in task.get_tags() or [] if t not in outcome.TAGS.values()])
    if result.status == "failed":
        task.mark_failed(status_reason=result.reason, status_message=result.reason, force=True)
    elif result.status == "aborted":
        task.stopped(force=True, status_reason=result.reason, status_message=result.reason)
    return task_id, result
