"""Shared machinery of the benchmark: settings, running one measured child process, the data file.

What it measures, for one fresh subprocess (:func:`run_child`): wall time (``time.perf_counter``),
CPU time and the largest resident set of one process (``os.wait4`` on the child; Linux counts its
reaped descendants too), the peak resident set of the whole process tree (psutil, polled every
0.1 s) and the CPU that *other* processes of the machine used meanwhile ("other load", in cores:
the machine's busy CPU time from ``psutil.cpu_times`` minus the child's and, when given, the
ClearML server's). Before each run it waits for a quiet machine (:func:`wait_for_quiet`). It can
also time the child's own ClearML step subprocesses (:func:`track_steps`).

Importing this module only defines things; it never imports ClearML.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import psutil

if TYPE_CHECKING:
    from bench.server import ClearmlServer

#: The project root (this repository's working tree).
ROOT = Path(__file__).resolve().parent.parent
#: The project's ClearML test server (a test tool): started for the ``--mode local`` runs (--clearml-server).
DEFAULT_HARNESS = ROOT.parent / "shared" / "clearml-server"
SHARED_CSV = ROOT.parent / "shared" / "data" / "cal_housing.csv"
MIB = 2**20

#: ClearML settings of the user that must not reach the benchmarked runs (as in tests/conftest.py).
CLEARML_SERVER_VARS = ("CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_API_ACCESS_KEY",
                       "CLEARML_API_SECRET_KEY", "CLEARML_TASK_ID", "CLEARML_OFFLINE_MODE")

#: "Quiet": other processes use less than this many cores, 3 seconds in a row.
QUIET_CORES = 0.3
#: A run during which other processes used more than this many cores (on average) is "disturbed":
#: it is repeated (--retries) and left out of the medians.
DISTURBED_CORES = 0.3


@dataclass(frozen=True)
class Settings:
    """How the benchmark runs: where the benchmarked code is, and how it copes with a busy machine."""

    #: Where the benchmarked commands run from: this working tree, or a clean clone of ``--code REV``.
    code_root: Path = ROOT
    #: Before each measured run, wait up to this many seconds for the machine to be quiet (--quiet-wait).
    quiet_wait_s: float = 120.0
    #: How many times a disturbed run is repeated (--retries).
    retries: int = 3

    @property
    def pipeline(self) -> Path:
        """The pipeline's command line script of the benchmarked code."""
        return self.code_root / "clearml_pipeline.py"

    @property
    def plain(self) -> Path:
        """The baseline script (the same computation without ClearML) of the benchmarked code."""
        return self.code_root / "bench" / "plain_script.py"


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
        """Exit code 0 and not stopped by the timeout."""
        return self.returncode == 0 and not self.timed_out

    @property
    def disturbed(self) -> bool:
        """Other processes used more than :data:`DISTURBED_CORES` cores during the run."""
        return self.other_cores > DISTURBED_CORES


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _tree_rss(proc: psutil.Process) -> int:
    """Sum of the resident sets of ``proc`` and its descendants, in bytes (0 when it is gone)."""
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


def wait_for_quiet(max_wait_s: float, threshold: float = QUIET_CORES) -> float:
    """Wait until the machine's CPU use (by others: nothing of ours runs now) stays below ``threshold``
    cores for 3 s in a row, or ``max_wait_s`` seconds have passed.

    On a shared machine other jobs (test suites, builds) slow XGBoost's threads down many times;
    this keeps them out of the timings where it can. :returns: the seconds waited.
    """
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


def _running_children(watched: psutil.Process) -> dict[int, psutil.Process]:
    """The direct children of ``watched`` that still run (not zombies), by pid."""
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
    return alive


def track_steps(watched: psutil.Process, steps: dict) -> None:
    """Record the direct children of ``watched`` that run a ClearML task (``CLEARML_TASK_ID`` in their
    environment: the step subprocesses of ``--mode local``): ``steps[pid]`` = start (psutil's create
    time), last seen running and, once exited, end (epoch seconds, half a poll after it was last seen
    running). A child that exited but is not reaped yet (a zombie: the controller reaps it when it
    polls) has ended."""
    now = time.time()
    alive = _running_children(watched)
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


@dataclass
class _Watch:
    """What polling a running child found: peak tree RSS (bytes), timeout, step subprocesses."""

    peak: int = 0
    timed_out: bool = False
    killed_at: Optional[float] = None
    steps: dict = field(default_factory=dict)


