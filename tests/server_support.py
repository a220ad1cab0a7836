"""The real ClearML server of ``../shared/clearml-server`` for the tests: start, agents, REST API, runs.

The harness (a test tool, never needed by the product) starts ClearML's own API server, file
server and web UI on loopback. Runs of the project go through its command line in subprocesses,
with the harness's environment (``env.json``: server URLs, keys, ``CLEARML_CONFIG_FILE``, and
proxies that send any non-loopback request to a dead port). The tests read the server back
through its REST API, the calls the web UI makes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import requests

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("CLEARML_TEST_SERVER", ROOT.parent / "shared" / "clearml-server"))
ENDED = ("completed", "failed", "stopped", "published")
TASK_ID = re.compile(r"/tasks/([0-9a-f]{32})")


class Api:
    """ClearML's REST API (``POST <api>/<service>.<action>``), as the web UI and the SDK call it."""

    def __init__(self, host: str, key: str, secret: str):
        self.host = host.rstrip("/")
        reply = requests.post(f"{self.host}/auth.login", auth=(key, secret), timeout=10)
        reply.raise_for_status()
        self.headers = {"Authorization": f"Bearer {reply.json()['data']['token']}"}

    def __call__(self, endpoint: str, **payload):
        reply = requests.post(f"{self.host}/{endpoint}", json=payload, headers=self.headers, timeout=30)
        body = reply.json()
        if reply.status_code != 200:
            raise RuntimeError(f"{endpoint}: HTTP {reply.status_code}: {body.get('meta', {}).get('result_msg')}")
        return body["data"]

    def task(self, task_id: str) -> dict:
        return self("tasks.get_by_id_ex", id=[task_id])["tasks"][0]

    def wait(self, task_id: str, timeout: float = 600) -> dict:
        """The task once it has ended (completed, failed, stopped), or as it is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in ENDED or time.monotonic() > deadline:
                return task
            time.sleep(2)

    def params(self, task_id: str) -> dict[str, str]:
        """``{"Section/name": value}`` of the task's hyperparameters."""
        hyper = self("tasks.get_hyper_params", tasks=[task_id])["params"][0]["hyperparams"]
        return {f"{p['section']}/{p['name']}": p.get("value") for p in hyper}

    def dag(self, controller_id: str) -> dict:
        """The pipeline's DAG as the controller stored it (configuration object ``Pipeline``)."""
        configs = self("tasks.get_configurations", tasks=[controller_id], names=["Pipeline"])["configurations"]
        return json.loads(configs[0]["configuration"][0]["value"])

    def step_tasks(self, controller_id: str) -> dict[str, str]:
        """``{step name: task id}`` that the run executed or took from the cache."""
        return {name: node.get("executed") for name, node in self.dag(controller_id).items()}

    def last_scalars(self, task_id: str) -> dict[tuple[str, str], float]:
        """``{(title, series): last value}`` of the task's scalars (its ``last_metrics``, as the UI's tables show)."""
        metrics = self("tasks.get_all_ex", id=[task_id], only_fields=["last_metrics"])["tasks"][0]["last_metrics"]
        return {(v["metric"], v["variant"]): v["value"] for m in metrics.values() for v in m.values()}

    def artifact_text(self, task_id: str, key: str) -> str:
        artifacts = {a["key"]: a for a in self.task(task_id)["execution"].get("artifacts", [])}
        reply = requests.get(artifacts[key]["uri"], headers=self.headers, timeout=30)
        reply.raise_for_status()
        return reply.text

    def rerun(self, run_id: str, edits: dict[str, str], queue: str = "services") -> str:
        """Re-run a pipeline run as the web UI does: clone it, edit its ``Args``, enqueue the clone.

        :returns: the clone's task id.
        """
        clone = self("tasks.clone", task=run_id, new_task_name=f"{self.task(run_id)['name']} (re-run)")["id"]
        self("tasks.edit_hyper_params", task=clone, hyperparams=[
            {"section": "Args", "name": name, "value": value} for name, value in edits.items()])
        queue_id = self("queues.get_all", name=f"^{queue}$")["queues"][0]["id"]
        self("tasks.enqueue", task=clone, queue=queue_id)
        return clone


