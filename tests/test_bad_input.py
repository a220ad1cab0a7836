"""Bad input: one clear ``error:`` line, a non-zero exit, no traceback and no partial results.

Every case of docs/errors.md is here. Most run the command line (``clearml_pipeline.py`` in a
subprocess, ClearML offline mode, its own ``CLEARML_CACHE_DIR``) on small CSVs made from the first
300 districts of the real data; data the pipeline can repair must give a warning and a complete run.
The command-line runs a test session selects are started together, a few at a time, the first time
a test needs one (each takes 2-5 s, mostly imports). Cheaper checks call ``steps.data`` directly.

A refused run must leave no ``metrics.csv``, plot or ``models/`` in its output folder and no
``.<name>.partial-*`` staging folder beside it. "Before any step runs" means exit code 2 and no
ClearML offline session: the pipeline never started.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import math
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pytest

import steps.csv_files
import steps.data
import steps.outputs
from steps.data import (
    FEATURES,
    STATLIB_COLUMNS,
    TARGET,
    DataError,
    check_csv,
    check_split_sizes,
    load_dataset,
    read_housing_csv,
    statlib_to_sklearn,
)
from steps.outputs import OutputError, check_output_dir

ROOT = Path(__file__).resolve().parent.parent
N_ROWS = 300  # districts in the small CSVs: 240 train / 60 test rows
FAST = ("--xgb-n-estimators", "50", "--n-jobs", "1")
AS_ROOT = os.geteuid() == 0
ROOT_SKIP = "runs as root: chmod does not stop root from reading or writing (the message is checked by a unit test)"
PNGS = ("prediction_plot.png", "model_comparison.png", "polynomial_error_distribution.png",
        "xgboost_error_distribution.png")
MODEL_FILES = ("models/polynomial.joblib", "models/xgboost.joblib", "models/xgboost.json")


# --------------------------------------------------------------------------- input files


def as_statlib(frame: pd.DataFrame) -> pd.DataFrame:
    """The StatLib layout of a frame in either layout (scikit-learn's ratios turned back into counts)."""
    if "households" in frame.columns:
        return frame[list(STATLIB_COLUMNS)].astype("float64")
    households = frame["Population"] / frame["AveOccup"]
    return pd.DataFrame({
        "longitude": frame["Longitude"], "latitude": frame["Latitude"], "housing_median_age": frame["HouseAge"],
        "total_rooms": frame["AveRooms"] * households, "total_bedrooms": frame["AveBedrms"] * households,
        "population": frame["Population"], "households": households, "median_income": frame["MedInc"],
        "median_house_value": frame[TARGET] * 100_000,
    })


@pytest.fixture(scope="module")
def raw(housing_csv) -> pd.DataFrame:
    """The first 300 districts of the real data in the StatLib layout (as ../shared/data/cal_housing.csv)."""
    return as_statlib(pd.read_csv(housing_csv, nrows=N_ROWS))


def write(frame: pd.DataFrame, folder: Path, name: str = "data.csv", **to_csv) -> Path:
    path = folder / name
    frame.to_csv(path, index=False, **to_csv)
    return path


def changed(frame: pd.DataFrame, **cells) -> pd.DataFrame:
    """A copy of ``frame`` with ``column=[(row, value), ...]`` set (object columns where a value is text)."""
    out = frame.copy()
    for col, changes in cells.items():
        for row, value in changes:
            if isinstance(value, str):
                out[col] = out[col].astype(object)
            out.loc[row, col] = value
    return out


def write_bytes(data: bytes, name: str = "data.csv") -> Callable[[Path, pd.DataFrame], Path]:
    def make(folder: Path, frame: pd.DataFrame) -> Path:
        (folder / name).write_bytes(data)
        return folder / name
    return make


def zipped(folder: Path, frame: pd.DataFrame) -> Path:
    """A zip archive of the CSV and a README, as a download of the data set often is."""
    inner = write(frame, folder, "cal_housing.csv")
    with zipfile.ZipFile(folder / "data.csv", "w") as archive:
        archive.write(inner, "cal_housing.csv")
        archive.writestr("README.txt", "California Housing, StatLib\n")
    return folder / "data.csv"


def gzipped(folder: Path, frame: pd.DataFrame) -> Path:
    (folder / "data.csv").write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    return folder / "data.csv"


def with_thousands(frame: pd.DataFrame) -> pd.DataFrame:
    """The count columns written with thousands separators ("2,810"), as a spreadsheet's number format does."""
    out = frame.astype(object)
    for col in ("total_rooms", "total_bedrooms", "population", "households", "median_house_value"):
        out[col] = [f"{v:,.0f}" for v in frame[col]]
    return out


def duplicated_latitude(folder: Path, frame: pd.DataFrame) -> Path:
    path = folder / "data.csv"
    text = frame.to_csv(index=False).splitlines()
    path.write_text("\n".join([text[0] + ",latitude"] + [line + ",0" for line in text[1:]]) + "\n")
    return path


def unreadable(folder: Path, frame: pd.DataFrame) -> Path:
    path = write(frame, folder)
    path.chmod(0)
    return path


def to_sklearn_layout(frame: pd.DataFrame) -> pd.DataFrame:
    converted = statlib_to_sklearn(frame)
    return converted[[TARGET, *reversed(FEATURES)]]  # another order too


HTML_PAGE = (b'\n\n<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>cal_housing.csv at main'
             b'</title></head>\n<body><table><tr><td>longitude,latitude</td></tr></table></body>\n</html>\n')
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


# --------------------------------------------------------------------------- command-line runs


@dataclass(frozen=True)
class Case:
    """One command-line run: ``--data`` made by ``data`` (default: the 300 districts as they are)."""

    data: Optional[Callable[[Path, pd.DataFrame], Path]] = None
    args: tuple[str, ...] = ()
    output: Optional[Callable[[Path], Path]] = None  # --output-dir (default: <case folder>/out, new)
    expect: tuple[str, ...] = ()  # regular expressions the error line (or, for a run that works, stderr) must match
    early: bool = False  # refused before any step runs: exit 2, no ClearML session
    skip_as_root: bool = False


DATA_ERRORS = {
    "missing_file": Case(lambda d, f: d / "nothere.csv",
                         expect=(r"data file not found: \S*/nothere\.csv", r"pass --data with the path of a CSV")),
    "folder": Case(lambda d, f: d,
                   expect=(r"is a folder, not a file", r"pass --data with the path of a CSV \(or Parquet\) file")),
    "unreadable": Case(unreadable, skip_as_root=True,
                       expect=(r"cannot read \S*data\.csv: Permission denied", r"check the file's permissions")),
    "empty_file": Case(write_bytes(b""),
                       expect=(r"data\.csv is empty", r"pass a CSV file with a header row and data rows")),
    "header_only": Case(lambda d, f: write(f.head(0), d),
                        expect=(r"data\.csv has a header but no data rows", r"pass a CSV with data rows")),
    "binary_file": Case(write_bytes(PNG_BYTES), expect=(r"data\.csv is a PNG image, not a CSV file; pass the CSV file",)),
    "zip_archive": Case(zipped, expect=(r"data\.csv is a zip archive of 2 files \(cal_housing\.csv, README\.txt\), not a "
                                        r"CSV file; unzip it and pass the CSV file itself",)),
    "html_page": Case(write_bytes(HTML_PAGE), expect=(r"is an HTML page \(a web page saved by mistake\?\), not a CSV file",
                                                      r"download the raw CSV")),
    "plain_text": Case(write_bytes(b"California housing prices\nsee the attached table\n"),
                       expect=(r"no ',', ';', tab or '\|' delimiter, so this is not a CSV table",
                               r"pass a CSV file with a header row")),
    "no_header_row": Case(lambda d, f: write(f, d, header=False),
                          expect=(r"the first line holds numbers, not column names", r"add the header line "
                                  + ",".join(STATLIB_COLUMNS))),
    "missing_column": Case(lambda d, f: write(f.drop(columns="households"), d),
                           expect=(r"missing column\(s\) households;", r"the CSV needs either scikit-learn's columns")),
    "renamed_column": Case(lambda d, f: write(f.rename(columns={"median_income": "income"}), d),
                           expect=(r"missing column\(s\) median_income \(found unknown column\(s\): income\)",
                                   r"StatLib columns \(longitude,latitude,")),
    "duplicated_column": Case(duplicated_latitude,
                              expect=(r"duplicated column\(s\) latitude", r"keep one column of each name")),
    "non_numeric_value": Case(lambda d, f: write(changed(f, population=[(5, "abc")]), d),
                              expect=(r"column population has a non-numeric value 'abc' in data row 6",
                                      r"fix or remove that row")),
    "decimal_comma": Case(lambda d, f: write(f, d, sep=";", decimal=","),
                          expect=(r"column longitude has '-122,23' in data row 1, a number with a decimal comma",
                                  r"save the CSV with '\.' as the decimal separator")),
    "negative_count": Case(lambda d, f: write(changed(f, total_rooms=[(4, -5.0)], households=[(9, -1.0)]), d),
                           expect=(r"column total_rooms has 1 negative value\(s\) \(first in data row 5\)",
                                   r"counts cannot be negative, fix or remove those rows")),
    "too_few_rows": Case(lambda d, f: write(f.head(10), d),
                         expect=(r"only 10 (usable|data) row\(s\)", r"pass a CSV with more data rows",
                                 r"needs at least 25 rows \(20 to train, 5 to test\)")),
    "too_few_rows_after_dropping": Case(
        lambda d, f: write(changed(f.head(30), median_house_value=[(i, np.nan) for i in range(8)]), d),
        expect=(r"only 22 usable row\(s\) \(8 more dropped: target MedHouseVal missing or infinite\)",
                r"needs at least 25 rows")),
    "constant_target": Case(lambda d, f: write(f.assign(median_house_value=200_000.0), d),
                            expect=(r"the target MedHouseVal is constant \(2\)", r"check the target column")),
    "feature_without_values": Case(lambda d, f: write(f.assign(total_bedrooms=np.nan), d),
                                   expect=(r"feature\(s\) AveBedrms have no value in any row",
                                           r"fill in the column")),
    # QA findings: a traceback (exit 1) before, and values no district has
    "number_too_large_for_a_float": Case(lambda d, f: write(changed(f, total_rooms=[(4, str(10**400))]), d),
                                         expect=(r"column total_rooms has a number too large for a float, "
                                                 r"100000000000\.\.\. \(401 digits\), in data row 5",
                                                 r"fix or remove that row")),
    "swapped_coordinates": Case(lambda d, f: write(f.rename(columns={"latitude": "longitude", "longitude": "latitude"}),
                                                   d),
                                expect=(r"column Latitude has 300 value\(s\) beyond -90\.\.90 degrees \(first -122\.23 "
                                        r"in data row 1\); Latitude holds longitudes and Longitude latitudes: swap",)),
    "test_size_too_small_for_data": Case(args=("--test-size", "0.01"),
                                         expect=(r"test_size 0\.01 of 300 rows leaves 297 train and 3 test rows",
                                                 r"choose a test_size between 0\.0167 and 0\.933")),
}
for _name in ("missing_file", "folder", "unreadable", "empty_file", "binary_file", "zip_archive",
              "html_page", "plain_text", "no_header_row", "missing_column", "renamed_column",
              "duplicated_column"):
    DATA_ERRORS[_name] = dataclasses.replace(DATA_ERRORS[_name], early=True)  # the header is checked first


def _out_is_a_file(d: Path) -> Path:
    (d / "out").write_text("not a folder\n")
    return d / "out"


def _out_under_a_file(d: Path) -> Path:
    (d / "file").write_text("x\n")
    return d / "file" / "out"


def _out_not_empty(d: Path) -> Path:
    (d / "out").mkdir()
    (d / "out" / "notes.txt").write_text("keep me\n")
    return d / "out"


def _out_not_writable(d: Path) -> Path:
    (d / "locked").mkdir(mode=0o555)
    return d / "locked" / "out"


TEST_SIZE = r"test_size = \S+ is out of range: allowed 0 < test_size < 1"
#: Every bad parameter: (command-line arguments, regular expression of the message). Each is checked
#: in-process by parse_command_line (the check run before any step); those in PARAMETER_ERRORS also
#: through the command line.
PARAMETERS = {
    # XGBoost keeps them as 32-bit floats: a tiny rate became 0 (a huge weight inf) and failed in the step
    "learning_rate_tiny": (("--xgb-learning-rate", "1e-320"),
                           r"xgb_learning_rate = 1e-320 is out of range: allowed 1e-6 <= learning_rate <= 1"),
    "subsample_tiny": (("--xgb-subsample", "1e-50"), r"xgb_subsample = 1e-50 is out of range: allowed 1e-6 <= subsample"),
    "min_child_weight_huge": (("--xgb-min-child-weight", "1e300"),
                              r"xgb_min_child_weight = 1e\+300 is out of range: allowed 0 to 1e6"),
    "data_empty": (("--data", ""),
                   r"data_path = '' is out of range: allowed a CSV or Parquet file's path \(--data PATH\), or 'sklearn'"),
    "test_size_0": (("--test-size", "0"), TEST_SIZE),
    "test_size_1": (("--test-size", "1"), TEST_SIZE),
    "test_size_negative": (("--test-size", "-0.2"), TEST_SIZE),
    "test_size_1.5": (("--test-size", "1.5"), TEST_SIZE),
    "test_size_nan": (("--test-size", "nan"), r"test_size = nan is out of range: allowed 0 < test_size < 1"),
    "poly_degree_0": (("--poly-degree", "0"), r"poly_degree = 0 is out of range: allowed 1 to 4"),
    "poly_degree_5": (("--poly-degree", "5"), r"poly_degree = 5 is out of range: allowed 1 to 4"),
    "xgb_n_estimators_0": (("--xgb-n-estimators", "0"), r"xgb_n_estimators = 0 is out of range: allowed 1 to 1000000"),
    "xgb_n_estimators_negative": (("--xgb-n-estimators", "-5"),
                                  r"xgb_n_estimators = -5 is out of range: allowed 1 to 1000000"),
    "rf_n_estimators_0": (("--rf-n-estimators", "0"), r"rf_n_estimators = 0 is out of range: allowed 1 to 10000"),
    "rf_n_estimators_huge": (("--rf-n-estimators", "10000000000"),
                             r"rf_n_estimators = 10000000000 is out of range: allowed 1 to 10000"),
    "poly_alpha_inf": (("--poly-alpha", "inf"), r"poly_alpha = inf is not a finite number; give a number such as 1.0"),
    "learning_rate_0": (("--xgb-learning-rate", "0"),
                        r"xgb_learning_rate = 0\.0 is out of range: allowed 1e-6 <= learning_rate <= 1"),
    "learning_rate_negative": (("--xgb-learning-rate", "-0.1"),
                               r"xgb_learning_rate = -0\.1 is out of range: allowed 1e-6 <= learning_rate <= 1"),
    "learning_rate_above_1": (("--xgb-learning-rate", "1.5"), r"xgb_learning_rate = 1\.5 is out of range"),
    "unknown_model": (("--models", "polynomial,svm"), r"models = 'polynomial,svm': unknown model name\(s\) svm; "
                      r"allowed: a comma-separated list of polynomial,xgboost,linear,random_forest"),
    "unknown_model_case": (("--models", "XGBoost"), r"unknown model name\(s\) XGBoost; allowed"),
    "no_model": (("--models", " , "), r"models = ' , ' names no model; allowed: a comma-separated list of polynomial"),
    "model_twice": (("--models", "xgboost,xgboost"), r"names a model twice; name each once"),
    "unknown_mode": (("--mode", "cloud"), r"unknown --mode 'cloud'; choose one of offline, local, remote"),
}
PARAMETER_ERRORS = {
    name: Case(args=PARAMETERS[name][0], expect=(PARAMETERS[name][1],), early=True)
    for name in ("test_size_1.5", "poly_degree_5", "xgb_n_estimators_0", "learning_rate_negative", "unknown_model",
                 "unknown_mode", "data_empty")
}
OUTPUT_ERRORS = {
    "output_dir_is_a_file": Case(output=_out_is_a_file, early=True,
                                 expect=(r"output folder \S+/out is a file; pass --output-dir with a folder path",)),
    "output_dir_under_a_file": Case(output=_out_under_a_file, early=True,
                                    expect=(r"\S+/file is a file, so \S+/file/out cannot be created; choose another",)),
    "output_dir_not_empty": Case(output=_out_not_empty, early=True,
                                 expect=(r"output folder \S+/out is not empty; pass a new or empty folder",)),
    "output_dir_not_writable": Case(output=_out_not_writable, skip_as_root=True, early=True,
                                    expect=(r"folder \S+/locked is not writable; choose a writable --output-dir",)),
    # issue 10: refused before any step, not after training with a FileNotFoundError on the staging folder
    "output_dir_in_proc": Case(output=lambda d: Path("/proc") / f"foo-{d.name}", early=True,
                               expect=(r"cannot create folders in /proc \(No such file or directory\), so /proc/foo-\S+ "
                                       r"cannot hold the results; choose a writable --output-dir",)),
}
PARAMETER_ERRORS.update(OUTPUT_ERRORS)

ARGPARSE_ERRORS = {  # beyond the list: a value argparse itself rejects
    "test_size_not_a_number": Case(args=("--test-size", "abc"), early=True,
                                   expect=(r"--test-size: invalid float value: 'abc'",)),
}

WARNED = ("ignoring unknown column\\(s\\) ocean_proximity", r"2 district\(s\) with 0 households",
          r"dropping 3 row\(s\) whose target MedHouseVal is missing or infinite",
          r"6 row\(s\) have missing or infinite feature values; each model imputes them",
          r"feature HouseAge is constant")


def repairable(folder: Path, frame: pd.DataFrame) -> Path:
    """Every kind of data the pipeline repairs, at once: each must give its warning, with its count."""
    out = changed(
        frame,
        median_house_value=[(3, np.nan), (7, np.nan), (10, np.inf)],  # 3 rows dropped
        total_bedrooms=[(20, np.nan), (21, np.nan)],  # AveBedrms missing in 2 rows
        median_income=[(22, -np.inf)],  # a feature infinite in 1 row
        households=[(30, 0.0), (31, 0.0), (40, np.inf)],  # 3 rows of unknown ratios, 2 with 0 households
    )
    out["housing_median_age"] = 30.0  # a constant column
    out["ocean_proximity"] = "NEAR BAY"  # the extra column of the Kaggle copy of the data set
    return write(out, folder)


WORKS = {
    "comma": Case(),
    "semicolon_columns_reversed": Case(lambda d, f: write(f[list(reversed(f.columns))], d, sep=";")),
    "tab_sklearn_layout_other_order": Case(lambda d, f: write(to_sklearn_layout(f), d, sep="\t")),
    "repairable_data": Case(repairable, expect=WARNED),
    # issue 10: files people really have, read as pandas reads them
    "old_mac_line_endings": Case(lambda d, f: write_bytes(f.to_csv(index=False).replace("\n", "\r").encode())(d, f)),
    "thousands_separators": Case(lambda d, f: write(with_thousands(f), d)),
    "utf16_excel_unicode_text": Case(lambda d, f: write(f, d, sep="\t", encoding="utf-16")),
    "gzip_csv": Case(gzipped),
}
CASES = {**DATA_ERRORS, **PARAMETER_ERRORS, **ARGPARSE_ERRORS, **WORKS}


@dataclass
class Run:
    case: Case
    folder: Path
    out: Path
    cache: Path
    result: subprocess.CompletedProcess


class Runner:
    """Runs the selected command-line cases, four at a time, on first demand."""

    def __init__(self, raw: pd.DataFrame, tmp: Path, selected: set[str]):
        self.raw, self.tmp, self.selected, self.runs = raw, tmp, selected, {}

    def __getitem__(self, name: str) -> Run:
        if name not in self.runs:
            todo = sorted((self.selected | {name}) - set(self.runs))
            with ThreadPoolExecutor(max_workers=4) as pool:
                for key, run in zip(todo, pool.map(self._run, todo), strict=True):
                    self.runs[key] = run
        return self.runs[name]

    def _run(self, name: str) -> Optional[Run]:
        case = CASES[name]
        if case.skip_as_root and AS_ROOT:
            return None
        folder = self.tmp / name
        folder.mkdir()
        data = (case.data or (lambda d, f: write(f, d)))(folder, self.raw)
        out = case.output(folder) if case.output else folder / "out"
        cache = folder / "clearml-cache"
        env = dict(os.environ, CLEARML_CACHE_DIR=str(cache))
        argv = [sys.executable, str(ROOT / "clearml_pipeline.py"), "--data", str(data), "--output-dir", str(out),
                *FAST, *case.args]
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        return Run(case, folder, out, cache, result)


#: Cases a test uses besides its own ``name`` parameter.
ALSO_USES = {"test_other_delimiters_orders_and_layouts_give_the_same_results": {"comma"},
             "test_repairable_data_runs_with_one_warning_per_repair": {"repairable_data"}}


@pytest.fixture(scope="module")
def cli(request, raw, tmp_path_factory) -> Runner:
    """The command-line runs of the tests of this module that the session selected."""
    selected = set()
    for item in request.session.items:
        if getattr(item, "module", None) is request.module:
            selected |= ALSO_USES.get(item.originalname, set())
            if hasattr(item, "callspec") and item.callspec.params.get("name") in CASES:
                selected.add(item.callspec.params["name"])
    return Runner(raw, tmp_path_factory.mktemp("cli"), selected)


def cases(table: dict[str, Case]) -> list:
    return [pytest.param(name, id=name, marks=([pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)]
                                               if case.skip_as_root else []))
            for name, case in table.items()]


