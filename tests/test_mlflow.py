"""The MLflow extra (tracking/mlflow_run.py): a real run's output folder logged as one MLflow run.

Needs ``pip install -r requirements-mlflow.txt`` (skips otherwise, saying so). One offline pipeline
run makes the output folder; it is logged (a) to a SQLite store in a temporary folder and read back,
(b) its models loaded through MLflow predict exactly what the ``predict`` command predicts, (c) to an
``mlflow server`` on loopback, whose run page is checked in headless chromium (playwright; skipped
where either is missing). ``UPDATE_SCREENSHOTS=1`` also saves that page to docs/images/mlflow-run.png.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (pip install -r requirements-mlflow.txt)")

from steps.outputs import new_run_dir  # noqa: E402
from steps.params import DEFAULTS  # noqa: E402
from tracking.mlflow_run import INSTALL_HINT, MlflowLogError, log_run, mlflow_available  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "mlflow-run.png"
CHROMIUM = "/usr/bin/chromium"
MODELS = ("polynomial", "xgboost")
DATA_RECORD = {"data_source": "data/cal_housing.csv", "data_sha256": "ab" * 32, "data_rows": "20640"}
PARAMS = dataclasses.asdict(DEFAULTS)
#: No internet here: the environment may send HTTP through a dead proxy; loopback must go direct.
LOOPBACK_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(autouse=True)
def _loopback_and_own_folder(tmp_path, monkeypatch):
    """Every test: loopback goes direct, no telemetry, and MLflow's default store (./mlflow.db, ./mlruns) is in tmp_path."""
    for name, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def run_dir(housing_csv, tmp_path_factory) -> Path:
    """A real run's output folder: the pipeline run once, offline, with the default parameters.

    Should the pipeline itself fail (it has its own tests), the folder is written the way its
    evaluate step writes it (:func:`steps.outputs.write_run_files`) from models trained here, with a warning.
    """
    tmp = tmp_path_factory.mktemp("mlflow-run")
    out = new_run_dir(tmp)  # named as a real run's folder: <UTC time>-<random>, the MLflow run name
    env = dict(os.environ, CLEARML_CACHE_DIR=str(tmp / "cache"), CLEARML_OFFLINE_MODE="1")
    result = subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), "--output-dir", str(out),
                             "--data", str(housing_csv)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "metrics.csv").is_file() and (out / "models" / "xgboost.joblib").is_file()
    return out


@pytest.fixture(scope="module")
def validation() -> pd.DataFrame:
    return pd.DataFrame({"model": list(MODELS), "r2": [0.85, 0.875], "rmse": [0.43, 0.4], "mae": [0.28, 0.25]})


@pytest.fixture(scope="module")
def sqlite_run(run_dir, validation, tmp_path_factory):
    """The run logged to a SQLite store in a temporary folder: (tracking URI, run id, run URL, seconds taken)."""
    tmp = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for name, value in LOOPBACK_ENV.items():
            mp.setenv(name, value)
        mp.chdir(tmp)  # the store's artifacts go to ./mlruns
        started = time.monotonic()
        run_id, url = log_run(experiment="california-housing", params=PARAMS, output_dir=run_dir,
                              data_record=DATA_RECORD, clearml_task_id="offline-0123abcd",
                              clearml_url="http://127.0.0.1:8080/projects/x/experiments/offline-0123abcd",
                              validation=validation)
        seconds = time.monotonic() - started
    return uri, run_id, url, seconds


def _expected_metrics(run_dir, validation) -> dict[str, float]:
    table = pd.read_csv(run_dir / "metrics.csv")
    return {f"{row.model}_{split}_{column}": float(getattr(row, column))
            for split, frame in (("test", table), ("validation", validation))
            for row in frame.itertuples() for column in ("r2", "rmse", "mae")}


def test_params_metrics_and_tags_read_back(sqlite_run, run_dir, validation):
    from mlflow.tracking import MlflowClient

    uri, run_id, url, seconds = sqlite_run
    print(f"log_run took {seconds:.1f} s")
    assert url == ""  # not an http server
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert client.get_experiment(run.info.experiment_id).name == "california-housing"
    assert run.data.params == {name: str(value) for name, value in PARAMS.items()}
    expected = _expected_metrics(run_dir, validation)
    assert len(expected) == 12
    assert run.data.metrics == expected  # exact: the values of metrics.csv
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    assert tags == {**DATA_RECORD, "clearml_task_id": "offline-0123abcd", "output_dir": str(run_dir),
                    "clearml_url": "http://127.0.0.1:8080/projects/x/experiments/offline-0123abcd"}


