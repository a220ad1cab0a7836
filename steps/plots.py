"""Figures of a run: predicted vs actual, error distribution per model, model comparison.

Each function returns a :class:`matplotlib.figure.Figure` made directly, without pyplot: no
backend is chosen or needed (``savefig`` renders PNG with Agg), importing this module sets nothing,
and the figures are not in pyplot's list (``plt.close`` is not needed, and harmless);
the caller saves it as PNG and/or reports it. Nothing here knows about ClearML, but the titles,
axis labels and ranges that a ClearML report needs to look like the PNGs are defined here
(:func:`figure_title`, :data:`PREDICTION_AXES`, :data:`ERROR_AXES`, :func:`error_count_limit`,
:data:`XGBOOST_CURVE_TITLE`), so both show the same thing under the same name.

Units: targets, predictions and errors in $100k (the median house value / 100,000).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

#: Figures are at most this many points per model (a fixed random sample) to stay light.
MAX_POINTS = 5000
#: Error histograms span [-ERROR_LIMIT, +ERROR_LIMIT] ($100k) in ERROR_BINS bins, the same for every model.
ERROR_LIMIT = 3.0
ERROR_BINS = 60
#: The census top-coded house values: every district above $500,000 is recorded as 500,001
#: (5.00001 in $100k). Actual values at or above CAP ($100k) are at the cap (or at $500,000).
CAP = 5.0
CAP_LABEL = "data capped at $500k"
DIAGONAL_LABEL = "perfect prediction (y = x)"

#: Titles of the figures (the PNGs' suptitle/title; use the same in ClearML): see :func:`figure_title`.
PREDICTION_TITLE = "Predicted vs actual (test set)"
ERROR_TITLE = "{model}: error distribution (test set)"
COMPARISON_TITLE = "Model comparison (test set)"
#: Axis labels (x, y) of the prediction plot and of the error histograms.
PREDICTION_AXES = ("actual median house value ($100k)", "predicted median house value ($100k)")
ERROR_AXES = ("predicted - actual ($100k)", "districts")

#: XGBoost's validation curve (RMSE per boosting round on the held-out part of the train set,
#: which early stopping watches): the plot title and series name to report it under.
XGBOOST_CURVE_TITLE = "XGBoost early stopping"
XGBOOST_CURVE_SERIES = "validation RMSE ($100k)"
XGBOOST_CURVE = (XGBOOST_CURVE_TITLE, XGBOOST_CURVE_SERIES)

_STEM_SUFFIX = "_error_distribution"


def figure_title(stem: str) -> str:
    """The human title of the figure saved as ``<stem>.png`` (the stems of :func:`run_figures`).

    >>> figure_title("prediction_plot"), figure_title("xgboost_error_distribution")
    ('Predicted vs actual (test set)', 'xgboost: error distribution (test set)')

    :raises KeyError: ``stem`` is not a figure of :func:`run_figures`.
    """
    if stem == "prediction_plot":
        return PREDICTION_TITLE
    if stem == "model_comparison":
        return COMPARISON_TITLE
    if stem.endswith(_STEM_SUFFIX) and len(stem) > len(_STEM_SUFFIX):
        return ERROR_TITLE.format(model=stem[: -len(_STEM_SUFFIX)])
    raise KeyError(f"no figure with the file stem {stem!r}")


def sample_indices(n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most :data:`MAX_POINTS` of ``n`` points (a fixed random sample), for scatter plots."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def at_cap(y_test) -> np.ndarray:
    """Boolean mask (n,) of the districts whose actual value is at the $500k cap (>= :data:`CAP`, $100k)."""
    return np.asarray(y_test, dtype=float) >= CAP


def prediction_plot(y_test, predictions: Mapping[str, np.ndarray]) -> Figure:
    """Predicted vs actual median house value, one panel per model, with the labelled y = x line and R^2.

    The axes span the range of the actual values (plus 10%), so that a few wild predictions of a
    weak model cannot squash every panel; a panel's title says how many points fall outside.
    When some actual values are at the $500k cap, a dashed vertical line at :data:`CAP` marks it
    (legend :data:`CAP_LABEL`).

    :param y_test: n_test true targets ($100k); ``predictions``: ``{model: (n_test,) array}`` ($100k).
    """
    from sklearn.metrics import r2_score

    y = np.asarray(y_test, dtype=float)
    idx = sample_indices(len(y))
    names = list(predictions)
    capped = at_cap(y)
    margin = 0.1 * (y.max() - y.min()) or 0.5  # a constant target still gets a visible range
    lo, hi = y.min() - margin, y.max() + margin
    fig = Figure(figsize=(4.5 * len(names), 5.0))
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        pred = np.asarray(predictions[name], dtype=float)
        ax.scatter(y[idx], pred[idx], s=4, alpha=0.3, color="tab:blue", label="district", zorder=2)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label=DIAGONAL_LABEL)
        if capped.any():
            ax.axvline(CAP, color="tab:red", linestyle="--", linewidth=1, zorder=1,
                       label=f"{CAP_LABEL} ({int(capped.sum())} districts)")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        outside = int(((pred < lo) | (pred > hi)).sum())
        note = f"\n{outside} prediction(s) off the chart" if outside else ""
        ax.set_title(f"{name}: $R^2$ = {r2_score(y, pred):.3f}{note}", fontsize=10)
        ax.set_xlabel(PREDICTION_AXES[0])
        ax.legend(loc="upper left", fontsize=8, markerscale=3, framealpha=0.9)
    axes[0][0].set_ylabel(PREDICTION_AXES[1])
    fig.suptitle(PREDICTION_TITLE)
    fig.tight_layout()
    return fig


def error_histogram(y_test, prediction, bins: int = ERROR_BINS, limit: float = ERROR_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the errors (predicted - actual, $100k) on a fixed range, the same for every model.

    Errors beyond +-``limit`` are counted in the outermost bins, so the models' histograms share
    their x-axis and stay comparable.

    :param y_test: n true targets ($100k); ``prediction``: n predictions ($100k).
    :returns: ``(counts, bin edges)``: ``bins`` integer counts summing to n, ``bins`` + 1 edges
        from -limit to +limit.
    """
    errors = np.asarray(prediction, dtype=float) - np.asarray(y_test, dtype=float)
    return np.histogram(np.clip(errors, -limit, limit), bins=bins, range=(-limit, limit))


