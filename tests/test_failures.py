"""Failures during a run: a step that raises, Ctrl-C/SIGTERM, concurrent runs, reruns."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--xgb-n-estimators", "150", "--poly-degree", "2"]


@pytest.fixture(scope="module")
def small_csv(housing_csv, tmp_path_factory) -> Path:
    """The first 3,000 districts of the real data, same layout."""
    path = tmp_path_factory.mktemp("small") / "small.csv"
    pd.read_csv(housing_csv, nrows=3000).to_csv(path, index=False)
    return path


def start(*args: str, cache: Path, cwd: Path = ROOT) -> subprocess.Popen:
    env = dict(os.environ, CLEARML_CACHE_DIR=str(cache))
    return subprocess.Popen([sys.executable, str(ROOT / "clearml_pipeline.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def session(cache: Path) -> tuple[dict, str]:
    """(task.json, log text) of the only offline session under ``cache``."""
    (archive,) = list((cache / "offline").glob("*.zip"))
    with zipfile.ZipFile(archive) as z:
        task = json.loads(z.read("task.json"))
        log = "".join(e["msg"] for line in z.read("log.jsonl").decode().splitlines() for e in json.loads(line))
    return task, log


def test_a_step_that_raises_stops_the_run_and_marks_it_failed(small_csv, tmp_path):
    bad = tmp_path / "bad.csv"
    text = small_csv.read_text().splitlines()
    columns = text[0].split(",")
    row = text[1].split(",")
    column = "median_income" if "median_income" in columns else "MedInc"
    row[columns.index(column)] = "n/a?"
    bad.write_text("\n".join(text + [",".join(row)]) + "\n")  # passes the header check, fails in the load step
    proc = start("--data", str(bad), "--output-dir", str(tmp_path / "out"), *FAST, cache=tmp_path / "cache")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2  # bad input, found by a step
    assert err.strip().splitlines() == [
        f"error: step 'load' failed: {bad}: column {column} has a non-numeric value 'n/a?' in data row 3001; "
        "fix or remove that row (every column must be numeric)"
    ]
    assert not (tmp_path / "out").exists()
    task, log = session(tmp_path / "cache")
    assert "failed" in task["tags"]
    assert log.rstrip().endswith(f"run outcome: {err.strip().removeprefix('error: ')}")
    assert "Traceback" not in log  # bad input: the reason says it all


def test_sigterm_ends_the_run_promptly_and_consistently_and_the_next_run_works(housing_csv, small_csv, tmp_path):
    out_dir = tmp_path / "out"
    # XGBoost with 20,000 rounds and no early stopping: a run far longer than the wait below
    proc = start("--data", str(housing_csv), "--output-dir", str(out_dir), "--xgb-n-estimators", "20000",
                 "--xgb-early-stopping-rounds", "0", cache=tmp_path / "cache")
    # wait until the offline session exists (the controller task has started), give the steps a
    # few seconds to start, then stop the run
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "cache" / "offline").glob("offline-*/task.json")):
        time.sleep(0.2)
    time.sleep(4)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130 and [line for line in err.splitlines() if not line.startswith("info: ")] == [
        "error: interrupted"]
    assert not out_dir.exists() and not list(tmp_path.glob(".out.partial-*"))
    task, log = session(tmp_path / "cache")
    assert "interrupted" in task["tags"]
    again = start("--data", str(small_csv), "--output-dir", str(out_dir), *FAST, cache=tmp_path / "cache2")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert (out_dir / "metrics.csv").exists()


def test_two_runs_at_once_into_the_default_location_do_not_collide(small_csv, tmp_path):
    procs = [start("--data", str(small_csv), *FAST, cache=tmp_path / f"cache{i}", cwd=tmp_path) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outputs]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert sorted(f.name for f in run.iterdir() if f.suffix in (".csv", ".png")) == [
            "metrics.csv", "model_comparison.png", "polynomial_error_distribution.png", "prediction_plot.png",
            "xgboost_error_distribution.png"]
    reported = {re.search(r"results: (\S+)", o[0]).group(1) for o in outputs}
    assert reported == {str(r) for r in runs}


def test_same_parameters_and_data_give_the_same_metrics(small_csv, tmp_path):
    tables = []
    for i in range(2):
        proc = start("--data", str(small_csv), "--output-dir", str(tmp_path / f"run{i}"), "--models",
                     "polynomial,xgboost,random_forest", "--rf-n-estimators", "30", *FAST, cache=tmp_path / f"c{i}")
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        tables.append(pd.read_csv(tmp_path / f"run{i}" / "metrics.csv"))
    # equal to 1e-12: the random forest's parallel prediction adds its trees in thread order,
    # which can change the last bit of a sum
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=False, rtol=1e-12, atol=0)
    assert tables[0]["r2"].between(0.5, 0.95).all()


def _edited_copy(small_csv: Path, tmp_path: Path, column: str, value: float) -> Path:
    frame = pd.read_csv(small_csv)
    frame.loc[:4, column] = value
    path = tmp_path / f"{column}.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case", ["huge_value", "negative_income", "fifo", "symlink_output", "long_name",
                                  "cache_is_a_file"])
def test_inputs_found_by_trying_to_break_it(case, small_csv, tmp_path):
    """Cases a tester found: each is refused in one line, with no traceback and no results."""
    data, out, env = small_csv, tmp_path / "out", {}
    income = "median_income" if "median_income" in small_csv.read_text().splitlines()[0] else "MedInc"
    expected = {
        "huge_value": "hold values beyond +-1e+15",
        "negative_income": "have negative values",
        "fifo": "is not a regular file",
        "symlink_output": "is a symbolic link",
        "long_name": "File name too long",
        "cache_is_a_file": "ClearML could not start its offline session",
    }[case]
    if case == "huge_value":
        data = _edited_copy(small_csv, tmp_path, income, 1e308)
    elif case == "negative_income":
        data = _edited_copy(small_csv, tmp_path, income, -3.0)
    elif case == "fifo":
        data = tmp_path / "pipe.csv"
        os.mkfifo(data)
    elif case == "symlink_output":
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    elif case == "long_name":
        out = tmp_path / ("x" * 300)
    elif case == "cache_is_a_file":
        (tmp_path / "cache-file").write_text("not a folder")
        env = {"CLEARML_CACHE_DIR": str(tmp_path / "cache-file")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "clearml_pipeline.py"), "--data", str(data),
                             "--output-dir", str(out), *FAST], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "CLEARML_CACHE_DIR": str(tmp_path / "cache"), **env})
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode in (1, 2), err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert "metrics.csv" not in [p.name for p in tmp_path.rglob("*")] and not list(tmp_path.glob(".*partial-*"))
