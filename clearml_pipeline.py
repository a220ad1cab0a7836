"""California Housing regression as a ClearML pipeline of decorated steps.

load -> split -> train (polynomial regression, XGBoost; optionally linear, random forest) -> evaluate.

Run modes (``--mode``):

* ``offline`` (default): no server. ClearML offline mode, every step run in this process
  (``PipelineDecorator.debug_pipeline()``); the run is recorded in an offline session that
  ``python clearml_pipeline.py import-offline <zip>`` uploads to a server later.
* ``local``: against the ClearML server configured in ``clearml.conf`` / ``CLEARML_*``; every
  step is its own task, run as a subprocess here (``PipelineDecorator.run_locally()``).
* ``remote``: steps are enqueued on ``--queue`` for ClearML agents; the controller runs on
  ``--controller-queue`` (default ``services``) or here with ``--controller-queue local``.

Every pipeline parameter is defined once, in :class:`steps.params.PipelineParameters`.
"""


import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Optional

def _exit_interrupted(signum, frame):
    """Ctrl-C/SIGTERM before the run has a ClearML task: nothing to record or clean up, so leave now."""
    sys.stderr.write("error: interrupted\n")
    os._exit(130)


if __name__ == "__main__":  # until the offline session exists (see _start_offline_controller)
    for _signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signal, _exit_interrupted)

# OpenMP threads (XGBoost, scikit-learn) that spin while they wait make a fit 5-10x slower whenever
# another process holds a core (measured: 10.5 s instead of 1.4-2.3 s on 2 busy cores); passive
# waiting costs nothing measurable on an idle machine. Set before any OpenMP library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from steps.artifacts import deserialize_artifact, serialize_artifact  # noqa: E402
from steps.params import DEFAULTS, PipelineParameters, flag_of, parameter_fields  # noqa: E402

PROJECT = "California Housing"
PIPELINE_NAME = "tabular regression"
PIPELINE_VERSION = "1.0.0"
MODES = ("offline", "local", "remote")
STEP_NAMES = ("load", "split", "train_polynomial", "train_xgboost", "train_linear", "train_random_forest", "evaluate")


class UsageError(Exception):
    """Bad command-line input or environment; the message is shown as one line."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the pipeline runs (not pipeline parameters: they never appear in ``Args``)."""

    mode: str = "offline"
    queue: str = "default"
    controller_queue: str = "services"
    cache: bool = True


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except empty ones (their help says what empty means)."""

    def _get_help_string(self, action):
        return action.help if action.default in ("", None, False) else super()._get_help_string(action)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``UsageError``) instead of a usage block."""

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
        "step-code DIR [--mode remote] [options]' writes the code ClearML generates for each step.",
    )
    run = parser.add_argument_group("run options")
    run.add_argument("--mode", default="offline", help=f"where to run: one of {', '.join(MODES)}")
    run.add_argument("--queue", default="default", help="ClearML queue of the steps (--mode remote)")
    run.add_argument(
        "--controller-queue",
        default="services",
        help="queue of the pipeline controller (--mode remote); 'local' runs it on this machine",
    )
    run.add_argument("--no-cache", action="store_true", help="run every step, even when a cached result exists")
    params = parser.add_argument_group("pipeline parameters (the run's Args in ClearML)")
    for f in parameter_fields():
        kind = {"str": str, "int": int, "float": float}[f.type]
        params.add_argument(flag_of(f), dest=f.name, type=kind, default=f.default, metavar=f.type.upper(),
                            help=f.metadata["help"])
    return parser


