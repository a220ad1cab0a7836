"""steps.predict: the saved models of a real run applied to CSV files in every accepted shape."""

from __future__ import annotations

import bz2
import codecs
import gzip
import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from steps.data import FEATURES, STATLIB_COLUMNS, TARGET, DataError
from steps.evaluation import metrics_table, predict_all, regression_metrics
from steps.models import build_linear, build_polynomial, build_xgboost, fit_xgboost
from steps.outputs import write_run_files
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
        saved = joblib.load(run_dir / "models" / f"{name}.joblib")
        np.testing.assert_array_equal(predictions[f"pred_{name}"], saved.predict(X))
    # the file holds exactly what was returned (full precision)
    pd.testing.assert_frame_equal(pd.read_csv(out), predictions, check_exact=True)
    _no_leftovers(tmp_path)
    # scores over all 20,640 districts (80% of them seen in training)
    scores = metrics.set_index("model")
    assert list(scores.columns) == ["r2", "rmse", "mae", "n_rows"] and (scores["n_rows"] == 20_640).all()
    # (the neighbour features of the polynomial and XGBoost models include a training row's own target
    # when that row is predicted again, so the 80% they were trained on score far better than new data)
    assert 0.74 < scores.loc["polynomial", "r2"] < 0.95
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
    (b"\x00\x01\x02binary", r"is a binary file \(not text in any common encoding\), not a CSV file"),
    (b"MedInc,HouseAge\n1,2\n", r"missing column\(s\) AveRooms, .*; the CSV needs either scikit-learn's feature "
                                r"columns .* the target column \(MedHouseVal or median_house_value\) is optional"),
    (b",".join(c.encode() for c in FEATURES) + b"\n", r"has a header but no data rows"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,322,2.6,37.9,abc\n",
     r"column Longitude has a non-numeric value 'abc' in data row 1"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,-322,2.6,37.9,-122\n",
     r"feature\(s\) Population have negative values"),
    (b",".join(c.encode() for c in STATLIB_COLUMNS) + b"\n-122,37,41,880,129,322,-126,8.3,452600\n",
     r"column households has 1 negative value\(s\) \(first in data row 1\)"),
    (b"8.3,41,7,1,322,2.6,37.9,-122\n", r"the first line holds numbers, not column names, so the CSV has no header row"),
    (b",".join(c.encode() for c in (*FEATURES, TARGET)) + b"\n8.3,41,7,1,322,2.6,37.9,-122,1e300\n",
     r"column\(s\) MedHouseVal hold values beyond \+-1e\+15"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,322,2.6,,-122\n8.3,41,7,1,322,2.6,inf,-122\n",
     r"feature\(s\) Latitude have no value in any row"),
    (b"MedInc;HouseAge;AveRooms;AveBedrms;Population;AveOccup;Latitude;Longitude\n8,3;41;7;1;322;2,6;37,9;-122\n",
     r"column MedInc has '8,3' in data row 1, a number with a decimal comma"),
    (b"PK\x03\x04" + bytes(64), r"is a damaged zip archive"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1," + b"9" * 400 + b",2.6,37.9,-122\n",
     r"column Population has a number too large for a float, 999999999999\.\.\. \(400 digits\), in data row 1; fix "
     r"or remove that row"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,322,2.6,37.9,-122\n8.3,41,7,1,322,2.6,37.9,-122,5\n",
     r"data row 2 has one value more than the header's 8 columns \('5' after the last ',' delimiter\)"),
    (b",".join(c.encode() for c in (*FEATURES, TARGET)) + b"\n8.3,41,7,1,322,2.6,37.9,-122,-4.5\n",
     r"^column MedHouseVal has 1 value\(s\) <= 0 \(first -4\.5 in data row 1\); median house values are positive"),
    (b",".join(c.encode() for c in FEATURES) + b"\n8.3,41,7,1,322,2.6,-122,37.9\n",
     r"^column Latitude has 1 value\(s\) beyond -90\.\.90 degrees \(first -122 in data row 1\); Latitude holds "
     r"longitudes and Longitude latitudes: swap the two columns"),
], ids=["missing_file", "binary_file", "missing_feature_column", "header_only", "non_numeric_value",
        "negative_feature", "negative_count", "no_header_row", "target_beyond_bounds", "feature_without_values",
        "decimal_comma", "damaged_zip", "number_too_large_for_a_float", "value_after_the_header",
        "target_not_positive", "swapped_coordinates"])
