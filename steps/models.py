"""The regressors: polynomial regression, XGBoost, and the optional linear and random-forest models.

Every model is a scikit-learn estimator (a :class:`~sklearn.pipeline.Pipeline` where it has
preprocessing) taking the 8 California Housing features (n x 8 DataFrame) and predicting the
median house value in $100k. Missing feature values are imputed with the training median
inside each model. Nothing here knows about ClearML.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    OneToOneFeatureMixin,
    RegressorMixin,
    TransformerMixin,
    clone,
)
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import KFold, train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures, StandardScaler
from sklearn.utils.validation import check_is_fitted

from steps.params import DEFAULTS as P
from steps.params import MODEL_KINDS, PipelineParameters, estimator_keywords

log = logging.getLogger(__name__)

#: Heavy-tailed features (incomes, per-household ratios, head counts): log1p before the polynomial.
SKEWED_FEATURES: tuple[str, ...] = ("MedInc", "AveRooms", "AveBedrms", "Population", "AveOccup")
#: Angles (degrees) of the rotated coordinate axes added for the tree models.
ROTATION_ANGLES: tuple[int, ...] = (15, 30, 45, 60, 75)
#: Columns :class:`SpatialNeighborTargets` appends: weighted mean, median and standard deviation of
#: the neighbours' targets ($100k), distance to the farthest of them (km).
NEIGHBOR_FEATURES: tuple[str, ...] = ("nbr_mean", "nbr_median", "nbr_std", "nbr_dist_km")
#: Mean Earth radius in km (IUGG), to turn great-circle distances (radians) into km.
EARTH_RADIUS_KM = 6371.0088


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
        """Learn the per-feature bounds from ``X`` (n x d, NaN ignored); ``y`` is unused. Returns self."""
        X = self._validate_data_array(X, reset=True)
        self.lower_ = np.nanquantile(X, self.quantile, axis=0)
        self.upper_ = np.nanquantile(X, 1.0 - self.quantile, axis=0)
        return self

    def transform(self, X):
        """``X`` (m x d) clipped to the learned bounds, as an m x d float array (NaN stays NaN)."""
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
        """Fit a clone of ``regressor`` on ``X`` (n x d) and ``y`` (n targets, $100k); remember y's range. Returns self."""
        self.regressor_ = clone(self.regressor).fit(X, y)
        y = np.asarray(y, dtype=float)
        self.y_min_, self.y_max_ = float(np.min(y)), float(np.max(y))
        if hasattr(self.regressor_, "n_features_in_"):
            self.n_features_in_ = self.regressor_.n_features_in_
        return self

    def predict(self, X):
        """Predictions (m,) in $100k for ``X`` (m x d), clipped to the training target range."""
        check_is_fitted(self, "regressor_")
        return np.clip(self.regressor_.predict(X), self.y_min_, self.y_max_)