def test_artifacts_and_models_each_with_their_own_metrics(sqlite_run, run_dir, validation):
    from mlflow.tracking import MlflowClient

    uri, run_id, _, _ = sqlite_run
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.csv", "prediction_plot.png", "model_comparison.png", "polynomial_error_distribution.png",
            "xgboost_error_distribution.png"} <= artifacts
    logged = {m.name: m for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
              if m.source_run_id == run_id}
    assert set(logged) == set(MODELS)
    expected = _expected_metrics(run_dir, validation)
    for name, model in logged.items():  # each model holds its own metrics only
        assert {m.key: m.value for m in model.metrics} == {k: v for k, v in expected.items() if k.startswith(name)}


def test_mlflow_models_predict_what_the_predict_command_predicts(sqlite_run, run_dir, housing_csv, tmp_path,
                                                                 monkeypatch):
    import mlflow.pyfunc

    from steps.data import read_features
    from steps.predict import predict_csv

    uri, run_id, _, _ = sqlite_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    sample = tmp_path / "sample.csv"  # the first 50 districts, StatLib layout as shipped
    sample.write_text("".join(housing_csv.read_text().splitlines(keepends=True)[:51]))
    predictions, _ = predict_csv(run_dir, sample, tmp_path / "predictions.csv")
    X, _ = read_features(sample)  # StatLib -> the 8 raw features, as the predict command reads it
    assert X.shape == (50, 8)
    for name in MODELS:
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{name}")
        assert [c.name for c in model.metadata.signature.inputs.inputs] == list(X.columns)
        got = np.asarray(model.predict(X), dtype=float)
        np.testing.assert_array_equal(got, predictions[f"pred_{name}"].to_numpy(), err_msg=name)


def test_refusals_are_one_line(run_dir, tmp_path, monkeypatch):
    with pytest.raises(MlflowLogError, match="metrics.csv not found"):
        log_run(experiment="x", params={}, output_dir=tmp_path, data_record={})
    shutil.copy(run_dir / "metrics.csv", tmp_path / "metrics.csv")
    with pytest.raises(MlflowLogError, match="holds no <model>.joblib file"):
        log_run(experiment="x", params={}, output_dir=tmp_path, data_record={})
    bad = pd.DataFrame({"model": ["xgboost"], "r2": [0.9]})
    with pytest.raises(MlflowLogError, match="no column"):
        log_run(experiment="x", params={}, output_dir=run_dir, data_record={}, validation=bad)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nobody listens there
    started = time.monotonic()
    with pytest.raises(MlflowLogError, match=r"tracking server http://127\.0\.0\.1:\d+ does not answer") as err:
        log_run(experiment="x", params={}, output_dir=run_dir, data_record={})
    assert "\n" not in str(err.value) and time.monotonic() - started < 15
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/mlflow.db")  # under a file: cannot be made
    with pytest.raises(MlflowLogError, match=r"could not log the run to MLflow at sqlite:///") as err:
        log_run(experiment="x", params={}, output_dir=run_dir, data_record={})
    assert "\n" not in str(err.value) and "MLFLOW_TRACKING_URI" in str(err.value)


