"""The git URL and commit from which ClearML agents get this project's code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

from cli.errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def _is_url(url: str) -> bool:
    """Whether ``url`` is a URL git clones by (``scheme://...`` or scp-like ``user@host:path``), not a path."""
    return "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url) is not None


def _problem(root: Path, url: Optional[str]) -> Optional[str]:
    if url is None:
        return (f"agents clone this project with git, but {root} is not a git checkout with an 'origin' remote "
                "and a commit; push it to a repository the agents can reach (git remote add origin URL && "
                "git push) and run from that checkout")
    if not _is_url(url):
        return (f"the git remote 'origin' of {root} is a local path ({url}); agents need a URL they can clone "
                "(https://..., git@host:... or file:///...): git remote set-url origin URL")
    return None


def _clone_url(root: Path, url: Optional[str]) -> Optional[str]:
    """An ``origin`` that is a path to a git repository, as the ``file://`` URL git clones it by (an agent on this
    machine can, as from ``file:///...``); any other ``url`` as it is."""
    if not url or _is_url(url):
        return url
    path = (root / url).resolve()
    try:
        _git(path, "rev-parse", "--git-dir")
    except (OSError, subprocess.SubprocessError):
        return url  # not a repository: refused below
    return path.as_uri()


def step_repository(root: Path = PROJECT_ROOT, required: bool = True) -> tuple[Optional[str], Optional[str]]:
    """``(git remote URL, commit)`` agents clone for the steps (ClearML does not give a step its
    controller's repository, clearml issue #1370, and its own conversion of a local checkout fails for
    function steps in clearml 2.1.12, so both are read here).

    :param required: ``True`` (``--mode remote``): no usable remote is an error. ``False``
        (``--mode local``): ``(None, None)`` and a warning (the run works; a re-run from the web UI cannot).
    :raises UsageError: (``required``) no git, not a checkout, no ``origin``, or an ``origin`` that is a local
        path but no git repository (a path to one is given as its ``file://`` URL).
    """
    try:
        url, commit = _git(root, "remote", "get-url", "origin"), _git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        url = commit = None
    url = _clone_url(root, url)
    problem = _problem(root, url)
    if problem:
        if required:
            raise UsageError(f"--mode remote: {problem}")
        print(f"warning: a re-run from the web UI will not find the code: {problem}", file=sys.stderr)
        return None, None
    if _git(root, "status", "--porcelain", "--untracked-files=no"):
        print(f"warning: {root} has uncommitted changes; agents run commit {commit[:12]} without them",
              file=sys.stderr)
    return url, commit
