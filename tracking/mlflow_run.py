"""Log a finished run to MLflow as well (the optional extra of ``requirements-mlflow.txt``).

Importing this module imports nothing from MLflow and works without it installed; MLflow is
imported when :func:`log_run` runs. API (the command line's ``--mlflow`` uses exactly this):

* :data:`INSTALL_HINT` = ``"pip install -r requirements-mlflow.txt"``: how to install the extra.
* :func:`mlflow_available` ``() -> bool``: whether MLflow is installed (found, not imported).
* :func:`log_run` ``(*, experiment: str, params: Mapping[str, object], output_dir: Path,
  data_record: Mapping[str, str], clearml_task_id: str = "", clearml_url: str = "",
  validation: Optional[pd.DataFrame] = None) -> tuple[str, str]``: one MLflow run from a run's
  output folder (:mod:`steps.outputs`); returns ``(run_id, run_url)``, ``run_url`` empty unless
  the tracking URI is an ``http(s)://`` server.
* :class:`MlflowLogError` ``(RuntimeError)``: whatever goes wrong in :func:`log_run`, as one line
  naming the tracking URI (or the output folder) and the fix.

Where the run goes: MLflow's own tracking URI, i.e. ``MLFLOW_TRACKING_URI`` if set, else MLflow's
default store (MLflow 3.7+: the SQLite file ``mlflow.db`` in the working directory; an existing
``./mlruns`` is still used). This module never sets it. Log from one process (the one that ran the
pipeline): parallel writers can lock a SQLite store.

What one run holds (the target, median house value, and so predictions, RMSE and MAE are in $100k):

* parameters: ``params`` (values as text);
* metrics: ``<model>_test_r2``, ``<model>_test_rmse``, ``<model>_test_mae`` from ``metrics.csv``
  and, when ``validation`` is given, ``<model>_validation_r2`` etc. (an undefined, empty score is
  left out), each linked to its model (the UI's *Models* column, the model's own page);
* artifacts: ``metrics.csv`` and every ``*.png`` of the output folder, at the artifact root;
* models: each ``models/<model>.joblib`` as an MLflow model named ``<model>`` (scikit-learn
  flavour, MLflow's ``skops`` format with the model's own types trusted, the project's ``steps``
  package stored with it as code, an input example of 3 districts, signature inferred from it,
  pip requirements pinned to the installed scikit-learn, numpy, pandas, scipy, skops, xgboost):
  ``mlflow.pyfunc.load_model(f"runs:/{run_id}/<model>").predict(X)`` takes an n x 8 DataFrame of
  the raw features ``MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup, Latitude,
  Longitude`` and returns n predictions in $100k, exactly those of the joblib file;
* tags: every entry of ``data_record`` (``data_source``, ``data_sha256``, ``data_rows``),
  ``clearml_task_id`` and ``clearml_url`` when given, and ``output_dir`` (the absolute folder);
  the run is named after the output folder (``runs/<UTC time>-<random>`` gives ``<UTC time>-<random>``).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pandas is imported when used: importing this module costs nothing
    import pandas as pd

#: How to install the extra that :func:`log_run` needs.
INSTALL_HINT = "pip install -r requirements-mlflow.txt"

#: The raw feature columns every logged model predicts from (scikit-learn's names).
FEATURE_COLUMNS: tuple[str, ...] = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup",
                                    "Latitude", "Longitude")
#: The metric columns of ``metrics.csv`` (and of ``validation``) logged per model.
METRIC_COLUMNS: tuple[str, ...] = ("r2", "rmse", "mae")

# The first 3 districts of the data set (StatLib's cal_housing rows 1-3 turned into the 8 features):
# the input example stored with each model, from which MLflow infers its signature (8 doubles in, 1 out).
_INPUT_EXAMPLE = {
    "MedInc": [8.3252, 8.3014, 7.2574],
    "HouseAge": [41.0, 21.0, 52.0],
    "AveRooms": [880 / 126, 7099 / 1138, 1467 / 177],
    "AveBedrms": [129 / 126, 1106 / 1138, 190 / 177],
    "Population": [322.0, 2401.0, 496.0],
    "AveOccup": [322 / 126, 2401 / 1138, 496 / 177],
    "Latitude": [37.88, 37.86, 37.85],
    "Longitude": [-122.23, -122.22, -122.24],
}


class MlflowLogError(RuntimeError):
    """The run could not be logged to MLflow; the one-line message names the tracking URI (or folder) and the fix."""


def mlflow_available() -> bool:
    """Whether MLflow is installed (:func:`importlib.util.find_spec`; nothing is imported)."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # a broken installation
        return False


