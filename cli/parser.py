"""The flags of a run: one per pipeline parameter (from :mod:`steps.params`) plus the run options, all checked.

Everything is validated here, before ClearML starts: an unknown flag or mode, an out-of-range
parameter, unusable data or output folder are one line and exit 2 (:class:`cli.errors.UsageError`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from cli.errors import UsageError
from runtime.components import RunSettings
from runtime.data_versions import DEFAULT_PROJECT as DATASET_PROJECT
from steps.params import PYTHON_TYPES, PipelineParameters, flag_of, parameter_fields

#: The modes a user chooses (``agent``: an agent runs the controller, never chosen on the command line).
MODES = ("offline", "local", "remote")


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
    :param mlflow: also log the run to MLflow (``tracking/mlflow_run.py``).
    """

    mode: str = "offline"
    queue: str = "default"
    controller_queue: str = "services"
    cache: bool = True
    dataset_project: str = DATASET_PROJECT
    dataset_name: str = ""
    dataset_version: str = ""
    mlflow: bool = False

    def settings(self, repository=(None, None), models: tuple[str, ...] = ()) -> RunSettings:
        """The :class:`runtime.components.RunSettings` of a run with these options."""
        return RunSettings(mode=self.mode, queue=self.queue, controller_queue=self.controller_queue, cache=self.cache,
                           repository=repository, mlflow=self.mlflow, **({"models": tuple(models)} if models else {}))

    def queues(self) -> list[str]:
        """The queues that must exist on the server for this run."""
        if self.mode != "remote":
            return []
        return [self.queue] + ([self.controller_queue] if self.controller_queue != "local" else [])


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
        "as a new version of a ClearML dataset and prints its id, for --dataset-id (see register-data --help); "
        "'python clearml_pipeline.py optimize' tunes the parameters with ClearML's optimizer (see optimize --help).",
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
    run.add_argument("--mlflow", action="store_true",
                     help="also log the run to MLflow (MLFLOW_TRACKING_URI, else MLflow's default store); needs: "
                     "pip install -r requirements-mlflow.txt")
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
                         args.dataset_project, args.dataset_name, args.dataset_version, args.mlflow)
    if options.mlflow:
        _check_mlflow()
    values = {f.name: getattr(args, f.name) for f in parameter_fields()}
    versioned = bool(args.dataset_id or args.dataset_name)
    _check_dataset_options(args, options)
    return options, checked_parameters(values, check_data=options.mode != "remote" and not versioned)


def _check_mlflow() -> None:
    from tracking.mlflow_run import INSTALL_HINT, mlflow_available

    if not mlflow_available():
        raise UsageError(f"--mlflow needs MLflow, which is not installed; install it with: {INSTALL_HINT}")


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
    # no --output-dir: stays empty in the run's Args (cli.main claims a new runs/ folder here; an agent makes its own)
    return dataclasses.replace(params, output_dir=str(Path(output_dir).expanduser().absolute()) if params.output_dir else "")


