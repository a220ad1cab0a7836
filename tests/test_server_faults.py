"""The faults of a real ClearML cluster, on the real server of ``../shared/clearml-server``.

The promise, in every mode: a run that did not train and evaluate every model it was asked for
never exits 0 and never writes results; it never waits more than about a minute without saying
what it waits for; however it ends, the server says so (failed or aborted, with its one-line
reason), with none of its steps left running or queued. The web UI's *Abort* is the REST call it
sends (``tasks.stop`` with ``force``); agents are started and killed through the harness.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.step_watch import LOST_AFTER_S
from server_support import HARNESS, run_cli, run_id, start_server, stop_server

pytestmark = pytest.mark.server
LONG_XGBOOST = ("--xgb-n-estimators", "20000", "--xgb-early-stopping-rounds", "0")  # a step that runs for minutes


def _start(server, checkout, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "clearml_pipeline.py", *args], cwd=checkout, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or server.client_env())


def _running(server, name: str, since: float, timeout: float = 300) -> str:
    """The id of the task ``name`` that started running after ``since`` (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in server.api("tasks.get_all", name=f"^{name}$", status=["in_progress"],
                               only_fields=["id", "started"], order_by=["-started"])["tasks"]:
            return task["id"]
        time.sleep(1)
    pytest.fail(f"no task {name} started running within {timeout} s")


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _controller(server) -> dict:
    """The newest pipeline run (controller task)."""
    return server.api("tasks.get_all", type=["controller"], only_fields=["id", "status", "status_reason",
                                                                           "status_message", "created"],
                      order_by=["-created"])["tasks"][0]


def _left_running(server, controller_id: str) -> list[str]:
    """Tasks of the run (its steps) still queued or running on the server."""
    tasks = server.api("tasks.get_all", parent=controller_id, status=["queued", "in_progress"],
                       only_fields=["name"])["tasks"]
    return [t["name"] for t in tasks]


def test_a_step_aborted_in_the_web_ui_fails_the_run(agents, checkout, data, tmp_path):
    out = tmp_path / "results"
    proc = _start(agents, checkout, "--mode", "local", "--data", str(data), "--output-dir", str(out), *LONG_XGBOOST)
    step = _running(agents, "train_xgboost", time.time())
    time.sleep(2)
    agents.api("tasks.stop", task=step, force=True)  # the web UI's Abort
    aborted = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - aborted < 30
    assert proc.returncode == 1
    errors = _errors(stderr)
    assert len(errors) == 1 and "step 'train_xgboost' was aborted" in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr and "results:" not in stdout
    assert not (out / "metrics.csv").exists() and not (out / "models").exists()
    run = _controller(agents)
    assert run["status"] == "failed" and "step 'train_xgboost' was aborted" in run["status_reason"]
    assert _left_running(agents, run["id"]) == []
    assert agents.api.task(step)["status"] == "stopped"  # ClearML marks its ended process failed: set back
    assert stdout.splitlines()[-1].endswith(f"/tasks/{run['id']}") and "web UI: " in stdout  # its pipeline page
    lines = [line for line in agents.api.console(run["id"]) if line.strip()]  # the run's console, as the UI shows
    assert lines[-1] == f"run outcome: {run['status_reason']}", lines[-10:]  # no traceback of the watch's wake-up
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines), lines[-20:]
    assert agents.api.table(run["id"], "run outcome")["step"] == "train_xgboost"  # DETAILS > PREVIEW
    assert agents.api.dag(run["id"])["train_xgboost"]["status"] == "aborted"  # its node, as the page draws it