def input_example() -> pd.DataFrame:
    """3 rows x the 8 :data:`FEATURE_COLUMNS`, float64: the input example logged with each model."""
    import pandas as pd

    return pd.DataFrame(_INPUT_EXAMPLE, columns=list(FEATURE_COLUMNS)).astype("float64")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _read_metrics(path: Path) -> pd.DataFrame:
    """``metrics.csv`` (model, r2, rmse, mae, n_test); raises MlflowLogError if missing or malformed."""
    import pandas as pd

    if not path.is_file():
        raise MlflowLogError(f"{path} not found, so {path.parent} is not the folder of a finished run; "
                             "pass the folder a run wrote (it printed 'results: <folder>')")
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # empty, unreadable, not a CSV
        raise MlflowLogError(f"cannot read {path} ({_one_line(exc)}); rerun the pipeline to rewrite it") from None
    _check_metric_columns(table, str(path))
    return table


def _check_metric_columns(table: pd.DataFrame, what: str) -> None:
    missing = [c for c in ("model", *METRIC_COLUMNS) if c not in table.columns]
    if missing:
        raise MlflowLogError(f"{what} has no column(s) {', '.join(missing)}; it needs the columns of metrics.csv "
                             "(model, r2, rmse, mae, n_test)")


def _metrics(table: pd.DataFrame, split: str) -> dict[str, dict[str, float]]:
    """``{model: {<model>_<split>_<r2|rmse|mae>: value}}`` of the table's rows; empty (NaN) scores are left out."""
    import pandas as pd

    out: dict[str, dict[str, float]] = {}
    for _, row in table.iterrows():
        model = str(row["model"])
        for column in METRIC_COLUMNS:
            value = pd.to_numeric(row[column], errors="coerce")
            if value is not None and not math.isnan(value):
                out.setdefault(model, {})[f"{model}_{split}_{column}"] = float(value)
    return out


def _load_models(output_dir: Path) -> dict[str, object]:
    """The fitted estimators of ``output_dir/models/*.joblib`` (pipeline order); MlflowLogError if none or broken."""
    from steps.predict import PredictError, load_models

    if not any((output_dir / "models").glob("*.joblib")):
        raise MlflowLogError(f"{output_dir / 'models'} holds no <model>.joblib file, so {output_dir} is not the folder "
                             "of a finished run; pass the folder a run wrote")
    try:
        return load_models(output_dir)
    except PredictError as exc:  # a damaged file or one saved by other library versions
        raise MlflowLogError(str(exc)) from None


def _check_server(uri: str) -> None:
    """Fail fast (one line) when an ``http(s)://`` tracking server does not answer at all.

    MLflow itself retries a dead server for minutes. Only a connection failure counts: a server
    that answers anything (even an error, e.g. one that needs a login) is left to MLflow.
    """
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=10)
    except requests.RequestException as exc:
        raise MlflowLogError(
            f"the MLflow tracking server {uri} does not answer ({type(exc).__name__}); start it "
            "(mlflow server --host 127.0.0.1 --port 5000) or set MLFLOW_TRACKING_URI to a reachable server "
            "or a local store such as sqlite:///mlflow.db") from None


def _code_copy(folder: Path) -> Path:
    """A copy of the project's ``steps`` package (its .py files) under ``folder``, stored with each model."""
    import steps

    target = folder / "steps"
    target.mkdir()
    for source in Path(steps.__file__).resolve().parent.glob("*.py"):
        shutil.copy2(source, target / source.name)
    return target


