"""A run's output folder: where it goes, claiming it, and writing its files all or nothing.

Life of an output folder:

1. :func:`claim_output_dir`, called by the command line before any step runs, creates the folder
   (or takes an existing empty one) and holds an exclusive lock (:func:`fcntl.flock`) on a marker
   file inside it, :data:`CLAIM_FILE`, for the rest of the process. A second run claiming the same
   folder is refused at once; a folder that cannot be created or written is refused before any step.
2. :func:`staged_output`, in the evaluate step, writes the results into a hidden staging folder
   ``.partial-<random>`` inside the output folder, then moves them into place, ``metrics.csv``
   last (its presence means the results are complete), and removes the marker. The step may run
   in the claiming process, in a child process (ClearML's local mode: it inherits the claim's
   token through the environment variable :data:`CLAIM_ENV`) or on another machine, where nothing
   was claimed and it claims the (new or empty) folder itself for the time it writes.
3. When the claiming process exits, the claim is released (:func:`release_output_dir`, registered
   with :mod:`atexit`): the marker is removed, and so is the folder if the claim created it and no
   result was written, so a refused, failed or interrupted run leaves no folder behind.

A process killed with SIGKILL leaves its marker and maybe a staging folder; its lock dies with it
(unless a process it forked still holds the marker open: then the marker's record of the process,
pid, host, start time and boot id, tells that it is gone), so the next claim sees that the marker is
stale, removes both and proceeds. A full disk while writing is one :class:`OutputError` line. Neither is ever taken
for results: results are the entries outside the hidden names, and ``metrics.csv`` comes last.

Nothing here knows about ClearML; :mod:`steps.evaluation` computes what is written.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd

from steps.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: claims are markers without a lock (not exclusive between runs there)
    fcntl = None

#: The marker file of a claimed output folder (removed once the results are in place).
CLAIM_FILE = ".claimed-by-run"
#: Prefix of the hidden staging folders inside the output folder.
STAGE_PREFIX = ".partial-"
#: Environment variable with this process tree's claim token (child processes inherit it).
CLAIM_ENV = "STEPS_OUTPUT_CLAIM"
#: The file moved into place last: its presence means a run's results are complete.
LAST_FILE = "metrics.csv"


def _try_lock(fd: int, exclusive: bool) -> bool:
    """Lock the open marker ``fd`` without waiting; False if another process holds a lock on it.

    Where locks are not available (Windows, a file system without them) this always succeeds:
    the claim is then only a marker, and markers are then never taken for a run in progress.
    """
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    return True


class _Claim:
    """An output folder claimed by this process: the open, locked marker file."""

    def __init__(self, path: Path, fd: int, created: bool):
        self.path, self.fd, self.created = path, fd, created


#: The claims this process holds, by absolute path.
_CLAIMS: dict[Path, _Claim] = {}


#: The folder this run claimed when no ``--output-dir`` was given (set by the command line, inherited by
#: a ``--mode local`` step's subprocess): where a step told ``output_dir=""`` writes.
RUN_DIR_ENV = "STEPS_RUN_DIR"
#: Where a step with no usable folder writes on a machine that claimed none (an agent): in the home
#: folder, as an agent deletes its checkout before its next task.
AGENT_RUNS = "~/clearml-tabular-regression/runs"


def new_run_dir(root: str | os.PathLike = "runs") -> Path:
    """A fresh, not yet created path ``<root>/<UTC time>-<random>``; two runs never get the same one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{uuid.uuid4().hex[:6]}"


def default_run_dir(output_dir: str | os.PathLike = "") -> Path:
    """The folder a run launched here writes to: ``output_dir``, or (empty) a new ``runs/<time>-<random>``
    of the current folder; absolute. A run's ``Args`` keep the empty value: no machine's path in them."""
    return _absolute(output_dir or new_run_dir(Path.cwd() / "runs"))


