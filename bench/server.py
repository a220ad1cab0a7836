"""The ClearML server of the overhead section's ``--mode local`` runs, and what is read back from it.

The server is the one the environment configures (``CLEARML_API_HOST`` and keys, or
``CLEARML_CONFIG_FILE``), else the project's test server harness, started in a temporary state
folder (:func:`start_clearml_server`). What it measures: each ``--mode local`` run read back as a
per-step timeline (:func:`local_timeline`: the server's created/started/completed timestamps of the
controller and step tasks, each step's first console line, joined with the step subprocesses
timed by :func:`bench.common.run_child`), and the phases of a bare step start-up (interpreter,
``import clearml``, ``Task.init``, ``close()``, exit) from small scripts that print their own
``time.time()`` stamps (:data:`TASK_INIT_SCRIPTS`, :func:`init_phases`). All times in seconds.

Importing this module only defines things; ClearML itself only runs in subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import psutil

from bench.common import CLEARML_SERVER_VARS, DEFAULT_HARNESS, ChildRun

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


class Api:
    """ClearML's REST API (``POST <api>/<service>.<action>`` after ``auth.login``), as tests/server_support.py."""

    def __init__(self, host: str, key: str, secret: str, timeout: float = 10.0):
        import requests

        self.host, self.timeout, self.session = host.rstrip("/"), timeout, requests.Session()
        reply = self.session.post(f"{self.host}/auth.login", auth=(key, secret), timeout=timeout)
        reply.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {reply.json()['data']['token']}"

    def __call__(self, endpoint: str, **payload):
        """``POST <api>/<endpoint>`` with ``payload`` as JSON (30 s timeout): the reply's ``data``."""
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
        """The server processes the harness recorded in its state folder (none for an external server)."""
        procs = []
        for pid_file in sorted((self.state / "pids").glob("*.pid")) if self.state else []:
            try:
                procs.append(psutil.Process(int(pid_file.read_text().split()[0])))
            except (ValueError, IndexError, OSError, psutil.Error):
                pass
        return procs

    def stop(self) -> None:
        """Stop the harness's server if this benchmark started it (at most 120 s)."""
        if self.harness and self.state:
            subprocess.run([str(self.harness / "bin" / "stop"), str(self.state)], capture_output=True, timeout=120)

    def step_task_env(self) -> dict:
        """Create and start a task as the controller of ``--mode local`` does for a step, and return the
        environment its step subprocess gets (``CLEARML_TASK_ID`` and the remote-simulation switches)."""
        task_id = self.api("tasks.create", name="bench step init", type="data_processing",
                           script={"entry_point": "step_init.py", "working_dir": "."})["id"]
        self.api("tasks.started", task=task_id, force=True)
        return {"CLEARML_TASK_ID": task_id, "CLEARML_LOG_TASK_TO_BACKEND": "1", "CLEARML_SIMULATE_REMOTE_TASK": "1"}


def _environment_server() -> tuple[Optional[dict], str]:
    """The server the environment configures (CLEARML_API_HOST and keys, or CLEARML_CONFIG_FILE):
    ``(client environment, "")``, or ``(None, why not)``. The configuration file is read by ClearML
    itself, in a subprocess (this benchmark never imports ClearML)."""
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


def _connect_environment_server() -> tuple[Optional[ClearmlServer], str]:
    """The environment's server, logged in: ``(server, "")`` or ``(None, why not)``."""
    env, why = _environment_server()
    if env is None:
        return None, why
    try:
        api = Api(env["CLEARML_API_HOST"], env["CLEARML_API_ACCESS_KEY"], env["CLEARML_API_SECRET_KEY"])
    except Exception as exc:  # noqa: BLE001 (any failure means: no server)
        return None, f"the environment's ClearML server {env['CLEARML_API_HOST']} did not answer auth.login ({exc})"
    return ClearmlServer(env, f"the environment's server {env['CLEARML_API_HOST']}", api), ""


def _start_harness(harness: Path, tmp: Path) -> tuple[Optional[ClearmlServer], str]:
    """Start the test server harness (``bin/start STATE``, at most 180 s) in a new state folder under ``tmp``:
    ``(server, "")`` or ``(None, why not)``."""
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
        return _connect_environment_server()
    harness = harness or (DEFAULT_HARNESS if DEFAULT_HARNESS.is_dir() else None)
    if harness is None:
        return None, (f"no ClearML server: neither CLEARML_API_HOST / CLEARML_CONFIG_FILE nor a test server harness "
                      f"({DEFAULT_HARNESS} is missing; pass --clearml-server HARNESS_DIR)")
    return _start_harness(harness, tmp)


def _epoch(stamp: Optional[str]) -> float:
    """A server timestamp (ISO 8601, UTC) as ``time.time()`` seconds; NaN when missing."""
    if not stamp:
        return float("nan")
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _read_back(api: Api, controller_id: str) -> tuple[dict, dict, dict]:
    """The controller's DAG, its and its steps' tasks by id, and each step task's first console line
    (epoch seconds). Raises on any server error."""
    configs = api("tasks.get_configurations", tasks=[controller_id], names=["Pipeline"])["configurations"]
    dag = json.loads(configs[0]["configuration"][0]["value"])
    ids = [controller_id, *(node.get("executed") for node in dag.values() if node.get("executed"))]
    tasks = {t["id"]: t for t in api("tasks.get_all", id=ids,
                                        only_fields=["id", "name", "created", "started", "completed"])["tasks"]}
    first_line = {}
    for tid in ids[1:]:
        events = api("events.get_task_log", task=tid, batch_size=5, navigate_earlier=False).get("events", [])
        first_line[tid] = min((e["timestamp"] / 1000 for e in events), default=float("nan"))
    return dag, tasks, first_line


def local_timeline(run: ChildRun, api: Api) -> dict:
    """Read a ``--mode local`` run back from the server: the controller's DAG (configuration object
    ``Pipeline``: node -> parents, ``executed`` task id), created/started/completed of the controller and
    of each step task, the first console line each step reported (ClearML prints its "results page"
    line at the end of ``Task.init``), joined with the step subprocesses seen by ``run_child``.

    All times in seconds after the pipeline command was started. :returns: ``{"controller": {...},
    "steps": {name: {...}}}``, or ``{"error": why}``.
    """
    text = run.log.read_text(errors="replace") if run.log and run.log.exists() else ""
    found = re.search(r"created new task id=([0-9a-f]{32})", text)
    if not found:
        return {"error": "no controller task id in the output"}
    controller_id, t0 = found.group(1), run.extra["popen_epoch"]
    try:
        dag, tasks, first_line = _read_back(api, controller_id)
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
