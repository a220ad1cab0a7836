"""The regressors: polynomial regression, XGBoost, and the optional linear and random-forest models.

Every model is a scikit-learn estimator (a :class:`~sklearn.pipeline.Pipeline` where it has
preprocessing) taking the 8 California Housing features (n x 8 DataFrame) and predicting the
median house value in $100k. Missing feature values are imputed with the training median
inside each model. Nothing here knows about ClearML.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OneToOneFeatureMixin, RegressorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures, StandardScaler
from sklearn.utils.validation import check_is_fitted

from steps.params import DEFAULTS as P

#: Heavy-tailed features (incomes, per-household ratios, head counts): log1p before the polynomial.
SKEWED_FEATURES: tuple[str, ...] = ("MedInc", "AveRooms", "AveBedrms", "Population", "AveOccup")
#: Angles (degrees) of the rotated coordinate axes added for the tree models.
ROTATION_ANGLES: tuple[int, ...] = (15, 30, 45, 60, 75)


class QuantileClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Clip each feature to its [quantile, 1 - quantile] range learned on the training set.

    A few districts have per-household ratios (AveOccup up to 1,243, AveRooms up to 142) far
    outside the bulk of the data; a polynomial evaluated there extrapolates to absurd values.
    Clipping bounds every feature to the range the model was fitted on.

    :param quantile: lower quantile in [0, 0.5); 0 clips to the training min and max.
    """

    def __init__(self, quantile: float = 0.01):
        self.quantile = quantile

    def fit(self, X, y=None):
        X = self._validate_data_array(X, reset=True)
        self.lower_ = np.nanquantile(X, self.quantile, axis=0)
        self.upper_ = np.nanquantile(X, 1.0 - self.quantile, axis=0)
        return self

    def transform(self, X):
        check_is_fitted(self, "lower_")
        return np.clip(self._validate_data_array(X, reset=False), self.lower_, self.upper_)

    def _validate_data_array(self, X, reset: bool) -> np.ndarray:
        if not 0.0 <= self.quantile < 0.5:
            raise ValueError(f"quantile must be in [0, 0.5), got {self.quantile}")
        if reset:
            self.n_features_in_ = np.shape(X)[1]
            if hasattr(X, "columns"):
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return np.asarray(X, dtype=float)


class ClippedRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """Fit ``regressor`` and clip its predictions to the target range seen in training.

    The California Housing target is censored at 5.00001 ($500k); a polynomial can predict far
    outside [min, max] of the training target, which only adds error.

    :param regressor: any scikit-learn regressor.
    """

    def __init__(self, regressor=None):
        self.regressor = regressor

    def fit(self, X, y):
        self.regressor_ = clone(self.regressor).fit(X, y)
        y = np.asarray(y, dtype=float)
        self.y_min_, self.y_max_ = float(np.min(y)), float(np.max(y))
        if hasattr(self.regressor_, "n_features_in_"):
            self.n_features_in_ = self.regressor_.n_features_in_
        return self

    def predict(self, X):
        check_is_fitted(self, "regressor_")
        return np.clip(self.regressor_.predict(X), self.y_min_, self.y_max_)


def add_rotated_coordinates(X: pd.DataFrame) -> pd.DataFrame:
    """Append coordinates along axes rotated by :data:`ROTATION_ANGLES` degrees.

    ``rot<a> = Longitude * cos(a) + Latitude * sin(a)``: axis-aligned tree splits can then follow
    the coast and the diagonal price gradients of California. A standard feature for this data
    set (e.g. Géron, *Hands-On Machine Learning*, 3rd ed., ch. 2 discussions; Kaggle solutions).

    :param X: n x 8 features (needs ``Latitude`` and ``Longitude``).
    :returns: n x (8 + 5) DataFrame.
    """
    X = pd.DataFrame(X).copy()
    for angle in ROTATION_ANGLES:
        rad = np.deg2rad(angle)
        X[f"rot{angle}"] = X["Longitude"] * np.cos(rad) + X["Latitude"] * np.sin(rad)
    return X


def _rotated_coordinates_names(transformer, input_features):
    return [*input_features, *(f"rot{a}" for a in ROTATION_ANGLES)]


def build_polynomial(
    degree: int = P.poly_degree, alpha: float = P.poly_alpha, clip_quantile: float = P.poly_clip_quantile
) -> Pipeline:
    """Polynomial regression robust to outliers, all of it learned on the training set only.

    impute (median) -> clip to training quantiles -> log1p of :data:`SKEWED_FEATURES` -> scale
    -> polynomial features of ``degree`` -> scale -> ridge (L2, ``alpha``), predictions clipped
    to the training target range.

    :param degree: polynomial degree, 1 to 4.
    :param alpha: ridge regularization strength, > 0.
    :param clip_quantile: features are clipped to [q, 1-q] training quantiles, q in [0, 0.5).
    :returns: an unfitted :class:`~sklearn.pipeline.Pipeline`.
    """
    log_skewed = ColumnTransformer(
        [("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one"), list(SKEWED_FEATURES))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    features = make_pipeline(
        SimpleImputer(strategy="median"),
        QuantileClipper(clip_quantile),
        log_skewed,
        StandardScaler(),
        PolynomialFeatures(degree=degree, include_bias=False),
        StandardScaler(),
    )
    features.set_output(transform="pandas")
    return Pipeline([("features", features), ("ridge", ClippedRegressor(Ridge(alpha=alpha)))])


def build_linear() -> Pipeline:
    """Ordinary least squares on the scaled features (the classic baseline).

    :returns: an unfitted Pipeline: impute (median) -> scale -> :class:`~sklearn.linear_model.LinearRegression`.
    """
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LinearRegression())


