"""Versioned input data with ClearML Data: register a CSV as a dataset version, find one, fetch it.

* :func:`register` (``python clearml_pipeline.py register-data PATH``): validates the CSV as the
  ``load`` step does, then creates a new version of a ClearML dataset whose parent is the latest
  version (the web UI's Datasets page shows the lineage), with the file's SHA-256, row count and
  layout as metadata, uploads and finalizes it. A file identical to a registered version (same
  SHA-256) creates nothing.
* :func:`resolve` / :func:`check_dataset`: turn ``--dataset-id`` (or a name and version) into a
  finalized version holding one CSV file, before any step runs.
* :func:`local_csv`: the ``load`` step's local copy of that CSV (ClearML's ``get_local_copy``).
* :func:`data_record`: what every run records of the data it trained on (its ``data_*`` user
  properties, in the web UI under CONFIGURATION > USER PROPERTIES), offline runs included.

The metadata of a version is in three places: the dataset task's user properties ``sha256``,
``rows``, ``layout``, ``file`` (read back by this module and the REST API), a ``metadata``
artifact, and the same as a table on the version's page in the web UI.

ClearML is imported inside the functions: ``steps/`` stays ClearML-free, and importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from steps.errors import BadInput

#: The ClearML dataset that ``register-data`` and ``--dataset-name`` use by default.
DEFAULT_PROJECT, DEFAULT_NAME = "California Housing", "cal_housing"

#: The files of a dataset version that are the data: CSV, optionally compressed as the loader reads them.
CSV_FILE = re.compile(r"\.csv(\.(gz|bz2|xz|zip))?$", re.IGNORECASE)
#: The user properties a run records (see :func:`data_record`).
RECORD_KEYS = ("data_source", "data_sha256", "data_rows")


class DatasetError(BadInput):
    """A dataset id, name or version that cannot be used; the message is one line (exit 2)."""


@contextmanager
def _quiet_clearml() -> Iterator[None]:
    """ClearML logs a failed look-up (unknown id, no such project) as several lines; the caller says it in one."""
    loggers = [logging.getLogger(name) for name in ("clearml", "clearml.Task", "clearml.task", "clearml.Dataset")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def csv_files(names) -> list[str]:
    """The names among ``names`` that are CSV files (see :data:`CSV_FILE`), sorted."""
    return sorted(n for n in names if CSV_FILE.search(n))


def csv_summary(path: str | os.PathLike, rows: int) -> dict[str, str]:
    """``{"sha256", "rows", "layout", "file"}`` of a validated CSV file of ``rows`` data rows."""
    from steps.data import sniff_housing_csv
    from steps.datafile import file_sha256

    _, layout, _ = sniff_housing_csv(path)
    return {"sha256": file_sha256(path), "rows": str(rows), "layout": layout, "file": Path(path).name}


def data_record(source: str, path: str, frame) -> dict[str, str]:
    """What a run records of the data it trained on: ``data_source``, ``data_sha256``, ``data_rows``.

    ``data_sha256`` is the SHA-256 of the file's bytes (the hash ``register-data`` stores and
    ``sha256sum`` prints); for the scikit-learn download, which has no file, of the loaded table's
    values (float64, row-major). ``data_rows``: the rows of the loaded, validated data.
    """
    from steps.datafile import file_sha256

    if path and path != "sklearn" and os.path.isfile(path):
        sha = file_sha256(path)
    else:
        sha = hashlib.sha256(frame.to_numpy(dtype="float64").tobytes()).hexdigest()
        source = f"{source or 'sklearn'} (scikit-learn download; hash of the loaded table)"
    return {"data_source": source, "data_sha256": sha, "data_rows": str(len(frame))}


def _versions(project: str, name: str) -> list[dict]:
    """The finalized versions of dataset ``project``/``name``, oldest first."""
    from clearml import Dataset

    found = Dataset.list_datasets(dataset_project=project, partial_name=f"^{re.escape(name)}$",
                                  only_completed=True, recursive_project_search=False)
    return sorted((d for d in found if d.get("name") == name), key=lambda d: d["created"])


def _properties(dataset_id: str) -> dict[str, str]:
    from clearml import Task

    return Task.get_task(task_id=dataset_id).get_user_properties(value_only=True) or {}


@contextmanager
def _registering(project: str, name: str) -> Iterator[None]:
    """One ``register-data`` of dataset ``project``/``name`` at a time on this machine (an exclusive
    lock on a file in the ClearML cache folder), so that two at once make one version per content
    and a line of versions, each with its parent, instead of two versions with the same parent."""
    import fcntl
    import tempfile

    from runtime.offline import cache_folder

    folder = Path(cache_folder())
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    key = hashlib.sha256(f"{project}\0{name}".encode()).hexdigest()[:16]
    with open(folder / f"register-data-{key}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def register(path: str, project: str = DEFAULT_PROJECT, name: str = DEFAULT_NAME) -> tuple[str, bool, str]:
    """Register the CSV ``path`` as a new version of dataset ``project``/``name`` (one at a time, see
    :func:`_registering`).

    :returns: ``(dataset id, created, one line saying what happened)``; ``created`` is False when a
        version with the same SHA-256 exists (its id is returned and nothing is created).
    :raises steps.errors.DataError: the file is not data a run accepts (the load step's message).
    """
    from clearml import Dataset, Task

    from steps.data import load_dataset

    frame = load_dataset(path)  # exactly the load step's validation
    summary = csv_summary(path, len(frame))
    versions = _versions(project, name)
    for version in reversed(versions):
        if _properties(version["id"]).get("sha256") == summary["sha256"]:
            return version["id"], False, (
                f"{path} is identical to version {version.get('version')} of dataset '{name}' in project "
                f"'{project}' (sha256 {summary['sha256'][:12]}…): nothing registered; its id is {version['id']}")
    # the latest version (highest semantic version, as ClearML's own look-up by name picks it)
    parent = Dataset.get(dataset_project=project, dataset_name=name, only_completed=True) if versions else None
    dataset = Dataset.create(dataset_name=name, dataset_project=project,
                             parent_datasets=[parent.id] if parent is not None else None,
                             description=f"{summary['file']}: {summary['rows']} rows, {summary['layout']} layout, "
                                         f"sha256 {summary['sha256']}")
    for inherited in dataset.list_files():  # a version holds one CSV: the parent's is replaced
        dataset.remove_files(inherited, verbose=False)
    dataset.add_files(path)
    Task.get_task(task_id=dataset.id).set_user_properties(**summary)
    import pandas as pd

    dataset.set_metadata(pd.DataFrame([summary]), ui_visible=True)
    dataset.upload(show_progress=False)
    dataset.finalize()
    lineage = f"parent: version {parent.version} ({parent.id})" if parent is not None else "first version"
    return dataset.id, True, (f"registered {path} as version {dataset.version} of dataset '{name}' in project "
                              f"'{project}' ({summary['rows']} rows, {summary['layout']} layout, sha256 "
                              f"{summary['sha256'][:12]}…; {lineage})")


def resolve(project: str, name: str, version: str = "") -> str:
    """The id of version ``version`` (empty: the latest) of dataset ``project``/``name``.

    :raises DatasetError: no such finalized version.
    """
    versions = _versions(project, name)
    if version:
        versions = [v for v in versions if v.get("version") == version]
    if not versions:
        what = f"version {version} of dataset '{name}'" if version else f"dataset '{name}'"
        raise DatasetError(f"no finalized {what} in ClearML project '{project}'; register the CSV with: "
                           f"python clearml_pipeline.py register-data PATH --dataset-project '{project}' "
                           f"--dataset-name '{name}'")
    if version:
        return versions[-1]["id"]
    from clearml import Dataset

    return Dataset.get(dataset_project=project, dataset_name=name, only_completed=True,
                       shallow_search=False).id


def check_dataset(dataset_id: str) -> dict[str, str]:
    """Check that ``dataset_id`` is a finalized ClearML dataset version holding one CSV file.

    :returns: ``{"name", "project", "version", "file"}`` plus its registered ``sha256``/``rows``
        (empty when it was not registered by :func:`register`).
    :raises DatasetError: unknown id, a task that is not a dataset, a version not finalized, no CSV
        file or several.
    """
    from clearml import Dataset

    with _quiet_clearml():
        found = Dataset.list_datasets(ids=[dataset_id], only_completed=False)
    if not found:
        raise DatasetError(f"dataset {dataset_id} not found on the ClearML server; pass the id printed by "
                           "register-data (the web UI lists them under Datasets)")
    info = found[0]
    label = f"dataset {dataset_id} ('{info.get('name')}' version {info.get('version')})"
    status = str(getattr(info.get("status"), "value", info.get("status")))
    if status not in ("completed", "published", "closed", "stopped"):
        raise DatasetError(f"{label} is not finalized (status {status}); finalize it, or register the CSV "
                           "again with register-data")
    files = Dataset.get(dataset_id=dataset_id).list_files()
    data = csv_files(files)
    if len(data) != 1:
        shown = ", ".join(files[:5]) + (", …" if len(files) > 5 else "") if files else "no files"
        problem = "holds no CSV file" if not data else f"holds {len(data)} CSV files"
        raise DatasetError(f"{label} {problem} ({shown}); the pipeline needs a version with exactly one CSV file: "
                           "register one with: python clearml_pipeline.py register-data PATH")
    props = _properties(dataset_id)
    return {"name": str(info.get("name")), "project": str(info.get("project")), "version": str(info.get("version")),
            "file": data[0], "sha256": props.get("sha256", ""), "rows": props.get("rows", "")}


def describe(dataset_id: str, info: dict[str, str]) -> str:
    """``data_source`` of a run that trains on a dataset version: project/name, version, id and file."""
    return f"ClearML dataset {info['project']}/{info['name']} version {info['version']} ({dataset_id}): {info['file']}"


def local_csv(dataset_id: str) -> tuple[str, str]:
    """``(path of a local copy of the version's CSV file, data_source)``, through ClearML's ``get_local_copy``.

    :raises DatasetError: see :func:`check_dataset`.
    """
    from clearml import Dataset

    info = check_dataset(dataset_id)
    folder = Dataset.get(dataset_id=dataset_id).get_local_copy()
    return str(Path(folder) / info["file"]), describe(dataset_id, info)


def run_register(path: str, project: str, name: str) -> int:
    """``register-data``: register, print what happened, then the dataset id alone on the last line
    (``ID=$(python clearml_pipeline.py register-data data.csv | tail -n 1)``)."""
    with _quiet_clearml(), _registering(project, name):
        dataset_id, _created, message = register(path, project, name)
    print(message)
    print(dataset_id, flush=True)
    return 0