def _pip_requirements(trusted_types: list[str]) -> list[str]:
    """What loading a model needs, pinned to the versions installed here (MLflow adds itself).

    Given so that MLflow does not infer them (that loads each model in a subprocess: ~3 s a model).
    ``xgboost`` only where the model holds XGBoost types.
    """
    from importlib.metadata import PackageNotFoundError, version

    names = ["scikit-learn", "numpy", "pandas", "scipy", "skops"]
    if any(t.startswith("xgboost.") for t in trusted_types):
        names.append("xgboost")
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # `import xgboost` from the xgboost-cpu distribution (requirements.txt)
            pinned.append(f"{name}-cpu=={version(name + '-cpu')}")
    return pinned


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI when ``tracking_uri`` is an ``http(s)://`` server, else ``""``."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def log_run(*, experiment: str, params: Mapping[str, object], output_dir: Path, data_record: Mapping[str, str],
            clearml_task_id: str = "", clearml_url: str = "", validation: Optional[pd.DataFrame] = None,
            ) -> tuple[str, str]:
    """Log the finished run in ``output_dir`` as ONE MLflow run of ``experiment`` (created if missing; what is
    logged: the module docstring). Inputs are checked before anything is sent; a run failing midway ends FAILED.

    :param params: ``{name: value}`` (logged as text). :param output_dir: a finished run's folder:
        ``metrics.csv`` (model, r2, rmse, mae, n_test; RMSE, MAE in $100k), PNGs, ``models/<model>.joblib``.
    :param data_record: ``{"data_source", "data_sha256", "data_rows"}`` (tags); ``clearml_task_id``,
        ``clearml_url``: the ClearML run (tags, when given).
    :param validation: optional, one row per model: ``model, r2, rmse, mae`` ($100k), as ``<model>_validation_*``.
    :returns: ``(run_id, run_url)``; ``run_url`` for an ``http(s)://`` tracking URI, else ``""``.
    :raises MlflowLogError: MLflow not installed (names :data:`INSTALL_HINT`), no ``metrics.csv`` or models,
        ``validation`` lacking columns, a tracking server not answering, or MLflow failing: one line naming the
        tracking URI and the fix.
    """
    output_dir = Path(output_dir).expanduser().absolute()
    table = _read_metrics(output_dir / "metrics.csv")
    if validation is not None:
        _check_metric_columns(validation, "the validation metrics")
    models = _load_models(output_dir)
    if not mlflow_available():
        raise MlflowLogError(f"MLflow is not installed; install the extra with: {INSTALL_HINT}")

    import mlflow
    from mlflow.tracking import MlflowClient

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):  # MLflow retries a dead server for minutes
        _check_server(uri)
    metrics = _all_metrics(table, validation)
    tags = {**{str(k): str(v) for k, v in data_record.items()}, "output_dir": str(output_dir),
            **({"clearml_task_id": clearml_task_id} if clearml_task_id else {}),
            **({"clearml_url": clearml_url} if clearml_url else {})}
    try:
        client = MlflowClient()
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=output_dir.name, tags=tags) as run:
            mlflow.log_params({str(k): str(v) for k, v in params.items()})
            for path in [output_dir / "metrics.csv", *sorted(output_dir.glob("*.png"))]:
                mlflow.log_artifact(str(path))
            model_ids = _log_models(models)  # before the metrics: log_model would link every metric to it
            for name, values in metrics.items():  # each model's metrics linked to that model
                mlflow.log_metrics(values, model_id=model_ids.get(name))
            run_id = run.info.run_id
    except MlflowLogError:
        raise
    except Exception as exc:  # MlflowException, sqlite/SQLAlchemy, HTTP and file system errors
        raise MlflowLogError(
            f"could not log the run to MLflow at {uri} ({_one_line(exc)}); check that this tracking store is "
            "reachable and writable, or set MLFLOW_TRACKING_URI to one that is (e.g. sqlite:///mlflow.db)") from None
    return run_id, run_url(uri, experiment_id, run_id)


def _all_metrics(table: pd.DataFrame, validation: Optional[pd.DataFrame]) -> dict[str, dict[str, float]]:
    """``{model: {metric name: value}}``: the test metrics, and the validation ones when given."""
    metrics = _metrics(table, "test")
    for model, values in (_metrics(validation, "validation") if validation is not None else {}).items():
        metrics.setdefault(model, {}).update(values)
    return metrics


def _log_models(models: Mapping[str, object]) -> dict[str, str]:
    """Log each model in the active run (scikit-learn flavour, skops format, the ``steps`` code beside it).

    :returns: ``{model name: MLflow model id}``.
    """
    import mlflow.sklearn
    import skops.io

    model_ids = {}
    with tempfile.TemporaryDirectory(prefix="mlflow-code-") as tmp:
        code = _code_copy(Path(tmp))
        for name, model in models.items():
            trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
            info = mlflow.sklearn.log_model(model, name=name, input_example=input_example(), code_paths=[str(code)],
                                            serialization_format="skops", skops_trusted_types=trusted,
                                            pip_requirements=_pip_requirements(trusted))
            model_ids[name] = info.model_id
    return model_ids