def output_dir_for_step(output_dir: str | os.PathLike, fallback_root: str | os.PathLike = AGENT_RUNS) -> Path:
    """The folder a step writes the run's files to: ``output_dir``, or a fresh one if a new run cannot use it.

    An empty ``output_dir`` (a run launched without ``--output-dir``) is the folder the command line
    claimed for this run (:data:`RUN_DIR_ENV`: offline, or a ``--mode local`` step), else, on a machine
    that claimed none (an agent), a new ``<fallback_root>/<UTC time>-<random>``. For a step that runs where
    nothing was claimed for it (``--mode remote``, or a run re-run from the web UI, whose ``output_dir`` may
    name the first run's folder): when ``output_dir`` already holds results, is in use, or cannot be created
    on this machine, the files go to a new folder under ``fallback_root`` instead (in the home folder: an
    agent deletes its checkout before its next task), with a warning; the run's artifacts in ClearML hold
    ``metrics.csv`` and the figures either way. Where this run claimed ``output_dir``
    (:func:`claim_output_dir`), it is returned as it is.

    :returns: the absolute folder to write to.
    """
    fresh = _absolute(new_run_dir(Path(fallback_root).expanduser()))
    if not str(output_dir):
        claimed = os.environ.get(RUN_DIR_ENV, "") if os.environ.get(CLAIM_ENV) else ""  # an agent: neither
        if not claimed:
            return fresh
        output_dir = claimed
    try:
        return check_output_dir(output_dir)  # a folder claimed by this run passes
    except OutputError as exc:
        logging.getLogger("steps.outputs").warning(
            f"{exc.args[0].split(';')[0]}; this run's files go to {fresh} on this machine instead "
            "(metrics.csv and the figures are also the run's artifacts in the web UI)")
        return fresh


def _absolute(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir).expanduser().absolute()


_OWN_TOKEN: list[str] = []


def _token() -> str:
    """This process's claim token, made by its first claim and put in :data:`CLAIM_ENV` for its child
    processes (a token inherited from a parent is replaced: two runs started by one parent are two runs)."""
    if not _OWN_TOKEN:
        _OWN_TOKEN.append(uuid.uuid4().hex)
        os.environ[CLAIM_ENV] = _OWN_TOKEN[0]
    return _OWN_TOKEN[0]


