"""Benchmark of the California Housing pipeline: ClearML overhead, scaling and model quality.

Three measurements, in one run, on the real data (see ``bench/README.md``):

1. **overhead**: wall time of ``clearml_pipeline.py`` (ClearML offline mode, the embedded
   default) against ``bench/plain_script.py`` (the same computation without ClearML), each a
   fresh subprocess, interleaved, median of ``--reps``; plus the start-up cost of importing the
   libraries with and without ClearML. Beside them ``--mode local`` (with and without ``--no-cache``)
   against a ClearML server (the environment's, or the test server harness of ``--clearml-server``;
   skipped without one), each run read back from the server as a per-step timeline, and the bare
   start-up of a step subprocess (``import clearml``, ``Task.init``).
2. **scale**: the whole pipeline command line on the data enlarged 1x, 10x, 50x (rows resampled
   with replacement, 1% multiplicative noise on the features): wall time, peak memory, CPU time.
3. **quality**: R^2 / RMSE / MAE of every model for each seed (split and model seed), in this
   process through the ClearML-free ``steps`` functions, and the polynomial R^2 per degree.

Results go to ``bench/results/results.md`` (tables, goals) and ``bench/results/results.csv``
(tidy rows ``section,name,metric,value``); the markdown is printed at the end. This script never
imports ClearML; the pipeline only runs in its subprocesses.

Usage (from the project root): ``python bench/run_bench.py [--reps 3] [--sizes 1,10,50]
[--seeds 0-9] [--data CSV] [--out bench/results] [--clearml-server HARNESS_DIR|none] [--code REV]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
#: Where the benchmarked commands run from: this working tree, or a clean clone of ``--code REV``.
CODE_ROOT = ROOT
PIPELINE = ROOT / "clearml_pipeline.py"
PLAIN = ROOT / "bench" / "plain_script.py"
#: The project's ClearML test server (a test tool): started for the ``--mode local`` runs (--clearml-server).
DEFAULT_HARNESS = ROOT.parent / "shared" / "clearml-server"
SHARED_CSV = ROOT.parent / "shared" / "data" / "cal_housing.csv"
sys.path.insert(0, str(ROOT))
from steps.params import MODEL_KINDS as MODELS  # noqa: E402 (the one list of model names; no ClearML)

METRICS = ("r2", "rmse", "mae")

#: Goals of the issues (9: overhead and quality; 12: neighbour-target features).
GOAL_RATIO = 1.3
GOAL_LOCAL_RATIO = 2.5  # issue 8: --mode local / offline wall time
GOAL_POLY_MIN_DEFAULT = 0.74  # polynomial without neighbour features, every seed
GOAL_POLY_MIN_NEIGHBORS = 0.84  # polynomial (default degree) with neighbour features, every seed
GOAL_POLY_MIN_ANY_DEGREE = 0.70
GOAL_XGB_MEAN_PLAIN = 0.86  # XGBoost without neighbour features
GOAL_XGB_MEAN = 0.875  # XGBoost with neighbour features: mean over the seeds ...
GOAL_XGB_MIN = 0.865  # ... and every seed
GOAL_XGB_FIT_S = 10.0  # XGBoost fit on 2 cores (undisturbed fits)
#: Published test R² on California Housing for this split size, as quoted in issue 12, shown beside ours.
ANCHORS = {"best tuned gradient boosting (CatBoost ensemble)": 0.8605, "best neural (TabR, retrieval-based)": 0.883}
SLOW_SCALE_RUN_S = 6 * 60

#: ClearML settings of the user that must not reach the benchmarked runs (as in tests/conftest.py).
CLEARML_SERVER_VARS = ("CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_API_ACCESS_KEY",
                       "CLEARML_API_SECRET_KEY", "CLEARML_TASK_ID", "CLEARML_OFFLINE_MODE")

STATLIB_COUNTS = ("total_rooms", "total_bedrooms", "population", "households")
STATLIB_NOISY = ("housing_median_age", "total_rooms", "total_bedrooms", "population", "households", "median_income")
SKLEARN_NOISY = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup")
COORDINATES = ("longitude", "latitude", "Longitude", "Latitude")
MIB = 2**20


# --------------------------------------------------------------------------------------------
# Running one child process
# --------------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    """What one subprocess cost. Memory in bytes, times in seconds."""

    name: str
    returncode: int
    wall_s: float
    cpu_s: float  # user + sys of the child and its reaped descendants (wait4)
    max_rss: int  # largest resident set of one process of the tree (wait4 ru_maxrss)
    peak_tree_rss: int  # largest sum of the tree's resident sets seen while polling
    other_cores: float  # CPU used meanwhile by other processes of the machine, in cores (contention)
    timed_out: bool = False
    log: Optional[Path] = None
    waited_s: float = 0.0  # spent waiting for a quiet machine before the start (not in wall_s)
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def disturbed(self) -> bool:
        """Other processes used more than :data:`DISTURBED_CORES` cores during the run."""
        return self.other_cores > DISTURBED_CORES


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


#: Before each measured run, wait up to this many seconds for the machine to be quiet (--quiet-wait).
QUIET_WAIT_S = 120.0
#: "Quiet": other processes use less than this many cores, 3 seconds in a row.
QUIET_CORES = 0.3
#: A run during which other processes used more than this many cores (on average) is "disturbed":
#: it is repeated (--retries) and left out of the medians.
DISTURBED_CORES = 0.3
#: How many times a disturbed run is repeated (--retries).
RETRIES = 3


def wait_for_quiet(max_wait_s: Optional[float] = None, threshold: float = QUIET_CORES) -> float:
    """Wait until the machine's CPU use (by others: nothing of ours runs now) stays below ``threshold``
    cores for 3 s in a row, or ``max_wait_s`` (default :data:`QUIET_WAIT_S`) has passed.

    On a shared machine other jobs (test suites, builds) slow XGBoost's threads down many times;
    this keeps them out of the timings where it can. :returns: the seconds waited.
    """
    max_wait_s = QUIET_WAIT_S if max_wait_s is None else max_wait_s
    start, calm = time.perf_counter(), 0
    psutil.cpu_percent(interval=None)
    while calm < 3 and time.perf_counter() - start < max_wait_s:
        busy = psutil.cpu_percent(interval=1.0) / 100 * psutil.cpu_count()
        calm = calm + 1 if busy < threshold else 0
    return time.perf_counter() - start


def _cpu_s(procs: list[psutil.Process]) -> float:
    """User + sys CPU seconds of ``procs`` and their children (the ClearML server's processes)."""
    total = 0.0
    for proc in procs:
        try:
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _track_steps(watched: psutil.Process, steps: dict) -> None:
    """Record the direct children of ``watched`` that run a ClearML task (``CLEARML_TASK_ID`` in their
    environment: the step subprocesses of ``--mode local``): ``steps[pid]`` = start (psutil's create
    time), last seen running and, once exited, end (epoch, half a poll after it was last seen running).
    A child that exited but is not reaped yet (a zombie: the controller reaps it when it polls) has ended."""
    now = time.time()
    alive = {}
    try:
        for child in watched.children(recursive=False):
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive[child.pid] = child
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    for pid, child in alive.items():
        if pid in steps:
            steps[pid]["last"] = now
            continue
        try:
            task_id = child.environ().get("CLEARML_TASK_ID")
            if task_id:  # not yet there between fork and exec: next poll
                steps[pid] = {"task": task_id, "start": child.create_time(), "last": now}
        except psutil.Error:
            pass
    for pid, step in steps.items():
        if pid not in alive and "end" not in step:
            step["end"] = (step["last"] + now) / 2


def run_child(name: str, cmd: list[str], env: dict, log: Path, timeout: float, poll_s: float = 0.1,
              cwd: Optional[Path] = None, server: Optional[ClearmlServer] = None,
              track_steps: bool = False) -> ChildRun:
    """Run ``cmd`` as a fresh subprocess (own process group) from ``cwd`` (default: the code's root) and measure it.

    Wall time, CPU time and the max RSS come from ``os.wait4`` on the child (Linux counts its
    reaped descendants too); the peak RSS of the whole process tree from polling it with psutil
    every ``poll_s`` seconds. It starts once the machine is quiet (:func:`wait_for_quiet`).
    Output goes to ``log``. After ``timeout`` seconds the group gets SIGTERM (the pipeline
    treats it as Ctrl-C), then SIGKILL 15 s later.

    With ``server`` (a ClearML server this benchmark started, on this machine) the CPU its processes use
    during the run is the run's, not other load: ``extra["server_cpu_s"]``. With ``track_steps`` the
    child's own subprocesses that run ClearML tasks are timed (``extra["steps"]``, see :func:`_track_steps`).
    ``extra["popen_epoch"]`` is the start as ``time.time()``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    waited = wait_for_quiet()
    server_procs = server.processes() if server is not None else []
    server0 = _cpu_s(server_procs)
    busy0 = _busy_cpu_s()
    start, popen_epoch = time.perf_counter(), time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd or CODE_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        watched = psutil.Process(proc.pid)
        # psutil's create times are off by up to 1 s (boot time in whole seconds): calibrated on this child
        create_offset = watched.create_time() - popen_epoch
    except psutil.Error:
        watched, create_offset = None, 0.0
    peak, timed_out, killed_at, steps = 0, False, None, {}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if watched is not None:
            peak = max(peak, _tree_rss(watched))
            if track_steps:
                _track_steps(watched, steps)
        elapsed = time.perf_counter() - start
        if elapsed > timeout and killed_at is None:
            timed_out, killed_at = True, elapsed
            os.killpg(proc.pid, signal.SIGTERM)
        elif killed_at is not None and elapsed > killed_at + 15:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    end_epoch = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    cpu = usage.ru_utime + usage.ru_stime
    server_cpu = _cpu_s(server_procs) - server0 if server_procs else 0.0
    other = max(0.0, (_busy_cpu_s() - busy0 - cpu - server_cpu) / wall) if wall > 0 else 0.0
    for step in steps.values():
        step.setdefault("end", step["last"])
        step["start"] -= create_offset
    extra = {"popen_epoch": popen_epoch, "end_epoch": end_epoch}
    if server_procs:
        extra["server_cpu_s"] = server_cpu
    if track_steps:
        extra["steps"] = list(steps.values())
    return ChildRun(name, proc.returncode, wall, cpu, usage.ru_maxrss * 1024, max(peak, usage.ru_maxrss * 1024),
                    other, timed_out, log, waited, extra)


def child_env(tmp: Path) -> dict:
    """Environment of a benchmarked run: a fresh ClearML cache folder, no server settings, no clearml.conf."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARML_SERVER_VARS}
    cache = Path(tempfile.mkdtemp(prefix="clearml-cache-", dir=tmp))
    env["CLEARML_CACHE_DIR"] = str(cache)
    env["CLEARML_CONFIG_FILE"] = str(cache / "no-clearml.conf")
    return env


def tail(path: Optional[Path], lines: int = 5) -> str:
    """The last ``lines`` lines of a log file, on one line (for a table cell)."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return " / ".join(t.strip() for t in text).replace("|", "\\|")


# --------------------------------------------------------------------------------------------
# The ClearML server of the --mode local runs
# --------------------------------------------------------------------------------------------


class Api:
    """ClearML's REST API (``POST <api>/<service>.<action>`` after ``auth.login``), as tests/server_support.py."""

    def __init__(self, host: str, key: str, secret: str, timeout: float = 10.0):
        import requests

        self.host, self.timeout, self.session = host.rstrip("/"), timeout, requests.Session()
        reply = self.session.post(f"{self.host}/auth.login", auth=(key, secret), timeout=timeout)
        reply.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {reply.json()['data']['token']}"

    def __call__(self, endpoint: str, **payload):
        reply = self.session.post(f"{self.host}/{endpoint}", json=payload, timeout=30)
        body = reply.json()
        if reply.status_code != 200:
            raise RuntimeError(f"{endpoint}: HTTP {reply.status_code}: {body.get('meta', {}).get('result_msg')}")
        return body["data"]


@dataclass
class ClearmlServer:
    """A ClearML server for the ``--mode local`` runs: the client environment, its REST API and, when
    this benchmark started the test harness, its state folder (whose recorded server processes' CPU
    is counted as the run's own, not as other load)."""

    env: dict
    source: str
    api: Api
    harness: Optional[Path] = None
    state: Optional[Path] = None

    def processes(self) -> list[psutil.Process]:
        procs = []
        for pid_file in sorted((self.state / "pids").glob("*.pid")) if self.state else []:
            try:
                procs.append(psutil.Process(int(pid_file.read_text().split()[0])))
            except (ValueError, IndexError, OSError, psutil.Error):
                pass
        return procs

    def stop(self) -> None:
        if self.harness and self.state:
            subprocess.run([str(self.harness / "bin" / "stop"), str(self.state)], capture_output=True, timeout=120)


def _environment_server() -> tuple[Optional[dict], str]:
    """The server the environment configures (CLEARML_API_HOST and keys, or CLEARML_CONFIG_FILE):
    ``(client environment, "")``, or ``(None, why not)``. The configuration file is read by ClearML
    itself, in a subprocess (this script never imports ClearML)."""
    env = {k: os.environ[k] for k in (*CLEARML_SERVER_VARS, "CLEARML_CONFIG_FILE") if os.environ.get(k)}
    env.pop("CLEARML_TASK_ID", None)
    env.pop("CLEARML_OFFLINE_MODE", None)
    code = ("import json, os; from clearml.config import config_obj as c; "
            "print(json.dumps([os.environ.get('CLEARML_API_HOST') or c.get('api.api_server', None), "
            "os.environ.get('CLEARML_API_ACCESS_KEY') or c.get('api.credentials.access_key', None), "
            "os.environ.get('CLEARML_API_SECRET_KEY') or c.get('api.credentials.secret_key', None)]))")
    try:
        found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               env={k: v for k, v in os.environ.items() if k != "CLEARML_TASK_ID"})
        host, key, secret = json.loads(found.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return None, f"could not read the ClearML configuration ({type(exc).__name__})"
    if not (host and key and secret):
        return None, "the environment's ClearML configuration names no server with credentials"
    return {**env, "CLEARML_API_HOST": host, "CLEARML_API_ACCESS_KEY": key, "CLEARML_API_SECRET_KEY": secret}, ""


def start_clearml_server(choice: Optional[str], tmp: Path) -> tuple[Optional[ClearmlServer], str]:
    """The ClearML server of the ``--mode local`` runs: ``(server, "")`` or ``(None, why there is none)``.

    ``choice`` is ``--clearml-server``: a harness folder (``bin/start``, ``bin/stop``, see
    ``../shared/clearml-server/README.md``) to start in a temporary state folder, or ``none``. When it
    is not given: the server the environment configures (``CLEARML_API_HOST`` and keys, or
    ``CLEARML_CONFIG_FILE``), else the default harness if it exists. Never raises.
    """
    if choice is not None and choice.strip().lower() in ("", "none", "no", "off"):
        return None, "--clearml-server none"
    harness = Path(choice).expanduser().absolute() if choice else None
    if harness is None and (os.environ.get("CLEARML_API_HOST") or os.environ.get("CLEARML_CONFIG_FILE")):
        env, why = _environment_server()
        if env is None:
            return None, why
        try:
            api = Api(env["CLEARML_API_HOST"], env["CLEARML_API_ACCESS_KEY"], env["CLEARML_API_SECRET_KEY"])
        except Exception as exc:  # noqa: BLE001 (any failure means: no server)
            return None, f"the environment's ClearML server {env['CLEARML_API_HOST']} did not answer auth.login ({exc})"
        return ClearmlServer(env, f"the environment's server {env['CLEARML_API_HOST']}", api), ""
    harness = harness or (DEFAULT_HARNESS if DEFAULT_HARNESS.is_dir() else None)
    if harness is None:
        return None, (f"no ClearML server: neither CLEARML_API_HOST / CLEARML_CONFIG_FILE nor a test server harness "
                      f"({DEFAULT_HARNESS} is missing; pass --clearml-server HARNESS_DIR)")
    start = harness / "bin" / "start"
    if not start.is_file():
        return None, f"{harness} has no bin/start"
    state = Path(tempfile.mkdtemp(prefix="clearml-server-", dir=tmp))
    try:
        started = subprocess.run([str(start), str(state)], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{start} failed: {exc}"
    if started.returncode != 0:
        lines = (started.stdout + started.stderr).strip().splitlines()[-3:]
        return None, f"the test server did not start: {' / '.join(lines)}".replace("|", "\\|")
    server = None
    try:
        env = {k: str(v) for k, v in json.loads((state / "env.json").read_text()).items()}
        server = ClearmlServer(env, f"test server harness {harness} (`bin/start`, loopback)",
                               Api(env["CLEARML_API_HOST"], env["CLEARML_API_ACCESS_KEY"],
                                   env["CLEARML_API_SECRET_KEY"]), harness, state)
        print(f"  {started.stdout.strip().splitlines()[-1]}", flush=True)
        return server, ""
    except Exception as exc:  # noqa: BLE001
        subprocess.run([str(harness / "bin" / "stop"), str(state)], capture_output=True, timeout=120)
        return None, f"the test server started but is not usable: {type(exc).__name__}: {exc}"


def _epoch(stamp: Optional[str]) -> float:
    """A server timestamp (ISO 8601, UTC) as ``time.time()`` seconds; NaN when missing."""
    if not stamp:
        return float("nan")
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def local_timeline(run: ChildRun, api: Api) -> dict:
    """Read a ``--mode local`` run back from the server: the controller's DAG (configuration object
    ``Pipeline``: node -> parents, ``executed`` task id), created/started/completed of the controller and
    of each step task, the first console line each step reported (ClearML prints its "results page"
    line at the end of ``Task.init``), joined with the step subprocesses seen by :func:`run_child`.

    All times in seconds after the pipeline command was started. :returns: ``{"controller": {...},
    "steps": {name: {...}}}``, or ``{"error": why}``.
    """
    text = run.log.read_text(errors="replace") if run.log and run.log.exists() else ""
    found = re.search(r"created new task id=([0-9a-f]{32})", text)
    if not found:
        return {"error": "no controller task id in the output"}
    controller_id, t0 = found.group(1), run.extra["popen_epoch"]
    try:
        configs = api("tasks.get_configurations", tasks=[controller_id], names=["Pipeline"])["configurations"]
        dag = json.loads(configs[0]["configuration"][0]["value"])
        ids = [controller_id, *(node.get("executed") for node in dag.values() if node.get("executed"))]
        tasks = {t["id"]: t for t in api("tasks.get_all", id=ids,
                                            only_fields=["id", "name", "created", "started", "completed"])["tasks"]}
        first_line = {}
        for tid in ids[1:]:
            events = api("events.get_task_log", task=tid, batch_size=5, navigate_earlier=False).get("events", [])
            first_line[tid] = min((e["timestamp"] / 1000 for e in events), default=float("nan"))
    except Exception as exc:  # noqa: BLE001 (a read-back failure loses the timeline, not the run)
        return {"error": f"{type(exc).__name__}: {exc}"}

    def rel(stamp: Optional[str]) -> float:
        return _epoch(stamp) - t0

    ctrl = tasks.get(controller_id, {})
    controller = {"created": rel(ctrl.get("created")), "started": rel(ctrl.get("started")),
                  "completed": rel(ctrl.get("completed")), "exit": run.wall_s}
    processes = {p["task"]: p for p in run.extra.get("steps", [])}
    steps = {}
    for name, node in dag.items():
        tid = node.get("executed")
        task, proc = tasks.get(tid, {}), processes.get(tid, {})
        steps[name] = {"parents": list(node.get("parents") or []), "created": rel(task.get("created")),
                       "started": rel(task.get("started")), "completed": rel(task.get("completed")),
                       "process_start": proc.get("start", float("nan")) - t0,
                       "first_line": first_line.get(tid, float("nan")) - t0,
                       "process_end": proc.get("end", float("nan")) - t0}
    for step in steps.values():  # a step of an earlier run (ClearML's step cache) was created before this run
        step["cached"] = not step["created"] >= controller["created"]
    for step in steps.values():  # the parent that completed last released the step (else: the controller)
        done = [steps[p]["completed"] for p in step["parents"] if p in steps and not steps[p]["cached"]]
        step["released"] = max(done) if done else controller["started"]
    return {"controller": controller, "steps": steps}


#: The ``--mode local`` runs: as a user re-runs it (``load``/``split`` come from ClearML's step cache
#: after the first run), and with every step run (``--no-cache``, as offline mode does).
LOCAL_KINDS = {"local": "`--mode local`", "local_nocache": "`--mode local --no-cache`"}

#: Phases of a step in the timeline: (key, label, from, to), in seconds (see :func:`local_timeline`).
STEP_PHASES = (
    ("wait", "parent completed -> step created (controller)", "released", "created"),
    ("created_started", "created -> started (controller)", "created", "started"),
    ("spawn", "started -> process start", "started", "process_start"),
    ("init", "process start -> `Task.init` done (python, `import clearml`, `Task.init`)", "process_start", "first_line"),
    ("body", "`Task.init` done -> process exit (inputs, work, artifacts, exit)", "first_line", "process_end"),
    ("poll", "process exit -> completed (controller's polling)", "process_end", "completed"),
    ("started_completed", "started -> completed", "started", "completed"),
)

#: A bare ``Task.init`` against the server, and the same as a step subprocess runs it (``--mode local``).
TASK_INIT_SCRIPT = """import json, time
t0 = time.time()
from clearml import Task
{extra_imports}t1 = time.time()
task = Task.init({init_args})
t2 = time.time()
{close}print("BENCH " + json.dumps({{"script": t0, "imported": t1, "initialized": t2, "closed": time.time()}}), flush=True)
"""
TASK_INIT_SCRIPTS = {
    "task_init": TASK_INIT_SCRIPT.format(
        extra_imports="", init_args="project_name='bench', task_name='bare Task.init', reuse_last_task_id=False",
        close="task.close()\n"),
    "step_init": TASK_INIT_SCRIPT.format(  # the head of ClearML's generated step script, on a created task
        extra_imports="from clearml import TaskTypes\nfrom clearml.automation.controller import PipelineDecorator\n",
        init_args="auto_connect_frameworks=True, auto_connect_arg_parser=True", close=""),
}


def init_phases(run: ChildRun) -> dict:
    """Phases of a :data:`TASK_INIT_SCRIPTS` run, in seconds: interpreter start, imports, ``Task.init``,
    ``close()`` (bare script only) and the exit (ClearML's at-exit flush and status)."""
    text = run.log.read_text(errors="replace") if run.log and run.log.exists() else ""
    found = re.search(r"^BENCH (\{.*\})$", text, re.M)
    if not found:
        return {}
    t = json.loads(found.group(1))
    return {"interpreter": t["script"] - run.extra["popen_epoch"], "import": t["imported"] - t["script"],
            "task_init": t["initialized"] - t["imported"], "close": t["closed"] - t["initialized"],
            "exit": run.wall_s - (t["closed"] - run.extra["popen_epoch"])}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def find_data(explicit: Optional[str], tmp: Path) -> Path:
    """The CSV to use: ``--data``, else ``$CAL_HOUSING_CSV``, else ``../shared/data/cal_housing.csv``,
    else scikit-learn's ``fetch_california_housing`` written to a temporary CSV (scikit-learn's layout)."""
    for candidate in (explicit, os.environ.get("CAL_HOUSING_CSV")):
        if candidate:
            path = Path(candidate).expanduser().absolute()
            if not path.is_file():
                sys.exit(f"error: data file not found: {path}")
            return path
    if SHARED_CSV.is_file():
        return SHARED_CSV
    from sklearn.datasets import fetch_california_housing

    path = tmp / "california_housing.csv"
    fetch_california_housing(as_frame=True).frame.to_csv(path, index=False)
    return path


def make_scaled_csv(source: Path, factor: int, seed: int, out_dir: Path, noise: float = 0.01) -> Path:
    """Write the data enlarged ``factor`` times to ``out_dir``, in the layout of ``source``.

    ``factor * n`` rows drawn with replacement (``numpy.random.default_rng(seed)``), then each
    non-coordinate feature multiplied by ``1 + noise * N(0, 1)`` (clipped to [0.5, 1.5]);
    longitude and latitude get ``noise`` degrees of additive Gaussian noise (about 1 km) instead,
    as 1% of -122 degrees would move a district 100 km. The target is not touched. StatLib counts
    are rounded to whole numbers, non-negative, households at least 1.

    :returns: the path of the new CSV.
    """
    raw = pd.read_csv(source)
    rng = np.random.default_rng(seed)
    data = raw.iloc[rng.integers(0, len(raw), size=len(raw) * factor)].reset_index(drop=True)
    for col in (*STATLIB_NOISY, *SKLEARN_NOISY):
        if col in data.columns:
            data[col] = data[col] * np.clip(1.0 + noise * rng.standard_normal(len(data)), 0.5, 1.5)
    for col in COORDINATES:
        if col in data.columns:
            data[col] = data[col] + noise * rng.standard_normal(len(data))
    for col in STATLIB_COUNTS:
        if col in data.columns:
            data[col] = data[col].round().clip(lower=1.0 if col == "households" else 0.0)
    path = out_dir / f"cal_housing_x{factor}.csv"
    data.to_csv(path, index=False, float_format="%.6f")
    return path


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def measure_overhead(data: Path, reps: int, warmup: int, tmp: Path, logs: Path, timeout: float,
                     server: Optional[ClearmlServer] = None, no_server: str = "") -> dict:
    """Pipeline offline and ``--mode local`` vs plain script, fresh subprocesses, interleaved, ``reps`` times each.

    The order rotates (offline, local, plain; then plain, offline, local; ...) so that a slow phase
    of the machine hits each. ``warmup`` unmeasured runs of each come first (they fill the OS file
    cache, and the server's project). Each run gets a new output folder and a new ClearML cache
    folder. A run disturbed by other processes (:attr:`ChildRun.disturbed`) is repeated up to
    :data:`RETRIES` times; the disturbed runs are kept in the result (and left out of the medians).
    Also times a fresh interpreter importing the steps' libraries, with and without ``clearml``, and
    ``import clearml`` alone.

    ``--mode local`` runs need ``server`` (else ``no_server`` says why they are skipped): their step
    subprocesses are timed and each run is read back from the server (:func:`local_timeline`), and the
    start-up of a step's subprocess is measured bare: ``Task.init`` of a new task, and the head of a
    step script (``Task.init`` on a task the controller created) (:data:`TASK_INIT_SCRIPTS`).

    :returns: ``{kind: [ChildRun]}`` for pipeline, local, plain, import_steps, import_clearml,
        import_clearml_only, task_init, step_init (the server kinds only with a server), and
        ``"local_skipped"``: why there are no local runs ("" when there are).
    """
    libs = "import steps.data, steps.models, steps.evaluation, steps.outputs, steps.plots, xgboost, joblib"
    commands = {
        "pipeline": [sys.executable, str(PIPELINE), "--data", str(data), "--output-dir"],
        "local": [sys.executable, str(PIPELINE), "--data", str(data), "--mode", "local", "--output-dir"],
        "local_nocache": [sys.executable, str(PIPELINE), "--data", str(data), "--mode", "local", "--no-cache",
                          "--output-dir"],
        "plain": [sys.executable, str(PLAIN), "--data", str(data), "--output-dir"],
        "import_steps": [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(CODE_ROOT)!r}); {libs}"],
        "import_clearml": [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(CODE_ROOT)!r}); {libs}, clearml"],
        "import_clearml_only": [sys.executable, "-c", "import clearml"],
    }
    scripts = Path(tempfile.mkdtemp(prefix="task-init-", dir=tmp))  # outside any git checkout
    for kind, code in TASK_INIT_SCRIPTS.items():
        (scripts / f"{kind}.py").write_text(code)
        commands[kind] = [sys.executable, str(scripts / f"{kind}.py")]
    if server is None:
        for kind in (*LOCAL_KINDS, *TASK_INIT_SCRIPTS):
            del commands[kind]

    def once(kind: str, tag: str) -> list[ChildRun]:
        runs: list[ChildRun] = []
        while not runs or (runs[-1].disturbed and len(runs) <= RETRIES):
            out = Path(tempfile.mkdtemp(prefix=f"out-{kind}-", dir=tmp)) / "out"
            cmd = commands[kind] + ([str(out)] if commands[kind][-1] == "--output-dir" else [])
            attempt = f"{tag}-try{len(runs)}" if runs else tag
            env = child_env(tmp)
            on_server = kind in (*LOCAL_KINDS, *TASK_INIT_SCRIPTS)
            if on_server:
                env.update(server.env)
            if kind == "step_init":  # as the controller of --mode local prepares a step's subprocess
                task_id = server.api("tasks.create", name="bench step init", type="data_processing",
                                     script={"entry_point": "step_init.py", "working_dir": "."})["id"]
                server.api("tasks.started", task=task_id, force=True)
                env.update(CLEARML_TASK_ID=task_id, CLEARML_LOG_TASK_TO_BACKEND="1", CLEARML_SIMULATE_REMOTE_TASK="1")
            run = run_child(kind, cmd, env, logs / f"overhead-{kind}-{attempt}.log", timeout,
                            cwd=scripts if kind in TASK_INIT_SCRIPTS else None,
                            server=server if on_server else None, track_steps=kind in LOCAL_KINDS)
            if kind in LOCAL_KINDS and run.ok:
                run.extra["timeline"] = local_timeline(run, server.api)
            elif kind in TASK_INIT_SCRIPTS:
                run.extra["phases"] = init_phases(run)
            server_cpu = f", server CPU {run.extra['server_cpu_s']:.1f} s" if "server_cpu_s" in run.extra else ""
            print(f"  overhead {kind:19s} {attempt}: {run.wall_s:6.1f} s, exit {run.returncode}, other load "
                  f"{run.other_cores:.2f} cores{' (disturbed)' if run.disturbed else ''}{server_cpu}, waited "
                  f"{run.waited_s:.0f} s for quiet", flush=True)
            shutil.rmtree(out.parent, ignore_errors=True)
            runs.append(run)
        return runs

    pipelines = [kind for kind in ("pipeline", "local_nocache", "local", "plain") if kind in commands]
    for w in range(warmup):
        for kind in pipelines:
            once(kind, f"warmup{w}")
    result: dict = {kind: [] for kind in commands}
    for rep in range(reps):
        for kind in pipelines[rep % len(pipelines):] + pipelines[:rep % len(pipelines)]:
            result[kind] += once(kind, f"rep{rep}")
    for rep in range(reps):
        for kind in ("import_steps", "import_clearml", "import_clearml_only", *TASK_INIT_SCRIPTS):
            if kind in commands:
                result[kind] += once(kind, f"rep{rep}")
    result["local_skipped"] = "" if server is not None else (no_server or "no ClearML server")
    return result


