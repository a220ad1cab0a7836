"""California Housing regression as a ClearML pipeline of decorated steps.

    load -> split -> train_polynomial, train_xgboost (optionally train_linear, train_random_forest) -> evaluate

Each step is a plain function that imports its work from ``steps/`` (ClearML-free) inside its
body, so that it runs alone on an agent. :func:`build_pipeline` makes them ClearML components
with the run's settings and returns the controller, whose body is the DAG. The command line is
in ``cli/``, ClearML's runtime plumbing in ``runtime/``; every parameter is defined once, in
:class:`steps.params.PipelineParameters`.

    python clearml_pipeline.py [--mode offline|local|remote] [parameters]    # see --help
"""

import sys

from runtime.components import RunSettings, pipeline_arguments
from steps.params import MODEL_KINDS

PROJECT = "California Housing"
PIPELINE_NAME = "tabular regression"
PIPELINE_VERSION = "1.0.0"
#: The steps, in DAG order: one training step per model kind (:data:`steps.params.MODEL_KINDS`).
STEP_NAMES = ("load", "split", *(f"train_{kind}" for kind in MODEL_KINDS), "evaluate")

# What each step needs on an agent (ranges as in requirements.txt).
DATA = ["numpy>=1.26,<3", "pandas>=2.2,<4", "scikit-learn>=1.6,<1.10"]
# XGBoost as requirements.txt installs it: the CPU-only wheel (no CUDA libraries) where one exists, else the full one.
CPU_WHEEL = ('(sys_platform == "linux" and (platform_machine == "x86_64" or platform_machine == "aarch64")) or '
             '(sys_platform == "win32" and platform_machine == "AMD64")')
FULL_WHEEL = ('(sys_platform != "linux" and sys_platform != "win32") or (sys_platform == "linux" and '
              'platform_machine != "x86_64" and platform_machine != "aarch64") or (sys_platform == "win32" and '
              'platform_machine != "AMD64")')
XGBOOST = [f"xgboost-cpu>=2.1.1,<4; {CPU_WHEEL}", f"xgboost>=2.1,<4; {FULL_WHEEL}"]
FIGURES = ["matplotlib>=3.8,<4", "joblib>=1.3"]


def load(data_path: str, data_sha256: str, dataset_id: str):
    """Load and validate the data (:func:`steps.data.load_dataset`): n x 9 DataFrame, target in $100k.

    With ``dataset_id`` (a ClearML dataset version) the data is a local copy of that version's
    CSV and ``data_path`` is not used. ``data_sha256`` (the file's, or the one registered with the
    version) is an argument so that ClearML's cache key sees the data's content; a version's copy
    must have it.

    :returns: the data, and ``data_record`` (source, SHA-256 and rows of what was loaded), also
        set as this task's user properties.
    :raises steps.errors.DataError, runtime.data_versions.DatasetError: unusable data.
    """
    from clearml import Task

    from runtime.data_versions import DatasetError, data_record, local_csv
    from runtime.reporting import step_console
    from steps.data import load_dataset
    from steps.datafile import resolve_data_path
    from steps.logs import log as steps_log

    step_console()
    path, source = local_csv(dataset_id) if dataset_id else (resolve_data_path(data_path),) * 2
    dataset = load_dataset(path)
    record = data_record(source, path, dataset)
    if dataset_id and data_sha256 and record["data_sha256"] != data_sha256:
        raise DatasetError(f"the copy of dataset {dataset_id} has SHA-256 {record['data_sha256']}, not the "
                           f"{data_sha256} registered with it; its files were changed on the server")
    steps_log.info("data sha256 %s (%s)", record["data_sha256"], source)  # the info line above: what was loaded
    Task.current_task().set_user_properties(**record)  # offline: the run's (controller) task
    return dataset, record


def split(dataset, test_size: float, random_state: int):
    """Train/test split (:func:`steps.split.split_dataset`): X_train, X_test, y_train, y_test."""
    from runtime.reporting import step_console
    from steps.split import split_dataset

    step_console()
    return split_dataset(dataset, test_size=test_size, random_state=random_state)


def train_polynomial(X_train, y_train, degree: int, alpha: float, clip_quantile: float, neighbors: int):
    """Fit the polynomial regression (:func:`steps.models.build_polynomial`) on the train set.

    :returns: the model, and its validation scores (:func:`steps.validation.validation_scores`).
    """
    from runtime.reporting import step_console
    from steps.models import train_model
    from steps.validation import validation_scores

    step_console()
    arguments = dict(degree=degree, alpha=alpha, clip_quantile=clip_quantile, neighbors=neighbors)
    return train_model("polynomial", X_train, y_train, **arguments), validation_scores("polynomial", X_train, y_train,
                                                                                       **arguments)


