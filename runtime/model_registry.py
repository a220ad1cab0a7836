"""The pipeline's models on ClearML's Models page: named by run, with their framework, scores and data.

Called by the evaluate step (:func:`runtime.reporting.report_evaluation`) once the run's files are staged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

#: The test scores a model's description and metadata carry, in this order.
METRIC_TITLES: tuple[str, ...] = ("R2", "RMSE", "MAE")


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
