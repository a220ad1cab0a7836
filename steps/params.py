"""The pipeline parameters: the one place where each is named, typed, documented, defaulted and bounded.

:class:`PipelineParameters` is read by the command line (one ``--flag`` per field) and by the
ClearML pipeline function (one argument per field, shown in the run's ``Args``). Each field is
declared once, with its metadata (see :func:`_p`): help text, allowed range (``low``/``high``, or a
``pattern`` for text) and the sentence naming it, which model kinds take it under which estimator
keyword (``models``), and the default hyperparameter search range (``search``).
:meth:`~PipelineParameters.validate` checks every value before any step runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from steps.errors import BadInput

#: The data set shipped with the project (data/README.md): the default of --data, an absolute path.
SHIPPED_DATA = str(Path(__file__).resolve().parent.parent / "data" / "cal_housing.csv")
#: The --data value that downloads the data set through scikit-learn instead.
SKLEARN_DATA = "sklearn"

#: The models the pipeline can train, in the order they are reported.
MODEL_KINDS: tuple[str, ...] = ("polynomial", "xgboost", "linear", "random_forest")


#: The Python type of each field's type name (the dataclass stores names: ``from __future__ import annotations``).
PYTHON_TYPES: dict[str, type] = {"str": str, "int": int, "float": float}

#: Scales of a search range: sampled uniformly, or uniformly in log space.
SEARCH_SCALES: tuple[str, ...] = ("linear", "log")


class ParameterError(BadInput):
    """A pipeline parameter is out of its allowed range, or not of its type; the one-line message names the range."""


def _p(
    default: Any,
    help: str,
    flag: str = "",
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    open_low: bool = False,
    open_high: bool = False,
    also: tuple = (),
    pattern: str = "",
    allowed: str = "",
    models: Optional[Mapping[str, str]] = None,
    search: Optional[tuple[float, float, str]] = None,
) -> Any:
    """A parameter field; its metadata holds everything about it.

    :param help: what it is (the ``--help`` text); the allowed range is appended when there is one.
    :param low, high: the allowed range (``None``: unbounded on that side); ``open_low``/``open_high``
        exclude the bound itself. ``also``: values allowed besides the range (e.g. -1 of ``n_jobs``).
    :param pattern: for a text field, the regular expression its whole value must match.
    :param allowed: the range in words, as error messages give it (default ``"<low> to <high>"``).
    :param models: ``{model kind: estimator keyword}`` of the models that take this parameter.
    :param search: ``(low, high, "linear"|"log")``: the default hyperparameter search range.
    """
    if not allowed and low is not None and high is not None:
        allowed = f"{low:g} to {high:g}" if isinstance(low, float) or isinstance(high, float) else f"{low} to {high}"
    metadata = {"help": f"{help}; allowed {allowed}" if allowed else help, "flag": flag, "low": low, "high": high,
                "open_low": open_low, "open_high": open_high, "also": also, "pattern": pattern,
                "allowed": allowed, "models": dict(models or {}), "search": search}
    return field(default=default, metadata=metadata)


_POLY = "polynomial"
_XGB = "xgboost"
_RF = "random_forest"


@dataclass(frozen=True)
class PipelineParameters:
    """Every parameter of the pipeline, with its default. Units: target in $100k."""

    data_path: str = _p(SHIPPED_DATA, "CSV (or Parquet) in scikit-learn's or StatLib's layout, or "
                        f"'{SKLEARN_DATA}' to download it through scikit-learn", "--data",
                        pattern=r"(?s).*\S.*", allowed=f"a CSV or Parquet file's path (--data PATH), or '{SKLEARN_DATA}'")
    dataset_id: str = _p("", "id of a ClearML dataset version holding the CSV (see register-data); when set, "
                         "it replaces --data: the load step trains on a local copy of that version",
                         pattern=r"|[0-9a-f]{32}",
                         allowed="empty, or a ClearML dataset id: 32 hexadecimal digits (printed by register-data)")
    output_dir: str = _p("", "folder for metrics.csv, plots and models; empty: a new folder under runs/")
    models: str = _p("polynomial,xgboost", f"comma-separated models to train, of: {','.join(MODEL_KINDS)}")
    test_size: float = _p(0.2, "fraction of rows in the test set", low=0.0, high=1.0, open_low=True,
                          open_high=True, allowed="0 < test_size < 1, e.g. 0.2")
    random_state: int = _p(42, "seed of the train/test split and of every model", low=0, high=2**32 - 1,
                           models={_XGB: "random_state", _RF: "random_state"})
    poly_degree: int = _p(3, "polynomial degree", low=1, high=4, models={_POLY: "degree"}, search=(2, 4, "linear"))
    poly_alpha: float = _p(1.0, "ridge regularization of the polynomial regression", low=0.0, open_low=True,
                           allowed="> 0, e.g. 1.0", models={_POLY: "alpha"}, search=(1e-3, 100.0, "log"))
    poly_clip_quantile: float = _p(0.01, "features clipped to [q, 1-q] training quantiles", low=0.0, high=0.5,
                                   open_high=True, allowed="0 <= q < 0.5, e.g. 0.01", models={_POLY: "clip_quantile"})
    xgb_n_estimators: int = _p(3000, "XGBoost boosting rounds (upper bound with early stopping)", low=1,
                               high=1_000_000, models={_XGB: "n_estimators"})
    xgb_max_depth: int = _p(6, "XGBoost tree depth", low=1, high=20, models={_XGB: "max_depth"},
                            search=(3, 10, "linear"))
    # XGBoost keeps these as 32-bit floats: a smaller value becomes 0 (or a larger one inf) and is refused there
    xgb_learning_rate: float = _p(0.05, "XGBoost learning rate (eta)", low=1e-6, high=1.0,
                                  allowed="1e-6 <= learning_rate <= 1, e.g. 0.05", models={_XGB: "learning_rate"},
                                  search=(0.01, 0.3, "log"))
    xgb_subsample: float = _p(0.8, "XGBoost row subsample per tree", low=1e-6, high=1.0,
                              allowed="1e-6 <= subsample <= 1", models={_XGB: "subsample"}, search=(0.5, 1.0, "linear"))
    xgb_colsample_bytree: float = _p(0.8, "XGBoost feature subsample per tree", low=1e-6, high=1.0,
                                     allowed="1e-6 <= colsample_bytree <= 1", models={_XGB: "colsample_bytree"},
                                     search=(0.5, 1.0, "linear"))
    xgb_min_child_weight: float = _p(1.0, "XGBoost minimum hessian weight per leaf", low=0.0, high=1e6,
                                     allowed="0 to 1e6",
                                     models={_XGB: "min_child_weight"}, search=(0.1, 20.0, "log"))
    xgb_early_stopping_rounds: int = _p(100, "stop after this many rounds without validation gain", low=0,
                                        allowed=">= 0 (0 turns it off)", models={_XGB: "early_stopping_rounds"})
    xgb_device: str = _p("cpu", "XGBoost device", pattern=r"cpu|cuda(:\d{1,3})?", allowed="cpu, cuda or cuda:<n>",
                         models={_XGB: "device"})
    spatial_neighbors: int = _p(
        16, "k nearest training districts (by latitude/longitude) whose targets become features of the "
        "polynomial and XGBoost models; 0 turns these neighbour features off", low=0, high=1000,
        allowed="0 (off) to 1000, e.g. 16", models={_POLY: "neighbors", _XGB: "neighbors"}, search=(4, 64, "linear"))
    rf_n_estimators: int = _p(200, "random forest trees", low=1, high=10_000, models={_RF: "n_estimators"})
    n_jobs: int = _p(-1, "CPU threads for XGBoost and the random forest", low=1, high=1024, also=(-1,),
                     allowed="-1 (all cores) or 1 to 1024", models={_XGB: "n_jobs", _RF: "n_jobs"})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PipelineParameters:
        """Build from ``{name: value}``, casting each value to its field's type (not validated).

        Values edited in the ClearML web UI may arrive as strings ("0.3"); they are cast to the
        field's type (float 0.3) here, so a run never computes with strings.

        :raises ParameterError: an unknown name, or a value that is not of its type (e.g. "abc" for an int).
        """
        fields = _fields()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        return cls(**{name: _cast(fields[name], value) for name, value in values.items()})

    @classmethod
    def from_raw(cls, values: Mapping[str, str]) -> PipelineParameters:
        """Build from the raw text typed into ClearML's web UI (every value a string); not validated.

        Names that are not parameters are ignored (pass the ``Args`` section). An int must be written
        as an integer (``"3"``, not ``"3.5"`` nor ``""``), a float as a finite number (not ``"nan"``).

        :raises ParameterError: one line naming the parameter, its text and what is allowed, e.g.
            ``xgb_max_depth = 'abc' is not an int: allowed 1 to 20``.
        """
        fields = _fields()
        return cls(**{name: _parse_text(fields[name], text) for name, text in values.items() if name in fields})

    def model_list(self) -> list[str]:
        """The names in :attr:`models`, in the order given."""
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def validate(self) -> PipelineParameters:
        """Check every value (type, allowed range of its field, models); return ``self``.

        :raises ParameterError: naming the parameter, its value and the allowed range.
        """
        fields = dataclasses.fields(self)
        for f in fields:
            _check_type(f, getattr(self, f.name))
        for f in fields:
            value = getattr(self, f.name)
            if not in_range(f, value):
                raise ParameterError(f"{f.name} = {value!r} is out of range: allowed {f.metadata['allowed']}")
        for f in fields:  # inf passes some ranges above (e.g. > 0), never a model
            value = getattr(self, f.name)
            if f.type == "float" and not math.isfinite(value):
                raise ParameterError(f"{f.name} = {value!r} is not a finite number; give a number such as {f.default}")
        self._check_models()
        return self

    def _check_models(self) -> None:
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


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(PipelineParameters)}


def _cast(f: dataclasses.Field, value: Any) -> Any:
    """``value`` as the field's type (``"0.3"`` -> 0.3, ``7.0`` -> 7 for an int field)."""
    kind = PYTHON_TYPES[f.type]
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    try:
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        return kind(value) if kind is not int else int(str(value).strip())
    except (TypeError, ValueError):
        raise ParameterError(f"{f.name} must be a {f.type}, got {value!r}") from None


