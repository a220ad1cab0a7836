"""What the pipeline reports to ClearML: the ClearML side of the ``train_xgboost`` and ``evaluate`` steps.

The computations live in ``steps/`` (ClearML-free); these functions only hand their results to
ClearML's own API: ``Logger`` (scalars, single values, tables, interactive plots),
``Task.upload_artifact`` (the run's files) and ``OutputModel`` (the Models tab). They are called
inside the steps' bodies, so they work the same in-process (offline), in a step subprocess
(``--mode local``) and on an agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

#: The scalars of every model, as ``(title, series)``: copied onto the pipeline run (monitored metrics).
METRIC_TITLES: tuple[str, ...] = ("R2", "RMSE", "MAE")


def monitored_metrics(model_kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """``[(title, series)]`` of the test metrics of every model kind, for ``monitor_metrics``."""
    return [(title, kind) for title in METRIC_TITLES for kind in model_kinds]


def result_files(model_kinds: tuple[str, ...]) -> list[str]:
    """Names of the run's files that become artifacts of the pipeline run (``monitor_artifacts``)."""
    return ["metrics.csv", "prediction_plot.png", *(f"{k}_error_distribution.png" for k in model_kinds),
            "model_comparison.png"]


def evaluate_monitoring(model_kinds: tuple[str, ...]) -> dict:
    """The evaluate step's ClearML settings: what is copied onto the pipeline run (test scores, the run's
    files, the models), and no auto-logging (figures and models are reported once, explicitly)."""
    return dict(monitor_metrics=monitored_metrics(model_kinds), monitor_artifacts=result_files(model_kinds),
                monitor_models=list(model_kinds),
                auto_connect_frameworks={"matplotlib": False, "joblib": False, "scikit": False, "xgboost": False})


def step_console() -> None:
    """Called first in every step's body: the steps' progress (``steps.*`` loggers) as ``info:`` lines on the
    step's console. A step on an agent or in a ``--mode local`` subprocess is a fresh process whose logging
    nothing configured; offline (in-process) the command line's console is already set (idempotent)."""
    from cli.console import configure_console

    configure_console()


def report_training_curve(model) -> None:
    """Report XGBoost's validation RMSE per boosting round (early stopping's curve) as one line plot,
    and the rounds kept as a single value (the curve: :func:`steps.plots.xgboost_curve`).

    :param model: the fitted XGBoost pipeline or estimator; without an evaluation set nothing is reported.
    """
    from clearml import Logger

    from steps.plots import XGBOOST_CURVE_SERIES, XGBOOST_CURVE_TITLE, xgboost_curve

    rmse, best = xgboost_curve(model)
    if not rmse.size:
        return
    logger = Logger.current_logger()
    logger.report_scatter2d(
        title=XGBOOST_CURVE_TITLE, series=XGBOOST_CURVE_SERIES, iteration=0, mode="lines",
        scatter=np.column_stack([np.arange(1, rmse.size + 1), rmse]),
        xaxis="boosting round", yaxis="validation RMSE ($100k)",
    )
    for round_, value in enumerate(rmse, start=1):  # also a scalar series: iteration = boosting round
        logger.report_scalar(title=XGBOOST_CURVE_TITLE, series=XGBOOST_CURVE_SERIES, value=float(value),
                             iteration=round_)
    if best is not None:
        logger.report_single_value("xgboost/rounds kept", int(best) + 1)


#: How the validation scores are named on the pipeline run (``Summary`` single values and scalars).
VALIDATION_TITLE = "validation {metric}"


def validation_series(kind: str, metric: str = "R2") -> str:
    """The single value that carries model ``kind``'s validation ``metric`` on the pipeline run (ClearML
    lists single values under the title ``Summary``): e.g. ``xgboost/validation R2``."""
    return f"{kind}/{VALIDATION_TITLE.format(metric=metric)}"


def report_validation(validation: Mapping[str, Mapping[str, float]]) -> None:
    """Report ``{kind: {"r2", "rmse", "mae"}}`` (validation part of the training rows; RMSE, MAE in $100k)
    on the current task (the controller): single values ``<kind>/validation R2`` ... and scalars
    ``validation R2`` ... with one series per model."""
    from clearml import Logger

    logger = Logger.current_logger()
    for kind, scores in validation.items():
        for title, key in zip(METRIC_TITLES, ("r2", "rmse", "mae"), strict=True):
            value = float(scores[key])
            if not np.isfinite(value):
                continue
            logger.report_single_value(validation_series(kind, title), value)
            logger.report_scalar(title=VALIDATION_TITLE.format(metric=title), series=kind, value=value, iteration=0)


