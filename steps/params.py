"""The pipeline parameters: the one place where each is named, typed, documented and defaulted.

:class:`PipelineParameters` is read by the command line (one ``--flag`` per field) and by the
ClearML pipeline function (one argument per field, shown in the run's ``Args``). Its
:meth:`~PipelineParameters.validate` checks every value before any step runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The data set shipped with the project (data/README.md): the default of --data, an absolute path.
SHIPPED_DATA = str(Path(__file__).resolve().parent.parent / "data" / "cal_housing.csv")
#: The --data value that downloads the data set through scikit-learn instead.
SKLEARN_DATA = "sklearn"

#: The models the pipeline can train, in the order they are reported.
MODEL_KINDS: tuple[str, ...] = ("polynomial", "xgboost", "linear", "random_forest")


#: The Python type of each field's type name (the dataclass stores names: ``from __future__ import annotations``).
PYTHON_TYPES: dict[str, type] = {"str": str, "int": int, "float": float}


class ParameterError(ValueError):
    """A pipeline parameter is out of its allowed range; the message names the range."""


def _p(default: Any, help: str, flag: str = "") -> Any:
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class PipelineParameters:
    """Every parameter of the pipeline, with its default. Units: target in $100k."""

    data_path: str = _p(SHIPPED_DATA, "CSV in scikit-learn's or StatLib's layout, or "
                        f"'{SKLEARN_DATA}' to download it through scikit-learn", "--data")
    dataset_id: str = _p("", "id of a ClearML dataset version holding the CSV (see register-data); when set, "
                         "it replaces --data: the load step trains on a local copy of that version")
    output_dir: str = _p("", "folder for metrics.csv, plots and models; empty: a new folder under runs/")
    models: str = _p("polynomial,xgboost", f"comma-separated models to train, of: {','.join(MODEL_KINDS)}")
    test_size: float = _p(0.2, "fraction of rows in the test set, in (0, 1)")
    random_state: int = _p(42, "seed of the train/test split and of every model")
    poly_degree: int = _p(3, "polynomial degree, 1 to 4")
    poly_alpha: float = _p(1.0, "ridge regularization of the polynomial regression, > 0")
    poly_clip_quantile: float = _p(0.01, "features clipped to [q, 1-q] training quantiles, q in [0, 0.5)")
    xgb_n_estimators: int = _p(3000, "XGBoost boosting rounds (upper bound with early stopping), >= 1")
    xgb_max_depth: int = _p(6, "XGBoost tree depth, 1 to 20")
    xgb_learning_rate: float = _p(0.05, "XGBoost learning rate (eta), in (0, 1]")
    xgb_subsample: float = _p(0.8, "XGBoost row subsample per tree, in (0, 1]")
    xgb_colsample_bytree: float = _p(0.8, "XGBoost feature subsample per tree, in (0, 1]")
    xgb_min_child_weight: float = _p(1.0, "XGBoost minimum hessian weight per leaf, >= 0")
    xgb_early_stopping_rounds: int = _p(100, "stop after this many rounds without validation gain, 0 = off")
    xgb_device: str = _p("cpu", "XGBoost device: cpu, cuda or cuda:<n>")
    spatial_neighbors: int = _p(
        16, "k nearest training districts (by latitude/longitude) whose targets become features of the "
        "polynomial and XGBoost models, 0 to 1000; 0 turns these neighbour features off")
    rf_n_estimators: int = _p(200, "random forest trees, >= 1")
    n_jobs: int = _p(-1, "CPU threads for XGBoost and the random forest, -1 = all cores, else 1 to 1024")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PipelineParameters:
        """Build from ``{name: value}``, casting each value to its field's type.

        Values edited in the ClearML web UI may arrive as strings ("0.3"); they are cast to the
        field's type (float 0.3) here, so a run never computes with strings.

        :raises ParameterError: an unknown name, or a value that is not of its type (e.g. "abc" for an int).
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        cast = {}
        for name, value in values.items():
            kind = PYTHON_TYPES[fields[name].type]
            if isinstance(value, kind) and not isinstance(value, bool):
                cast[name] = value
                continue
            try:
                if kind is int and isinstance(value, float) and value.is_integer():
                    cast[name] = int(value)
                else:
                    cast[name] = kind(value) if kind is not int else int(str(value).strip())
            except (TypeError, ValueError):
                raise ParameterError(f"{name} must be a {fields[name].type}, got {value!r}") from None
        return cls(**cast)

    def model_list(self) -> list[str]:
        """The names in :attr:`models`, in the order given."""
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def validate(self) -> PipelineParameters:
        """Check every value; return ``self``.

        :raises ParameterError: naming the parameter, its value and the allowed range.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                continue
            expected = PYTHON_TYPES[f.type]
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ParameterError(f"{f.name} must be a {f.type}, got {value!r}")

        def check(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ParameterError(f"{name} = {getattr(self, name)!r} is out of range: allowed {allowed}")

        check(0.0 < self.test_size < 1.0, "test_size", "0 < test_size < 1, e.g. 0.2")
        check(0 <= self.random_state < 2**32, "random_state", "0 to 4294967295")
        check(1 <= self.poly_degree <= 4, "poly_degree", "1 to 4")
        check(self.poly_alpha > 0, "poly_alpha", "> 0, e.g. 1.0")
        check(0.0 <= self.poly_clip_quantile < 0.5, "poly_clip_quantile", "0 <= q < 0.5, e.g. 0.01")
        check(1 <= self.xgb_n_estimators <= 1_000_000, "xgb_n_estimators", "1 to 1000000")
        check(1 <= self.xgb_max_depth <= 20, "xgb_max_depth", "1 to 20")
        check(0.0 < self.xgb_learning_rate <= 1.0, "xgb_learning_rate", "0 < learning_rate <= 1, e.g. 0.05")
        check(0.0 < self.xgb_subsample <= 1.0, "xgb_subsample", "0 < subsample <= 1")
        check(0.0 < self.xgb_colsample_bytree <= 1.0, "xgb_colsample_bytree", "0 < colsample_bytree <= 1")
        check(self.xgb_min_child_weight >= 0, "xgb_min_child_weight", ">= 0")
        check(self.xgb_early_stopping_rounds >= 0, "xgb_early_stopping_rounds", ">= 0 (0 turns it off)")
        check(bool(re.fullmatch(r"cpu|cuda(:\d{1,3})?", self.xgb_device)), "xgb_device", "cpu, cuda or cuda:<n>")
        check(not self.dataset_id or bool(re.fullmatch(r"[0-9a-f]{32}", self.dataset_id)), "dataset_id",
              "empty, or a ClearML dataset id: 32 hexadecimal digits (printed by register-data)")
        check(0 <= self.spatial_neighbors <= 1000, "spatial_neighbors", "0 (off) to 1000, e.g. 16")
        check(1 <= self.rf_n_estimators <= 10_000, "rf_n_estimators", "1 to 10000")
        check(self.n_jobs == -1 or 1 <= self.n_jobs <= 1024, "n_jobs", "-1 (all cores) or 1 to 1024")
        for f in dataclasses.fields(self):  # inf passes some ranges above (e.g. > 0), never a model
            value = getattr(self, f.name)
            if f.type == "float" and not math.isfinite(value):
                raise ParameterError(f"{f.name} = {value!r} is not a finite number; give a number such as {f.default}")
        chosen = self.model_list()
        unknown = [m for m in chosen if m not in MODEL_KINDS]
        if not chosen:
            raise ParameterError(
                f"models = {self.models!r} names no model; allowed: a comma-separated list of "
                f"{','.join(MODEL_KINDS)}"
            )
        if unknown:
            raise ParameterError(
                f"models = {self.models!r}: unknown model name(s) {','.join(unknown)}; "
                f"allowed: a comma-separated list of {','.join(MODEL_KINDS)}"
            )
        if len(set(chosen)) != len(chosen):
            raise ParameterError(f"models = {self.models!r} names a model twice; name each once")
        return self


DEFAULTS = PipelineParameters()


def parameter_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`PipelineParameters` (name, type name, default, ``metadata['help']``)."""
    return dataclasses.fields(PipelineParameters)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a parameter field: ``metadata['flag']`` or ``--name-with-dashes``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")