def parse_command_line(argv: list[str]) -> tuple[RunOptions, PipelineParameters]:
    """Parse and check ``argv``; everything is validated before any step runs.

    :raises UsageError: an unknown mode, an out-of-range parameter or an unusable output folder.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode not in MODES:
        raise UsageError(f"unknown --mode {args.mode!r}; choose one of {', '.join(MODES)}")
    options = RunOptions(args.mode, args.queue, args.controller_queue, not args.no_cache)
    values = {f.name: getattr(args, f.name) for f in parameter_fields()}
    params = _validated(values, check_data=options.mode != "remote")
    return options, params


def _validated(values: dict, check_data: bool = True) -> PipelineParameters:
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
    from steps.evaluation import check_output_dir, new_run_dir

    if params.data_path:
        params = dataclasses.replace(params, data_path=os.path.expanduser(params.data_path))
    if params.data_path and check_data:  # remote: the path is read on the agents' machines
        from steps.data import DataError, check_csv

        try:  # fail on a bad path, header or row count now, before ClearML starts
            check_csv(params.data_path, params.test_size)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        params = dataclasses.replace(params, data_path=str(Path(params.data_path).expanduser().resolve()))
    output_dir = params.output_dir or str(new_run_dir(Path.cwd() / "runs"))
    try:
        check_output_dir(output_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return dataclasses.replace(params, output_dir=str(Path(output_dir).expanduser().absolute()))


def step_repository(root: Path = PROJECT_ROOT) -> tuple[str, str]:
    """The git remote URL and commit from which ClearML agents get this project's code (remote mode).

    ClearML does not give a step its controller's repository (clearml issue #1370), so each
    component names it. The URL and the commit are read here, explicitly: the SDK's own
    conversion of a local checkout fails for function steps in clearml 2.1.12.

    :raises UsageError: git is missing, ``root`` is not a git checkout, or it has no ``origin`` remote.
    """
    import re
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        url, commit = git("remote", "get-url", "origin"), git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        raise UsageError(
            f"--mode remote: agents clone this project with git, but {root} is not a git checkout with an "
            "'origin' remote and a commit; push it to a repository the agents can reach "
            "(git remote add origin URL && git push) and run from that checkout"
        ) from None
    if "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url):
        raise UsageError(
            f"--mode remote: the git remote 'origin' of {root} is a local path ({url}); agents need a URL "
            "they can clone (https://... or git@host:...): git remote set-url origin URL"
        )
    if git("status", "--porcelain", "--untracked-files=no"):
        print(f"warning: {root} has uncommitted changes; agents run commit {commit[:12]} without them",
              file=sys.stderr)
    return url, commit


# ClearML records every argparse result parsed after `import clearml` and copies it into the
# task's Args, where --mode/--queue would sit beside the pipeline parameters and be replayed by a
# re-run from the web UI. So the command line is parsed before ClearML is imported.
COMMAND, RUN, CLI_PARAMS, CLI_ERROR = "run", RunOptions(), None, None
STEP_REPOSITORY: tuple[Optional[str], Optional[str]] = (None, None)
if os.environ.get("CLEARML_TASK_ID") and not os.environ.get("CLEARML_SIMULATE_REMOTE_TASK"):
    RUN = RunOptions(mode="remote")  # the controller, started by a ClearML agent
elif __name__ == "__main__" and sys.argv[1:2] == ["import-offline"]:
    COMMAND = "import-offline"
elif __name__ == "__main__":
    _argv = sys.argv[1:]
    try:
        if _argv[:1] == ["step-code"]:
            COMMAND, _folder, _argv = "step-code", (_argv[1:2] or ["-"])[0], _argv[2:]
            if _folder.startswith("-") or (Path(_folder).exists() and not Path(_folder).is_dir()) or (
                    Path(_folder).is_dir() and any(Path(_folder).iterdir())):
                raise UsageError("usage: python clearml_pipeline.py step-code DIR [--mode remote] [options]; "
                                 "DIR must be a new or empty folder")
        RUN, CLI_PARAMS = parse_command_line(_argv)
        STEP_REPOSITORY = step_repository() if RUN.mode == "remote" else STEP_REPOSITORY
    except UsageError as _exc:
        CLI_ERROR = str(_exc)
    if CLI_ERROR:  # answer bad input at once, without loading ClearML
        print(f"error: {CLI_ERROR}", file=sys.stderr)
        sys.exit(2)
    if COMMAND == "step-code":  # its throw-away offline task stays out of the user's ClearML cache
        os.environ["CLEARML_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="clearml-step-code-")

from clearml import PipelineDecorator, Task  # noqa: E402

# Packages each step needs on an agent (ranges as in requirements.txt).
_NUMPY, _PANDAS, _SKLEARN = "numpy>=1.26,<3", "pandas>=2.2,<4", "scikit-learn>=1.6,<1.10"
_XGBOOST, _MATPLOTLIB, _JOBLIB = "xgboost>=2.1,<4", "matplotlib>=3.8,<4", "joblib>=1.3"
# Agents get the code of `steps/` from this repository at its current commit (remote mode only:
# locally the steps import it from the working copy).
_STEP_REPO, _STEP_COMMIT = STEP_REPOSITORY
_METRIC_SERIES = [(metric, model) for metric in ("R2", "RMSE", "MAE") for model in
                  ("polynomial", "xgboost", "linear", "random_forest")]


@PipelineDecorator.component(
    name="load", return_values=["dataset"], cache=RUN.cache, task_type="data_processing",
    packages=[_NUMPY, _PANDAS, _SKLEARN], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
)
def load(data_path: str = ""):
    """Load and validate the data (see :func:`steps.data.load_dataset`): n x 9 DataFrame, target in $100k."""
    from steps.data import load_dataset

    return load_dataset(data_path)


@PipelineDecorator.component(
    name="split", return_values=["X_train", "X_test", "y_train", "y_test"], cache=RUN.cache,
    task_type="data_processing", packages=[_NUMPY, _PANDAS, _SKLEARN], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
)
def split(dataset, test_size: float = 0.2, random_state: int = 42):
    """Train/test split (see :func:`steps.data.split_dataset`)."""
    from steps.data import split_dataset

    return split_dataset(dataset, test_size=test_size, random_state=random_state)


@PipelineDecorator.component(
    name="train_polynomial", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
)
def train_polynomial(X_train, y_train, degree: int = 3, alpha: float = 1.0, clip_quantile: float = 0.01):
    """Fit :func:`steps.models.build_polynomial` on the train set."""
    from steps.models import build_polynomial

    return build_polynomial(degree=degree, alpha=alpha, clip_quantile=clip_quantile).fit(X_train, y_train)


@PipelineDecorator.component(
    name="train_xgboost", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN, _XGBOOST], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
)
def train_xgboost(
    X_train,
    y_train,
    n_estimators: int = 3000,
    max_depth: int = 6,
    learning_rate: float = 0.05,
    subsample: float = 0.8,
    colsample_bytree: float = 0.8,
    min_child_weight: float = 1.0,
    early_stopping_rounds: int = 100,
    device: str = "cpu",
    n_jobs: int = -1,
    random_state: int = 42,
):
    """Fit :func:`steps.models.build_xgboost` with early stopping on part of the train set."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the top of clearml_pipeline.py
    from steps.models import build_xgboost, fit_xgboost

    model = build_xgboost(
        n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, subsample=subsample,
        colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
        early_stopping_rounds=early_stopping_rounds, device=device, n_jobs=n_jobs, random_state=random_state,
    )
    return fit_xgboost(model, X_train, y_train, random_state=random_state)