@pytest.mark.parametrize("moment", ["created", "in_progress"])
def test_a_step_aborted_as_it_starts_fails_the_run(agents, checkout, data, tmp_path, moment):
    """Aborted the moment its task exists (before ClearML launches it, which would set it running again) or
    the moment it is launched (before its process began: the process then sets the task running again and
    would complete it; the server keeps no other trace than the task's new start time). Found by breakers."""
    out = tmp_path / "results"
    earlier = {t["id"] for t in agents.api("tasks.get_all", name="^train_xgboost$", only_fields=["id"])["tasks"]}
    proc = _start(agents, checkout, "--mode", "local", "--data", str(data), "--output-dir", str(out), *LONG_XGBOOST)
    deadline, step = time.monotonic() + 300, None
    while step is None and time.monotonic() < deadline:  # the moment its task is in that status
        seen = agents.api("tasks.get_all", name="^train_xgboost$", status=[moment], only_fields=["id"])["tasks"]
        step = next((task["id"] for task in seen if task["id"] not in earlier), None)
        time.sleep(0.02)
    assert step, "train_xgboost never ran"
    agents.api("tasks.stop", task=step, force=True)  # the web UI's Abort
    aborted = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-2000:]
    assert time.monotonic() - aborted < 30, "seen within seconds, not once the step had trained (about 90 s)"
    errors = _errors(stderr)
    assert len(errors) == 1 and "step 'train_xgboost' was aborted" in errors[0], stderr[-2000:]
    assert "results:" not in stdout and not (out / "metrics.csv").exists()
    run = _controller(agents)
    assert run["status"] == "failed" and "step 'train_xgboost' was aborted" in run["status_reason"]
    time.sleep(5)  # nothing writes over the stop afterwards
    assert agents.api.task(step)["status"] == "stopped"
    assert (agents.api.task(step).get("parent") or {}).get("id") == run["id"]  # under its run (ClearML: drafts only)
    assert _left_running(agents, run["id"]) == []


def test_ctrl_c_stops_the_step_an_agent_runs(agents, checkout, data, tmp_path):
    """The agent acts on a stop request every few seconds: the run waits for it, and the step stays aborted."""
    proc = _start(agents, checkout, "--mode", "remote", "--controller-queue", "local", "--data", str(data),
                  "--output-dir", str(tmp_path / "results"), "--no-cache", *LONG_XGBOOST)
    step = _running(agents, "train_xgboost", time.time(), timeout=400)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - interrupted < 25
    assert proc.returncode == 130 and _errors(stderr) == ["error: interrupted"], stderr[-2000:]
    assert agents.api.task(step)["status"] == "stopped"
    running = [(w.get("task") or {}).get("id") for w in agents.api("workers.get_all")["workers"]]
    assert step not in running
    run = _controller(agents)
    assert run["status"] == "stopped" and _left_running(agents, run["id"]) == []


def test_the_run_aborted_in_the_web_ui_stops_its_steps(agents, checkout, data, tmp_path):
    """The run's own task aborted (the pipeline's Abort): ClearML ends the process; its steps must not run on."""
    proc = _start(agents, checkout, "--mode", "local", "--data", str(data), "--output-dir", str(tmp_path / "out"),
                  *LONG_XGBOOST)
    step = _running(agents, "train_xgboost", time.time())
    run = agents.api.task(step)["parent"]["id"]
    time.sleep(2)
    agents.api("tasks.stop", task=run, force=True)  # the web UI's Abort, on the pipeline run
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "results:" not in stdout
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        "error: the run was aborted (its task was stopped in the web UI); stopping its steps"], stderr[-2000:]
    time.sleep(5)
    assert agents.api.task(run)["status"] == "stopped"
    assert agents.api.task(step)["status"] == "stopped" and _left_running(agents, run) == []


def test_ctrl_c_twice_still_records_the_run_as_aborted(agents, checkout, data, tmp_path):
    proc = _start(agents, checkout, "--mode", "local", "--data", str(data), "--output-dir", str(tmp_path / "out"),
                  *LONG_XGBOOST)
    step = _running(agents, "train_xgboost", time.time())
    run = agents.api.task(step)["parent"]["id"]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and _errors(stderr) == ["error: interrupted"], stderr[-2000:]
    assert "Traceback" not in stderr  # the second one is said ('stopping: the run is already ending') or lost
    time.sleep(3)
    assert agents.api.task(run)["status"] == "stopped" and _left_running(agents, run) == []


def test_a_step_that_completes_over_its_stop_is_set_back_to_aborted(server):
    """The race the run waits out: a step's process ends *completed* after the stop request."""
    task = server.api("tasks.create", name="step-completing-over-its-stop", type="training",
                      project=server.api("projects.create", name=f"settle-{time.time_ns()}")["id"])["id"]
    server.api("tasks.started", task=task)
    server.api("tasks.stop", task=task, force=True)
    server.api("tasks.completed", task=task)  # what the step's process or its agent writes when the step ends
    assert server.api.task(task)["status"] == "completed"
    settle = ("from clearml.backend_api.session.client import APIClient\n"
              "from runtime.step_watch import settle_tasks\n"
              f"settle_tasks(APIClient(), {{{task!r}: ('train_xgboost', 'the run was interrupted')}})\n")
    subprocess.run([sys.executable, "-c", settle], cwd=Path(__file__).parents[1], env=server.client_env(), check=True)
    record = server.api.task(task)
    assert record["status"] == "stopped" and record["status_reason"] == "the run was interrupted"


