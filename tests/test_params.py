"""The parameter table: ranges, casting of values edited in the web UI, one definition of each default."""

from __future__ import annotations

import dataclasses

import pytest

from steps.params import DEFAULTS, ParameterError, PipelineParameters, parameter_fields


def test_defaults_are_valid():
    assert DEFAULTS.validate() is DEFAULTS
    assert DEFAULTS.model_list() == ["polynomial", "xgboost"]


@pytest.mark.parametrize(
    "change, allowed",
    [
        ({"test_size": 0.0}, "0 < test_size < 1"),
        ({"test_size": 1.5}, "0 < test_size < 1"),
        ({"poly_degree": 5}, "1 to 4"),
        ({"poly_degree": 0}, "1 to 4"),
        ({"xgb_n_estimators": 0}, "1 to 1000000"),
        ({"xgb_learning_rate": 0.0}, "1e-6 <= learning_rate <= 1"),
        ({"xgb_learning_rate": -0.1}, "1e-6 <= learning_rate <= 1"),
        ({"rf_n_estimators": -3}, "1 to 10000"),
        ({"rf_n_estimators": 10**20}, "1 to 10000"),
        ({"poly_alpha": float("inf")}, "not a finite number"),
        ({"xgb_min_child_weight": float("inf")}, "0 to 1e6"),
        ({"models": "polynomial,svm"}, "polynomial,xgboost,linear,random_forest"),
        ({"models": ""}, "polynomial,xgboost,linear,random_forest"),
        ({"xgb_device": "tpu"}, "cpu, cuda or cuda:<n>"),
        ({"n_jobs": 0}, "-1 (all cores) or 1 to 1024"),
        ({"n_jobs": 100000}, "-1 (all cores) or 1 to 1024"),
    ],
)
def test_out_of_range_values_name_the_allowed_range(change, allowed):
    with pytest.raises(ParameterError) as error:
        dataclasses.replace(DEFAULTS, **change).validate()
    message = str(error.value)
    assert allowed in message and next(iter(change)) in message and "\n" not in message


def test_values_edited_in_the_ui_are_cast_to_their_types():
    params = PipelineParameters.from_mapping({"test_size": "0.3", "poly_degree": "2", "random_state": 7.0,
                                              "models": "linear"})
    assert params.test_size == 0.3 and isinstance(params.test_size, float)
    assert params.poly_degree == 2 and isinstance(params.poly_degree, int)
    assert params.random_state == 7 and isinstance(params.random_state, int)
    with pytest.raises(ParameterError, match="poly_degree must be a int"):
        PipelineParameters.from_mapping({"poly_degree": "two"})
    with pytest.raises(ParameterError, match="unknown parameter"):
        PipelineParameters.from_mapping({"degree": 2})


def test_every_field_has_help_and_a_typed_default():
    for f in parameter_fields():
        assert f.metadata["help"], f.name
        assert type(f.default).__name__ == f.type, f.name


def test_each_range_is_declared_once_in_its_field():
    """validate() reads the field's low/high: a value just inside passes, just outside fails, with the field's words."""
    from steps.params import in_range

    fields = {f.name: f for f in parameter_fields()}
    assert fields["poly_degree"].metadata["low"] == 1 and fields["poly_degree"].metadata["high"] == 4
    assert fields["poly_degree"].metadata["allowed"] == "1 to 4"
    assert "allowed 1 to 4" in fields["poly_degree"].metadata["help"]
    for f in parameter_fields():
        assert in_range(f, f.default), f.name
    assert not in_range(fields["n_jobs"], 0) and in_range(fields["n_jobs"], -1) and in_range(fields["n_jobs"], 1024)
    assert not in_range(fields["test_size"], float("nan"))


def test_estimator_keywords_are_declared_with_the_parameters():
    from steps.params import MODEL_KINDS, estimator_keywords

    assert estimator_keywords("polynomial") == {"degree": "poly_degree", "alpha": "poly_alpha",
                                                "clip_quantile": "poly_clip_quantile", "neighbors": "spatial_neighbors"}
    assert estimator_keywords("linear") == {}
    assert estimator_keywords("xgboost")["n_estimators"] == "xgb_n_estimators"
    assert estimator_keywords("random_forest")["n_estimators"] == "rf_n_estimators"
    for f in parameter_fields():
        assert set(f.metadata["models"]) <= set(MODEL_KINDS), f.name
    with pytest.raises(ValueError, match="unknown model kind 'svm'"):
        estimator_keywords("svm")


