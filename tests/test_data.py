"""The data step on the real data: StatLib -> scikit-learn conversion, validation, split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steps.data import FEATURES, TARGET, DataError, load_dataset, read_housing_csv
from steps.split import split_dataset


def test_real_data_has_sklearn_shape_and_ranges(housing):
    assert list(housing.columns) == [*FEATURES, TARGET]
    assert housing.shape == (20640, 9)
    assert (housing.dtypes == "float64").all()
    assert not housing.isna().any().any()
    # Known facts of the data set (scikit-learn's DESCR): target capped at 5.00001 ($500k), min 0.14999.
    assert housing[TARGET].max() == pytest.approx(5.00001)
    assert housing[TARGET].min() == pytest.approx(0.14999)
    assert housing["MedInc"].between(0.4999, 15.0001).all()
    assert housing["Latitude"].between(32.5, 42.0).all()


def test_statlib_row_becomes_sklearn_features(housing_csv, housing):
    raw = pd.read_csv(housing_csv, nrows=1)
    if "households" not in raw.columns:
        pytest.skip("the data file is already in scikit-learn's layout")
    row = raw.iloc[0]
    first = housing.iloc[0]
    assert first["MedInc"] == pytest.approx(row["median_income"])
    assert first["AveRooms"] == pytest.approx(row["total_rooms"] / row["households"])
    assert first["AveBedrms"] == pytest.approx(row["total_bedrooms"] / row["households"])
    assert first["AveOccup"] == pytest.approx(row["population"] / row["households"])
    assert first[TARGET] == pytest.approx(row["median_house_value"] / 100_000)
    # The first district of the data set, as scikit-learn's fetch_california_housing gives it.
    assert first[list(FEATURES)].to_list() == pytest.approx(
        [8.3252, 41.0, 6.984127, 1.02381, 322.0, 2.555556, 37.88, -122.23], rel=1e-5
    )
    assert first[TARGET] == pytest.approx(4.526)


def test_sklearn_layout_in_other_order_and_delimiter_reads_the_same(tmp_path, housing):
    shuffled = housing[list(reversed(housing.columns))].head(500)
    path = tmp_path / "semicolon.csv"
    shuffled.to_csv(path, index=False, sep=";")
    back = read_housing_csv(path)
    pd.testing.assert_frame_equal(back, housing.head(500), check_exact=False, rtol=1e-12)


def test_split_sizes_and_disjoint(split42, housing):
    X_train, X_test, y_train, y_test = split42
    assert X_train.shape == (16512, 8) and X_test.shape == (4128, 8)
    assert len(y_train) == 16512 and len(y_test) == 4128
    assert set(X_train.index).isdisjoint(X_test.index)
    X_again, *_ = split_dataset(housing, 0.2, 42)
    assert X_again.index.equals(X_train.index)  # seeded: the same split again


def test_missing_target_rows_dropped_and_missing_features_kept(tmp_path, housing, caplog):
    frame = housing.head(200).copy()
    frame.loc[3, TARGET] = np.nan
    frame.loc[5, "AveRooms"] = np.inf
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    data = load_dataset(str(path))
    assert len(data) == 199
    assert data["AveRooms"].isna().sum() == 1
    assert "dropping 1 row" in caplog.text and "1 row(s) have missing" in caplog.text


def test_constant_target_refused(tmp_path, housing):
    frame = housing.head(100).copy()
    frame[TARGET] = 2.0
    path = tmp_path / "constant.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="constant"):
        load_dataset(str(path))
