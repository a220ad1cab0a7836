"""``--mlflow``: the run, also an MLflow run, logged once by the process that runs the controller.

The controller logs it as its last act, when the evaluation is done (:func:`runtime.controller.finish`),
so in every mode it is the one process that has all the results: offline and ``--mode local`` read
the output folder; a controller whose evaluate step ran on another machine first downloads the
run's files (the pipeline run's artifacts) and models (its output models) into a temporary folder.
A re-run from the web UI of such a run logs too: the request is the task's ``tracking/mlflow``
parameter (beside ``Args``, not one of them).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

#: The task parameter that asks a run's controller to log to MLflow.
MLFLOW_PARAMETER = "tracking/mlflow"


def requested(task) -> bool:
    """Whether the run of ``task`` (a controller) asked to be logged to MLflow."""
    return str(task.get_parameter(MLFLOW_PARAMETER, default="")).lower() == "true"


def _downloaded(task, folder: Path) -> Path:
    """The run's files and models from the server into ``folder`` (an output folder's layout)."""
    (folder / "models").mkdir(parents=True)
    for name, artifact in task.artifacts.items():
        if name == "metrics.csv" or name.endswith(".png"):
            shutil.copyfile(artifact.get_local_copy(), folder / name)
    for model in task.models["output"]:
        kind = next((tag for tag in model.tags or [] if tag), model.name)
        shutil.copyfile(model.get_local_copy(), folder / "models" / f"{kind}.joblib")
    return folder


def log_to_mlflow(task, params: Mapping[str, object], output_dir: str, experiment: str,
                  validation: Mapping[str, Mapping[str, float]]) -> str:
    """Log the finished run as one MLflow run (:func:`tracking.mlflow_run.log_run`); record its id on ``task``.

    :param validation: ``{model: {"r2", "rmse", "mae"}}`` of the validation part of the training rows.
    :returns: the MLflow run id.
    :raises tracking.mlflow_run.MlflowLogError: MLflow missing or failing (one line).
    """
    from clearml import Task

    from runtime.data_versions import RECORD_KEYS
    from tracking.mlflow_run import log_run

    parameters = task.get_parameters(cast=False) or {}  # user properties are its "properties/" (offline too)
    data_record = {key: str(parameters.get(f"properties/{key}", "")) for key in RECORD_KEYS}
    url = "" if Task.is_offline() else task.get_output_log_web_page()
    with tempfile.TemporaryDirectory(prefix="mlflow-run-") as scratch:
        folder = Path(output_dir)
        if not (folder / "metrics.csv").is_file():  # the evaluate step ran on another machine
            folder = _downloaded(task, Path(scratch) / "run")
        import pandas as pd

        scores = pd.DataFrame([{"model": kind, **dict(values)} for kind, values in validation.items()])
        run_id, run_url = log_run(experiment=experiment, params=params, output_dir=folder, data_record=data_record,
                                  clearml_task_id=task.id, clearml_url=url, validation=scores)
    task.set_user_properties(mlflow_run_id=run_id, **({"mlflow_run_url": run_url} if run_url else {}))
    print(f"MLflow: run {run_id} in experiment '{experiment}'" + (f": {run_url}" if run_url else ""), flush=True)
    return run_id
