"""The ClearML server of the server tests: start or connect, agents, REST API, runs.

The server is the one the environment names (:data:`NAMED`: ``CLEARML_TEST_API_HOST`` and keys; any
ClearML server, agents found on it or started here), else the harness of ``../shared/clearml-server``
(a test tool, never needed by the product), which starts ClearML's own API server, file server and web
UI on loopback. Runs of the project go through its command line in subprocesses,
with the harness's environment (``env.json``: server URLs, keys, ``CLEARML_CONFIG_FILE``, and
proxies that send any non-loopback request to a dead port). The tests read the server back
through its REST API, the calls the web UI makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
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

    def console(self, task_id: str) -> list[str]:
        """The task's console lines, oldest first (the web UI's CONSOLE tab: ``events.get_task_log``)."""
        events = self("events.get_task_log", task=task_id, batch_size=5000, navigate_earlier=False)["events"]
        return [line for event in events for line in str(event.get("msg", "")).splitlines()]

    def table(self, task_id: str, title: str) -> dict[str, str]:
        """``{row: value}`` of the task's two-column table ``title`` (a plot, as the UI's PLOTS and PREVIEW draw it)."""
        for event in self("events.get_task_plots", task=task_id, iters=1)["plots"]:
            if event.get("metric") == title:
                cells = json.loads(event["plot_str"])["data"][0]["cells"]["values"]
                return dict(zip(cells[0], cells[1], strict=True))
        return {}

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
    """A started harness or a server the environment named: its state folder, environment for clients, and API."""

    state: Path
    env: dict[str, str]
    web: bool
    harness: bool = True
    api: Api = field(init=False)
    agents: set = field(default_factory=set)
    started: list = field(default_factory=list)  # agent processes started here for a named server

    def __post_init__(self):
        self.api = Api(self.env["CLEARML_API_HOST"], self.env["CLEARML_API_ACCESS_KEY"],
                       self.env["CLEARML_API_SECRET_KEY"])

    def agent(self, queue: str) -> None:
        """An agent on ``queue`` (started once), running tasks with this Python (nothing installed); on a
        named server, one that already serves ``queue`` if there is one."""
        if queue not in self.agents and not self.harness:
            if not serving_workers(self.api, queue):
                self.started.append(start_agent(self, queue))
            self.agents.add(queue)
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
        """The API server's log lines with a 5xx answer (the harness's; a named server's log is not here)."""
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
    """Stop the harness, or the agents started here for a named server (the server itself is left alone)."""
    if server.harness:
        subprocess.run([str(HARNESS / "bin" / "stop"), str(server.state)], capture_output=True, timeout=120)
    for process in server.started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


# --- a ClearML server named by the environment ------------------------------------------------------------

#: The variables that name a server for the tests (``CLEARML_TEST_*``) and the client variable each becomes.
#: Only the API host and the keys are required; web and file server follow ClearML's conventions.
NAMED = {"CLEARML_TEST_API_HOST": "CLEARML_API_HOST", "CLEARML_TEST_API_ACCESS_KEY": "CLEARML_API_ACCESS_KEY",
         "CLEARML_TEST_API_SECRET_KEY": "CLEARML_API_SECRET_KEY", "CLEARML_TEST_WEB_HOST": "CLEARML_WEB_HOST",
         "CLEARML_TEST_FILES_HOST": "CLEARML_FILES_HOST"}


def _derived(api: str, web_or_files: str) -> str:
    """The web or file server beside API server ``api``: port 8008 -> 8080/8081, ``api.`` -> ``app.``/``files.``."""
    port, sub = {"web": (":8080", "//app."), "files": (":8081", "//files.")}[web_or_files]
    if re.search(r":8008/?$", api):
        return re.sub(r":8008/?$", port, api)
    return api.replace("//api.", sub, 1)


