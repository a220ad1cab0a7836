"""California Housing regression as a ClearML pipeline of decorated steps.

    load -> split -> train_polynomial, train_xgboost (optionally train_linear, train_random_forest) -> evaluate

Each component is a thin wrapper that imports its work from ``steps/`` (ClearML-free) inside its
body, so it runs alone on an agent; the controller only wires them. The command line lives in
``cli.py`` and ClearML's runtime plumbing (offline session, server checks, failures, commands) in
``runtime.py``; what the steps report to ClearML is in ``reporting.py``.

Run modes (``--mode``): ``offline`` (default, no server: ClearML offline mode, steps in this
process), ``local`` (steps as tasks, run as subprocesses here), ``remote`` (steps on ClearML agents
via ``--queue``; the controller on ``--controller-queue``, or here with ``--controller-queue local``).
Every pipeline parameter is defined once, in :class:`steps.params.PipelineParameters`.
"""

import dataclasses
import os
import signal
import sys
from pathlib import Path

# OpenMP threads (XGBoost, scikit-learn) that spin while they wait make a fit 5-10x slower whenever
# another process holds a core; passive waiting costs nothing measurable on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent)) if str(Path(__file__).resolve().parent) not in sys.path else None

import cli  # noqa: E402  (never imports ClearML)
import runtime  # noqa: E402  (imports ClearML only inside its functions)
from steps.artifacts import deserialize_artifact, serialize_artifact  # noqa: E402
from steps.params import DEFAULTS, MODEL_KINDS, PipelineParameters, parameter_fields  # noqa: E402

PROJECT = "California Housing"
PIPELINE_NAME = "tabular regression"
PIPELINE_VERSION = "1.0.0"
STEP_NAMES = ("load", "split", *(f"train_{kind}" for kind in MODEL_KINDS), "evaluate")

STARTUP = cli.Startup()  # imported as a module (tests, step-code): defaults
if __name__ == "__main__" and sys.argv[1:2] == ["predict"]:  # ClearML-free: done before ClearML is imported
    sys.exit(cli.predict_main(sys.argv[2:]))
if __name__ == "__main__":
    for _signal in (signal.SIGINT, signal.SIGTERM):  # until the run has a task (see runtime)
        signal.signal(_signal, runtime.exit_at_once)
    try:  # the command line is parsed before ClearML is imported (see cli.py)
        STARTUP = cli.parse_startup(sys.argv[1:])
    except cli.UsageError as _exc:
        print(f"error: {_exc}", file=sys.stderr)
        sys.exit(cli.exit_code(_exc))
    if STARTUP.command == "step-code":  # its throw-away offline task stays out of the user's ClearML cache
        os.environ["CLEARML_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="clearml-step-code-")

from clearml import PipelineDecorator, Task  # noqa: E402

from reporting import monitored_metrics, result_files  # noqa: E402

# Packages each step needs on an agent (ranges as in requirements.txt).
_NUMPY, _PANDAS, _SKLEARN = "numpy>=1.26,<3", "pandas>=2.2,<4", "scikit-learn>=1.6,<1.10"
_XGBOOST, _MATPLOTLIB, _JOBLIB = "xgboost>=2.1,<4", "matplotlib>=3.8,<4", "joblib>=1.3"
_CACHE = STARTUP.options.cache
# Agents get `steps/` from this repository at this commit (clearml issue #1370: steps do not
# inherit the controller's repository); locally the steps import it from the working copy.
_REPO = dict(repo=STARTUP.repository[0], repo_commit=STARTUP.repository[1], working_dir=".")


@PipelineDecorator.component(
    name="load", return_values=["dataset", "data_record"], cache=_CACHE, task_type="data_processing",
    packages=[_NUMPY, _PANDAS, _SKLEARN], **_REPO,
)
def load(data_path: str = "", data_sha256: str = "", dataset_id: str = ""):
    """Load and validate the data (:func:`steps.data.load_dataset`): n x 9 DataFrame, target in $100k.

    With ``dataset_id`` (a ClearML dataset version, :mod:`data_versions`) the data is a local copy
    of that version's CSV (ClearML's ``get_local_copy``) and ``data_path`` is not used.

    ``data_sha256`` is an argument so that ClearML's cache key sees the data's content, not only
    its path: the file's hash computed by the controller, or the hash ``register-data`` stored
    with the dataset version. (A finalized version's id is immutable, so the id alone would be
    enough for the key.) The copy of a version must have that hash, or the step fails.

    :returns: the data, and ``data_record`` (:func:`data_versions.data_record`: source, SHA-256
        and row count of what was loaded), also set as this task's user properties.
    """
    from clearml import Task

    from data_versions import DatasetError, data_record, local_csv
    from steps.data import load_dataset
    from steps.datafile import resolve_data_path

    if dataset_id:
        path, source = local_csv(dataset_id)
    else:
        path = source = resolve_data_path(data_path)
    dataset = load_dataset(path)
    record = data_record(source, path, dataset)
    if dataset_id and data_sha256 and record["data_sha256"] != data_sha256:
        raise DatasetError(f"the copy of dataset {dataset_id} has SHA-256 {record['data_sha256']}, not the "
                           f"{data_sha256} registered with it; its files were changed on the server")
    task = Task.current_task()  # this step's task; in offline mode, the run's (controller) task
    if task is not None:
        task.set_user_properties(**record)
    return dataset, record


@PipelineDecorator.component(
    name="split", return_values=["X_train", "X_test", "y_train", "y_test"], cache=_CACHE,
    task_type="data_processing", packages=[_NUMPY, _PANDAS, _SKLEARN], **_REPO,
)
def split(dataset, test_size: float = 0.2, random_state: int = 42):
    """Train/test split (:func:`steps.data.split_dataset`)."""
    from steps.split import split_dataset

    return split_dataset(dataset, test_size=test_size, random_state=random_state)


@PipelineDecorator.component(
    name="train_polynomial", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN], **_REPO,
)
def train_polynomial(X_train, y_train, degree: int = 3, alpha: float = 1.0, clip_quantile: float = 0.01,
                     neighbors: int = 16):
    """Fit the polynomial regression (:func:`steps.models.build_polynomial`) on the train set."""
    from steps.models import train_model

    return train_model("polynomial", X_train, y_train, degree=degree, alpha=alpha, clip_quantile=clip_quantile,
                       neighbors=neighbors)


