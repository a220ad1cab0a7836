"""Quality section: test-set R², RMSE and MAE of every model over seeds, with default parameters.

What it measures: for each seed (``random_state`` of the split and of every model), the test-set
R², RMSE and MAE ($100k) of polynomial, XGBoost, linear and random forest; polynomial and XGBoost
also without the neighbour-target features (``polynomial_k0``, ``xgboost_k0``); the polynomial per
degree (``polynomial_deg<d>``); per fit its time (s), the CPU other processes used meanwhile
(cores), the ``joblib.dump`` size of the fitted model (bytes) and XGBoost's boosting rounds.

How: in this process, through the ClearML-free ``steps`` functions, as the pipeline and
``bench/plain_script.py`` do: :func:`steps.models.train_model` with the keywords of
:func:`steps.models.model_arguments`. The tables and goals are made by
:func:`bench.report.quality_rows`, beside the published anchors (:data:`ANCHORS`).

Importing this module only defines things; ``steps.models`` (XGBoost, scikit-learn) and joblib are
imported when a measurement starts. Needs the project root on ``sys.path`` (for ``steps``).
"""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import psutil

from bench.common import Settings, busy_cpu_s, wait_for_quiet
from steps.params import DEFAULTS, MODEL_KINDS

METRICS = ("r2", "rmse", "mae")

#: Goals of the issues (9: quality; 12: neighbour-target features).
GOAL_POLY_MIN_DEFAULT = 0.74  # polynomial without neighbour features, every seed
GOAL_POLY_MIN_NEIGHBORS = 0.84  # polynomial (default degree) with neighbour features, every seed
GOAL_POLY_MIN_ANY_DEGREE = 0.70
GOAL_XGB_MEAN_PLAIN = 0.86  # XGBoost without neighbour features
GOAL_XGB_MEAN = 0.875  # XGBoost with neighbour features: mean over the seeds ...
GOAL_XGB_MIN = 0.865  # ... and every seed
GOAL_XGB_FIT_S = 10.0  # XGBoost fit on 2 cores (undisturbed fits)
#: Published test R² on California Housing for this split size, as quoted in issue 12, shown beside ours.
ANCHORS = {"best tuned gradient boosting (CatBoost ensemble)": 0.8605, "best neural (TabR, retrieval-based)": 0.883}


def quality_fits(params, degrees: list[int]) -> dict[str, tuple[str, dict]]:
    """The fits of one seed: ``{row name: (model kind, train_model keywords)}`` from ``params``
    (a ``steps.params.PipelineParameters``) by :func:`steps.models.model_arguments`."""
    from steps.models import model_arguments

    fits = {kind: (kind, model_arguments(kind, params)) for kind in MODEL_KINDS}
    if params.spatial_neighbors:
        for kind in ("polynomial", "xgboost"):
            fits[f"{kind}_k0"] = (kind, {**model_arguments(kind, params), "neighbors": 0})
    for degree in degrees:
        if degree != params.poly_degree:
            fits[f"polynomial_deg{degree}"] = ("polynomial", {**model_arguments("polynomial", params), "degree": degree})
    return fits


def fit_and_score(kind: str, kwargs: dict, split: tuple, early_stopping: bool) -> dict:
    """Fit model ``kind`` with ``kwargs`` by :func:`steps.models.train_model` on the training part of ``split``
    (X_train, X_test, y_train, y_test) and score it on the test part: r2, rmse, mae ($100k), fit_s (s),
    other_cores (CPU of other processes during the fit, cores), rounds (XGBoost's kept boosting rounds
    when ``early_stopping``, else NaN), joblib_bytes (size of the fitted model saved with ``joblib.dump``)."""
    import joblib

    from steps.evaluation import regression_metrics
    from steps.models import train_model

    X_train, X_test, y_train, y_test = split
    me = psutil.Process()
    busy0, own0, t0 = busy_cpu_s(), sum(me.cpu_times()[:2]), time.perf_counter()
    model = train_model(kind, X_train, y_train, **kwargs)
    fit_s = time.perf_counter() - t0
    other = max(0.0, (busy_cpu_s() - busy0 - (sum(me.cpu_times()[:2]) - own0)) / fit_s)
    rounds = model[-1].best_iteration + 1 if kind == "xgboost" and early_stopping else np.nan
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return {**regression_metrics(y_test, model.predict(X_test)), "fit_s": fit_s, "other_cores": other,
            "rounds": rounds, "joblib_bytes": buffer.tell()}


def measure_quality(data: Path, seeds: list[int], degrees: list[int], settings: Settings,
                    neighbors: Optional[int] = None) -> pd.DataFrame:
    """Test-set R^2 / RMSE / MAE of every model for each seed, with the pipeline's default parameters.

    In this process, through the ClearML-free ``steps`` functions (:func:`steps.models.train_model`
    with :func:`steps.models.model_arguments`, as ``bench/plain_script.py`` does): the seed is the
    ``random_state`` of the split and of every model. ``neighbors`` (default: the parameter
    ``spatial_neighbors``) is k of the neighbour-target features; when it is > 0 the polynomial and
    XGBoost are also fitted without them (``neighbors`` 0, model names ``polynomial_k0`` and
    ``xgboost_k0``), the classic-vs-boosting comparison. The polynomial regression is also fitted
    with each degree of ``degrees`` (model name ``polynomial_deg<d>``); the default degree is the
    row ``polynomial``. Each seed starts once the machine is quiet (at most ``settings.quiet_wait_s``).
    Every row carries its fit time, the CPU other processes used meanwhile (``other_cores``) and the
    size of the fitted estimator (``joblib_bytes``); XGBoost rows also the boosting rounds kept.

    :returns: one row per (seed, model): seed, model, r2, rmse, mae, fit_s, other_cores, rounds, joblib_bytes.
    """
    from steps.data import load_dataset
    from steps.split import split_dataset

    dataset = load_dataset(str(data))
    rows = []
    for seed in seeds:
        wait_for_quiet(settings.quiet_wait_s)
        split = split_dataset(dataset, DEFAULTS.test_size, seed)
        params = dataclasses.replace(DEFAULTS, random_state=seed)
        if neighbors is not None:
            params = dataclasses.replace(params, spatial_neighbors=neighbors)
        fits = quality_fits(params, degrees)
        for name, (kind, kwargs) in fits.items():
            scores = fit_and_score(kind, kwargs, split, bool(params.xgb_early_stopping_rounds))
            rows.append({"seed": seed, "model": name, **scores})
        summary = ", ".join(f"{r['model']} {r['r2']:.4f}" for r in rows[-len(fits):])
        print(f"  quality seed {seed}: R2 {summary}", flush=True)
    table = pd.DataFrame(rows)
    for degree in degrees:  # the default degree under its own name too, for the per-degree table
        if degree == DEFAULTS.poly_degree:
            table = pd.concat([table, table[table.model == "polynomial"].assign(model=f"polynomial_deg{degree}")])
    return table.reset_index(drop=True)
