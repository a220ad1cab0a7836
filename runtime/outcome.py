"""How a run ended, as text: written by the run, read back by ``import-offline``. One module, both directions.

A run on a server has a status (completed, failed with its one-line reason, aborted). An offline
session has none (ClearML's import marks every session completed), so the run writes its outcome
into the session itself: a tag (:data:`TAGS`) and a console line ``run outcome: <reason>``. A
session with neither ended without recording an outcome: killed, or the power went.
``tests/test_outcome.py`` tests the round trip.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: The tag of each outcome in an offline session (the tags earlier versions wrote, plus ``completed``).
TAGS = {"completed": "completed", "failed": "failed", "aborted": "interrupted"}
#: The console line that carries the one-line reason of a failed or aborted run.
REASON_PREFIX = "run outcome: "
#: The reason of a session that recorded no outcome.
NO_OUTCOME = ("the run ended without recording an outcome (killed, or the machine stopped); "
              "its results, if any, are incomplete")


@dataclass(frozen=True)
class Outcome:
    """``status``: ``completed``, ``failed`` or ``aborted``; ``reason``: one line ('' when completed)."""

    status: str
    reason: str = ""


def failure_reason(exc: BaseException, step: Optional[str], output_dir: Optional[Path] = None) -> str:
    """One line for a failed or interrupted run: which step, and the error (its type unless it is bad input)."""
    from steps.errors import BadInput

    if isinstance(exc, KeyboardInterrupt):
        if output_dir is not None and (output_dir / "metrics.csv").exists():  # stopped while closing the task
            return f"interrupted after the results were complete in {output_dir}"
        return "interrupted"
    where = f"step '{step}' failed" if step else "the pipeline failed"
    text = " ".join(str(exc).split()) or type(exc).__name__
    from runtime.errors import SetupError

    plain = isinstance(exc, (BadInput, SetupError))  # our own one-line messages need no type
    return f"{where}: {text}" if plain else f"{where}: {type(exc).__name__}: {text}"


def reason_line(outcome: Outcome) -> str:
    """The console line that records ``outcome`` in an offline session."""
    return f"{REASON_PREFIX}{outcome.reason or outcome.status}"


def _read_member(path: Path, name: str) -> Optional[str]:
    if path.is_dir():
        matches = list(path.rglob(name))
        return matches[0].read_text() if matches else None
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == name]
        return archive.read(names[0]).decode() if names else None


def _reason(log: str) -> str:
    for line in log.splitlines():
        try:
            events = json.loads(line)
        except ValueError:
            continue
        for event in events if isinstance(events, list) else [events]:
            for text in str(event.get("msg", "")).splitlines() if isinstance(event, dict) else ():
                if text.startswith(REASON_PREFIX):
                    return text[len(REASON_PREFIX):]
    return ""


def read_session_outcome(path: Path) -> Outcome:
    """The outcome an offline session (its folder or ``.zip``) recorded; :data:`NO_OUTCOME` when none.

    :raises zipfile.BadZipFile, OSError, ValueError: the session cannot be read.
    """
    task = json.loads(_read_member(path, "task.json") or "{}")
    tags = set(task.get("tags") or [])
    status = next((status for status, tag in TAGS.items() if tag in tags and status != "completed"), None)
    if status is None:
        return Outcome("completed") if TAGS["completed"] in tags else Outcome("aborted", NO_OUTCOME)
    return Outcome(status, _reason(_read_member(path, "log.jsonl") or "") or status)
