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
        ({"xgb_learning_rate": 0.0}, "0 < learning_rate <= 1"),
        ({"xgb_learning_rate": -0.1}, "0 < learning_rate <= 1"),
        ({"rf_n_estimators": -3}, "1 to 10000"),
        ({"rf_n_estimators": 10**20}, "1 to 10000"),
        ({"poly_alpha": float("inf")}, "not a finite number"),
        ({"xgb_min_child_weight": float("inf")}, "not a finite number"),
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