class SpatialNeighborTargets(TransformerMixin, BaseEstimator):
    """Append what the ``n_neighbors`` nearest *training* districts cost: target statistics of the neighbourhood.

    House prices are local: the districts around a district say more about its price than any
    global function of latitude and longitude. For each row, the ``n_neighbors`` nearest training
    districts by great-circle distance (from ``Latitude``/``Longitude`` in degrees; scikit-learn's
    :class:`~sklearn.neighbors.NearestNeighbors`, a k-d tree on the points of the unit sphere) give the columns
    :data:`NEIGHBOR_FEATURES`:

    - ``nbr_mean``: their targets' mean ($100k), weighted by ``1 / (distance_km + bandwidth_km)``
      (the bandwidth keeps co-located districts, distance 0, at a finite weight: 8,050 of the 20,640
      districts share their 0.01-degree location with an earlier one);
    - ``nbr_median``, ``nbr_std``: median and standard deviation of their targets ($100k);
    - ``nbr_dist_km``: distance to the farthest of them (km), a density measure (city or desert).

    No row sees its own target, and no row sees a test target (the scheme of scikit-learn's
    :class:`~sklearn.preprocessing.TargetEncoder`, "cross fitting"):

    - :meth:`fit_transform` (what :meth:`Pipeline.fit <sklearn.pipeline.Pipeline.fit>` calls on
      the training set) is out-of-fold: the rows are split into ``cv`` folds
      (:class:`~sklearn.model_selection.KFold`, shuffled with ``random_state``) and each fold's
      features come from the training rows of the other folds only;
    - :meth:`transform` (new rows: test set, predictions of a saved model) uses every training row
      given to :meth:`fit`; the neighbour index and the training targets are kept in the fitted
      transformer (``nn_``, ``y_``: 16,512 points and targets for the default split, ~1.2 MB
      with :func:`joblib.dump`), so a saved model needs the 8 raw feature columns only.

    A row with a missing (NaN) latitude or longitude gets NaN features (the models impute or route
    them); training rows with missing coordinates are left out of the index. If fewer training rows
    than ``n_neighbors`` are available, all of them are used.

    Sources: out-of-fold target statistics as in Micci-Barreca (2001), "A preprocessing scheme for
    high-cardinality categorical attributes", and scikit-learn's TargetEncoder; neighbour-target
    features in the spirit of retrieval-based tabular models (Gorishniy et al. 2024, "TabR:
    Tabular deep learning meets nearest neighbors", ICLR).

    :param n_neighbors: k, the number of nearest training districts, >= 1.
    :param cv: folds of the out-of-fold features in :meth:`fit_transform`, >= 2.
    :param bandwidth_km: softening of the inverse-distance weights of ``nbr_mean``, > 0 (km).
    :param random_state: seed of the fold shuffle.
    :raises ValueError: a parameter out of range, ``X`` without ``Latitude``/``Longitude`` columns,
        ``y`` not finite or of another length than ``X``, or ``X`` with other columns than at fit.
    """

    coordinates: tuple[str, str] = ("Latitude", "Longitude")

    def __init__(self, n_neighbors: int = P.spatial_neighbors, cv: int = 20, bandwidth_km: float = 1.0,
                 random_state: int = 0):
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.bandwidth_km = bandwidth_km
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y) -> SpatialNeighborTargets:
        """Index the training rows.

        :param X: n x d DataFrame with ``Latitude`` and ``Longitude`` in degrees; ``y``: n targets ($100k).
        """
        coords, y = self._check_fit(X, y)
        self.nn_, self.y_ = self._index(coords, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params) -> pd.DataFrame:
        """Fit on ``(X, y)`` and return ``X`` with :data:`NEIGHBOR_FEATURES` computed out-of-fold.

        Differs from ``fit(X, y).transform(X)`` (which would let each row see its own target).

        :returns: n x (d + 4) DataFrame, same index as ``X``.
        """
        coords, y = self._check_fit(X, y)
        features = np.full((len(X), len(NEIGHBOR_FEATURES)), np.nan)
        rows = np.flatnonzero(np.isfinite(coords).all(axis=1))
        if len(rows) >= 2:
            folds = KFold(min(self.cv, len(rows)), shuffle=True, random_state=self.random_state)
            for fit_part, held_out in folds.split(rows):
                nn, y_fit = self._index(coords[rows[fit_part]], y[rows[fit_part]])
                features[rows[held_out]] = self._features(nn, y_fit, coords[rows[held_out]])
        self.nn_, self.y_ = self._index(coords, y)
        return self._append(X, features)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` (n x d DataFrame, the columns seen in :meth:`fit`) with :data:`NEIGHBOR_FEATURES` from all training rows.

        :returns: n x (d + 4) DataFrame, same index as ``X``.
        """
        check_is_fitted(self, "nn_")
        coords = self._coordinates(X)
        if list(X.columns) != list(self.feature_names_in_):
            raise ValueError(f"X has columns {list(X.columns)}, but this transformer was fitted with "
                             f"{list(self.feature_names_in_)}")
        return self._append(X, self._features(self.nn_, self.y_, coords))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The input columns followed by :data:`NEIGHBOR_FEATURES`."""
        check_is_fitted(self, "nn_")
        return np.asarray([*self.feature_names_in_, *NEIGHBOR_FEATURES], dtype=object)

    # -- helpers ------------------------------------------------------------------------------

    def _coordinates(self, X) -> np.ndarray:
        missing = [c for c in self.coordinates if c not in getattr(X, "columns", ())]
        if missing:
            raise ValueError(f"SpatialNeighborTargets needs a DataFrame with the columns {', '.join(self.coordinates)} "
                             f"(degrees); missing: {', '.join(missing)}")
        return X[list(self.coordinates)].to_numpy(dtype=float)

    def _check_fit(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be an integer >= 1, got {self.n_neighbors!r}")
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ValueError(f"cv must be an integer >= 2, got {self.cv!r}")
        if not self.bandwidth_km > 0:
            raise ValueError(f"bandwidth_km must be > 0, got {self.bandwidth_km!r}")
        coords = self._coordinates(X)
        if y is None:
            raise ValueError("SpatialNeighborTargets needs the training targets y")
        y = np.asarray(y, dtype=float).ravel()
        if len(y) != len(coords) or not np.isfinite(y).all():
            raise ValueError(f"y must hold {len(coords)} finite targets, got {len(y)} with "
                             f"{int((~np.isfinite(y)).sum())} not finite")
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return coords, y

    @staticmethod
    def _unit_vectors(coords: np.ndarray) -> np.ndarray:
        """(latitude, longitude) in degrees, m x 2 -> points on the unit sphere, m x 3.

        The straight-line (chord) distance c between two such points grows with their great-circle
        distance 2 * asin(c / 2) (radians), so a Euclidean k-d tree finds the same nearest neighbours
        as the haversine metric, several times faster.
        """
        lat, lon = np.radians(coords[:, 0]), np.radians(coords[:, 1])
        return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])

    @classmethod
    def _index(cls, coords: np.ndarray, y: np.ndarray) -> tuple[NearestNeighbors | None, np.ndarray]:
        """A k-d tree over the rows with finite coordinates (on the unit sphere), and their targets."""
        keep = np.isfinite(coords).all(axis=1)
        if not keep.any():
            return None, y[keep]
        nn = NearestNeighbors(algorithm="kd_tree").fit(cls._unit_vectors(coords[keep]))
        return nn, y[keep]

    def _features(self, nn: NearestNeighbors | None, y_index: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """m x 4 features of the query rows ``coords`` (m x 2, degrees) from the indexed rows."""
        out = np.full((len(coords), len(NEIGHBOR_FEATURES)), np.nan)
        query = np.flatnonzero(np.isfinite(coords).all(axis=1))
        if nn is None or len(query) == 0:
            return out
        k = min(self.n_neighbors, len(y_index))
        chord, idx = nn.kneighbors(self._unit_vectors(coords[query]), n_neighbors=k)
        dist_km = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.minimum(chord / 2.0, 1.0))  # great-circle distance
        targets = y_index[idx]
        weights = 1.0 / (dist_km + self.bandwidth_km)
        out[query, 0] = (weights * targets).sum(axis=1) / weights.sum(axis=1)
        out[query, 1] = np.median(targets, axis=1)
        out[query, 2] = targets.std(axis=1)
        out[query, 3] = dist_km[:, -1]
        return out

    @staticmethod
    def _append(X: pd.DataFrame, features: np.ndarray) -> pd.DataFrame:
        return pd.concat([X, pd.DataFrame(features, columns=list(NEIGHBOR_FEATURES), index=X.index)], axis=1)


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
    degree: int = P.poly_degree,
    alpha: float = P.poly_alpha,
    clip_quantile: float = P.poly_clip_quantile,
    neighbors: int = P.spatial_neighbors,
) -> Pipeline:
    """Polynomial regression robust to outliers, all of it learned on the training set only.

    [neighbour targets] -> impute (median) -> clip to training quantiles -> log1p of
    :data:`SKEWED_FEATURES` (and ``nbr_dist_km``) -> scale -> polynomial features of ``degree``
    -> scale -> ridge (L2, ``alpha``), predictions clipped to the training target range.

    :param degree: polynomial degree, 1 to 4.
    :param alpha: ridge regularization strength, > 0.
    :param clip_quantile: features are clipped to [q, 1-q] training quantiles, q in [0, 0.5).
    :param neighbors: k of the :class:`SpatialNeighborTargets` step (first step, named
        ``"neighbors"``); 0 leaves the step out (the 8 raw features only, the classic model).
    :returns: an unfitted :class:`~sklearn.pipeline.Pipeline` taking the n x 8 raw features.
    """
    skewed = [*SKEWED_FEATURES, *(["nbr_dist_km"] if neighbors else [])]
    log_skewed = ColumnTransformer(
        [("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one"), skewed)],
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
    return Pipeline([*_neighbor_step(neighbors), ("features", features), ("ridge", ClippedRegressor(Ridge(alpha=alpha)))])


def _neighbor_step(neighbors: int, random_state: int = 0) -> list[tuple[str, SpatialNeighborTargets]]:
    """``[("neighbors", SpatialNeighborTargets(neighbors))]``, or ``[]`` for 0 (the features off).

    :raises ValueError: ``neighbors`` is negative or not an integer.
    """
    if isinstance(neighbors, bool) or not isinstance(neighbors, (int, np.integer)) or neighbors < 0:
        raise ValueError(f"neighbors must be an integer >= 0 (0: no neighbour features), got {neighbors!r}")
    return [("neighbors", SpatialNeighborTargets(int(neighbors), random_state=random_state))] if neighbors else []


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
    neighbors: int = P.spatial_neighbors,
) -> Pipeline:
    """XGBoost (:class:`xgboost.XGBRegressor`, ``tree_method="hist"``) on the features plus rotated coordinates
    and neighbour targets.

    ``n_estimators`` is an upper bound: :func:`fit_xgboost` stops when the validation RMSE has not
    improved for ``early_stopping_rounds`` rounds. Missing values are handled by XGBoost itself.

    :param neighbors: k of the :class:`SpatialNeighborTargets` step (named ``"neighbors"``, folds
        shuffled with ``random_state``); 0 leaves it out.
    :returns: an unfitted Pipeline taking the n x 8 raw features: :func:`add_rotated_coordinates`
        -> [:class:`SpatialNeighborTargets`] -> XGBRegressor (always the last step). The booster's
        own input is ``pipeline[:-1].transform(X)``: 8 + 5 rotated (+ 4 neighbour) columns.
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
    return Pipeline([("rotate", rotate), *_neighbor_step(neighbors, random_state), ("xgboost", booster)])


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


#: The builder of each model kind (:data:`~steps.params.MODEL_KINDS`); which
#: :class:`~steps.params.PipelineParameters` field feeds which builder keyword is declared with
#: each field (:func:`steps.params.estimator_keywords`).
BUILDERS = {"polynomial": build_polynomial, "xgboost": build_xgboost, "linear": build_linear,
            "random_forest": build_random_forest}


def _check_kind(kind: str) -> None:
    if kind not in BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")


def model_arguments(kind: str, params: PipelineParameters = P) -> dict:
    """The builder keyword arguments of model ``kind`` taken from ``params`` (see :func:`~steps.params.estimator_keywords`).

    :param kind: one of :data:`~steps.params.MODEL_KINDS`.
    :param params: the pipeline parameters (default: their defaults).
    :returns: e.g. ``{"degree": 3, "alpha": 1.0, "clip_quantile": 0.01, "neighbors": 16}`` for "polynomial".
    :raises ValueError: an unknown ``kind``.
    """
    _check_kind(kind)
    return {keyword: getattr(params, name) for keyword, name in estimator_keywords(kind).items()}


def train_model(kind: str, X_train: pd.DataFrame, y_train, **kwargs):
    """Build model ``kind`` with the builder keywords ``kwargs`` (e.g. :func:`model_arguments`) and fit it.

    XGBoost is fitted by :func:`fit_xgboost` (early stopping on a validation part of the training
    set, split with the model's ``random_state``); the others by their ``fit``.

    :param X_train: n_train x 8 raw features; ``y_train``: n_train targets in $100k.
    Logs one line on ``steps.models`` (INFO): kind, rows, fit time in seconds, and for XGBoost the
    boosting rounds kept (best iteration + 1) of ``n_estimators``.

    :returns: the fitted estimator (predicts from the 8 raw feature columns).
    :raises ValueError: an unknown ``kind``; :class:`TypeError`: a keyword the builder does not take.
    """
    _check_kind(kind)
    model = BUILDERS[kind](**kwargs)
    start = time.perf_counter()
    if kind == "xgboost":
        with _gpu_fallback_in_one_line(kwargs.get("device", P.xgb_device)):
            model = fit_xgboost(model, X_train, y_train, random_state=kwargs.get("random_state", P.random_state))
    else:
        model = model.fit(X_train, y_train)
    log.info("trained %s on %d rows in %.1f s%s", kind, len(X_train), time.perf_counter() - start, _rounds_note(model))
    return model


def _rounds_note(model) -> str:
    """For a fitted XGBoost pipeline: ``": 412 of 3000 boosting rounds kept"`` (best iteration + 1); else ``""``."""
    booster = model[-1] if isinstance(model, Pipeline) else model
    if not hasattr(booster, "get_booster"):
        return ""
    n_estimators = booster.get_params()["n_estimators"]
    best = getattr(booster, "best_iteration", None) if booster.get_params()["early_stopping_rounds"] else None
    if best is None:
        return f": all {n_estimators} boosting rounds (no early stopping)"
    return f": {best + 1} of {n_estimators} boosting rounds kept (early stopping)"


@functools.cache
def _say_cpu_fallback(device: str) -> None:
    """Once per process and device (the final model and its validation fit fall back alike)."""
    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):  # xgboost-cpu, as requirements.txt installs on Linux and Windows
        log.warning(f"xgb_device '{device}': this XGBoost has no CUDA support (xgboost-cpu), so it trained on the CPU; "
                    "for GPUs: pip uninstall -y xgboost-cpu && pip install 'xgboost>=2.1,<4'")
        return
    log.warning(f"xgb_device '{device}': no CUDA GPU is visible on this machine, so XGBoost trained on the CPU")


@contextmanager
def _gpu_fallback_in_one_line(device: str) -> Iterator[None]:
    """XGBoost asked for a CUDA ``device`` on a machine without a visible GPU: it falls back to the
    CPU and says so in several raw log lines with its source paths; say it once, plainly, instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    fallback = [w for w in caught if "GPU" in str(w.message) and ("CPU" in str(w.message))]
    if fallback:
        _say_cpu_fallback(device)
    for w in caught:
        if w not in fallback:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