def _read_marker(path: Path) -> dict:
    try:
        return json.loads((path / CLAIM_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _owner(path: Path) -> str:
    """Who holds the claim on ``path``: 'this run', 'free' (no marker, or a stale one), or 'another run ...'."""
    if path in _CLAIMS:
        return "this run"
    marker = path / CLAIM_FILE
    try:
        fd = os.open(marker, os.O_RDONLY)
    except FileNotFoundError:
        return "free"
    except OSError:
        return "free"  # unreadable: the checks of the folder itself say why
    try:
        if _try_lock(fd, exclusive=False):
            return "free"  # a marker nobody holds: left by a run that was killed
        info = _read_marker(path)
        if info.get("token") and info.get("token") == os.environ.get(CLAIM_ENV):
            return "this run"  # claimed by the process that started this step
        if _claim_is_dead(info):
            return "free"  # its run was killed; a process it forked still holds the lock
        return f"another run ({_holder(info)})"
    finally:
        os.close(fd)


def _process_stat(pid: int) -> Optional[tuple[str, str]]:
    """(state, start time in clock ticks since boot) of process ``pid`` from ``/proc/<pid>/stat``;
    None if there is no such process. :raises OSError: no ``/proc`` here (not Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        if not os.path.isdir("/proc/self"):
            raise
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 (state) on
    return fields[0], fields[19]


def _boot_id() -> str:
    """This boot's id (Linux), "" where unknown: a marker from before a reboot names no live process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_identity() -> dict:
    """What the marker records to tell this process from a later one with the same pid: start time and boot."""
    try:
        stat = _process_stat(os.getpid())
    except OSError:
        stat = None
    return {"start": stat[1] if stat else "", "boot": _boot_id()}


def _claim_is_dead(info: dict) -> bool:
    """Whether the marker ``info`` names a process of this host that is gone: no such pid, a zombie, or
    another process under that pid (other start time, or another boot). False when it cannot be told
    (another host, no pid recorded): the lock on the marker decides then.

    A process killed with SIGKILL releases its lock, unless a process it forked still holds the
    marker's file open (ClearML starts such helpers): the recorded pid tells the claim is stale then.
    """
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or info.get("host") != socket.gethostname():
        return False
    if info.get("boot") and _boot_id() and info["boot"] != _boot_id():
        return True
    try:
        stat = _process_stat(pid)
    except OSError:  # no /proc: only whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    if stat is None or stat[0] in ("Z", "X", "x"):
        return True
    return bool(info.get("start")) and stat[1] != info["start"]


def _holder(info: dict) -> str:
    return f"process {info['pid']} on {info.get('host', '?')}" if info.get("pid") else "another process"


def _leftovers(path: Path) -> tuple[list[Path], list[Path]]:
    """(stale entries of a claim: marker and staging folders; every other entry) of the folder ``path``."""
    stale, other = [], []
    for entry in path.iterdir():
        (stale if entry.name == CLAIM_FILE or entry.name.startswith(STAGE_PREFIX) else other).append(entry)
    return stale, other


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Check that ``output_dir`` can receive a run's results, before anything runs; nothing is left behind.

    It may not exist yet (it is then creatable: a probe folder is made and removed in the nearest
    existing folder above it) or be an empty folder one can write in (probed the same way). A
    marker and staging folders left by a killed run do not count as content. A folder claimed by
    this run (:func:`claim_output_dir`, here or in the process that started this one) passes.

    :returns: the absolute path.
    :raises OutputError: it is a symbolic link or a file, lies under a file, holds anything else,
        is claimed by another running run, or cannot be created or written.
    """
    path = _absolute(output_dir)
    if path.is_symlink():
        raise OutputError(f"output folder {path} is a symbolic link; pass the folder it points to, or a new one")
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} is a file; pass --output-dir with a folder path")
    if path.is_dir():
        owner = _owner(path)
        if owner.startswith("another run"):
            raise OutputError(f"output folder {path} is in use by {owner}; wait for it to finish or pass "
                              "another --output-dir")
        if _leftovers(path)[1]:
            raise OutputError(
                f"output folder {path} is not empty; pass a new or empty folder with --output-dir "
                "(or leave it out for a new folder under runs/)"
            )
        if owner == "this run":
            return path
        where = path
    else:
        where = path.parent
        while not where.exists():
            where = where.parent
        if not where.is_dir():
            raise OutputError(f"{where} is a file, so {path} cannot be created; choose another --output-dir")
    if not os.access(where, os.W_OK | os.X_OK):
        raise OutputError(f"folder {where} is not writable; choose a writable --output-dir")
    probe = where / f"{STAGE_PREFIX}probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(f"cannot create folders in {where} ({exc.strerror or exc}), so {path} cannot hold the "
                          "results; choose a writable --output-dir") from None
    return path


def claim_output_dir(output_dir: str | os.PathLike) -> Path:
    """Claim ``output_dir`` for this run, atomically, before any step runs.

    A new folder is made under a hidden name beside it with the locked marker file
    :data:`CLAIM_FILE` inside, then renamed into place (atomic); an existing empty folder gets the
    marker in place, locked with ``flock(LOCK_EX | LOCK_NB)``. Of two runs claiming at once, exactly
    one wins; the other is refused at once. A marker nobody holds (its run was killed) and that run's
    staging folders are removed. The claim lasts until :func:`release_output_dir` or the process
    ends (released at exit); child processes inherit it (:data:`CLAIM_ENV`). Claiming a folder this
    process already holds returns it again.

    :returns: the absolute path of the claimed folder.
    :raises OutputError: see :func:`check_output_dir`; also when another run holds the folder, or
        creating the folder or the marker fails (e.g. ``/proc/foo``, a read-only file system).
    """
    path = check_output_dir(output_dir)
    if path in _CLAIMS:
        return path
    for _ in range(5):  # a claim released while we opened its marker, or a folder made meanwhile: try again
        if not path.exists() and _claim_new(path):
            return path
        if not path.is_dir() or path.is_symlink():
            check_output_dir(path)  # raises: a file or link appeared, or it vanished (then: try again)
            continue
        fd = _lock_marker(path)
        if fd is None:
            continue
        stale, other = _leftovers(path)
        if other:  # results appeared (a run that finished while we waited for its marker)
            os.close(fd)
            check_output_dir(path)  # raises "not empty"
        for entry in stale:
            if entry.name != CLAIM_FILE:
                shutil.rmtree(entry, ignore_errors=True)
        _register(path, fd, created=False)
        return path
    raise OutputError(f"output folder {path} is being claimed and released by other runs; pass another --output-dir")


def _lock_marker(path: Path) -> Optional[int]:
    """Open (or create) the marker of the existing folder ``path`` and lock it exclusively.

    :returns: the locked file descriptor; None to try again: the marker was removed meanwhile by its
        run, or it was a dead run's (see :func:`_claim_is_dead`) and has just been removed.
    :raises OutputError: the marker cannot be written, or a live run holds it.
    """
    marker = path / CLAIM_FILE
    try:
        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {path} ({exc.strerror or exc}); choose a writable "
                          "--output-dir") from None
    locked = _try_lock(fd, exclusive=True)
    try:
        same = os.fstat(fd).st_ino == os.stat(marker).st_ino
    except FileNotFoundError:
        same = False
    if locked and same:
        return fd
    info = _read_marker(path) if same else {}
    os.close(fd)
    if not same:  # the marker was removed by its run between our open and our lock
        return None
    if not _claim_is_dead(info):
        raise OutputError(f"output folder {path} is in use by another run ({_holder(info)}); "
                          "wait for it to finish or pass another --output-dir")
    try:
        marker.unlink()  # a dead run's marker, still locked by a process it forked: replace it
    except FileNotFoundError:
        pass
    return None


def _claim_new(path: Path) -> bool:
    """Claim the not yet existing folder ``path``: make it under a hidden name beside it with the marker
    locked inside, then rename it into place (atomic; it fails if ``path`` appeared meanwhile and is
    not empty). Returns False if ``path`` appeared meanwhile (the caller then claims it in place)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f".{path.name}.claim-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path} ({exc.strerror or exc}); choose a writable "
                          "--output-dir") from None
    try:
        fd = os.open(temp / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        _try_lock(fd, exclusive=True)  # a new file: nobody else holds it
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise OutputError(f"cannot write in {path.parent} ({exc.strerror or exc}); choose a writable "
                          "--output-dir") from None
    _write_marker(fd)  # before the rename: a run refused at once can name this one
    try:
        os.rename(temp, path)
    except OSError:  # it exists now (another run's claim, or the user's folder): claim it in place
        os.close(fd)
        shutil.rmtree(temp, ignore_errors=True)
        return False
    _register(path, fd, created=True)
    return True


def _write_marker(fd: int) -> None:
    """Write who holds the claim into its marker: process id, host name, token, claim time, and the
    process's start time and boot id (so that :func:`_claim_is_dead` can tell a later process under the same pid)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "token": _token(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_process_identity()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def _register(path: Path, fd: int, created: bool) -> None:
    """Remember the claim (released at exit: the first claim registers :func:`release_all_claims` with
    :mod:`atexit`, so that importing this module registers nothing); the marker says who holds it."""
    _write_marker(fd)
    if not _CLAIMS:
        atexit.unregister(release_all_claims)  # once, however many claims come and go
        atexit.register(release_all_claims)
    _CLAIMS[path] = _Claim(path, fd, created)


def _remove_created(path: Path, created: bool) -> None:
    if created:
        try:
            path.rmdir()
        except OSError:
            pass


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Give up this process's claim on ``output_dir`` (nothing happens if it holds none).

    The marker is removed if it is still this claim's; the folder too, if the claim created it and
    it holds nothing but stale staging folders (a run that wrote no result leaves no folder).
    Registered with :mod:`atexit` for every claim.
    """
    path = _absolute(output_dir)
    claim = _CLAIMS.pop(path, None)
    if claim is None:
        return
    marker = path / CLAIM_FILE
    try:
        if os.fstat(claim.fd).st_ino == os.stat(marker).st_ino:
            marker.unlink()
    except OSError:
        pass
    finally:
        os.close(claim.fd)
    if claim.created and path.is_dir():
        stale, other = _leftovers(path)
        if not other:
            for entry in stale:
                shutil.rmtree(entry, ignore_errors=True)
            _remove_created(path, True)


def withdraw_results(output_dir: str | os.PathLike) -> list[str]:
    """Remove what a run that then failed wrote into ``output_dir`` (e.g. its last step wrote the results,
    then was aborted): only if this process claimed the folder, which was new or empty then, so that
    everything in it but the claim's marker is the run's. A folder not claimed here is left alone.

    :returns: the names removed.
    """
    path = _absolute(output_dir)
    if path not in _CLAIMS or not path.is_dir():
        return []
    removed = []
    for entry in path.iterdir():
        if entry.name == CLAIM_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return sorted(removed)


def release_all_claims() -> None:
    """Release every output folder this process claimed (also run at exit)."""
    for path in list(_CLAIMS):
        release_output_dir(path)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (delivered when the block ends), where the platform allows it."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask (Windows)
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def staged_output(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Write a run's files into a hidden staging folder inside ``output_dir``, then move them into place.

    ``output_dir`` must be claimed by this run (:func:`claim_output_dir`, in this process or the one
    that started it), or new or empty: then it is claimed here for the time of writing. The staging
    folder ``<output_dir>/.partial-<random>`` is on the same file system, so each entry is moved with
    an atomic :func:`os.replace`, ``metrics.csv`` last: ``output_dir`` holds every result or no
    ``metrics.csv``. If the body raises (or the process is interrupted) the staging folder is
    removed and nothing is moved. Once the results are in place, the claim's marker is removed.

    :yields: the staging folder to write into.
    :raises OutputError: ``output_dir`` is unusable (see :func:`check_output_dir`) or held by another run;
        the disk filled up while writing (``OSError`` ENOSPC or EDQUOT, in the body or the moves):
        ``no space left on device while writing <output_dir>: free space there or pass --output-dir
        on another disk``, with nothing left behind.
    """
    final = check_output_dir(output_dir)
    claimed_here = _owner(final) != "this run" if final.is_dir() else True
    if claimed_here:
        claim_output_dir(final)
    stage = final / f"{STAGE_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        with _disk_full_in_one_line(final):
            stage.mkdir()
            yield stage
            _move_into_place(stage, final)
        stage.rmdir()
        _finish(final)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if claimed_here:
            release_output_dir(final)


#: What a full disk raises: no space left, or the user's disk quota exceeded.
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


@contextmanager
def _disk_full_in_one_line(folder: Path) -> Iterator[None]:
    """Turn an :class:`OSError` of a full disk (ENOSPC, EDQUOT) raised in the block into one OutputError line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise OutputError(f"{_DISK_FULL[exc.errno]} while writing {folder}: free space there or pass "
                          "--output-dir on another disk") from None


def _move_into_place(stage: Path, final: Path) -> None:
    """Move every entry of ``stage`` into ``final`` (atomic renames), :data:`LAST_FILE` last; if a move fails,
    the entries already moved are removed again, so ``final`` never holds part of the results."""
    entries = sorted(stage.iterdir(), key=lambda e: e.name == LAST_FILE)
    moved: list[Path] = []
    with _signals_held():  # Ctrl-C or SIGTERM arrive after the moves, never between two of them
        try:
            for entry in entries:
                os.replace(entry, final / entry.name)
                moved.append(final / entry.name)
        except BaseException:
            for target in moved:
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
            raise


def _finish(path: Path) -> None:
    """The results are in place: remove the claim's marker (the claim itself ends with its process)."""
    claim = _CLAIMS.get(path)
    marker = path / CLAIM_FILE
    try:
        if claim is None or os.fstat(claim.fd).st_ino == os.stat(marker).st_ino:
            marker.unlink()
    except OSError:
        pass


def write_run_files(
    folder: str | os.PathLike,
    metrics: pd.DataFrame,
    figures: Mapping[str, object],
    models: Mapping[str, object],
) -> dict[str, Path]:
    """Write ``metrics.csv``, every figure as PNG and every model into ``folder`` (which exists).

    Files: ``metrics.csv``; ``<name>.png`` per figure; per model ``models/<model>.joblib`` (the
    fitted scikit-learn estimator, :func:`joblib.dump`; loading it needs this project's ``steps``
    package importable; a tree ensemble compacted by :func:`_compact_forest`) and, for XGBoost,
    ``models/xgboost.json`` (the booster in XGBoost's own
    JSON format, loadable with :meth:`xgboost.Booster.load_model`, cut to the rounds early stopping
    kept, so it predicts as the estimator does; its input is not the raw features but what the
    estimator's feature steps make of them, ``estimator[:-1].transform(X)``: the 8 features, 5
    rotated coordinates and, with ``spatial_neighbors`` > 0, 4 neighbour features, which need the
    training districts stored in the joblib file).

    :param metrics: the :func:`steps.evaluation.metrics_table`; ``figures``: ``{file stem: matplotlib Figure}``;
        ``models``: ``{model name: fitted estimator}``.
    :returns: ``{file name relative to folder: path}``.
    """
    import joblib

    folder = Path(folder)
    written: list[str] = []
    metrics.to_csv(folder / "metrics.csv", index=False)
    written.append("metrics.csv")
    for stem, fig in figures.items():
        fig.savefig(folder / f"{stem}.png", format="png", dpi=100)
        written.append(f"{stem}.png")
    (folder / "models").mkdir()
    for name, model in models.items():
        joblib.dump(_compact_forest(model) or model, folder / "models" / f"{name}.joblib", compress=MODEL_COMPRESSION)
        written.append(f"models/{name}.joblib")
        if name == "xgboost":
            booster = model[-1].get_booster()
            best = getattr(model[-1], "best_iteration", None)
            if best is not None:  # keep the rounds early stopping chose, as the estimator predicts
                booster = booster[: best + 1]
            booster.save_model(str(folder / "models" / "xgboost.json"))
            written.append("models/xgboost.json")
    return {rel: folder / rel for rel in written}


#: Per-node statistics of a fitted tree that prediction never reads (they feed ``feature_importances_``).
TREE_TRAINING_STATS = ("impurity", "n_node_samples", "weighted_n_node_samples")
#: zlib level of the ``.joblib`` files (default run: XGBoost 5.8 -> 2.2 MB in 0.2 s).
MODEL_COMPRESSION = 3


def _compact_forest(model) -> Optional[object]:
    """A copy of a fitted tree ensemble (the last step of ``model``) for storage, or None for other models.

    The copy predicts exactly as ``model`` does; its trees' :data:`TREE_TRAINING_STATS` and the values
    of their inner nodes (prediction reads the leaves') are zeroed, so its ``feature_importances_`` are
    not available; with zlib the default random forest's file is about 23 MB instead of 129 MB.
    """
    import copy

    estimator = model[-1] if hasattr(model, "steps") else model
    trees = getattr(estimator, "estimators_", None)
    if not trees or not all(hasattr(tree, "tree_") for tree in trees):
        return None
    compact = copy.deepcopy(model)
    for tree in (compact[-1] if hasattr(compact, "steps") else compact).estimators_:
        state = tree.tree_.__getstate__()
        nodes, values = state["nodes"].copy(), state["values"].copy()
        for field_name in TREE_TRAINING_STATS:
            nodes[field_name] = 0
        values[nodes["left_child"] != -1] = 0  # TREE_LEAF: -1
        tree.tree_.__setstate__({**state, "nodes": nodes, "values": values})
    return compact


def write_run_outputs(
    output_dir: str | os.PathLike,
    metrics: pd.DataFrame,
    figures: Mapping[str, object],
    models: Mapping[str, object],
) -> dict[str, Path]:
    """:func:`write_run_files` into ``output_dir``, all or nothing (through :func:`staged_output`).

    :returns: ``{file name relative to output_dir: final path}``.
    :raises OutputError: the folder is unusable (checked before anything is written), or the disk
        filled up while writing (one line naming the folder and the fix; nothing is left behind).
    """
    with staged_output(output_dir) as stage:
        written = write_run_files(stage, metrics, figures, models)
    final = Path(output_dir).expanduser().absolute()
    return {rel: final / rel for rel in written}


#: What a run trained on, beside its results: the data's source, SHA-256 and rows, and the split.
RUN_RECORD = "run.json"


def write_run_record(output_dir: str | os.PathLike, record: Mapping[str, object], since: float = 0.0) -> Optional[Path]:
    """Write ``record`` as ``output_dir/run.json`` (atomically) beside the results a run just wrote there.

    Nothing is written unless ``metrics.csv`` is there and newer than ``since`` (the run's start: a
    re-run writing elsewhere never labels another run's folder), or when ``run.json`` already exists.

    :returns: the file written, or None.
    """
    folder = Path(output_dir).expanduser()
    target = folder / RUN_RECORD
    try:
        if target.exists() or (folder / LAST_FILE).stat().st_mtime < since:
            return None
        partial = folder / f".{RUN_RECORD}.{uuid.uuid4().hex[:8]}"
        partial.write_text(json.dumps(dict(record), indent=1, default=str) + "\n")
        os.replace(partial, target)
    except OSError:  # no results here, or a read-only folder: the record is a convenience
        return None
    return target


def read_run_record(run_dir: str | os.PathLike) -> dict:
    """The record :func:`write_run_record` left in ``run_dir``; ``{}`` when there is none or it is unreadable."""
    try:
        record = json.loads((Path(run_dir).expanduser() / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