_INT_TEXT = re.compile(r"[+-]?\d+")


def _parse_text(f: dataclasses.Field, text: str) -> Any:
    """The typed value of the text ``text`` of field ``f``; ParameterError if it is not of the field's type."""
    kind = PYTHON_TYPES[f.type]
    if kind is str:
        return str(text)
    stripped = str(text).strip()
    allowed = f.metadata["allowed"]
    tail = f": allowed {allowed}" if allowed else ""
    if kind is int:
        if not _INT_TEXT.fullmatch(stripped):
            raise ParameterError(f"{f.name} = {text!r} is not an int{tail or '; give a whole number'}")
        return int(stripped)
    try:
        number = float(stripped)
    except ValueError:
        raise ParameterError(f"{f.name} = {text!r} is not a number{tail}") from None
    if not math.isfinite(number):
        raise ParameterError(f"{f.name} = {text!r} is not a finite number{tail}")
    return number


def _check_type(f: dataclasses.Field, value: Any) -> None:
    if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return
    expected = PYTHON_TYPES[f.type]
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ParameterError(f"{f.name} must be a {f.type}, got {value!r}")


def in_range(f: dataclasses.Field, value: Any) -> bool:
    """Whether ``value`` (of the field's type) is inside field ``f``'s allowed range (``low``/``high``/
    ``also``, or ``pattern`` for text). NaN is never inside a bounded range."""
    m = f.metadata
    if m["pattern"]:
        return bool(re.fullmatch(m["pattern"], value))
    if value in m["also"]:
        return True
    low, high = m["low"], m["high"]
    above = low is None or (value > low if m["open_low"] else value >= low)
    below = high is None or (value < high if m["open_high"] else value <= high)
    return bool(above and below)


