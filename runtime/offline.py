"""The offline session of ``--mode offline``: ClearML's offline mode, with no server.

The controller task is created here rather than by the pipeline decorator, so that argparse,
joblib, scikit-learn and matplotlib are not auto-connected (the command line is not a pipeline
parameter; models and figures are reported once, explicitly, by the steps). The decorator then
adopts it (it uses ``Task.current_task()`` when there is one).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from runtime.errors import SetupError

#: What a user's ClearML cache is when nothing sets it (ClearML's own default).
DEFAULT_CACHE = "~/.clearml/cache"


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
        return Task.init(
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


def session_zip(task) -> str:
    """The absolute path of the ``.zip`` ClearML writes for an offline task when it closes."""
    return os.path.abspath(f"{task.get_offline_mode_folder()}.zip")
