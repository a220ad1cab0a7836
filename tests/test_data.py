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


# --------------------------------------------------------------------------- QA findings: files and values read wrong


def _statlib(housing_csv) -> pd.DataFrame:
    raw = pd.read_csv(housing_csv)
    if "households" not in raw.columns:
        pytest.skip("these conversions start from the StatLib layout")
    return raw


def test_trailing_delimiter_on_data_rows_reads_the_same_frame(housing_csv, housing, tmp_path, caplog):
    """``sed '2,$ s/$/,/'``: 9 names in the header, 10 fields per row (the last empty). pandas would take
    the first field for a row index and shift every column by one; the frame must be the original."""
    lines = housing_csv.read_text().splitlines()
    path = tmp_path / "trailing.csv"
    path.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")
    with caplog.at_level("WARNING"):
        data = load_dataset(str(path))
    pd.testing.assert_frame_equal(data, housing, check_exact=True)
    assert caplog.text == ""


def test_trailing_delimiter_with_an_extra_column_is_not_shifted(housing_csv, housing, tmp_path, caplog):
    """The QA case that trained on shifted columns: an extra numeric column, and ',' ending each data row."""
    text = _statlib(housing_csv).assign(extra=7.0).to_csv(index=False, lineterminator="\n")
    path = tmp_path / "trailing_extra.csv"
    path.write_text(text.replace("\n", ",\n").replace(",\n", "\n", 1))  # every line but the header
    with caplog.at_level("WARNING"):
        data = load_dataset(str(path))
    pd.testing.assert_frame_equal(data, housing, check_exact=False, rtol=1e-12)
    assert [r.getMessage() for r in caplog.records] == [f"{path}: ignoring unknown column(s) extra"]


def test_a_value_after_the_headers_last_column_is_refused(housing_csv, tmp_path):
    lines = housing_csv.read_text().splitlines()
    lines[3] += ",7"  # data row 3 has a 10th value the header does not name
    path = tmp_path / "extra_value.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert str(info.value) == (
        f"{path}: data row 3 has one value more than the header's 9 columns ('7' after the last ',' delimiter); "
        "name that column in the header or remove the extra value (an empty field after a trailing delimiter at "
        "the end of each row is fine)")


def test_a_number_too_large_for_a_float_names_its_cell(housing_csv, tmp_path):
    frame = _statlib(housing_csv).astype(object)
    frame.loc[4, "total_rooms"] = 10**400 - 1  # 400 nines
    path = tmp_path / "overflow.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert str(info.value) == (
        f"{path}: column total_rooms has a number too large for a float, 999999999999... (400 digits), in data "
        "row 5; fix or remove that row (no census figure has that many digits)")


@pytest.mark.parametrize("change, message", [
    (lambda f: f.assign(median_house_value=f["median_house_value"].where(f.index != 99, 0.0)),
     "column MedHouseVal has 1 value(s) <= 0 (first 0 in data row 100); median house values are positive, fix or "
     "remove those rows"),
    (lambda f: f.assign(median_house_value=f["median_house_value"].where(f.index > 9, -1.0).where(f.index > 0)),
     # row 1 has no target (dropped): the first negative one is still named by its row of the file
     "column MedHouseVal has 9 value(s) <= 0 (first -1e-05 in data row 2); median house values are positive, fix "
     "or remove those rows"),
    (lambda f: f.rename(columns={"latitude": "longitude", "longitude": "latitude"}),
     "column Latitude has 20640 value(s) beyond -90..90 degrees (first -122.23 in data row 1); Latitude holds "
     "longitudes and Longitude latitudes: swap the two columns (in the StatLib layout longitude comes first)"),
    (lambda f: f.assign(latitude=f["latitude"].where(f.index != 6, 378.8)),
     "column Latitude has 1 value(s) beyond -90..90 degrees (first 378.8 in data row 7); fix or remove those rows"),
    (lambda f: f.assign(longitude=f["longitude"].where(f.index != 4, -1222.5)),
     "column Longitude has 1 value(s) beyond -180..180 degrees (first -1222.5 in data row 5); fix or remove those "
     "rows"),
], ids=["zero_target", "negative_target_after_a_dropped_row", "swapped_coordinates", "latitude_beyond_90",
        "longitude_beyond_180"])
def test_impossible_values_are_refused(housing_csv, tmp_path, caplog, change, message):
    path = tmp_path / "data.csv"
    change(_statlib(housing_csv)).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert str(info.value) == message
    assert caplog.text == ""  # refused: no warning before the error


OUTSIDE = ("1 row(s) have coordinates outside California (latitude 32 to 42.1, longitude -124.5 to -114); this data "
           "set is California's districts, check the Latitude and Longitude columns")
DOLLARS = ("the target MedHouseVal has median 179,700: it looks like dollars, not units of $100,000; divide the "
           "column by 100,000, or use the StatLib layout (its median_house_value in dollars is converted)")
DUPLICATES = ("300 row(s) (1.4%) are exact duplicates of another row; they can land in both the training and the test "
              "set and inflate the scores, remove them (pandas.DataFrame.drop_duplicates)")


@pytest.mark.parametrize("change, warnings", [
    (lambda f, h: f, []),
    (lambda f, h: f.assign(latitude=f["latitude"].where(f.index != 0, 45.5)), [OUTSIDE]),
    (lambda f, h: h.assign(MedHouseVal=h["MedHouseVal"] * 100_000), [DOLLARS]),
    (lambda f, h: pd.concat([f, f.head(300)]), [DUPLICATES]),
    (lambda f, h: pd.concat([f, f.head(200)]), []),  # 200 of 20,840 rows: under 1%
], ids=["shipped_data", "outside_california", "target_in_dollars", "duplicates", "few_duplicates"])
def test_suspicious_values_warn_in_one_line(housing_csv, housing, tmp_path, caplog, change, warnings):
    path = tmp_path / "data.csv"
    change(_statlib(housing_csv), housing).to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        load_dataset(str(path))
    assert [r.getMessage() for r in caplog.records] == warnings


def test_a_number_too_large_in_a_column_of_decimals_is_not_taken_for_infinity(housing_csv, tmp_path):
    """In a column of decimals pandas reads '1e400' (or 400 digits) as inf, which would be imputed as missing;
    written as a number it is refused, while a written 'inf' stays an infinity (imputed, with its warning)."""
    frame = _statlib(housing_csv)
    frame["median_income"] = frame["median_income"].astype(object)
    frame.loc[7, "median_income"] = "inf"
    frame.loc[9, "median_income"] = "1e400"
    path = tmp_path / "overflow.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert str(info.value) == (f"{path}: column median_income has a number too large for a float, 1e400, in data row "
                               "10; fix or remove that row (no census figure has that many digits)")
    frame.loc[9, "median_income"] = "inf"
    frame.to_csv(path, index=False)
    data = load_dataset(str(path))
    assert data["MedInc"].isna().sum() == 2