def test_ctrl_c_aborts_the_run_and_takes_its_steps_out_of_the_queue(agents, checkout, data, tmp_path):
    """Steps on a queue no agent serves: the run says what it waits for within about a minute, and
    Ctrl-C then aborts the run on the server and leaves nothing queued."""
    agents.api("queues.create", name="nobody-serves-this")
    proc = subprocess.Popen([sys.executable, "clearml_pipeline.py", "--mode", "remote", "--controller-queue", "local",
                             "--queue", "nobody-serves-this", "--data", str(data), "--output-dir",
                             str(tmp_path / "results"), "--no-cache"], cwd=checkout, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=agents.client_env())  # bytes: read as they come
    started = time.monotonic()
    said, seen = "", None
    while time.monotonic() - started < 100 and seen is None:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            said += os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
        seen = next((line for line in said.splitlines() if line.startswith("waiting: ")), None)
    assert seen, said[-2000:]
    assert time.monotonic() - started < 90
    assert "step 'load'" in seen and "clearml-agent daemon --queue nobody-serves-this" in seen, seen
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, rest = proc.communicate(timeout=60)
    assert time.monotonic() - interrupted < 10
    said += rest.decode(errors="replace")
    assert proc.returncode == 130 and _errors(said) == ["error: interrupted"], said[-2000:]
    run = _controller(agents)
    assert run["status"] == "stopped" and run["status_reason"] == "interrupted", run
    assert _left_running(agents, run["id"]) == []
    queue = agents.api("queues.get_all", name="^nobody-serves-this$")["queues"][0]
    assert queue["entries"] == []


def test_a_killed_agent_is_a_lost_step_within_two_minutes(agents, checkout, data, tmp_path):
    """The agent running a step dies (SIGKILL of its process group, as when its machine dies)."""
    agents.agent("doomed-agent-queue")
    pid_file = agents.state / "pids" / "agent-doomed-agent-queue-1.pid"
    proc = _start(agents, checkout, "--mode", "remote", "--controller-queue", "local", "--queue", "doomed-agent-queue",
                  "--data", str(data), "--output-dir", str(tmp_path / "results"), *LONG_XGBOOST)
    step = _running(agents, "train_xgboost", time.time(), timeout=400)
    time.sleep(3)
    os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = proc.communicate(timeout=LOST_AFTER_S + 120)
    assert time.monotonic() - killed < LOST_AFTER_S + 45
    assert proc.returncode == 1
    errors = _errors(stderr)
    assert len(errors) == 1 and "step 'train_xgboost' was lost: its agent" in errors[0], stderr[-2000:]
    # never silent for more than about a minute, also while a step runs on an agent
    assert re.search(r"^running: step 'train_xgboost' for \d+ s on agent test-agent-doomed-agent-queue", stderr, re.M)
    assert agents.api.task(step)["status"] == "failed"
    run = _controller(agents)
    assert run["status"] == "failed" and "was lost" in run["status_reason"]
    assert _left_running(agents, run["id"]) == []