@PipelineDecorator.component(
    name="train_linear", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
)
def train_linear(X_train, y_train):
    """Fit :func:`steps.models.build_linear` (the least-squares baseline)."""
    from steps.models import build_linear

    return build_linear().fit(X_train, y_train)


@PipelineDecorator.component(
    name="train_random_forest", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
)
def train_random_forest(X_train, y_train, n_estimators: int = 200, n_jobs: int = -1, random_state: int = 42):
    """Fit :func:`steps.models.build_random_forest`."""
    from steps.models import build_random_forest

    return build_random_forest(n_estimators=n_estimators, random_state=random_state, n_jobs=n_jobs).fit(
        X_train, y_train
    )


@PipelineDecorator.component(
    name="evaluate", return_values=["metrics"], task_type="qc",
    packages=[_NUMPY, _PANDAS, _SKLEARN, _XGBOOST, _MATPLOTLIB, _JOBLIB], repo=_STEP_REPO, repo_commit=_STEP_COMMIT, working_dir=".",
    monitor_metrics=_METRIC_SERIES, monitor_models=["*"],
    # figures and models are reported once, explicitly; not again by ClearML's auto-logging
    auto_connect_frameworks={"matplotlib": False, "joblib": False, "scikit": False},
)
def evaluate(
    X_test,
    y_test,
    output_dir: str = "",
    polynomial=None,
    xgboost=None,
    linear=None,
    random_forest=None,
):
    """Score every trained model on the test set, report it to ClearML and write it to ``output_dir``.

    Reports, on this step's task (the controller's in offline mode): scalars ``R2``/``RMSE``/``MAE``
    with one series per model, the table ``Metrics``, the figures, and one output model per
    estimator (framework, test metrics as metadata, tag = model kind). Writes ``metrics.csv``,
    ``prediction_plot.png``, ``<model>_error_distribution.png``, ``model_comparison.png`` and
    ``models/`` to ``output_dir`` all at once (see :func:`steps.evaluation.staged_output`).

    :returns: the metrics table (one row per model: model, r2, rmse, mae, n_test).
    """
    import numpy as np
    from clearml import Logger, OutputModel, Task

    from steps.evaluation import metrics_table, predict_all, staged_output, write_run_files
    from steps.plots import error_histogram, run_figures, sample_indices

    fitted = {name: model for name, model in (("polynomial", polynomial), ("xgboost", xgboost),
                                              ("linear", linear), ("random_forest", random_forest))
              if model is not None}
    predictions = predict_all(fitted, X_test)
    metrics = metrics_table(y_test, predictions)
    figures = run_figures(y_test, predictions, metrics)
    logger = Logger.current_logger()
    for row in metrics.itertuples():
        for title, value in (("R2", row.r2), ("RMSE", row.rmse), ("MAE", row.mae)):
            logger.report_scalar(title=title, series=row.model, value=value, iteration=0)
            logger.report_single_value(f"{row.model}/{title}", value)
    logger.report_table(title="Metrics", series="test set", iteration=0, table_plot=metrics)
    # The figures again, as ClearML's own interactive plots (the same titles as the PNG files):
    # built from the numbers directly, far cheaper than converting the matplotlib figures.
    actual = np.asarray(y_test, dtype=float)
    shown = sample_indices(len(actual))
    for name, prediction in predictions.items():
        logger.report_scatter2d(
            title="prediction_plot", series=name, iteration=0, mode="markers",
            scatter=np.column_stack([actual[shown], prediction[shown]]),
            xaxis="actual median house value ($100k)", yaxis="predicted median house value ($100k)",
        )
        counts, edges = error_histogram(actual, prediction)
        logger.report_histogram(
            title=f"{name}_error_distribution", series=name, values=counts, iteration=0,
            xlabels=[f"{(a + b) / 2:.2f}" for a, b in zip(edges[:-1], edges[1:])],
            xaxis="predicted - actual ($100k)", yaxis="districts",
        )
    logger.report_histogram(
        title="model_comparison", series="test set", iteration=0, values=metrics[["r2", "rmse", "mae"]].to_numpy(),
        labels=list(metrics["model"]), xlabels=["R2", "RMSE ($100k)", "MAE ($100k)"], yaxis="value",
    )

    task = Task.current_task()
    # The files go to a staging folder that becomes output_dir only once the models are
    # registered too: a run that fails or is stopped before then leaves no results at all.
    with staged_output(output_dir) as stage:
        paths = write_run_files(stage, metrics, figures, fitted)
        for row in metrics.itertuples():
            scores = {key: float(getattr(row, key)) for key in ("r2", "rmse", "mae")}
            weights = paths["models/xgboost.json"] if row.model == "xgboost" else paths[f"models/{row.model}.joblib"]
            if Task.is_offline():
                # OutputModel cannot register weights in an offline session (clearml 2.1: DummyModel
                # has no 'locked'); the session keeps a copy of the model file as an artifact instead.
                task.upload_artifact(f"model_{row.model}", artifact_object=str(weights), metadata=scores,
                                     wait_on_upload=True)
                continue
            model = OutputModel(
                task=task, name=row.model, framework="XGBoost" if row.model == "xgboost" else "ScikitLearn",
                tags=[row.model], comment=f"California Housing regressor ({row.model}), target in $100k",
            )
            for key, value in scores.items():
                model.set_metadata(key, f"{value:.6f}", v_type="float")
            model.update_weights(weights_filename=str(weights), auto_delete_file=False)
    import matplotlib.pyplot as plt

    plt.close("all")
    print(f"results written to {output_dir}")
    return metrics


