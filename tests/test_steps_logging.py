"""The steps say what they did: one short INFO line each on the ``steps.*`` loggers."""

from __future__ import annotations

import logging

import numpy as np

from steps.data import load_dataset
from steps.evaluation import metrics_table
from steps.models import train_model
from steps.split import split_dataset


def _lines(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.INFO]


def test_load_says_source_rows_and_columns(housing_csv, caplog):
    with caplog.at_level("INFO", logger="steps"):
        load_dataset(str(housing_csv))
    assert _lines(caplog, "steps.data") == [f"loaded {housing_csv}: 20640 rows x 9 columns (8 features + target)"]


def test_split_says_train_and_test_sizes(housing, caplog):
    with caplog.at_level("INFO", logger="steps"):
        split_dataset(housing, 0.2, 42)
    assert _lines(caplog, "steps.split") == ["split 20640 rows: 16512 train, 4128 test (test_size 0.2, random_state 42)"]


def test_training_says_kind_time_and_rounds_kept(split42, caplog):
    X_train, _, y_train, _ = split42
    X, y = X_train.iloc[:2000], y_train.iloc[:2000]
    with caplog.at_level("INFO", logger="steps"):
        train_model("linear", X, y)
        model = train_model("xgboost", X, y, n_estimators=300, learning_rate=0.3, early_stopping_rounds=10,
                            n_jobs=1, neighbors=0)
        train_model("xgboost", X, y, n_estimators=5, early_stopping_rounds=0, n_jobs=1, neighbors=0)
    linear, xgb, xgb_all = _lines(caplog, "steps.models")
    assert linear.startswith("trained linear on 2000 rows in ") and linear.endswith(" s")
    kept = model[-1].best_iteration + 1
    assert xgb.startswith("trained xgboost on 2000 rows in ")
    assert xgb.endswith(f" s: {kept} of 300 boosting rounds kept (early stopping)") and kept < 300
    assert xgb_all.endswith(" s: all 5 boosting rounds (no early stopping)")
    assert all("\n" not in line and len(line) < 120 for line in (linear, xgb, xgb_all))


def test_evaluation_says_each_models_scores(caplog):
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.5])
    with caplog.at_level("INFO", logger="steps"):
        metrics_table(y, {"linear": y + 0.1, "xgboost": y})
    assert _lines(caplog, "steps.evaluation") == [
        "test linear: R2 0.9941, RMSE 0.1000, MAE 0.1000 ($100k) on 6 rows",
        "test xgboost: R2 1.0000, RMSE 0.0000, MAE 0.0000 ($100k) on 6 rows",
    ]
