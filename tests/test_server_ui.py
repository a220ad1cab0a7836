"""What the web UI shows of a run (issue 18), read through the REST calls the UI makes and, where the
point is visual, as page text in a real browser (``tests/ui_pages.py``): models a user can tell apart,
step consoles that say what each step did, a failed run that says why, scores side by side on the
pipeline run, and ``Args`` without a machine's path.

Set ``UPDATE_DOCS_IMAGES=1`` to copy the screenshots into ``docs/images/`` (``docs/web-ui.md``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from runtime.sdk import nvidia_driver_present
from server_support import ROOT, run_cli, run_id, ui_pages

pytestmark = pytest.mark.server
STEPS = ("load", "split", "train_polynomial", "train_xgboost", "evaluate")


@pytest.fixture(scope="session")
def ui_run(agents, checkout, data):
    """``--mode local`` without ``--output-dir``: the run's files go to a new ``runs/`` folder of the checkout."""
    result = run_cli(agents, checkout, "--mode", "local", "--data", str(data))
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_id(result.stdout)
    assert agents.api.wait(run, timeout=900)["status"] == "completed"
    folder = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("results: "))
    return run, Path(folder)


def console(server, task_id: str) -> list[str]:
    return server.api.console(task_id)


pages = ui_pages  # tests/server_support.py


def test_models_are_named_by_run_with_framework_and_description(agents, ui_run, tmp_path):
    run, folder = ui_run
    task = agents.api.task(run)
    evaluate = agents.api.step_tasks(run)["evaluate"]
    models = {m["tags"][0]: m for m in agents.api("models.get_all_ex", task=[evaluate])["models"]}
    metrics = pd.read_csv(folder / "metrics.csv").set_index("model")
    sha = agents.api.params(run)["properties/data_sha256"]
    assert set(models) == {"polynomial", "xgboost"}
    for kind, model in models.items():
        assert model["name"] == f"{task['name']} · {kind}"
        assert model["framework"] == ("XGBoost" if kind == "xgboost" else "ScikitLearn")
        comment = model["comment"]
        assert f"R2 {metrics.loc[kind, 'r2']:.4f}" in comment and f"SHA-256 {sha}" in comment
        assert f"run: {task['name']} (task {run})" in comment
        assert ".partial" not in comment and "snapshot" not in comment  # no staging path of the run's folder
    linked = {m["name"]: m["model"]["id"] for m in task["models"]["output"]}  # the pipeline run's models
    assert linked == {kind: model["id"] for kind, model in models.items()}
    texts = pages(agents, tmp_path, [{"name": "web-ui-models", "url": f"{agents.env['CLEARML_WEB_HOST']}/projects/*/models",
                                      "wait_for": f"{task['name']} · xgboost"}])
    shown = texts["web-ui-models"]
    assert f"{task['name']} · xgboost" in shown and f"{task['name']} · polynomial" in shown
    assert "XGBoost" in shown and "ScikitLearn" in shown


def test_each_step_console_says_what_it_did(agents, ui_run, tmp_path):
    run, folder = ui_run
    steps = agents.api.step_tasks(run)
    sha = agents.api.params(run)["properties/data_sha256"]
    expected = {
        "load": ["info: loaded ", "20640 rows x 9 columns", f"sha256 {sha}"],
        "split": ["info: split 20640 rows: 16512 train, 4128 test"],
        "train_polynomial": ["info: trained polynomial on 16512 rows in", "info: validation polynomial: R2"],
        "train_xgboost": ["info: trained xgboost on 16512 rows in", "rounds", "info: validation xgboost: R2"],
        "evaluate": ["info: test xgboost: R2", "info: test polynomial: R2", f"results written to {folder}"],
    }
    for step, needles in expected.items():
        text = "\n".join(console(agents, steps[step]))
        for needle in needles:
            assert needle in text, (step, needle, text[-2000:])
        if not nvidia_driver_present():  # no GPU here: no GPU monitoring lines; no progress bars of small inputs
            assert "GPU" not in text and "NVML" not in text, (step, text[-2000:])
        assert " MB [" not in text and "MB/s]" not in text, (step, text[-2000:])
    project = agents.api.task(steps["evaluate"])["project"]["id"]
    texts = pages(agents, tmp_path, [{"name": "web-ui-step-console", "wait_for": "results written to",
                                      "url": f"{agents.env['CLEARML_WEB_HOST']}/projects/{project}/tasks/"
                                             f"{steps['evaluate']}/output/log"}])
    assert "info: test xgboost: R2" in texts["web-ui-step-console:content"]


def test_args_hold_no_machine_path_without_output_dir(agents, ui_run):
    run, folder = ui_run
    assert agents.api.params(run)["Args/output_dir"] == ""
    assert agents.api.params(agents.api.step_tasks(run)["evaluate"])["kwargs/output_dir"] == ""
    assert folder.parent.name == "runs" and (folder / "metrics.csv").is_file()  # a new runs/ folder here