@pytest.fixture(scope="module")
def base_run(agents, checkout, data, tmp_path_factory) -> str:
    """A completed ``--mode local`` run (one model) to re-run from the web UI."""
    result = run_cli(agents, checkout, "--mode", "local", "--models", "polynomial", "--data", str(data),
                     "--output-dir", str(tmp_path_factory.mktemp("base") / "results"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_id(result.stdout)
    assert agents.api.wait(run, timeout=600)["status"] == "completed"
    return run


@pytest.mark.parametrize("value, expected", [
    ("abc", "xgb_max_depth = 'abc' is not an int: allowed 1 to 20"),
    ("", "xgb_max_depth = '' is not an int: allowed 1 to 20"),
])
def test_args_typed_in_the_web_ui_that_are_not_numbers_fail_the_rerun(agents, base_run, value, expected):
    clone = agents.api.rerun(base_run, {"xgb_max_depth": value})
    agents.api.wait(clone, timeout=300)
    time.sleep(5)  # the agent is done with the task: the reason is still the run's own
    task = agents.api.task(clone)
    assert task["status"] == "failed" and task["status_reason"] == expected, task.get("status_reason")
    assert not agents.api.step_tasks(clone).get("load")  # refused before any step


def test_an_offline_run_killed_imports_as_aborted_and_its_folder_is_usable_again(agents, checkout, data, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "results"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}, "CLEARML_CACHE_DIR": str(cache),
           "CLEARML_CONFIG_FILE": str(tmp_path / "none.conf")}
    proc = subprocess.Popen([sys.executable, "clearml_pipeline.py", "--data", str(data), "--output-dir", str(out),
                             *LONG_XGBOOST], cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not list(cache.glob("offline/offline-*/task.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(8)  # inside the training step
    proc.send_signal(signal.SIGKILL)  # power loss: no handler runs, no outcome recorded
    proc.communicate(timeout=30)
    session = next(p for p in cache.glob("offline/offline-*") if p.is_dir())
    result = run_cli(agents, checkout, "import-offline", str(session))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ended aborted: the run ended without recording an outcome" in result.stdout, result.stdout
    task = agents.api.task(result.stdout.strip().split()[-1])
    assert task["status"] == "stopped"
    assert "without recording an outcome" in (task.get("status_message") or ""), task.get("status_message")
    again = subprocess.run([sys.executable, "clearml_pipeline.py", "--data", str(data), "--output-dir", str(out),
                            "--models", "linear"], cwd=checkout, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]  # the killed run's claim on the folder is stale
    assert (out / "metrics.csv").is_file()


def test_register_data_twice_at_once_makes_one_version_per_content(server, checkout, data, tmp_path):
    project, name = "Faults", "registered-at-once"
    same = [subprocess.Popen([sys.executable, "clearml_pipeline.py", "register-data", str(data), "--dataset-project",
                              project, "--dataset-name", name], cwd=checkout, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=server.client_env()) for _ in range(2)]
    ids = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in same]
    assert all(p.returncode == 0 for p in same)
    assert ids[0] == ids[1]  # one version for one content
    lines = data.read_text().splitlines()
    other, third = tmp_path / "other.csv", tmp_path / "third.csv"
    other.write_text("\n".join(lines[:-5]) + "\n")  # two other contents, both valid
    third.write_text("\n".join(lines[:-9]) + "\n")
    both = [subprocess.Popen([sys.executable, "clearml_pipeline.py", "register-data", str(path), "--dataset-project",
                              project, "--dataset-name", name], cwd=checkout, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=server.client_env()) for path in (other, third)]
    new = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in both]
    assert all(p.returncode == 0 for p in both) and len(set(new)) == 2
    versions = server.api("tasks.get_all", system_tags=["dataset"], name=f"^{name}$",
                          only_fields=["id", "created"], order_by=["created"])["tasks"]
    assert len(versions) == 3
    # the SDK's own view of the lineage (what the Datasets page draws): a line, each version with its parent
    result = subprocess.run([sys.executable, "-c", (
        "import sys; from clearml import Dataset\n"
        "for i in sys.argv[1:]:\n"
        "    print(i, ','.join(Dataset.get(dataset_id=i).get_dependency_graph().get(i, [])))\n"),
        *[v["id"] for v in versions]], capture_output=True, text=True, env=server.client_env(), timeout=120)
    graph = dict(line.split(" ", 1) if " " in line else (line, "") for line in result.stdout.strip().splitlines())
    chain = [v["id"] for v in versions]
    assert graph[chain[0]].strip() == ""
    assert graph[chain[1]].strip() == chain[0] and graph[chain[2]].strip() == chain[1], (graph, chain)


def test_the_api_server_losing_its_database_mid_run_is_one_line(checkout, data, tmp_path_factory):
    """A server of its own, restarted while a step runs: its database is gone, and so is the run's task."""
    srv, why = start_server(tmp_path_factory.mktemp("amnesic-server"), web=False)
    if srv is None:
        pytest.skip(why)
    try:
        proc = _start(srv, checkout, "--mode", "local", "--data", str(data), "--output-dir",
                      str(tmp_path_factory.mktemp("amnesic") / "results"), *LONG_XGBOOST)
        _running(srv, "train_xgboost", time.time())
        subprocess.run([str(HARNESS / "bin" / "restart"), str(srv.state), "apiserver", "--down", "2"], check=True,
                       capture_output=True, timeout=120)
        restarted = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
    finally:
        stop_server(srv)
    assert time.monotonic() - restarted < 60
    assert proc.returncode == 1
    errors = _errors(stderr)
    assert len(errors) == 1 and "lost its database" in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


def test_the_lost_server_seconds_are_the_documented_ones():
    from runtime.server import LOST_AFTER_S as SERVER_LOST

    errors_md = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()
    assert f"no answer for {SERVER_LOST} s" in errors_md
    assert f"{LOST_AFTER_S} s" in errors_md
