"""Issue 20: what the project costs a user: its install, its offline sessions and output folders, the end of
a run, ``predict`` on the run's own data, Parquet input, the README's size.

The install test measures the environment the tests run in (CI: a fresh venv from requirements.txt); the
offline runs are real runs of the command line with their own ClearML cache folders.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
FOUR_MODELS = "polynomial,xgboost,linear,random_forest"
PLATFORMS = {  # (sys_platform, platform_machine): the XGBoost distribution requirements.txt must pick
    ("linux", "x86_64"): "xgboost-cpu", ("linux", "aarch64"): "xgboost-cpu", ("win32", "AMD64"): "xgboost-cpu",
    ("darwin", "arm64"): "xgboost", ("darwin", "x86_64"): "xgboost", ("linux", "ppc64le"): "xgboost",
    ("win32", "ARM64"): "xgboost",
}
MB = 2**20


def requirements(path: Path = ROOT / "requirements.txt") -> list[Requirement]:
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def xgboost_lines() -> list[Requirement]:
    return [r for r in requirements() if r.name.startswith("xgboost")]


def run_cli(*args: str, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLEARML_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / MB


# --- 1. the install --------------------------------------------------------------------------------------

@pytest.mark.parametrize("platform", list(PLATFORMS), ids=lambda p: "-".join(p))
def test_requirements_install_exactly_one_xgboost_per_platform(platform):
    env = {"sys_platform": platform[0], "platform_machine": platform[1]}
    picked = [r.name for r in xgboost_lines() if r.marker is None or r.marker.evaluate(env)]
    assert picked == [PLATFORMS[platform]]


def test_step_packages_are_the_requirements_lines():
    import clearml_pipeline

    assert [str(Requirement(p)) for p in clearml_pipeline.XGBOOST] == [str(r) for r in xgboost_lines()]


def _closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``names`` need, with everything they require (markers evaluated here)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in found:
            continue
        found[name] = metadata.distribution(name)
        for line in found[name].requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def test_the_installed_requirements_fit_700_mb_without_cuda_libraries():
    """Measured in the environment the tests run in: CI installs it fresh from requirements.txt."""
    wanted = [r.name for r in requirements() if r.marker is None or r.marker.evaluate()]
    try:
        closure = _closure(wanted)
    except metadata.PackageNotFoundError as exc:
        pytest.skip(f"this environment was not installed from requirements.txt ({exc.name} is missing)")
    size = sum((d.locate_file(f).stat().st_size for d in closure.values() for f in d.files or []
                if d.locate_file(f).is_file()), 0) / MB
    assert not [n for n in closure if n.startswith("nvidia-") or "cuda" in n], sorted(closure)
    assert not {"xgboost", "xgboost-cpu"} <= {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert size <= 700, f"{size:.0f} MB"


def test_the_readme_gives_gpu_users_one_line():
    from packaging.specifiers import SpecifierSet

    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if "pip uninstall -y xgboost-cpu" in line)
    assert 'pip uninstall -y xgboost-cpu && pip install "xgboost>=2.1,<4"' in line, line
    assert next(r for r in xgboost_lines() if r.name == "xgboost").specifier == SpecifierSet(">=2.1,<4")


def test_step_code_names_the_xgboost_package_agents_install(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), "step-code", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for step in ("train_xgboost", "evaluate", "load"):
        packages = json.loads((tmp_path / f"{step}.json").read_text())["script"]["requirements"]["pip"].splitlines()
        named = [Requirement(p) for p in packages if p.startswith("xgboost")]
        if step == "load":
            assert not named
            continue
        assert [str(r) for r in named] == [str(r) for r in xgboost_lines()]
        assert len([r for r in named if r.marker.evaluate()]) == 1


# --- 2. offline sessions and output folders ---------------------------------------------------------------

@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("default")
    result = run_cli("--output-dir", str(tmp / "out"), cache=tmp / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, tmp / "out", tmp / "cache"


@pytest.fixture(scope="module")
def four_model_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("four")
    result = run_cli("--models", FOUR_MODELS, "--output-dir", str(tmp / "out"), cache=tmp / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, tmp / "out", tmp / "cache"


def test_a_default_run_leaves_one_zip_of_at_most_5_mb(default_run):
    _, _, cache = default_run
    assert [p.suffix for p in (cache / "offline").iterdir()] == [".zip"]  # the folder it zipped is gone
    assert size_mb(cache) <= 5, f"{size_mb(cache):.1f} MB"


def test_a_four_model_run_stays_under_40_mb_in_the_cache_and_the_output_folder(four_model_run):
    _, out, cache = four_model_run
    assert [p.suffix for p in (cache / "offline").iterdir()] == [".zip"]
    assert size_mb(cache) <= 40, f"{size_mb(cache):.1f} MB"
    assert size_mb(out) <= 40, f"{size_mb(out):.1f} MB"


def test_a_stored_forest_predicts_as_the_fitted_one_in_a_fraction_of_the_space(split42, tmp_path):
    import joblib

    from steps.models import train_model
    from steps.outputs import write_run_files

    X_train, X_test, y_train, _ = split42
    forest = train_model("random_forest", X_train.head(3000), y_train.head(3000), n_estimators=20, n_jobs=1,
                         random_state=0)
    write_run_files(tmp_path, pd.DataFrame({"model": []}), {}, {"random_forest": forest})
    stored = joblib.load(tmp_path / "models" / "random_forest.joblib")
    np.testing.assert_array_equal(stored.predict(X_test), forest.predict(X_test))
    plain = tmp_path / "plain.joblib"
    joblib.dump(forest, plain)
    assert (tmp_path / "models" / "random_forest.joblib").stat().st_size < plain.stat().st_size / 4
    assert forest[-1].feature_importances_.sum() == pytest.approx(1.0)  # the fitted model is left whole


def _session(folder: Path, name: str, age_s: float, zipped: bool = True, folder_too: bool = False) -> None:
    stamp = time.time() - age_s
    if zipped:
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
            archive.writestr("task.json", "{}")
        os.utime(folder / f"{name}.zip", (stamp, stamp))
    if folder_too or not zipped:
        (folder / name).mkdir()
        os.utime(folder / name, (stamp, stamp))


def test_older_sessions_are_pruned_past_the_bound_never_a_young_one(tmp_path):
    from runtime.offline import KEEP_SESSIONS, prune_sessions

    for i in range(KEEP_SESSIONS + 4):
        _session(tmp_path, f"offline-{i:02d}", age_s=7200 + 60 * i, folder_too=(i == 0))
    _session(tmp_path, "offline-killed", age_s=90_000, zipped=False)
    _session(tmp_path, "offline-running", age_s=5, zipped=False)
    _session(tmp_path, "offline-own", age_s=0, zipped=False)
    prune_sessions(tmp_path, own="offline-own")
    left = sorted(p.name for p in tmp_path.iterdir())
    kept = [f"offline-{i:02d}.zip" for i in range(KEEP_SESSIONS - 2)]  # + the running one and this run's
    assert left == sorted([*kept, "offline-own", "offline-running"])


# --- 4. the end of a run -----------------------------------------------------------------------------------

def test_the_end_of_a_run_says_results_predict_and_web_ui_once_each(default_run, tmp_path):
    result, out, _ = default_run
    tail = result.stdout.splitlines()[-4:]
    assert [line.split(":")[0] for line in tail] == ["results", "predict", "ClearML offline session", "web UI"]
    assert tail[0] == f"results: {out}"
    assert "get one (free: https://app.clear.ml" in tail[3] and "import-offline" in tail[3]
    for prefix in ("results:", "predict:", "web UI:"):
        assert sum(line.startswith(prefix) for line in result.stdout.splitlines()) == 1
    command = shlex.split(tail[1].split(": ", 1)[1])
    data = tmp_path / "new_districts.csv"
    pd.read_csv(ROOT / "data" / "cal_housing.csv").head(100).to_csv(data, index=False)
    assert command[:3] == ["python", "clearml_pipeline.py", "predict"], command
    predicted = subprocess.run([sys.executable, str(ROOT / command[1]), *command[2:]], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0, predicted.stderr
    assert "run's own training data" not in predicted.stdout  # 100 rows: not the file the run trained on


def test_with_a_server_configured_the_end_says_to_upload_the_session(monkeypatch):
    from runtime.offline import web_ui_line

    monkeypatch.setenv("CLEARML_API_HOST", "https://api.example.org")
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "key")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "secret")
    line = web_ui_line("/c/offline/offline-1.zip")
    assert line == ("web UI: upload the session to the server configured (https://api.example.org): "
                    "python clearml_pipeline.py import-offline /c/offline/offline-1.zip")


# --- 5. predict on the run's own data ------------------------------------------------------------------------

def test_predict_says_when_the_data_is_the_runs_own_training_data(default_run, tmp_path):
    _, out, _ = default_run
    record = json.loads((out / "run.json").read_text())
    assert record["test_size"] == 0.2 and record["random_state"] == 42 and record["data_rows"] == 20640
    result = subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), "predict", "--run", str(out),
                             "--data", str(ROOT / "data" / "cal_housing.csv"), "--output", str(tmp_path / "p.csv")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    note = next(i for i, line in enumerate(lines) if line.startswith("note: this is the run's own training data"))
    assert lines[note - 1].lstrip().startswith("xgboost")  # right under the scores
    assert "16,512 of its 20,640 rows trained the models" in lines[note]


# --- 6. Parquet, and commands that run here ------------------------------------------------------------------

def test_parquet_is_read_where_pandas_can(housing_csv, tmp_path):
    from steps.csv_files import parquet_engine
    from steps.data import load_dataset

    if parquet_engine() is None:
        pytest.skip("neither pyarrow nor fastparquet is installed (CI installs pyarrow with the MLflow extra)")
    path = tmp_path / "housing.parquet"
    pd.read_csv(housing_csv).to_parquet(path)
    pd.testing.assert_frame_equal(load_dataset(str(path)), load_dataset(str(housing_csv)))


def test_parquet_without_a_reader_is_one_line_naming_the_package(tmp_path, monkeypatch):
    import steps.csv_files as csv_files
    from steps.data import load_dataset
    from steps.errors import DataError

    monkeypatch.setattr(csv_files, "parquet_engine", lambda: None)
    path = tmp_path / "housing.parquet"
    path.write_bytes(b"PAR1" + bytes(64) + b"PAR1")
    with pytest.raises(DataError) as caught:
        load_dataset(str(path))
    assert str(caught.value) == (f"{path} is an Apache Parquet file, which pandas reads once pyarrow is installed: "
                                 "pip install pyarrow (or pass the data as CSV)")


#: What a suggested command needs that pandas does not bring: ``{text in the command: packages, one of which}``.
NEEDS = {"pandas.read_parquet(": ("pyarrow",), "pandas.read_feather(": ("pyarrow",), "pandas.read_orc(": ("pyarrow",),
         "pandas.read_hdf(": ("tables",), "pandas.read_spss(": ("pyreadstat",),
         "pandas.read_excel(": ("xlrd", "openpyxl", "odfpy"), "compression='zstd'": ("zstandard",)}


def test_every_suggested_command_runs_here_or_says_what_to_install_first():
    """steps/csv_files.py's messages: a pandas reader that needs another package comes after 'pip install
    <it>, then' (unless it is installed); no command of a tool that may not be there (sqlite3, unzstd, 7z)."""
    import importlib.util

    source = (ROOT / "steps" / "csv_files.py").read_text()
    for needle, packages in NEEDS.items():
        for found in re.finditer(re.escape(needle), source):
            before = source[max(0, found.start() - 160):found.start()]
            if not any(importlib.util.find_spec(p) for p in packages):
                assert any(f"pip install {p}, then" in before for p in packages), source[found.start() - 160:found.end()]
    assert all("parser='etree'" in source[m.end():m.end() + 100] for m in re.finditer(r"read_xml\(", source))
    for tool in ("sqlite3 -header", "unzstd", "7z x", "unrar x", "(needs "):
        assert tool not in source, tool