def error_count_limit(y_test, predictions: Mapping[str, np.ndarray]) -> float:
    """The upper y limit (districts) shared by every model's error histogram.

    5% above the tallest bin of any model's :func:`error_histogram`, so every error-distribution
    figure (and its ClearML histogram) has the same y range [0, limit] and can be compared by eye.

    :param y_test: n true targets ($100k); ``predictions``: ``{model: (n,) array}`` ($100k).
    :returns: a positive float.
    """
    tallest = max((int(error_histogram(y_test, p)[0].max()) for p in predictions.values()), default=0)
    return max(1.0, 1.05 * tallest)


def error_distribution_plot(name: str, y_test, prediction: np.ndarray, ymax: Optional[float] = None) -> Figure:
    """Histogram of the errors (predicted - actual, $100k) of one model on the test set.

    The x range is fixed (+-:data:`ERROR_LIMIT`, see :func:`error_histogram`); the y range is
    [0, ``ymax``] (pass :func:`error_count_limit` of all models so every model's figure shares it;
    default: this model's own). When some actual values are at the $500k cap, their errors are
    drawn again in red: the model cannot know how far above $500k those districts are.

    :param name: model name (title); ``y_test``: n true targets; ``prediction``: n predictions ($100k).
    """
    y = np.asarray(y_test, dtype=float)
    prediction = np.asarray(prediction, dtype=float)
    counts, edges = error_histogram(y, prediction)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8, label=f"all {len(y):,} test districts")
    capped = at_cap(y)
    if capped.any():
        capped_counts, _ = error_histogram(y[capped], prediction[capped])
        ax.stairs(capped_counts, edges, fill=True, color="tab:red", alpha=0.85,
                  label=f"of which {int(capped.sum())} at the $500k cap\n(their true value may be higher)")
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, ymax if ymax is not None else max(1.0, 1.05 * counts.max()))
    beyond = int((np.abs(prediction - y) > ERROR_LIMIT).sum())
    ax.set_title(ERROR_TITLE.format(model=name))
    ax.set_xlabel(f"{ERROR_AXES[0]}\n{beyond:,} district(s) beyond \u00b1{ERROR_LIMIT:g}, counted in the end bins",
                  fontsize=9)
    ax.set_ylabel(ERROR_AXES[1])
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return fig