def test_pipeline_run_carries_test_and_validation_scores(agents, ui_run):
    run, folder = ui_run
    scalars = agents.api.last_scalars(run)  # what the runs table's metric columns and Compare read
    metrics = pd.read_csv(folder / "metrics.csv").set_index("model")
    for kind in ("polynomial", "xgboost"):
        assert scalars[("R2", kind)] == pytest.approx(metrics.loc[kind, "r2"], rel=1e-6)
        assert 0.5 < scalars[("validation R2", kind)] < 1
        assert ("Summary", f"{kind}/validation R2") in scalars


def test_step_panels_show_only_what_the_step_uses(agents, ui_run):
    """A run of two models: no configuration object for a training step that never ran, and the evaluate
    step's parameters name only the models that ran (each input once, as artifacts)."""
    run, _ = ui_run
    configs = agents.api("tasks.get_configuration_names", tasks=[run])["configurations"][0]["names"]
    assert "train_linear" not in configs and "train_random_forest" not in configs
    assert {"train_polynomial", "train_xgboost", "evaluate"} <= set(configs)
    evaluate = agents.api.params(agents.api.step_tasks(run)["evaluate"])
    assert not [name for name in evaluate if name.endswith(("/linear", "/random_forest"))], sorted(evaluate)
    assert {"kwargs_artifacts/polynomial", "kwargs_artifacts/xgboost"} <= set(evaluate), sorted(evaluate)
    for step, task_id in agents.api.step_tasks(run).items():  # each input once: not also empty under kwargs
        params = agents.api.params(task_id)
        inputs = [name.split("/", 1)[1] for name in params if name.startswith("kwargs_artifacts/")]
        assert inputs or step == "load", (step, sorted(params))
        assert not [name for name in inputs if f"kwargs/{name}" in params], (step, sorted(params))


def test_xgboost_curve_is_a_scalar_series_per_round(agents, ui_run):
    run, _ = ui_run
    xgb = agents.api.step_tasks(run)["train_xgboost"]
    curve = agents.api("events.scalar_metrics_iter_histogram", task=xgb)["XGBoost early stopping"]
    series = curve["validation RMSE ($100k)"]
    assert series["x"][0] == 1 and len(series["x"]) > 100 and series["x"] == sorted(series["x"])


def test_failed_run_says_why_on_the_pipeline_page(agents, ui_run, tmp_path):
    """A re-run on a CSV that fails the load step: the reason, the failed node, and a console that agrees."""
    run, _ = ui_run
    bad = _bad_csv(tmp_path)
    clone = agents.api.rerun(run, {"data_path": str(bad)})
    assert agents.api.wait(clone, timeout=600)["status"] == "failed"
    load = agents.api.dag(clone)["load"]  # the DAG node the pipeline page draws, by its status
    assert load["status"] == "failed" and agents.api.task(load["job_id"])["status"] == "failed", load
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("Task failed" in line for line in console(agents, clone)):
        time.sleep(3)
    lines = [line for line in console(agents, clone) if line.strip()]
    assert not any("Process completed successfully" in line for line in lines), lines[-10:]
    assert any(line.startswith("error: step 'load' failed") for line in lines), lines[-10:]
    task = agents.api.task(clone)  # the agent has stopped the controller and left the reason
    assert task["status"] == "failed" and task["status_reason"].startswith("step 'load' failed"), task["status_reason"]
    assert f"run outcome: {task['status_reason']}" in lines, lines[-10:]
    assert not any("abort callback" in line for line in lines), lines[-10:]  # its agent stopped it at once
    assert not any("Traceback" in line for line in lines), lines[-20:]  # the step's console has the step's
    assert agents.api.table(clone, "run outcome") == {"status": "failed", "reason": task["status_reason"],
                                                     "step": "load"}
    project = task["project"]["id"]
    url = f"{agents.env['CLEARML_WEB_HOST']}/pipelines/{project}/tasks/{clone}"
    texts = pages(agents, tmp_path, [{"name": "web-ui-failed-run-details", "url": url, "click": ["DETAILS"],
                                      "wait_for": "error: step 'load' failed"},
                                     {"name": "web-ui-failed-run-outcome", "url": url, "click": ["DETAILS", "PREVIEW"],
                                      "wait_for": "run outcome"}])
    assert "Failed" in texts["web-ui-failed-run-outcome"]  # the run, in the runs list; its load node is drawn failed
    assert "error: step 'load' failed" in texts["web-ui-failed-run-details"]  # the controller's console
    assert _squeezed(task["status_reason"]) in _squeezed(texts["web-ui-failed-run-outcome:content"])  # its table


def _bad_csv(folder: Path) -> Path:
    """The real data with a text value in a numeric column (passes the header check; the load step refuses it)."""
    bad = folder / "bad.csv"
    frame = pd.read_csv(ROOT / "data" / "cal_housing.csv")
    frame["median_income"] = frame["median_income"].astype(object)
    frame.loc[20000, "median_income"] = "n/a?"
    frame.to_csv(bad, index=False)
    return bad


