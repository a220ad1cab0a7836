"""Versioned data with ClearML Data (issue 13), against the real ClearML server of ``../shared/clearml-server``.

``register-data`` creates dataset versions (parent: the latest), identical files create nothing;
runs train on a version by id (or name), record the SHA-256 and row count of what they trained
on, and a re-run from the web UI can switch the version. Read back through the REST calls the
web UI makes, and on the web UI's Datasets page itself (playwright, where the harness has it).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from server_support import HARNESS, harness_python, run_cli, run_id

pytestmark = pytest.mark.server

PROJECT, NAME = "California Housing", "cal_housing"


def sha256(path: Path) -> str:
    from steps.datafile import file_sha256

    return file_sha256(path)


def register(server, checkout, path: Path, *extra: str, env=None):
    result = run_cli(server, checkout, "register-data", str(path), *extra, timeout=300, env=env)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def one_error_line(result) -> str:
    """The single ``error:`` line of a refused command (no traceback, nothing else on stderr that says error)."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def properties(server, task_id: str) -> dict[str, str]:
    """The task's user properties (CONFIGURATION > USER PROPERTIES in the web UI)."""
    return {k.split("/", 1)[1]: v for k, v in server.api.params(task_id).items() if k.startswith("properties/")}


def metrics_of(server, run: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(server.api.artifact_text(run, "metrics.csv"))).set_index("model")


def dataset_tasks(server) -> list[dict]:
    return server.api("tasks.get_all", name=f"^{NAME}$", system_tags=["dataset"], type=["data_processing"],
                      search_hidden=True, only_fields=["id", "status", "runtime"])["tasks"]


def parents_of(server, dataset_id: str) -> list[str]:
    """The parent version ids of a dataset version, from its ``Dataset Struct`` (the UI's lineage graph)."""
    struct = json.loads(server.api.task(dataset_id)["configuration"]["Dataset Struct"]["value"])
    by_index = {key: node["job_id"] for key, node in struct.items()}
    node = next(node for node in struct.values() if node["job_id"] == dataset_id)
    return [by_index[str(i)] for i in node["parents"]]


@pytest.fixture(scope="module")
def versions(server, checkout, data, tmp_path_factory):
    """Register the data, the same file again, then the data with one value changed.

    :returns: ``{"first": (id, path), "again": result, "changed": (id, path), "results": [...]}``.
    """
    folder = tmp_path_factory.mktemp("versions")
    first = folder / "v1" / "cal_housing.csv"
    first.parent.mkdir()
    shutil.copyfile(data, first)
    changed = folder / "v2" / "cal_housing.csv"
    changed.parent.mkdir()
    lines = first.read_text().splitlines(keepends=True)
    fields = lines[1].rstrip("\n").split(",")
    fields[-1] = "123456.0" if float(fields[-1]) != 123456.0 else "234567.0"  # one target value
    lines[1] = ",".join(fields) + "\n"
    changed.write_text("".join(lines))
    r1 = register(server, checkout, first)
    again = register(server, checkout, first)
    r2 = register(server, checkout, changed)
    for result in (r1, again, r2):
        assert result.returncode == 0, result.stderr[-3000:]
    return {"first": (r1.stdout.split()[-1], first), "again": again, "changed": (r2.stdout.split()[-1], changed),
            "results": (r1, again, r2)}


def test_register_creates_a_finalized_version_with_the_files_hash(server, versions):
    dataset_id, path = versions["first"]
    assert re.fullmatch(r"[0-9a-f]{32}", dataset_id)
    task = server.api.task(dataset_id)
    assert task["type"] == "data_processing" and "dataset" in task["system_tags"]
    assert task["status"] == "completed" and task["name"] == NAME  # finalized
    assert task["runtime"]["version"] == "1.0.0" and task["runtime"]["ds_file_count"] == 1
    props = properties(server, dataset_id)
    assert props["sha256"] == sha256(path) and props["rows"] == "20640" and props["layout"] == "statlib"
    assert props["file"] == "cal_housing.csv"
    assert parents_of(server, dataset_id) == []
    assert "registered" in versions["results"][0].stdout and "first version" in versions["results"][0].stdout


def test_registering_the_same_file_again_creates_nothing(server, versions):
    again = versions["again"]
    assert again.stdout.split()[-1] == versions["first"][0]
    assert "is identical to version 1.0.0" in again.stdout and "nothing registered" in again.stdout
    assert len(dataset_tasks(server)) == 2  # the first and the changed file only


