"""The models on the real data: quality floors on several splits, and the robustness pieces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from steps.models import (
    EARTH_RADIUS_KM,
    NEIGHBOR_FEATURES,
    ClippedRegressor,
    QuantileClipper,
    SpatialNeighborTargets,
    add_rotated_coordinates,
    build_linear,
    build_polynomial,
    build_random_forest,
    build_xgboost,
    fit_xgboost,
    model_arguments,
    train_model,
)
from steps.params import DEFAULTS as P
from steps.params import MODEL_KINDS, PipelineParameters
from steps.split import split_dataset


def _r2(model, split):
    X_train, X_test, y_train, y_test = split
    return r2_score(y_test, model.fit(X_train, y_train).predict(X_test))


def test_polynomial_default_beats_homework_on_default_split(split42):
    assert _r2(build_polynomial(P.poly_degree, P.poly_alpha, P.poly_clip_quantile, neighbors=0), split42) >= 0.74


@pytest.mark.parametrize("degree", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_polynomial_never_blows_up(housing, degree, seed):
    r2 = _r2(build_polynomial(degree=degree, neighbors=0), split_dataset(housing, 0.2, seed))
    assert r2 >= 0.70, f"degree {degree}, random_state {seed}: R^2 {r2:.4f}"


def test_polynomial_degree_4_holds(housing):
    assert _r2(build_polynomial(degree=4, neighbors=0), split_dataset(housing, 0.2, 3)) >= 0.70
    assert _r2(build_polynomial(degree=4), split_dataset(housing, 0.2, 3)) >= 0.83


def test_xgboost_reaches_published_level_with_early_stopping(split42):
    X_train, X_test, y_train, y_test = split42
    model = fit_xgboost(build_xgboost(n_jobs=2, random_state=42, neighbors=0), X_train, y_train, random_state=42)
    r2 = r2_score(y_test, model.predict(X_test))
    assert r2 >= 0.85, r2
    booster = model[-1]
    assert booster.get_params()["tree_method"] == "hist"
    assert 50 < booster.best_iteration < P.xgb_n_estimators - 1  # early stopping did stop it


def test_linear_and_random_forest_baselines(split42):
    assert 0.55 <= _r2(build_linear(), split42) <= 0.65  # the classic OLS figure on this data (~0.58)
    assert _r2(build_random_forest(n_estimators=60, n_jobs=2), split42) >= 0.78


def test_quantile_clipper_bounds_to_training_range():
    X = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0) * 2})
    clipper = QuantileClipper(0.05).fit(X)
    out = clipper.transform(pd.DataFrame({"a": [-1000.0, 50.0, 1e6], "b": [0.0, 1.0, 2.0]}))
    assert out[0, 0] == pytest.approx(np.quantile(np.arange(100.0), 0.05))
    assert out[2, 0] == pytest.approx(np.quantile(np.arange(100.0), 0.95))
    assert out[1, 0] == 50.0
    assert list(clipper.get_feature_names_out()) == ["a", "b"]


def test_clipped_regressor_stays_in_target_range():
    from sklearn.linear_model import LinearRegression

    X = np.arange(20.0).reshape(-1, 1)
    y = np.arange(20.0)
    model = ClippedRegressor(LinearRegression()).fit(X, y)
    assert model.predict(np.array([[1000.0], [-1000.0]])).tolist() == [19.0, 0.0]


def test_rotated_coordinates(housing):
    X = add_rotated_coordinates(housing.head(3).drop(columns="MedHouseVal"))
    assert X.shape == (3, 13)
    expected = housing["Longitude"].head(3) * np.cos(np.pi / 4) + housing["Latitude"].head(3) * np.sin(np.pi / 4)
    np.testing.assert_allclose(X["rot45"], expected)


# --------------------------------------------------------------------------------------------
# Neighbour-target features (issue 12)
# --------------------------------------------------------------------------------------------


def test_neighbor_features_of_new_rows_are_those_of_the_k_nearest_training_rows(split42):
    """transform() of a test row: statistics of the targets of its k nearest training districts (brute force)."""
    X_train, X_test, y_train, _ = split42
    out = SpatialNeighborTargets(n_neighbors=16).fit(X_train, y_train).transform(X_test.head(3))
    assert list(out.columns) == [*X_test.columns, *NEIGHBOR_FEATURES] and list(out.index) == list(X_test.index[:3])
    lat, lon = np.radians(X_train["Latitude"].to_numpy()), np.radians(X_train["Longitude"].to_numpy())
    for (_, row), (_, feats) in zip(X_test.head(3).iterrows(), out.iterrows(), strict=False):
        la, lo = np.radians(row["Latitude"]), np.radians(row["Longitude"])
        hav = np.sin((lat - la) / 2) ** 2 + np.cos(la) * np.cos(lat) * np.sin((lon - lo) / 2) ** 2
        km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(hav))
        nearest = np.argsort(km, kind="stable")[:16]
        assert km[nearest].max() < np.sort(km)[16]  # no tie at the k-th place: the set is well defined
        targets = y_train.to_numpy()[nearest]
        assert feats["nbr_median"] == pytest.approx(np.median(targets))
        assert feats["nbr_std"] == pytest.approx(targets.std())
        assert feats["nbr_dist_km"] == pytest.approx(km[nearest].max(), rel=1e-6)
        weights = 1 / (km[nearest] + 1.0)
        assert feats["nbr_mean"] == pytest.approx((weights * targets).sum() / weights.sum(), rel=1e-6)


def test_a_training_row_never_sees_its_own_target(split42):
    """Out-of-fold: changing one training row's target to an absurd value leaves that row's features unchanged,
    while rows of the other folds around it do see it (and so does a new row at the same place)."""
    X_train, _, y_train, _ = split42
    X, y = X_train.head(4000), y_train.head(4000).copy()
    before = SpatialNeighborTargets(n_neighbors=16).fit_transform(X, y)
    row = X.index[123]
    y.loc[row] = 1000.0  # unique and extreme: 200 times the census cap
    transformer = SpatialNeighborTargets(n_neighbors=16)
    after = transformer.fit_transform(X, y)
    pd.testing.assert_series_equal(before.loc[row], after.loc[row])
    assert (after["nbr_std"] != before["nbr_std"]).sum() > 0  # ... but neighbours in other folds see it
    at_same_place = transformer.transform(X.loc[[row]])  # a new row there sees every training row, this one too
    assert at_same_place["nbr_mean"].iloc[0] > 30


def test_duplicate_locations_see_each_other_never_themselves(housing):
    """Two training rows at the same spot, far from all others: in different folds each one's
    feature is exactly the other's target; in the same fold neither sees the other nor itself."""
    X = housing.drop(columns="MedHouseVal").head(200).copy()
    y = housing["MedHouseVal"].head(200).copy()
    X.loc[[0, 1], ["Latitude", "Longitude"]] = [[60.0, -150.0], [60.0, -150.0]]  # Alaska: no one else near
    y.loc[[0, 1]] = [0.5, 4.5]
    seen = set()
    for seed in range(10):
        out = SpatialNeighborTargets(n_neighbors=1, cv=2, random_state=seed).fit_transform(X, y)
        pair = out.loc[[0, 1], "nbr_mean"].tolist()
        if out.loc[0, "nbr_dist_km"] == 0.0:  # different folds
            assert pair == [4.5, 0.5]
            seen.add("apart")
        else:  # same fold: the nearest is someone in California, over 2,000 km away
            assert out.loc[[0, 1], "nbr_dist_km"].min() > 2000 and 0.5 not in pair and 4.5 not in pair
            seen.add("together")
    assert seen == {"apart", "together"}