def assert_no_results(out: Path) -> None:
    """Neither results nor a staging folder: a refused run leaves nothing behind."""
    if out.is_dir():
        names = {p.relative_to(out).as_posix() for p in out.rglob("*")}
        assert "metrics.csv" not in names and "models" not in names, names
        assert not [n for n in names if n.endswith(".png")], names
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def not_info(stderr: str) -> list[str]:
    """The lines of ``stderr`` other than the steps' ``info:`` lines (what they did: loaded, split, trained, scored)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("info: ")]


def assert_refused(run: Run) -> str:
    """Non-zero exit, exactly one ``error:`` line on stderr (besides ``info:`` lines of steps that ran)
    naming the case's problem and fix; returns it."""
    result = run.result
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = not_info(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for pattern in run.case.expect:
        assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    assert_no_results(run.out)
    return lines[0]


def assert_before_any_step(run: Run) -> None:
    assert run.result.returncode == 2, run.result.stderr
    assert not list(run.cache.glob("offline/offline-*")), "ClearML started: the check came after a step ran"


def assert_complete(run: Run) -> pd.DataFrame:
    """A run that works: exit 0, no error, every result file; returns metrics.csv."""
    result = run.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower(), result.stderr
    for name in ("metrics.csv", *PNGS, *MODEL_FILES):
        assert (run.out / name).is_file(), name
    assert not list(run.out.parent.glob(f".{run.out.name}.partial-*"))
    return pd.read_csv(run.out / "metrics.csv")


@pytest.mark.parametrize("name", cases(DATA_ERRORS))
def test_bad_data_is_refused_in_one_line(cli, name):
    run = cli[name]
    assert_refused(run)
    if run.case.early:
        assert_before_any_step(run)


@pytest.mark.parametrize("args, message", [pytest.param(*v, id=k) for k, v in PARAMETERS.items()])
def test_bad_parameter_is_caught_by_the_command_line_check(raw, tmp_path, args, message):
    """parse_command_line, run before ClearML starts, refuses every bad value naming the allowed range."""
    from cli.errors import UsageError
    from cli.parser import parse_command_line

    argv = ["--data", str(write(raw, tmp_path)), "--output-dir", str(tmp_path / "out"), *args]
    with pytest.raises(UsageError, match=message):
        parse_command_line(argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", cases(PARAMETER_ERRORS))
def test_bad_parameter_is_refused_before_any_step(cli, name):
    run = cli[name]
    assert_refused(run)
    assert_before_any_step(run)
    if name == "output_dir_not_empty":
        assert [p.name for p in run.out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("name", cases({n: DATA_ERRORS[n] for n in (
    "test_size_too_small_for_data", "header_only", "too_few_rows")}))
def test_split_too_small_for_the_data_is_refused_before_any_step(cli, name):
    assert_before_any_step(cli[name])


@pytest.mark.parametrize("name", cases(ARGPARSE_ERRORS))
def test_value_argparse_rejects_is_refused_in_one_line(cli, name):
    run = cli[name]
    assert_refused(run)
    assert_before_any_step(run)


@pytest.mark.parametrize("name", [n for n in WORKS if n not in ("comma", "repairable_data")])
def test_other_delimiters_orders_and_layouts_give_the_same_results(cli, name):
    baseline = assert_complete(cli["comma"])
    assert list(baseline["model"]) == ["polynomial", "xgboost"] and (baseline["n_test"] == 60).all()
    metrics = assert_complete(cli[name])
    assert not_info(cli[name].result.stderr) == []  # nothing to warn about
    assert "info: loaded " in cli[name].result.stderr  # the steps say what they did
    pd.testing.assert_frame_equal(metrics, baseline, rtol=1e-9)


def test_repairable_data_runs_with_one_warning_per_repair(cli):
    run = cli["repairable_data"]
    metrics = assert_complete(run)
    for pattern in WARNED:
        assert re.search(pattern, run.result.stderr), f"{pattern!r} not in {run.result.stderr!r}"
    assert len(not_info(run.result.stderr)) == len(WARNED), run.result.stderr
    assert (metrics["n_test"] == math.ceil((N_ROWS - 3) * 0.2)).all()
    assert metrics.loc[metrics["model"] == "xgboost", "r2"].item() > 0.4


# --------------------------------------------------------------------------- steps.data, directly


@pytest.mark.parametrize(
    "cells, warning, n_rows, nan_counts",
    [
        pytest.param({"median_house_value": [(3, np.nan), (7, np.nan), (10, np.inf), (11, -np.inf)]},
                     r"dropping 4 row\(s\) whose target MedHouseVal is missing or infinite", N_ROWS - 4, {},
                     id="target_nan_inf_dropped"),
        pytest.param({"total_bedrooms": [(3, np.nan), (8, np.nan)], "median_income": [(5, np.inf)],
                      "latitude": [(6, -np.inf)]},
                     r"4 row\(s\) have missing or infinite feature values", N_ROWS,
                     {"AveBedrms": 2, "MedInc": 1, "Latitude": 1}, id="feature_nan_inf_imputed"),
        pytest.param({"households": [(4, 0.0), (9, 0.0)]},
                     r"2 district\(s\) with 0 households: their AveRooms, AveBedrms and AveOccup are unknown", N_ROWS,
                     {"AveRooms": 2, "AveBedrms": 2, "AveOccup": 2}, id="zero_households"),
        pytest.param({"households": [(4, np.inf)], "total_rooms": [(5, np.inf)]},
                     r"2 row\(s\) have missing or infinite feature values", N_ROWS,
                     {"AveRooms": 2, "AveBedrms": 1, "AveOccup": 1}, id="infinite_counts_imputed"),
    ],
)
def test_repairable_values_warn_with_their_row_count(tmp_path, raw, caplog, cells, warning, n_rows, nan_counts):
    data = load_dataset(str(write(changed(raw, **cells), tmp_path)))
    assert re.search(warning, caplog.text), caplog.text
    assert len(data) == n_rows
    assert data.isna().sum()[data.isna().sum() > 0].to_dict() == nan_counts
    assert np.isfinite(data.to_numpy()[~np.isnan(data.to_numpy())]).all()


def test_constant_and_extra_columns_warn_and_are_kept_or_ignored(tmp_path, raw, caplog):
    data = load_dataset(str(write(raw.assign(housing_median_age=30.0, ocean_proximity="INLAND"), tmp_path)))
    assert "feature HouseAge is constant; it carries no information" in caplog.text
    assert "data.csv: ignoring unknown column(s) ocean_proximity" in caplog.text
    assert list(data.columns) == [*FEATURES, TARGET] and (data["HouseAge"] == 30.0).all()


def test_refused_data_gives_no_warning_before_its_error(tmp_path, raw, caplog):
    """Warnings come out only for accepted data: a refused file gives one line, its error."""
    frame = changed(raw.assign(extra=1.0), median_house_value=[(0, np.nan)], households=[(1, 0.0)],
                    total_bedrooms=[(2, np.nan)], total_rooms=[(4, -5.0)])
    with pytest.raises(DataError, match="negative"):
        load_dataset(str(write(frame, tmp_path)))
    with pytest.raises(DataError, match="constant"):
        load_dataset(str(write(frame.assign(total_rooms=1.0, median_house_value=1e5), tmp_path)))
    with pytest.raises(DataError, match="only 24 usable row"):
        load_dataset(str(write(frame.assign(total_rooms=1.0).head(25), tmp_path)))
    assert caplog.text == ""
    load_dataset(str(write(frame.assign(total_rooms=1.0), tmp_path)))
    assert caplog.text.count("WARNING") == 4  # extra column, 0 households, target dropped, missing features


def test_chunked_read_equals_one_shot_read_with_progress_lines(housing_csv, monkeypatch, caplog):
    whole = read_housing_csv(housing_csv)
    lines = []
    monkeypatch.setattr(steps.data, "CHUNK_ROWS", 5000)
    monkeypatch.setattr(steps.data, "PROGRESS_BYTES", 0)
    chunked = read_housing_csv(housing_csv, progress=lines.append)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)
    n = len(whole)
    expected = [*range(5000, n, 5000), n]
    assert [int(re.match(r"read ([\d,]+) rows of ", line).group(1).replace(",", "")) for line in lines] == expected
    assert all(housing_csv.name in line for line in lines)
    with caplog.at_level("INFO", logger="steps.data"):  # by default the lines go to the log
        read_housing_csv(housing_csv)
    assert caplog.text.count(" rows of ") == len(expected)


def test_no_progress_lines_for_a_small_file(tmp_path, raw):
    lines = []
    read_housing_csv(write(raw, tmp_path), progress=lines.append)
    assert lines == []


@pytest.mark.parametrize("column, value, message", [
    ("population", "abc", r"column population has a non-numeric value 'abc' in data row 250"),
    ("total_rooms", -5.0, r"column total_rooms has 1 negative value\(s\) \(first in data row 250\)"),
])
def test_errors_in_a_later_chunk_name_the_row_of_the_file(tmp_path, raw, monkeypatch, column, value, message):
    monkeypatch.setattr(steps.data, "CHUNK_ROWS", 64)
    with pytest.raises(DataError, match=message):
        read_housing_csv(write(changed(raw, **{column: [(249, value)]}), tmp_path))


def test_progress_lines_reach_the_command_line(raw, tmp_path):
    """A large file's progress lines reach stderr (CHUNK_ROWS and PROGRESS_BYTES shrunk in the run)."""
    data = write(raw, tmp_path)
    code = (
        "import runpy, sys; sys.path.insert(0, sys.argv[1]); import steps.data as d; "
        "d.CHUNK_ROWS, d.PROGRESS_BYTES = 100, 0; sys.argv = sys.argv[2:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    argv = [sys.executable, "-c", code, str(ROOT), str(ROOT / "clearml_pipeline.py"), "--data", str(data),
            "--output-dir", str(tmp_path / "out"), *FAST]
    result = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, CLEARML_CACHE_DIR=str(tmp_path / "cache")),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "metrics.csv").is_file()
    for rows in (100, 200, 300):
        assert f"read {rows} rows of data.csv" in result.stderr