def measure_scale(data: Path, sizes: list[int], seed: int, tmp: Path, logs: Path, timeout: float) -> list[ChildRun]:
    """The whole pipeline command line on the data enlarged by each factor of ``sizes``.

    One fresh subprocess per size (default parameters, ClearML offline). Besides the costs of
    :func:`run_child`, records the rows and size of the CSV, the size of the offline session and
    the test-set R^2 of each model read from ``metrics.csv`` (the resampled rows repeat across
    train and test, so these R^2 are optimistic: they only show that the run worked). A run
    disturbed by other processes is repeated once (if :data:`RETRIES` > 0); the disturbed
    attempt's wall time and other load are kept in ``extra["disturbed"]``.
    """
    runs = []
    for factor in sizes:
        t0 = time.perf_counter()
        csv_path = make_scaled_csv(data, factor, seed, tmp)
        made_s = time.perf_counter() - t0
        with open(csv_path, "rb") as fh:
            rows = sum(1 for _ in fh) - 1
        disturbed: list[tuple[float, float]] = []
        for attempt in range(1 + min(1, RETRIES)):
            out = Path(tempfile.mkdtemp(prefix=f"out-x{factor}-", dir=tmp)) / "out"
            env = child_env(tmp)
            cmd = [sys.executable, str(PIPELINE), "--data", str(csv_path), "--output-dir", str(out)]
            print(f"  scale x{factor}: {rows:,} rows, {csv_path.stat().st_size / MIB:,.1f} MiB, running ...", flush=True)
            name = f"scale-x{factor}" + (f"-try{attempt}" if attempt else "")
            run = run_child(f"x{factor}", cmd, env, logs / f"{name}.log", timeout)
            sessions = list(Path(env["CLEARML_CACHE_DIR"]).glob("offline/*.zip"))
            run.extra = {"factor": factor, "rows": rows, "csv_bytes": csv_path.stat().st_size, "csv_make_s": made_s,
                         "session_bytes": sum(p.stat().st_size for p in sessions), "disturbed": disturbed}
            if (out / "metrics.csv").exists():
                for row in pd.read_csv(out / "metrics.csv").itertuples():
                    run.extra[f"r2_{row.model}"] = float(row.r2)
            print(f"  scale x{factor}: {run.wall_s:6.1f} s, max RSS {run.max_rss / MIB:,.0f} MiB, exit {run.returncode}, "
                  f"other load {run.other_cores:.2f} cores{' (disturbed)' if run.disturbed else ''}", flush=True)
            shutil.rmtree(out.parent, ignore_errors=True)
            shutil.rmtree(env["CLEARML_CACHE_DIR"], ignore_errors=True)
            if not run.disturbed or not run.ok:
                break
            disturbed.append((run.wall_s, run.other_cores))
        runs.append(run)
        csv_path.unlink()
    return runs