DEFAULTS = PipelineParameters()


def parameter_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`PipelineParameters` (name, type name, default, ``metadata``: see :func:`_p`)."""
    return dataclasses.fields(PipelineParameters)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a parameter field: ``metadata['flag']`` or ``--name-with-dashes``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def estimator_keywords(kind: str) -> dict[str, str]:
    """``{estimator keyword: parameter name}`` of model ``kind`` (from the fields' ``models`` metadata).

    >>> estimator_keywords("random_forest")
    {'random_state': 'random_state', 'n_estimators': 'rf_n_estimators', 'n_jobs': 'n_jobs'}

    :raises ValueError: an unknown ``kind`` (not in :data:`MODEL_KINDS`).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    return {f.metadata["models"][kind]: f.name for f in parameter_fields() if kind in f.metadata["models"]}


def search_space() -> dict[str, tuple[float, float, str, type]]:
    """The default hyperparameter search space: ``{name: (low, high, "linear"|"log", int|float)}``.

    Declared beside each parameter (``search`` metadata); always inside its allowed range; log-scaled
    ranges have ``low > 0``. In field order.
    """
    return {f.name: (*f.metadata["search"], PYTHON_TYPES[f.type]) for f in parameter_fields() if f.metadata["search"]}


def parse_search_override(text: str) -> tuple[str, float, float]:
    """Parse a command-line override of one search range, ``name=low:high`` (e.g. ``xgb_max_depth=3:10``).

    :returns: ``(name, low, high)``, typed as the parameter (int or float), ``low < high``, both inside
        the parameter's allowed range (and ``low > 0`` on a log scale).
    :raises ParameterError: one line naming the problem and what is allowed.
    """
    space = search_space()
    name, sep, bounds = str(text).partition("=")
    name = name.strip()
    low_text, colon, high_text = bounds.partition(":")
    if not sep or not colon:
        raise ParameterError(f"search override {text!r} is not name=low:high, e.g. xgb_max_depth=3:10")
    if name not in space:
        raise ParameterError(f"search override {text!r}: {name!r} is not a tuned parameter; "
                             f"allowed: {', '.join(space)}")
    f = _fields()[name]
    low, high = _parse_text(f, low_text), _parse_text(f, high_text)
    for value in (low, high):
        if not in_range(f, value):
            raise ParameterError(f"{name} = {value!r} is out of range: allowed {f.metadata['allowed']}")
    if not low < high:
        raise ParameterError(f"search override {text!r}: low {low!r} must be below high {high!r}")
    if space[name][2] == "log" and low <= 0:
        raise ParameterError(f"search override {text!r}: {name} is searched on a log scale, so low must be > 0")
    return name, low, high
