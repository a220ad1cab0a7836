"""Faults with no server involved: a full disk under the ClearML cache, a damaged session zip, an
offline run killed (power loss), and the text a run writes and ``import-offline`` reads back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

import runtime.outcome as outcome

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, cache: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLEARML_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "clearml_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, **popen)


@pytest.fixture
def small_disk(tmp_path):
    """A 80 MB file system of its own (tmpfs), for the ClearML cache: root only."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode(errors='replace').strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture(scope="module")
def small_csv(housing_csv, tmp_path_factory) -> Path:
    """The first 600 districts of the real data (a run of a few seconds)."""
    path = tmp_path_factory.mktemp("small") / "small.csv"
    path.write_text("".join(housing_csv.read_text().splitlines(keepends=True)[:601]))
    return path


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_cache_disk_without_room_is_refused_before_the_run(small_disk, small_csv, tmp_path):
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 10 * 2**20))  # 10 MB left
    result = _run("--data", str(small_csv), "--output-dir", str(tmp_path / "out"), cache=small_disk)
    assert result.returncode == 1
    assert _errors(result.stderr) == [result.stderr.strip()], result.stderr[-2000:]
    assert f"the ClearML cache folder {small_disk} is full" in result.stderr and "CLEARML_CACHE_DIR" in result.stderr
    assert not (tmp_path / "out" / "metrics.csv").exists() and not (small_disk / "offline").exists()