def error_distribution_plots(y_test, predictions: Mapping[str, np.ndarray]) -> dict[str, Figure]:
    """:func:`error_distribution_plot` of every model, all with the same x and y ranges.

    :returns: ``{"<model>_error_distribution": Figure}`` in the order of ``predictions``.
    """
    ymax = error_count_limit(y_test, predictions)
    return {f"{name}{_STEM_SUFFIX}": error_distribution_plot(name, y_test, prediction, ymax=ymax)
            for name, prediction in predictions.items()}


def model_comparison_plot(metrics: pd.DataFrame) -> Figure:
    """R^2, RMSE and MAE of each model side by side (one panel per metric).

    :param metrics: the table of :func:`steps.evaluation.metrics_table`.
    """
    fig = Figure(figsize=(12, 4.2))
    axes = fig.subplots(1, 3)
    panels = (("r2", "$R^2$ (higher is better)"), ("rmse", "RMSE, $100k (lower is better)"),
              ("mae", "MAE, $100k (lower is better)"))
    for ax, (column, label) in zip(axes, panels, strict=True):
        bars = ax.bar(metrics["model"], metrics[column], color=colormaps["tab10"].colors[: len(metrics)])
        ax.bar_label(bars, fmt="%.3f", padding=2)
        ax.margins(y=0.15)  # room for the labels above the bars
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=9)
    fig.suptitle(COMPARISON_TITLE)
    fig.tight_layout()
    return fig


def xgboost_curve(model) -> tuple[np.ndarray, Optional[int]]:
    """XGBoost's validation RMSE per boosting round and the round early stopping kept.

    Report it as :data:`XGBOOST_CURVE_TITLE` / :data:`XGBOOST_CURVE_SERIES` (iteration = round).

    :param model: a fitted :func:`steps.models.build_xgboost` pipeline (or the XGBRegressor itself),
        fitted with an eval set (:func:`steps.models.fit_xgboost` with early stopping on).
    :returns: ``(rmse, best)``: (n_rounds,) validation RMSE in $100k, round 0 first; ``best`` is the
        0-based round kept (``None`` without early stopping). Empty array when fitted without an eval set.
    """
    booster = model[-1] if hasattr(model, "steps") else model
    results = booster.evals_result() if hasattr(booster, "evals_result_") else {}
    rmse = np.asarray(results["validation_0"]["rmse"], dtype=float) if "validation_0" in results else np.empty(0)
    best = getattr(booster, "best_iteration", None) if rmse.size else None
    return rmse, best


def run_figures(y_test, predictions: Mapping[str, np.ndarray], metrics: pd.DataFrame) -> dict[str, Figure]:
    """Every figure of a run, keyed by file stem: ``prediction_plot``, ``<model>_error_distribution``
    per model (sharing one x and one y range), ``model_comparison``. :func:`figure_title` gives each title."""
    figures = {"prediction_plot": prediction_plot(y_test, predictions)}
    figures.update(error_distribution_plots(y_test, predictions))
    figures["model_comparison"] = model_comparison_plot(metrics)
    return figures


def figure_titles(models) -> dict[str, str]:
    """``{file stem: title}`` of every figure :func:`run_figures` makes for ``models`` (see :func:`figure_title`)."""
    stems = ["prediction_plot", *(f"{name}{_STEM_SUFFIX}" for name in models), "model_comparison"]
    return {stem: figure_title(stem) for stem in stems}