def build_random_forest(
    n_estimators: int = P.rf_n_estimators, random_state: int = P.random_state, n_jobs: int = P.n_jobs
) -> Pipeline:
    """Random forest (:class:`~sklearn.ensemble.RandomForestRegressor`) on the features.

    :param n_estimators: number of trees, >= 1.
    :param random_state: seed.
    :param n_jobs: parallel jobs (-1: all cores).
    :returns: an unfitted Pipeline: impute (median) -> random forest (min 2 samples per leaf).
    """
    forest = RandomForestRegressor(
        n_estimators=n_estimators, min_samples_leaf=2, max_features=0.5, random_state=random_state, n_jobs=n_jobs
    )
    return make_pipeline(SimpleImputer(strategy="median"), forest)


def build_xgboost(
    n_estimators: int = P.xgb_n_estimators,
    max_depth: int = P.xgb_max_depth,
    learning_rate: float = P.xgb_learning_rate,
    subsample: float = P.xgb_subsample,
    colsample_bytree: float = P.xgb_colsample_bytree,
    min_child_weight: float = P.xgb_min_child_weight,
    early_stopping_rounds: int = P.xgb_early_stopping_rounds,
    device: str = P.xgb_device,
    n_jobs: int = P.n_jobs,
    random_state: int = P.random_state,
) -> Pipeline:
    """XGBoost (:class:`xgboost.XGBRegressor`, ``tree_method="hist"``) on the features plus rotated coordinates.

    ``n_estimators`` is an upper bound: :func:`fit_xgboost` stops when the validation RMSE has not
    improved for ``early_stopping_rounds`` rounds. Missing values are handled by XGBoost itself.

    :returns: an unfitted Pipeline: :func:`add_rotated_coordinates` -> XGBRegressor.
    """
    from xgboost import XGBRegressor

    booster = XGBRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        subsample=subsample,
        colsample_bytree=colsample_bytree,
        min_child_weight=min_child_weight,
        early_stopping_rounds=early_stopping_rounds if early_stopping_rounds > 0 else None,
        tree_method="hist",
        device=device,
        n_jobs=n_jobs,
        random_state=random_state,
        eval_metric="rmse",
    )
    rotate = FunctionTransformer(add_rotated_coordinates, feature_names_out=_rotated_coordinates_names)
    return Pipeline([("rotate", rotate), ("xgboost", booster)])


def fit_xgboost(
    model: Pipeline,
    X_train: pd.DataFrame,
    y_train: pd.Series,
    validation_fraction: float = 0.1,
    random_state: int = P.random_state,
) -> Pipeline:
    """Fit :func:`build_xgboost`'s pipeline with early stopping on a validation part of the train set.

    The test set is never seen: ``validation_fraction`` of ``X_train`` is held out for early
    stopping only (:func:`~sklearn.model_selection.train_test_split` with ``random_state``).

    :param X_train: n_train x 8 features; ``y_train``: n_train targets in $100k.
    :returns: the fitted pipeline (its booster's ``best_iteration`` gives the rounds kept).
    """
    booster = model[-1]
    if booster.get_params()["early_stopping_rounds"] is None:
        return model.fit(X_train, y_train)
    X_fit, X_val, y_fit, y_val = train_test_split(
        X_train, y_train, test_size=validation_fraction, random_state=random_state
    )
    X_val = model[:-1].fit(X_fit, y_fit).transform(X_val)
    return model.fit(X_fit, y_fit, xgboost__eval_set=[(X_val, y_val)], xgboost__verbose=False)


# TEMPORARY shim until the models branch lands (same interface).
MODEL_ARGUMENTS: dict[str, dict[str, str]] = {
    "polynomial": {"degree": "poly_degree", "alpha": "poly_alpha", "clip_quantile": "poly_clip_quantile"},
    "xgboost": {"n_estimators": "xgb_n_estimators", "max_depth": "xgb_max_depth", "learning_rate": "xgb_learning_rate",
                "subsample": "xgb_subsample", "colsample_bytree": "xgb_colsample_bytree",
                "min_child_weight": "xgb_min_child_weight", "early_stopping_rounds": "xgb_early_stopping_rounds",
                "device": "xgb_device", "n_jobs": "n_jobs", "random_state": "random_state"},
    "linear": {},
    "random_forest": {"n_estimators": "rf_n_estimators", "n_jobs": "n_jobs", "random_state": "random_state"},
}


def model_arguments(kind, params):
    return {kw: getattr(params, name) for kw, name in MODEL_ARGUMENTS[kind].items()}


def train_model(kind, X_train, y_train, **kwargs):
    if kind == "xgboost":
        return fit_xgboost(build_xgboost(**kwargs), X_train, y_train, random_state=kwargs.get("random_state", 42))
    builder = {"polynomial": build_polynomial, "linear": build_linear, "random_forest": build_random_forest}[kind]
    return builder(**kwargs).fit(X_train, y_train)