def test_a_cache_disk_that_fills_during_the_run_fails_it_and_leaves_no_broken_zip(small_disk, housing_csv, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "CLEARML_CACHE_DIR": str(small_disk)}
    proc = subprocess.Popen([sys.executable, "clearml_pipeline.py", "--data", str(housing_csv), "--output-dir", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(small_disk.glob("offline/offline-*/task.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)  # the disk fills while the steps run
    try:
        for size in (2**20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-2000:]
    errors = _errors(stderr)
    assert len(errors) == 1 and f"the ClearML cache folder {small_disk} is full" in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())  # no results
    for zip_path in small_disk.glob("offline/*.zip"):
        assert zipfile.is_zipfile(zip_path), "a broken session zip was left"


def test_a_damaged_session_zip_is_one_line(small_csv, tmp_path):
    done = _run("--data", str(small_csv), "--output-dir", str(tmp_path / "out"), "--models", "linear",
                cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-2000:]
    zip_path = next((tmp_path / "cache" / "offline").glob("*.zip"))
    data = bytearray(zip_path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # damaged in the middle: still looks like a zip
    zip_path.write_bytes(bytes(data))
    result = _run("import-offline", str(zip_path), cache=tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(f"error: {zip_path} cannot be read as an offline session")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("status, reason", [("completed", ""), ("failed", "step 'load' failed: bad data"),
                                            ("aborted", "interrupted")])
def test_outcome_written_by_a_run_is_read_back_by_import(tmp_path, status, reason):
    """The round trip of runtime.outcome: the tag and console line a run writes, read from a session zip."""
    session = tmp_path / f"offline-{uuid.uuid4().hex}"
    session.mkdir()
    written = outcome.Outcome(status, reason)
    (session / "task.json").write_text(f'{{"tags": ["{outcome.TAGS[status]}"]}}')
    line = outcome.reason_line(written) if status != "completed" else "all fine"
    (session / "log.jsonl").write_text(f'[{{"msg": "some output\\n{line}\\ntraceback"}}]\n')
    shutil.make_archive(str(session), "zip", session)
    for path in (session, Path(f"{session}.zip")):
        assert outcome.read_session_outcome(path) == written


class _Logger:
    """Records what :func:`runtime.guard.report_outcome` reports (ClearML's ``Logger`` calls it makes)."""

    def __init__(self):
        self.tables, self.text = {}, ""

    def report_table(self, title, series, iteration=None, table_plot=None):
        self.tables[title] = table_plot.iloc[:, 0].to_dict()

    def report_text(self, msg, print_console=True):
        self.text += msg


def _raised_in_load(exc: BaseException) -> BaseException:
    def load():
        raise exc
    try:
        load()
    except BaseException as raised:  # noqa: BLE001 - any exception, with its traceback
        return raised


@pytest.mark.parametrize("exc, reason, traceback_kept", [
    (ValueError("x"), "step 'load' failed: ValueError: x", True),  # a bug in a step run here: its traceback helps
    (ValueError("x"), "the pipeline failed: ValueError: x", True),
    (KeyboardInterrupt(), "step 'train_xgboost' was aborted", False),  # the step watch woke the main thread
    (KeyboardInterrupt(), "interrupted", False),
])
def test_a_failed_run_reports_its_outcome_and_a_traceback_only_for_an_unexpected_error(exc, reason, traceback_kept):
    from runtime import guard

    context = guard.RunContext(step_names=("load",))
    logger = _Logger()
    raised = _raised_in_load(exc)
    guard.report_outcome(logger, outcome.Outcome("failed", reason),
                         raised if guard._worth_a_traceback(raised, reason, context) else None)
    step = reason.split("'")[1] if reason.startswith("step '") else "none (no step ended the run)"
    assert logger.tables == {"run outcome": {"status": "failed", "reason": reason, "step": step}}
    assert logger.text.endswith(outcome.reason_line(outcome.Outcome("failed", reason)))  # the console's last line
    assert ("Traceback" in logger.text) is traceback_kept


def test_a_step_that_failed_in_its_own_process_leaves_its_traceback_to_its_console():
    from runtime import guard

    raised = _raised_in_load(RuntimeError("Pipeline step failed"))  # ClearML's, raised in the controller
    assert not guard._worth_a_traceback(raised, "step 'evaluate' failed: ...", guard.RunContext(("evaluate",)))


def test_a_session_that_recorded_no_outcome_reads_as_aborted(tmp_path):
    (tmp_path / "task.json").write_text('{"tags": []}')
    assert outcome.read_session_outcome(tmp_path) == outcome.Outcome("aborted", outcome.NO_OUTCOME)


def test_an_offline_run_records_its_outcome(small_csv, tmp_path):
    done = _run("--data", str(small_csv), "--output-dir", str(tmp_path / "out"), "--models", "linear",
                cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-2000:]
    zip_path = next((tmp_path / "cache" / "offline").glob("*.zip"))
    assert outcome.read_session_outcome(zip_path) == outcome.Outcome("completed")


def test_a_killed_offline_run_leaves_a_session_without_outcome_and_a_usable_folder(housing_csv, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "CLEARML_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "clearml_pipeline.py", "--data", str(housing_csv), "--output-dir", str(out),
                             "--xgb-n-estimators", "20000", "--xgb-early-stopping-rounds", "0"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not list(cache.glob("offline/offline-*/task.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(6)
    proc.kill()
    proc.wait(timeout=30)
    session = next(p for p in cache.glob("offline/offline-*") if p.is_dir())
    assert outcome.read_session_outcome(session).status == "aborted"
    again = _run("--data", str(housing_csv), "--output-dir", str(out), "--models", "linear", cache=cache)
    assert again.returncode == 0, again.stderr[-2000:]



@pytest.mark.parametrize("last_error, reason, bad_input", [
    ("steps.errors.DataError: x.csv: column a is empty; fix it", "x.csv: column a is empty; fix it", True),
    ("runtime.data_versions.DatasetError: dataset d holds no CSV", "dataset d holds no CSV", True),
    ("ValueError: could not convert", "ValueError: could not convert", False),  # a bug: its type stays
])
def test_a_step_that_failed_in_its_own_process_on_bad_input_is_read_as_bad_input(last_error, reason, bad_input):
    """The last error line of a step's console (runtime.step_watch): the project's bad input makes the run exit 2."""
    from runtime.step_watch import BadInputReason, _error_line

    read = _error_line(["Traceback (most recent call last):", '  File "load.py", line 3', last_error])
    assert read == reason and isinstance(read, BadInputReason) is bad_input
