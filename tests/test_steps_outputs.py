"""steps.outputs: a claim left by a killed run is recognised as stale; a full disk is one line, nothing half-written."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from steps import outputs
from steps.errors import OutputError
from steps.outputs import CLAIM_FILE, STAGE_PREFIX, check_output_dir, claim_output_dir, release_output_dir

ROOT = Path(__file__).resolve().parent.parent

#: Claims the folder argv[1], then forks a child that outlives it (holding the claim's locked file,
#: as ClearML's forked helper processes do), prints both pids, and waits to be killed.
_CLAIMER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[2])
    from steps.outputs import claim_output_dir
    claim_output_dir(sys.argv[1])
    os.makedirs(os.path.join(sys.argv[1], ".partial-deadbeef"))
    child = os.fork() if sys.argv[3] == "fork" else 0
    if sys.argv[3] == "fork" and child == 0:
        time.sleep(60)
        os._exit(0)
    print(os.getpid(), child, flush=True)
    time.sleep(60)
""")


def _claim_in_a_process_then_kill_it(folder: Path, fork: bool) -> int:
    """Start a process that claims ``folder``, SIGKILL it once it holds the claim; returns its orphan's pid (or 0)."""
    proc = subprocess.Popen([sys.executable, "-c", _CLAIMER, str(folder), str(ROOT), "fork" if fork else "no"],
                            stdout=subprocess.PIPE, text=True)
    pid, child = (int(x) for x in proc.stdout.readline().split())
    assert pid == proc.pid and (folder / CLAIM_FILE).exists()
    with pytest.raises(OutputError, match=f"in use by another run \\(process {pid} on "):
        check_output_dir(folder)  # alive: refused, naming the process
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    return child


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("fork", [False, True], ids=["alone", "with_a_forked_child_holding_the_lock"])
def test_a_claim_left_by_a_run_killed_with_sigkill_is_stale(tmp_path, fork):
    folder = tmp_path / "run"
    orphan = _claim_in_a_process_then_kill_it(folder, fork)
    try:
        assert (folder / CLAIM_FILE).exists()  # the killed run left its marker (and a staging folder)
        assert check_output_dir(folder) == folder
        assert claim_output_dir(folder) == folder  # the next run into that folder is allowed
        assert [p.name for p in folder.iterdir()] == [CLAIM_FILE]  # the dead run's staging folder is gone
        assert f'"pid": {os.getpid()}' in (folder / CLAIM_FILE).read_text()
        release_output_dir(folder)
        assert list(folder.iterdir()) == []  # the marker goes with the claim (the folder was the dead run's)
    finally:
        if orphan:
            os.kill(orphan, signal.SIGKILL)


def _metrics() -> pd.DataFrame:
    return pd.DataFrame([{"model": "linear", "r2": 0.5, "rmse": 0.7, "mae": 0.5, "n_test": 10}])


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EDQUOT, "disk quota exceeded")])
@pytest.mark.parametrize("existing", [False, True], ids=["new_folder", "empty_folder"])
def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, code, words, existing):
    folder = tmp_path / "run"
    if existing:
        folder.mkdir()

    class Figure:  # the second file written fills the disk
        def savefig(self, path, **kwargs):
            Path(path).write_bytes(b"half a png")
            raise OSError(code, os.strerror(code))

    with pytest.raises(OutputError) as error:
        outputs.write_run_outputs(folder, _metrics(), {"prediction_plot": Figure()}, {})
    assert str(error.value) == (f"{words} while writing {folder}: free space there or pass --output-dir on "
                                "another disk")
    assert error.value.__cause__ is None and error.value.__suppress_context__
    if existing:
        assert list(folder.iterdir()) == []  # no staging folder, no marker, no file
    else:
        assert not folder.exists()  # the folder this run created goes too


def test_a_full_disk_during_the_final_moves_leaves_no_part_of_the_results(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "metrics.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OutputError, match="^no space left on device while writing "), \
            outputs.staged_output(folder) as stage:
        (stage / "a.png").write_bytes(b"png")
        (stage / "models").mkdir()
        (stage / "models" / "m.joblib").write_bytes(b"model")
        (stage / "metrics.csv").write_text("model\n")
    assert list(folder.iterdir()) == []


def test_other_os_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(PermissionError), outputs.staged_output(tmp_path / "run"):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert not (tmp_path / "run").exists()


def test_the_marker_records_what_tells_a_later_process_under_the_same_pid(tmp_path):
    import json

    folder = claim_output_dir(tmp_path / "run")
    try:
        info = json.loads((folder / CLAIM_FILE).read_text())
        assert info["pid"] == os.getpid() and not outputs._claim_is_dead(info)
        if Path("/proc/self/stat").exists():
            assert info["start"] and info["boot"]
            assert outputs._claim_is_dead({**info, "start": str(int(info["start"]) + 1)})  # pid reused
            assert outputs._claim_is_dead({**info, "boot": "another-boot"})
        assert not outputs._claim_is_dead({**info, "host": "another-host"})  # cannot tell: the lock decides
        assert not outputs._claim_is_dead({})
    finally:
        release_output_dir(folder)
    assert not any(p.name.startswith(STAGE_PREFIX) for p in tmp_path.iterdir())


def test_withdraw_results_removes_what_the_run_wrote_into_its_claimed_folder_only(tmp_path):
    claimed, other = tmp_path / "claimed", tmp_path / "other"
    claim_output_dir(claimed)
    other.mkdir()
    try:
        for folder in (claimed, other):
            (folder / "metrics.csv").write_text("model,r2\n")
            (folder / "models").mkdir()
            (folder / "models" / "xgboost.joblib").write_bytes(b"x")
        assert outputs.withdraw_results(claimed) == ["metrics.csv", "models"]
        assert [p.name for p in claimed.iterdir()] == [CLAIM_FILE]
        assert outputs.withdraw_results(other) == []
        assert sorted(p.name for p in other.iterdir()) == ["metrics.csv", "models"]
    finally:
        release_output_dir(claimed)
    assert not claimed.exists()  # created by the claim, empty again: gone with it
