"""Figures of a run: predicted vs actual, error distribution per model, model comparison.

Each function returns a :class:`matplotlib.figure.Figure` (Agg backend, no screen needed);
the caller saves it as PNG and/or reports it. Nothing here knows about ClearML.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Figures are at most this many points per model (a fixed random sample) to stay light.
MAX_POINTS = 5000


def sample_indices(n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most :data:`MAX_POINTS` of ``n`` points (a fixed random sample), for scatter plots."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def prediction_plot(y_test, predictions: Mapping[str, np.ndarray]) -> Figure:
    """Predicted vs actual median house value, one panel per model, with the y = x line and R^2.

    The axes span the range of the actual values (plus 10%), so that a few wild predictions of a
    weak model cannot squash every panel; the title says how many points fall outside.

    :param y_test: n_test true targets ($100k); ``predictions``: ``{model: (n_test,) array}``.
    """
    from sklearn.metrics import r2_score

    y = np.asarray(y_test, dtype=float)
    idx = sample_indices(len(y))
    names = list(predictions)
    margin = 0.1 * (y.max() - y.min())
    lo, hi = y.min() - margin, y.max() + margin
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4.8), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        pred = predictions[name]
        ax.scatter(y[idx], pred[idx], s=4, alpha=0.3)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        outside = int(((pred < lo) | (pred > hi)).sum())
        note = f"\n{outside} prediction(s) off the chart" if outside else ""
        ax.set_title(f"{name}: $R^2$ = {r2_score(y, pred):.3f}{note}", fontsize=10)
        ax.set_xlabel("actual ($100k)")
    axes[0][0].set_ylabel("predicted median house value ($100k)")
    fig.suptitle("Predicted vs actual (test set)")
    fig.tight_layout()
    return fig


def error_histogram(y_test, prediction, bins: int = 60, limit: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the errors (predicted - actual, $100k) on a fixed range, the same for every model.

    Errors beyond +-``limit`` are counted in the outermost bins, so the models' histograms share
    their x-axis and stay comparable.

    :returns: ``(counts, bin edges)``: ``bins`` counts, ``bins`` + 1 edges from -limit to +limit.
    """
    errors = np.asarray(prediction, dtype=float) - np.asarray(y_test, dtype=float)
    return np.histogram(np.clip(errors, -limit, limit), bins=bins, range=(-limit, limit))


def error_distribution_plot(name: str, y_test, prediction: np.ndarray) -> Figure:
    """Histogram of the errors (predicted - actual, $100k) of one model on the test set (see :func:`error_histogram`)."""
    counts, edges = error_histogram(y_test, prediction)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_title(f"{name}: error distribution (test set)")
    ax.set_xlabel("predicted - actual ($100k; the end bins hold everything beyond)")
    ax.set_ylabel("districts")
    fig.tight_layout()
    return fig


def model_comparison_plot(metrics: pd.DataFrame) -> Figure:
    """R^2, RMSE and MAE of each model side by side (one panel per metric).

    :param metrics: the table of :func:`steps.evaluation.metrics_table`.
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    panels = (("r2", "$R^2$ (higher is better)"), ("rmse", "RMSE, $100k (lower is better)"),
              ("mae", "MAE, $100k (lower is better)"))
    for ax, (column, label) in zip(axes, panels):
        bars = ax.bar(metrics["model"], metrics[column], color=plt.cm.tab10.colors[: len(metrics)])
        ax.bar_label(bars, fmt="%.3f", padding=2)
        ax.margins(y=0.15)  # room for the labels above the bars
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=9)
    fig.suptitle("Model comparison (test set)")
    fig.tight_layout()
    return fig


def run_figures(y_test, predictions: Mapping[str, np.ndarray], metrics: pd.DataFrame) -> dict[str, Figure]:
    """Every figure of a run, keyed by file stem: ``prediction_plot``, ``<model>_error_distribution``
    per model, ``model_comparison``."""
    figures = {"prediction_plot": prediction_plot(y_test, predictions)}
    for name, prediction in predictions.items():
        figures[f"{name}_error_distribution"] = error_distribution_plot(name, y_test, prediction)
    figures["model_comparison"] = model_comparison_plot(metrics)
    return figures


# TEMPORARY shim until the plots branch lands.
XGBOOST_CURVE = ("XGBoost early stopping", "validation RMSE ($100k)")


def figure_titles(models):
    titles = {"prediction_plot": "Predicted vs actual (test set)", "model_comparison": "Model comparison (test set)"}
    titles.update({f"{m}_error_distribution": f"{m}: error distribution (test set)" for m in models})
    return titles