@pytest.mark.parametrize("kind", ["polynomial", "xgboost"])
def test_permuting_test_targets_changes_no_prediction(housing, kind):
    """The test targets never reach a model: shuffle them in the data, split again, same predictions."""
    data = housing.head(6000)
    X_train, X_test, y_train, y_test = split_dataset(data, 0.2, 7)
    kwargs = model_arguments(kind, PipelineParameters(random_state=7, n_jobs=2, xgb_n_estimators=200))
    first = train_model(kind, X_train, y_train, **kwargs).predict(X_test)
    shuffled = data.copy()
    shuffled.loc[X_test.index, "MedHouseVal"] = np.random.default_rng(0).permutation(y_test.to_numpy())
    X_train2, X_test2, y_train2, y_test2 = split_dataset(shuffled, 0.2, 7)
    assert X_test2.index.equals(X_test.index) and not np.array_equal(y_test2, y_test)
    np.testing.assert_array_equal(train_model(kind, X_train2, y_train2, **kwargs).predict(X_test2), first)


def test_neighbor_features_handle_missing_coordinates_and_small_data(housing):
    X = housing.drop(columns="MedHouseVal").head(30).copy()
    y = housing["MedHouseVal"].head(30)
    X.loc[[2, 5], "Latitude"] = np.nan
    t = SpatialNeighborTargets(n_neighbors=50)  # more than there are rows: all of them
    out = t.fit_transform(X, y)
    assert out.loc[[2, 5], list(NEIGHBOR_FEATURES)].isna().all().all()
    assert out.drop(index=[2, 5])[list(NEIGHBOR_FEATURES)].notna().all().all()
    new = t.transform(X.head(3))
    assert new.loc[2, list(NEIGHBOR_FEATURES)].isna().all() and new.loc[[0, 1], "nbr_median"].notna().all()
    assert new.loc[0, "nbr_median"] == pytest.approx(y.drop(index=[2, 5]).median())  # all 28 indexed rows
    model = build_polynomial(neighbors=50).fit(X, y)  # NaN features are imputed like any missing value
    assert np.isfinite(model.predict(X)).all()