@dataclass
class Server:
    """A started harness: its state folder, environment for clients, and API."""

    state: Path
    env: dict[str, str]
    web: bool
    api: Api = field(init=False)
    agents: set = field(default_factory=set)

    def __post_init__(self):
        self.api = Api(self.env["CLEARML_API_HOST"], self.env["CLEARML_API_ACCESS_KEY"],
                       self.env["CLEARML_API_SECRET_KEY"])

    def agent(self, queue: str) -> None:
        """An agent on ``queue`` (started once), running tasks with this Python (nothing installed)."""
        if queue not in self.agents:
            # an agent's tasks must not inherit this test process's output-folder claims (steps.outputs)
            env = {k: v for k, v in os.environ.items() if k != "STEPS_OUTPUT_CLAIM"}
            subprocess.run([str(HARNESS / "bin" / "agent"), str(self.state), queue, "--python", sys.executable],
                           check=True, capture_output=True, text=True, timeout=120, env=env)
            self.agents.add(queue)

    def client_env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k != "STEPS_OUTPUT_CLAIM"}
        return {**base, **self.env, **extra}

    def apiserver_5xx(self) -> list[str]:
        log = self.state / "logs" / "apiserver.log"
        return [line for line in log.read_text(errors="replace").splitlines()
                if re.search(r"\b5\d\d\b", line) and "HTTP" in line] if log.exists() else []


def web_available() -> Optional[str]:
    """Why the web UI cannot be driven here (``None``: it can): needs ``setup --web`` (chromium + playwright)."""
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        return "Debian's chromium is not installed (run ../shared/clearml-server/bin/setup --web)"
    if not harness_python().exists():
        return "the harness's venv is missing (run ../shared/clearml-server/bin/setup --web)"
    found = subprocess.run([str(harness_python()), "-c", "import playwright"], capture_output=True)
    return None if found.returncode == 0 else "playwright is not in the harness's venv (bin/setup --web)"


def harness_python() -> Path:
    home = Path(os.environ.get("CLEARML_TEST_SERVER_HOME", Path.home() / ".cache" / "clearml-test-server"))
    return home / "venv" / "bin" / "python"


def start_server(state: Path, web: bool) -> tuple[Optional[Server], str]:
    """Start the harness in ``state``; ``(server, "")`` or ``(None, why it could not start)``."""
    start = HARNESS / "bin" / "start"
    if not start.exists():
        return None, f"no ClearML test server harness at {HARNESS}"
    result = subprocess.run([str(start), str(state), *(["--web"] if web else [])], capture_output=True, text=True,
                            timeout=180)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        return None, f"the ClearML test server did not start: {' | '.join(tail)}"
    env = {k: str(v) for k, v in json.loads((state / "env.json").read_text()).items()}
    return Server(state, env, web), ""


def stop_server(server: Server) -> None:
    subprocess.run([str(HARNESS / "bin" / "stop"), str(server.state)], capture_output=True, timeout=120)


def make_checkout(dest: Path) -> Path:
    """A git checkout of the project whose ``origin`` is a ``file://`` URL agents can clone (as a pushed repo)."""
    repo, origin = dest / "project", dest / "origin.git"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", "runs", ".venv", "venv", "__pycache__",
                                                              ".pytest_cache", ".ruff_cache"))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "-C", str(repo), "init", "-q"], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "snapshot"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    subprocess.run([*git, "-C", str(repo), "remote", "add", "origin", origin.as_uri()], check=True)
    subprocess.run([*git, "-C", str(repo), "fetch", "-q", "origin"], check=True)
    return repo


def run_cli(server: Server, checkout: Path, *args: str, timeout: float = 900, env: Optional[dict] = None):
    """``python clearml_pipeline.py ARGS`` in the checkout, against the server."""
    return subprocess.run([sys.executable, "clearml_pipeline.py", *args], cwd=checkout, capture_output=True,
                          text=True, timeout=timeout, env=env or server.client_env())


def run_id(output: str) -> str:
    """The pipeline run's task id, from the link the command prints."""
    ids = TASK_ID.findall(output)
    assert ids, output[-2000:]
    return ids[-1]
