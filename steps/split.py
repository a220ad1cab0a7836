"""Split arithmetic: the smallest usable train and test sets, and the seeded train/test split."""

from __future__ import annotations

import logging
import math

import pandas as pd
from sklearn.model_selection import train_test_split

from steps.errors import DataError
from steps.schema import FEATURES, TARGET

log = logging.getLogger(__name__)

#: Smallest train and test sets the pipeline accepts (XGBoost also holds out part of the train set).
MIN_TRAIN_ROWS = 20
MIN_TEST_ROWS = 5


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

    Logs one line on ``steps.split`` (INFO): the train and test sizes.
    """
    check_split_sizes(len(data), test_size)
    X = data[list(FEATURES)]
    y = data[TARGET]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=random_state)
    log.info("split %d rows: %d train, %d test (test_size %g, random_state %d)",
             len(data), len(X_train), len(X_test), test_size, random_state)
    return X_train, X_test, y_train, y_test