#: The controller's settings, shared by the pipeline decorator and ``step-code``.
CONTROLLER = dict(
    name=PIPELINE_NAME, project=PROJECT, version=PIPELINE_VERSION, skip_global_imports=True,
    artifact_serialization_function=serialize_artifact, artifact_deserialization_function=deserialize_artifact,
)


@PipelineDecorator.pipeline(
    **CONTROLLER, return_value="metrics",
    pipeline_execution_queue=None if RUN.controller_queue == "local" else RUN.controller_queue,
)
def tabular_regression_pipeline(
    data_path: str = DEFAULTS.data_path,
    output_dir: str = DEFAULTS.output_dir,
    models: str = DEFAULTS.models,
    test_size: float = DEFAULTS.test_size,
    random_state: int = DEFAULTS.random_state,
    poly_degree: int = DEFAULTS.poly_degree,
    poly_alpha: float = DEFAULTS.poly_alpha,
    poly_clip_quantile: float = DEFAULTS.poly_clip_quantile,
    xgb_n_estimators: int = DEFAULTS.xgb_n_estimators,
    xgb_max_depth: int = DEFAULTS.xgb_max_depth,
    xgb_learning_rate: float = DEFAULTS.xgb_learning_rate,
    xgb_subsample: float = DEFAULTS.xgb_subsample,
    xgb_colsample_bytree: float = DEFAULTS.xgb_colsample_bytree,
    xgb_min_child_weight: float = DEFAULTS.xgb_min_child_weight,
    xgb_early_stopping_rounds: int = DEFAULTS.xgb_early_stopping_rounds,
    xgb_device: str = DEFAULTS.xgb_device,
    rf_n_estimators: int = DEFAULTS.rf_n_estimators,
    n_jobs: int = DEFAULTS.n_jobs,
):
    """The controller: wires the steps; its arguments are the run's ``Args`` (see :class:`PipelineParameters`).

    :returns: the metrics table of :func:`evaluate` (one row per model).
    :raises steps.params.ParameterError: a value edited in the web UI is out of range.
    """
    values = locals()
    args = {f.name: values[f.name] for f in parameter_fields()}
    controller = Task.current_task()
    _RESULT["task"] = controller
    # debug_pipeline() (offline mode) does not record the pipeline arguments; connecting them
    # here records them, with their types, in every mode (idempotent when already recorded).
    controller.connect(args, name="Args")
    p = PipelineParameters.from_mapping(args).validate()  # UI-edited values may come back as strings

    dataset = load(p.data_path)
    X_train, X_test, y_train, y_test = split(dataset, test_size=p.test_size, random_state=p.random_state)
    trained = {}
    chosen = p.model_list()
    if "polynomial" in chosen:
        trained["polynomial"] = train_polynomial(
            X_train, y_train, degree=p.poly_degree, alpha=p.poly_alpha, clip_quantile=p.poly_clip_quantile
        )
    if "xgboost" in chosen:
        trained["xgboost"] = train_xgboost(
            X_train, y_train, n_estimators=p.xgb_n_estimators, max_depth=p.xgb_max_depth,
            learning_rate=p.xgb_learning_rate, subsample=p.xgb_subsample,
            colsample_bytree=p.xgb_colsample_bytree, min_child_weight=p.xgb_min_child_weight,
            early_stopping_rounds=p.xgb_early_stopping_rounds, device=p.xgb_device, n_jobs=p.n_jobs,
            random_state=p.random_state,
        )
    if "linear" in chosen:
        trained["linear"] = train_linear(X_train, y_train)
    if "random_forest" in chosen:
        trained["random_forest"] = train_random_forest(
            X_train, y_train, n_estimators=p.rf_n_estimators, n_jobs=p.n_jobs, random_state=p.random_state
        )
    return evaluate(X_test, y_test, output_dir=p.output_dir, **trained)


