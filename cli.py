"""The command line of ``clearml_pipeline.py``: parsing, checking, and the exit codes.

This module never imports ClearML (its tests need none): ClearML records every argparse result
parsed after ``import clearml`` into the task's ``Args``, where ``--mode`` or ``--queue`` would sit
beside the pipeline parameters and be replayed by a re-run from the web UI. So the command line
is parsed here, into one :class:`Startup` object, before ClearML is imported.

Commands::

    python clearml_pipeline.py [run options] [pipeline parameters]     # run the pipeline
    python clearml_pipeline.py import-offline PATH                      # upload an offline session
    python clearml_pipeline.py step-code DIR [--mode remote] [options]  # the code agents get
    python clearml_pipeline.py predict --run RUN_DIR --data CSV --output PRED_CSV [--model NAME]
    python clearml_pipeline.py register-data PATH [--dataset-project P] [--dataset-name N]  # a ClearML dataset version
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from steps.params import PYTHON_TYPES, PipelineParameters, flag_of, parameter_fields

PROJECT_ROOT = Path(__file__).resolve().parent
MODES = ("offline", "local", "remote")
COMMANDS = ("run", "import-offline", "step-code", "agent-controller", "predict", "register-data")
#: The ClearML dataset that ``register-data`` and ``--dataset-name`` use by default (see data_versions.py).
DATASET_PROJECT, DATASET_NAME = "California Housing", "cal_housing"

#: Exit codes, decided here only (see :func:`exit_code`).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input or environment; the message is shown as one line (exit 2)."""


class SetupError(Exception):
    """ClearML cannot start: no server configured or reachable, bad credentials, a missing queue,
    or a broken cache/config (exit 1)."""


