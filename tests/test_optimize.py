"""``optimize``: ClearML's HyperParameterOptimizer over runs of the pipeline (``runtime.optimize``).

Without a server: the command line's checks (one line, exit 2), the search space as ClearML ranges,
the table and command of the best. On the harness (``@pytest.mark.server``): a search with
``--mode local`` and no agent, a search on agents with two trials at once, and Ctrl-C stopping a
search with nothing left queued or running. Budgets are tiny (2 trials, 300 boosting rounds).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from server_support import HARNESS, run_cli, run_id

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIMIZER = re.compile(r"^optimizer: \S*/tasks/([0-9a-f]{32})/", re.M)
BEST = re.compile(r"^best: run ([0-9a-f]{32}), validation R2 ([0-9.]+); run it with:\n  (python clearml_pipeline\.py .*)$",
                  re.M)


# --- the command line, no server -------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--mode", "offline"], "optimize needs a ClearML server"),
    (["--search", "no_such=1:2"], "'no_such' is not a tuned parameter"),
    (["--search", "xgb_max_depth=8:3"], "low 8 must be below high 3"),
    (["--search", "xgb_learning_rate=0:0.3"], "xgb_learning_rate = 0.0 is out of range"),
    (["--set", "nope=1"], "'nope' is not a pipeline parameter"),
    (["--set", "xgb_max_depth=4"], "xgb_max_depth is also searched"),
    (["--set", "xgb_n_estimators=many"], "xgb_n_estimators = 'many' is not an int"),
    (["--objective", "linear"], "linear has no tuned parameter"),
    (["--strategy", "bayes"], "--strategy 'bayes'"),
    (["--trials", "0"], "--trials 0 must be at least 1"),
])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_API")}
    result = subprocess.run([sys.executable, "clearml_pipeline.py", "optimize", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_default_space_is_the_objective_models_declared_ranges():
    from cli.optimize_command import parse_optimize

    xgb = dict(parse_optimize([]).space)
    assert set(xgb) == {"xgb_max_depth", "xgb_learning_rate", "xgb_subsample", "xgb_colsample_bytree",
                        "xgb_min_child_weight", "spatial_neighbors"}
    poly = dict(parse_optimize(["--objective", "polynomial", "--search", "poly_alpha=0.1:10"]).space)
    assert set(poly) == {"poly_degree", "poly_alpha", "spatial_neighbors"} and poly["poly_alpha"][:3] == (0.1, 10.0,
                                                                                                          "log")


def test_search_parameters_are_typed_clearml_ranges():
    from clearml.automation import DiscreteParameterRange, LogUniformParameterRange, UniformIntegerParameterRange

    from runtime.optimize import grid_values, search_parameters

    space = {"xgb_max_depth": (3, 10, "linear", int), "xgb_learning_rate": (0.01, 0.3, "log", float)}
    depth, rate = search_parameters(space, "optuna")
    assert isinstance(depth, UniformIntegerParameterRange) and depth.name == "Args/xgb_max_depth"
    assert isinstance(rate, LogUniformParameterRange) and rate.step_size is None
    assert all(isinstance(p, DiscreteParameterRange) for p in search_parameters(space, "grid"))
    assert grid_values(3, 10, "linear", int, 3) == [3, 6, 10]  # 6.5 rounds to even
    assert grid_values(0.01, 1.0, "log", float, 3) == [0.01, 0.1, 1.0]


def test_best_table_and_command():
    from runtime.optimize_report import Trial, best_command, best_table, trial_scores

    metrics = {"Summary": {"xgboost/validation R2": {"last": 0.87}}, "R2": {"xgboost": {"last": 0.88}},
               "RMSE": {"xgboost": {"last": 0.39}}}
    assert trial_scores(metrics, "xgboost") == (0.87, {"R2": 0.88, "RMSE": 0.39})
    trials = [Trial("a" * 32, "completed", {"Args/xgb_max_depth": 5}, 0.86), Trial("b" * 32, "failed", {}),
              Trial("c" * 32, "completed", {"Args/xgb_max_depth": 7}, 0.87, {"R2": 0.88})]
    table = best_table(trials, "xgboost")
    assert list(table["trial"]) == ["cccccccc", "aaaaaaaa"] and list(table["xgb_max_depth"]) == [7, 5]
    assert best_command({"xgb_max_depth": 7, "xgb_learning_rate": 0.0412345678}) == (
        "python clearml_pipeline.py --mode local --xgb-max-depth 7 --xgb-learning-rate 0.0412346")


# --- on the harness -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_run(server, checkout, data, tmp_path_factory):
    """A completed ``--mode local`` run that trains XGBoost only, with 300 boosting rounds (short trials)."""
    out = tmp_path_factory.mktemp("base") / "results"
    result = run_cli(server, checkout, "--mode", "local", "--data", str(data), "--models", "xgboost",
                     "--xgb-n-estimators", "300", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_id(result.stdout)


def _trials(api, optimizer_id: str) -> list[dict]:
    return api("tasks.get_all_ex", parent=optimizer_id, search_hidden=True,
               only_fields=["id", "status", "project", "system_tags", "started", "completed", "last_worker"])["tasks"]


def _check_search(server, base: str, result, trials: int = 2) -> tuple[str, list[dict]]:
    """What every search shows: a line per trial, trials as cached runs of the pipeline, the printed best."""
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for k in range(1, trials + 1):
        assert re.search(rf"^trial {k}/{trials} [0-9a-f]{{8}} .*validation R2 0\.\d{{4}}, test R2 0\.\d{{4}}; best so far",
                         result.stdout, re.M), result.stdout
    optimizer_id = OPTIMIZER.search(result.stdout).group(1)
    api = server.api
    assert api.task(optimizer_id)["type"] == "optimizer" and api.task(optimizer_id)["status"] == "completed"
    runs = _trials(api, optimizer_id)
    assert len(runs) == trials and all(t["status"] == "completed" for t in runs)
    base_steps = api.step_tasks(base)
    for trial in runs:
        assert trial["project"]["id"] == api.task(base)["project"]["id"]  # the pipeline's hidden project: Pipelines page
        assert "pipeline" in trial["system_tags"]
        steps = api.step_tasks(trial["id"])
        assert steps["load"] == base_steps["load"] and steps["split"] == base_steps["split"]  # from the cache
        assert steps["train_xgboost"] != base_steps["train_xgboost"]
    best_id, best_value, command = BEST.search(result.stdout).groups()
    objective = {t["id"]: api.last_scalars(t["id"])[("Summary", "xgboost/validation R2")] for t in runs}
    assert best_id == max(objective, key=objective.get) and float(best_value) == pytest.approx(objective[best_id],
                                                                                                abs=1e-4)
    trial_args = api.params(best_id)
    assert f"--xgb-max-depth {trial_args['Args/xgb_max_depth']}" in command
    plots = api("events.get_task_plots", task=optimizer_id, iters=1)["plots"]
    assert plots, "the optimizer's task shows no plot (objective, summary table, parallel coordinates)"
    return optimizer_id, runs


@pytest.mark.server
def test_optimize_local_runs_trials_here_without_agents(server, checkout, base_run):
    result = run_cli(server, checkout, "optimize", "--mode", "local", "--trials", "2", "--seed", "3",
                     "--report-period", "2", timeout=600)
    _check_search(server, base_run, result)
    assert "1 at once, here" in result.stdout
    assert "Launching step" not in result.stdout  # a trial's own output is on its task, not in the search's


def _start_agent(server, queue: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STEPS_OUTPUT_CLAIM"}
    subprocess.run([str(HARNESS / "bin" / "agent"), str(server.state), queue, "--python", sys.executable],
                   check=True, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def two_agents_each(agents):
    """Two agents on ``default`` (steps) and two on ``services`` (controllers): two trials at once."""
    for queue in ("default", "services"):
        _start_agent(agents, queue)
    return agents


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.server
def test_optimize_on_agents_runs_two_trials_at_once(two_agents_each, checkout, base_run):
    server = two_agents_each
    result = run_cli(server, checkout, "optimize", "--trials", "2", "--concurrent", "2", "--seed", "5",
                     "--set", "xgb_n_estimators=200", "--report-period", "2", timeout=900)
    _, runs = _check_search(server, base_run, result)
    assert "2 at once, on agents" in result.stdout
    first, second = sorted(runs, key=lambda t: t["started"])
    assert _when(second["started"]) < _when(first["completed"])  # the two trials overlapped
    for trial in runs:
        assert trial["last_worker"].startswith("test-agent-services")
        assert server.api.params(trial["id"])["Args/xgb_n_estimators"] == "200"
        steps = server.api.step_tasks(trial["id"])
        assert server.api.task(steps["train_xgboost"])["last_worker"].startswith("test-agent-default")


@pytest.mark.server
def test_ctrl_c_stops_the_search_and_leaves_nothing_queued_or_running(two_agents_each, checkout, base_run):
    server = two_agents_each
    command = [sys.executable, "clearml_pipeline.py", "optimize", "--trials", "6", "--concurrent", "2",
               "--report-period", "2"]
    proc = subprocess.Popen(command, cwd=checkout, env=server.client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    optimizer_id, deadline = None, time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        found = OPTIMIZER.search(line)
        if found:
            optimizer_id = found.group(1)
            break
    assert optimizer_id, proc.stderr.read() if proc.poll() is not None else "no optimizer line"
    while time.monotonic() < deadline and not any(t["status"] == "in_progress" for t in _trials(server.api,
                                                                                                 optimizer_id)):
        time.sleep(1)
    time.sleep(5)  # a trial's steps launched
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-2:] == [
        f"stopped {err.split('stopped ')[-1].split(' ')[0]} trial task(s): none left queued or running; the "
        "optimizer's task is aborted", "error: interrupted"], err[-2000:]
    assert "Traceback" not in err
    trials = _trials(server.api, optimizer_id)
    assert trials
    steps = [step for t in trials for step in server.api("tasks.get_all_ex", parent=t["id"],
                                                          only_fields=["id", "status"])["tasks"]]
    time.sleep(5)  # what an agent might still pick up
    for task in trials + steps:
        assert server.api.task(task["id"])["status"] not in ("queued", "in_progress"), task
    assert server.api.task(optimizer_id)["status"] == "stopped"


@pytest.mark.server
def test_a_failed_trial_is_reported_and_not_fatal(server, checkout, base_run, tmp_path):
    result = run_cli(server, checkout, "optimize", "--mode", "local", "--trials", "1", "--base", base_run,
                     "--set", f"data_path={tmp_path / 'missing.csv'}", "--report-period", "2", timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert re.search(r"^trial 1/1 [0-9a-f]{8} .*: failed, no validation score \(step 'load' failed", result.stdout,
                     re.M), result.stdout
    assert "1 trial(s) ended, 0 with a validation score, 1 failed or aborted" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: no trial completed with a validation score")


@pytest.mark.server
def test_the_optimizer_can_run_on_the_services_queue(agents, checkout, base_run):
    result = run_cli(agents, checkout, "optimize", "--mode", "local", "--trials", "1", "--base", base_run,
                     "--optimizer-queue", "services", "--report-period", "2", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the optimizer runs on queue 'services'" in result.stdout
    optimizer_id = run_id(result.stdout)
    task = agents.api.wait(optimizer_id, timeout=600)
    assert task["status"] == "completed" and task["last_worker"].startswith("test-agent-services"), task["status"]
    trials = _trials(agents.api, optimizer_id)
    assert [t["status"] for t in trials] == ["completed"]
