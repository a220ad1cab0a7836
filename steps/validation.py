"""A validation score from the training rows alone, for a hyperparameter optimizer.

The test set judges the final models; tuning on it would make its scores optimistic. An optimizer
tunes :func:`validation_scores` instead: a fresh model fitted on part of the training rows and
scored on the rest of them. Nothing here knows about ClearML.
"""

from __future__ import annotations

import inspect
import logging
import math

import pandas as pd
from sklearn.model_selection import train_test_split

from steps.evaluation import regression_metrics
from steps.models import BUILDERS, train_model

log = logging.getLogger(__name__)

#: Default share of the training rows held out for validation.
VALIDATION_FRACTION = 0.2


def validation_scores(
    kind: str,
    X_train: pd.DataFrame,
    y_train: pd.Series,
    fraction: float = VALIDATION_FRACTION,
    random_state: int = 42,
    **estimator_kwargs,
) -> dict[str, float]:
    """R^2, RMSE and MAE of a fresh model ``kind`` fitted on ``1 - fraction`` of the training rows and
    scored on the held-out rest (:func:`~sklearn.model_selection.train_test_split` seeded by ``random_state``).

    Only ``X_train``/``y_train`` are used: pass the training set, never the test set. The result is
    deterministic for a given seed. ``random_state`` also seeds the model when its builder takes
    one (as in the pipeline, where one seed drives the split and every model), so
    ``**model_arguments(kind, params)`` can be passed as it is.

    :param kind: one of :data:`~steps.params.MODEL_KINDS`.
    :param X_train: n_train x 8 raw features; ``y_train``: n_train targets in $100k.
    :param fraction: held-out share, in (0, 1); both parts need at least one row.
    :param estimator_kwargs: builder keywords (see :func:`steps.models.model_arguments`).
    :returns: ``{"r2": ..., "rmse": ..., "mae": ...}`` on the held-out rows (RMSE and MAE in $100k;
        NaN where undefined, see :func:`steps.evaluation.regression_metrics`).
    :raises ValueError: an unknown ``kind``, ``fraction`` outside (0, 1), or too few rows to hold any out.
    """
    if kind not in BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(BUILDERS)}")
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise ValueError(f"fraction = {fraction!r} is out of range: allowed 0 < fraction < 1, e.g. 0.2")
    n_val = math.ceil(len(X_train) * fraction)
    if n_val < 1 or len(X_train) - n_val < 1:
        raise ValueError(f"{len(X_train)} training rows cannot be split by fraction {fraction:g}; use more rows")
    if "random_state" in inspect.signature(BUILDERS[kind]).parameters:
        estimator_kwargs["random_state"] = random_state
    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=fraction, random_state=random_state)
    log.info("validation %s: a fresh model on %d of the %d training rows, scored on the other %d (the run's model "
             "is the one fitted on all of them)", kind, len(X_fit), len(X_train), len(X_val))
    model = train_model(kind, X_fit, y_fit, **estimator_kwargs)
    scores = regression_metrics(y_val, model.predict(X_val))
    log.info("validation %s: R2 %.4f, RMSE %.4f, MAE %.4f ($100k) on %d held-out training rows",
             kind, scores["r2"], scores["rmse"], scores["mae"], len(y_val))
    return scores