def _poll_until_exit(proc: subprocess.Popen, timeout: float, poll_s: float, steps: bool) -> tuple:
    """Poll ``proc`` every ``poll_s`` seconds until it exits; SIGTERM to its group after ``timeout``
    seconds, SIGKILL 15 s later. :returns: ``(status, rusage, _Watch)`` from ``os.wait4``."""
    try:
        watched = psutil.Process(proc.pid)
    except psutil.Error:
        watched = None
    watch, start = _Watch(), time.perf_counter()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, watch
        if watched is not None:
            watch.peak = max(watch.peak, _tree_rss(watched))
            if steps:
                track_steps(watched, watch.steps)
        elapsed = time.perf_counter() - start
        if elapsed > timeout and watch.killed_at is None:
            watch.timed_out, watch.killed_at = True, elapsed
            os.killpg(proc.pid, signal.SIGTERM)
        elif watch.killed_at is not None and elapsed > watch.killed_at + 15:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(poll_s)


def _create_offset(pid: int, popen_epoch: float) -> float:
    """psutil's create times are off by up to 1 s (boot time in whole seconds): calibrated on this child."""
    try:
        return psutil.Process(pid).create_time() - popen_epoch
    except psutil.Error:
        return 0.0


def run_child(name: str, cmd: list[str], env: dict, log: Path, timeout: float, settings: Settings,
              poll_s: float = 0.1, cwd: Optional[Path] = None, server: Optional[ClearmlServer] = None,
              steps: bool = False) -> ChildRun:
    """Run ``cmd`` as a fresh subprocess (own process group) from ``cwd`` (default: the code's root,
    ``settings.code_root``) and measure it (times in seconds, memory in bytes).

    Wall time, CPU time and the max RSS come from ``os.wait4`` on the child (Linux counts its
    reaped descendants too); the peak RSS of the whole process tree from polling it with psutil
    every ``poll_s`` seconds. It starts once the machine is quiet (:func:`wait_for_quiet`, at most
    ``settings.quiet_wait_s``). Output goes to ``log``. After ``timeout`` seconds the group gets
    SIGTERM (the pipeline treats it as Ctrl-C), then SIGKILL 15 s later.

    With ``server`` (a ClearML server this benchmark started, on this machine) the CPU its processes use
    during the run is the run's, not other load: ``extra["server_cpu_s"]``. With ``steps`` the
    child's own subprocesses that run ClearML tasks are timed (``extra["steps"]``, see :func:`track_steps`).
    ``extra["popen_epoch"]`` and ``extra["end_epoch"]`` are the start and end as ``time.time()``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    waited = wait_for_quiet(settings.quiet_wait_s)
    server_procs = server.processes() if server is not None else []
    server0, busy0 = _cpu_s(server_procs), busy_cpu_s()
    start, popen_epoch = time.perf_counter(), time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd or settings.code_root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    create_offset = _create_offset(proc.pid, popen_epoch)
    status, usage, watch = _poll_until_exit(proc, timeout, poll_s, steps)
    wall, end_epoch = time.perf_counter() - start, time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    cpu = usage.ru_utime + usage.ru_stime
    server_cpu = _cpu_s(server_procs) - server0 if server_procs else 0.0
    other = max(0.0, (busy_cpu_s() - busy0 - cpu - server_cpu) / wall) if wall > 0 else 0.0
    for step in watch.steps.values():
        step.setdefault("end", step["last"])
        step["start"] -= create_offset
    extra = {"popen_epoch": popen_epoch, "end_epoch": end_epoch}
    if server_procs:
        extra["server_cpu_s"] = server_cpu
    if steps:
        extra["steps"] = list(watch.steps.values())
    return ChildRun(name, proc.returncode, wall, cpu, usage.ru_maxrss * 1024, max(watch.peak, usage.ru_maxrss * 1024),
                    other, watch.timed_out, log, waited, extra)


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


def use_code(rev: str, tmp: Path) -> Path:
    """Make a clean clone of commit ``rev`` of this repository in ``tmp`` (a git checkout, as a user's;
    its ``origin`` is this repository), to run the benchmarked commands from. :returns: its root."""
    dest = tmp / "code"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                                capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(ROOT), str(dest)], check=True)
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", "--detach", commit], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: --code {rev}: {exc}")
    print(f"benchmarked code: clean clone of {commit[:7]} in {dest}", flush=True)
    return dest


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
