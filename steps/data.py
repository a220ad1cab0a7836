"""The California Housing data set's rules: its layouts, their columns, and which values are usable.

The data set is the 1990 U.S. census block-group table of Pace & Barry, "Sparse spatial
autoregressions", Statistics & Probability Letters 33 (1997), distributed by StatLib and by
scikit-learn (:func:`sklearn.datasets.fetch_california_housing`): 20,640 districts, 8 features,
target ``MedHouseVal`` = median house value in units of $100,000.

Reading files is :mod:`steps.csv_files`; the feature and target names are :mod:`steps.schema`; the
train/test split is :mod:`steps.split` (its names and the schema's are also importable from here).
Nothing here knows about ClearML: every function takes and returns plain pandas/numpy objects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from steps.csv_files import CsvFormat, count_data_rows, is_number, read_csv_chunks, sniff_csv, to_numeric
from steps.errors import DataError
from steps.logs import library_warnings
from steps.schema import FEATURES, TARGET
from steps.split import MIN_TEST_ROWS, MIN_TRAIN_ROWS, check_split_sizes, split_dataset

__all__ = [  # the split's names are defined in steps.split and kept importable from here
    "FEATURES", "TARGET", "STATLIB_COLUMNS", "STATLIB_TARGET", "STATLIB_COUNTS", "NON_NEGATIVE_FEATURES",
    "MAX_ABS_VALUE", "CHUNK_ROWS", "PROGRESS_BYTES", "DataError", "sniff_housing_csv", "statlib_to_sklearn",
    "read_housing_csv", "read_features", "fetch_sklearn_dataset", "validate_features", "validate_dataset",
    "load_dataset", "check_csv", "MIN_TRAIN_ROWS", "MIN_TEST_ROWS", "check_split_sizes", "split_dataset",
]

log = logging.getLogger(__name__)


#: Columns of the raw StatLib file ``cal_housing.data`` (and ``../shared/data/cal_housing.csv``).
STATLIB_COLUMNS: tuple[str, ...] = (
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
    "median_house_value",
)
#: The target column of the StatLib layout (in dollars; ``MedHouseVal`` = it / 100,000).
STATLIB_TARGET = "median_house_value"
#: Count columns of the StatLib layout: they may not be negative.
STATLIB_COUNTS: tuple[str, ...] = ("total_rooms", "total_bedrooms", "population", "households")

#: Features that cannot be negative (income, age, per-household averages, head counts).
NON_NEGATIVE_FEATURES: tuple[str, ...] = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup")
#: Largest magnitude accepted for any value: far beyond real data, far below float overflow in the models.
MAX_ABS_VALUE = 1e15

#: California's bounding box (degrees): coordinates outside it get a warning (the data set is California's districts).
CALIFORNIA_LATITUDE = (32.0, 42.1)
CALIFORNIA_LONGITUDE = (-124.5, -114.0)
#: A median target above this looks like dollars, not units of $100,000 (the data set's median is about 1.8).
DOLLARS_MEDIAN = 100.0
#: Share of exact duplicate rows above which training warns (they can land in both train and test).
DUPLICATE_SHARE = 0.01

#: Rows read per chunk (memory stays close to the size of the result).
CHUNK_ROWS = 500_000
#: Files larger than this many bytes get a progress line per chunk read.
PROGRESS_BYTES = 50 * 2**20

#: Whether a CSV must have the target column: ``"required"`` to train, ``"optional"`` to predict.
TargetRule = Literal["required", "optional"]
#: Columns of each layout, and its target column.
_LAYOUTS: dict[str, tuple[str, ...]] = {"sklearn": (*FEATURES, TARGET), "statlib": STATLIB_COLUMNS}
_LAYOUT_TARGET = {"sklearn": TARGET, "statlib": STATLIB_TARGET}


def _target_required(target: str) -> bool:
    if target not in ("required", "optional"):
        raise ValueError(f"target = {target!r}: choose 'required' or 'optional'")
    return target == "required"


def _check_columns(path: Path, columns: tuple[str, ...] | list[str],
                   target: TargetRule = "required") -> tuple[str, list[str]]:
    """Decide the layout ('sklearn' or 'statlib') from the header; return it and the ignored extras.

    A column without a name (a row index saved with the data, e.g. by ``DataFrame.to_csv`` with its
    default ``index=True``) is an extra named by its position: ``column 1 (no name: a saved row index?)``.
    With ``target="optional"`` only the feature columns of the layout are needed (to predict).

    :raises DataError: no header row, a duplicated column, or a needed column missing.
    """
    required = _target_required(target)
    columns = list(columns)
    _check_header_names(path, columns)
    present = {c for c in columns if c}
    needed = {name: [c for c in cols if required or c != _LAYOUT_TARGET[name]] for name, cols in _LAYOUTS.items()}
    missing = {name: [c for c in cols if c not in present] for name, cols in needed.items()}
    layout = min(missing, key=lambda name: len(missing[name]))
    unknown = [c if c else f"column {i} (no name: a saved row index?)" for i, c in enumerate(columns, 1)
               if c not in _LAYOUTS[layout]]
    if missing[layout]:
        raise _missing_columns(path, missing[layout], unknown, needed, required)
    return layout, unknown


def _check_header_names(path: Path, columns: list[str]) -> None:
    """Refuse a first line of numbers (no header row) and duplicated column names."""
    if columns and all(is_number(c) for c in columns):
        raise DataError(
            f"{path}: the first line holds numbers, not column names, so the CSV has no header row; add "
            f"the header line {','.join(STATLIB_COLUMNS)} (StatLib's cal_housing.data has none) or "
            f"{','.join((*FEATURES, TARGET))} as the first line"
        )
    named = [c for c in columns if c]
    duplicated = sorted({c for c in named if named.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicated column(s) {', '.join(duplicated)}; keep one column of each name")


def _missing_columns(path: Path, missing: list[str], unknown: list[str], needed: dict[str, list[str]],
                     required: bool) -> DataError:
    """The error for a header that lacks ``missing`` columns of its closest layout."""
    hint = f" (found unknown column(s): {', '.join(unknown)})" if unknown else ""
    if required:
        return DataError(
            f"{path}: missing column(s) {', '.join(missing)}{hint}; the CSV needs either "
            f"scikit-learn's columns ({','.join(_LAYOUTS['sklearn'])}) or the StatLib columns "
            f"({','.join(STATLIB_COLUMNS)})"
        )
    return DataError(
        f"{path}: missing column(s) {', '.join(missing)}{hint}; the CSV needs either "
        f"scikit-learn's feature columns ({','.join(needed['sklearn'])}) or the StatLib columns "
        f"({','.join(needed['statlib'])}); the target column ({TARGET} or {STATLIB_TARGET}) is optional"
    )


def sniff_housing_csv(path: str | os.PathLike, target: TargetRule = "required") -> tuple[CsvFormat, str, list[str]]:
    """What the file is and which layout its header has: (format, ``'sklearn'`` or ``'statlib'``, ignored extras).

    :param target: ``"required"``: the header must have the layout's target column (to train);
        ``"optional"``: only its feature columns (to predict).
    :raises DataError: see :func:`steps.csv_files.sniff_csv` (the file is not a CSV this reads) and
        the header checks of :func:`read_housing_csv`.
    """
    fmt = sniff_csv(Path(path), expected_columns=(*FEATURES, TARGET, *STATLIB_COLUMNS))
    layout, extra = _check_columns(Path(path), fmt.columns, target)
    return fmt, layout, extra


def statlib_to_sklearn(raw: pd.DataFrame) -> pd.DataFrame:
    """Turn the raw StatLib columns into scikit-learn's 8 features and target.

    The formulas are those of :func:`sklearn.datasets.fetch_california_housing`
    (``sklearn/datasets/_california_housing.py``): per-household averages of rooms, bedrooms and
    occupants, and the median house value divided by 100,000.

    :param raw: DataFrame with (at least) the :data:`STATLIB_COLUMNS`, n rows; ``median_house_value``
        may be left out (features to predict from).
    :returns: DataFrame of n rows and the columns :data:`FEATURES` + ``MedHouseVal`` ($100k), the
        latter only when ``raw`` has ``median_house_value``. A district with 0 (or an infinite or
        missing number of) households gets NaN for its three ratios (no division by zero).
    """
    households = raw["households"].where((raw["households"] != 0) & np.isfinite(raw["households"]))
    frame = pd.DataFrame(
        {
            "MedInc": raw["median_income"],
            "HouseAge": raw["housing_median_age"],
            "AveRooms": raw["total_rooms"] / households,
            "AveBedrms": raw["total_bedrooms"] / households,
            "Population": raw["population"],
            "AveOccup": raw["population"] / households,
            "Latitude": raw["latitude"],
            "Longitude": raw["longitude"],
        }
    )
    if STATLIB_TARGET in raw.columns:
        frame[TARGET] = raw[STATLIB_TARGET] / 100_000.0
    return frame


def read_housing_csv(
    path: str | os.PathLike,
    progress: Optional[Callable[[str], None]] = None,
    target: TargetRule = "required",
) -> pd.DataFrame:
    """Read a California Housing CSV in scikit-learn's or StatLib's column layout.

    What the file is comes from :func:`steps.csv_files.sniff_csv`: plain, gzip, bz2, xz or a zip of
    one file; UTF-8 (with or without BOM), UTF-16/UTF-32 (with or without BOM) or Windows-1252/Latin-1
    text; any line ending; delimiter ``, ; TAB |`` or blanks. Columns may come in any order; numbers
    may have thousands separators (``"2,810"``); unknown extra columns (and a saved row index,
    named by its position) are ignored with a warning. The file is read in chunks of
    :data:`CHUNK_ROWS` rows converted to float64 one at a time, so memory stays close to the
    size of the result, and a progress line is passed to ``progress`` (default: the log) per chunk.

    :param path: the CSV file.
    :param target: ``"required"`` (to train): the file must have the target column;
        ``"optional"`` (to predict): it may lack it (``MedHouseVal`` or StatLib's ``median_house_value``).
    :returns: DataFrame of n rows x (8 features + ``MedHouseVal`` in $100k), float64, not yet
        validated (see :func:`validate_dataset`, :func:`validate_features`); without the
        ``MedHouseVal`` column when the target is optional and the file has none.
    :raises DataError: the file is missing, a folder, unreadable, empty, not a CSV table (the
        message names what it is: a spreadsheet, Parquet, SQLite, JSON, HTML, an archive of several
        files, binary, ...), has no header row or only a header, lacks, duplicates or renames a needed
        column, has a non-numeric cell (or a decimal comma) or a negative count. Warnings (extra
        columns, districts with 0 households) are logged only once the file has been read without error.
    """
    path = Path(path)
    fmt, layout, extra = sniff_housing_csv(path, target)
    usecols = [c for c in _LAYOUTS[layout] if c != _LAYOUT_TARGET[layout] or c in fmt.columns]
    raw = _read_numeric(path, fmt, usecols, progress or log.info)
    if layout == "sklearn":
        _warn_extra(path, extra)
        return raw[[c for c in (*FEATURES, TARGET) if c in usecols]]
    # An infinite count is as unknown as a missing one (an infinite household count would
    # otherwise turn the ratios into 0); validate_dataset then imputes or drops it.
    raw = raw.replace([np.inf, -np.inf], np.nan)
    _check_counts(path, raw)
    _warn_extra(path, extra)
    zero = int((raw["households"] == 0).sum())
    if zero:
        log.warning(
            "%s: %d district(s) with 0 households: their AveRooms, AveBedrms and AveOccup are unknown "
            "and are imputed with the training median inside each model",
            path,
            zero,
        )
    return statlib_to_sklearn(raw)


def _read_numeric(path: Path, fmt: CsvFormat, usecols: list[str], report: Callable[[str], None]) -> pd.DataFrame:
    """The columns ``usecols`` of the CSV as float64, read in chunks of :data:`CHUNK_ROWS` rows (a progress
    line per chunk for files over :data:`PROGRESS_BYTES`); index 0..n-1.

    :raises DataError: a cell is not a number, the file is not a well-formed table, or it has no data row.
    """
    size = path.stat().st_size
    chunks = []
    rows = 0
    with library_warnings(log, prefix=f"{path}: "):
        for chunk in read_csv_chunks(path, fmt, usecols, CHUNK_ROWS):
            chunks.append(to_numeric(path, chunk, rows, fmt.delimiter))
            rows += len(chunk)
            if size > PROGRESS_BYTES:
                report(f"read {rows:,} rows of {path.name} ({size / 2**20:,.0f} MiB)")
    if rows == 0:
        raise DataError(f"{path} has a header but no data rows; pass a CSV with data rows")
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0].reset_index(drop=True)


def _check_counts(path: Path, raw: pd.DataFrame) -> None:
    """Refuse a negative value in a count column of the StatLib layout (:data:`STATLIB_COUNTS`)."""
    for col in STATLIB_COUNTS:
        negative = raw[col] < 0
        if negative.any():
            row = int(np.flatnonzero(negative.to_numpy())[0]) + 1
            raise DataError(
                f"{path}: column {col} has {int(negative.sum())} negative value(s) (first in data row {row}); "
                "counts cannot be negative, fix or remove those rows"
            )


def _warn_extra(path: Path, extra: list[str]) -> None:
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(extra))


def fetch_sklearn_dataset() -> pd.DataFrame:
    """Get the data set through :func:`sklearn.datasets.fetch_california_housing` (download + cache).

    :returns: DataFrame of 20,640 rows x (8 features + ``MedHouseVal`` in $100k).
    :raises DataError: the download failed (no internet and no scikit-learn cache).
    """
    import warnings

    from sklearn.datasets import fetch_california_housing

    try:
        with warnings.catch_warnings():  # scikit-learn warns once per retry; the error below says it all
            warnings.simplefilter("ignore")
            bunch = fetch_california_housing(as_frame=True)
    except Exception as exc:  # URLError, OSError, HTTPError, ...
        raise DataError(
            f"could not download the California Housing data set through scikit-learn ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); pass --data with a local CSV file"
        ) from None
    return bunch.frame[list((*FEATURES, TARGET))].astype("float64")


def _first_row(mask: pd.Series, rows: Optional[np.ndarray]) -> int:
    """The 1-based data row of the file of the first True in ``mask`` (``rows``: data row of each position)."""
    pos = int(np.flatnonzero(mask.to_numpy())[0])
    return int(rows[pos]) if rows is not None else pos + 1


def _check_target_and_coordinates(data: pd.DataFrame, rows: Optional[np.ndarray]) -> None:
    """Refuse a target <= 0 and coordinates no place on Earth has (NaN values are not checked here)."""
    if TARGET in data.columns:
        bad = data[TARGET] <= 0
        if bad.any():
            row = _first_row(bad, rows)
            raise DataError(
                f"column {TARGET} has {int(bad.sum())} value(s) <= 0 (first {data[TARGET][bad].iloc[0]:g} in data row "
                f"{row}); median house values are positive, fix or remove those rows"
            )
    lat, lon = data["Latitude"], data["Longitude"]
    bad_lat = lat.abs() > 90
    if bad_lat.any():
        row = _first_row(bad_lat, rows)
        value = lat[bad_lat].iloc[0]
        swapped = bool(lat[bad_lat].abs().le(180).all() and lon[bad_lat].abs().le(90).all())
        fix = ("Latitude holds longitudes and Longitude latitudes: swap the two columns (in the StatLib layout "
               "longitude comes first)" if swapped else "fix or remove those rows")
        raise DataError(
            f"column Latitude has {int(bad_lat.sum())} value(s) beyond -90..90 degrees (first {value:g} in data row "
            f"{row}); {fix}"
        )
    bad_lon = lon.abs() > 180
    if bad_lon.any():
        row = _first_row(bad_lon, rows)
        raise DataError(
            f"column Longitude has {int(bad_lon.sum())} value(s) beyond -180..180 degrees (first "
            f"{lon[bad_lon].iloc[0]:g} in data row {row}); fix or remove those rows"
        )


def _warn_unusual(data: pd.DataFrame, duplicates: bool) -> None:
    """Warn (one line each) about accepted data that looks wrong: districts outside California, a
    target in dollars, and (``duplicates``: to train) more than :data:`DUPLICATE_SHARE` exact duplicate rows."""
    lat, lon = data["Latitude"], data["Longitude"]
    outside = int(((lat < CALIFORNIA_LATITUDE[0]) | (lat > CALIFORNIA_LATITUDE[1])
                   | (lon < CALIFORNIA_LONGITUDE[0]) | (lon > CALIFORNIA_LONGITUDE[1])).sum())
    if outside:
        log.warning(
            "%d row(s) have coordinates outside California (latitude %g to %g, longitude %g to %g); this data set "
            "is California's districts, check the Latitude and Longitude columns", outside,
            *CALIFORNIA_LATITUDE, *CALIFORNIA_LONGITUDE,
        )
    if TARGET in data.columns and data[TARGET].notna().any():
        median = float(data[TARGET].median())
        if median > DOLLARS_MEDIAN:
            log.warning(
                "the target %s has median %s: it looks like dollars, not units of $100,000; divide the column by "
                "100,000, or use the StatLib layout (its median_house_value in dollars is converted)",
                TARGET, f"{median:,.0f}",
            )
    if duplicates and len(data):
        n_dup = int(data.duplicated().sum())
        if n_dup > DUPLICATE_SHARE * len(data):
            log.warning(
                "%d row(s) (%.1f%%) are exact duplicates of another row; they can land in both the training and "
                "the test set and inflate the scores, remove them (pandas.DataFrame.drop_duplicates)",
                n_dup, 100.0 * n_dup / len(data),
            )


def validate_features(X: pd.DataFrame, rows: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Check the values of the 8 features; drop no row (one prediction per row), require no row count.

    Rules (the feature rules of :func:`validate_dataset`, which uses this): the 8 :data:`FEATURES`
    present, as float64; infinite values count as missing (each model imputes missing values with
    its training median); values beyond +-:data:`MAX_ABS_VALUE`, negative values of
    :data:`NON_NEGATIVE_FEATURES` and a feature with no value at all are refused. A target column
    ``MedHouseVal`` in ``X`` is kept and bounded by +-:data:`MAX_ABS_VALUE` like the features, and
    must be > 0. Latitude must lie within +-90 and Longitude within +-180 (a Latitude that looks
    like a longitude is named as swapped columns). Nothing is logged.

    :param X: DataFrame of n rows x the 8 features (and optionally ``MedHouseVal``); other columns
        are left out of the result.
    :returns: DataFrame of the same n rows and index, the 8 features (then ``MedHouseVal`` if
        given), float64, infinite values replaced by NaN.
    :param rows: the file's 1-based data row of each row of ``X``, for messages (default: position + 1).
    :raises DataError: a feature column is missing or has no value, a value is out of bounds or
        negative where it cannot be, the target is <= 0, a coordinate is impossible.
    """
    missing = [c for c in FEATURES if c not in X.columns]
    if missing:
        raise DataError(f"the data has no column(s) {', '.join(missing)}; pass a California Housing CSV")
    columns = [*FEATURES, *([TARGET] if TARGET in X.columns else [])]
    data = X[columns].astype("float64").replace([np.inf, -np.inf], np.nan)
    huge = [c for c in columns if (data[c].abs() > MAX_ABS_VALUE).any()]
    if huge:
        raise DataError(
            f"column(s) {', '.join(huge)} hold values beyond +-{MAX_ABS_VALUE:.0e}, which no census figure "
            "reaches; check the units and fix or remove those rows"
        )
    negative = [c for c in NON_NEGATIVE_FEATURES if (data[c] < 0).any()]
    if negative:
        raise DataError(
            f"feature(s) {', '.join(negative)} have negative values, but incomes, counts and per-household "
            "averages cannot be negative; fix or remove those rows"
        )
    empty = [c for c in FEATURES if data[c].isna().all()]
    if empty:
        raise DataError(
            f"feature(s) {', '.join(empty)} have no value in any row (all missing or infinite); "
            "fill in the column, or check the columns it is computed from"
        )
    _check_target_and_coordinates(data, rows)
    return data


def _warn_missing_features(data: pd.DataFrame) -> None:
    """Log how many rows have missing feature values (each model imputes them)."""
    nan_rows = int(data[list(FEATURES)].isna().any(axis=1).sum())
    if nan_rows:
        log.warning(
            "%d row(s) have missing or infinite feature values; each model imputes them with the "
            "training median of that feature",
            nan_rows,
        )


def validate_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the data before anything trains and return the rows that can be used.

    Rules: exactly the 8 :data:`FEATURES` and the target, all float64; infinite values count as
    missing; rows whose target is missing are dropped with a warning (a model cannot learn from
    them); missing feature values are kept and imputed with the training median inside each model,
    with a warning giving their count; a constant feature is kept with a warning; a feature with no
    value at all, values beyond +-:data:`MAX_ABS_VALUE`, negative values of
    :data:`NON_NEGATIVE_FEATURES`, a target <= 0, impossible coordinates (these through
    :func:`validate_features`), a constant target and too few rows are refused. Accepted data that
    looks wrong gets one warning line each: coordinates outside California, a target that looks like
    dollars, more than 1% exact duplicate rows. Every check that can refuse the data runs before any warning is
    logged, so a refused data set gives exactly one message.

    :param frame: DataFrame of n rows x (features + ``MedHouseVal`` in $100k).
    :returns: DataFrame of m <= n rows, same columns, float64, fresh 0..m-1 index.
    :raises DataError: a column is missing or has no value, fewer than ``MIN_TRAIN_ROWS +
        MIN_TEST_ROWS`` usable rows remain, or the target is constant.
    """
    missing = [c for c in (*FEATURES, TARGET) if c not in frame.columns]
    if missing:
        raise DataError(f"the data has no column(s) {', '.join(missing)}; pass a California Housing CSV")
    data = frame[list((*FEATURES, TARGET))].astype("float64").replace([np.inf, -np.inf], np.nan)
    bad_target = data[TARGET].isna()
    dropped = int(bad_target.sum())
    rows = np.flatnonzero(~bad_target.to_numpy()) + 1  # the file's data row of each row kept
    data = data.loc[~bad_target].reset_index(drop=True)
    minimum = MIN_TRAIN_ROWS + MIN_TEST_ROWS
    if len(data) < minimum:
        why = f" ({dropped} more dropped: target {TARGET} missing or infinite)" if dropped else ""
        raise DataError(
            f"only {len(data)} usable row(s){why}; the pipeline needs at least {minimum} rows "
            f"({MIN_TRAIN_ROWS} to train, {MIN_TEST_ROWS} to test), pass a CSV with more data rows"
        )
    data = validate_features(data, rows)
    if data[TARGET].nunique() <= 1:
        raise DataError(
            f"the target {TARGET} is constant ({data[TARGET].iloc[0]:g}); there is nothing to learn, "
            "check the target column"
        )
    if dropped:
        log.warning("dropping %d row(s) whose target %s is missing or infinite", dropped, TARGET)
    _warn_missing_features(data)
    for col in FEATURES:
        if data[col].nunique(dropna=True) <= 1:
            log.warning("feature %s is constant; it carries no information", col)
    _warn_unusual(data, duplicates=True)
    return data


def load_dataset(data_path: str = "sklearn") -> pd.DataFrame:
    """Load the California Housing data and validate it.

    :param data_path: a CSV in scikit-learn's or StatLib's column layout; ``'sklearn'`` means
        scikit-learn's :func:`~sklearn.datasets.fetch_california_housing` (download and cache).
    :returns: validated DataFrame of n rows (20,640 for the full data set) x (8 features +
        ``MedHouseVal`` in $100k), float64.
    :raises DataError: see :func:`read_housing_csv`, :func:`fetch_sklearn_dataset` and
        :func:`validate_dataset`. Warnings are logged only when the data is accepted, so refused
        data gives its one error message and nothing else. Once accepted, one INFO line on
        ``steps.data``: the source, and the rows and columns loaded.
    """
    download = data_path == "sklearn"
    with _warnings_if_accepted():
        frame = fetch_sklearn_dataset() if download else read_housing_csv(data_path)
        with library_warnings(log):
            data = validate_dataset(frame)
    source = "scikit-learn's fetch_california_housing" if download else str(data_path)
    log.info("loaded %s: %d rows x %d columns (8 features + target)", source, len(data), data.shape[1])
    return data


def read_features(
    path: str | os.PathLike, progress: Optional[Callable[[str], None]] = None
) -> tuple[pd.DataFrame, Optional[pd.Series]]:
    """Read a California Housing CSV to predict from: its features, and its target when it has one.

    The file is read as :func:`read_housing_csv` reads it (every format, the same checks and
    messages), except that the target column is optional; its values are checked by
    :func:`validate_features`: no row is dropped and there is no row minimum, so there is one
    row of ``X`` per data row of the file. Warnings (extra columns, 0 households, missing feature
    values) are logged only when the file is accepted.

    :returns: ``(X, y)``: X is n x 8 float64 (:data:`FEATURES`, index 0..n-1, missing or infinite
        values as NaN); y is the target (n,) ``MedHouseVal`` in $100k (NaN where a row has none or
        an infinite one), or ``None`` when the file has no target column.
    :raises DataError: one line naming the problem and the fix.
    """
    with _warnings_if_accepted():
        frame = read_housing_csv(path, progress, target="optional")
        with library_warnings(log):
            data = validate_features(frame)
        _warn_missing_features(data)
        _warn_unusual(data, duplicates=False)
    y = data[TARGET] if TARGET in data.columns else None
    return data[list(FEATURES)], y


@contextmanager
def _warnings_if_accepted() -> Iterator[None]:
    """Hold this module's warnings until the block ends without an error, then log them in order."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # progress lines go out at once
        held.append(record)
        return False

    log.addFilter(hold)
    try:
        yield
    finally:
        log.removeFilter(hold)
    for record in held:
        log.handle(record)


def check_csv(path: str | os.PathLike, test_size: float) -> int:
    """Cheap checks of a data file before any step runs: what can be known without parsing it.

    The file must be a readable CSV table with a header of scikit-learn's or StatLib's columns
    (see :func:`read_housing_csv`) and enough data rows for a ``test_size`` split (see
    :func:`check_split_sizes`). Rows are counted, not parsed: values are checked when the load
    step reads the file (a row dropped there can still leave too few rows; the split step says so).

    :returns: the number of data rows.
    :raises DataError: one line naming the problem and the fix.
    """
    path = Path(path)
    fmt, _, _ = sniff_housing_csv(path)
    n_rows = count_data_rows(path, fmt)
    if n_rows == 0:
        raise DataError(f"{path} has a header but no data rows; pass a CSV with data rows")
    check_split_sizes(n_rows, test_size)
    return n_rows
