"""Metrics, plots and the all-or-nothing writing of a run's files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from steps.data import TARGET
from steps.evaluation import MIN_SCORE_ROWS, metrics_table, regression_metrics
from steps.models import build_linear
from steps.outputs import OutputError, check_output_dir, write_run_outputs
from steps.plots import error_distribution_plot, model_comparison_plot, prediction_plot
from steps.split import split_dataset


def test_regression_metrics_by_hand():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 2.0, 2.5, 5.0, 5.0])
    assert m["mae"] == pytest.approx((0.5 + 0 + 0.5 + 1 + 0) / 5)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.25 + 1 + 0) / 5))
    assert m["r2"] == pytest.approx(1 - 1.5 / 10.0)  # sum of squares around the mean 3: 4+1+0+1+4


def test_constant_test_target_of_the_real_data_gives_nan_r2_and_one_warning(housing, caplog):
    """The 57 districts with median_income >= 14, split with random_state 4: all 12 test targets are
    the 5.00001 cap. scikit-learn's R^2 divides by a rounding residue there (about -1e28)."""
    from sklearn.metrics import r2_score

    rich = housing[housing["MedInc"] >= 14].reset_index(drop=True)
    assert len(rich) == 57
    X_train, X_test, y_train, y_test = split_dataset(rich, 0.2, 4)
    assert len(y_test) == 12 and (y_test == 5.00001).all()
    model = build_linear().fit(X_train, y_train)
    preds = {"linear": model.predict(X_test), "perfect": y_test.to_numpy() + 0.0}
    assert abs(r2_score(y_test, preds["linear"])) > 1e20  # what the pipeline reported before
    with caplog.at_level("WARNING", logger="steps"):
        table = metrics_table(y_test, preds)
    assert table["r2"].isna().all()
    linear = table.set_index("model").loc["linear"]
    assert linear["rmse"] == pytest.approx(np.sqrt(np.mean((preds["linear"] - 5.00001) ** 2)))
    assert linear["mae"] == pytest.approx(np.mean(np.abs(preds["linear"] - 5.00001)))
    assert table.set_index("model").loc["perfect", "rmse"] == 0.0
    assert [r.getMessage() for r in caplog.records] == [
        "R2 is undefined: all 12 test targets are 5.00001 ($100k), so R2 is NaN (RMSE and MAE are valid); "
        "choose another --random-state or --test-size, or use more varied data"
    ]
    assert table.to_csv(index=False).splitlines()[1].startswith("linear,,")  # metrics.csv: an empty (NaN) r2


@pytest.mark.parametrize("n", [0, 1, 4])
def test_too_few_test_rows_give_no_metric(housing, caplog, n):
    y = housing[TARGET].to_numpy()[:n]
    with caplog.at_level("WARNING", logger="steps"):
        m = regression_metrics(y, y + 0.5)
    assert all(np.isnan(v) for v in m.values())
    assert f"only {n} test row(s), fewer than the {MIN_SCORE_ROWS} a meaningful score needs" in caplog.text


def test_five_varied_test_rows_are_scored(housing):
    y = housing[TARGET].to_numpy()[:MIN_SCORE_ROWS]
    m = regression_metrics(y, y + 0.5, warn=False)
    assert m["rmse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 5 * 0.25 / np.sum((y - y.mean()) ** 2))


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


def test_library_warnings_become_one_line_each_without_paths(caplog):
    """The warnings matplotlib gave 8 times for a constant test target (raw, with file paths)."""
    import matplotlib.pyplot as plt

    from steps.logs import library_warnings

    with caplog.at_level("WARNING", logger="steps"), library_warnings():
        for _ in range(4):
            fig, ax = plt.subplots()
            ax.set_xlim(5.00001, 5.00001)
            ax.set_ylim(5.00001, 5.00001)
            plt.close(fig)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("steps", "Attempting to set identical low and high xlims makes transformation singular; automatically expanding."),
        ("steps", "Attempting to set identical low and high ylims makes transformation singular; automatically expanding."),
    ]
