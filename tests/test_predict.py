"""steps.predict: the saved models of a real run applied to CSV files in every accepted shape."""

from __future__ import annotations

import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from steps.data import FEATURES, STATLIB_COLUMNS, TARGET, DataError, load_dataset
from steps.evaluation import metrics_table, predict_all, regression_metrics
from steps.outputs import write_run_files
from steps.models import build_linear, build_polynomial, build_xgboost, fit_xgboost
from steps.predict import PredictError, available_models, predict_csv, read_features_csv


@pytest.fixture(scope="module")
def run_dir(split42, tmp_path_factory) -> Path:
    """A run folder as the pipeline's evaluate step writes it: polynomial, xgboost (small), linear."""
    X_train, X_test, y_train, y_test = split42
    models = {
        "polynomial": build_polynomial().fit(X_train, y_train),
        "xgboost": fit_xgboost(build_xgboost(n_estimators=200, early_stopping_rounds=20, n_jobs=1), X_train, y_train),
        "linear": build_linear().fit(X_train, y_train),
    }
    metrics = metrics_table(y_test, predict_all(models, X_test))
    folder = tmp_path_factory.mktemp("run")
    write_run_files(folder, metrics, {}, models)
    return folder


@pytest.fixture(scope="module")
def test_csv(split42, tmp_path_factory) -> Path:
    """The run's test set as a CSV in scikit-learn's layout (features + target)."""
    _, X_test, _, y_test = split42
    path = tmp_path_factory.mktemp("data") / "test_set.csv"
    X_test.assign(**{TARGET: y_test}).to_csv(path, index=False)
    return path


def _no_leftovers(folder: Path) -> None:
    assert not list(folder.glob(".*.partial-*")), list(folder.iterdir())


def test_every_model_on_the_shipped_statlib_csv(run_dir, housing_csv, housing, tmp_path):
    out = tmp_path / "pred.csv"
    predictions, metrics = predict_csv(run_dir, housing_csv, out)
    assert list(predictions.columns) == ["row", TARGET, "pred_polynomial", "pred_xgboost", "pred_linear"]
    assert len(predictions) == 20_640 and predictions["row"].tolist() == list(range(1, 20_641))
    np.testing.assert_array_equal(predictions[TARGET], housing[TARGET])
    X = housing[list(FEATURES)]
    for name in ("polynomial", "xgboost", "linear"):  # the saved models themselves, on the raw features
        np.testing.assert_array_equal(predictions[f"pred_{name}"], joblib.load(run_dir / "models" / f"{name}.joblib").predict(X))
    # the file holds exactly what was returned (full precision)
    pd.testing.assert_frame_equal(pd.read_csv(out), predictions, check_exact=True)
    _no_leftovers(tmp_path)
    # scores over all 20,640 districts (80% of them seen in training)
    scores = metrics.set_index("model")
    assert list(scores.columns) == ["r2", "rmse", "mae", "n_rows"] and (scores["n_rows"] == 20_640).all()
    assert 0.74 < scores.loc["polynomial", "r2"] < 0.80
    assert 0.58 < scores.loc["linear", "r2"] < 0.63
    assert scores.loc["xgboost", "r2"] > scores.loc["polynomial", "r2"]
    assert scores.loc["polynomial", "rmse"] == pytest.approx(
        regression_metrics(housing[TARGET], predictions["pred_polynomial"])["rmse"], rel=1e-12)


def test_the_test_set_gives_the_runs_own_metrics(run_dir, test_csv, tmp_path):
    _, metrics = predict_csv(run_dir, test_csv, tmp_path / "pred.csv")
    saved = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["model"]) == list(saved["model"])
    for column in ("r2", "rmse", "mae"):
        np.testing.assert_allclose(metrics[column], saved[column], rtol=1e-12)
    assert (metrics["n_rows"] == 4128).all()


def test_features_only_in_either_layout_gives_the_same_predictions(run_dir, housing_csv, housing, tmp_path):
    head = housing.head(300)
    sk = tmp_path / "features.csv"  # scikit-learn's columns, reversed, ';' delimiter, no target
    head[list(reversed(FEATURES))].to_csv(sk, index=False, sep=";")
    statlib = tmp_path / "statlib_features.csv"  # StatLib's columns without median_house_value
    pd.read_csv(housing_csv, nrows=300).drop(columns="median_house_value").to_csv(statlib, index=False)
    results = []
    for i, path in enumerate((sk, statlib)):
        predictions, metrics = predict_csv(run_dir, path, tmp_path / f"out{i}.csv", model="xgboost")
        assert metrics is None
        assert list(predictions.columns) == ["row", "pred_xgboost"] and len(predictions) == 300
        results.append(predictions)
    np.testing.assert_allclose(results[0]["pred_xgboost"], results[1]["pred_xgboost"], rtol=1e-6)
    np.testing.assert_array_equal(
        results[0]["pred_xgboost"],
        joblib.load(run_dir / "models" / "xgboost.joblib").predict(head[list(FEATURES)]),
    )