def measure_quality(data: Path, seeds: list[int], degrees: list[int], neighbors: Optional[int] = None) -> pd.DataFrame:
    """Test-set R^2 / RMSE / MAE of every model for each seed, with the pipeline's default parameters.

    In this process, through the ClearML-free ``steps`` functions (:func:`steps.models.train_model`
    with :func:`steps.models.model_arguments`, as ``bench/plain_script.py`` does): the seed is the
    ``random_state`` of the split and of every model. ``neighbors`` (default: the parameter
    ``spatial_neighbors``) is k of the neighbour-target features; when it is > 0 the polynomial and
    XGBoost are also fitted without them (``neighbors`` 0, model names ``polynomial_k0`` and
    ``xgboost_k0``), the classic-vs-boosting comparison. The polynomial regression is also fitted
    with each degree of ``degrees`` (model name ``polynomial_deg<d>``); the default degree is the
    row ``polynomial``. Every row carries its fit time, the CPU other processes used meanwhile
    (``other_cores``) and the size of the fitted estimator saved with :func:`joblib.dump`
    (``joblib_bytes``); XGBoost rows also the number of boosting rounds kept by early stopping.

    :returns: one row per (seed, model): seed, model, r2, rmse, mae, fit_s, other_cores, rounds, joblib_bytes.
    """
    import dataclasses
    import io

    import joblib

    sys.path.insert(0, str(ROOT))
    from steps.data import load_dataset, split_dataset
    from steps.evaluation import regression_metrics
    from steps.models import model_arguments, train_model
    from steps.params import DEFAULTS

    dataset = load_dataset(str(data))
    rows = []
    for seed in seeds:
        wait_for_quiet()
        X_train, X_test, y_train, y_test = split_dataset(dataset, DEFAULTS.test_size, seed)
        params = dataclasses.replace(DEFAULTS, random_state=seed)
        if neighbors is not None:
            params = dataclasses.replace(params, spatial_neighbors=neighbors)
        fits = {kind: (kind, model_arguments(kind, params)) for kind in MODELS}
        if params.spatial_neighbors:
            for kind in ("polynomial", "xgboost"):
                fits[f"{kind}_k0"] = (kind, {**model_arguments(kind, params), "neighbors": 0})
        for degree in degrees:
            if degree != params.poly_degree:
                fits[f"polynomial_deg{degree}"] = ("polynomial", {**model_arguments("polynomial", params), "degree": degree})
        for name, (kind, kwargs) in fits.items():
            me = psutil.Process()
            busy0, own0, t0 = _busy_cpu_s(), sum(me.cpu_times()[:2]), time.perf_counter()
            model = train_model(kind, X_train, y_train, **kwargs)
            fit_s = time.perf_counter() - t0
            other = max(0.0, (_busy_cpu_s() - busy0 - (sum(me.cpu_times()[:2]) - own0)) / fit_s)
            rounds = model[-1].best_iteration + 1 if kind == "xgboost" and params.xgb_early_stopping_rounds else np.nan
            buffer = io.BytesIO()
            joblib.dump(model, buffer)
            rows.append({"seed": seed, "model": name, **regression_metrics(y_test, model.predict(X_test)),
                         "fit_s": fit_s, "other_cores": other, "rounds": rounds, "joblib_bytes": buffer.tell()})
        summary = ", ".join(f"{r['model']} {r['r2']:.4f}" for r in rows[-len(fits):])
        print(f"  quality seed {seed}: R2 {summary}", flush=True)
    table = pd.DataFrame(rows)
    for degree in degrees:  # the default degree under its own name too, for the per-degree table
        if degree == DEFAULTS.poly_degree:
            table = pd.concat([table, table[table.model == "polynomial"].assign(model=f"polynomial_deg{degree}")])
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _used(runs: list[ChildRun]) -> list[ChildRun]:
    """The successful undisturbed runs, or every successful run if all were disturbed."""
    ok = [r for r in runs if r.ok]
    return [r for r in ok if not r.disturbed] or ok