def test_bad_csv_in_one_line_and_no_output(content, message, run_dir, tmp_path):
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        predict_csv(run_dir, data, tmp_path / "pred.csv")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pred.csv").exists()
    _no_leftovers(tmp_path)


def test_output_folder_not_writable_in_one_line(run_dir, test_csv, tmp_path, monkeypatch):
    import steps.predict

    real_access = os.access
    monkeypatch.setattr(steps.predict.os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))
    with pytest.raises(PredictError, match=r"folder .* is not writable; choose another --output$"):
        predict_csv(run_dir, test_csv, tmp_path / "pred.csv")


def test_output_created_by_something_else_meanwhile_is_not_overwritten(run_dir, test_csv, tmp_path, monkeypatch):
    import steps.predict

    out = tmp_path / "pred.csv"
    real_link = os.link

    def other_writer_first(src, dst):
        Path(dst).write_text("theirs\n")
        real_link(src, dst)

    monkeypatch.setattr(steps.predict.os, "link", other_writer_first)
    with pytest.raises(PredictError, match=r"pred.csv was created by something else while predicting; pass a new"):
        predict_csv(run_dir, test_csv, out, model="linear")
    assert out.read_text() == "theirs\n"
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


# --------------------------------------------------------------------------- the files training reads, for predict too

def _text(frame: pd.DataFrame, sep: str = ",") -> str:
    return frame.to_csv(index=False, sep=sep, lineterminator="\n")


def _thousands(frame: pd.DataFrame) -> str:
    out = frame.copy()
    for col in ("total_rooms", "population"):
        out[col] = [f"{v:,.0f}" for v in out[col]]
    return out.to_csv(index=False, lineterminator="\n")


def _zip_of_one(path: Path, text: str, folder: str = "") -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        if folder:  # zip -r: the folder's own entry first
            archive.writestr(folder, "")
        archive.writestr(folder + "cal_housing.csv", text)


#: Each a file of StatLib's columns (with or without the target), written as people have them.
FORMATS = {
    "old_mac_line_endings": lambda p, f: p.write_bytes(_text(f).replace("\n", "\r").encode()),
    "windows_line_endings": lambda p, f: p.write_bytes(_text(f).replace("\n", "\r\n").encode()),
    "utf16_excel_unicode_text": lambda p, f: p.write_bytes(
        codecs.BOM_UTF16_LE + _text(f, "\t").replace("\n", "\r\n").encode("utf-16-le")),
    "utf16_be_without_bom": lambda p, f: p.write_bytes(_text(f).encode("utf-16-be")),
    "utf8_bom": lambda p, f: p.write_bytes(codecs.BOM_UTF8 + _text(f).encode()),
    "gzip": lambda p, f: p.write_bytes(gzip.compress(_text(f).encode())),
    "bz2": lambda p, f: p.write_bytes(bz2.compress(_text(f).encode())),
    "zip_of_one_csv": lambda p, f: _zip_of_one(p, _text(f)),
    "thousands_separators": lambda p, f: p.write_text(_thousands(f)),
    "blank_separated": lambda p, f: p.write_text(_text(f, " ")),
    "saved_with_its_index": lambda p, f: f.to_csv(p),
    # QA findings: ',' ending each data row (not the header), zip -r of a folder, Excel's "sep=;" line
    "trailing_delimiter_on_data_rows": lambda p, f: p.write_text(_text(f).replace("\n", ",\n").replace(",\n", "\n", 1)),
    "zip_r_of_a_folder": lambda p, f: _zip_of_one(p, _text(f), folder="data/"),
    "excel_sep_hint_line": lambda p, f: p.write_text("sep=;\n" + _text(f, ";")),
}


@pytest.fixture(scope="module")
def statlib_head(housing_csv) -> pd.DataFrame:
    raw = pd.read_csv(housing_csv, nrows=300)
    if "households" not in raw.columns:
        pytest.skip("these conversions start from the StatLib layout")
    return raw


