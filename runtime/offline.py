"""The offline session of ``--mode offline``: ClearML's offline mode, with no server.

The controller task is created here rather than by the pipeline decorator, so that argparse,
joblib, scikit-learn and matplotlib are not auto-connected (the command line is not a pipeline
parameter; models and figures are reported once, explicitly, by the steps). The decorator then
adopts it (it uses ``Task.current_task()`` when there is one).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import SetupError

#: What a user's ClearML cache is when nothing sets it (ClearML's own default).
DEFAULT_CACHE = "~/.clearml/cache"
#: Offline sessions kept in ``<cache>/offline``: the newest :data:`KEEP_SESSIONS`, at most :data:`KEEP_MB` in all.
KEEP_SESSIONS = 10
KEEP_MB = 200
#: A session (zip or folder) younger than this may belong to a run still going: never removed.
SETTLE_SECONDS = 3600


@contextlib.contextmanager
def readable_config() -> Iterator[None]:
    """ClearML parses its configuration file on first use: a broken one becomes one :class:`SetupError` line."""
    try:
        yield
    except Exception as exc:
        if "clearml" not in type(exc).__module__ and "pyparsing" not in type(exc).__module__:
            raise
        path = os.environ.get("CLEARML_CONFIG_FILE", "~/clearml.conf")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SetupError(f"ClearML cannot read its configuration file {path} ({first}); fix it (it is HOCON, "
                         "see clearml.conf.example) or point CLEARML_CONFIG_FILE at a valid clearml.conf") from None


def configure_sdk(**development) -> None:
    """Make ClearML report from a thread of this process, not a forked subprocess (plus any other
    ``sdk.development`` settings given), through the SDK's own configuration overrides.

    ``sdk.development.report_use_subprocess`` defaults to true on Linux; its fork-with-threads
    subprocess can deadlock at exit (runs seen stuck for minutes in ``wait_for_sub_process``).

    :raises SetupError: the configuration file is broken.
    """
    from clearml.config import config_obj

    with readable_config():
        config_obj.set_overrides({"sdk": {"development": {"report_use_subprocess": False, **development}}})


def cache_folder() -> str:
    """The ClearML cache folder (offline sessions go to its ``offline/``), as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.environ.get("CLEARML_CACHE_DIR", DEFAULT_CACHE)))


def start_offline_controller(project: str, name: str):
    """Start the controller task of an offline run and return it.

    :raises SetupError: the ClearML cache folder or configuration file is unusable.
    """
    from clearml import Task

    # Repository detection inside Task.init, not in a thread: the thread parses source files while the
    # decorator parses this one, and concurrent ast.parse calls break on Python 3.11 (cpython#106905).
    configure_sdk(vcs_repo_detect_async=False)
    # A checkout without a git remote is normal for a laptop run; the session records the code anyway.
    logging.getLogger("clearml.Repository Detection").setLevel(logging.ERROR)
    try:
        Task.set_offline(offline_mode=True)
        task = Task.init(
            project_name=project, task_name=name, task_type=Task.TaskTypes.controller,
            auto_connect_arg_parser=False, auto_resource_monitoring=False, reuse_last_task_id=False,
            auto_connect_frameworks={"matplotlib": False, "joblib": False, "scikit": False, "xgboost": False,
                                     "detect_repository": True},
        )
    except Exception as exc:  # a broken ClearML cache folder or configuration file
        raise SetupError(
            f"ClearML could not start its offline session ({type(exc).__name__}: {exc}); check that the cache "
            f"folder {cache_folder()} (CLEARML_CACHE_DIR or sdk.storage.cache.default_base_dir) is a writable "
            "folder and that CLEARML_CONFIG_FILE, if set, is a valid clearml.conf"
        ) from None
    folder = Path(task.get_offline_mode_folder())
    prune_sessions(folder.parent, own=folder.name)
    atexit.register(drop_zipped_folder, folder, 0)  # after ClearML zipped it (task.close): one copy, the zip
    return task


