"""The whole pipeline through its command line, in the embedded default (ClearML offline mode)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from steps.params import DEFAULTS, flag_of, parameter_fields

ROOT = Path(__file__).resolve().parent.parent
PNGS = ["prediction_plot.png", "polynomial_error_distribution.png", "xgboost_error_distribution.png",
        "model_comparison.png"]


def run_cli(*args: str, cache: Path, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``clearml_pipeline.py`` with ``args`` in a fresh interpreter, offline sessions under ``cache``."""
    env = dict(os.environ, CLEARML_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_session(stdout: str) -> tuple[dict, list[dict], zipfile.ZipFile]:
    """The task, the events and the zip of the offline session a run printed."""
    match = re.search(r"ClearML offline session: (\S+\.zip)", stdout)
    assert match, stdout
    archive = zipfile.ZipFile(match.group(1))
    task = json.loads(archive.read("task.json"))
    events = [e for line in archive.read("metrics.jsonl").decode().splitlines() if line for e in json.loads(line)]
    return task, events, archive


@pytest.fixture(scope="module")
def default_run(housing_csv, tmp_path_factory):
    """One pipeline run with the default parameters on the real data."""
    tmp = tmp_path_factory.mktemp("run")
    result = run_cli("--data", str(housing_csv), "--output-dir", str(tmp / "out"), cache=tmp / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, tmp / "out"


def test_metrics_csv_meets_the_floors(default_run):
    _, out = default_run
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    assert list(metrics.columns[:3]) == ["r2", "rmse", "mae"]
    assert list(metrics.index) == ["polynomial", "xgboost"]
    assert metrics.loc["xgboost", "r2"] >= 0.85
    assert metrics.loc["polynomial", "r2"] >= 0.74
    assert 0.38 < metrics.loc["xgboost", "rmse"] < 0.46
    assert (metrics["n_test"] == 4128).all()


def test_pngs_are_real_images(default_run):
    _, out = default_run
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        image = imread(out / name)
        assert image.shape[0] >= 300 and image.shape[1] >= 400 and image.std() > 0.01, name


def test_models_are_saved(default_run, housing_csv):
    import joblib
    import xgboost

    _, out = default_run
    booster = xgboost.Booster()
    booster.load_model(str(out / "models" / "xgboost.json"))
    assert booster.num_features() == 17  # 8 features, 5 rotated coordinates, 4 neighbour features
    from steps.data import load_dataset
    from steps.split import split_dataset

    estimator = joblib.load(out / "models" / "xgboost.joblib")
    X_test = split_dataset(load_dataset(str(housing_csv)), 0.2, 42)[1].head(200)
    # xgboost.json's input: the fitted feature steps of the joblib estimator (the neighbour index lives there)
    from_json = booster.predict(xgboost.DMatrix(estimator[:-1].transform(X_test)))
    np.testing.assert_allclose(from_json, estimator.predict(X_test), rtol=1e-6)  # the rounds early stopping kept
    poly = joblib.load(out / "models" / "polynomial.joblib")
    assert poly.predict(pd.DataFrame([[8.3, 41, 7.0, 1.0, 322, 2.6, 37.9, -122.2]],
                                     columns=poly.feature_names_in_))[0] > 3.0


def test_offline_session_holds_every_parameter_typed_and_nothing_else(default_run):
    result, _ = default_run
    task, _, _ = read_session(result.stdout)
    assert task["type"] == "controller" and task["project_name"] == "California Housing"
    args = task["hyperparams"]["Args"]
    assert {name: arg["type"] for name, arg in args.items()} == {f.name: f.type for f in parameter_fields()}
    assert args["test_size"]["value"] == "0.2" and args["random_state"]["value"] == "42"  # no stray flags above


def test_offline_session_holds_the_test_and_validation_scores(default_run):
    result, out = default_run
    _, events, _ = read_session(result.stdout)
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    scalars = {(e["metric"], e["variant"]): e["value"] for e in events if e.get("type") == "training_stats_scalar"}
    for model in ("polynomial", "xgboost"):
        for title, column in (("R2", "r2"), ("RMSE", "rmse"), ("MAE", "mae")):
            assert scalars[(title, model)] == pytest.approx(metrics.loc[model, column])
        assert 0.8 < scalars[("validation R2", model)] < 0.9  # from training rows only


def test_offline_session_holds_the_plots_table_and_files(default_run):
    result, out = default_run
    task, events, _ = read_session(result.stdout)
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    plots = {e["metric"] for e in events if e.get("type") == "plot"}
    from steps.plots import XGBOOST_CURVE, figure_titles

    titles = figure_titles(["polynomial", "xgboost"])  # the PNGs' titles, also in ClearML
    assert {"Metrics", XGBOOST_CURVE[0], *titles.values()} <= plots, plots
    assert titles["prediction_plot"] == "Predicted vs actual (test set)"
    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    assert {"metrics.csv", "prediction_plot.png", "model_comparison.png"} <= set(artifacts)
    assert artifacts["model_xgboost"]["uri"].endswith("/xgboost.joblib")
    assert float(dict(artifacts["model_polynomial"]["display_data"])["r2"]) == pytest.approx(metrics.loc["polynomial", "r2"])


def test_console_says_where_results_are(default_run):
    result, out = default_run
    assert f"results: {out}" in result.stdout
    assert "Traceback" not in result.stderr


def test_pipeline_signature_is_the_parameter_table():
    """ClearML reads the controller's arguments (the run's Args) with inspect.getfullargspec: one typed
    argument per parameter field, with its default."""
    from runtime.components import pipeline_arguments

    @pipeline_arguments
    def controller(**args):
        return args

    spec = inspect.getfullargspec(controller)
    fields = {f.name: f for f in parameter_fields()}
    assert spec.args == list(fields)
    assert dict(zip(spec.args, spec.defaults, strict=True)) == {name: getattr(DEFAULTS, name) for name in fields}
    assert {name: t.__name__ for name, t in spec.annotations.items()} == {name: f.type for name, f in fields.items()}
    assert controller(data_path="x")["data_path"] == "x"


def test_help_lists_every_option_with_its_default(tmp_path):
    result = run_cli("--help", cache=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for f in parameter_fields():
        assert flag_of(f) in text, f.name
    assert "--mode" in text and "--queue" in text and "--no-cache" in text
    assert "(default: 0.2)" in text and "(default: polynomial,xgboost)" in text


def test_an_origin_that_is_a_path_to_a_repository_is_given_to_agents_as_its_file_url(tmp_path):
    """``git clone /work/main`` leaves ``origin`` a plain path: agents on this machine clone it as ``file://``
    (a web UI re-run of a ``--mode local`` run found no code for its steps before); a path that is no
    repository is still refused."""
    from cli.repository import step_repository

    upstream, checkout = tmp_path / "upstream", tmp_path / "checkout"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(upstream)], check=True)
    subprocess.run([*git, "-C", str(upstream), "commit", "-q", "--allow-empty", "-m", "first"], check=True)
    subprocess.run(["git", "clone", "-q", str(upstream), str(checkout)], check=True)
    url, commit = step_repository(checkout)
    assert url == upstream.resolve().as_uri() and len(commit) == 40
    subprocess.run(["git", "-C", str(checkout), "remote", "set-url", "origin", str(tmp_path / "nothing")], check=True)
    assert step_repository(checkout, required=False) == (None, None)
