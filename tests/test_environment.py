"""What the shell around a run can get wrong (issue 10): left-over ClearML variables, typos in flags,
a GPU that is not there, relative paths. Each is answered in one line, within seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_TASK")}
    return subprocess.run([sys.executable, str(ROOT / "clearml_pipeline.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})})


@pytest.mark.parametrize("args", [(), ("--models", "linear")], ids=["no arguments", "with arguments"])
def test_left_over_clearml_task_id_is_named_in_one_line(tmp_path, args):
    """After debugging an agent task, CLEARML_TASK_ID stays in the shell: the run says so at once."""
    started = time.monotonic()
    result = run_cli(*args, "--output-dir", str(tmp_path / "out"), cwd=tmp_path,
                     env={"CLEARML_TASK_ID": "0123456789abcdef0123456789abcdef",
                          "CLEARML_API_HOST": "http://127.0.0.1:9"})  # a dead server must not cause a wait
    assert time.monotonic() - started < 20
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: CLEARML_TASK_ID=0123456789abcdef")
    assert "unset CLEARML_TASK_ID" in result.stderr
    assert not (tmp_path / "out").exists()


def test_abbreviated_flags_are_refused(tmp_path):
    result = run_cli("--poly-degre", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: unrecognized arguments: --poly-degre 2; see --help\n"


def test_cuda_without_gpu_is_one_warning_and_relative_cache_dir_is_printed_absolute(tmp_path):
    """No GPU here: XGBoost falls back to the CPU, said in one line; Args keeps what was asked."""
    result = run_cli("--models", "xgboost", "--xgb-device", "cuda", "--xgb-n-estimators", "200",
                     "--output-dir", str(tmp_path / "out"), cwd=tmp_path, env={"CLEARML_CACHE_DIR": "cache"})
    assert result.returncode == 0, result.stderr[-2000:]
    import xgboost

    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    if xgboost.build_info().get("USE_CUDA"):  # the full xgboost wheel, on a machine with no GPU
        expected = "warning: xgb_device 'cuda': no CUDA GPU is visible on this machine, so XGBoost trained on the CPU"
    else:  # xgboost-cpu, as requirements.txt installs: the line says how to get GPU support
        expected = ("warning: xgb_device 'cuda': this XGBoost has no CUDA support (xgboost-cpu), so it trained on the "
                    "CPU; for GPUs: pip uninstall -y xgboost-cpu && pip install 'xgboost>=2.1,<4'")
    assert warnings == [expected], result.stderr
    assert "/__w/" not in result.stderr and ".cc:" not in result.stderr  # no C++ source paths
    line = next(line for line in result.stdout.splitlines() if line.startswith("ClearML offline session: "))
    session = Path(line.split(": ", 1)[1].split(" ")[0])
    assert session.is_absolute() and session == (tmp_path / "cache").resolve() / "offline" / session.name
    with zipfile.ZipFile(session) as archive:
        task = json.loads(archive.read("task.json"))
    assert task["hyperparams"]["Args"]["xgb_device"]["value"] == "cuda"


def test_the_command_line_module_never_imports_clearml():
    """The command line is parsed and checked before ClearML is imported (ClearML patches argparse), and
    importing the pipeline module imports no ClearML either."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import clearml_pipeline, cli.startup; "
            "cli.startup.parse_startup(['--models', 'linear', '--output-dir', sys.argv[2]], environ={}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'clearml'))")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT), "/nonexistent-parent/out-x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