def session_zip(task) -> str:
    """The absolute path of the ``.zip`` ClearML writes for an offline task when it closes."""
    return os.path.abspath(f"{task.get_offline_mode_folder()}.zip")


def drop_zipped_folder(folder: Path, settle: float = SETTLE_SECONDS) -> bool:
    """Remove an offline session's folder once its ``.zip`` (written when the task closed) holds it whole.

    :param settle: seconds the zip must be old (another run may be writing it); 0 for this run's own.
    :returns: whether the folder was removed.
    """
    archive = folder.with_name(f"{folder.name}.zip")
    try:
        whole = (folder.is_dir() and archive.is_file() and time.time() - archive.stat().st_mtime >= settle
                 and zipfile.is_zipfile(archive))
    except OSError:
        return False
    if whole:
        shutil.rmtree(folder, ignore_errors=True)
    return whole


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def prune_sessions(offline: Path, own: str = "", keep: int = KEEP_SESSIONS, keep_mb: float = KEEP_MB) -> list[Path]:
    """Bound the offline sessions in ``offline`` (``<cache>/offline``): keep the newest ``keep`` ones (``own``, this
    run's, counted), at most ``keep_mb`` MB in all; remove the rest, and the folders their zips already hold.

    A session is ``offline-<id>.zip``, or ``offline-<id>/`` where no zip was written (a killed run). The
    session ``own`` and anything younger than :data:`SETTLE_SECONDS` (a run still going) are never removed.

    :returns: what was removed.
    """
    removed = [f for f in offline.glob("offline-*") if f.is_dir() and f.name != own and drop_zipped_folder(f)]
    sessions = [p for p in offline.glob("offline-*") if p.name != own and p.name != f"{own}.zip"
                and (p.suffix == ".zip" or (p.is_dir() and not p.with_name(f"{p.name}.zip").exists()))]
    total = 0.0
    for rank, session in enumerate(sorted(sessions, key=lambda p: p.stat().st_mtime, reverse=True)):
        total += _size_mb(session)
        if (rank < keep - 1 and total <= keep_mb) or time.time() - session.stat().st_mtime < SETTLE_SECONDS:
            continue
        try:
            shutil.rmtree(session) if session.is_dir() else os.remove(session)
        except OSError:  # another run removed it first
            continue
        removed.append(session)
    return removed


def web_ui_line(archive: str) -> str:
    """How to see an offline run in the web UI: upload its session to the server configured, or get a server."""
    from runtime.server import server_settings

    host, key, secret = server_settings()
    upload = f"python clearml_pipeline.py import-offline {shlex.quote(archive)}"
    if host and key and secret:
        return f"web UI: upload the session to the server configured ({host}): {upload}"
    return ("web UI: no ClearML server is configured; get one (free: https://app.clear.ml, or self-hosted: README, "
            f"'Running against a ClearML server'), run clearml-init with its credentials, then: {upload}")


def record_run(task, output_dir: Path) -> None:
    """Write what the run trained on (data source, SHA-256, rows; test_size, random_state) beside its results
    (:func:`steps.outputs.write_run_record`), from the run's task: what ``predict`` compares its data with."""
    import psutil  # a ClearML dependency

    from steps.outputs import write_run_record

    try:
        if not task.is_offline():
            task.reload()  # the user properties the controller set through the server
        params = task.get_parameters_as_dict(cast=True)
        record = {key: value for key, value in params.get("properties", {}).items() if key.startswith("data_")}
        if str(record.get("data_rows", "")).isdigit():  # user properties are text
            record["data_rows"] = int(record["data_rows"])
        record.update({name: params.get("Args", {}).get(name) for name in ("test_size", "random_state")})
        write_run_record(output_dir, record, since=psutil.Process().create_time())
    except Exception:  # a convenience for predict: never the reason a finished run fails
        pass
