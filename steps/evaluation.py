"""Test-set metrics of the regressors.

Metrics are scikit-learn's: :func:`~sklearn.metrics.r2_score` (coefficient of determination),
:func:`~sklearn.metrics.root_mean_squared_error` and :func:`~sklearn.metrics.mean_absolute_error`,
both errors in the target's unit ($100k).

A score is only given where it means something. R^2 compares the errors with the spread of the
true targets: for a constant test target (e.g. 12 districts all at the 5.00001 cap) it is
undefined, and scikit-learn's formula divides by a rounding residue (R^2 = -1e28), so it is NaN
here. With fewer than :data:`MIN_SCORE_ROWS` test rows (the split's own minimum,
:data:`steps.split.MIN_TEST_ROWS` = 5) no metric is given: R^2, RMSE and MAE are NaN. Either
case logs one warning on the ``steps.evaluation`` logger. Writing a run's files is :mod:`steps.outputs` (its names
are still importable from here). Nothing here knows about ClearML.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from steps.logs import library_warnings

# Kept importable from here (clearml_pipeline.py and older code); defined in steps.outputs.
from steps.outputs import (  # noqa: F401
    OutputError,
    check_output_dir,
    new_run_dir,
    staged_output,
    write_run_files,
    write_run_outputs,
)
from steps.split import MIN_TEST_ROWS

log = logging.getLogger(__name__)

METRIC_COLUMNS: tuple[str, ...] = ("model", "r2", "rmse", "mae", "n_test")
#: Fewest test rows for which any metric is given (the split's minimum test set).
MIN_SCORE_ROWS = MIN_TEST_ROWS
#: A test target whose range is at most this fraction of its largest magnitude (at least 1) is constant.
CONSTANT_RTOL = 1e-9


def score_problem(y_true) -> Optional[str]:
    """Why the metrics of predictions of ``y_true`` (n true targets, $100k) cannot all be given, or None.

    :returns: a sentence for a warning: fewer than :data:`MIN_SCORE_ROWS` rows (no metric), or a
        constant target (no R^2; RMSE and MAE are valid).
    """
    y = np.asarray(y_true, dtype=float).ravel()
    if len(y) < MIN_SCORE_ROWS:
        return (f"only {len(y)} test row(s), fewer than the {MIN_SCORE_ROWS} a meaningful score needs: R2, RMSE "
                "and MAE are NaN; use a larger --test-size or more data")
    if _constant(y):
        return (f"R2 is undefined: all {len(y)} test targets are {y[0]:g} ($100k), so R2 is NaN (RMSE and MAE "
                "are valid); choose another --random-state or --test-size, or use more varied data")
    return None


def _constant(y: np.ndarray) -> bool:
    return bool(np.ptp(y) <= CONSTANT_RTOL * max(1.0, float(np.abs(y).max())))


def regression_metrics(y_true, y_pred, warn: bool = True) -> dict[str, float]:
    """R^2, RMSE and MAE of predictions, NaN where undefined (see :func:`score_problem`).

    :param y_true: n true targets ($100k); ``y_pred``: n predictions ($100k).
    :param warn: log :func:`score_problem`'s sentence as a warning when there is one.
    :returns: ``{"r2": ..., "rmse": ..., "mae": ...}`` (RMSE and MAE in $100k); ``r2`` is NaN for a
        constant ``y_true``, all three are NaN for fewer than :data:`MIN_SCORE_ROWS` rows.
    """
    y = np.asarray(y_true, dtype=float).ravel()
    problem = score_problem(y)
    if problem and warn:
        log.warning("%s", problem)
    if len(y) < MIN_SCORE_ROWS:
        return {"r2": math.nan, "rmse": math.nan, "mae": math.nan}
    with library_warnings(log):
        return {
            "r2": math.nan if _constant(y) else float(r2_score(y, y_pred)),
            "rmse": float(root_mean_squared_error(y, y_pred)),
            "mae": float(mean_absolute_error(y, y_pred)),
        }


def predict_all(models: Mapping[str, object], X_test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Predictions of each fitted model on ``X_test`` (n_test x 8): ``{name: (n_test,) array in $100k}``."""
    return {name: np.asarray(model.predict(X_test), dtype=float) for name, model in models.items()}


def metrics_table(y_test, predictions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per model with the columns :data:`METRIC_COLUMNS` (the content of ``metrics.csv``).

    :param y_test: n_test true targets ($100k); ``predictions``: ``{model: (n_test,) array in $100k}``.
    :returns: columns model, r2, rmse, mae ($100k), n_test; NaN where a metric is undefined, with
        one warning for the whole table (see :func:`score_problem`). Logs one INFO line per model on
        ``steps.evaluation``: R2, RMSE and MAE.
    """
    problem = score_problem(y_test)
    if problem and predictions:
        log.warning("%s", problem)
    rows = [{"model": name, **regression_metrics(y_test, pred, warn=False), "n_test": len(pred)}
            for name, pred in predictions.items()]
    for row in rows:
        log.info("test %s: R2 %.4f, RMSE %.4f, MAE %.4f ($100k) on %d rows",
                 row["model"], row["r2"], row["rmse"], row["mae"], row["n_test"])
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