def test_rows_without_target_are_predicted_but_not_scored(run_dir, housing, tmp_path):
    frame = housing.head(100).copy()
    frame.loc[[3, 50], TARGET] = np.nan
    frame.loc[7, "AveRooms"] = np.inf  # imputed inside the model, as in training
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    predictions, metrics = predict_csv(run_dir, path, tmp_path / "pred.csv", model="polynomial")
    assert len(predictions) == 100 and predictions["pred_polynomial"].notna().all()
    assert predictions[TARGET].isna().sum() == 2
    assert metrics["n_rows"].tolist() == [98]
    kept = frame[TARGET].notna()
    assert metrics.loc[0, "mae"] == pytest.approx(
        np.mean(np.abs(predictions.loc[kept, "pred_polynomial"] - frame.loc[kept, TARGET])), rel=1e-12)


def test_available_models_and_unknown_model(run_dir, test_csv, tmp_path):
    assert available_models(run_dir) == ["polynomial", "xgboost", "linear"]
    with pytest.raises(PredictError, match=r"no model 'forest' in .*models; available: polynomial, xgboost, linear$"):
        predict_csv(run_dir, test_csv, tmp_path / "pred.csv", model="forest")
    assert not (tmp_path / "pred.csv").exists()


def _broken_run(tmp_path: Path, kind: str) -> Path:
    run = tmp_path / "run"
    if kind == "missing":
        return run
    if kind == "file":
        run.write_text("x")
        return run
    run.mkdir()
    if kind == "no_models":
        (run / "metrics.csv").write_text("model\n")
    elif kind == "empty_models":
        (run / "models").mkdir()
    elif kind == "damaged":  # a copy cut short
        (run / "models").mkdir()
        joblib.dump(build_linear(), run / "models" / "whole.joblib")
        whole = (run / "models" / "whole.joblib").read_bytes()
        (run / "models" / "whole.joblib").unlink()
        (run / "models" / "polynomial.joblib").write_bytes(whole[: len(whole) // 2])
    elif kind == "not_a_model":
        (run / "models").mkdir()
        joblib.dump({"a": 1}, run / "models" / "polynomial.joblib")
    return run


@pytest.mark.parametrize("kind, message", [
    ("missing", r"run folder not found: .*run; pass --run with a folder a training run wrote"),
    ("file", r"run is a file, not a run folder"),
    ("no_models", r"run has no models/ folder"),
    ("empty_models", r"models holds no <model>.joblib file"),
    ("damaged", r"cannot load .*polynomial.joblib \(\w+Error\b.*\); the file is damaged"),
    ("not_a_model", r"polynomial.joblib holds a dict, not a model"),
])
def test_bad_run_folders_in_one_line(kind, message, test_csv, tmp_path):
    run = _broken_run(tmp_path, kind)
    with pytest.raises(PredictError, match=message) as info:
        predict_csv(run, test_csv, tmp_path / "pred.csv")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pred.csv").exists()


def test_bad_output_paths_in_one_line(run_dir, test_csv, tmp_path):
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    cases = [
        (existing, r"old.csv already exists; predict never overwrites a file"),
        (tmp_path, r"is a folder; pass the path of a new CSV file"),
        (tmp_path / "nowhere" / "pred.csv", r"the folder of --output .* does not exist; create .*nowhere first"),
    ]
    for path, message in cases:
        with pytest.raises(PredictError, match=message) as info:
            predict_csv(run_dir, test_csv, path)
        assert "\n" not in str(info.value)
    assert existing.read_text() == "keep me\n"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("content, message", [
    (None, r"data file not found: .*data.csv; pass --data"),
    (b"\x00\x01\x02binary", r"is a binary file, not a CSV text file"),
    (b"MedInc,HouseAge\n1,2\n", r"missing column\(s\) AveRooms, .*; the CSV needs either scikit-learn's feature "
                                r"columns .* the target column \(MedHouseVal or median_house_value\) is optional"),
    (b",".join(c.encode() for c in FEATURES) + b"\n", r"has a header but no data rows"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,322,2.6,37.9,abc\n",
     r"column Longitude has a non-numeric value 'abc' in data row 1"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,-322,2.6,37.9,-122\n",
     r"feature\(s\) Population have negative values"),
    (b",".join(c.encode() for c in STATLIB_COLUMNS) + b"\n-122,37,41,880,129,322,-126,8.3,452600\n",
     r"column households has 1 negative value\(s\) \(first in data row 1\)"),
])
def test_bad_csv_in_one_line_and_no_output(content, message, run_dir, tmp_path):
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        predict_csv(run_dir, data, tmp_path / "pred.csv")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pred.csv").exists()
    _no_leftovers(tmp_path)


def test_failure_while_writing_leaves_no_file(run_dir, test_csv, tmp_path, monkeypatch):
    def half_written(self, fh, **kwargs):
        fh.write("row,pred_polynomial\n1,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_written)
    with pytest.raises(OSError, match="No space left"):
        predict_csv(run_dir, test_csv, tmp_path / "pred.csv")
    assert list(tmp_path.iterdir()) == []


def test_output_file_is_an_ordinary_readable_file(run_dir, test_csv, tmp_path):
    out = tmp_path / "pred.csv"
    predict_csv(run_dir, test_csv, out, model="linear")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_read_features_csv_returns_target_only_when_present(housing_csv, tmp_path):
    X, y = read_features_csv(housing_csv)
    assert X.shape == (20_640, 8) and list(X.columns) == list(FEATURES) and y.name == TARGET
    assert y.max() == pytest.approx(5.00001)
    path = tmp_path / "x.csv"
    X.head(10).to_csv(path, index=False)
    X10, y10 = read_features_csv(path)
    assert y10 is None
    pd.testing.assert_frame_equal(X10, X.head(10), check_exact=False, rtol=1e-15)