def report_evaluation(X_test, y_test, output_dir: str, models: Mapping[str, object]) -> pd.DataFrame:
    """The evaluate step: score ``models`` on the test set, write the run's files to ``output_dir`` all at
    once (:func:`steps.outputs.staged_output`), report metrics, figures, files and models to ClearML.

    :param X_test: n_test x 8 features; ``y_test``: n_test targets ($100k).
    :returns: the metrics table: one row per model (model, r2, rmse, mae in $100k, n_test).
    """
    from clearml import Task

    from runtime.session_disk import cache_disk_errors, check_session_written
    from steps.evaluation import metrics_table, predict_all
    from steps.logs import library_warnings
    from steps.outputs import output_dir_for_step, staged_output, write_run_files
    from steps.plots import figure_titles, run_figures

    output_dir = str(output_dir_for_step(output_dir))  # on an agent, a re-run's folder may be taken
    missing = [kind for kind, model in models.items() if model is None]
    if missing:  # ClearML hands an aborted or failed step's result on as None: never evaluate without it
        raise RuntimeError(f"no trained model from step 'train_{missing[0]}' (it did not complete); "
                           "the run cannot evaluate every model it was asked for")
    fitted = dict(models)
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
        with cache_disk_errors(task):  # offline: a full cache disk is named as such
            upload_result_files(task, paths)
            register_models(task, metrics, paths)
        check_session_written(task)  # offline: ClearML may lose an artifact to a full disk silently
    print(f"results written to {output_dir}")
    return metrics


def report_metrics(metrics: pd.DataFrame, y_test, predictions: Mapping[str, np.ndarray],
                   titles: Mapping[str, str]) -> None:
    """Report the test metrics and the figures as ClearML scalars, single values, a table and plots.

    Scalars ``R2``/``RMSE``/``MAE`` with one series per model (RMSE and MAE in $100k), the same
    as single values ``<model>/<metric>``, the table ``Metrics``; the figures as ClearML's own
    interactive plots built from the numbers (far cheaper than converting matplotlib figures),
    titled as the PNG files are (``titles``: file stem -> title).

    :param metrics: one row per model (:func:`steps.evaluation.metrics_table`).
    :param y_test: n_test targets ($100k); ``predictions``: ``{model: (n_test,) array}``.
    """
    from clearml import Logger

    from steps.plots import (
        CAP,
        CAP_LABEL,
        DIAGONAL_LABEL,
        ERROR_AXES,
        PREDICTION_AXES,
        error_count_limit,
        error_histogram,
        sample_indices,
    )

    logger = Logger.current_logger()
    for row in metrics.itertuples():
        for title, value in zip(METRIC_TITLES, (row.r2, row.rmse, row.mae), strict=True):
            if not np.isfinite(value):  # an undefined score (e.g. R2 of a constant target) is left out,
                continue  # not reported as ClearML's stand-in 0.0
            logger.report_scalar(title=title, series=row.model, value=value, iteration=0)
            logger.report_single_value(f"{row.model}/{title}", value)
    shown_table = metrics.astype(object).where(metrics.notna(), "undefined")  # NaN: a score that does not exist
    logger.report_table(title="Metrics", series="test set", iteration=0, table_plot=shown_table)
    actual = np.asarray(y_test, dtype=float)
    shown = sample_indices(len(actual))
    low, high = float(np.nanmin(actual)), float(np.nanmax(actual))
    count_limit = error_count_limit(actual, predictions)  # one y range for every model's histogram
    for name, prediction in predictions.items():
        logger.report_scatter2d(
            title=titles["prediction_plot"], series=name, iteration=0, mode="markers",
            scatter=np.column_stack([actual[shown], prediction[shown]]), xaxis=PREDICTION_AXES[0],
            yaxis=PREDICTION_AXES[1],
        )
        counts, edges = error_histogram(actual, prediction)
        logger.report_histogram(
            title=titles[f"{name}_error_distribution"], series=name, values=counts, iteration=0,
            xlabels=[f"{(a + b) / 2:.2f}" for a, b in zip(edges[:-1], edges[1:], strict=True)],
            xaxis=ERROR_AXES[0], yaxis=ERROR_AXES[1], extra_layout={"yaxis": {"range": [0, count_limit]}},
        )
    logger.report_scatter2d(
        title=titles["prediction_plot"], series=DIAGONAL_LABEL, iteration=0, mode="lines",
        scatter=np.array([[low, low], [high, high]]), xaxis=PREDICTION_AXES[0], yaxis=PREDICTION_AXES[1],
    )
    if high >= CAP:
        logger.report_scatter2d(
            title=titles["prediction_plot"], series=CAP_LABEL, iteration=0, mode="lines",
            scatter=np.array([[CAP, low], [CAP, high]]), xaxis=PREDICTION_AXES[0], yaxis=PREDICTION_AXES[1],
        )
    logger.report_histogram(
        title=titles["model_comparison"], series="test set", iteration=0,
        values=metrics[["r2", "rmse", "mae"]].to_numpy(), labels=list(metrics["model"]),
        xlabels=["R2", "RMSE ($100k)", "MAE ($100k)"], yaxis="value",
    )