def test_the_sqlite_export_command_runs_as_printed(housing_csv, tmp_path):
    from steps.data import load_dataset
    from steps.errors import DataError

    database = tmp_path / "housing.db"
    with sqlite3.connect(database) as con:
        pd.read_csv(housing_csv).head(40).to_sql("districts", con, index=False)
    with pytest.raises(DataError) as caught:
        load_dataset(str(database))
    command = re.search(r'python -c "(.+)"$', str(caught.value)).group(1)
    subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True, timeout=60)
    assert len(pd.read_csv(tmp_path / "data.csv")) == 40


# --- 3. the benchmark's baseline does the same work ----------------------------------------------------------

def test_the_plain_script_computes_the_validation_scores_too(housing_csv, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    import plain_script

    scored = []
    monkeypatch.setattr(plain_script, "validation_scores", lambda kind, *a, **k: scored.append(kind))
    plain_script.run(str(housing_csv), str(tmp_path / "out"), models="linear,polynomial", spatial_neighbors=0)
    assert scored == ["linear", "polynomial"]


# --- 8. the README ---------------------------------------------------------------------------------------------

def test_the_readme_is_at_most_12_kb_and_links_its_details():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024, len(readme.encode())
    for link in re.findall(r"\]\(((?:docs|bench)/[^)#]+)", readme):
        assert (ROOT / link).exists(), link
    for doc in ("docs/verification.md", "docs/costs.md"):
        assert f"]({doc})" in readme


# --- 7. the server tests against any ClearML server ----------------------------------------------------------

def test_a_named_server_needs_its_api_host_and_keys_only():
    from server_support import named_server_env

    assert named_server_env({}) is None
    keys = {"CLEARML_TEST_API_ACCESS_KEY": "k", "CLEARML_TEST_API_SECRET_KEY": "s"}
    assert named_server_env({"CLEARML_TEST_API_HOST": "http://srv:8008", **keys}) == {
        "CLEARML_API_HOST": "http://srv:8008", "CLEARML_WEB_HOST": "http://srv:8080",
        "CLEARML_FILES_HOST": "http://srv:8081", "CLEARML_API_ACCESS_KEY": "k", "CLEARML_API_SECRET_KEY": "s"}
    hosted = named_server_env({"CLEARML_TEST_API_HOST": "https://api.clear.ml", **keys})
    assert (hosted["CLEARML_WEB_HOST"], hosted["CLEARML_FILES_HOST"]) == ("https://app.clear.ml", "https://files.clear.ml")
    with pytest.raises(ValueError, match="CLEARML_TEST_API_ACCESS_KEY"):
        named_server_env({"CLEARML_TEST_API_HOST": "http://srv:8008"})


@pytest.mark.server
def test_the_server_tests_use_a_server_the_environment_names_with_agents_found_or_started(server, tmp_path):
    """The harness's server, named as any other server would be: an agent is started for a queue nobody
    serves, and found (not started again) by the next session."""
    from server_support import NAMED, connect_server, named_server_env, serving_workers, stop_server

    named = named_server_env({f"CLEARML_TEST_{k.removeprefix('CLEARML_')}": v for k, v in server.env.items()
                              if k in NAMED.values()})
    first, why = connect_server(tmp_path, named)
    assert first is not None and not first.harness, why
    (tmp_path / "again").mkdir()
    again, _ = connect_server(tmp_path / "again", named)
    try:
        first.agent("footprint-queue")
        assert len(first.started) == 1 and serving_workers(first.api, "footprint-queue")
        again.agent("footprint-queue")
        assert again.started == []
    finally:
        stop_server(first)
    assert all(p.poll() is not None for p in first.started)


@pytest.mark.server
def test_a_step_task_on_the_server_names_the_xgboost_package(server, checkout, data, tmp_path):
    from server_support import run_cli as run_on_server
    from server_support import run_id

    result = run_on_server(server, checkout, "--mode", "local", "--models", "xgboost", "--xgb-n-estimators", "30",
                           "--spatial-neighbors", "0", "--data", str(data), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum(line.startswith("web UI: http") for line in result.stdout.splitlines()) == 1
    step = server.api.step_tasks(run_id(result.stdout))["train_xgboost"]
    packages = server.api.task(step)["script"]["requirements"]["pip"].splitlines()
    assert [str(Requirement(p)) for p in packages if p.startswith("xgboost")] == [str(r) for r in xgboost_lines()]
