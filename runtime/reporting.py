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
    step's console, and each input listed once on the step's task (:func:`drop_duplicate_inputs`). A step on an
    agent or in a ``--mode local`` subprocess is a fresh process whose logging nothing configured; offline
    (in-process) the command line's console is already set (idempotent)."""
    from clearml import Task

    from steps.logs import configure_console

    configure_console()
    task = Task.current_task()
    if task is not None and not Task.is_offline():
        drop_duplicate_inputs(task)


def drop_duplicate_inputs(task) -> list[str]:
    """ClearML's step code lists an input passed as an artifact twice in the step's parameters: empty under
    ``kwargs`` (every argument of the function) and as ``<step id>.<name>`` under ``kwargs_artifacts``. The
    empty one is deleted from the running step's own task (its code has already read its parameters; the
    cache key was computed when the step was created).

    :returns: the names of the parameters deleted.
    """
    params = task.get_parameters() or {}
    empty = [f"kwargs/{key.split('/', 1)[1]}" for key in params if key.startswith("kwargs_artifacts/")
             and params.get(f"kwargs/{key.split('/', 1)[1]}") == ""]
    for name in empty:
        task.delete_parameter(name, force=True)
    return empty


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

    from runtime.model_registry import register_models
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
    titled as the PNG files are (``titles``: file stem -> title). The table and the figures go to the
    pipeline run too (the scores get there by ``monitor_metrics``): comparing runs in the web UI then
    labels them by run, not by step task (``evaluate.<id>``).

    :param metrics: one row per model (:func:`steps.evaluation.metrics_table`).
    :param y_test: n_test targets ($100k); ``predictions``: ``{model: (n_test,) array}``.
    """
    from clearml import Logger

    logger = Logger.current_logger()
    _report_scores(logger, metrics)
    run = _pipeline_run_logger()
    for target in (logger, run) if run is not None else (logger,):
        _report_table(target, metrics)
        _report_figures(target, metrics, np.asarray(y_test, dtype=float), predictions, titles)
    if run is not None:
        run.flush()


def _pipeline_run_logger():
    """The logger of the pipeline run (the controller) this step belongs to; None where the step's task is the
    run itself (offline) or the run cannot be read."""
    from clearml import Task

    task = Task.current_task()
    if task is None or not getattr(task, "parent", None) or task.parent == task.id:
        return None
    try:
        return Task.get_task(task_id=task.parent).get_logger()
    except Exception:  # the step's own report matters more
        return None


def _report_figures(logger, metrics: pd.DataFrame, actual: np.ndarray, predictions: Mapping[str, np.ndarray],
                    titles: Mapping[str, str]) -> None:
    _report_predictions(logger, actual, predictions, titles)
    logger.report_histogram(
        title=titles["model_comparison"], series="test set", iteration=0,
        values=metrics[["r2", "rmse", "mae"]].to_numpy(), labels=list(metrics["model"]),
        xlabels=["R2", "RMSE ($100k)", "MAE ($100k)"], yaxis="value",
    )


def _report_scores(logger, metrics: pd.DataFrame) -> None:
    for row in metrics.itertuples():
        for title, value in zip(METRIC_TITLES, (row.r2, row.rmse, row.mae), strict=True):
            if not np.isfinite(value):  # an undefined score (e.g. R2 of a constant target) is left out,
                continue  # not reported as ClearML's stand-in 0.0
            logger.report_scalar(title=title, series=row.model, value=value, iteration=0)
            logger.report_single_value(f"{row.model}/{title}", value)


def _report_table(logger, metrics: pd.DataFrame) -> None:
    """The table ``Metrics``, scores to 4 decimals as the command line prints them; NaN: 'undefined'."""
    shown = metrics.astype(object)
    for column in ("r2", "rmse", "mae"):
        shown[column] = [f"{v:.4f}" if np.isfinite(v) else "undefined" for v in metrics[column]]
    logger.report_table(title="Metrics", series="test set", iteration=0, table_plot=shown)


def _report_predictions(logger, actual: np.ndarray, predictions: Mapping[str, np.ndarray],
                        titles: Mapping[str, str]) -> None:
    """Predicted vs actual (a sample of points, the diagonal, the $500k cap) and each model's error histogram."""
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

    shown = sample_indices(len(actual))
    low, high = float(np.nanmin(actual)), float(np.nanmax(actual))
    count_limit = error_count_limit(actual, predictions)  # one y range for every model's histogram
    traces = [_trace(name, actual[shown], prediction[shown]) for name, prediction in predictions.items()]
    # the diagonal and the cap are drawn as lines of the figure, not traces: comparing runs in the web UI
    # then shows one chart per model with the runs side by side, and no chart of a reference line alone
    shapes = [_line(low, low, high, high, "dash")]
    notes = [{"x": high, "y": high, "text": DIAGONAL_LABEL, "showarrow": False, "xanchor": "right", "yanchor": "bottom"}]
    if high >= CAP:
        shapes.append(_line(CAP, low, CAP, high, "dot"))
        notes.append({"x": CAP, "y": low, "text": CAP_LABEL, "showarrow": False, "xanchor": "right",
                      "yanchor": "bottom", "textangle": -90})
    logger.report_plotly(title=titles["prediction_plot"], series="test set", iteration=0, figure={
        "data": traces, "layout": {"xaxis": {"title": PREDICTION_AXES[0]}, "yaxis": {"title": PREDICTION_AXES[1]},
                                   "shapes": shapes, "annotations": notes}})
    for name, prediction in predictions.items():
        counts, edges = error_histogram(actual, prediction)
        logger.report_histogram(
            title=titles[f"{name}_error_distribution"], series=name, values=counts, iteration=0,
            xlabels=[f"{(a + b) / 2:.2f}" for a, b in zip(edges[:-1], edges[1:], strict=True)],
            xaxis=ERROR_AXES[0], yaxis=ERROR_AXES[1], extra_layout={"yaxis": {"range": [0, count_limit]}},
        )


def _trace(name: str, x, y) -> dict:
    return {"type": "scatter", "mode": "markers", "name": name, "x": [float(v) for v in x], "y": [float(v) for v in y]}


def _line(x0: float, y0: float, x1: float, y1: float, dash: str) -> dict:
    return {"type": "line", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "line": {"color": "black", "width": 1, "dash": dash}}


def upload_result_files(task, paths: Mapping[str, Path]) -> None:
    """Upload ``metrics.csv`` and the PNG figures as artifacts of ``task`` (named by file name).

    A remote run writes its output folder on the agent's machine; the artifacts (copied onto the
    pipeline run by ``monitor_artifacts``) make the same files reachable from the web UI.
    """
    for rel, path in paths.items():
        if rel == "metrics.csv" or rel.endswith(".png"):
            task.upload_artifact(rel, artifact_object=str(path), wait_on_upload=True)