def test_from_raw_reads_the_text_of_the_web_ui():
    params = PipelineParameters.from_raw({"xgb_max_depth": " 8 ", "test_size": "0.25", "models": "linear",
                                          "output_dir": "", "not_a_parameter": "x"})
    assert params.xgb_max_depth == 8 and isinstance(params.xgb_max_depth, int)
    assert params.test_size == 0.25 and isinstance(params.test_size, float)
    assert params.models == "linear" and params.output_dir == ""
    assert params.validate() is params
    assert PipelineParameters.from_raw({"poly_alpha": "2"}).poly_alpha == 2.0
    assert PipelineParameters.from_raw({}) == DEFAULTS


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("xgb_max_depth", "abc", "xgb_max_depth = 'abc' is not an int: allowed 1 to 20"),
        ("xgb_max_depth", "", "xgb_max_depth = '' is not an int: allowed 1 to 20"),
        ("poly_degree", "3.5", "poly_degree = '3.5' is not an int: allowed 1 to 4"),
        ("poly_degree", "1e2", "poly_degree = '1e2' is not an int: allowed 1 to 4"),
        ("xgb_learning_rate", "fast", "xgb_learning_rate = 'fast' is not a number: allowed 1e-6 <= learning_rate <= 1"),
        ("xgb_learning_rate", "", "xgb_learning_rate = '' is not a number"),
        ("poly_alpha", "nan", "poly_alpha = 'nan' is not a finite number: allowed > 0"),
        ("test_size", "inf", "test_size = 'inf' is not a finite number: allowed 0 < test_size < 1"),
        ("n_jobs", "-1.0", "n_jobs = '-1.0' is not an int: allowed -1 (all cores) or 1 to 1024"),
    ],
)
def test_from_raw_refuses_text_not_of_the_type_in_one_line(name, text, message):
    with pytest.raises(ParameterError) as error:
        PipelineParameters.from_raw({name: text})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_from_raw_then_validate_names_the_range():
    with pytest.raises(ParameterError, match=r"^poly_degree = 9 is out of range: allowed 1 to 4$"):
        PipelineParameters.from_raw({"poly_degree": "9"}).validate()


def test_search_space_lies_inside_the_allowed_ranges():
    from steps.params import search_space

    space = search_space()
    assert set(space) == {"xgb_max_depth", "xgb_learning_rate", "xgb_subsample", "xgb_colsample_bytree",
                          "xgb_min_child_weight", "spatial_neighbors", "poly_degree", "poly_alpha"}
    assert {name for name, (_, _, scale, _) in space.items() if scale == "log"} == {
        "xgb_learning_rate", "poly_alpha", "xgb_min_child_weight"}
    fields = {f.name: f for f in parameter_fields()}
    for name, (low, high, scale, kind) in space.items():
        assert kind is type(fields[name].default) and isinstance(low, kind) and isinstance(high, kind), name
        assert low < high and (scale == "linear" or low > 0), name
        for value in (low, high):  # both ends are valid parameter values
            dataclasses.replace(DEFAULTS, **{name: value}).validate()


def test_search_override_is_typed_and_checked():
    from steps.params import parse_search_override

    assert parse_search_override("xgb_max_depth=3:10") == ("xgb_max_depth", 3, 10)
    name, low, high = parse_search_override(" xgb_learning_rate = 0.02 : 0.2 ")
    assert (name, low, high) == ("xgb_learning_rate", 0.02, 0.2) and isinstance(low, float)
    for text, message in [
        ("xgb_max_depth=3:30", "xgb_max_depth = 30 is out of range: allowed 1 to 20"),
        ("xgb_max_depth=a:10", "xgb_max_depth = 'a' is not an int: allowed 1 to 20"),
        ("xgb_max_depth=3.5:10", "is not an int"),
        ("xgb_max_depth=8:3", "low 8 must be below high 3"),
        ("xgb_max_depth", "is not name=low:high"),
        ("xgb_max_depth=3", "is not name=low:high"),
        ("xgb_n_estimators=10:100", "is not a tuned parameter; allowed: "),
        ("xgb_min_child_weight=0:5", "log scale, so low must be > 0"),
        ("poly_alpha=0.1:nan", "is not a finite number"),
    ]:
        with pytest.raises(ParameterError) as error:
            parse_search_override(text)
        assert message in str(error.value) and "\n" not in str(error.value), text