class ClearMLSetupError(Exception):
    """ClearML cannot start: no server configured or reachable, bad credentials, a missing queue, or a broken cache/config."""


def check_server(queues: list[str], timeout: float = 5.0) -> str:
    """Check, within ``timeout`` seconds per request, that the configured ClearML server answers.

    The SDK itself retries a dead server for minutes without a word, so server modes call this
    first: ``auth.login`` with the configured credentials, then ``queues.get_all`` per queue
    (ClearML's REST API, ``docs/references/api``).

    :param queues: queue names that must exist.
    :returns: the API server URL.
    :raises ClearMLSetupError: one line naming what to fix.
    """
    import re

    import requests
    from clearml.backend_api import Session
    from clearml.config import config_obj

    host = os.environ.get("CLEARML_API_HOST") or config_obj.get("api.api_server", None)
    key = os.environ.get("CLEARML_API_ACCESS_KEY") or config_obj.get("api.credentials.access_key", None)
    secret = os.environ.get("CLEARML_API_SECRET_KEY") or config_obj.get("api.credentials.secret_key", None)
    if not host or not key or not secret:
        raise ClearMLSetupError(
            "no ClearML server is configured: run clearml-init, or copy clearml.conf.example, fill it in and "
            "set CLEARML_CONFIG_FILE to it, or set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and "
            "CLEARML_API_SECRET_KEY"
        )
    host = Session.get_api_server_host().rstrip("/")
    try:
        reply = requests.post(f"{host}/auth.login", auth=(key, secret), timeout=timeout)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise ClearMLSetupError(
            f"the ClearML server {host} cannot be reached ({reason}); start it, or fix api.api_server "
            "in clearml.conf / CLEARML_API_HOST"
        ) from None
    if reply.status_code in (401, 403):
        raise ClearMLSetupError(
            f"the ClearML server {host} rejected the credentials (HTTP {reply.status_code}); create new "
            "credentials in its web UI (Settings > Workspace) and put them in clearml.conf or "
            "CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY"
        )
    try:
        token = reply.json()["data"]["token"]
    except (ValueError, KeyError, TypeError):
        raise ClearMLSetupError(
            f"{host} answered HTTP {reply.status_code} but is not a ClearML API server; api.api_server "
            "must be the API server (port 8008 when self-hosted), not the web server"
        ) from None
    for queue in queues:
        try:
            found = requests.post(
                f"{host}/queues.get_all", json={"name": f"^{re.escape(queue)}$", "only_fields": ["id"]},
                headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
            ).json()["data"]["queues"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            raise ClearMLSetupError(f"could not list the queues of {host}; check the server's health") from None
        if not found:
            raise ClearMLSetupError(
                f"queue '{queue}' does not exist on {host}; create it in the web UI (Orchestration > Queues) "
                f"or start an agent with: clearml-agent daemon --queue {queue} --create-queue"
            )
    return host


_RESULT: dict = {}


def _failed_step(exc: BaseException) -> Optional[str]:
    """The name of the step whose code raised ``exc`` (innermost step frame of its traceback)."""
    step, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in STEP_NAMES:
            step = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return step


def _configure_sdk(**development) -> None:
    """Make ClearML write reports from a thread of this process, not a forked subprocess.

    ``sdk.development.report_use_subprocess`` defaults to true on Linux; its fork-with-threads
    subprocess can deadlock at exit (seen offline: runs stuck for minutes in
    ``BackgroundMonitor.wait_for_sub_process``), and a run reporting a few dozen events gains
    nothing from it. Set through the SDK's own configuration overrides, on top of clearml.conf,
    with any other ``sdk.development`` settings given.
    """
    from clearml.config import config_obj

    config_obj.set_overrides({"sdk": {"development": {"report_use_subprocess": False, **development}}})


def _start_offline_controller() -> Task:
    """Start the controller task of an offline run (ClearML offline mode).

    The task is created here rather than by the pipeline decorator so that argparse, joblib,
    scikit-learn and matplotlib are not auto-connected: the command line is not a pipeline
    parameter, and models and figures are reported once, explicitly, by the evaluate step.
    XGBoost stays connected, for its training curve. The decorator then adopts this task as its
    controller (it uses ``Task.current_task()`` when there is one).
    """
    import logging

    # Detect the repository inside Task.init rather than in a thread: the thread parses source
    # files while the pipeline decorator parses this module, and concurrent ast.parse calls break
    # at random on Python 3.11 ("AST constructor recursion depth mismatch", cpython#106905).
    _configure_sdk(vcs_repo_detect_async=False)
    Task.set_offline(offline_mode=True)
    # A checkout without a git remote is normal for a laptop run; the session records the code anyway.
    logging.getLogger("clearml.Repository Detection").setLevel(logging.ERROR)
    task = Task.init(
        project_name=PROJECT,
        task_name=PIPELINE_NAME,
        task_type=Task.TaskTypes.controller,
        auto_connect_arg_parser=False,
        auto_connect_frameworks={"matplotlib": False, "joblib": False, "scikit": False, "xgboost": True,
                                 "detect_repository": True},
        auto_resource_monitoring=False,
        reuse_last_task_id=False,
    )
    # Ctrl-C and SIGTERM raise KeyboardInterrupt, so the run can record "interrupted" in the
    # session and close it itself (ClearML's own handlers, installed by Task.init, would close the
    # session first and leave the interruption unrecorded).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, _raise_interrupt)
    return task


#: XGBoost's Python functions that its C library calls back (``xgboost.core.DataIter``).
_XGBOOST_C_CALLBACKS = frozenset({"_next_wrapper", "_reset_wrapper"})


def _raise_interrupt(signum, frame):
    """Raise KeyboardInterrupt, except inside a callback that XGBoost's C library makes while it
    builds a data matrix: an exception there corrupts its heap. There, the interrupt is delivered
    again 50 ms later (SIGALRM), until it lands outside."""
    while frame is not None:
        if frame.f_code.co_name in _XGBOOST_C_CALLBACKS and f"{os.sep}xgboost{os.sep}" in frame.f_code.co_filename:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def _run(options: RunOptions, params: PipelineParameters) -> int:
    if options.mode == "offline":
        try:
            _start_offline_controller()
        except Exception as exc:  # a broken ClearML cache folder or configuration file
            raise ClearMLSetupError(
                f"ClearML could not start its offline session ({type(exc).__name__}: {exc}); check that "
                "CLEARML_CACHE_DIR (or sdk.storage.cache.default_base_dir) is a writable folder and that "
                "CLEARML_CONFIG_FILE, if set, is a valid clearml.conf"
            ) from None
        PipelineDecorator.debug_pipeline()
    else:
        check_server(queues=[options.queue] + ([options.controller_queue] if options.mode == "remote"
                                               and options.controller_queue != "local" else []))
        _configure_sdk()
        if options.mode == "local":
            PipelineDecorator.run_locally()
        else:
            PipelineDecorator.set_default_execution_queue(options.queue)
    try:
        metrics = tabular_regression_pipeline(**dataclasses.asdict(params))
    except (Exception, KeyboardInterrupt) as exc:
        return _fail(exc, Path(params.output_dir))
    task = _RESULT.get("task")
    if metrics is not None:
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"results: {params.output_dir}")
    if options.mode == "offline" and task is not None:
        print(f"ClearML offline session: {task.get_offline_mode_folder()}.zip "
              f"(upload it with: python clearml_pipeline.py import-offline <that zip>)")
    return 0