def exit_code(exc: Optional[BaseException]) -> int:
    """The exit code of a run that ended with ``exc`` (``None``: success).

    0 success; 2 bad input (:class:`UsageError`, or a ``ValueError`` a step raised: ``DataError``,
    ``ParameterError``, ``OutputError``); 130 interrupted (Ctrl-C, SIGTERM); 1 anything else
    (a failed step, :class:`SetupError`, a lost server).
    """
    if exc is None:
        return EXIT_OK
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, (UsageError, ValueError)):
        return EXIT_USAGE
    return EXIT_FAILED


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the pipeline runs (not pipeline parameters: they never appear in ``Args``).

    :param mode: ``offline`` (no server), ``local`` (steps as subprocesses, tracked on the server)
        or ``remote`` (steps on agents).
    :param queue: queue of the steps in remote mode, and the default queue a re-run from the web UI
        sends the steps to (every mode that talks to a server).
    :param controller_queue: queue of the controller in remote mode; ``local`` runs it here.
    :param cache: reuse cached ``load``/``split`` results.
    :param dataset_project, dataset_name, dataset_version: a ClearML dataset version to train on,
        by name (empty version: the latest); resolved to the ``dataset_id`` parameter before any step.
        ``register-data`` registers into ``dataset_project``/``dataset_name``.
    """

    mode: str = "offline"
    queue: str = "default"
    controller_queue: str = "services"
    cache: bool = True
    dataset_project: str = DATASET_PROJECT
    dataset_name: str = ""
    dataset_version: str = ""

    @property
    def controller_on_queue(self) -> bool:
        """Whether an agent runs the controller (``--mode remote`` without ``--controller-queue local``)."""
        return self.mode == "remote" and self.controller_queue != "local"

    def queues(self) -> list[str]:
        """The queues that must exist on the server for this run."""
        if self.mode != "remote":
            return []
        return [self.queue] + ([self.controller_queue] if self.controller_on_queue else [])


@dataclasses.dataclass(frozen=True)
class Startup:
    """Everything decided before ClearML is imported: the one start-up state of the program.

    :param command: one of :data:`COMMANDS` (``agent-controller``: a ClearML agent runs the controller).
    :param options: the run options; ``params``: the checked pipeline parameters (``run``, ``step-code``).
    :param path: the folder or file argument of ``import-offline`` / ``step-code`` / ``register-data``.
    :param repository: ``(git URL, commit)`` that agents clone for the steps, or ``(None, None)``.
    """

    command: str = "run"
    options: RunOptions = RunOptions()
    params: Optional[PipelineParameters] = None
    path: str = ""
    repository: tuple[Optional[str], Optional[str]] = (None, None)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except empty ones (their help says what empty means)."""

    def _get_help_string(self, action):
        return action.help if action.default in ("", None, False) else super()._get_help_string(action)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse without abbreviations (``--poly-degre`` is refused), errors as one line (:class:`UsageError`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message}; see --help")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per pipeline parameter (defaults shown) plus the run options."""
    parser = _ArgumentParser(
        prog="clearml_pipeline.py",
        description="Train and compare regressors on California Housing as a ClearML pipeline.",
        formatter_class=_HelpFormatter,
        epilog="Other commands: 'python clearml_pipeline.py import-offline PATH' uploads an offline run "
        "(PATH: the session .zip a run printed) to the configured server; 'python clearml_pipeline.py "
        "step-code DIR [--mode remote] [options]' writes the code ClearML generates for each step; "
        "'python clearml_pipeline.py predict --run RUN_DIR --data CSV --output PRED_CSV' applies a run's "
        "models to a CSV (see predict --help); 'python clearml_pipeline.py register-data PATH' registers a CSV "
        "as a new version of a ClearML dataset and prints its id, for --dataset-id (see register-data --help).",
    )
    run = parser.add_argument_group("run options")
    run.add_argument("--mode", default="offline", help=f"where to run: one of {', '.join(MODES)}")
    run.add_argument("--queue", default="default",
                     help="ClearML queue of the steps (--mode remote; also where a re-run from the web UI sends them)")
    run.add_argument("--controller-queue", default="services",
                     help="queue of the pipeline controller (--mode remote); 'local' runs it on this machine")
    run.add_argument("--no-cache", action="store_true", help="run every step, even when a cached result exists")
    run.add_argument("--dataset-name", default="", metavar="NAME",
                     help="train on the latest version (or --dataset-version) of this ClearML dataset, instead of "
                     "--data or --dataset-id (--mode local/remote); its id becomes the run's dataset_id")
    run.add_argument("--dataset-version", default="", metavar="VERSION",
                     help="with --dataset-name: this version (e.g. 1.0.2) instead of the latest")
    run.add_argument("--dataset-project", default=DATASET_PROJECT, metavar="PROJECT",
                     help="with --dataset-name: the dataset's ClearML project")
    params = parser.add_argument_group("pipeline parameters (the run's Args in ClearML)")
    for f in parameter_fields():
        kind = PYTHON_TYPES[f.type]
        params.add_argument(flag_of(f), dest=f.name, type=kind, default=f.default, metavar=f.type.upper(),
                            help=f.metadata["help"])
    return parser


def parse_command_line(argv: list[str]) -> tuple[RunOptions, PipelineParameters]:
    """Parse and check the options of a run; everything is validated before any step runs.

    :raises UsageError: an unknown flag or mode, an out-of-range parameter, unusable data or output folder.
    """
    args = build_parser().parse_args(argv)
    if args.mode not in MODES:
        raise UsageError(f"unknown --mode {args.mode!r}; choose one of {', '.join(MODES)}")
    for name in ("queue", "controller_queue"):
        if len(getattr(args, name)) < 3:  # ClearML servers refuse shorter names
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)!r} is too short: ClearML queue "
                             "names have at least 3 characters")
    options = RunOptions(args.mode, args.queue, args.controller_queue, not args.no_cache,
                         args.dataset_project, args.dataset_name, args.dataset_version)
    values = {f.name: getattr(args, f.name) for f in parameter_fields()}
    versioned = bool(args.dataset_id or args.dataset_name)
    _check_dataset_options(args, options)
    return options, checked_parameters(values, check_data=options.mode != "remote" and not versioned)


def _check_dataset_options(args: argparse.Namespace, options: RunOptions) -> None:
    """``--dataset-id`` / ``--dataset-name``: one source of data, and a server to hold it."""
    from steps.params import DEFAULTS

    if args.dataset_version and not args.dataset_name:
        raise UsageError("--dataset-version needs --dataset-name (or pass the version's --dataset-id)")
    if not (args.dataset_id or args.dataset_name):
        return
    if args.dataset_id and args.dataset_name:
        raise UsageError("pass either --dataset-id or --dataset-name, not both")
    if args.data_path != DEFAULTS.data_path:
        raise UsageError("pass either --data or a ClearML dataset (--dataset-id / --dataset-name), not both")
    if options.mode == "offline":
        raise UsageError("a ClearML dataset (--dataset-id / --dataset-name) is kept on a ClearML server, which "
                         "--mode offline does not use; run with --mode local or --mode remote, or pass --data CSV")
    if args.dataset_name and (len(args.dataset_name) < 3 or len(args.dataset_project) < 3):
        raise UsageError("--dataset-name and --dataset-project need at least 3 characters (ClearML's rule)")