def train_xgboost(X_train, y_train, n_estimators: int, max_depth: int, learning_rate: float, subsample: float,
                  colsample_bytree: float, min_child_weight: float, early_stopping_rounds: int, device: str,
                  n_jobs: int, random_state: int, neighbors: int):
    """Fit XGBoost (:func:`steps.models.build_xgboost`), early stopping on part of the train set.

    :returns: the model, and its validation scores (:func:`steps.validation.validation_scores`).
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cli.main
    from runtime.reporting import report_training_curve, step_console
    from steps.models import train_model
    from steps.validation import validation_scores

    step_console()
    arguments = dict(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, subsample=subsample,
                     colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
                     early_stopping_rounds=early_stopping_rounds, device=device, n_jobs=n_jobs,
                     random_state=random_state, neighbors=neighbors)
    model = train_model("xgboost", X_train, y_train, **arguments)
    report_training_curve(model)
    return model, validation_scores("xgboost", X_train, y_train, **arguments)


def train_linear(X_train, y_train):
    """Fit the least-squares baseline (:func:`steps.models.build_linear`); returns it and its validation scores."""
    from runtime.reporting import step_console
    from steps.models import train_model
    from steps.validation import validation_scores

    step_console()
    return train_model("linear", X_train, y_train), validation_scores("linear", X_train, y_train)


def train_random_forest(X_train, y_train, n_estimators: int, n_jobs: int, random_state: int):
    """Fit the random forest (:func:`steps.models.build_random_forest`); returns it and its validation scores."""
    from runtime.reporting import step_console
    from steps.models import train_model
    from steps.validation import validation_scores

    step_console()
    arguments = dict(n_estimators=n_estimators, n_jobs=n_jobs, random_state=random_state)
    return (train_model("random_forest", X_train, y_train, **arguments),
            validation_scores("random_forest", X_train, y_train, **arguments))


def evaluate(X_test, y_test, output_dir: str, **models):
    """Score every trained model on the test set, write the run's files, report them to ClearML.

    Writes ``metrics.csv``, the PNG figures and ``models/`` to ``output_dir`` all at once, and
    reports on this step's task (the controller's offline) the test metrics, the figures, the files
    as artifacts and one output model per estimator (:mod:`runtime.reporting`).

    :param models: ``{model kind: fitted estimator}``.
    :returns: the metrics table: one row per model (model, r2, rmse, mae in $100k, n_test).
    """
    from runtime.reporting import report_evaluation, step_console

    step_console()
    return report_evaluation(X_test, y_test, output_dir, models)


def build_pipeline(settings: RunSettings):
    """The pipeline of one run: its steps as ClearML components with the run's settings, and the controller.

    :returns: the controller; called with the run's parameters (``Args``) it runs the DAG and returns
        the metrics table of :func:`evaluate`.
    """
    from clearml import PipelineDecorator

    import runtime.controller as controller
    from runtime.reporting import evaluate_monitoring
    from steps.models import model_arguments

    component = settings.component
    load_step = component(load, return_values=["dataset", "data_record"], cache=True, task_type="data_processing",
                          packages=DATA)
    # parents: the DAG the pipeline page draws from the start (ClearML links a step to its parents only once they
    # completed, so a run that fails early would show its later steps unlinked)
    split_step = component(split, return_values=["X_train", "X_test", "y_train", "y_test"], cache=True,
                           task_type="data_processing", packages=DATA, parents=["load"])
    trainers = {function.__name__.removeprefix("train_"): function
                for function in (train_polynomial, train_xgboost, train_linear, train_random_forest)}
    train = {kind: component(trainers[kind], kind=kind, return_values=["model", "validation"], task_type="training",
                             packages=DATA + (XGBOOST if kind == "xgboost" else []),
                             auto_connect_frameworks={"xgboost": False}, parents=["split"])
             for kind in settings.models}
    evaluate_step = component(evaluate, return_values=["metrics"], task_type="qc", packages=DATA + XGBOOST + FIGURES,
                              parents=["split", *(f"train_{kind}" for kind in settings.models)],
                              **evaluate_monitoring(settings.models))

    @PipelineDecorator.pipeline(name=PIPELINE_NAME, project=PROJECT, version=PIPELINE_VERSION, return_value="metrics",
                                pipeline_execution_queue=None, **controller.SETTINGS)
    @pipeline_arguments
    def tabular_regression(**args):
        """The controller: its arguments are the run's ``Args`` (:class:`steps.params.PipelineParameters`)."""
        p = controller.start(args, settings)
        data_sha256 = controller.data_input(p)
        dataset, data_record = load_step(p.data_path, data_sha256=data_sha256, dataset_id=p.dataset_id)
        X_train, X_test, y_train, y_test = split_step(dataset, test_size=p.test_size, random_state=p.random_state)
        trained = {kind: train[kind](X_train, y_train, **model_arguments(kind, p)) for kind in p.model_list()}
        controller.record_data(data_record)
        validation = {kind: scores for kind, (_, scores) in trained.items()}  # from training rows only
        controller.record_validation(validation)
        metrics = evaluate_step(X_test, y_test, output_dir=p.output_dir, **{k: m for k, (m, _) in trained.items()})
        return controller.finish(metrics, p, settings, experiment=PIPELINE_NAME, validation=validation)

    return tabular_regression


def main(argv=None) -> int:
    """The command line (:mod:`cli.main`); returns the exit code: 0 ok, 1 failed, 2 bad input, 130 interrupted."""
    from cli.main import main as run_command

    return run_command(sys.argv[1:] if argv is None else argv, sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
