"""Test-set metrics of the regressors.

Metrics are scikit-learn's: :func:`~sklearn.metrics.r2_score` (coefficient of determination),
:func:`~sklearn.metrics.root_mean_squared_error` and :func:`~sklearn.metrics.mean_absolute_error`,
both errors in the target's unit ($100k). Writing a run's files is :mod:`steps.outputs` (its names
are still importable from here). Nothing here knows about ClearML.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

# Kept importable from here (clearml_pipeline.py and older code); defined in steps.outputs.
from steps.outputs import (  # noqa: F401
    OutputError,
    check_output_dir,
    new_run_dir,
    staged_output,
    write_run_files,
    write_run_outputs,
)

METRIC_COLUMNS: tuple[str, ...] = ("model", "r2", "rmse", "mae", "n_test")


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """R^2, RMSE and MAE of predictions.

    :param y_true: n true targets ($100k); ``y_pred``: n predictions ($100k).
    :returns: ``{"r2": ..., "rmse": ..., "mae": ...}`` (RMSE and MAE in $100k).
    """
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


def predict_all(models: Mapping[str, object], X_test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Predictions of each fitted model on ``X_test`` (n_test x 8): ``{name: (n_test,) array in $100k}``."""
    return {name: np.asarray(model.predict(X_test), dtype=float) for name, model in models.items()}


def metrics_table(y_test, predictions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per model with the columns :data:`METRIC_COLUMNS` (the content of ``metrics.csv``)."""
    rows = [{"model": name, **regression_metrics(y_test, pred), "n_test": len(pred)} for name, pred in predictions.items()]
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