def test_module_costs_nothing_and_says_how_to_install_without_mlflow(run_dir):
    assert mlflow_available()
    code = ("import sys; sys.modules['mlflow'] = None\n"  # as if MLflow were not installed
            "import tracking.mlflow_run as m\n"
            "assert 'pandas' not in sys.modules and not m.mlflow_available()\n"
            "from pathlib import Path\n"
            "try:\n"
            f"    m.log_run(experiment='x', params={{}}, output_dir=Path({str(run_dir)!r}), data_record={{}})\n"
            "except m.MlflowLogError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"MLflow is not installed; install the extra with: {INSTALL_HINT}"


# --- a real MLflow server on loopback, and its run page in a real browser -------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 (SQLite store, artifacts served from its folder): its URL."""
    import requests

    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = dict(os.environ, **LOOPBACK_ENV)
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}"],
                                cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2, proxies={"http": "", "https": ""}).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started (its own session)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_run_page_on_an_mlflow_server(mlflow_server, run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run_id, url = log_run(experiment="california-housing", params=PARAMS, output_dir=run_dir,
                          data_record=DATA_RECORD, clearml_task_id="offline-0123abcd")
    assert url.startswith(f"{mlflow_server}/#/experiments/") and url.endswith(f"/runs/{run_id}")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").sync_playwright
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian's package chromium)")
    table = pd.read_csv(run_dir / "metrics.csv").set_index("model")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-proxy-server"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1250})
            context.route(lambda u: not u.startswith(("http://127.0.0.1:", "data:", "blob:", "about:")),
                          lambda route: route.abort())  # no internet: nothing but the server
            page = context.new_page()
            page.goto(url, wait_until="load")  # not "networkidle": the UI keeps polling
            page.get_by_text("xgboost_test_r2").first.wait_for(timeout=30000)
            text = page.locator("body").inner_text()
            close = page.get_by_role("button", name="Close")  # the "MLflow Assistant" side panel, if open
            if close.count():
                close.first.click()
            page.get_by_text("Metrics (").first.scroll_into_view_if_needed()
            page.wait_for_timeout(800)
            shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "mlflow-run.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert run_dir.name in text
    for name in MODELS:
        for column in ("r2", "rmse", "mae"):
            assert f"{name}_test_{column}" in text
    for name in MODELS:  # the exact values of metrics.csv (JavaScript and Python print a float alike)
        assert repr(float(table.loc[name, "r2"])) in text



def test_the_mlflow_flag_makes_the_run_an_mlflow_run_too(housing_csv, tmp_path):
    """``--mlflow`` on an offline run: logged once by the controller, the ClearML task id as a tag and the
    MLflow run id on the ClearML run (a user property of the offline session)."""
    import json
    import zipfile

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'flag.db'}"
    env = dict(os.environ, CLEARML_CACHE_DIR=str(tmp_path / "cache"), MLFLOW_TRACKING_URI=uri)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), "--mlflow", "--models", "polynomial",
                             "--data", str(housing_csv), "--output-dir", str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = next(line.split()[2] for line in result.stdout.splitlines() if line.startswith("MLflow: run "))
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.tags["clearml_task_id"].startswith("offline-")
    assert run.data.metrics["polynomial_test_r2"] == pytest.approx(pd.read_csv(out / "metrics.csv")["r2"][0])
    assert 0.8 < run.data.metrics["polynomial_validation_r2"] < 0.9
    assert run.data.params["poly_degree"] == "3"
    session = next((tmp_path / "cache" / "offline").glob("*.zip"))
    with zipfile.ZipFile(session) as archive:
        task = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith("task.json"))))
    assert task["hyperparams"]["properties"]["mlflow_run_id"]["value"] == run_id


def test_the_mlflow_flag_without_mlflow_is_one_line_before_anything_runs(tmp_path):
    """A Python where ``mlflow`` cannot be found (a finder that hides it): exit 2, one line naming the install."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class HideMlflow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'mlflow':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, HideMlflow())\n")
    env = dict(os.environ, PYTHONPATH=str(hide), CLEARML_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), "--mlflow", "--output-dir",
                             str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --mlflow needs MLflow, which is not installed; install it with: "
                                     f"{INSTALL_HINT}")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.server
def test_the_mlflow_flag_on_a_server_run_links_both_ways(agents, checkout, data, tmp_path):
    """``--mode local --mlflow``: the controller (this process) logs the run once; the MLflow run names the
    ClearML run (id and link) and the ClearML run carries the MLflow run id."""
    from mlflow.tracking import MlflowClient

    from server_support import run_cli, run_id

    uri = f"sqlite:///{tmp_path / 'server-run.db'}"
    result = run_cli(agents, checkout, "--mode", "local", "--mlflow", "--models", "polynomial", "--data", str(data),
                     "--output-dir", str(tmp_path / "out"), env=agents.client_env(MLFLOW_TRACKING_URI=uri,
                                                                                    **LOOPBACK_ENV))
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_id(result.stdout)
    mlflow_run = next(line.split()[2] for line in result.stdout.splitlines() if line.startswith("MLflow: run "))
    logged = MlflowClient(tracking_uri=uri).get_run(mlflow_run)
    assert logged.data.tags["clearml_task_id"] == run and run in logged.data.tags["clearml_url"]
    assert "polynomial_validation_r2" in logged.data.metrics
    properties = agents.api.params(run)
    assert properties["properties/mlflow_run_id"] == mlflow_run