@PipelineDecorator.component(
    name="train_xgboost", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN, _XGBOOST], auto_connect_frameworks={"xgboost": False}, **_REPO,
)
def train_xgboost(
    X_train, y_train, n_estimators: int = 3000, max_depth: int = 6, learning_rate: float = 0.05,
    subsample: float = 0.8, colsample_bytree: float = 0.8, min_child_weight: float = 1.0,
    early_stopping_rounds: int = 100, device: str = "cpu", n_jobs: int = -1, random_state: int = 42,
    neighbors: int = 16,
):
    """Fit XGBoost (:func:`steps.models.build_xgboost`), early stopping on part of the train set."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the top of clearml_pipeline.py
    from reporting import report_training_curve
    from steps.models import train_model
    from steps.plots import XGBOOST_CURVE

    model = train_model(
        "xgboost", X_train, y_train, n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
        subsample=subsample, colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
        early_stopping_rounds=early_stopping_rounds, device=device, n_jobs=n_jobs, random_state=random_state,
        neighbors=neighbors,
    )
    report_training_curve(model, *XGBOOST_CURVE)
    return model


@PipelineDecorator.component(
    name="train_linear", return_values=["model"], task_type="training", packages=[_NUMPY, _PANDAS, _SKLEARN],
    **_REPO,
)
def train_linear(X_train, y_train):
    """Fit the least-squares baseline (:func:`steps.models.build_linear`)."""
    from steps.models import train_model

    return train_model("linear", X_train, y_train)


@PipelineDecorator.component(
    name="train_random_forest", return_values=["model"], task_type="training",
    packages=[_NUMPY, _PANDAS, _SKLEARN], **_REPO,
)
def train_random_forest(X_train, y_train, n_estimators: int = 200, n_jobs: int = -1, random_state: int = 42):
    """Fit the random forest (:func:`steps.models.build_random_forest`)."""
    from steps.models import train_model

    return train_model("random_forest", X_train, y_train, n_estimators=n_estimators, n_jobs=n_jobs,
                       random_state=random_state)


@PipelineDecorator.component(
    name="evaluate", return_values=["metrics"], task_type="qc",
    packages=[_NUMPY, _PANDAS, _SKLEARN, _XGBOOST, _MATPLOTLIB, _JOBLIB], **_REPO,
    monitor_metrics=monitored_metrics(MODEL_KINDS), monitor_artifacts=result_files(MODEL_KINDS),
    monitor_models=list(MODEL_KINDS),
    # figures and models are reported once, explicitly; not again by ClearML's auto-logging
    auto_connect_frameworks={"matplotlib": False, "joblib": False, "scikit": False, "xgboost": False},
)
def evaluate(X_test, y_test, output_dir: str = "", polynomial=None, xgboost=None, linear=None, random_forest=None):
    """Score every trained model on the test set, write the run's files, report them to ClearML.

    Writes ``metrics.csv``, the PNG figures and ``models/`` to ``output_dir`` all at once
    (:func:`steps.evaluation.staged_output`), and reports on this step's task (the controller's
    offline): the test metrics, the figures, the files as artifacts and one output model per
    estimator (see :mod:`reporting`).

    :returns: the metrics table: one row per model (model, r2, rmse, mae in $100k, n_test).
    """
    import matplotlib.pyplot as plt
    from clearml import Task

    from reporting import register_models, report_metrics, upload_result_files
    from steps.evaluation import metrics_table, predict_all
    from steps.logs import library_warnings
    from steps.outputs import output_dir_for_step, staged_output, write_run_files
    from steps.plots import figure_titles, run_figures

    output_dir = str(output_dir_for_step(output_dir))  # on an agent, a re-run's folder may be taken

    fitted = {name: model for name, model in (("polynomial", polynomial), ("xgboost", xgboost),
                                              ("linear", linear), ("random_forest", random_forest))
              if model is not None}
    predictions = predict_all(fitted, X_test)
    metrics = metrics_table(y_test, predictions)
    with library_warnings(prefix="figures: "):
        figures = run_figures(y_test, predictions, metrics)
        report_metrics(metrics, y_test, predictions, figure_titles(list(predictions)))
    task = Task.current_task()
    # The files appear in output_dir only once the models are registered too: a run that fails
    # or is stopped before then leaves no results at all.
    with staged_output(output_dir) as stage:
        paths = write_run_files(stage, metrics, figures, fitted)
        upload_result_files(task, paths)
        register_models(task, metrics, paths)
    plt.close("all")
    print(f"results written to {output_dir}")
    return metrics


#: The controller's settings, shared by the pipeline decorator and ``step-code``.
CONTROLLER = dict(
    name=PIPELINE_NAME, project=PROJECT, version=PIPELINE_VERSION, skip_global_imports=True,
    artifact_serialization_function=serialize_artifact, artifact_deserialization_function=deserialize_artifact,
)


@PipelineDecorator.pipeline(**CONTROLLER, return_value="metrics", pipeline_execution_queue=None)
def tabular_regression_pipeline(
    data_path: str = DEFAULTS.data_path,
    dataset_id: str = DEFAULTS.dataset_id,
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
    spatial_neighbors: int = DEFAULTS.spatial_neighbors,
    rf_n_estimators: int = DEFAULTS.rf_n_estimators,
    n_jobs: int = DEFAULTS.n_jobs,
):
    """The controller: wires the steps; its arguments are the run's ``Args`` (see :class:`PipelineParameters`).

    :returns: the metrics table of :func:`evaluate` (one row per model).
    :raises steps.params.ParameterError: a value edited in the web UI is out of range.
    """
    from steps.datafile import data_fingerprint
    from steps.models import model_arguments

    values = locals()
    args = {f.name: values[f.name] for f in parameter_fields()}
    controller = Task.current_task()
    # debug_pipeline() (offline mode) does not record the pipeline arguments; connecting them
    # here records them, with their types, in every mode (idempotent when already recorded).
    controller.connect(args, name="Args")
    runtime.prepare_controller(controller, STARTUP)  # may hand this controller to an agent and exit
    p = PipelineParameters.from_mapping(args).validate()  # UI-edited values may come back as strings
    runtime.check_rerun_models(STARTUP, p)

    if p.dataset_id:  # a UI re-run may name any id: checked here, before any step
        from data_versions import check_dataset, describe

        version = check_dataset(p.dataset_id)
        source = describe(p.dataset_id, version)
        data_sha256 = version["sha256"]  # as registered; the immutable id is in the load step's key too
    else:
        source, data_sha256 = p.data_path, data_fingerprint(p.data_path)
    # until the load step says what it read (a re-run's clone still shows its original's values)
    controller.set_user_properties(data_source=source, data_sha256="(set by the load step)", data_rows="")
    dataset, data_record = load(p.data_path, data_sha256=data_sha256, dataset_id=p.dataset_id)
    X_train, X_test, y_train, y_test = split(dataset, test_size=p.test_size, random_state=p.random_state)
    train = {"polynomial": train_polynomial, "xgboost": train_xgboost, "linear": train_linear,
             "random_forest": train_random_forest}
    trained = {kind: train[kind](X_train, y_train, **model_arguments(kind, p)) for kind in p.model_list()}
    # What the run trained on (source, SHA-256, rows), as the load step read it: the run's user properties.
    controller.set_user_properties(**{key: str(data_record[key]) for key in ("data_source", "data_sha256", "data_rows")})
    return evaluate(X_test, y_test, output_dir=p.output_dir, **trained)


def run(startup: cli.Startup) -> int:
    """Run the pipeline as ``startup`` says; returns the exit code (see :func:`cli.exit_code`)."""
    options, params = startup.options, startup.params
    if startup.command == "agent-controller":  # Args come from the task, as edited in the web UI
        runtime.poll_steps_every(1.0)
        code = runtime.run_guarded(tabular_regression_pipeline, {}, None, STEP_NAMES)
        # The run's status is recorded (failed, with the one-line reason the web UI shows); a non-zero
        # exit would make the agent overwrite that reason with "worker execution exit code N".
        return cli.EXIT_OK if code != cli.EXIT_INTERRUPTED else code
    if options.mode == "offline":
        runtime.start_offline_controller(PROJECT, PIPELINE_NAME)
        PipelineDecorator.debug_pipeline()
    else:
        host = runtime.check_server(queues=options.queues())
        runtime.configure_sdk(vcs_repo_detect_async=False)  # the repository is known before the run is stored
        runtime.poll_steps_every(1.0)
        params = _chosen_dataset(options, params)
        if options.mode == "local":
            PipelineDecorator.run_locally()
        else:
            PipelineDecorator.set_default_execution_queue(options.queue)
        with runtime.ServerWatch(host, on_lost=runtime.abandon_run):
            return runtime.run_guarded(tabular_regression_pipeline, dataclasses.asdict(params),
                                       Path(params.output_dir), STEP_NAMES)
    return runtime.run_guarded(tabular_regression_pipeline, dataclasses.asdict(params), Path(params.output_dir),
                               STEP_NAMES)


def _chosen_dataset(options: cli.RunOptions, params: PipelineParameters) -> PipelineParameters:
    """The run's ``dataset_id``: ``--dataset-name`` resolved to a version id, and checked (before any step).

    :raises data_versions.DatasetError: unknown id or name, not finalized, no CSV (exit 2).
    """
    if not (params.dataset_id or options.dataset_name):
        return params
    import data_versions

    dataset_id = params.dataset_id or data_versions.resolve(options.dataset_project, options.dataset_name,
                                                            options.dataset_version)
    data_versions.check_dataset(dataset_id)
    return dataclasses.replace(params, dataset_id=dataset_id)


def main() -> int:
    """Command-line entry point; returns the exit code (0 ok, 1 failed run, 2 bad input, 130 interrupted)."""
    cli.configure_console()
    try:
        if STARTUP.command == "import-offline":
            print(f"imported as task {runtime.import_offline(STARTUP.path)}")
            return cli.EXIT_OK
        if STARTUP.command == "register-data":
            runtime.check_server(queues=[])
            runtime.configure_sdk()
            import data_versions

            return data_versions.run_register(STARTUP.path, STARTUP.options.dataset_project,
                                              STARTUP.options.dataset_name)
        if STARTUP.command == "step-code":
            runtime.write_step_code(STARTUP.path, lambda: PipelineDecorator(**CONTROLLER), STEP_NAMES,
                                    PROJECT, PIPELINE_NAME)
            print(f"wrote the code of {len(STEP_NAMES)} steps to {STARTUP.path}")
            return cli.EXIT_OK
        return run(STARTUP)
    except (cli.SetupError, ValueError, KeyboardInterrupt) as exc:  # ValueError: DataError, DatasetError
        print(f"error: {'interrupted' if isinstance(exc, KeyboardInterrupt) else exc}", file=sys.stderr)
        return cli.exit_code(exc)
    except Exception as exc:  # e.g. the server answering errors: one line, never a traceback
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
        return cli.exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