def _fail(exc: BaseException, output_dir: Path) -> int:
    """Report a failed or interrupted run in one line, mark the ClearML task, return the exit code.

    Exit codes: 2 for bad input found by a step (``DataError``, ``ParameterError``, ``OutputError``,
    all ``ValueError``), 1 for any other failure, 130 when interrupted.
    """
    import traceback

    interrupted = isinstance(exc, KeyboardInterrupt)
    step = _failed_step(exc)
    where = f"step '{step}' failed" if step else "the pipeline failed"
    message = "interrupted" if interrupted else f"{where}: {exc}" if isinstance(exc, ValueError) \
        else f"{where}: {type(exc).__name__}: {exc}"
    if interrupted and (output_dir / "metrics.csv").exists():  # stopped while closing the session
        message = f"interrupted after the results were complete in {output_dir}"
    task = _RESULT.get("task")
    if task is not None and PipelineDecorator._debug_execute_step_function:
        try:
            # An offline session has no status of its own (an import marks it completed): the
            # outcome is kept as a tag, the reason and traceback in the task's log.
            task.add_tags(["interrupted" if interrupted else "failed"])
            task.get_logger().report_text(message + "\n" + "".join(traceback.format_exception(exc)),
                                          print_console=False)
            if interrupted:
                task.mark_stopped(force=True, status_message="interrupted")
            else:
                task.mark_failed(status_reason=message, status_message=message, force=True)
            task.close()
        except Exception:  # the one-line answer matters more than the record
            pass
    print(f"error: {message}", file=sys.stderr)
    return 130 if interrupted else 2 if isinstance(exc, ValueError) else 1