def test_a_local_run_on_bad_data_says_so_once_and_draws_its_whole_dag(agents, checkout, tmp_path):
    """``--mode local``: the load step (a process of its own, sharing the terminal) refuses the data. The terminal
    gets one line and exit 2, as offline; the step's traceback is in its console only; the DAG links every step
    (ClearML links a step to its parents only once they ran)."""
    bad = _bad_csv(tmp_path)
    result = run_cli(agents, checkout, "--mode", "local", "--data", str(bad), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("info: ")]
    assert said == [f"error: step 'load' failed: {bad}: column median_income has a non-numeric value 'n/a?' in "
                    "data row 20001; fix or remove that row (every column must be numeric)"], said
    assert "Traceback" not in result.stdout and result.stdout.strip().splitlines()[-1].startswith("web UI: ")
    run = run_id(result.stdout)
    dag = agents.api.dag(run)
    assert {name: sorted(set(node["parents"])) for name, node in dag.items()} == {
        "load": [], "split": ["load"], "train_polynomial": ["split"], "train_xgboost": ["split"],
        "evaluate": ["split", "train_polynomial", "train_xgboost"]}
    assert dag["load"]["status"] == "failed" and not (tmp_path / "out").exists()
    step_console = "\n".join(console(agents, dag["load"]["job_id"]))
    assert "Traceback" in step_console and "steps.errors.DataError: " in step_console  # for whoever debugs it


def test_a_rerun_refused_for_its_args_says_why_on_the_pipeline_page(agents, ui_run, tmp_path):
    """A value typed in the web UI that is not a number: no step runs, every node is drawn skipped (none linked to
    the steps of the run it was cloned from), and the page shows the reason."""
    run, _ = ui_run
    clone = agents.api.rerun(run, {"xgb_max_depth": "deep"})
    assert agents.api.wait(clone, timeout=300)["status"] == "failed"
    reason = "xgb_max_depth = 'deep' is not an int: allowed 1 to 20"
    dag = agents.api.dag(clone)
    assert {name: (node["status"], node.get("job_id")) for name, node in dag.items()} == {
        name: ("skipped", None) for name in dag} and set(STEPS) <= set(dag)
    assert agents.api.table(clone, "run outcome") == {"status": "failed", "reason": reason,
                                                     "step": "none (no step ended the run)"}
    deadline = time.monotonic() + 60  # the agent sends the console in batches
    while time.monotonic() < deadline and not any("Task failed" in line for line in console(agents, clone)):
        time.sleep(3)
    lines = [line for line in console(agents, clone) if line.strip()]
    assert f"run outcome: {reason}" in lines and not any("Traceback" in line for line in lines), lines[-10:]
    assert not any("abort callback" in line for line in lines), lines[-10:]
    project = agents.api.task(clone)["project"]["id"]
    url = f"{agents.env['CLEARML_WEB_HOST']}/pipelines/{project}/tasks/{clone}"
    texts = pages(agents, tmp_path, [{"name": "web-ui-refused-run", "url": url, "click": ["DETAILS", "PREVIEW"],
                                      "wait_for": "run outcome"}])
    assert _squeezed(reason) in _squeezed(texts["web-ui-refused-run:content"])


def _squeezed(text: str) -> str:
    """``text`` without whitespace: a table cell wraps long text into lines that its page text joins as is."""
    return "".join(text.split())


def test_comparing_two_runs_shows_their_plots_labelled_by_run(agents, checkout, data, ui_run, tmp_path):
    """The pipeline run carries the test table (4 decimals) and figures, so Compare labels them by run."""
    import json
    import re

    run, _ = ui_run
    other = run_cli(agents, checkout, "--mode", "local", "--models", "polynomial", "--data", str(data),
                    "--output-dir", str(tmp_path / "other"))
    assert other.returncode == 0, other.stderr[-3000:]
    second = run_id(other.stdout)
    plots = {p["metric"]: p for p in agents.api("events.get_task_plots", task=run, iters=1)["plots"]}
    assert {"Metrics", "Predicted vs actual (test set)", "Model comparison (test set)"} <= set(plots), set(plots)
    cells = json.loads(plots["Metrics"]["plot_str"])["data"][0]["cells"]["values"]
    numbers = [str(v) for column in cells for v in column if re.fullmatch(r"-?\d+\.\d+", str(v))]
    assert len(numbers) == 6 and all(len(n.split(".")[-1]) == 4 for n in numbers), numbers  # 0.2700, not 0.27
    names = [agents.api.task(t)["name"] for t in (run, second)]
    project = agents.api.task(run)["project"]["id"]
    url = f"{agents.env['CLEARML_WEB_HOST']}/pipelines/{project}/compare-tasks;ids={run},{second}/metrics-plots"
    texts = pages(agents, tmp_path, [{"name": "web-ui-compare-runs", "url": url, "wait_for": "Metrics - test set"}])
    text = texts["web-ui-compare-runs:content"]
    assert "Compare Pipeline Runs" in text and all(name in text for name in names), (names, text[:1500])
    assert not re.search(r"evaluate\.[0-9a-f]{6}", text), text[:1500]
