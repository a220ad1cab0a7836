"""The server path on a real ClearML server (``../shared/clearml-server``): launch, inspect, re-run.

Every mode runs the real command line against ClearML's own API server, file server and agents
(started through the harness), on the real data; the tests then read back what the web UI shows
through the same REST calls it makes: the run's status and status reason, its ``Args``, the
steps' parameters, the scalars on the pipeline run, the artifacts, the models. A re-run is done
as in the web UI: clone the run, edit its ``Args``, enqueue the clone on ``services``.

Skipped, with the reason, only where the harness cannot start (no ``bin/setup`` run, no Python 3.11).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from server_support import run_cli, run_id, start_server, stop_server, ui_pages

pytestmark = pytest.mark.server


def metrics_of(server, run: str) -> pd.DataFrame:
    """The run's ``metrics.csv``, as the pipeline run's artifact (what a remote run leaves reachable)."""
    return pd.read_csv(io.StringIO(server.api.artifact_text(run, "metrics.csv"))).set_index("model")


def launched(server, checkout, tmp_path_factory, *args: str, wait: bool = True) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("run") / "results"
    result = run_cli(server, checkout, *args, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    run = run_id(result.stdout)
    if wait:
        task = server.api.wait(run, timeout=900)
        assert task["status"] == "completed", (task["status"], task.get("status_reason"))
    return run, out


@pytest.fixture(scope="session")
def local_run(agents, checkout, data, tmp_path_factory):
    """``--mode local``: every step a task, run as a subprocess here."""
    return launched(agents, checkout, tmp_path_factory, "--mode", "local", "--data", str(data))


@pytest.fixture(scope="session")
def remote_run(agents, checkout, data, tmp_path_factory):
    """``--mode remote``: the controller on ``services``, the steps on ``default``, all run by agents."""
    return launched(agents, checkout, tmp_path_factory, "--mode", "remote", "--data", str(data),
                    "--poly-degree", "2", "--random-state", "7")


@pytest.fixture(scope="session")
def remote_local_controller_run(agents, checkout, data, tmp_path_factory):
    """``--mode remote --controller-queue local``: the controller here, the steps on agents."""
    return launched(agents, checkout, tmp_path_factory, "--mode", "remote", "--controller-queue", "local",
                    "--data", str(data), "--models", "polynomial,linear")


# --- each mode completes, and the web UI's data shows it --------------------------------------------

def test_local_run_completes_with_every_step_and_its_files(agents, local_run):
    run, out = local_run
    steps = agents.api.step_tasks(run)
    assert set(steps) == {"load", "split", "train_polynomial", "train_xgboost", "evaluate"}
    for name, task_id in steps.items():
        assert agents.api.task(task_id)["status"] == "completed", name
    local = pd.read_csv(out / "metrics.csv").set_index("model")
    assert 0.74 <= local.loc["polynomial", "r2"] <= 0.90 and 0.85 <= local.loc["xgboost", "r2"] <= 0.92
    pd.testing.assert_frame_equal(metrics_of(agents, run), local)


def test_pipeline_run_shows_each_models_metrics(agents, local_run):
    """R2/RMSE/MAE per model are scalars of the pipeline run itself (monitored metrics)."""
    run, out = local_run
    scalars = agents.api.last_scalars(run)
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    for model in ("polynomial", "xgboost"):
        for title, column in (("R2", "r2"), ("RMSE", "rmse"), ("MAE", "mae")):
            assert scalars[(title, model)] == pytest.approx(metrics.loc[model, column], rel=1e-6)


def test_pipeline_run_has_the_results_as_artifacts(agents, local_run):
    run, _ = local_run
    keys = {a["key"] for a in agents.api.task(run)["execution"]["artifacts"]}
    assert {"metrics.csv", "prediction_plot.png", "polynomial_error_distribution.png",
            "xgboost_error_distribution.png", "model_comparison.png"} <= keys


def test_one_model_per_estimator_with_metrics_and_kind(agents, local_run):
    run, out = local_run
    evaluate = agents.api.step_tasks(run)["evaluate"]
    models = agents.api("models.get_all", task=[evaluate])["models"]
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    assert sorted(m["tags"][0] for m in models) == ["polynomial", "xgboost"]
    for model in models:
        assert model["name"].endswith(f" · {model['tags'][0]}")  # named by run and kind
        meta = {m["key"]: float(m["value"]) for m in model["metadata"].values()}
        assert meta["r2"] == pytest.approx(metrics.loc[model["tags"][0], "r2"], abs=1e-6)
        assert model["uri"].startswith("http://127.0.0.1:")  # uploaded to the file server
    shown = {m["name"] for m in agents.api.task(run)["models"]["output"]}
    assert shown == {"polynomial", "xgboost"}  # the Models of the pipeline run (monitored)


def test_a_registered_model_loads_again_through_input_model(agents, local_run, data, tmp_path):
    run, out = local_run
    evaluate = agents.api.step_tasks(run)["evaluate"]
    model_id = next(m["id"] for m in agents.api("models.get_all", task=[evaluate])["models"] if m["tags"] == ["xgboost"])
    code = ("import json, sys, joblib; from clearml import InputModel; "
            "sys.path.insert(0, sys.argv[3]); from steps.data import load_dataset; "
            "m = joblib.load(InputModel(model_id=sys.argv[1]).get_local_copy()); "
            "X = load_dataset(sys.argv[2]).drop(columns='MedHouseVal').head(50); "
            "print(json.dumps([float(v) for v in m.predict(X)]))")
    result = subprocess.run([sys.executable, "-c", code, model_id, str(data), str(Path(__file__).parents[1])],
                            capture_output=True, text=True, timeout=120, env=agents.client_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import joblib

    predicted = json.loads(result.stdout.strip().splitlines()[-1])
    expected = joblib.load(out / "models" / "xgboost.joblib")
    from steps.data import load_dataset

    X = load_dataset(str(data)).drop(columns="MedHouseVal").head(50)
    assert predicted == pytest.approx(list(expected.predict(X)), rel=1e-6)


def test_local_run_is_rerunnable_elsewhere(agents, local_run):
    """The stored default queue is a real queue (not ClearML's local 'mock'), the code a cloneable URL."""
    run, _ = local_run
    assert agents.api.params(run)["pipeline/default_queue"] == "default"
    assert agents.api.task(run)["script"]["repository"].startswith("file://")
    train = agents.api.task(agents.api.step_tasks(run)["train_polynomial"])
    assert train["script"]["repository"].startswith("file://") and len(train["script"]["version_num"]) == 40


# --- what a user sees in the web UI (a real browser: Debian's chromium driven by playwright) -----------

def test_web_ui_shows_the_pipeline_its_steps_and_args(agents, local_run, tmp_path):
    run, out = local_run
    web = agents.env["CLEARML_WEB_HOST"]
    project = agents.api.task(run)["project"]["id"]
    step_ids = agents.api.step_tasks(run)
    evaluate = step_ids["evaluate"]
    texts = ui_pages(agents, tmp_path, [
        {"name": "pipeline", "url": f"{web}/pipelines/{project}/tasks/{run}", "wait_for": "train_xgboost"},
        # each step of this run on its own page (the project's task list also holds other tests' runs)
        *({"name": f"step:{step}", "url": f"{web}/projects/{project}/tasks/{task_id}/execution", "wait_for": step}
          for step, task_id in step_ids.items()),
        {"name": "plots", "url": f"{web}/projects/{project}/tasks/{evaluate}/plots",
         "wait_for": "Model comparison (test set)"},
    ])
    pipeline = texts["pipeline"]
    for step in ("load", "split", "train_polynomial", "train_xgboost", "evaluate"):
        assert step in pipeline.splitlines(), step
    lines = pipeline.splitlines()
    params = dict(zip(lines, lines[1:], strict=False))
    assert params["poly_degree"] == "3" and params["test_size"] == "0.2" and params["spatial_neighbors"] == "16"
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    assert float(params["R2/xgboost"]) == pytest.approx(metrics.loc["xgboost", "r2"])
    for step in ("load", "split", "train_polynomial", "train_xgboost", "evaluate"):
        page = [line.strip() for line in texts[f"step:{step}"].splitlines() if line.strip()]
        # the task's header: its status in capitals, then its name (the list beside it holds other tasks)
        header = next(i for i, line in enumerate(page) if line in ("COMPLETED", "FAILED", "ABORTED", "RUNNING", "QUEUED"))
        assert page[header:header + 2] == ["COMPLETED", step], (step, page[:40])
    for title in ("Predicted vs actual (test set)", "xgboost: error distribution (test set)",
                  "Model comparison (test set)"):
        assert title in texts["plots:content"], title


def test_rerun_clicked_through_the_web_ui(agents, local_run, tmp_path):
    """The harness's click-through (Pipelines -> run -> Details -> Clone -> edit Args -> Enqueue), on a real browser."""
    from server_support import HARNESS, harness_python, web_available

    if not agents.web or web_available():
        pytest.skip(web_available() or "the test server was started without its web UI")
    run, _ = local_run
    result = subprocess.run([str(harness_python()), str(HARNESS / "harness" / "ui_rerun_example.py"), str(agents.state),
                             "--pipeline", "tabular regression", "--run", agents.api.task(run)["name"],
                             "--set", "poly_degree=2", "--set", "xgb_max_depth=4", "--queue", "services",
                             "--shots", str(tmp_path / "shots"), "--wait", "600"],
                            capture_output=True, text=True, timeout=900)
    clone = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    steps = agents.api.step_tasks(clone)
    assert agents.api.params(steps["train_polynomial"])["kwargs/degree"] == "2"
    assert agents.api.params(steps["train_xgboost"])["kwargs/max_depth"] == "4"
    assert steps["load"] == agents.api.step_tasks(run)["load"]


def test_remote_run_with_controller_on_services(agents, remote_run):
    run, _ = remote_run
    task = agents.api.task(run)
    assert task["last_worker"].startswith("test-agent-services")  # enqueued, and an agent ran it
    assert agents.api.params(run)["Args/poly_degree"] == "2"
    steps = agents.api.step_tasks(run)
    assert agents.api.params(steps["train_polynomial"])["kwargs/degree"] == "2"
    assert agents.api.params(steps["split"])["kwargs/random_state"] == "7"
    metrics = metrics_of(agents, run)
    assert 0.70 <= metrics.loc["polynomial", "r2"] <= 0.90 and 0.85 <= metrics.loc["xgboost", "r2"] <= 0.92


def test_remote_run_with_controller_here(agents, remote_local_controller_run):
    run, out = remote_local_controller_run
    steps = agents.api.step_tasks(run)
    assert set(steps) == {"load", "split", "train_polynomial", "train_linear", "evaluate"}
    for step in ("train_polynomial", "train_linear", "evaluate"):  # (load and split may come from the cache)
        assert agents.api.task(steps[step])["last_worker"].startswith("test-agent-default"), step  # run by an agent
    metrics = metrics_of(agents, run)
    assert 0.55 <= metrics.loc["linear", "r2"] <= 0.65
    pd.testing.assert_frame_equal(metrics, pd.read_csv(out / "metrics.csv").set_index("model"))
    dag = agents.api.dag(run)  # the web UI's DAG draws each step's duration from these
    for step in ("train_polynomial", "train_linear", "evaluate"):
        assert 0 < dag[step]["job_ended"] - dag[step]["job_started"] < 600, (step, dag[step])


# --- re-run from the web UI: clone, edit Args, enqueue on services ----------------------------------

@pytest.mark.parametrize("source", ["local_run", "remote_run", "remote_local_controller_run"])
def test_rerun_with_edited_parameters_reuses_data_steps(agents, request, source):
    run, _ = request.getfixturevalue(source)
    before = metrics_of(agents, run)
    kind = "polynomial"
    clone = agents.api.rerun(run, {"poly_degree": "1", "poly_alpha": "25.5"})
    task = agents.api.wait(clone, timeout=900)
    assert task["status"] == "completed", (task["status"], task.get("status_reason"))
    old, new = agents.api.step_tasks(run), agents.api.step_tasks(clone)
    assert new["load"] == old["load"] and new["split"] == old["split"]  # taken from the cache
    assert new[f"train_{kind}"] != old[f"train_{kind}"]
    kwargs = agents.api.params(new[f"train_{kind}"])
    assert kwargs["kwargs/degree"] == "1" and float(kwargs["kwargs/alpha"]) == 25.5
    after = metrics_of(agents, clone)
    assert after.loc[kind, "r2"] != pytest.approx(before.loc[kind, "r2"], abs=1e-4)
    assert 0.60 <= after.loc[kind, "r2"] <= before.loc[kind, "r2"] - 0.005  # degree 1: weaker than degree 2 or 3


def test_rerun_with_an_out_of_range_value_fails_with_a_one_line_reason(agents, local_run):
    run, _ = local_run
    for edits, expected in (({"poly_degree": "9"}, "poly_degree = 9 is out of range: allowed 1 to 4"),
                            ({"models": "linear"}, "a re-run trains the models of the run it was cloned from")):
        clone = agents.api.rerun(run, edits)
        agents.api.wait(clone, timeout=300)
        time.sleep(10)  # the agent has finished with the task: the reason is still the run's own
        task = agents.api.task(clone)
        assert task["status"] == "failed"
        reason = task.get("status_reason") or ""
        assert expected in reason and "\n" not in reason, reason
        assert not agents.api.step_tasks(clone).get("train_polynomial")  # refused before any training


# --- caching ------------------------------------------------------------------------------------------

def test_no_cache_runs_load_and_split_again(agents, local_run, checkout, data, tmp_path_factory):
    run, _ = local_run
    again, _ = launched(agents, checkout, tmp_path_factory, "--mode", "local", "--data", str(data),
                        "--models", "linear", "--no-cache")
    old, new = agents.api.step_tasks(run), agents.api.step_tasks(again)
    assert new["load"] != old["load"] and new["split"] != old["split"]


def test_changed_data_under_the_same_path_is_never_served_from_the_cache(agents, checkout, data, tmp_path_factory):
    path = tmp_path_factory.mktemp("changing") / "cal_housing.csv"
    shutil.copyfile(data, path)
    first, _ = launched(agents, checkout, tmp_path_factory, "--mode", "local", "--data", str(path), "--models", "linear")
    frame = pd.read_csv(path)
    frame.loc[:999, "median_house_value"] = 500001.0  # the same path, other content
    frame.to_csv(path, index=False)
    second, _ = launched(agents, checkout, tmp_path_factory, "--mode", "local", "--data", str(path), "--models", "linear")
    old, new = agents.api.step_tasks(first), agents.api.step_tasks(second)
    assert new["load"] != old["load"] and new["split"] != old["split"]
    assert metrics_of(agents, second).loc["linear", "r2"] != pytest.approx(
        metrics_of(agents, first).loc["linear", "r2"], abs=1e-4)


# --- offline sessions imported into the server --------------------------------------------------------

def _offline(checkout, *args, env=None, tmp):
    cache = tmp / "cache"
    return subprocess.run([sys.executable, "clearml_pipeline.py", *args, "--output-dir", str(tmp / "out")],
                          cwd=checkout, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CLEARML_CACHE_DIR": str(cache), **(env or {})})


def _import(server, checkout, zip_path):
    result = run_cli(server, checkout, "import-offline", str(zip_path))
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().split()[-1]


def _session_zip(stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith("ClearML offline session: "))
    return Path(line.split(": ", 1)[1].split(" ")[0])


def test_import_offline_brings_args_scalars_plots_and_artifacts(agents, checkout, data, tmp_path):
    result = _offline(checkout, "--data", str(data), "--models", "polynomial,linear", "--poly-degree", "2",
                      tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    task_id = _import(agents, checkout, _session_zip(result.stdout))
    task = agents.api.task(task_id)
    assert task["status"] == "completed"
    assert agents.api.params(task_id)["Args/poly_degree"] == "2"
    local = pd.read_csv(tmp_path / "out" / "metrics.csv").set_index("model")
    assert agents.api.last_scalars(task_id)[("R2", "linear")] == pytest.approx(local.loc["linear", "r2"])
    plots = agents.api("events.get_task_plots", task=task_id, iters=1)["plots"]
    titles = {p["metric"] for p in plots}
    assert {"Metrics", "Predicted vs actual (test set)", "Model comparison (test set)"} <= titles, titles
    keys = {a["key"] for a in task["execution"]["artifacts"]}
    assert {"metrics.csv", "model_polynomial", "model_linear", "prediction_plot.png"} <= keys


def test_import_offline_of_a_failed_run_is_failed(agents, checkout, data, tmp_path):
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(data)
    frame["median_income"] = frame["median_income"].astype(object)
    frame.loc[20000, "median_income"] = "n/a?"  # past the quick checks: the load step fails
    frame.to_csv(bad, index=False)
    result = _offline(checkout, "--data", str(bad), tmp=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    task = agents.api.task(_import(agents, checkout, _session_zip_from_cache(tmp_path)))
    assert task["status"] == "failed"
    assert task["status_reason"].startswith("step 'load' failed"), task["status_reason"]


def test_import_offline_of_an_interrupted_run_is_stopped(agents, checkout, data, tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "clearml_pipeline.py", "--data", str(data), "--output-dir",
                             str(tmp_path / "out")], cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "CLEARML_CACHE_DIR": str(cache)})
    deadline = time.monotonic() + 60
    while not list(cache.glob("offline/offline-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # inside a step
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    task = agents.api.task(_import(agents, checkout, _session_zip_from_cache(tmp_path)))
    assert task["status"] == "stopped" and task["status_reason"] == "interrupted", task.get("status_reason")


def _session_zip_from_cache(tmp: Path) -> Path:
    zips = sorted((tmp / "cache" / "offline").glob("offline-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


# --- what a user gets wrong, against the real server -------------------------------------------------

def test_wrong_credentials_one_line(server, checkout, data):
    env = server.client_env(CLEARML_API_SECRET_KEY="not-the-secret")
    result = run_cli(server, checkout, "--mode", "local", "--data", str(data), env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "rejected the credentials (HTTP 401)" in result.stderr


def test_missing_queue_one_line(server, checkout, data):
    result = run_cli(server, checkout, "--mode", "remote", "--queue", "no-such-queue", "--data", str(data),
                     timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: queue 'no-such-queue' does not exist on {server.env['CLEARML_API_HOST']}; "
                                     "create it in the web UI (Orchestration > Queues) or start an agent with: "
                                     "clearml-agent daemon --queue no-such-queue --create-queue")


def test_server_stopped_mid_run_ends_the_run_in_one_line(checkout, data, tmp_path_factory):
    """A second server, stopped while the first step runs: the run ends within 60 s, one line, no hang."""
    srv, why = start_server(tmp_path_factory.mktemp("doomed-server"), web=False)
    if srv is None:
        pytest.skip(why)
    try:
        out = tmp_path_factory.mktemp("doomed") / "results"
        proc = subprocess.Popen([sys.executable, "clearml_pipeline.py", "--mode", "local", "--data", str(data),
                                 "--output-dir", str(out)], cwd=checkout, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=srv.client_env())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not srv.api("tasks.get_all", name="^split$")["tasks"]:
            time.sleep(0.5)
    finally:
        stop_server(srv)
    stopped = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run still hangs 90 s after the server stopped")
    assert time.monotonic() - stopped <= 60
    assert proc.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped answering" in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr
