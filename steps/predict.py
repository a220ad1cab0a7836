"""Apply the saved models of a training run to a CSV file: ``clearml_pipeline.py predict``.

A run folder (``--output-dir`` of a training run) holds ``models/<model>.joblib``: each a fitted
scikit-learn estimator whose feature engineering is inside it, so it predicts from the 8 raw
California Housing features (scikit-learn's columns ``MedInc ... Longitude``) alone.
:func:`predict_csv` reads a CSV in either accepted layout (scikit-learn's columns or StatLib's,
as for training), with or without its target column, predicts with every model of the run (or
one), writes the predictions, and scores them when the CSV has the target.

Output CSV (one line per data row of the input, in the input's order):

* ``row``: the 1-based data row of the input file (the header is row 0), as in error messages;
* ``MedHouseVal``: the actual value in $100k, only when the input has a target column
  (StatLib's ``median_house_value`` is divided by 100,000; empty where the input has none);
* ``pred_<model>``: the prediction of each model, in $100k (multiply by 100,000 for dollars).

It is written atomically (a temporary file beside it, then linked into place), never over an
existing file. Loading a model runs code from its file (pickle): only use runs you trust.

Nothing here knows about ClearML.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from steps.data import TARGET, read_features
from steps.errors import BadInput, DataError  # noqa: F401  (DataError: raised by read_features; importable from here)
from steps.evaluation import regression_metrics
from steps.params import MODEL_KINDS

log = logging.getLogger(__name__)

#: Columns of the metrics table :func:`predict_csv` returns when the input has a target.
PREDICT_METRIC_COLUMNS: tuple[str, ...] = ("model", "r2", "rmse", "mae", "n_rows")


class PredictError(BadInput):
    """The run folder, the model name or the output file cannot be used; the message names the fix."""


# --------------------------------------------------------------------------- models


def available_models(run_dir: str | os.PathLike) -> list[str]:
    """Names of the models saved in ``run_dir/models`` (``<name>.joblib``), in the pipeline's order.

    :raises PredictError: ``run_dir`` is missing, not a folder, or has no ``models/`` with a ``.joblib`` file.
    """
    run = Path(run_dir).expanduser()
    if not run.exists():
        raise PredictError(f"run folder not found: {run}; pass --run with a folder a training run wrote "
                           "(the 'results:' folder it printed, holding metrics.csv and models/)")
    if not run.is_dir():
        raise PredictError(f"{run} is a file, not a run folder; pass --run with the folder a training run wrote")
    models_dir = run / "models"
    if not models_dir.is_dir():
        raise PredictError(f"{run} has no models/ folder, so it is not the folder of a finished training run; "
                           "pass --run with the 'results:' folder a run printed")
    names = [p.stem for p in models_dir.glob("*.joblib") if p.is_file()]
    if not names:
        raise PredictError(f"{models_dir} holds no <model>.joblib file; pass --run with the folder of a "
                           "finished training run")
    order = {name: i for i, name in enumerate(MODEL_KINDS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def load_models(run_dir: str | os.PathLike, model: Optional[str] = None) -> dict[str, object]:
    """Load the fitted estimators of a run: all of them, or the one named ``model``.

    :returns: ``{name: fitted estimator}`` (each predicts from an n x 8 DataFrame of :data:`FEATURES`),
        in the order of :func:`available_models`.
    :raises PredictError: see :func:`available_models`; no model of that name (the message lists
        the available ones); a file that cannot be loaded or is not a model.
    """
    import joblib

    names = available_models(run_dir)
    if model is not None:
        if model not in names:
            raise PredictError(f"no model {model!r} in {Path(run_dir).expanduser() / 'models'}; "
                               f"available: {', '.join(names)}")
        names = [model]
    models = {}
    for name in names:
        path = Path(run_dir).expanduser() / "models" / f"{name}.joblib"
        try:
            estimator = joblib.load(path)
        except Exception as exc:  # damaged file, other library versions, steps package not importable
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise PredictError(f"cannot load {path} ({type(exc).__name__}: {detail}); the file is damaged or "
                               "was saved by other versions of scikit-learn/xgboost: retrain the run") from None
        if not hasattr(estimator, "predict"):
            raise PredictError(f"{path} holds a {type(estimator).__name__}, not a model; pass the folder of a "
                               "training run")
        models[name] = estimator
    return models


# --------------------------------------------------------------------------- input data


def read_features_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, Optional[pd.Series]]:
    """Read a California Housing CSV for prediction: its features, and its target when it has one.

    This is :func:`steps.data.read_features`: the file is read as for training (every format
    :func:`steps.data.read_housing_csv` reads, the same checks and messages), except that the
    target column is optional, and the feature values are checked by
    :func:`steps.data.validate_features`, which drops no row. A row without a target is predicted
    but left out of the metrics (a warning gives their count).

    :param path: the CSV file (scikit-learn's or StatLib's layout; ``~`` is expanded).
    :returns: ``(X, y)``: X is n x 8 float64 (:data:`~steps.data.FEATURES`, index 0..n-1); y is the
        target (n,) in $100k (NaN where a row has none) or ``None`` when the file has no target column.
    :raises DataError: one line naming the problem and the fix.
    """
    X, y = read_features(Path(path).expanduser())
    if y is not None and y.isna().any():
        log.warning("%d row(s) have no target %s: they get predictions but are left out of the metrics",
                    int(y.isna().sum()), TARGET)
    return X, y


# --------------------------------------------------------------------------- output file


def check_output_file(output_path: str | os.PathLike) -> Path:
    """Check that predictions can be written to ``output_path``, before anything is read or predicted.

    :returns: the absolute path.
    :raises PredictError: the file exists (predict never overwrites), is a folder, its folder is
        missing or not writable.
    """
    path = Path(output_path).expanduser().absolute()
    if path.is_dir():
        raise PredictError(f"--output {path} is a folder; pass the path of a new CSV file, e.g. {path / 'predictions.csv'}")
    if path.exists() or path.is_symlink():
        raise PredictError(f"--output {path} already exists; predict never overwrites a file, pass a new file name "
                           "(or delete the old file first)")
    folder = path.parent
    if not folder.is_dir():
        raise PredictError(f"the folder of --output {path} does not exist; create {folder} first or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PredictError(f"folder {folder} is not writable; choose another --output")
    return path


def _write_new_file(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV to ``path`` all at once: a temporary file beside it, then moved into place.

    A hard link puts the finished file in place atomically and fails if ``path`` appeared in the
    meantime (no overwrite); where the file system has no hard links, :func:`os.replace` is used.
    A failure or interruption leaves no ``path`` and no temporary file.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private (0600); predictions are an ordinary file
        with os.fdopen(fd, "w", newline="") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n")  # full precision: reads back exactly
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise PredictError(f"--output {path} was created by something else while predicting; "
                               "pass a new file name") from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise PredictError(f"--output {path} was created by something else while predicting; "
                                   "pass a new file name") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- predict


def predict_csv(
    run_dir: str | os.PathLike,
    data_path: str | os.PathLike,
    output_path: str | os.PathLike,
    model: Optional[str] = None,
) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
    """Predict a CSV with the models of a training run and write the predictions to a new CSV.

    Order: the output path is checked, the models are loaded, the CSV is read and checked, the
    models predict, the file is written (atomically) — so any error comes before a long read,
    and an error leaves no output file.

    :param run_dir: folder of a training run (holds ``models/<model>.joblib``).
    :param data_path: CSV in scikit-learn's or StatLib's layout; target column optional (see
        :func:`read_features_csv`).
    :param output_path: the new CSV file to write (its folder must exist; never overwritten).
    :param model: one model name (e.g. ``"xgboost"``); ``None``: every model of the run.
    :returns: ``(predictions, metrics)``. ``predictions``: n rows (one per data row of the input)
        with the columns ``row`` (1-based data row), ``MedHouseVal`` (actual, $100k; only when the
        input has a target) and ``pred_<model>`` per model ($100k), as written to the file (full
        precision: it reads back exactly). ``metrics``: one row per model with
        :data:`PREDICT_METRIC_COLUMNS` (R^2; RMSE and MAE in $100k, over the ``n_rows`` rows that have
        a target), or ``None`` when the input has no target column or fewer than 2 rows with a target.
    :raises PredictError: bad run folder, unknown model (the message lists the available ones),
        unusable output path (see :func:`available_models`, :func:`load_models`, :func:`check_output_file`).
    :raises DataError: the CSV cannot be used (see :func:`read_features_csv`).
    Both are :class:`ValueError` with a one-line message.
    """
    output = check_output_file(output_path)
    models = load_models(run_dir, model)
    X, y = read_features_csv(data_path)
    if output.exists():
        raise PredictError(f"--output {output} already exists; predict never overwrites a file, pass a new file name")
    predictions = pd.DataFrame({"row": np.arange(1, len(X) + 1)})
    if y is not None:
        predictions[TARGET] = y.to_numpy()
    for name, estimator in models.items():
        predictions[f"pred_{name}"] = np.asarray(estimator.predict(X), dtype=float)
    metrics = None
    if y is not None and y.notna().sum() >= 2:
        scored = y.notna().to_numpy()
        metrics = pd.DataFrame(
            [{"model": name, **regression_metrics(y[scored], predictions.loc[scored, f"pred_{name}"]),
              "n_rows": int(scored.sum())} for name in models],
            columns=list(PREDICT_METRIC_COLUMNS),
        )
    _write_new_file(predictions, output)
    return predictions, metrics


def training_data_note(run_dir: str | os.PathLike, data_path: str | os.PathLike) -> str:
    """One line when ``data_path`` is the very file the run trained on (its SHA-256 is the one the run
    recorded in ``run.json``, :func:`steps.outputs.write_run_record`), else ``""``."""
    import math

    from steps.datafile import file_sha256
    from steps.outputs import RUN_RECORD, read_run_record

    record = read_run_record(run_dir)
    try:
        same = bool(record.get("data_sha256")) and file_sha256(Path(data_path).expanduser()) == record["data_sha256"]
        rows, test_size = int(record.get("data_rows", 0)), float(record.get("test_size", 0.0))
    except (OSError, ValueError, TypeError):
        return ""
    if not same:
        return ""
    trained = rows - math.ceil(rows * test_size)  # as train_test_split counts the test rows
    return (f"note: this is the run's own training data (SHA-256 as in {RUN_RECORD}): {trained:,} of its {rows:,} "
            f"rows trained the models (test_size {test_size:g}, random_state {record.get('random_state')}), so "
            "these scores are optimistic; the run's test-set scores are in its metrics.csv")