@pytest.mark.parametrize("bad, match", [
    ({"n_neighbors": 0}, "n_neighbors must be an integer >= 1"),
    ({"cv": 1}, "cv must be an integer >= 2"),
    ({"bandwidth_km": 0.0}, "bandwidth_km must be > 0"),
])
def test_neighbor_features_refuse_bad_parameters(housing, bad, match):
    X, y = housing.drop(columns="MedHouseVal").head(50), housing["MedHouseVal"].head(50)
    with pytest.raises(ValueError, match=match):
        SpatialNeighborTargets(**bad).fit(X, y)


def test_neighbor_features_refuse_bad_input(housing):
    X, y = housing.drop(columns="MedHouseVal").head(50), housing["MedHouseVal"].head(50)
    with pytest.raises(ValueError, match="needs a DataFrame with the columns Latitude, Longitude"):
        SpatialNeighborTargets().fit(X.drop(columns="Longitude"), y)
    with pytest.raises(ValueError, match="y must hold 50 finite targets"):
        SpatialNeighborTargets().fit(X, y.head(49))
    t = SpatialNeighborTargets().fit(X, y)
    with pytest.raises(ValueError, match="fitted with"):
        t.transform(X[list(reversed(X.columns))])
    with pytest.raises(ValueError, match="neighbors must be an integer >= 0"):
        build_xgboost(neighbors=-1)


def test_neighbor_features_are_on_by_default_and_one_flag_turns_them_off():
    assert P.spatial_neighbors > 0
    for build in (build_polynomial, build_xgboost):
        assert build().named_steps["neighbors"].n_neighbors == P.spatial_neighbors
        assert "neighbors" not in build(neighbors=0).named_steps
    assert [name for name, _ in build_xgboost(neighbors=0).steps] == ["rotate", "xgboost"]  # the classic model
    assert model_arguments("polynomial", PipelineParameters(spatial_neighbors=0))["neighbors"] == 0


def test_model_arguments_map_every_builder_keyword_to_a_parameter():
    import inspect

    from steps.models import BUILDERS
    from steps.params import estimator_keywords

    fields = set(PipelineParameters.__dataclass_fields__)
    assert set(BUILDERS) == set(MODEL_KINDS)  # every model kind has a builder (checked here, not at import)
    for kind in MODEL_KINDS:
        mapping = estimator_keywords(kind)
        assert set(mapping.values()) <= fields, kind
        assert set(mapping) == set(inspect.signature(BUILDERS[kind]).parameters), kind  # every keyword, no other
    params = PipelineParameters(poly_degree=2, spatial_neighbors=8, rf_n_estimators=7, random_state=5)
    assert model_arguments("polynomial", params) == {"degree": 2, "alpha": 1.0, "clip_quantile": 0.01, "neighbors": 8}
    assert model_arguments("random_forest", params) == {"n_estimators": 7, "n_jobs": -1, "random_state": 5}
    assert model_arguments("linear", params) == {}
    with pytest.raises(ValueError, match="unknown model kind 'svm'"):
        model_arguments("svm", params)
    with pytest.raises(ValueError, match="unknown model kind"):
        train_model("svm", None, None)


def test_saved_models_predict_from_the_raw_columns_alone(split42, tmp_path):
    """joblib round trip: the neighbour index travels inside the estimator; 8 raw columns in, $100k out."""
    import joblib

    X_train, X_test, y_train, _ = split42
    model = train_model("polynomial", X_train, y_train, **model_arguments("polynomial", P))
    joblib.dump(model, tmp_path / "polynomial.joblib")
    loaded = joblib.load(tmp_path / "polynomial.joblib")
    np.testing.assert_array_equal(loaded.predict(X_test.head(100)), model.predict(X_test.head(100)))
    assert list(loaded.feature_names_in_) == list(X_test.columns) and len(X_test.columns) == 8
    assert (tmp_path / "polynomial.joblib").stat().st_size < 2_000_000  # index + targets of 16,512 rows: < 1 MB


@pytest.mark.parametrize("seed", [1, 6])  # the two hardest of the benchmark's seeds 0..9
def test_neighbor_features_lift_both_models_to_their_floors(housing, seed):
    """Issue 12's floors on the hardest splits: polynomial >= 0.84, XGBoost >= 0.865 (without: ~0.75 and ~0.86)."""
    X_train, X_test, y_train, y_test = split_dataset(housing, 0.2, seed)
    params = PipelineParameters(random_state=seed, n_jobs=2)
    poly = train_model("polynomial", X_train, y_train, **model_arguments("polynomial", params))
    assert r2_score(y_test, poly.predict(X_test)) >= 0.84
    xgb = train_model("xgboost", X_train, y_train, **model_arguments("xgboost", params))
    assert r2_score(y_test, xgb.predict(X_test)) >= 0.865
    booster_input = xgb[:-1].transform(X_test)  # the contract of models/xgboost.json
    assert list(booster_input.columns[-4:]) == list(NEIGHBOR_FEATURES) and booster_input.shape[1] == 8 + 5 + 4