def build_register_parser() -> argparse.ArgumentParser:
    """The ``register-data`` command line: a CSV file into a new version of a ClearML dataset."""
    parser = _ArgumentParser(
        prog="clearml_pipeline.py register-data",
        description="Validate a CSV as a run would, then register it as a new version of a ClearML dataset "
        "(parent: the latest version), with its SHA-256, row count and layout as metadata; upload it, "
        "finalize it and print the new version's id (the last line), for --dataset-id. A file identical to "
        "a registered version creates nothing and prints that version's id.",
        formatter_class=_HelpFormatter,
        epilog="Needs a ClearML server (clearml.conf or CLEARML_API_*). Exit codes: 0 registered (or identical), "
        "2 bad input, 1 server problem, 130 interrupted.",
    )
    parser.add_argument("path", metavar="PATH", help="CSV in scikit-learn's or StatLib's layout, with the target column")
    parser.add_argument("--dataset-project", default=DATASET_PROJECT, metavar="PROJECT", help="ClearML project")
    parser.add_argument("--dataset-name", default=DATASET_NAME, metavar="NAME", help="ClearML dataset name")
    return parser


def parse_register(argv: list[str]) -> Startup:
    """``register-data PATH [--dataset-project P] [--dataset-name N]``: the cheap checks of the CSV, before ClearML.

    :raises UsageError: one line (the file, the names).
    """
    from steps.data import DataError, check_csv
    from steps.params import DEFAULTS

    args = build_register_parser().parse_args(argv)
    for flag, value in (("--dataset-project", args.dataset_project), ("--dataset-name", args.dataset_name)):
        if len(value.strip()) < 3:
            raise UsageError(f"{flag} {value!r} is too short: ClearML names have at least 3 characters")
    path = os.path.abspath(os.path.expanduser(args.path))
    try:
        check_csv(path, DEFAULTS.test_size)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    return Startup(command="register-data", path=path,
                   options=RunOptions(mode="local", dataset_project=args.dataset_project.strip(),
                                      dataset_name=args.dataset_name.strip()))


def checked_parameters(values: dict, check_data: bool = True) -> PipelineParameters:
    """Validate parameter values and their paths (data readable, output folder usable, both absolute).

    :raises UsageError: naming the parameter and the fix.
    """
    from steps.params import ParameterError

    try:
        params = PipelineParameters(**values).validate()
    except ParameterError as exc:
        raise UsageError(str(exc)) from None
    try:
        return _checked_paths(params, check_data)
    except OSError as exc:  # a name too long, a deleted current folder, ...
        raise UsageError(f"{exc.filename or 'a path'}: {exc.strerror or exc}; check --data and --output-dir "
                         "(and that the current folder exists)") from None