def upload_result_files(task, paths: Mapping[str, Path]) -> None:
    """Upload ``metrics.csv`` and the PNG figures as artifacts of ``task`` (named by file name).

    A remote run writes its output folder on the agent's machine; the artifacts (copied onto the
    pipeline run by ``monitor_artifacts``) make the same files reachable from the web UI.
    """
    for rel, path in paths.items():
        if rel == "metrics.csv" or rel.endswith(".png"):
            task.upload_artifact(rel, artifact_object=str(path), wait_on_upload=True)


def register_models(task, metrics: pd.DataFrame, paths: Mapping[str, Path]) -> None:
    """Register one output model per estimator (ClearML's Models tab), test metrics as metadata.

    Each model is named by run and kind (``tabular regression #12 · xgboost``), tagged with its kind,
    has the framework the Models page shows (XGBoost for the XGBoost pipeline, else ScikitLearn), a
    description (test scores, the data's SHA-256, the run), ``r2``/``rmse``/``mae`` as float metadata,
    and its weights file is the fitted estimator saved with joblib (``models/<kind>.joblib``), loadable
    again with ``InputModel(model_id).get_local_copy()`` and ``joblib.load``. On the step's task each is
    listed under its kind (the file's stem), the name ``monitor_models`` copies onto the pipeline run.
    Offline, ``OutputModel`` cannot register weights (clearml 2.1: ``DummyModel`` has no ``locked``); the
    session keeps the model files as artifacts ``model_<kind>`` with the same metadata instead.
    """
    from clearml import OutputModel, Task
    from clearml.backend_api import Session

    # the task's output destination, else the file server: a local path would not outlive the run
    destination = None if Task.is_offline() else (task.get_output_destination() or Session.get_files_server_host())
    run = {} if Task.is_offline() else run_identity(task)
    for row in metrics.itertuples():
        scores = {key: float(getattr(row, key)) for key in ("r2", "rmse", "mae")}
        weights = paths[f"models/{row.model}.joblib"]
        if Task.is_offline():
            task.upload_artifact(f"model_{row.model}", artifact_object=str(weights), metadata=scores,
                                 wait_on_upload=True)
            continue
        model = OutputModel(task=task, name=model_name(run["name"], row.model), framework=model_framework(row.model),
                            tags=[row.model])
        for key, value in scores.items():
            model.set_metadata(key, f"{value:.6f}", v_type="float")
        # synchronously: the file sits in the staging folder, which is moved into place right after;
        # no "snapshot <staging path> stored" comment
        model.update_weights(weights_filename=str(weights), upload_uri=destination, auto_delete_file=False,
                             async_enable=False, update_comment=False)
        model.comment = model_description(row.model, scores, int(row.n_test), run)


#: The separator of a model's name: ``<run> · <kind>``.
MODEL_NAME_SEPARATOR = " · "


def model_name(run_name: str, kind: str) -> str:
    """The name a model has on the Models page: ``tabular regression #12 · xgboost``."""
    return f"{run_name}{MODEL_NAME_SEPARATOR}{kind}"


def model_framework(kind: str) -> str:
    """The framework the Models page shows: the XGBoost pipeline's is XGBoost (an XGBRegressor inside a
    scikit-learn Pipeline), every other model's ScikitLearn."""
    return "XGBoost" if kind == "xgboost" else "ScikitLearn"


def model_description(kind: str, scores: Mapping[str, float], n_test: int, run: Mapping[str, str]) -> str:
    """A model's description: what it is, its test scores, the data it was trained on, and its run."""
    shown = ", ".join(f"{title} {scores[key]:.4f}" for title, key in zip(METRIC_TITLES, ("r2", "rmse", "mae"),
                                                                          strict=True))
    return (f"California Housing regressor ({kind}): a scikit-learn estimator saved with joblib; it predicts the "
            "median house value ($100k) from the 8 raw feature columns.\n"
            f"test set ({n_test} rows): {shown} (RMSE and MAE in $100k)\n"
            f"data: {run.get('data_source') or 'unknown'}, SHA-256 {run.get('data_sha256') or 'unknown'}\n"
            f"run: {run['name']} (task {run['id']})")


def run_identity(task) -> dict[str, str]:
    """``{"name", "id", "data_source", "data_sha256"}`` of the pipeline run ``task`` (a step) belongs to:
    its parent, the controller (offline, the step's task is the controller itself)."""
    from clearml import Task

    run = task
    if getattr(task, "parent", None):
        try:
            run = Task.get_task(task_id=task.parent)
        except Exception:  # the description matters less than the model
            run = task
    properties = run.get_user_properties(value_only=True) or {}
    return {"name": run.name, "id": run.id, "data_source": str(properties.get("data_source", "")),
            "data_sha256": str(properties.get("data_sha256", ""))}
