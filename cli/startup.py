"""Which command, with what: everything decided from the command line and the environment before ClearML starts.

Commands::

    python clearml_pipeline.py [run options] [pipeline parameters]     # run the pipeline
    python clearml_pipeline.py import-offline PATH                      # upload an offline session
    python clearml_pipeline.py step-code DIR [--mode remote] [options]  # the code agents get
    python clearml_pipeline.py predict --run RUN_DIR --data CSV --output PRED_CSV [--model NAME]
    python clearml_pipeline.py register-data PATH [--dataset-project P] [--dataset-name N]
    python clearml_pipeline.py optimize [--mode local] [--trials N] [options]   # see optimize --help
    (an agent running a controller task: no arguments, CLEARML_TASK_ID set)
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from cli.errors import UsageError
from cli.parser import RunOptions, parse_command_line
from steps.params import PipelineParameters

COMMANDS = ("run", "import-offline", "step-code", "agent-controller", "predict", "register-data", "optimize",
            "optimize-trial")


@dataclasses.dataclass(frozen=True)
class Startup:
    """The command and its checked input.

    :param command: one of :data:`COMMANDS` (``agent-controller``: a ClearML agent runs the controller).
    :param options: the run options; ``params``: the checked pipeline parameters (``run``, ``step-code``).
    :param path: the folder or file argument of ``import-offline`` / ``step-code`` / ``register-data``.
    :param optimize: the checked options of ``optimize`` (``optimize-trial``: a ``--mode local`` trial).
    """

    command: str = "run"
    options: RunOptions = RunOptions()
    params: Optional[PipelineParameters] = None
    path: str = ""
    optimize: Optional[object] = None


def _agent_controller(environ: Mapping[str, str]) -> bool:
    """Whether a ClearML agent started this process to run the controller task (it sets
    ``CLEARML_TASK_ID``; a ``--mode local`` step subprocess also sets ``CLEARML_SIMULATE_REMOTE_TASK``)."""
    return bool(environ.get("CLEARML_TASK_ID")) and not environ.get("CLEARML_SIMULATE_REMOTE_TASK")


def _agent_startup(argv: list[str], environ: Mapping[str, str]) -> Startup:
    task = environ["CLEARML_TASK_ID"]
    if argv:  # an agent runs the stored script without arguments
        raise UsageError(f"CLEARML_TASK_ID={task} is set, as inside a ClearML agent's task, so this run would "
                         "attach to that task and ignore the command line; unset it (unset CLEARML_TASK_ID) and run again")
    if not (environ.get("CLEARML_WORKER_ID") or environ.get("CLEARML_LOG_TASK_TO_BACKEND")):
        raise UsageError(f"CLEARML_TASK_ID={task} is set, but no ClearML agent started this process (it sets "
                         "CLEARML_WORKER_ID or CLEARML_LOG_TASK_TO_BACKEND); it is probably left over from "
                         "debugging: unset CLEARML_TASK_ID and run again")
    return Startup(command="agent-controller", options=RunOptions(mode="remote"))


def _import_startup(argv: list[str]) -> Startup:
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError("usage: python clearml_pipeline.py import-offline PATH (an offline session .zip or folder)")
    path = Path(argv[0]).expanduser()
    if not path.exists():
        raise UsageError(f"offline session not found: {path}; pass the .zip printed by an offline run")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a zip file, so not an offline session; pass the .zip printed by an "
                         "offline run (or its folder)")
    return Startup(command="import-offline", path=str(path))


def _step_code_folder(argv: list[str]) -> str:
    path = (argv[:1] or ["-"])[0]
    folder = Path(path)
    if path.startswith("-") or (folder.exists() and not folder.is_dir()) or (folder.is_dir() and any(folder.iterdir())):
        raise UsageError("usage: python clearml_pipeline.py step-code DIR [--mode remote] [options]; "
                         "DIR must be a new or empty folder")
    return path


def parse_startup(argv: list[str], environ: Mapping[str, str] = os.environ) -> Startup:
    """Decide the command and check all its input, before ClearML is imported.

    :param argv: ``sys.argv[1:]``.
    :raises UsageError: one line naming the problem and the fix.
    """
    from cli.optimize_command import LOCAL_TRIAL_ENV

    if environ.get(LOCAL_TRIAL_ENV) and environ.get("CLEARML_TASK_ID") and not argv:
        return Startup(command="optimize-trial")  # started by `optimize --mode local` (LocalClearmlJob)
    if _agent_controller(environ):
        return _agent_startup(argv, environ)
    if argv[:1] == ["optimize"]:
        from cli.optimize_command import parse_optimize

        return Startup(command="optimize", optimize=parse_optimize(argv[1:]))
    if argv[:1] == ["import-offline"]:
        return _import_startup(argv[1:])
    if argv[:1] == ["register-data"]:
        from cli.register_command import parse_register

        path, options = parse_register(argv[1:])
        return Startup(command="register-data", path=path, options=options)
    if argv[:1] == ["step-code"]:
        if argv[1:2] in (["-h"], ["--help"]):  # as argparse answers --help: the usage, exit 0
            print("usage: python clearml_pipeline.py step-code DIR [--mode remote] [the run options and parameters "
                  "of 'python clearml_pipeline.py --help']\n\nWrites, for each step, the standalone script ClearML "
                  "generates for agents (DIR/<step>.py), its task definition (DIR/<step>.json) and the DAG "
                  "(DIR/pipeline.json). DIR must be a new or empty folder.")
            raise SystemExit(0)
        path = _step_code_folder(argv[1:])
        options, params = parse_command_line(argv[2:])
        return Startup(command="step-code", options=options, params=params, path=path)
    options, params = parse_command_line(argv)
    return Startup(command="run", options=options, params=params)