def test_unreadable_file_message(tmp_path, raw, monkeypatch):
    """chmod 000 cannot be tested as root; the same message, from a refused open()."""
    path = write(raw, tmp_path)

    def refuse(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(steps.csv_files, "open", refuse, raising=False)
    with pytest.raises(DataError, match=r"cannot read \S+data\.csv: Permission denied; check the file's permissions"):
        read_housing_csv(path)


def test_output_folder_in_a_read_only_folder(tmp_path, monkeypatch, split42):
    """The results are staged inside the output folder: a new folder needs a writable parent, an
    existing empty one only needs to be writable itself (a read-only parent is no matter)."""
    from steps.evaluation import metrics_table
    from steps.models import build_linear

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(steps.outputs.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    with pytest.raises(OutputError, match=rf"folder {re.escape(str(locked))} is not writable; choose a writable"):
        check_output_dir(locked / "out")
    (locked / "out").mkdir()
    X_train, X_test, y_train, y_test = split42
    model = build_linear().fit(X_train, y_train)
    metrics = metrics_table(y_test, {"linear": model.predict(X_test)})
    steps.outputs.write_run_outputs(locked / "out", metrics, {}, {"linear": model})
    assert sorted(p.name for p in locked.iterdir()) == ["out"]
    assert sorted(p.name for p in (locked / "out").iterdir()) == ["metrics.csv", "models"]


@pytest.mark.parametrize("n_rows", [25, 26, 45, 99, 300, 20640])
@pytest.mark.parametrize("test_size", [1e-4, 0.9999])
def test_split_error_proposes_test_sizes_that_work(n_rows, test_size):
    with pytest.raises(DataError) as refused:
        check_split_sizes(n_rows, test_size)
    low, high = map(float, re.search(r"between (\S+) and (\S+) or", str(refused.value)).groups())
    for value in (low, high):
        check_split_sizes(n_rows, value)  # does not raise


def test_check_csv_counts_rows_and_checks_the_split(tmp_path, raw):
    path = write(raw, tmp_path)
    path.write_text(path.read_text() + "\n\n")  # blank lines are no rows
    assert check_csv(path, 0.2) == N_ROWS
    with pytest.raises(DataError, match=r"test_size 0\.01 of 300 rows leaves 297 train and 3 test rows; at least "
                       r"20 train and 5 test rows are needed, choose a test_size between 0\.0167 and 0\.933"):
        check_csv(path, 0.01)
    with pytest.raises(DataError, match=r"test_size 0\.95 of 300 rows leaves 15 train and 285 test rows"):
        check_csv(path, 0.95)
    path.write_text("\n  \n\n")  # blank lines only
    with pytest.raises(DataError, match=r"data\.csv is empty; pass a CSV file with a header row and data rows"):
        check_csv(path, 0.2)
    with pytest.raises(DataError, match=r"has a header but no data rows"):
        check_csv(write(raw.head(0), tmp_path, "header.csv"), 0.2)
    with pytest.raises(DataError, match=r"only 24 data row\(s\); the pipeline needs at least 25"):
        check_csv(write(raw.head(24), tmp_path, "small.csv"), 0.2)


# --------------------------------------------------------------------------- issue 10: the files people really have
# Every file is the real StatLib CSV (20,640 districts), converted with one line of pandas, the
# standard library or plain bytes. A readable file must give exactly the data set of the CSV; any
# other must be refused, before any step (check_csv, as the command line does) and by the load
# step alike, with a message naming what the file is and how to convert it.


def _excel_unicode_text(path: Path, frame: pd.DataFrame, text: str) -> None:
    frame.to_csv(path, sep="\t", index=False, encoding="utf-16")  # Excel's "Unicode Text": UTF-16 LE + BOM, tabs


def _zip_of(*members: str):
    def make(path: Path, frame: pd.DataFrame, text: str) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            for name in members:
                archive.writestr(name, text if name.endswith(".csv") else "<x/>")
    return make


def _zip_r(macos: bool = False):
    """``zip -r data.zip data/`` (a folder entry, then the CSV in it); ``macos``: as Finder's Compress makes it,
    with its ``__MACOSX/`` resource-fork entries."""
    def make(path: Path, frame: pd.DataFrame, text: str) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data/", "")
            archive.writestr("data/cal_housing.csv", text)
            if macos:
                archive.writestr("__MACOSX/", "")
                archive.writestr("__MACOSX/data/", "")
                archive.writestr("__MACOSX/data/._cal_housing.csv", b"\x00\x05\x16\x07" + bytes(78))
    return make


def _xlsx(path: Path, frame: pd.DataFrame, text: str) -> None:
    """The package parts every .xlsx has (openpyxl is not installed here to write a full workbook)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")


def _ods(path: Path, frame: pd.DataFrame, text: str) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", "<office:document-content/>")


def _sqlite(path: Path, frame: pd.DataFrame, text: str) -> None:
    import sqlite3

    with sqlite3.connect(path) as con:
        frame.to_sql("housing", con, index=False)


def _bytes(data: bytes):
    return lambda path, frame, text: path.write_bytes(data)


def _text(fn):
    return lambda path, frame, text: path.write_bytes(fn(text))


#: name -> how the real CSV is converted: ``make(path, frame, text)`` with the CSV as a DataFrame and as text.
READABLE = {
    "old_mac_line_endings": _text(lambda t: t.replace("\n", "\r").encode()),  # tr '\n' '\r'
    "windows_line_endings": _text(lambda t: t.replace("\n", "\r\n").encode()),
    "utf8_bom": _text(lambda t: codecs.BOM_UTF8 + t.encode()),
    "utf16_excel_unicode_text": _excel_unicode_text,
    "utf16_le_without_bom": _text(lambda t: t.encode("utf-16-le")),
    "utf16_be_without_bom": _text(lambda t: t.encode("utf-16-be")),
    "utf32_with_bom": lambda p, f, t: f.to_csv(p, index=False, encoding="utf-32"),
    "utf32_be_without_bom": _text(lambda t: t.encode("utf-32-be")),
    "latin1_with_accents": lambda p, f, t: f.assign(ocean_proximity="PRÈS DE LA BAIE").to_csv(
        p, index=False, encoding="latin-1"),
    "thousands_separators": lambda p, f, t: with_thousands(f).to_csv(p, index=False),
    "gzip": lambda p, f, t: f.to_csv(p, index=False, compression="gzip"),
    "bz2": lambda p, f, t: f.to_csv(p, index=False, compression="bz2"),
    "xz": lambda p, f, t: f.to_csv(p, index=False, compression="xz"),
    "zip_of_one_csv": lambda p, f, t: f.to_csv(p, index=False, compression={"method": "zip",
                                                                            "archive_name": "cal_housing.csv"}),
    "blank_separated": lambda p, f, t: f.to_csv(p, index=False, sep=" "),
    "saved_with_its_index": lambda p, f, t: f.to_csv(p),  # a blank column name, then 0, 1, 2, ...
    # QA findings
    "trailing_delimiter_on_data_rows": _text(lambda t: t.replace("\n", ",\n").replace(",\n", "\n", 1).encode()),
    "zip_r_of_a_folder": _zip_r(),
    "zip_by_macos_finder": _zip_r(macos=True),
    "excel_sep_hint_line": _text(lambda t: ("sep=;\n" + t.replace(",", ";")).encode()),
    "excel_sep_hint_line_utf8_bom_crlf": _text(lambda t: codecs.BOM_UTF8 + ("sep=;\n" + t.replace(",", ";"))
                                               .replace("\n", "\r\n").encode()),
    "blank_lines_before_the_header": _text(lambda t: ("\n\n" + t).encode()),
}

Q = re.escape
#: name -> (make, regular expression of the whole message after "<file> ").
REFUSED = {
    "xlsx": (_xlsx, r"is an Excel workbook \(\.xlsx\), not a CSV file; in Excel choose File > Save As > CSV UTF-8, or "
             r"pip install openpyxl, then python -c .*read_excel\('\S+'\)\.to_csv\('data\.csv', index=False\)\"$"),
    "xls": (_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)),
            r"is an Excel 97-2003 workbook \(\.xls\) or another OLE2 Office file, not a CSV file; open it in Excel or "
            r"LibreOffice and save it as CSV UTF-8, or run pip install xlrd, then python -c .*read_excel"),
    "ods": (_ods, r"is an OpenDocument spreadsheet \(\.ods\), not a CSV file; in LibreOffice choose File > Save As > "
            r"Text CSV"),
    "parquet": (_bytes(b"PAR1\x15\x04\x15\x10" + bytes(64) + b"PAR1"),
                r"is an Apache Parquet file(, which pandas reads once pyarrow is installed: pip install pyarrow| that "
                r"pandas cannot read \(.+\); write it again)"),
    "feather": (_bytes(b"ARROW1\x00\x00" + bytes(64)),
                r"is an Apache Arrow / Feather v2 file, not a CSV file; .*read_feather"),
    "sqlite": (_sqlite, r"is an SQLite database, not a CSV file; export its table: python -c \"import sqlite3, pandas; "
               r"pandas\.read_sql\('SELECT \* FROM \[\w+\]', sqlite3\.connect\('\S+'\)\)\.to_csv\('data\.csv'"),
    "pickle": (lambda p, f, t: f.to_pickle(p, compression=None),
               r"is a Python pickle, not a CSV file; convert it \(only if you trust its source\): .*read_pickle"),
    "stata": (lambda p, f, t: f.head(100).to_stata(p, write_index=False),
              r"is a Stata data file \(\.dta\), not a CSV file; .*read_stata"),
    "numpy": (lambda p, f, t: _npy(p, f),
              r"is a NumPy array file \(\.npy\), which has no column names, not a CSV file"),
    "json_records": (lambda p, f, t: f.to_json(p, orient="records"),
                     r"is a JSON file, not a CSV file; convert it: python -c \"import pandas; pandas\.read_json\('\S+'\)"),
    "json_lines": (lambda p, f, t: f.to_json(p, orient="records", lines=True),
                   r"is JSON Lines \(one JSON record per line\), not a CSV file; .*read_json\('\S+', lines=True\)"),
    "html_table": (lambda p, f, t: f.head(50).to_html(p),
                   r"is an HTML page \(a web page saved by mistake\?\), not a CSV file; download the raw CSV file instead"),
    "xml": (lambda p, f, t: f.head(50).to_xml(p, parser="etree"),
            r"is an XML document, not a CSV file; convert it: .*read_xml"),
    "zip_of_two_files": (_zip_of("cal_housing.csv", "cal_housing.domain"),
                         r"is a zip archive of 2 files \(cal_housing\.csv, cal_housing\.domain\), not a CSV file; unzip it "
                         r"and pass the CSV file itself"),
    "tar_gz": (lambda p, f, t: _tar_gz(p, t),
               r"is a tar archive \(gzip-compressed\), not a CSV file; extract it \(tar xf\)"),
    "gzip_of_parquet_is_named_inside": (lambda p, f, t: p.write_bytes(gzip.compress(b"PAR1" + bytes(32))),
                                     r"is an Apache Parquet file \(gzip-compressed\), not a CSV file"),
    "gzip_of_nothing": (lambda p, f, t: p.write_bytes(gzip.compress(b"")),
                        r"is empty \(gzip-compressed\); pass a CSV file with a header row and data rows"),
    "damaged_gzip": (lambda p, f, t: p.write_bytes(gzip.compress(t.encode())[:2000]),
                     r"is a damaged gzip file \(.*\); decompress it again from its source, or pass the CSV file itself"),
    "gzip_cut_in_the_middle": (lambda p, f, t: p.write_bytes(gzip.compress(t.encode())[:300_000]),
                               r"is a damaged gzip file \(.*\); decompress it again from its source, or pass the CSV "
                               r"file itself"),
    "zstd": (_bytes(b"\x28\xb5\x2f\xfd" + bytes(64)),
             r"is a zstd-compressed file, not a CSV file; decompress it: pip install zstandard, then python -c"),
    "pdf": (_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(64)), r"is a PDF document, not a CSV file"),
    "binary_noise": (_bytes(bytes(range(256)) * 8), r"is a binary file \(not text in any common encoding\), not a CSV "
                     r"file; export the data from the program that made it as CSV \(UTF-8\)"),
    "empty": (_bytes(b""), r"is empty; pass a CSV file with a header row and data rows"),
    "blank_lines_only": (_bytes(b"\n\r\n  \n"), r"is empty; pass a CSV file with a header row and data rows"),
    "utf16_empty": (_bytes(codecs.BOM_UTF16_LE + "\r\n".encode("utf-16-le")),
                    r"is empty; pass a CSV file with a header row and data rows"),
}


def _npy(path, frame) -> None:
    with open(path, "wb") as handle:
        np.save(handle, frame.to_numpy())


def _tar_gz(path: Path, text: str) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("cal_housing.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def statlib(housing_csv):
    """The real StatLib CSV: (DataFrame as read by pandas, its text)."""
    if "households" not in housing_csv.read_text().splitlines()[0]:
        pytest.skip("these conversions start from the StatLib layout")
    return pd.read_csv(housing_csv), housing_csv.read_text()


@pytest.mark.parametrize("name", list(READABLE))
def test_files_pandas_reads_are_read(tmp_path, statlib, housing, caplog, name):
    frame, text = statlib
    path = tmp_path / "data.csv"
    READABLE[name](path, frame, text)
    assert check_csv(path, 0.2) == 20640  # the command line's count, before any step
    with caplog.at_level("WARNING", logger="steps"):
        data = load_dataset(str(path))
    pd.testing.assert_frame_equal(data, housing, check_exact=False, rtol=1e-12)
    warnings = [r.getMessage() for r in caplog.records]
    if name == "saved_with_its_index":
        assert warnings == [f"{path}: ignoring unknown column(s) column 1 (no name: a saved row index?)"]
    elif name == "latin1_with_accents":
        assert warnings == [f"{path}: ignoring unknown column(s) ocean_proximity"]
    else:
        assert warnings == []


@pytest.mark.parametrize("name", list(REFUSED))
def test_other_files_are_refused_naming_what_they_are(tmp_path, statlib, name):
    frame, text = statlib
    path = tmp_path / "data.csv"
    make, message = REFUSED[name]
    make(path, frame, text)
    with pytest.raises(DataError) as early:
        check_csv(path, 0.2)
    with pytest.raises(DataError) as late:
        load_dataset(str(path))
    assert str(early.value) == str(late.value)
    assert re.fullmatch(Q(str(path)) + " " + message + ".*", str(early.value)), str(early.value)
    assert "\n" not in str(early.value)


def test_thousands_separators_are_not_read_in_a_semicolon_file(tmp_path, raw):
    """Where ';' separates the cells, ',' is the decimal comma: "2,810" is refused, not read as 2810."""
    path = write(with_thousands(raw), tmp_path, sep=";")
    with pytest.raises(DataError, match=r"column total_rooms has '7,099' in data row 2, a number with a decimal comma"):
        load_dataset(str(path))


def test_a_decimal_comma_in_a_comma_file_is_not_taken_for_thousands(tmp_path, raw):
    frame = changed(raw, median_income=[(4, "3,8462")])
    with pytest.raises(DataError, match=r"column median_income has '3,8462' in data row 5, a number with a decimal comma"):
        load_dataset(str(write(frame, tmp_path)))


# --------------------------------------------------------------------------- issue 10: output folders claimed at once

CLAIMER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from steps.outputs import OutputError, claim_output_dir, staged_output
try:
    claim_output_dir(sys.argv[2])
except OutputError as exc:
    print("refused", exc, flush=True)
    sys.exit(2)
if sys.argv[3] == "stage":  # killed while writing its results
    with staged_output(sys.argv[2]) as stage:
        (stage / "metrics.csv").write_text("model,r2\\nlinear,0.6\\n")
        print("staging", flush=True)
        time.sleep(120)
print("claimed", flush=True)
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 120)
"""


def _claimer(out: Path, mode: str = "hold", *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != steps.outputs.CLAIM_ENV}  # another run, not a child of ours
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(ROOT), str(out), mode, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_claim_of_the_same_folder_is_refused_at_once(tmp_path):
    import time

    out = tmp_path / "new" / "out"
    holder = _claimer(out)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        started = time.monotonic()
        with pytest.raises(OutputError, match=rf"output folder {re.escape(str(out))} is in use by another run \(process "
                           rf"{holder.pid} on \S+\); wait for it to finish or pass another --output-dir"):
            steps.outputs.claim_output_dir(out)
        with pytest.raises(OutputError, match=r"is in use by another run"):
            check_output_dir(out)  # the evaluate step of a run that did not claim it
        assert time.monotonic() - started < 1
        assert [p.name for p in out.iterdir()] == [steps.outputs.CLAIM_FILE]
    finally:
        holder.kill()
        holder.wait()
    assert steps.outputs.claim_output_dir(out) == out  # its run is gone: the folder is free again
    steps.outputs.release_output_dir(out)
    assert out.is_dir() and list(out.iterdir()) == []  # it existed before this claim: kept, empty


def test_of_runs_started_together_exactly_one_claims_a_new_folder(tmp_path):
    out = tmp_path / "out"
    procs = [_claimer(out, "hold", "3") for _ in range(4)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert sorted(o.split()[0] for o in outputs) == ["claimed", "refused", "refused", "refused"], outputs
    assert sorted(p.returncode for p in procs) == [0, 2, 2, 2]
    assert not out.exists()  # the winner wrote nothing: its claim's folder went away with it


def test_a_run_killed_while_staging_leaves_nothing_taken_for_results(tmp_path):
    out = tmp_path / "out"
    victim = _claimer(out, "stage")
    assert victim.stdout.readline().strip() == "staging"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    left = sorted(p.name for p in out.iterdir())
    assert left[0] == steps.outputs.CLAIM_FILE and left[1].startswith(steps.outputs.STAGE_PREFIX) and len(left) == 2
    assert not (out / "metrics.csv").exists()  # the staged metrics.csv is not a result
    assert check_output_dir(out) == out  # neither blocks the next run
    steps.outputs.claim_output_dir(out)
    assert [p.name for p in out.iterdir()] == [steps.outputs.CLAIM_FILE]  # the stale staging folder is gone
    steps.outputs.release_output_dir(out)


def test_the_evaluate_step_in_a_child_process_writes_into_the_folder_its_run_claimed(tmp_path):
    """ClearML's local mode runs each step as a child process of the run, which holds the claim."""
    out = tmp_path / "out"
    steps.outputs.claim_output_dir(out)
    code = ("import sys, pandas; sys.path.insert(0, sys.argv[1]); from steps.outputs import write_run_outputs; "
            "write_run_outputs(sys.argv[2], pandas.DataFrame({'model': ['m'], 'r2': [0.5]}), {}, {})")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(out)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "models"]  # the marker went with the writing
    finally:
        steps.outputs.release_output_dir(out)
    assert pd.read_csv(out / "metrics.csv").to_dict("list") == {"model": ["m"], "r2": [0.5]}


def test_a_claim_released_without_results_removes_the_folder_it_created(tmp_path):
    new, empty = tmp_path / "a" / "new", tmp_path / "empty"
    empty.mkdir()
    for path in (new, empty):
        assert steps.outputs.claim_output_dir(path) == path
        assert steps.outputs.claim_output_dir(path) == path  # the same run again: the same claim
        steps.outputs.release_output_dir(path)
    assert not new.exists() and empty.is_dir() and list(empty.iterdir()) == []


def test_output_folder_under_proc_is_refused_before_anything_runs():
    with pytest.raises(OutputError, match=r"cannot create folders in /proc \(No such file or directory\), so /proc/foo "
                       r"cannot hold the results; choose a writable --output-dir"):
        check_output_dir("/proc/foo")


def test_two_runs_into_the_same_new_folder_the_second_is_refused_before_any_step(raw, tmp_path):
    import time

    data, out = write(raw, tmp_path), tmp_path / "out"
    argv = [sys.executable, str(ROOT / "clearml_pipeline.py"), "--data", str(data), "--output-dir", str(out), *FAST]
    env = {k: v for k, v in os.environ.items() if k != steps.outputs.CLAIM_ENV}
    first = subprocess.Popen(argv, cwd=ROOT, env=dict(env, CLEARML_CACHE_DIR=str(tmp_path / "c1")),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / steps.outputs.CLAIM_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(argv, cwd=ROOT, env=dict(env, CLEARML_CACHE_DIR=str(tmp_path / "c2")),
                            capture_output=True, text=True, timeout=120)
    first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: output folder {out} is in use by another run (process {first.pid} on {os.uname().nodename}); "
        "wait for it to finish or pass another --output-dir"]
    assert not list((tmp_path / "c2").glob("offline/offline-*"))  # refused before ClearML started
    assert (out / "metrics.csv").is_file() and not (out / steps.outputs.CLAIM_FILE).exists()


def test_without_file_locks_a_claim_is_a_marker_and_the_run_still_writes(tmp_path, monkeypatch, split42):
    """Where fcntl is missing (Windows) the claim is only a marker: results are written all the same."""
    from steps.evaluation import metrics_table
    from steps.models import build_linear

    monkeypatch.setattr(steps.outputs, "fcntl", None)
    out = tmp_path / "out"
    steps.outputs.claim_output_dir(out)
    X_train, X_test, y_train, y_test = split42
    model = build_linear().fit(X_train, y_train)
    steps.outputs.write_run_outputs(out, metrics_table(y_test, {"linear": model.predict(X_test)}), {}, {})
    steps.outputs.release_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "models"]