@pytest.mark.parametrize("with_target", [True, False], ids=["with_target", "features_only"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_every_file_training_reads_predict_reads(run_dir, statlib_head, housing, tmp_path, name, with_target):
    frame = statlib_head if with_target else statlib_head.drop(columns="median_house_value")
    path = tmp_path / "data.csv"
    FORMATS[name](path, frame)
    predictions, metrics = predict_csv(run_dir, path, tmp_path / "pred.csv", model="linear")
    assert len(predictions) == 300 and predictions["row"].tolist() == list(range(1, 301))
    expected = joblib.load(run_dir / "models" / "linear.joblib").predict(housing.head(300)[list(FEATURES)])
    np.testing.assert_allclose(predictions["pred_linear"], expected, rtol=1e-9)
    if with_target:
        np.testing.assert_allclose(predictions[TARGET], housing[TARGET].head(300), rtol=1e-12)
        assert metrics["n_rows"].tolist() == [300]
    else:
        assert metrics is None and TARGET not in predictions.columns


def test_features_only_header_names_the_optional_target(run_dir, housing_csv, tmp_path):
    path = tmp_path / "data.csv"
    pd.read_csv(housing_csv, nrows=5).drop(columns=["median_house_value", "households"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) households; the CSV needs either scikit-learn's feature "
                                        r"columns \(MedInc,.*,Longitude\) or the StatLib columns \(longitude,.*,"
                                        r"median_income\); the target column \(MedHouseVal or median_house_value\) "
                                        r"is optional$"):
        predict_csv(run_dir, path, tmp_path / "pred.csv")


def test_refused_file_gives_no_warning_before_its_error(run_dir, housing, tmp_path, caplog):
    frame = housing.head(20).assign(ocean_proximity="NEAR BAY")  # an extra column: a warning if accepted
    frame.loc[3, "AveRooms"] = np.nan  # missing value: a warning if accepted
    frame.loc[5, "MedInc"] = -1.0  # refused
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    with caplog.at_level("WARNING"), pytest.raises(DataError, match=r"feature\(s\) MedInc have negative values"):
        predict_csv(run_dir, path, tmp_path / "pred.csv")
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    frame.loc[5, "MedInc"] = 1.0
    frame.to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        predict_csv(run_dir, path, tmp_path / "pred.csv", model="linear")
    assert "ignoring unknown column(s) ocean_proximity" in caplog.text
    assert "1 row(s) have missing or infinite feature values" in caplog.text


def test_a_single_row_with_constant_values_is_predicted(run_dir, housing, tmp_path):
    """No row minimum and no constant-column refusal: training's rules on the data set, not on features."""
    path = tmp_path / "one.csv"
    housing.head(1)[list(FEATURES)].to_csv(path, index=False)
    predictions, metrics = predict_csv(run_dir, path, tmp_path / "pred.csv", model="polynomial")
    assert len(predictions) == 1 and metrics is None


def test_command_line_one_line_errors_and_exit_codes(run_dir, housing, tmp_path):
    """``clearml_pipeline.py predict`` in a subprocess: exit 0 with its summary, or one ``error:`` line and exit 2."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "clearml_pipeline.py"
    features = tmp_path / "features.csv"
    housing.head(50)[list(FEATURES)].to_csv(features, index=False)
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    huge = tmp_path / "huge.csv"
    huge.write_text(",".join(FEATURES) + "\n" + "9" * 400 + ",41,7,1,322,2.6,37.9,-122\n")

    def predict(*args):
        return subprocess.run([sys.executable, str(script), "predict", *map(str, args)], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    done = predict("--run", run_dir, "--data", features, "--output", tmp_path / "pred.csv", "--model", "linear")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.startswith(f"predictions: {tmp_path / 'pred.csv'} (50 rows, pred_linear)")
    for args, message in [
        (("--run", tmp_path / "no_run", "--data", features, "--output", tmp_path / "a.csv"),
         "error: run folder not found: "),
        (("--run", run_dir, "--data", features, "--output", tmp_path / "b.csv", "--model", "forest"),
         "error: no model 'forest' in "),
        (("--run", run_dir, "--data", features, "--output", existing), f"error: --output {existing} already exists; "),
        (("--run", run_dir, "--data", tmp_path / "none.csv", "--output", tmp_path / "c.csv"),
         "error: data file not found: "),
        (("--run", run_dir, "--data", huge, "--output", tmp_path / "d.csv"),  # a traceback before
         f"error: {huge}: column MedInc has a number too large for a float, 999999999999... (400 digits), in data "
         "row 1; fix or remove that row"),
    ]:
        result = predict(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert existing.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv", "huge.csv", "old.csv", "pred.csv"]