def _import_offline(argv: list[str]) -> int:
    """``import-offline PATH``: upload an offline session (zip or folder) with ClearML's own import."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("error: usage: python clearml_pipeline.py import-offline PATH (an offline session .zip or folder)",
              file=sys.stderr)
        return 2
    path = Path(argv[0]).expanduser()
    if not path.exists():
        print(f"error: offline session not found: {path}; pass the .zip printed by an offline run",
              file=sys.stderr)
        return 2
    try:
        check_server(queues=[])
    except ClearMLSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    task_id = Task.import_offline_session(str(path))
    if not task_id:
        print(f"error: ClearML could not import {path}; is it an offline session folder or zip?", file=sys.stderr)
        return 1
    print(f"imported as task {task_id}")
    return 0


def _write_step_code(folder: str) -> int:
    """``step-code DIR``: write the standalone script ClearML generates for each step, as agents get it.

    Builds the pipeline's step definitions exactly as a server run does (the decorator's own
    code generation, with the ``--mode`` given: ``remote`` attaches this repository), in a
    throw-away offline task, then writes ``DIR/<step>.py`` (the script) and ``DIR/<step>.json``
    (entry point, repository, requirements, parameters), and ``DIR/pipeline.json`` (the DAG:
    parents, queues, caching of every step).
    """
    import json
    import shutil

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    _start_offline_controller()
    PipelineDecorator.run_locally()  # generate the step tasks' code, as for a server run
    task = Task.current_task()
    pipeline = PipelineDecorator(**CONTROLLER)
    dag = {name: {"cache": node.cache_executed_step, "queue": node.queue, "parents": node.parents,
                  "monitor_metrics": node.monitor_metrics, "monitor_models": node.monitor_models}
           for name, node in pipeline.get_pipeline_dag().items()}
    (out / "pipeline.json").write_text(json.dumps(dag, indent=1))
    definitions = task.get_configuration_objects()
    for step in STEP_NAMES:
        definition = json.loads(definitions[step])
        (out / f"{step}.py").write_text(definition["script"]["diff"])
        (out / f"{step}.json").write_text(json.dumps(definition, indent=1))
    task.close()
    shutil.rmtree(os.environ["CLEARML_CACHE_DIR"], ignore_errors=True)
    print(f"wrote the code of {len(STEP_NAMES)} steps to {out}")
    return 0


def _log_steps_to_stderr() -> None:
    """Show the steps' warnings and progress lines (``steps.*`` loggers, INFO and up) on stderr, one line each."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("steps")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main() -> int:
    """Command-line entry point; returns the exit code (0 ok, 1 failed run, 2 bad input, 130 interrupted)."""
    _log_steps_to_stderr()
    if COMMAND == "import-offline":
        return _import_offline(sys.argv[2:])
    if os.environ.get("CLEARML_TASK_ID"):
        # The controller, started by a ClearML agent: the Args come from the task (as edited in the UI).
        tabular_regression_pipeline()
        return 0
    if CLI_ERROR:
        print(f"error: {CLI_ERROR}", file=sys.stderr)
        return 2
    if COMMAND == "step-code":
        return _write_step_code(sys.argv[2])
    try:
        return _run(RUN, CLI_PARAMS)
    except ClearMLSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