def test_a_changed_value_makes_a_new_version_whose_parent_is_the_latest(server, versions):
    (first_id, _), (second_id, changed) = versions["first"], versions["changed"]
    assert second_id != first_id
    task = server.api.task(second_id)
    assert task["status"] == "completed" and task["runtime"]["version"] == "1.0.1"
    assert task["runtime"]["ds_file_count"] == 1  # the parent's copy was replaced, not kept beside it
    assert properties(server, second_id)["sha256"] == sha256(changed) != properties(server, first_id)["sha256"]
    assert parents_of(server, second_id) == [first_id]
    assert f"parent: version 1.0.0 ({first_id})" in versions["results"][2].stdout


def _local(server, checkout, tmp_path_factory, *args):
    out = tmp_path_factory.mktemp("run") / "results"
    result = run_cli(server, checkout, "--mode", "local", "--models", "linear", *args, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    run = run_id(result.stdout)
    assert server.api.task(run)["status"] == "completed"
    return run


@pytest.fixture(scope="module")
def dataset_run(server, checkout, versions, tmp_path_factory):
    return _local(server, checkout, tmp_path_factory, "--dataset-id", versions["first"][0])


@pytest.fixture(scope="module")
def path_run(server, checkout, versions, tmp_path_factory):
    return _local(server, checkout, tmp_path_factory, "--data", str(versions["first"][1]))


def test_a_run_from_a_dataset_id_trains_on_that_version(server, versions, dataset_run, path_run):
    dataset_id, path = versions["first"]
    args = server.api.params(dataset_run)
    assert args["Args/dataset_id"] == dataset_id
    load = server.api.step_tasks(dataset_run)["load"]
    assert server.api.params(load)["kwargs/dataset_id"] == dataset_id
    assert server.api.params(load)["kwargs/data_sha256"] == sha256(path)  # in the load step's cache key
    recorded = properties(server, dataset_run)
    assert recorded["data_sha256"] == sha256(path) and recorded["data_rows"] == "20640"
    assert dataset_id in recorded["data_source"] and "version 1.0.0" in recorded["data_source"]
    assert properties(server, load)["data_sha256"] == sha256(path)
    # the same data by path: the same hash recorded, the same metrics
    assert properties(server, path_run)["data_sha256"] == sha256(path)
    assert properties(server, path_run)["data_rows"] == "20640"
    pd.testing.assert_frame_equal(metrics_of(server, dataset_run), metrics_of(server, path_run))


def test_a_rerun_from_the_ui_with_another_dataset_id_trains_on_that_version(agents, versions, dataset_run,
                                                                           tmp_path):
    second_id, changed = versions["changed"]
    # a new output folder too: the run's own already holds its results (the evaluate step refuses it)
    clone = agents.api.rerun(dataset_run, {"dataset_id": second_id, "output_dir": str(tmp_path / "rerun")})
    task = agents.api.wait(clone, timeout=900)
    assert task["status"] == "completed", (task["status"], task.get("status_reason"))
    old, new = agents.api.step_tasks(dataset_run), agents.api.step_tasks(clone)
    assert new["load"] != old["load"]  # another version: not served from the cache
    assert agents.api.params(new["load"])["kwargs/dataset_id"] == second_id
    recorded = properties(agents, clone)
    assert recorded["data_sha256"] == sha256(changed) and recorded["data_rows"] == "20640"
    assert second_id in recorded["data_source"]
    before, after = metrics_of(agents, dataset_run), metrics_of(agents, clone)
    assert after.loc["linear", "rmse"] != before.loc["linear", "rmse"]
    assert after.loc["linear", "r2"] == pytest.approx(before.loc["linear", "r2"], abs=0.01)  # one value changed


def test_a_run_by_dataset_name_takes_the_latest_version(server, checkout, versions, tmp_path_factory):
    run = _local(server, checkout, tmp_path_factory, "--dataset-name", NAME, "--dataset-project", PROJECT)
    assert server.api.params(run)["Args/dataset_id"] == versions["changed"][0]
    assert properties(server, run)["data_sha256"] == sha256(versions["changed"][1])


# --- the web UI's Datasets page ---------------------------------------------------------------------

_PAGE_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from playwright.sync_api import sync_playwright
from screenshot import CHROMIUM_ARGS, LOCAL, QUIET_UI, login, settle
web, name, out = sys.argv[2].rstrip("/"), sys.argv[3], sys.argv[4]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.route(lambda url: not url.startswith(LOCAL), lambda route: route.abort())
    context.add_init_script(QUIET_UI)
    page = context.new_page()
    login(page, web, "test-user")
    page.goto(f"{web}/datasets", wait_until="networkidle")
    settle(page)
    listing = page.inner_text("body")
    page.screenshot(path=out + "-datasets.png")
    page.get_by_text(name, exact=True).first.click()
    settle(page, 4)
    versions = page.inner_text("body")
    page.screenshot(path=out + "-versions.png")
    print(json.dumps({"listing": listing, "versions": versions}))
"""


def test_the_datasets_page_shows_the_versions(server, versions, tmp_path):
    if not server.web:
        pytest.skip("the harness runs without its web UI here (bin/setup --web: chromium and playwright)")
    script = tmp_path / "datasets_page.py"
    script.write_text(_PAGE_SCRIPT)
    before = len(server.apiserver_5xx())
    result = subprocess.run([str(harness_python()), str(script), str(HARNESS / "harness"), server.env["CLEARML_WEB_HOST"],
                             NAME, str(tmp_path / "page")], capture_output=True, text=True, timeout=180,
                            env={**os.environ, **server.env})
    failed = server.apiserver_5xx()[before:]
    if result.returncode != 0 and failed:
        pytest.skip(f"the stand-in server cannot serve the Datasets page: {failed[0][-200:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    page = json.loads(result.stdout.strip().splitlines()[-1])
    listing = " ".join(page["listing"].split())
    assert NAME in listing and re.search(r"\b2 VERSIONS\b", listing), listing[:2000]
    shown = " ".join(page["versions"].split())
    assert "v 1.0.0" in shown and "v 1.0.1" in shown, shown[:3000]
    assert sha256(versions["changed"][1]) in shown  # the latest version's description, opened by default


# --- bad input: one line each -------------------------------------------------------------------------

def test_an_unknown_dataset_id_is_refused_before_any_step(server, checkout, tmp_path):
    missing = "0123456789abcdef0123456789abcdef"
    result = run_cli(server, checkout, "--mode", "local", "--dataset-id", missing, "--output-dir",
                     str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2
    assert one_error_line(result) == (f"error: dataset {missing} not found on the ClearML server; pass the id "
                                      "printed by register-data (the web UI lists them under Datasets)")
    assert "Launching step" not in result.stdout and "/tasks/" not in result.stdout  # no run was started


def test_a_dataset_without_a_csv_is_refused(server, checkout, tmp_path):
    notes = tmp_path / "files" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("no data here\n")
    code = ("import sys; from clearml import Dataset; "
            "d = Dataset.create(dataset_project='California Housing', dataset_name='notes only'); "
            "d.add_files(sys.argv[1]); d.upload(show_progress=False); d.finalize(); print(d.id)")
    made = subprocess.run([sys.executable, "-c", code, str(notes)], capture_output=True, text=True, timeout=120,
                          env=server.client_env(), cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    dataset_id = made.stdout.split()[-1]
    result = run_cli(server, checkout, "--mode", "local", "--dataset-id", dataset_id, "--output-dir",
                     str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(f"error: dataset {dataset_id} ('notes only' version 1.0.0) holds no CSV file (notes.txt)")
    assert "register-data PATH" in line


def test_an_unreachable_server_is_one_line(server, checkout, data, tmp_path):
    env = server.client_env(CLEARML_API_HOST="http://127.0.0.1:9")
    result = register(server, checkout, data, env=env)
    assert result.returncode == 1
    assert one_error_line(result).startswith("error: the ClearML server http://127.0.0.1:9 cannot be reached")
    run = run_cli(server, checkout, "--mode", "local", "--dataset-id", "0123456789abcdef0123456789abcdef",
                  "--output-dir", str(tmp_path / "out"), env=env, timeout=120)
    assert run.returncode == 1 and "cannot be reached" in one_error_line(run)


def test_dataset_options_refused_without_a_server_or_twice(server, checkout, data, tmp_path):
    cases = {
        ("--dataset-id", "0123456789abcdef0123456789abcdef"): "--mode offline does not use",
        ("--mode", "local", "--dataset-id", "abc"): "dataset_id = 'abc' is out of range",
        ("--mode", "local", "--dataset-id", "0123456789abcdef0123456789abcdef", "--data", str(data)):
            "pass either --data or a ClearML dataset",
        ("--mode", "local", "--dataset-version", "1.0.0"): "--dataset-version needs --dataset-name",
        ("--mode", "local", "--dataset-name", "no-such-dataset"): "no finalized dataset 'no-such-dataset'",
    }
    for args, expected in cases.items():
        result = run_cli(server, checkout, *args, "--output-dir", str(tmp_path / f"out{len(expected)}"), timeout=120)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert expected in one_error_line(result), (args, result.stderr)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = register(server, checkout, bad)
    assert result.returncode == 2 and "error:" in one_error_line(result)
