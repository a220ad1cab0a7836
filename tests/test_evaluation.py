"""Metrics, plots and the all-or-nothing writing of a run's files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from steps.evaluation import metrics_table, regression_metrics
from steps.outputs import OutputError, check_output_dir, write_run_outputs
from steps.models import build_linear
from steps.plots import error_distribution_plot, model_comparison_plot, prediction_plot


def test_regression_metrics_by_hand():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0])
    assert m["mae"] == pytest.approx((0.5 + 0 + 0.5 + 1) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.25 + 1) / 4))
    assert m["r2"] == pytest.approx(1 - 1.5 / 5.0)


def _fitted_linear(split42):
    X_train, X_test, y_train, y_test = split42
    model = build_linear().fit(X_train, y_train)
    return model, X_test, y_test


def test_write_run_outputs_all_files(tmp_path, split42):
    model, X_test, y_test = _fitted_linear(split42)
    preds = {"linear": model.predict(X_test)}
    metrics = metrics_table(y_test, preds)
    figures = {
        "prediction_plot": prediction_plot(y_test, preds),
        "linear_error_distribution": error_distribution_plot("linear", y_test, preds["linear"]),
        "model_comparison": model_comparison_plot(metrics),
    }
    out = tmp_path / "run"
    paths = write_run_outputs(out, metrics, figures, {"linear": model})
    assert sorted(p.name for p in out.iterdir()) == [
        "linear_error_distribution.png", "metrics.csv", "model_comparison.png", "models", "prediction_plot.png"
    ]
    back = pd.read_csv(paths["metrics.csv"])
    assert back.loc[0, "model"] == "linear" and 0.55 < back.loc[0, "r2"] < 0.65
    image = imread(paths["prediction_plot.png"])
    assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0.01
    assert not list(tmp_path.glob(".run.partial-*"))


def test_failure_while_writing_leaves_nothing(tmp_path, split42):
    model, X_test, y_test = _fitted_linear(split42)
    metrics = metrics_table(y_test, {"linear": model.predict(X_test)})

    class Broken:
        def savefig(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_run_outputs(tmp_path / "run", metrics, {"x": Broken()}, {"linear": model})
    assert list(tmp_path.iterdir()) == []


def test_output_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "metrics.csv").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        check_output_dir(tmp_path / "full")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "file" / "sub")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
