"""The figures of a run, drawn from models fitted on the real data: shared ranges, labels, cap, titles."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import imread

from steps.evaluation import metrics_table, predict_all
from steps.models import build_linear, build_polynomial, build_xgboost, fit_xgboost
from steps.plots import (
    CAP,
    CAP_LABEL,
    DIAGONAL_LABEL,
    ERROR_LIMIT,
    XGBOOST_CURVE,
    XGBOOST_CURVE_SERIES,
    XGBOOST_CURVE_TITLE,
    error_count_limit,
    error_histogram,
    figure_title,
    figure_titles,
    prediction_plot,
    run_figures,
    xgboost_curve,
)


@pytest.fixture(scope="module")
def fitted(split42):
    X_train, X_test, y_train, y_test = split42
    models = {
        "polynomial": build_polynomial().fit(X_train, y_train),
        "xgboost": fit_xgboost(build_xgboost(n_estimators=150, early_stopping_rounds=20, n_jobs=1), X_train, y_train),
        "linear": build_linear().fit(X_train, y_train),
    }
    return models, X_test, y_test


@pytest.fixture(scope="module")
def figures(fitted):
    models, X_test, y_test = fitted
    predictions = predict_all(models, X_test)
    figs = run_figures(y_test, predictions, metrics_table(y_test, predictions))
    yield figs, predictions, y_test
    plt.close("all")


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_stems_and_titles_are_those_of_the_pngs(figures):
    figs, predictions, _ = figures
    assert list(figs) == ["prediction_plot", "polynomial_error_distribution", "xgboost_error_distribution",
                          "linear_error_distribution", "model_comparison"]
    assert figs["prediction_plot"]._suptitle.get_text() == figure_title("prediction_plot") == \
        "Predicted vs actual (test set)"
    assert figs["model_comparison"]._suptitle.get_text() == figure_title("model_comparison") == \
        "Model comparison (test set)"
    for name in predictions:
        stem = f"{name}_error_distribution"
        assert figs[stem].axes[0].get_title() == figure_title(stem) == f"{name}: error distribution (test set)"
    assert figure_titles(predictions) == {stem: figure_title(stem) for stem in figs}
    with pytest.raises(KeyError):
        figure_title("_error_distribution")
    assert XGBOOST_CURVE == (XGBOOST_CURVE_TITLE, XGBOOST_CURVE_SERIES) == \
        ("XGBoost early stopping", "validation RMSE ($100k)")


def test_error_distributions_share_one_x_and_one_y_range(figures):
    figs, predictions, y_test = figures
    tallest = {name: error_histogram(y_test, p)[0].max() for name, p in predictions.items()}
    # the models really differ (xgboost's errors are far more concentrated than linear's) ...
    assert tallest["xgboost"] > 1.5 * tallest["linear"]
    limit = error_count_limit(y_test, predictions)
    assert limit == pytest.approx(1.05 * max(tallest.values()))
    # ... yet every figure has the same axes, set by the tallest bin of any model
    for name in predictions:
        ax = figs[f"{name}_error_distribution"].axes[0]
        assert ax.get_ylim() == pytest.approx((0.0, limit))
        assert ax.get_xlim() == pytest.approx((-ERROR_LIMIT, ERROR_LIMIT))


def test_error_histogram_counts_every_district_once(figures):
    _, predictions, y_test = figures
    counts, edges = error_histogram(y_test, predictions["linear"])
    assert counts.sum() == len(y_test) == 4128
    assert edges[0] == -ERROR_LIMIT and edges[-1] == ERROR_LIMIT and len(edges) == len(counts) + 1


def test_diagonal_labelled_and_cap_marked_on_the_prediction_plot(figures):
    figs, predictions, y_test = figures
    capped = int((np.asarray(y_test) >= CAP).sum())
    assert 150 < capped < 250  # 4.8% of the real test set sits at the $500k cap
    for ax in figs["prediction_plot"].axes:
        assert _legend_texts(ax) == ["district", DIAGONAL_LABEL, f"{CAP_LABEL} ({capped} districts)"]
        diagonal = [line for line in ax.get_lines() if line.get_label() == DIAGONAL_LABEL][0]
        assert np.array_equal(diagonal.get_xdata(), diagonal.get_ydata())
        cap_lines = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(cap_lines) == 1 and cap_lines[0].get_xdata()[0] == CAP


def test_no_cap_note_where_no_district_is_at_the_cap(figures):
    _, predictions, y_test = figures
    below = np.asarray(y_test) < 4.0
    fig = prediction_plot(np.asarray(y_test)[below], {n: p[below] for n, p in predictions.items()})
    for ax in fig.axes:
        assert _legend_texts(ax) == ["district", DIAGONAL_LABEL]
        assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    plt.close(fig)


def test_capped_districts_drawn_apart_in_the_error_distribution(figures):
    figs, predictions, y_test = figures
    capped = int((np.asarray(y_test) >= CAP).sum())
    ax = figs["linear_error_distribution"].axes[0]
    texts = _legend_texts(ax)
    assert texts[0] == "all 4,128 test districts" and texts[1].startswith(f"of which {capped} at the $500k cap")
    # the first stairs hold every district, the second exactly the capped ones
    assert [int(patch.get_data().values.sum()) for patch in ax.patches] == [4128, capped]


def test_xgboost_curve_has_one_rmse_per_round_and_the_kept_round(fitted):
    models, X_test, y_test = fitted
    rmse, best = xgboost_curve(models["xgboost"])
    assert 21 <= len(rmse) <= 150
    assert best == int(np.argmin(rmse))
    assert 0.4 < rmse[best] < 0.7 and rmse[0] > 1.0  # $100k; round 0 is far from converged (learning rate 0.05)
    rmse_none, best_none = xgboost_curve(models["linear"][-1])  # no eval set: nothing to report
    assert rmse_none.size == 0 and best_none is None


def test_pngs_written_with_the_same_size(figures, tmp_path):
    figs, predictions, _ = figures
    shapes = set()
    for name in predictions:
        path = tmp_path / f"{name}.png"
        figs[f"{name}_error_distribution"].savefig(path, dpi=100)
        image = imread(path)
        assert image.std() > 0.05
        shapes.add(image.shape)
    assert len(shapes) == 1
