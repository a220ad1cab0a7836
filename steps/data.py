"""Load, validate and split the California Housing data set.

The data set is the 1990 U.S. census block-group table of Pace & Barry, "Sparse spatial
autoregressions", Statistics & Probability Letters 33 (1997), distributed by StatLib and by
scikit-learn (:func:`sklearn.datasets.fetch_california_housing`): 20,640 districts, 8 features,
target ``MedHouseVal`` = median house value in units of $100,000.

Nothing here knows about ClearML: every function takes and returns plain pandas/numpy objects.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
TARGET = "MedHouseVal"

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
#: Count columns of the StatLib layout: they may not be negative.
STATLIB_COUNTS: tuple[str, ...] = ("total_rooms", "total_bedrooms", "population", "households")

#: Features that cannot be negative (income, age, per-household averages, head counts).
NON_NEGATIVE_FEATURES: tuple[str, ...] = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup")
#: Largest magnitude accepted for any value: far beyond real data, far below float overflow in the models.
MAX_ABS_VALUE = 1e15

#: Smallest train and test sets the pipeline accepts (XGBoost also holds out part of the train set).
MIN_TRAIN_ROWS = 20
MIN_TEST_ROWS = 5
#: Rows read per chunk (memory stays close to the size of the result).
CHUNK_ROWS = 500_000
#: Files larger than this many bytes get a progress line per chunk read.
PROGRESS_BYTES = 50 * 2**20

_DELIMITERS = ",;\t|"


class DataError(ValueError):
    """The input data cannot be used; the message names the problem and the fix."""


def _sniff_delimiter(path: Path, header: str) -> str:
    """Return the delimiter of ``header`` among ``, ; TAB |`` (the one that splits it most)."""
    try:
        return csv.Sniffer().sniff(header, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        counts = {d: header.count(d) for d in _DELIMITERS}
        best = max(counts, key=counts.get)
        if counts[best] == 0:
            raise DataError(
                f"{path}: the first line has no ',', ';', tab or '|' delimiter, so this is not a CSV "
                "table; pass a CSV file with a header row"
            ) from None
        return best


def _read_header(path: Path) -> tuple[list[str], str]:
    """Check that ``path`` is a readable, non-empty text CSV and return (header columns, delimiter)."""
    if not path.exists():
        raise DataError(f"data file not found: {path}; pass --data with the path of a CSV file")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; pass --data with the path of a CSV file")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe or device?); save the data to a CSV file "
                        "and pass its path with --data")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
    if not head.strip():
        raise DataError(f"{path} is empty; pass a CSV file with a header row and data rows")
    if head[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive, not a CSV file; unzip it and pass the CSV inside")
    if head[:2] == b"\x1f\x8b":
        raise DataError(f"{path} is gzip-compressed; decompress it (gunzip) and pass the CSV file")
    if b"\x00" in head:
        raise DataError(f"{path} is a binary file, not a CSV text file; pass a CSV file")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html", "<?xml")) or "<html" in lowered[:1000]:
        raise DataError(
            f"{path} is an HTML/XML page, not a CSV file (a web page saved by mistake?); "
            "download the raw CSV file instead"
        )
    header = text.splitlines()[0]
    delimiter = _sniff_delimiter(path, header)
    columns = [c.strip().strip('"').strip("'") for c in next(csv.reader([header], delimiter=delimiter))]
    return columns, delimiter


def _check_columns(path: Path, columns: list[str]) -> tuple[str, list[str]]:
    """Decide the layout ('sklearn' or 'statlib') from the header; return it and the ignored extras."""
    if columns and all(_is_number(c) for c in columns):
        raise DataError(
            f"{path}: the first line holds numbers, not column names, so the CSV has no header row; add "
            f"the header line {','.join(STATLIB_COLUMNS)} (StatLib's cal_housing.data has none) or "
            f"{','.join((*FEATURES, TARGET))} as the first line"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicated column(s) {', '.join(duplicated)}; keep one column of each name")
    present = set(columns)
    layouts = {"sklearn": (*FEATURES, TARGET), "statlib": STATLIB_COLUMNS}
    missing = {name: [c for c in cols if c not in present] for name, cols in layouts.items()}
    layout = min(missing, key=lambda name: len(missing[name]))
    if missing[layout]:
        unknown = [c for c in columns if c not in layouts[layout]]
        hint = f" (found unknown column(s): {', '.join(unknown)})" if unknown else ""
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing[layout])}{hint}; the CSV needs either "
            f"scikit-learn's columns ({','.join(layouts['sklearn'])}) or the StatLib columns "
            f"({','.join(STATLIB_COLUMNS)})"
        )
    extra = [c for c in columns if c not in layouts[layout]]
    return layout, extra


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_numeric(path: Path, chunk: pd.DataFrame, first_row: int) -> pd.DataFrame:
    """Convert every column to float64; raise naming the first non-numeric cell (1-based data row)."""
    out = {}
    for col in chunk.columns:
        values = chunk[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[col] = values.astype("float64")
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.notna() & (values.astype(str).str.strip() != "")
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            value = str(values.iloc[pos]).strip()
            if re.fullmatch(r"[-+]?\d*,\d+", value):
                raise DataError(
                    f"{path}: column {col} has {value!r} in data row {first_row + pos + 1}, a number with a "
                    "decimal comma; save the CSV with '.' as the decimal separator"
                )
            raise DataError(
                f"{path}: column {col} has a non-numeric value {str(values.iloc[pos])!r} in data row "
                f"{first_row + pos + 1}; fix or remove that row (every column must be numeric)"
            )
        out[col] = numeric.astype("float64")
    return pd.DataFrame(out, index=chunk.index)


def statlib_to_sklearn(raw: pd.DataFrame) -> pd.DataFrame:
    """Turn the raw StatLib columns into scikit-learn's 8 features and target.

    The formulas are those of :func:`sklearn.datasets.fetch_california_housing`
    (``sklearn/datasets/_california_housing.py``): per-household averages of rooms, bedrooms and
    occupants, and the median house value divided by 100,000.

    :param raw: DataFrame with (at least) the :data:`STATLIB_COLUMNS`, n rows.
    :returns: DataFrame of n rows and the columns :data:`FEATURES` + ``MedHouseVal`` ($100k).
        A district with 0 (or an infinite or missing number of) households gets NaN for its three
        ratios (no division by zero).
    """
    households = raw["households"].where((raw["households"] != 0) & np.isfinite(raw["households"]))
    return pd.DataFrame(
        {
            "MedInc": raw["median_income"],
            "HouseAge": raw["housing_median_age"],
            "AveRooms": raw["total_rooms"] / households,
            "AveBedrms": raw["total_bedrooms"] / households,
            "Population": raw["population"],
            "AveOccup": raw["population"] / households,
            "Latitude": raw["latitude"],
            "Longitude": raw["longitude"],
            TARGET: raw["median_house_value"] / 100_000.0,
        }
    )


def read_housing_csv(path: str | os.PathLike, progress: Optional[Callable[[str], None]] = None) -> pd.DataFrame:
    """Read a California Housing CSV in scikit-learn's or StatLib's column layout.

    The delimiter (``, ; TAB |``) is detected from the header; columns may come in any order;
    unknown extra columns are ignored with a warning. The file is read in chunks of
    :data:`CHUNK_ROWS` rows converted to float64 one at a time, so memory stays close to the
    size of the result, and a progress line is passed to ``progress`` (default: the log) per chunk.

    :param path: the CSV file.
    :returns: DataFrame of n rows x (8 features + ``MedHouseVal`` in $100k), float64, not yet
        validated (see :func:`validate_dataset`).
    :raises DataError: the file is missing, a folder, unreadable, empty, not a CSV table (binary,
        zip, gzip, HTML), has no header row or only a header, lacks, duplicates or renames a needed
        column, has a non-numeric cell (or a decimal comma) or a negative count. Warnings (extra
        columns, districts with 0 households) are logged only once the file has been read without error.
    """
    path = Path(path)
    columns, delimiter = _read_header(path)
    layout, extra = _check_columns(path, columns)
    usecols = list((*FEATURES, TARGET) if layout == "sklearn" else STATLIB_COLUMNS)
    report = progress or log.info
    size = path.stat().st_size
    chunks = []
    rows = 0
    try:
        reader = pd.read_csv(
            path,
            sep=delimiter,
            usecols=lambda c: c.strip().strip('"').strip("'") in usecols,
            chunksize=CHUNK_ROWS,
            skipinitialspace=True,
            encoding="utf-8-sig",
            encoding_errors="replace",
            low_memory=False,
        )
        for chunk in reader:
            chunk.columns = [c.strip().strip('"').strip("'") for c in chunk.columns]
            chunks.append(_to_numeric(path, chunk, rows))
            rows += len(chunk)
            if size > PROGRESS_BYTES:
                report(f"read {rows:,} rows of {path.name} ({size / 2**20:,.0f} MiB)")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a well-formed CSV table ({first}); check the delimiter and quoting") from None
    if rows == 0:
        raise DataError(f"{path} has a header but no data rows; pass a CSV with data rows")
    raw = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0].reset_index(drop=True)
    if layout == "sklearn":
        _warn_extra(path, extra)
        return raw[list((*FEATURES, TARGET))]
    # An infinite count is as unknown as a missing one (an infinite household count would
    # otherwise turn the ratios into 0); validate_dataset then imputes or drops it.
    raw = raw.replace([np.inf, -np.inf], np.nan)
    for col in STATLIB_COUNTS:
        negative = raw[col] < 0
        if negative.any():
            row = int(np.flatnonzero(negative.to_numpy())[0]) + 1
            raise DataError(
                f"{path}: column {col} has {int(negative.sum())} negative value(s) (first in data row {row}); "
                "counts cannot be negative, fix or remove those rows"
            )
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


def validate_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the data before anything trains and return the rows that can be used.

    Rules: exactly the 8 :data:`FEATURES` and the target, all float64; infinite values count as
    missing; rows whose target is missing are dropped with a warning (a model cannot learn from
    them); missing feature values are kept and imputed with the training median inside each model,
    with a warning giving their count; a constant feature is kept with a warning; a feature with no
    value at all, values beyond +-:data:`MAX_ABS_VALUE`, negative values of
    :data:`NON_NEGATIVE_FEATURES`, a constant target and too few rows are refused. Every check that can refuse the
    data runs before any warning is logged, so a refused data set gives exactly one message.

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
    data = data.loc[~bad_target].reset_index(drop=True)
    minimum = MIN_TRAIN_ROWS + MIN_TEST_ROWS
    if len(data) < minimum:
        why = f" ({dropped} more dropped: target {TARGET} missing or infinite)" if dropped else ""
        raise DataError(
            f"only {len(data)} usable row(s){why}; the pipeline needs at least {minimum} rows "
            f"({MIN_TRAIN_ROWS} to train, {MIN_TEST_ROWS} to test), pass a CSV with more data rows"
        )
    huge = [c for c in (*FEATURES, TARGET) if (data[c].abs() > MAX_ABS_VALUE).any()]
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
    if data[TARGET].nunique() <= 1:
        raise DataError(
            f"the target {TARGET} is constant ({data[TARGET].iloc[0]:g}); there is nothing to learn, "
            "check the target column"
        )
    if dropped:
        log.warning("dropping %d row(s) whose target %s is missing or infinite", dropped, TARGET)
    nan_rows = int(data[list(FEATURES)].isna().any(axis=1).sum())
    if nan_rows:
        log.warning(
            "%d row(s) have missing or infinite feature values; each model imputes them with the "
            "training median of that feature",
            nan_rows,
        )
    for col in FEATURES:
        if data[col].nunique(dropna=True) <= 1:
            log.warning("feature %s is constant; it carries no information", col)
    return data


def load_dataset(data_path: str = "") -> pd.DataFrame:
    """Load the California Housing data and validate it.

    :param data_path: a CSV in scikit-learn's or StatLib's column layout; empty means
        scikit-learn's :func:`~sklearn.datasets.fetch_california_housing` (download and cache).
    :returns: validated DataFrame of n rows (20,640 for the full data set) x (8 features +
        ``MedHouseVal`` in $100k), float64.
    :raises DataError: see :func:`read_housing_csv`, :func:`fetch_sklearn_dataset` and
        :func:`validate_dataset`. Warnings are logged only when the data is accepted, so refused
        data gives its one error message and nothing else.
    """
    with _warnings_if_accepted():
        frame = fetch_sklearn_dataset() if data_path in ("", "sklearn") else read_housing_csv(data_path)
        return validate_dataset(frame)


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


def _round_sig(value: float, up: bool, digits: int = 3) -> float:
    """``value`` rounded up or down to ``digits`` significant digits (so a shown bound stays valid)."""
    if value <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    steps = value / scale
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return float(f"{steps * scale:.{digits}g}")


def check_split_sizes(n_rows: int, test_size: float) -> None:
    """Raise :class:`DataError` unless a ``test_size`` split of ``n_rows`` leaves enough rows each side.

    The test set has ``ceil(n_rows * test_size)`` rows, as in :func:`sklearn.model_selection.train_test_split`.
    The message proposes the range of ``test_size`` values that would work (each bound itself works).
    """
    minimum = MIN_TRAIN_ROWS + MIN_TEST_ROWS
    if n_rows < minimum:
        raise DataError(
            f"only {n_rows} data row(s); the pipeline needs at least {minimum} rows ({MIN_TRAIN_ROWS} to "
            f"train, {MIN_TEST_ROWS} to test), pass a CSV with more data rows"
        )

    def sizes(t: float) -> tuple[int, int]:
        n_test = math.ceil(n_rows * t)
        return n_rows - n_test, n_test

    def fits(t: float) -> bool:
        n_train, n_test = sizes(t)
        return n_test >= MIN_TEST_ROWS and n_train >= MIN_TRAIN_ROWS

    if fits(test_size):
        return
    n_train, n_test = sizes(test_size)
    low = _round_sig(MIN_TEST_ROWS / n_rows, up=True)
    high = _round_sig(1 - MIN_TRAIN_ROWS / n_rows, up=False)
    while not fits(high) and high > low:  # float rounding at the very edge
        high = _round_sig(high - 10.0 ** (math.floor(math.log10(high)) - 2), up=False)
    raise DataError(
        f"test_size {test_size:g} of {n_rows} rows leaves {n_train} train and {n_test} test rows; "
        f"at least {MIN_TRAIN_ROWS} train and {MIN_TEST_ROWS} test rows are needed, choose a test_size "
        f"between {low:g} and {high:g} or use more data"
    )


def count_data_rows(path: str | os.PathLike) -> int:
    """Number of non-blank lines after the header of a CSV file (its data rows), read as a stream."""
    with open(path, "rb") as fh:
        next(fh, None)
        return sum(1 for line in fh if line.strip())


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
    _check_columns(path, _read_header(path)[0])
    n_rows = count_data_rows(path)
    if n_rows == 0:
        raise DataError(f"{path} has a header but no data rows; pass a CSV with data rows")
    check_split_sizes(n_rows, test_size)
    return n_rows


def split_dataset(
    data: pd.DataFrame, test_size: float = 0.2, random_state: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Shuffle and split into train and test sets (:func:`sklearn.model_selection.train_test_split`).

    :param data: validated DataFrame, n rows x (8 features + ``MedHouseVal``).
    :param test_size: fraction of rows in the test set, in (0, 1).
    :param random_state: seed of the shuffle.
    :returns: ``X_train`` (n_train x 8), ``X_test`` (n_test x 8), ``y_train`` (n_train,),
        ``y_test`` (n_test,) in $100k, with n_test = ceil(n * test_size).
    :raises DataError: either side would be smaller than the minimum.
    """
    check_split_sizes(len(data), test_size)
    X = data[list(FEATURES)]
    y = data[TARGET]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=random_state)
    return X_train, X_test, y_train, y_test
