"""A run's output folder: where it goes, checking it, and writing its files all or nothing.

Nothing here knows about ClearML; :mod:`steps.evaluation` computes what is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd

from steps.errors import OutputError


def new_run_dir(root: str | os.PathLike = "runs") -> Path:
    """A fresh, not yet created path ``<root>/<UTC time>-<random>``; two runs never get the same one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{uuid.uuid4().hex[:6]}"


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Check that ``output_dir`` can receive a run's results, before anything runs.

    It may not exist yet (it is created) or be an empty folder; the nearest existing folder above
    it must be writable, as the results are staged beside it and then moved into place
    (see :func:`staged_output`).

    :raises OutputError: it is a file, a non-empty folder, or the folder above it is not writable.
    """
    path = Path(output_dir).expanduser().absolute()
    if path.is_symlink():
        raise OutputError(f"output folder {path} is a symbolic link; pass the folder it points to, or a new one")
    if path.is_dir() and os.path.ismount(path):
        raise OutputError(f"output folder {path} is a mount point, which cannot be replaced; pass a new folder inside it")
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} is a file; pass --output-dir with a folder path")
    if path.is_dir() and any(path.iterdir()):
        raise OutputError(
            f"output folder {path} is not empty; pass a new or empty folder with --output-dir "
            "(or leave it out for a new folder under runs/)"
        )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{parent} is a file, so {path} cannot be created; choose another --output-dir")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"folder {parent} is not writable; choose a writable --output-dir")
    return path


@contextmanager
def staged_output(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Write a run's files into a hidden staging folder, then move them into ``output_dir`` at once.

    The staging folder is a sibling of ``output_dir`` (same file system), so the final
    :func:`os.replace` is atomic: ``output_dir`` holds either every file or none. If the body
    raises (or the process is interrupted) the staging folder is removed.

    :yields: the staging folder to write into.
    :raises OutputError: ``output_dir`` is unusable (see :func:`check_output_dir`).
    """
    final = check_output_dir(output_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); results are an ordinary folder
    try:
        yield stage
        if final.is_dir():
            final.rmdir()  # empty, checked above
        os.replace(stage, final)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def write_run_files(
    folder: str | os.PathLike,
    metrics: pd.DataFrame,
    figures: Mapping[str, object],
    models: Mapping[str, object],
) -> dict[str, Path]:
    """Write ``metrics.csv``, every figure as PNG and every model into ``folder`` (which exists).

    Files: ``metrics.csv``; ``<name>.png`` per figure; per model ``models/<model>.joblib`` (the
    fitted scikit-learn estimator, :func:`joblib.dump`; loading it needs this project's ``steps``
    package importable) and, for XGBoost, ``models/xgboost.json`` (the booster in XGBoost's own
    JSON format, loadable with :meth:`xgboost.Booster.load_model`, cut to the rounds early stopping
    kept, so it predicts as the estimator does; it expects the 8 features + 5 rotated coordinates
    of :func:`steps.models.add_rotated_coordinates`).

    :param metrics: the :func:`steps.evaluation.metrics_table`; ``figures``: ``{file stem: matplotlib Figure}``;
        ``models``: ``{model name: fitted estimator}``.
    :returns: ``{file name relative to folder: path}``.
    """
    import joblib

    folder = Path(folder)
    written: list[str] = []
    metrics.to_csv(folder / "metrics.csv", index=False)
    written.append("metrics.csv")
    for stem, fig in figures.items():
        fig.savefig(folder / f"{stem}.png", format="png", dpi=100)
        written.append(f"{stem}.png")
    (folder / "models").mkdir()
    for name, model in models.items():
        joblib.dump(model, folder / "models" / f"{name}.joblib")
        written.append(f"models/{name}.joblib")
        if name == "xgboost":
            booster = model[-1].get_booster()
            best = getattr(model[-1], "best_iteration", None)
            if best is not None:  # keep the rounds early stopping chose, as the estimator predicts
                booster = booster[: best + 1]
            booster.save_model(str(folder / "models" / "xgboost.json"))
            written.append("models/xgboost.json")
    return {rel: folder / rel for rel in written}


def write_run_outputs(
    output_dir: str | os.PathLike,
    metrics: pd.DataFrame,
    figures: Mapping[str, object],
    models: Mapping[str, object],
) -> dict[str, Path]:
    """:func:`write_run_files` into ``output_dir``, all or nothing (through :func:`staged_output`).

    :returns: ``{file name relative to output_dir: final path}``.
    :raises OutputError: the folder is unusable (checked before anything is written).
    """
    with staged_output(output_dir) as stage:
        written = write_run_files(stage, metrics, figures, models)
    final = Path(output_dir).expanduser().absolute()
    return {rel: final / rel for rel in written}