def _median(runs: list[ChildRun], attr: str) -> float:
    values = [getattr(r, attr) for r in _used(runs)]
    return statistics.median(values) if values else float("nan")


def _yes(ok: Optional[bool]) -> str:
    return "skipped" if ok is None else "**yes**" if ok else "**NO**"


def _nanmedian(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _critical_path(steps: dict) -> list[str]:
    """The steps that held the run up, first to last: from the step that completed last, back through
    the parent that completed last."""
    if not steps:
        return []
    steps = {name: step for name, step in steps.items() if not step["cached"]}
    if not steps:
        return []
    name, path = max(steps, key=lambda n: steps[n]["completed"]), []
    while name is not None:
        path.append(name)
        parents = [p for p in steps[name]["parents"] if p in steps]
        name = max(parents, key=lambda n: steps[n]["completed"]) if parents else None
    return path[::-1]


def local_rows(res: dict, kind: str, title: str) -> tuple[list[tuple], list[str]]:
    """Tidy rows and markdown of the timelines of the ``kind`` runs (``--mode local``), per step and
    along the critical path."""
    rows, md = [], []
    timelines = [r.extra["timeline"] for r in _used(res.get(kind, [])) if "steps" in r.extra.get("timeline", {})]
    errors = [r.extra["timeline"]["error"] for r in res.get(kind, []) if "error" in r.extra.get("timeline", {})]
    if errors:
        md += [f"{title}: the timeline read-back failed for {len(errors)} run(s): {errors[0]}", ""]
    if not timelines:
        return rows, md
    names = list(timelines[0]["steps"])
    md += [f"**Per step, {title}** (seconds, median over {len(timelines)} run(s); _at_: after the command "
           "started):", "",
           "| step | created at | " + " | ".join(label for _, label, _, _ in STEP_PHASES) + " | completed at |",
           "|---|---|" + "---|" * len(STEP_PHASES) + "---|"]
    for name in names:
        per_run = [t["steps"][name] for t in timelines if name in t["steps"] and not t["steps"][name]["cached"]]
        if not per_run:
            md.append(f"| {name} | cached: the step task of an earlier run is reused |" + " |" * (len(STEP_PHASES) + 1))
            rows.append((f"{kind}_steps", name, "cached_runs", len(timelines)))
            continue
        phases = {key: _nanmedian([s[b] - s[a] for s in per_run]) for key, _, a, b in STEP_PHASES}
        created, completed = _nanmedian([s["created"] for s in per_run]), _nanmedian([s["completed"] for s in per_run])
        cached = len(timelines) - len(per_run)
        md.append(f"| {name}{f' ({cached} run(s) cached)' if cached else ''} | {created:.1f} | "
                  + " | ".join(f"{phases[k]:.2f}" for k, _, _, _ in STEP_PHASES) + f" | {completed:.1f} |")
        rows += [(f"{kind}_steps", name, f"{k}_s", v) for k, v in phases.items()]
        rows += [(f"{kind}_steps", name, "created_at_s", created), (f"{kind}_steps", name, "completed_at_s", completed)]
    ctrl = {k: _nanmedian([t["controller"][k] for t in timelines]) for k in ("created", "started", "completed", "exit")}
    rows += [(f"{kind}_controller", "controller", f"{k}_at_s", v) for k, v in ctrl.items()]
    shares = []  # where the time goes along the critical path, per run (the parts add up to its wall time)
    for t in timelines:
        steps, c = t["steps"], t["controller"]
        path = _critical_path(steps)
        if not path:
            continue
        share = {"controller start-up (python, imports, server check, `Task.init` creates the controller task)":
                 c["created"], "controller: its task created -> first step created (on the path)":
                 steps[path[0]]["created"] - c["created"]}
        for _, label, a, b in STEP_PHASES[1:6]:
            share[label] = sum(steps[n][b] - steps[n][a] for n in path)
        share[STEP_PHASES[0][1]] = sum(steps[n]["created"] - steps[n]["released"] for n in path[1:])
        share["last step completed -> command exit (controller's end, exit)"] = c["exit"] - steps[path[-1]]["completed"]
        shares.append((share, " -> ".join(path)))
    md += ["", f"Controller (median): its task created {ctrl['created']:.1f} s after the command started, completed "
           f"at {ctrl['completed']:.1f} s; command exit at {ctrl['exit']:.1f} s."]
    if shares:
        paths = sorted({path for _, path in shares})
        md += ["", f"**Where the wall time goes, {title}**, along the critical path ({'; '.join(paths)}), "
               "median seconds (per run the parts add up to its wall time):", "", "| part | s | share |", "|---|---|---|"]
        wall = _nanmedian([t["controller"]["exit"] for t in timelines])
        for label in shares[0][0]:
            value = _nanmedian([sh[label] for sh, _ in shares])
            md.append(f"| {label} | {value:.2f} | {value / wall:.0%} |")
            rows.append((f"{kind}_critical_path", re.sub(r"[`|]", "", label), "s", value))
        md.append(f"| wall (median) | {wall:.2f} | |")
    return rows, md


def bare_rows(res: dict) -> tuple[list[tuple], list[str]]:
    """Tidy rows and markdown of the bare start-up costs of a step subprocess."""
    rows, md = [], []
    bare = {k: res.get(k, []) for k in ("import_clearml_only", *TASK_INIT_SCRIPTS)}
    if any(bare.values()):
        md += ["", "**A step's bare start-up** (fresh subprocess against the same server, median seconds; "
               "_step script head_: ClearML's generated step script up to its `Task.init`, on a task created "
               "and started as the controller does, with `CLEARML_TASK_ID` and `CLEARML_SIMULATE_REMOTE_TASK`):", "",
               "| run | wall | interpreter start | imports | `Task.init` | `close()` | exit (at-exit flush) | other load |",
               "|---|---|---|---|---|---|---|---|"]
        labels = {"import_clearml_only": "`python -c \"import clearml\"`",
                  "task_init": "bare `Task.init` + `close()` (new task)", "step_init": "step script head (`Task.init`)"}
        for kind, runs in bare.items():
            if not runs:
                continue
            used = _used(runs)
            phases = {k: _nanmedian([r.extra.get("phases", {}).get(k, float("nan")) for r in used])
                      for k in ("interpreter", "import", "task_init", "close", "exit")}
            md.append(f"| {labels[kind]} | {_median(runs, 'wall_s'):.2f} | "
                      + " | ".join("" if v != v else f"{v:.2f}" for v in phases.values())
                      + f" | {_median(runs, 'other_cores'):.2f} |")
            rows += [("overhead_bare", kind, f"{k}_s", v) for k, v in phases.items() if v == v]
    return rows, md


def overhead_rows(res: dict) -> tuple[list[tuple], list[str], list[dict]]:
    """Tidy rows, markdown lines and goal entries of :func:`measure_overhead`'s result."""
    rows, md = [], []
    skipped = res.get("local_skipped", "")
    md += ["| run | median wall (s) | runs used (s) | disturbed runs, left out (s @ other load) | median CPU user+sys (s) "
           "| median max RSS (MiB) | median other load (cores) | failed |", "|---|---|---|---|---|---|---|---|"]
    labels = {"pipeline": "`clearml_pipeline.py` (offline)", "local": "`clearml_pipeline.py --mode local`",
              "local_nocache": "`clearml_pipeline.py --mode local --no-cache`",
              "plain": "`bench/plain_script.py`",
              "import_steps": "start-up: `import steps, xgboost, joblib`",
              "import_clearml": "start-up: same + `import clearml`",
              "import_clearml_only": "start-up: `import clearml` alone",
              "task_init": "start-up: bare `Task.init` + `close()` on the server",
              "step_init": "start-up: a step script's `Task.init` (as `--mode local` runs it)"}
    for kind, runs in res.items():
        if kind not in labels:
            continue
        wall, cpu, rss = _median(runs, "wall_s"), _median(runs, "cpu_s"), _median(runs, "max_rss") / MIB
        used = _used(runs)
        other = _median(runs, "other_cores")
        failed = sum(not r.ok for r in runs)
        for i, r in enumerate(runs):
            rows += [("overhead", kind, f"wall_s_run{i}", r.wall_s), ("overhead", kind, f"cpu_s_run{i}", r.cpu_s),
                     ("overhead", kind, f"max_rss_mib_run{i}", r.max_rss / MIB),
                     ("overhead", kind, f"other_cores_run{i}", r.other_cores),
                     ("overhead", kind, f"exit_code_run{i}", r.returncode),
                     ("overhead", kind, f"used_run{i}", int(r in used))]
            if "server_cpu_s" in r.extra:
                rows.append(("overhead", kind, f"server_cpu_s_run{i}", r.extra["server_cpu_s"]))
        rows += [("overhead", kind, "wall_s_median", wall), ("overhead", kind, "cpu_s_median", cpu),
                 ("overhead", kind, "max_rss_mib_median", rss), ("overhead", kind, "runs_used", len(used)),
                 ("overhead", kind, "failed_runs", failed)]
        left_out = ", ".join(f"{r.wall_s:.1f} @ {r.other_cores:.2f}" for r in runs if r not in used) or "-"
        md.append(f"| {labels[kind]} | {wall:.2f} | {', '.join(f'{r.wall_s:.2f}' for r in used)} | {left_out} "
                  f"| {cpu:.2f} | {rss:.0f} | {other:.2f} | {failed} |")
        if kind == "pipeline" and skipped:
            md += [f"| {labels[k]} | skipped: {skipped} | | | | | | |" for k in LOCAL_KINDS]
    ratio = _median(res["pipeline"], "wall_s") / _median(res["plain"], "wall_s")
    cpu_ratio = _median(res["pipeline"], "cpu_s") / _median(res["plain"], "cpu_s")
    extra = _median(res["pipeline"], "wall_s") - _median(res["plain"], "wall_s")
    clearml_import = _median(res["import_clearml"], "wall_s") - _median(res["import_steps"], "wall_s")
    rows += [("overhead", "pipeline/plain", "wall_ratio", ratio), ("overhead", "pipeline/plain", "cpu_ratio", cpu_ratio),
             ("overhead", "pipeline-plain", "extra_wall_s", extra),
             ("overhead", "import clearml", "extra_wall_s", clearml_import)]
    md += ["", f"**Ratio pipeline / plain (median wall): {ratio:.2f}** (goal <= {GOAL_RATIO}: {_yes(ratio <= GOAL_RATIO)}); "
           f"the pipeline takes {extra:+.2f} s more, of which about {clearml_import:.2f} s is importing `clearml` "
           f"in a fresh interpreter. CPU time ratio: {cpu_ratio:.2f}."]
    goals = [{"goal": f"overhead: pipeline / plain wall time <= {GOAL_RATIO}", "value": f"{ratio:.2f}",
              "met": ratio <= GOAL_RATIO}]
    local_goal = f"overhead: `--mode local` / offline wall time <= {GOAL_LOCAL_RATIO}"
    if skipped:
        md += ["", f"`--mode local`: skipped: {skipped}."]
        goals.append({"goal": local_goal, "value": f"skipped: {skipped}", "met": None})
    else:
        offline = _median(res["pipeline"], "wall_s")
        md.append("")
        for kind, title in LOCAL_KINDS.items():
            local = _median(res[kind], "wall_s")
            local_ratio = local / offline
            server_cpu = _nanmedian([r.extra.get("server_cpu_s", float("nan")) for r in _used(res[kind])])
            rows += [("overhead", f"{kind}/offline", "wall_ratio", local_ratio),
                     ("overhead", f"{kind}/offline", "cpu_ratio",
                      _median(res[kind], "cpu_s") / _median(res["pipeline"], "cpu_s")),
                     ("overhead", f"{kind}-offline", "extra_wall_s", local - offline),
                     ("overhead", kind, "server_cpu_s_median", server_cpu)]
            md += [f"**Ratio {title} / offline (median wall): {local_ratio:.2f}** (goal <= {GOAL_LOCAL_RATIO}: "
                   f"{_yes(local_ratio <= GOAL_LOCAL_RATIO)}); {local - offline:+.2f} s; / plain "
                   f"{local / _median(res['plain'], 'wall_s'):.2f}"
                   + (f"; the server's processes used {server_cpu:.1f} s CPU per run (median; counted as the run's, "
                      "not as other load)." if server_cpu == server_cpu else "."), ""]
            goals.append({"goal": local_goal.replace("`--mode local`", title), "value": f"{local_ratio:.2f}",
                          "met": local_ratio <= GOAL_LOCAL_RATIO})
        md += [f"Server: {res.get('local_server', '?')}. Timelines: created/started/completed of each step task "
               "from the server (`tasks.get_all`; the steps from the controller's configuration object `Pipeline`); "
               "the step subprocesses from psutil every 0.1 s (exit: when it stops running; the controller reaps it "
               "at its next poll); `Task.init` done: the step's first console line (ClearML prints its results-page "
               "line at the end of `Task.init`)."]
        for kind, title in LOCAL_KINDS.items():
            r, m = local_rows(res, kind, title)
            rows += r
            md += [""] + m
        r, m = bare_rows(res)
        rows += r
        md += m
    md += ["", "_other load_: CPU used by other processes of the machine during the run, in cores "
           f"(this machine has {psutil.cpu_count()}). A run with more than {DISTURBED_CORES} is _disturbed_: it is "
           f"repeated (up to {RETRIES} times) and left out of the medians, unless every run was disturbed."]
    return rows, md, goals


def scale_rows(runs: list[ChildRun]) -> tuple[list[tuple], list[str], dict]:
    """Tidy rows, markdown lines and goal entry of :func:`measure_scale`'s result."""
    rows, md = [], []
    md += ["| size | rows | CSV (MiB) | wall (s) | CPU user+sys (s) | max RSS (MiB) | peak tree RSS (MiB) "
           "| offline session (MiB) | other load (cores) | R² polynomial / xgboost | status |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        e = r.extra
        status = "ok" if r.ok else ("timed out" if r.timed_out else f"exit {r.returncode}: {tail(r.log, 3)}")
        if r.ok and r.wall_s > SLOW_SCALE_RUN_S:
            status = f"ok, slower than {SLOW_SCALE_RUN_S // 60} min"
        if r.disturbed:
            status += " (disturbed by other processes)"
        if e["disturbed"]:
            status += "; repeated after a disturbed run of " + ", ".join(f"{w:.0f} s @ {o:.2f} cores"
                                                                       for w, o in e["disturbed"])
        r2 = " / ".join(f"{e[k]:.4f}" if k in e else "-" for k in ("r2_polynomial", "r2_xgboost"))
        md.append(f"| {e['factor']}x | {e['rows']:,} | {e['csv_bytes'] / MIB:,.1f} | {r.wall_s:.1f} | {r.cpu_s:.1f} "
                  f"| {r.max_rss / MIB:,.0f} | {r.peak_tree_rss / MIB:,.0f} | {e['session_bytes'] / MIB:,.1f} "
                  f"| {r.other_cores:.2f} | {r2} | {status} |")
        name = f"{e['factor']}x"
        rows += [("scale", name, "rows", e["rows"]), ("scale", name, "csv_mib", e["csv_bytes"] / MIB),
                 ("scale", name, "wall_s", r.wall_s), ("scale", name, "cpu_s", r.cpu_s),
                 ("scale", name, "max_rss_mib", r.max_rss / MIB),
                 ("scale", name, "peak_tree_rss_mib", r.peak_tree_rss / MIB),
                 ("scale", name, "offline_session_mib", e["session_bytes"] / MIB),
                 ("scale", name, "other_cores", r.other_cores), ("scale", name, "exit_code", r.returncode),
                 ("scale", name, "disturbed_attempts", len(e["disturbed"])),
                 ("scale", name, "timed_out", int(r.timed_out))]
        rows += [("scale", name, k, v) for k, v in e.items() if k.startswith("r2_")]
    md += ["", "Rows are resampled with replacement, so near-duplicates sit on both sides of the split: "
           "the R² at 10x and 50x is optimistic and only shows that the run worked.",
           "_max RSS_: largest resident set of one process (`wait4`); _peak tree RSS_: largest sum over the "
           "process tree seen by polling every 0.1 s."]
    biggest = max(runs, key=lambda r: r.extra["factor"]) if runs else None
    goal = None
    if biggest is not None:
        goal = {"goal": f"scale: {biggest.extra['factor']}x run finishes (ideally within {SLOW_SCALE_RUN_S // 60} min)",
                "value": f"{biggest.wall_s:.0f} s, {biggest.max_rss / MIB:,.0f} MiB, exit {biggest.returncode}",
                "met": biggest.ok and biggest.wall_s <= SLOW_SCALE_RUN_S}
    return rows, md, goal


def quality_rows(table: pd.DataFrame, degrees: list[int], default_degree: int) -> tuple[list[tuple], list[str], list[dict]]:
    """Tidy rows, markdown lines and goal entries of :func:`measure_quality`'s result."""
    rows, md, goals = [], [], []
    for r in table.itertuples():
        if not r.model.startswith("polynomial_deg"):
            rows += [("quality_runs", f"{r.model} seed {r.seed}", m, getattr(r, m))
                     for m in (*METRICS, "fit_s", "other_cores", "joblib_bytes")]
        elif int(r.model.removeprefix("polynomial_deg")) != default_degree:
            rows.append(("quality_runs", f"{r.model} seed {r.seed}", "r2", r.r2))
    seeds = sorted(table.seed.unique())
    with_k0 = (table.model == "xgboost_k0").any() or (table.model == "polynomial_k0").any()
    order = [m for kind in MODELS for m in (kind, f"{kind}_k0") if (table.model == m).any()]
    md += [f"Test set (20% of the rows), seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} seeds; the seed drives the split and "
           "the model), default parameters" + (" (`<model>_k0`: the same with `spatial_neighbors` 0, no neighbour "
                                               "features)" if with_k0 else "") + ".", "",
           "| model | R² mean | R² std | R² min | R² max | RMSE mean | MAE mean | fit s (mean) | joblib MB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for model in order:
        sub = table[table.model == model]
        for metric in METRICS:
            s = sub[metric]
            stats = {"mean": s.mean(), "std": s.std(ddof=1) if len(s) > 1 else 0.0, "min": s.min(), "max": s.max()}
            rows += [("quality", model, f"{metric}_{k}", v) for k, v in stats.items()]
        rows += [("quality", model, "fit_s_mean", sub.fit_s.mean()),
                 ("quality", model, "joblib_mb_mean", sub.joblib_bytes.mean() / 1e6)]
        r2 = sub.r2
        md.append(f"| {model} | {r2.mean():.4f} | {r2.std(ddof=1) if len(r2) > 1 else 0.0:.4f} | {r2.min():.4f} | "
                  f"{r2.max():.4f} | {sub.rmse.mean():.4f} | {sub.mae.mean():.4f} | {sub.fit_s.mean():.2f} | "
                  f"{sub.joblib_bytes.mean() / 1e6:.2f} |")
    for name, value in ANCHORS.items():
        md.append(f"| *published: {name}* | {value} | | | | | | | |")
    md += ["", "RMSE and MAE in $100k; joblib MB: size of `joblib.dump` of the fitted estimator (what a run saves as "
           "`models/<model>.joblib`). Published figures as quoted in issue 12 (same 20% test size, other splits)."]
    xgb = table[table.model == "xgboost"]
    calm = xgb[xgb.other_cores <= DISTURBED_CORES]
    calm_text = (f"mean {calm.fit_s.mean():.2f} s (min {calm.fit_s.min():.2f}, max {calm.fit_s.max():.2f}) over the "
                 f"{len(calm)} undisturbed fits" if len(calm) else "no fit was undisturbed")
    md += ["", f"XGBoost fit time: {calm_text}; mean {xgb.fit_s.mean():.2f} s (max {xgb.fit_s.max():.2f}) over all "
           f"{len(xgb)} fits, other load during them {xgb.other_cores.min():.2f}..{xgb.other_cores.max():.2f} cores "
           f"(a fit is disturbed above {DISTURBED_CORES}). Mean boosting rounds kept: {xgb.rounds.mean():.0f}"
           + (f" ({table[table.model == 'xgboost_k0'].rounds.mean():.0f} without neighbour features)" if with_k0 else "")
           + ".", "", "Mean fit time per model (all fits): " + ", ".join(
               f"{m} {table[table.model == m].fit_s.mean():.2f} s" for m in order)
           + f"; other load during the fits: at most {table.other_cores.max():.2f} cores."]
    rows += [("quality", "xgboost", "rounds_mean", xgb.rounds.mean()),
             ("quality", "xgboost", "fit_s_mean_undisturbed", calm.fit_s.mean() if len(calm) else float("nan")),
             ("quality", "xgboost", "undisturbed_fits", len(calm))]
    poly_floor = GOAL_POLY_MIN_NEIGHBORS if with_k0 else GOAL_POLY_MIN_DEFAULT
    md += ["", "Polynomial regression by degree (R² over the seeds" + (", with neighbour features" if with_k0 else "")
           + "):", "", "| degree | R² min | R² mean | R² max | goal | met |", "|---|---|---|---|---|---|"]
    for degree in degrees:
        s = table[table.model == f"polynomial_deg{degree}"].r2
        floor = poly_floor if degree == default_degree else GOAL_POLY_MIN_ANY_DEGREE
        label = f"{degree} (default)" if degree == default_degree else str(degree)
        md.append(f"| {label} | {s.min():.4f} | {s.mean():.4f} | {s.max():.4f} | min >= {floor} "
                  f"| {_yes(s.min() >= floor)} |")
        rows += [("quality", f"polynomial degree {degree}", "r2_min", s.min()),
                 ("quality", f"polynomial degree {degree}", "r2_mean", s.mean())]
        goals.append({"goal": f"quality: polynomial degree {degree} R² >= {floor} on every seed",
                      "value": f"min {s.min():.4f}", "met": s.min() >= floor})
    if with_k0:
        plain = table[table.model == "polynomial_k0"].r2
        goals.append({"goal": f"quality: polynomial without neighbour features R² >= {GOAL_POLY_MIN_DEFAULT} on every seed",
                      "value": f"min {plain.min():.4f}", "met": plain.min() >= GOAL_POLY_MIN_DEFAULT})
        moonshot = ANCHORS['best neural (TabR, retrieval-based)']
        goals += [{"goal": f"quality: XGBoost mean R² >= {GOAL_XGB_MEAN} (moonshot {moonshot})",
                   "value": f"{xgb.r2.mean():.4f}", "met": xgb.r2.mean() >= GOAL_XGB_MEAN},
                  {"goal": f"quality: XGBoost R² >= {GOAL_XGB_MIN} on every seed", "value": f"min {xgb.r2.min():.4f}",
                   "met": xgb.r2.min() >= GOAL_XGB_MIN}]
        xgb = table[table.model == "xgboost_k0"]
    plain_name = "XGBoost without neighbour features" if with_k0 else "XGBoost"
    goals.append({"goal": f"quality: {plain_name} mean R² >= {GOAL_XGB_MEAN_PLAIN}",
                  "value": f"{xgb.r2.mean():.4f}", "met": xgb.r2.mean() >= GOAL_XGB_MEAN_PLAIN})
    fit_s = calm.fit_s.max() if len(calm) else table[table.model == "xgboost"].fit_s.mean()
    goals.append({"goal": f"quality: XGBoost fit <= {GOAL_XGB_FIT_S:.0f} s", "value": (
        f"max {fit_s:.2f} s (undisturbed fits)" if len(calm) else f"mean {fit_s:.2f} s (all fits disturbed)"),
        "met": fit_s <= GOAL_XGB_FIT_S})
    return rows, md, goals


def environment_lines(args, data: Path, n_rows: int) -> list[str]:
    """Where and on what the benchmark ran (a few markdown lines)."""
    try:
        commit = subprocess.run(["git", "-C", str(CODE_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(CODE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
        commit += " (clean clone, `--code`)" if CODE_ROOT != ROOT else ""
    except OSError:
        commit = "?"
    versions = []
    for pkg in ("clearml", "xgboost", "scikit-learn", "pandas", "numpy"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return [f"- date (UTC): {datetime.now(timezone.utc):%Y-%m-%d %H:%M}; commit {commit}",
            f"- machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}; {', '.join(versions)}",
            f"- data: `{data}` ({n_rows:,} rows)",
            f"- settings: sections {args.sections}; reps {args.reps} (+{args.warmup} warm-up), sizes {args.sizes}, "
            f"seeds {args.seeds}, polynomial degrees {args.degrees}, spatial_neighbors "
            f"{args.spatial_neighbors if args.spatial_neighbors is not None else 'default'}; "
            f"each measured run waits up to {args.quiet_wait:.0f} s for other "
            f"processes to use < {QUIET_CORES} cores; disturbed runs repeated up to {args.retries} times"]


def use_code(rev: str, tmp: Path) -> None:
    """Run the benchmarked commands from a clean clone of commit ``rev`` of this repository, in ``tmp``
    (a git checkout, as a user's; its ``origin`` is this repository)."""
    global CODE_ROOT, PIPELINE, PLAIN  # noqa: PLW0603 (read by run_child and the measurements)
    dest = tmp / "code"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                                capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(ROOT), str(dest)], check=True)
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", "--detach", commit], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: --code {rev}: {exc}")
    CODE_ROOT, PIPELINE, PLAIN = dest, dest / "clearml_pipeline.py", dest / "bench" / "plain_script.py"
    print(f"benchmarked code: clean clone of {commit[:7]} in {dest}", flush=True)


def write_results(out: Path, rows: list[tuple], markdown: str) -> None:
    """Write ``results.csv`` (section,name,metric,value) and ``results.md`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["section", "name", "metric", "value"])
        for section, name, metric, value in rows:
            writer.writerow([section, name, metric, f"{value:.6g}" if isinstance(value, float) else value])
    (out / "results.md").write_text(markdown)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """``"1,10,50"`` -> [1, 10, 50]; ``"0-9"`` or ``"0..9"`` -> [0, ..., 9] (non-negative integers)."""
    values: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-|\.\.)(\d+)|(\d+)", part)
        if not match:
            raise argparse.ArgumentTypeError(f"not a number or range: {part!r} (e.g. 1,10,50 or 0-9)")
        lo, hi, single = match.groups()
        values += [int(single)] if single else list(range(int(lo), int(hi) + 1))
    if not values:
        raise argparse.ArgumentTypeError(f"no numbers in {text!r}")
    return values


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each overhead run (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each before the overhead runs")
    parser.add_argument("--sizes", type=int_list, default="1,10,50", help="data enlargement factors of the scale runs")
    parser.add_argument("--scale-seed", type=int, default=0, help="seed of the row resampling and noise")
    parser.add_argument("--seeds", type=int_list, default="0-9", help="random_state values of the quality runs")
    parser.add_argument("--degrees", type=int_list, default="2,3,4", help="polynomial degrees of the quality runs")
    parser.add_argument("--spatial-neighbors", type=int, default=None,
                        help="k of the neighbour-target features in the quality runs (default: the pipeline's "
                             "default); when > 0 the polynomial and XGBoost also run without them (k 0)")
    parser.add_argument("--data", default=None,
                        help="CSV (StatLib or scikit-learn layout); default $CAL_HOUSING_CSV, else "
                             "../shared/data/cal_housing.csv, else scikit-learn's download")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of results.md / results.csv")
    parser.add_argument("--sections", default="overhead,scale,quality", help="which measurements to run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a benchmarked run is stopped")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help=f"before each measured run, wait up to this many seconds until other processes use "
                             f"< {QUIET_CORES} cores (0: never wait)")
    parser.add_argument("--retries", type=int, default=3,
                        help=f"repeat an overhead run disturbed by other processes (> {DISTURBED_CORES} cores) up to "
                             "this many times; a disturbed scale run is repeated once (0: never)")
    parser.add_argument("--clearml-server", default=None, metavar="HARNESS_DIR",
                        help="ClearML test server harness (bin/start, bin/stop) started for the overhead section's "
                             "`--mode local` runs; 'none': no local runs. Default: the server the environment "
                             "configures (CLEARML_API_HOST and keys, or CLEARML_CONFIG_FILE), else "
                             f"{DEFAULT_HARNESS} if it exists; without a server the local runs are skipped")
    parser.add_argument("--code", default=None, metavar="REV",
                        help="run the benchmarked commands from a clean clone of this commit (e.g. HEAD) instead "
                             "of the working tree (which others may be editing)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (CSVs, outputs, caches)")
    args = parser.parse_args(argv)
    global QUIET_WAIT_S, RETRIES  # noqa: PLW0603 (read by wait_for_quiet, measure_overhead, measure_scale)
    QUIET_WAIT_S, RETRIES = args.quiet_wait, args.retries
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"overhead", "scale", "quality"}
    if unknown or args.reps < 1:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}" if unknown else "--reps must be >= 1")

    started = time.perf_counter()
    out = Path(args.out).absolute()
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="cal-housing-bench-"))
    try:
        if args.code:
            use_code(args.code, tmp)
        data = find_data(args.data, tmp)
        n_rows = len(pd.read_csv(data, usecols=[0]))
        print(f"benchmark: data {data} ({n_rows:,} rows), temporary files in {tmp}", flush=True)
        rows: list[tuple] = [("meta", "data", "rows", n_rows)]
        body: list[str] = []
        goals: list[dict] = []
        if "overhead" in sections:
            print("overhead ...", flush=True)
            t0 = time.perf_counter()
            server, no_server = start_clearml_server(args.clearml_server, tmp)
            if server is None:
                print(f"  --mode local: skipped: {no_server}", flush=True)
            try:
                res = measure_overhead(data, args.reps, args.warmup, tmp, logs, args.timeout, server, no_server)
                res["local_server"] = server.source if server else ""
            finally:
                if server is not None:
                    server.stop()
            r, md, goal = overhead_rows(res)
            rows += r + [("meta", "overhead", "section_s", time.perf_counter() - t0)]
            body += ["## Overhead: ClearML pipeline (offline, `--mode local`) vs plain script", "", *md, ""]
            goals += goal
        if "scale" in sections:
            print("scale ...", flush=True)
            t0 = time.perf_counter()
            r, md, goal = scale_rows(measure_scale(data, args.sizes, args.scale_seed, tmp, logs, args.timeout))
            rows += r + [("meta", "scale", "section_s", time.perf_counter() - t0)]
            body += ["## Scale: whole pipeline run on enlarged data", "", *md, ""]
            goals += [goal] if goal else []
        if "quality" in sections:
            print("quality ...", flush=True)
            t0 = time.perf_counter()
            sys.path.insert(0, str(ROOT))
            from steps.params import DEFAULTS

            table = measure_quality(data, args.seeds, args.degrees, args.spatial_neighbors)
            r, md, g = quality_rows(table, args.degrees, DEFAULTS.poly_degree)
            rows += r + [("meta", "quality", "section_s", time.perf_counter() - t0)]
            body += ["## Quality: test-set metrics over seeds", "", *md, ""]
            goals += g
        total = time.perf_counter() - started
        rows.append(("meta", "benchmark", "total_s", total))
        command = " ".join(["python", "bench/run_bench.py", *(argv if argv is not None else sys.argv[1:])])
        head = ["# Benchmark results", "", *environment_lines(args, data, n_rows),
                f"- benchmark run time: {total / 60:.1f} min (`{command}`)",
                "", "## Goals", "", "| goal | value | met |", "|---|---|---|",
                *(f"| {g['goal']} | {g['value']} | {_yes(g['met'])} |" for g in goals), ""]
        rows += [("goals", g["goal"], "met", "" if g["met"] is None else int(g["met"])) for g in goals]
        markdown = "\n".join(head + body)
        write_results(out, rows, markdown)
        print("\n" + markdown)
        print(f"\nwritten: {out / 'results.md'}, {out / 'results.csv'} (logs in {logs})")
        return 0
    finally:
        if args.keep_tmp:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