def named_server_env(environ: Optional[dict] = None) -> Optional[dict[str, str]]:
    """The client environment of the server ``CLEARML_TEST_API_HOST`` names, or None when it names none.

    :raises ValueError: the host is named without both keys.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("CLEARML_TEST_API_HOST"):
        return None
    env = {client: environ[name] for name, client in NAMED.items() if environ.get(name)}
    if not (env.get("CLEARML_API_ACCESS_KEY") and env.get("CLEARML_API_SECRET_KEY")):
        raise ValueError("CLEARML_TEST_API_HOST is set: set CLEARML_TEST_API_ACCESS_KEY and CLEARML_TEST_API_SECRET_KEY")
    env.setdefault("CLEARML_WEB_HOST", _derived(env["CLEARML_API_HOST"], "web"))
    env.setdefault("CLEARML_FILES_HOST", _derived(env["CLEARML_API_HOST"], "files"))
    return env


def connect_server(state: Path, env: dict[str, str]) -> tuple[Optional[Server], str]:
    """A :class:`Server` for the named server of ``env`` (:func:`named_server_env`), its clients configured
    by a ``clearml.conf`` in ``state``; ``(None, why)`` when it does not accept the keys."""
    conf = state / "clearml.conf"
    conf.write_text("api {\n" + "".join(f'  {key}: "{env[var]}"\n' for key, var in (
        ("api_server", "CLEARML_API_HOST"), ("web_server", "CLEARML_WEB_HOST"), ("files_server", "CLEARML_FILES_HOST")))
        + "}\n")
    (state / "logs").mkdir(exist_ok=True)
    try:
        return Server(state, {**env, "CLEARML_CONFIG_FILE": str(conf)}, web=False, harness=False), ""
    except (requests.RequestException, KeyError, ValueError) as exc:
        return None, f"the ClearML server {env['CLEARML_API_HOST']} (CLEARML_TEST_API_HOST) did not log in: {exc}"


def serving_workers(api: Api, queue: str) -> list[str]:
    """Ids of the workers the server knows that serve ``queue``."""
    return [w["id"] for w in api("workers.get_all")["workers"]
            if queue in {q.get("name") for q in w.get("queues") or []}]


def agent_command() -> Optional[list[str]]:
    """How to start ``clearml-agent`` here: on PATH, or the harness's; None when neither exists."""
    found = shutil.which("clearml-agent") or next(
        (str(p) for p in (harness_python().parent / "clearml-agent",) if p.exists()), None)
    return [found] if found else None


def start_agent(server: Server, queue: str, timeout: float = 120) -> subprocess.Popen:
    """Start ``clearml-agent daemon`` on ``queue`` (created if missing) that runs tasks with this Python,
    as the harness's agents do; return once the server lists it.

    :raises RuntimeError: clearml-agent is not installed, exited, or did not register in time.
    """
    command = agent_command()
    if command is None:
        raise RuntimeError(f"no agent serves queue {queue!r} and clearml-agent is not installed here "
                           "(pip install clearml-agent)")
    worker = f"test-agent-{queue}-p{os.getpid()}"  # named as the harness names its agents
    env = {**server.client_env(), "CLEARML_WORKER_ID": worker, "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL": sys.executable,
           "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL": "1"}
    log = open(server.state / "logs" / f"agent-{queue}.log", "ab")  # noqa: SIM115 (the agent's, while it runs)
    process = subprocess.Popen([*command, "daemon", "--queue", queue, "--create-queue", "--foreground", "--cpu-only"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while worker not in {w["id"] for w in server.api("workers.get_all")["workers"]}:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"clearml-agent on queue {queue!r} did not register (log: {log.name})")
        time.sleep(0.5)
    return process


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


def ui_pages(server: Server, tmp_path: Path, specs: list[dict]) -> dict[str, str]:
    """Open pages in the web UI in a real browser (``tests/ui_pages.py``, run by the harness's Python);
    ``{name: visible text}``. Skips where the browser is missing; ``UPDATE_DOCS_IMAGES=1`` copies the
    screenshots into ``docs/images/``."""
    import pytest

    why = web_available() if server.web else "the test server was started without its web UI"
    if why:
        pytest.skip(why)
    spec, shots = tmp_path / "pages.json", tmp_path / "shots"
    spec.write_text(json.dumps(specs))
    result = subprocess.run([str(harness_python()), str(Path(__file__).parent / "ui_pages.py"),
                             server.env["CLEARML_WEB_HOST"], str(shots), str(spec)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if os.environ.get("UPDATE_DOCS_IMAGES"):
        for shot in shots.glob("*.png"):
            shutil.copyfile(shot, ROOT / "docs" / "images" / shot.name)
    return json.loads(result.stdout.strip().splitlines()[-1])