def _checked_paths(params: PipelineParameters, check_data: bool) -> PipelineParameters:
    from steps.datafile import portable_data_path
    from steps.outputs import check_output_dir, new_run_dir

    if params.data_path:
        params = dataclasses.replace(params, data_path=os.path.expanduser(params.data_path))
    if params.data_path and params.data_path != "sklearn" and not check_data and os.path.isfile(params.data_path):
        # remote: the path is read on the agents' machines; a file inside the project is found
        # there under the same path relative to the project root
        params = dataclasses.replace(params, data_path=portable_data_path(params.data_path))
    if params.data_path and params.data_path != "sklearn" and check_data:
        from steps.data import DataError, check_csv

        try:  # fail on a bad path, header or row count now, before ClearML starts
            check_csv(params.data_path, params.test_size)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        params = dataclasses.replace(params, data_path=portable_data_path(params.data_path))
    output_dir = params.output_dir or str(new_run_dir(Path.cwd() / "runs"))
    for name, path in (("--output-dir", output_dir), ("--data", params.data_path)):
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{name} {path!r} has bytes that are not UTF-8 text; rename the folder or file") from None
    try:
        check_output_dir(output_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return dataclasses.replace(params, output_dir=str(Path(output_dir).expanduser().absolute()))


def build_predict_parser() -> argparse.ArgumentParser:
    """The ``predict`` command line: apply a run's saved models to a CSV (ClearML is not used)."""
    parser = _ArgumentParser(
        prog="clearml_pipeline.py predict",
        description="Apply the saved models of a training run to a CSV file and write their predictions "
        "of the median house value ($100k), one column pred_<model> per model. ClearML is not used.",
        formatter_class=_HelpFormatter,
        epilog="The output CSV has one line per data row of --data, in its order: row (1-based data row), "
        "MedHouseVal (the actual value, only when --data has a target column) and pred_<model> per model. "
        "When --data has a target column, R2, RMSE and MAE of each model are printed (rows the models were "
        "trained on score better than new data). Exit codes: 0 done, 2 bad input, 1 other failure, 130 interrupted.",
    )
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="folder of a training run (the 'results:' folder it printed; it holds models/)")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="CSV in scikit-learn's or StatLib's layout; the target column (MedHouseVal or "
                        "median_house_value) is optional")
    parser.add_argument("--output", required=True, metavar="PRED_CSV",
                        help="new CSV file for the predictions (never overwritten; its folder must exist)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="predict with this model of the run only (e.g. xgboost); default: every model")
    return parser


def predict_main(argv: list[str]) -> int:
    """``predict --run RUN_DIR --data CSV --output PRED_CSV [--model NAME]``: see :func:`steps.predict.predict_csv`.

    Prints the metrics table (when the CSV has a target) and the output path on stdout, warnings
    (``WARNING: ...``) and a one-line ``error: ...`` on stderr.

    :returns: the exit code: 0 done, 2 bad input (argument, run folder, model name, CSV, output
        path), 1 another failure (e.g. disk full while writing), 130 interrupted.
    """
    import signal

    # Ctrl-C/SIGTERM raise KeyboardInterrupt, so the output's temporary file is removed on the way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    configure_console()
    try:
        args = build_predict_parser().parse_args(argv)
        from steps.predict import predict_csv

        predictions, metrics = predict_csv(args.run, args.data, args.output, model=args.model)
    except (UsageError, ValueError, KeyboardInterrupt) as exc:  # argparse, DataError, PredictError: one line
        print(f"error: {'interrupted' if isinstance(exc, KeyboardInterrupt) else exc}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # e.g. the disk filled up while writing
        print(f"error: {exc.filename or 'writing the predictions'}: {exc.strerror or exc}", file=sys.stderr)
        return exit_code(exc)
    if metrics is not None:
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"predictions: {Path(args.output).expanduser().absolute()} ({len(predictions):,} rows, "
          f"{', '.join(c for c in predictions.columns if c.startswith('pred_'))})")
    return exit_code(None)


class _OneLineFormatter(logging.Formatter):
    def format(self, record) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def configure_console() -> None:
    """One line per message on stderr: the steps' progress and warnings (``steps.*`` loggers, INFO
    and up) as ``info:``/``warning:``, and every Python warning from a library as ``warning: <text>``,
    without the file path and source line Python prints by default."""
    import warnings

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    logger = logging.getLogger("steps")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def one_line(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        (file or sys.stderr).write(f"warning: {text}\n")

    warnings.showwarning = one_line


def step_repository(root: Path = PROJECT_ROOT, required: bool = True) -> tuple[Optional[str], Optional[str]]:
    """The git remote URL and commit from which ClearML agents get this project's code.

    ClearML does not give a step its controller's repository (clearml issue #1370), so each
    component names it. The URL and the commit are read here, explicitly: the SDK's own
    conversion of a local checkout fails for function steps in clearml 2.1.12.

    :param required: ``True`` (``--mode remote``): no usable remote is an error. ``False``
        (``--mode local``): returns ``(None, None)``; the run works, but a re-run from the web UI
        cannot (a warning says so).
    :raises UsageError: (``required``) git is missing, ``root`` is not a git checkout, it has no
        ``origin`` remote, or that remote is a local path.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    problem = None
    try:
        url, commit = git("remote", "get-url", "origin"), git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        url = commit = None
        problem = (f"agents clone this project with git, but {root} is not a git checkout with an 'origin' remote "
                   "and a commit; push it to a repository the agents can reach (git remote add origin URL && "
                   "git push) and run from that checkout")
    if url and "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url):
        problem = (f"the git remote 'origin' of {root} is a local path ({url}); agents need a URL they can clone "
                   "(https://..., git@host:... or file:///...): git remote set-url origin URL")
    if problem:
        if required:
            raise UsageError(f"--mode remote: {problem}")
        print(f"warning: a re-run from the web UI will not find the code: {problem}", file=sys.stderr)
        return None, None
    if git("status", "--porcelain", "--untracked-files=no"):
        print(f"warning: {root} has uncommitted changes; agents run commit {commit[:12]} without them",
              file=sys.stderr)
    return url, commit


def _agent_controller(environ: Mapping[str, str]) -> bool:
    """Whether a ClearML agent started this process to run the controller task.

    An agent sets ``CLEARML_TASK_ID`` and its worker id; a step subprocess of ``--mode local``
    sets ``CLEARML_SIMULATE_REMOTE_TASK`` (and never runs this script).
    """
    return bool(environ.get("CLEARML_TASK_ID")) and not environ.get("CLEARML_SIMULATE_REMOTE_TASK")


def parse_startup(argv: list[str], environ: Mapping[str, str] = os.environ) -> Startup:
    """Decide the command and check all its input, before ClearML is imported.

    :param argv: ``sys.argv[1:]``.
    :raises UsageError: one line naming the problem and the fix.
    """
    if _agent_controller(environ):
        if argv:  # an agent runs the stored script without arguments
            raise UsageError(
                f"CLEARML_TASK_ID={environ['CLEARML_TASK_ID']} is set, as inside a ClearML agent's task, so "
                "this run would attach to that task and ignore the command line; unset it "
                "(unset CLEARML_TASK_ID) and run again"
            )
        if not (environ.get("CLEARML_WORKER_ID") or environ.get("CLEARML_LOG_TASK_TO_BACKEND")):
            raise UsageError(
                f"CLEARML_TASK_ID={environ['CLEARML_TASK_ID']} is set, but no ClearML agent started this process "
                "(it sets CLEARML_WORKER_ID or CLEARML_LOG_TASK_TO_BACKEND); it is probably left over from "
                "debugging: unset CLEARML_TASK_ID and run again"
            )
        return Startup(command="agent-controller", options=RunOptions(mode="remote"))
    if argv[:1] == ["import-offline"]:
        if len(argv) != 2 or argv[1].startswith("-"):
            raise UsageError("usage: python clearml_pipeline.py import-offline PATH (an offline session .zip or folder)")
        path = Path(argv[1]).expanduser()
        if not path.exists():
            raise UsageError(f"offline session not found: {path}; pass the .zip printed by an offline run")
        if path.is_file() and not zipfile.is_zipfile(path):
            raise UsageError(f"{path} is not a zip file, so not an offline session; pass the .zip printed by an "
                             "offline run (or its folder)")
        return Startup(command="import-offline", path=str(path))
    if argv[:1] == ["register-data"]:
        return parse_register(argv[1:])
    command, path = "run", ""
    if argv[:1] == ["step-code"]:
        command, path, argv = "step-code", (argv[1:2] or ["-"])[0], argv[2:]
        folder = Path(path)
        if path.startswith("-") or (folder.exists() and not folder.is_dir()) or (
                folder.is_dir() and any(folder.iterdir())):
            raise UsageError("usage: python clearml_pipeline.py step-code DIR [--mode remote] [options]; "
                             "DIR must be a new or empty folder")
    options, params = parse_command_line(argv)
    if command == "run" and options.mode != "remote":  # remote: the folder is on the agent's machine
        from steps.outputs import OutputError, claim_output_dir

        try:  # atomically, before any step: a second run into the same folder is refused at once
            claim_output_dir(params.output_dir)
        except OutputError as exc:
            raise UsageError(str(exc)) from None
    repository: tuple[Optional[str], Optional[str]] = (None, None)
    if options.mode != "offline":
        repository = step_repository(required=options.mode == "remote")
    return Startup(command=command, options=options, params=params, path=path, repository=repository)
