"""Overhead section: what ClearML costs in wall time over the same computation without it.

What it measures: wall time, CPU time and max RSS of ``clearml_pipeline.py`` (ClearML offline mode,
the default) against ``bench/plain_script.py`` (the same computation, no ClearML), and with a
ClearML server of ``--mode local`` with and without ``--no-cache``; also the start-up of a fresh
interpreter importing the steps' libraries with and without ``clearml``, ``import clearml`` alone,
and (with a server) a bare ``Task.init`` and a step script's ``Task.init``.

How: each run a fresh subprocess (:func:`bench.common.run_child`) with a new output folder and a
new ClearML cache folder, interleaved in a rotating order, ``--reps`` times after ``--warmup``
unmeasured runs; a run disturbed by other processes is repeated (``--retries``). The ``--mode
local`` runs are read back from the server as per-step timelines (:mod:`bench.server`).
The tables are made by :func:`bench.report.overhead_rows`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.common import ChildRun, Settings, child_env, run_child
from bench.server import LOCAL_KINDS, TASK_INIT_SCRIPTS, ClearmlServer, init_phases, local_timeline

#: Goal of issues 9 and 20: offline pipeline / plain script wall time.
GOAL_RATIO = 1.15
#: Goal of issue 8: ``--mode local`` / offline wall time.
GOAL_LOCAL_RATIO = 2.5
#: The runs that need the server.
SERVER_KINDS = (*LOCAL_KINDS, *TASK_INIT_SCRIPTS)
#: The start-up runs, after the pipeline runs.
STARTUP_KINDS = ("import_steps", "import_clearml", "import_clearml_only", *TASK_INIT_SCRIPTS)


def overhead_commands(data: Path, settings: Settings, scripts: Path, with_server: bool) -> dict[str, list[str]]:
    """The command line of each kind of run (a trailing ``--output-dir`` gets a new folder per run).
    Writes the :data:`TASK_INIT_SCRIPTS` to ``scripts``; without a server, no server kinds."""
    libs = "import steps.data, steps.models, steps.evaluation, steps.outputs, steps.plots, xgboost, joblib"
    pipeline, code_root = str(settings.pipeline), str(settings.code_root)
    commands = {
        "pipeline": [sys.executable, pipeline, "--data", str(data), "--output-dir"],
        "local": [sys.executable, pipeline, "--data", str(data), "--mode", "local", "--output-dir"],
        "local_nocache": [sys.executable, pipeline, "--data", str(data), "--mode", "local", "--no-cache",
                          "--output-dir"],
        "plain": [sys.executable, str(settings.plain), "--data", str(data), "--output-dir"],
        "import_steps": [sys.executable, "-c", f"import sys; sys.path.insert(0, {code_root!r}); {libs}"],
        "import_clearml": [sys.executable, "-c", f"import sys; sys.path.insert(0, {code_root!r}); {libs}, clearml"],
        "import_clearml_only": [sys.executable, "-c", "import clearml"],
    }
    for kind, code in TASK_INIT_SCRIPTS.items():
        (scripts / f"{kind}.py").write_text(code)
        commands[kind] = [sys.executable, str(scripts / f"{kind}.py")]
    if not with_server:
        for kind in SERVER_KINDS:
            del commands[kind]
    return commands


@dataclass
class _Runner:
    """What every overhead run shares: commands, settings, folders, timeout (s), the server."""

    commands: dict[str, list[str]]
    settings: Settings
    tmp: Path
    logs: Path
    timeout: float
    scripts: Path
    server: Optional[ClearmlServer]

    def once(self, kind: str, tag: str) -> list[ChildRun]:
        """One run of ``kind``, repeated while disturbed (up to ``settings.retries`` times): every attempt."""
        runs: list[ChildRun] = []
        while not runs or (runs[-1].disturbed and len(runs) <= self.settings.retries):
            runs.append(self._attempt(kind, f"{tag}-try{len(runs)}" if runs else tag))
        return runs

    def _env(self, kind: str) -> dict:
        env = child_env(self.tmp)
        if kind in SERVER_KINDS:
            env.update(self.server.env)
        if kind == "step_init":  # as the controller of --mode local prepares a step's subprocess
            env.update(self.server.step_task_env())
        return env

    def _attempt(self, kind: str, attempt: str) -> ChildRun:
        out = Path(tempfile.mkdtemp(prefix=f"out-{kind}-", dir=self.tmp)) / "out"
        cmd = self.commands[kind] + ([str(out)] if self.commands[kind][-1] == "--output-dir" else [])
        on_server = kind in SERVER_KINDS
        run = run_child(kind, cmd, self._env(kind), self.logs / f"overhead-{kind}-{attempt}.log", self.timeout,
                        self.settings, cwd=self.scripts if kind in TASK_INIT_SCRIPTS else None,
                        server=self.server if on_server else None, steps=kind in LOCAL_KINDS)
        if kind in LOCAL_KINDS and run.ok:
            run.extra["timeline"] = local_timeline(run, self.server.api)
        elif kind in TASK_INIT_SCRIPTS:
            run.extra["phases"] = init_phases(run)
        server_cpu = f", server CPU {run.extra['server_cpu_s']:.1f} s" if "server_cpu_s" in run.extra else ""
        print(f"  overhead {kind:19s} {attempt}: {run.wall_s:6.1f} s, exit {run.returncode}, other load "
              f"{run.other_cores:.2f} cores{' (disturbed)' if run.disturbed else ''}{server_cpu}, waited "
              f"{run.waited_s:.0f} s for quiet", flush=True)
        shutil.rmtree(out.parent, ignore_errors=True)
        return run


def measure_overhead(data: Path, reps: int, warmup: int, tmp: Path, logs: Path, timeout: float, settings: Settings,
                     server: Optional[ClearmlServer] = None, no_server: str = "") -> dict:
    """Pipeline offline and ``--mode local`` vs plain script, fresh subprocesses, interleaved, ``reps`` times each.

    The order rotates (offline, local, plain; then plain, offline, local; ...) so that a slow phase
    of the machine hits each. ``warmup`` unmeasured runs of each come first (they fill the OS file
    cache, and the server's project). Each run gets a new output folder and a new ClearML cache
    folder. A run disturbed by other processes (:attr:`ChildRun.disturbed`) is repeated up to
    ``settings.retries`` times; the disturbed runs are kept in the result (and left out of the medians).
    Also times a fresh interpreter importing the steps' libraries, with and without ``clearml``, and
    ``import clearml`` alone. ``timeout``: seconds before a run is stopped.

    ``--mode local`` runs need ``server`` (else ``no_server`` says why they are skipped): their step
    subprocesses are timed and each run is read back from the server (:func:`bench.server.local_timeline`),
    and the start-up of a step's subprocess is measured bare: ``Task.init`` of a new task, and the head of
    a step script (``Task.init`` on a task the controller created) (:data:`bench.server.TASK_INIT_SCRIPTS`).

    :returns: ``{kind: [ChildRun]}`` for pipeline, local, plain, import_steps, import_clearml,
        import_clearml_only, task_init, step_init (the server kinds only with a server), and
        ``"local_skipped"``: why there are no local runs ("" when there are).
    """
    scripts = Path(tempfile.mkdtemp(prefix="task-init-", dir=tmp))  # outside any git checkout
    commands = overhead_commands(data, settings, scripts, server is not None)
    runner = _Runner(commands, settings, tmp, logs, timeout, scripts, server)
    pipelines = [kind for kind in ("pipeline", "local_nocache", "local", "plain") if kind in commands]
    for w in range(warmup):
        for kind in pipelines:
            runner.once(kind, f"warmup{w}")
    result: dict = {kind: [] for kind in commands}
    for rep in range(reps):
        for kind in pipelines[rep % len(pipelines):] + pipelines[:rep % len(pipelines)]:
            result[kind] += runner.once(kind, f"rep{rep}")
    for rep in range(reps):
        for kind in STARTUP_KINDS:
            if kind in commands:
                result[kind] += runner.once(kind, f"rep{rep}")
    result["local_skipped"] = "" if server is not None else (no_server or "no ClearML server")
    return result
