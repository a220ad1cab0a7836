"""steps.validation: a score from the training rows only, for a hyperparameter optimizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import steps.validation as validation
from steps.models import model_arguments
from steps.params import DEFAULTS
from steps.validation import validation_scores


def _toy(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=["MedInc", "HouseAge", "AveRooms", "AveBedrms",
                                                        "Population", "AveOccup", "Latitude", "Longitude"],
                     index=np.arange(1000, 1000 + n))
    y = pd.Series(2.0 + X["MedInc"] * 0.5 + rng.normal(scale=0.1, size=n), index=X.index)
    return X, y


def test_fits_on_part_of_the_training_rows_and_scores_on_the_rest(monkeypatch):
    X, y = _toy()
    seen: dict[str, pd.Index] = {}
    real_train = validation.train_model

    def spy(kind, X_fit, y_fit, **kwargs):
        seen["fit"] = X_fit.index
        model = real_train(kind, X_fit, y_fit, **kwargs)
        real_predict = model.predict

        def predict(X_val):
            seen["scored"] = X_val.index
            return real_predict(X_val)

        model.predict = predict
        return model

    monkeypatch.setattr(validation, "train_model", spy)
    scores = validation_scores("linear", X, y, fraction=0.25)
    assert set(scores) == {"r2", "rmse", "mae"} and scores["r2"] > 0.9
    fit, scored = set(seen["fit"]), set(seen["scored"])
    assert fit.isdisjoint(scored)  # the model never saw a row it is scored on
    assert fit | scored == set(X.index)  # and nothing but the training rows
    assert len(scored) == 50


def test_deterministic_and_seeded():
    X, y = _toy()
    kwargs = model_arguments("random_forest", DEFAULTS) | {"n_estimators": 5, "n_jobs": 1}
    first = validation_scores("random_forest", X, y, **kwargs)
    assert validation_scores("random_forest", X, y, **kwargs) == first
    assert validation_scores("random_forest", X, y, **(kwargs | {"random_state": 7})) != first


def test_refuses_what_it_cannot_do():
    X, y = _toy(10)
    with pytest.raises(ValueError, match="unknown model kind 'svm'"):
        validation_scores("svm", X, y)
    for fraction in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="allowed 0 < fraction < 1"):
            validation_scores("linear", X, y, fraction=fraction)
    with pytest.raises(ValueError, match="cannot be split"):
        validation_scores("linear", X.head(1), y.head(1))


def test_xgboost_validation_r2_on_the_shipped_data_is_sane(split42, caplog):
    """A subsample of the training rows keeps it quick; held-out R^2 of XGBoost with neighbour features."""
    X_train, _, y_train, _ = split42
    X, y = X_train.iloc[:6000], y_train.iloc[:6000]
    kwargs = model_arguments("xgboost", DEFAULTS) | {"n_estimators": 400, "learning_rate": 0.1, "n_jobs": 2}
    with caplog.at_level("INFO", logger="steps"):
        scores = validation_scores("xgboost", X, y, **kwargs)
    assert 0.78 <= scores["r2"] <= 0.92, scores
    assert 0.3 <= scores["rmse"] <= 0.6 and 0.2 <= scores["mae"] <= 0.4, scores
    assert any(r.name == "steps.validation" and "1200 held-out training rows" in r.getMessage() for r in caplog.records)
